"""Lesson 10: correct answers written differently from the solution; each must pass.

Run inside the solution namespace (tests/notebook_code.namespace_with_wrong), so the other
exercises' answers (patchify, adaln_zero, ...) are the solution's.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange


def patchify__einops_einsum(x, weight, bias):
    patches = rearrange(x, "b c (h p) (w q) -> b (h w) c p q", p=weight.shape[2], q=weight.shape[3])
    return torch.einsum("bncpq,dcpq->bnd", patches, weight) + bias


def patchify__unfold(x, weight, bias):
    p = weight.shape[-1]
    cols = F.unfold(x, kernel_size=p, stride=p)                 # (B, C*p*p, N), row-major patches
    return cols.transpose(1, 2) @ weight.flatten(1).T + bias


def unpatchify__einops(tokens, grid_h, grid_w, patch_size, out_channels):
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=grid_h, w=grid_w, p=patch_size,
                     q=patch_size, c=out_channels)


def unpatchify__fold(tokens, grid_h, grid_w, patch_size, out_channels):
    B, N, _ = tokens.shape
    p, C = patch_size, out_channels
    cols = tokens.reshape(B, N, p, p, C).permute(0, 4, 2, 3, 1).reshape(B, C * p * p, N)
    return F.fold(cols, output_size=(grid_h * p, grid_w * p), kernel_size=p, stride=p)


def sincos_pos_embed_2d__meshgrid_xy(embed_dim, grid_h, grid_w, base_size):
    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = torch.outer(pos.double(), omega)
        return torch.cat([out.sin(), out.cos()], dim=1)

    gw = torch.arange(grid_w, dtype=torch.float64) * (base_size / grid_w)
    gh = torch.arange(grid_h, dtype=torch.float64) * (base_size / grid_h)
    cols, rows = torch.meshgrid(gw, gh, indexing="xy")          # (grid_h, grid_w) each
    return torch.cat([one_d(embed_dim // 2, cols.reshape(-1)), one_d(embed_dim // 2, rows.reshape(-1))], 1).float()


def sincos_pos_embed_2d__numpy(embed_dim, grid_h, grid_w, base_size):
    import numpy as np

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid_h) * (base_size / grid_h), np.arange(grid_w) * (base_size / grid_w),
                             indexing="ij")
    emb = np.concatenate([one_d(embed_dim // 2, cols.reshape(-1)), one_d(embed_dim // 2, rows.reshape(-1))], axis=1)
    return torch.from_numpy(emb).float()


def timestep_embedding__freq_from_linspace(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.linspace(0, 1, half, device=t.device))
    angles = t.float()[:, None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def timestep_embedding__power(t, dim):
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1)
    angles = t.float().unsqueeze(1) / torch.pow(torch.tensor(10000.0, device=t.device), exponent)
    return torch.stack([angles.cos(), angles.sin()], dim=1).flatten(1)


def adaln_zero__manual_norm(x, c, weight, bias):
    mod = (c * torch.sigmoid(c)) @ weight.T + bias
    chunks = mod.split(x.shape[-1], dim=1)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    normed = (x - mean) / torch.sqrt(var + 1e-6)
    return (normed + normed * chunks[1][:, None] + chunks[0][:, None],) + (chunks[2], chunks[3], chunks[4], chunks[5])


def adaln_zero__unbind(x, c, weight, bias):
    D = x.shape[-1]
    mod = F.linear(F.silu(c), weight, bias).view(c.shape[0], 6, D)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(1)
    x_mod = torch.addcmul(shift_msa.unsqueeze(1), F.layer_norm(x, (D,), eps=1e-6), 1 + scale_msa.unsqueeze(1))
    return x_mod, gate_msa, shift_mlp, scale_mlp, gate_mlp


def self_attention__sdpa(attn, x):
    B, N, _ = x.shape
    h = attn.heads
    q, k, v = (rearrange(proj(x), "b n (h d) -> b h n d", h=h) for proj in (attn.to_q, attn.to_k, attn.to_v))
    out = F.scaled_dot_product_attention(q, k, v)
    return attn.to_out[0](rearrange(out, "b h n d -> b n (h d)"))


def self_attention__einsum_per_head_loop(attn, x):
    h = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // h
    heads = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        w = torch.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) * d ** -0.5
        heads.append(torch.einsum("bnm,bmd->bnd", torch.softmax(w, dim=-1), v[..., sl]))
    return F.linear(torch.cat(heads, dim=-1), attn.to_out[0].weight, attn.to_out[0].bias)


def dit_block__modules(block, x, t, y):
    """The same block, calling the block's own submodules where the exercise allows it."""
    c = conditioning(block, t, y)  # noqa: F821  (the solution's helper)
    x_mod, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_zero(x, c, block.norm1.linear.weight,  # noqa: F821
                                                                 block.norm1.linear.bias)
    x = x + gate_msa.unsqueeze(1) * self_attention(block.attn1, x_mod)  # noqa: F821
    h = block.norm3(x) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
    lin1, lin2 = block.ff.net[0].proj, block.ff.net[2]
    return x + gate_mlp.unsqueeze(1) * lin2(F.gelu(lin1(h), approximate="tanh"))


