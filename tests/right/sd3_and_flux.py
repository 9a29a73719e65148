"""Correct alternatives for lesson 11 (each must pass public checks and hidden tests)."""

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- 1. joint_attention
def joint_attention__sdpa_text_first_split_consistently(attn, x, c):
    # The order of the concatenation does not change any token's output (softmax over keys is
    # permutation-invariant); only the split must match it.
    B, N, _ = x.shape
    M, h = c.shape[1], attn.heads

    def heads(t, norm=None):
        t = t.view(B, -1, h, t.shape[-1] // h).transpose(1, 2)
        return norm(t) if norm is not None else t

    q = torch.cat([heads(attn.add_q_proj(c), attn.norm_added_q), heads(attn.to_q(x), attn.norm_q)], 2)
    k = torch.cat([heads(attn.add_k_proj(c), attn.norm_added_k), heads(attn.to_k(x), attn.norm_k)], 2)
    v = torch.cat([heads(attn.add_v_proj(c)), heads(attn.to_v(x))], 2)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N + M, -1)
    c_out = out[:, :M] if attn.to_add_out is None else attn.to_add_out(out[:, :M])
    return attn.to_out[0](out[:, M:]), c_out


def joint_attention__einsum(attn, x, c):
    h = attn.heads
    N = x.shape[1]
    s = torch.cat([x, c], 1)

    def proj(img, txt, norm_i, norm_t):
        t = torch.cat([img(x), txt(c)], 1)
        t = t.unflatten(-1, (h, -1))                                  # (B, L, h, d)
        if norm_i is not None:
            i, tt = t[:, :N], t[:, N:]
            ri = i * torch.rsqrt(i.square().mean(-1, keepdim=True) + norm_i.eps) * norm_i.weight
            rt = tt * torch.rsqrt(tt.square().mean(-1, keepdim=True) + norm_t.eps) * norm_t.weight
            t = torch.cat([ri, rt], 1)
        return t

    q = proj(attn.to_q, attn.add_q_proj, attn.norm_q, attn.norm_added_q)
    k = proj(attn.to_k, attn.add_k_proj, attn.norm_k, attn.norm_added_k)
    v = proj(attn.to_v, attn.add_v_proj, None, None)
    w = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    out = torch.einsum("bhij,bjhd->bihd", w.softmax(-1), v).flatten(2)
    del s
    co = out[:, N:]
    return attn.to_out[0](out[:, :N]), (attn.to_add_out(co) if attn.to_add_out is not None else co)


# ---------------------------------------------------------------- 2. joint_block
def joint_block__layer_norm_modules_and_continuous_norm_module(block, x, c, temb):
    # block.norm2 / norm2_context are LayerNorms without affine (eps 1e-6); the last block's
    # AdaLayerNormContinuous may be called as a module.
    mods = block.norm1.linear(F.silu(temb))[:, None]                  # (B, 1, 6D)
    shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=-1)
    nx = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift
    if block.context_pre_only:
        nc = block.norm1_context(c, temb)
    else:
        cm = block.norm1_context.linear(F.silu(temb))[:, None].chunk(6, dim=-1)
        nc = F.layer_norm(c, c.shape[-1:], eps=1e-6) * (1 + cm[1]) + cm[0]
    a, ca = joint_attention(block.attn, nx, nc)                       # noqa: F821
    x = x + gate * a
    h = block.norm2(x) * (1 + scale_mlp) + shift_mlp
    x = x + gate_mlp * block.ff.net[2](F.gelu(block.ff.net[0].proj(h), approximate="tanh"))
    if block.context_pre_only:
        return None, x
    c = c + cm[2] * ca
    h = block.norm2_context(c) * (1 + cm[4]) + cm[3]
    c = c + cm[5] * block.ff_context.net[2](F.gelu(block.ff_context.net[0].proj(h), approximate="tanh"))
    return c, x


def joint_block__manual_layer_norm_and_gelu(block, x, c, temb):
    def ln(t):
        mu = t.mean(-1, keepdim=True)
        var = (t - mu).pow(2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-6)

    def gelu_tanh(t):
        return 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))

    def mlp(ff, t):
        return ff.net[2](gelu_tanh(ff.net[0].proj(t)))

    y = temb * torch.sigmoid(temb)
    D = x.shape[-1]
    m = block.norm1.linear(y).view(-1, 6, D)
    nx = ln(x) * (1 + m[:, 1, None]) + m[:, 0, None]
    if block.context_pre_only:
        cm = block.norm1_context.linear(y).view(-1, 2, D)
        nc = ln(c) * (1 + cm[:, 0, None]) + cm[:, 1, None]
    else:
        cm = block.norm1_context.linear(y).view(-1, 6, D)
        nc = ln(c) * (1 + cm[:, 1, None]) + cm[:, 0, None]
    a, ca = joint_attention(block.attn, nx, nc)                       # noqa: F821
    x = x + m[:, 2, None] * a
    x = x + m[:, 5, None] * mlp(block.ff, ln(x) * (1 + m[:, 4, None]) + m[:, 3, None])
    if block.context_pre_only:
        return None, x
    c = c + cm[:, 2, None] * ca
    c = c + cm[:, 5, None] * mlp(block.ff_context, ln(c) * (1 + cm[:, 4, None]) + cm[:, 3, None])
    return c, x


# ---------------------------------------------------------------- 3. sd3_text_embeds
def sd3_text_embeds__zeros_and_slice_assignment(clip_l, pooled_l, clip_g, pooled_g, t5):
    B, L, dl = clip_l.shape
    out = t5.new_zeros(B, L + t5.shape[1], t5.shape[-1])
    out[:, :L, :dl] = clip_l
    out[:, :L, dl:dl + clip_g.shape[-1]] = clip_g
    out[:, L:] = t5
    pooled = torch.empty(B, dl + pooled_g.shape[-1], device=pooled_l.device)
    pooled[:, :dl], pooled[:, dl:] = pooled_l, pooled_g
    return out, pooled


def sd3_text_embeds__explicit_zero_block(clip_l, pooled_l, clip_g, pooled_g, t5):
    B, L, _ = clip_l.shape
    zeros = torch.zeros(B, L, t5.shape[-1] - clip_l.shape[-1] - clip_g.shape[-1], device=t5.device)
    return torch.cat([torch.cat([clip_l, clip_g, zeros], 2), t5], 1), torch.hstack([pooled_l, pooled_g])


# ---------------------------------------------------------------- 4. pack_latents
def pack_latents__pixel_unshuffle_and_meshgrid(latents):
    B, C, H, W = latents.shape
    packed = F.pixel_unshuffle(latents, 2).flatten(2).transpose(1, 2)   # (B, HW/4, C*2*2)
    rows, cols = torch.meshgrid(torch.arange(H // 2, device=latents.device),
                                torch.arange(W // 2, device=latents.device), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
    return packed, ids


def pack_latents__einsum_and_index_arithmetic(latents):
    B, C, H, W = latents.shape
    h, w = H // 2, W // 2
    packed = torch.einsum("bchpwq->bhwcpq", latents.reshape(B, C, h, 2, w, 2)).reshape(B, h * w, 4 * C)
    n = torch.arange(h * w, device=latents.device)
    ids = torch.stack([n * 0, n // w, n % w], 1).to(torch.float32)
    return packed, ids


# ---------------------------------------------------------------- 5. flux_rope
def flux_rope__complex_numbers(x, ids, axes_dim, theta=10000.0):
    angles = []
    for i, d in enumerate(axes_dim):
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d))
        angles.append(torch.outer(ids[:, i].double(), freqs))
    phase = torch.polar(torch.ones_like(torch.cat(angles, 1)), torch.cat(angles, 1)).to(torch.complex64)  # (N, d/2)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * phase[None, :, None]).flatten(-2).type_as(x)


def flux_rope__explicit_even_odd(x, ids, axes_dim, theta=10000.0):
    out = torch.empty_like(x)
    start = 0
    for i, d in enumerate(axes_dim):
        k = torch.arange(d // 2, dtype=torch.float64, device=x.device)
        ang = ids[:, i].double()[:, None] * theta ** (-2 * k / d)       # (N, d/2)
        cos, sin = ang.cos().float()[None, :, None], ang.sin().float()[None, :, None]
        a, b = x[..., start:start + d:2], x[..., start + 1:start + d:2]
        out[..., start:start + d:2] = a * cos - b * sin
        out[..., start + 1:start + d:2] = a * sin + b * cos
        start += d
    return out


# ---------------------------------------------------------------- 6. flux_double_block
def _rope_pairs(t, cos, sin):                                           # t (B, L, h, d)
    a, b = t[..., 0::2], t[..., 1::2]
    return t * cos[None, :, None] + torch.stack([-b, a], -1).flatten(-2) * sin[None, :, None]


def flux_double_block__sdpa_rope_per_stream(block, x, c, temb, rotary):
    # RoPE acts on each token separately: rotating each stream with its own rows of the
    # [text; image] table before concatenating is the same as rotating after.
    cos, sin = rotary
    M = c.shape[1]
    attn = block.attn
    d = attn.head_dim
    rms = torch.nn.functional.rms_norm

    def qkv(h, to_q, to_k, to_v, nq, nk, sl):
        q = rms(to_q(h).unflatten(-1, (-1, d)), (d,), nq.weight, nq.eps)
        k = rms(to_k(h).unflatten(-1, (-1, d)), (d,), nk.weight, nk.eps)
        v = to_v(h).unflatten(-1, (-1, d))
        return _rope_pairs(q, cos[sl], sin[sl]), _rope_pairs(k, cos[sl], sin[sl]), v

    m = block.norm1.linear(F.silu(temb)).chunk(6, 1)
    cm = block.norm1_context.linear(F.silu(temb)).chunk(6, 1)
    ln = lambda t: F.layer_norm(t, t.shape[-1:], eps=1e-6)             # noqa: E731
    nx, nc = ln(x) * (1 + m[1][:, None]) + m[0][:, None], ln(c) * (1 + cm[1][:, None]) + cm[0][:, None]
    qi, ki, vi = qkv(nx, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k, slice(M, None))
    qt, kt, vt = qkv(nc, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj, attn.norm_added_q, attn.norm_added_k,
                     slice(0, M))
    q, k, v = (torch.cat(p, 1).transpose(1, 2) for p in ((qt, qi), (kt, ki), (vt, vi)))
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    ca, a = attn.to_add_out(out[:, :M]), attn.to_out[0](out[:, M:])
    gelu_mlp = lambda ff, t: ff.net[2](F.gelu(ff.net[0].proj(t), approximate="tanh"))  # noqa: E731
    x = x + m[2][:, None] * a
    x = x + m[5][:, None] * gelu_mlp(block.ff, ln(x) * (1 + m[4][:, None]) + m[3][:, None])
    c = c + cm[2][:, None] * ca
    c = c + cm[5][:, None] * gelu_mlp(block.ff_context, ln(c) * (1 + cm[4][:, None]) + cm[3][:, None])
    return c, x


def flux_double_block__norm_modules_and_own_attention(block, x, c, temb, rotary):
    # nn.RMSNorm modules may be called directly; norm2 / norm2_context are LayerNorm modules.
    attn = block.attn
    d = attn.head_dim
    m = block.norm1.linear(F.silu(temb)).unsqueeze(1).chunk(6, -1)
    cm = block.norm1_context.linear(F.silu(temb)).unsqueeze(1).chunk(6, -1)
    nx = block.norm2(x) * (1 + m[1]) + m[0]
    nc = block.norm2_context(c) * (1 + cm[1]) + cm[0]
    q = torch.cat([attn.norm_added_q(attn.add_q_proj(nc).unflatten(-1, (-1, d))), attn.norm_q(attn.to_q(nx).unflatten(-1, (-1, d)))], 1)
    k = torch.cat([attn.norm_added_k(attn.add_k_proj(nc).unflatten(-1, (-1, d))), attn.norm_k(attn.to_k(nx).unflatten(-1, (-1, d)))], 1)
    v = torch.cat([attn.add_v_proj(nc).unflatten(-1, (-1, d)), attn.to_v(nx).unflatten(-1, (-1, d))], 1)
    q, k = _rope_pairs(q, *rotary), _rope_pairs(k, *rotary)
    w = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    out = torch.einsum("bhij,bjhd->bihd", w.softmax(-1), v).flatten(2)
    M = c.shape[1]
    x = x + m[2] * attn.to_out[0](out[:, M:])
    x = x + m[5] * block.ff.net[2](F.gelu(block.ff.net[0].proj(block.norm2(x) * (1 + m[4]) + m[3]), approximate="tanh"))
    c = c + cm[2] * attn.to_add_out(out[:, :M])
    c = c + cm[5] * block.ff_context.net[2](F.gelu(block.ff_context.net[0].proj(block.norm2_context(c) * (1 + cm[4]) + cm[3]), approximate="tanh"))
    return c, x


# ---------------------------------------------------------------- 7. flux_single_block
def flux_single_block__split_proj_out_weights(block, x, c, temb, rotary):
    # proj_out on [attn, mlp] is the sum of two linears on each part.
    M, D = c.shape[1], x.shape[-1]
    s = torch.cat([c, x], 1)
    shift, scale, gate = block.norm.linear(F.silu(temb)).chunk(3, 1)
    n = F.layer_norm(s, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    a = flux_attention(block.attn, n, None, rotary)                    # noqa: F821
    mlp = F.gelu(block.proj_mlp(n), approximate="tanh")
    W, b = block.proj_out.weight, block.proj_out.bias
    s = s + gate[:, None] * (a @ W[:, :D].T + mlp @ W[:, D:].T + b)
    return s[:, :M], s[:, M:]


def flux_single_block__sdpa(block, x, c, temb, rotary):
    M, D = c.shape[1], x.shape[-1]
    attn = block.attn
    d = attn.head_dim
    s = torch.cat([c, x], 1)
    m = block.norm.linear(F.silu(temb))[:, None].chunk(3, -1)
    n = F.layer_norm(s, (D,), eps=1e-6) * (1 + m[1]) + m[0]
    q = _rope_pairs(attn.norm_q(attn.to_q(n).unflatten(-1, (-1, d))), *rotary).transpose(1, 2)
    k = _rope_pairs(attn.norm_k(attn.to_k(n).unflatten(-1, (-1, d))), *rotary).transpose(1, 2)
    v = attn.to_v(n).unflatten(-1, (-1, d)).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    s = s + m[2] * block.proj_out(torch.cat([a, F.gelu(block.proj_mlp(n), approximate="tanh")], -1))
    return s[:, :M], s[:, M:]