def dit_block__explicit_tanh_gelu(block, x, t, y):
    emb = block.norm1.emb
    te = emb.timestep_embedder
    c = te.linear_2(F.silu(te.linear_1(timestep_embedding(t, te.linear_1.in_features))))  # noqa: F821
    c = c + emb.class_embedder.embedding_table.weight[y]
    D = x.shape[-1]
    mod = F.linear(F.silu(c), block.norm1.linear.weight, block.norm1.linear.bias).chunk(6, dim=1)
    x = x + mod[2][:, None] * self_attention(  # noqa: F821
        block.attn1, F.layer_norm(x, (D,), eps=1e-6) * (1 + mod[1][:, None]) + mod[0][:, None])
    h = F.layer_norm(x, (D,), eps=block.norm3.eps) * (1 + mod[4][:, None]) + mod[3][:, None]
    u = block.ff.net[0].proj(h)
    u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
    return x + mod[5][:, None] * block.ff.net[2](u)


def dit_forward__einops_final(model, x, t, y):
    B, _, H, W = x.shape
    p, D = model.config.patch_size, model.inner_dim
    tokens = patchify(x, model.pos_embed.proj.weight, model.pos_embed.proj.bias)  # noqa: F821
    tokens = tokens + sincos_pos_embed_2d(D, H // p, W // p, model.pos_embed.base_size).to(x)  # noqa: F821
    for block in model.transformer_blocks:
        tokens = dit_block(block, tokens, t, y)  # noqa: F821
    c = conditioning(model.transformer_blocks[0], t, y)  # noqa: F821
    shift, scale = model.proj_out_1(F.silu(c)).chunk(2, dim=-1)
    tokens = model.proj_out_2(torch.addcmul(shift[:, None], F.layer_norm(tokens, (D,), eps=1e-6), 1 + scale[:, None]))
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=H // p, p=p, q=p)


def dit_forward__fold(model, x, t, y):
    B, C, H, W = x.shape
    p, D = model.config.patch_size, model.inner_dim
    cols = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)             # (B, N, C*p*p)
    tokens = cols @ model.pos_embed.proj.weight.flatten(1).T + model.pos_embed.proj.bias
    tokens = tokens + sincos_pos_embed_2d(D, H // p, W // p, model.pos_embed.base_size).to(x)  # noqa: F821
    for block in model.transformer_blocks:
        tokens = dit_block(block, tokens, t, y)  # noqa: F821
    c = conditioning(model.transformer_blocks[0], t, y)  # noqa: F821
    shift, scale = model.proj_out_1(F.silu(c)).chunk(2, dim=1)
    tokens = model.proj_out_2(F.layer_norm(tokens, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None])
    return unpatchify(tokens, H // p, W // p, p, model.out_channels)  # noqa: F821
