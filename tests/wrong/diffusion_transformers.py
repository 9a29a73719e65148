"""Wrong implementations for lesson 10. Each function's name: <exercise>__<mistake>."""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"patchify_answer": "patchify__tokens_column_major", "adaln_zero_answer": "adaln_zero__no_one_plus"},
    ["self_attention_answer"],
)


# ---------------------------------------------------------------- patchify
def patchify__tokens_column_major(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)  # w before h
    return patches.reshape(B, -1, C * p * p) @ weight.reshape(D, -1).T + bias


def patchify__patch_vector_pqc(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (p, q, C) order
    return patches.reshape(B, -1, C * p * p) @ weight.reshape(D, -1).T + bias


def patchify__patch_inner_transposed(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 5, 3)  # (C, q, p)
    return patches.reshape(B, -1, C * p * p) @ weight.reshape(D, -1).T + bias


def patchify__no_bias(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(B, -1, C * p * p) @ weight.reshape(D, -1).T


def patchify__reshape_without_permute(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    return x.reshape(B, -1, C * p * p) @ weight.reshape(D, -1).T + bias


def patchify__channels_first_output(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
    return (patches @ weight.reshape(D, -1).T + bias).transpose(1, 2)  # (B, D, N)


def patchify__calls_conv2d(x, weight, bias):
    return F.conv2d(x, weight, bias, stride=weight.shape[-1]).flatten(2).transpose(1, 2)


def patchify__upcast_to_float32(x, weight, bias):
    B, C, H, W = x.shape
    D, _, p, _ = weight.shape
    patches = x.float().reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
    return patches @ weight.float().reshape(D, -1).T + bias.float()     # fp16 model in, float32 tokens out


# ---------------------------------------------------------------- unpatchify
def unpatchify__p_q_swapped(tokens, grid_h, grid_w, patch_size, out_channels):
    B, p, C = tokens.shape[0], patch_size, out_channels
    x = tokens.reshape(B, grid_h, grid_w, p, p, C).permute(0, 5, 1, 4, 2, 3)
    return x.reshape(B, C, grid_h * p, grid_w * p)


def unpatchify__channels_first_in_token(tokens, grid_h, grid_w, patch_size, out_channels):
    B, p, C = tokens.shape[0], patch_size, out_channels
    x = tokens.reshape(B, grid_h, grid_w, C, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C, grid_h * p, grid_w * p)


def unpatchify__grid_h_w_swapped(tokens, grid_h, grid_w, patch_size, out_channels):
    B, p, C = tokens.shape[0], patch_size, out_channels
    x = tokens.reshape(B, grid_w, grid_h, p, p, C).permute(0, 5, 2, 3, 1, 4)
    return x.reshape(B, C, grid_h * p, grid_w * p)


def unpatchify__reshape_without_permute(tokens, grid_h, grid_w, patch_size, out_channels):
    return tokens.reshape(tokens.shape[0], out_channels, grid_h * patch_size, grid_w * patch_size)


def unpatchify__square_root_grid(tokens, grid_h, grid_w, patch_size, out_channels):
    B, N, _ = tokens.shape
    side = int(N ** 0.5)  # diffusers' DiT shortcut: wrong for non-square grids
    p, C = patch_size, out_channels
    x = tokens.reshape(B, side, N // side, p, p, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, side * p, (N // side) * p)


# ---------------------------------------------------------------- 2D sin-cos position embedding
def _sincos(dim, pos, *, cos_first=False, denom=None):
    omega = torch.arange(dim // 2, dtype=torch.float64) / (denom if denom else dim / 2.0)
    omega = 1.0 / 10000 ** omega
    a = pos.reshape(-1, 1).double() * omega
    return torch.cat([a.cos(), a.sin()] if cos_first else [a.sin(), a.cos()], dim=1)


def _grid(gh, gw, base, *, scale=True):
    rows = torch.arange(gh, dtype=torch.float32) * ((base / gh) if scale else 1.0)
    cols = torch.arange(gw, dtype=torch.float32) * ((base / gw) if scale else 1.0)
    return rows[:, None].expand(gh, gw).reshape(-1), cols[None, :].expand(gh, gw).reshape(-1)


def sincos_pos_embed_2d__row_first(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size)
    return torch.cat([_sincos(embed_dim // 2, r), _sincos(embed_dim // 2, c)], dim=1).float()


def sincos_pos_embed_2d__meshgrid_ij_token_order(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size)
    emb = torch.cat([_sincos(embed_dim // 2, c), _sincos(embed_dim // 2, r)], dim=1)
    return emb.reshape(grid_h, grid_w, -1).transpose(0, 1).reshape(grid_h * grid_w, -1).float()


def sincos_pos_embed_2d__cos_before_sin(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size)
    return torch.cat([_sincos(embed_dim // 2, c, cos_first=True),
                      _sincos(embed_dim // 2, r, cos_first=True)], dim=1).float()


def sincos_pos_embed_2d__frequencies_over_full_dim(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size)
    return torch.cat([_sincos(embed_dim // 2, c, denom=embed_dim / 2.0 * 2),
                      _sincos(embed_dim // 2, r, denom=embed_dim / 2.0 * 2)], dim=1).float()


def sincos_pos_embed_2d__integer_positions(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size, scale=False)
    return torch.cat([_sincos(embed_dim // 2, c), _sincos(embed_dim // 2, r)], dim=1).float()


def sincos_pos_embed_2d__d_model_is_full_width(embed_dim, grid_h, grid_w, base_size):
    r, c = _grid(grid_h, grid_w, base_size)                      # 10000^(-2k / D): the half's width is D/2
    return torch.cat([_sincos(embed_dim // 2, c, denom=embed_dim / 2.0),
                      _sincos(embed_dim // 2, r, denom=embed_dim / 2.0)], dim=1).float()


def sincos_pos_embed_2d__sin_cos_interleaved(embed_dim, grid_h, grid_w, base_size):
    half = embed_dim // 2                                        # the Transformer paper's layout, not MAE's
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) * 2 / half)
    rows = (torch.arange(grid_h, dtype=torch.float64) * base_size / grid_h)[:, None].expand(grid_h, grid_w).reshape(-1)
    cols = (torch.arange(grid_w, dtype=torch.float64) * base_size / grid_w)[None, :].expand(grid_h, grid_w).reshape(-1)
    one = lambda u: torch.stack([(u[:, None] * omega).sin(), (u[:, None] * omega).cos()], -1).reshape(len(u), -1)  # noqa: E731
    return torch.cat([one(cols), one(rows)], 1).float()


# ---------------------------------------------------------------- timestep embedding
def _temb(t, dim, *, shift=1, flip=True, period=10000.0, scale=1.0):
    half = dim // 2
    exponent = -math.log(period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift)
    a = scale * t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([a.cos(), a.sin()] if flip else [a.sin(), a.cos()], dim=-1)


def timestep_embedding__sin_first(t, dim):
    return _temb(t, dim, flip=False)


def timestep_embedding__freq_shift_zero(t, dim):
    return _temb(t, dim, shift=0)


def timestep_embedding__max_period_1000(t, dim):
    return _temb(t, dim, period=1000.0)


def timestep_embedding__timesteps_divided_by_1000(t, dim):
    return _temb(t, dim, scale=1e-3)


def timestep_embedding__interleaved_cos_sin(t, dim):
    e = _temb(t, dim)
    half = dim // 2
    return torch.stack([e[:, :half], e[:, half:]], dim=-1).reshape(t.shape[0], dim)


def timestep_embedding__computed_in_t_dtype(t, dim):
    half = dim // 2                                              # frequencies made in t's dtype: fp16 t, fp16 out
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / (half - 1)).to(t.dtype)
    a = t[:, None] * freqs[None, :]
    return torch.cat([a.cos(), a.sin()], dim=-1)


def timestep_embedding__minus_sign_lost(t, dim):
    half = dim // 2
    a = t[:, None].float() * 10000.0 ** (torch.arange(half, device=t.device) / (half - 1))
    return torch.cat([a.cos(), a.sin()], dim=-1)


# ---------------------------------------------------------------- adaLN-Zero
def _adaln(x, c, weight, bias, *, order=(0, 1, 2, 3, 4, 5), one_plus=True, silu=True, over_tokens=False):
    D = x.shape[-1]
    mod = F.linear(F.silu(c) if silu else c, weight, bias)
    chunks = mod.chunk(6, dim=1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (chunks[i] for i in order)
    if over_tokens:
        normed = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-6)
    else:
        normed = F.layer_norm(x, (D,), eps=1e-6)
    scale = (1 + scale_msa[:, None]) if one_plus else scale_msa[:, None]
    return normed * scale + shift_msa[:, None], gate_msa, shift_mlp, scale_mlp, gate_mlp


def adaln_zero__no_one_plus(x, c, weight, bias):
    return _adaln(x, c, weight, bias, one_plus=False)


def adaln_zero__shift_scale_swapped(x, c, weight, bias):
    return _adaln(x, c, weight, bias, order=(1, 0, 2, 4, 3, 5))


def adaln_zero__no_silu(x, c, weight, bias):
    return _adaln(x, c, weight, bias, silu=False)


def adaln_zero__gate_scale_swapped(x, c, weight, bias):
    return _adaln(x, c, weight, bias, order=(0, 2, 1, 3, 5, 4))


def adaln_zero__normalises_over_tokens(x, c, weight, bias):
    return _adaln(x, c, weight, bias, over_tokens=True)


def adaln_zero__msa_mlp_halves_swapped(x, c, weight, bias):
    return _adaln(x, c, weight, bias, order=(3, 4, 5, 0, 1, 2))


# ---------------------------------------------------------------- self-attention
def _attn(attn, x, *, scale=None, heads=None, project=True, softmax_dim=-1, no_transpose=False):
    B, N, _ = x.shape
    h = heads or attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // h
    if no_transpose:
        q, k, v = (t.reshape(B, h, N, d) for t in (q, k, v))
    else:
        q, k, v = (t.reshape(B, N, h, d).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2)) * (d ** -0.5 if scale is None else scale)
    out = (w.softmax(softmax_dim) @ v)
    out = out.reshape(B, N, h * d) if no_transpose else out.transpose(1, 2).reshape(B, N, h * d)
    return attn.to_out[0](out) if project else out


def self_attention__missing_sqrt_d(attn, x):
    return _attn(attn, x, scale=1.0)


def self_attention__scaled_by_d(attn, x):
    return _attn(attn, x, scale=1.0 / (attn.to_q.out_features // attn.heads))


def self_attention__single_head(attn, x):
    return _attn(attn, x, heads=1)


def self_attention__softmax_over_queries(attn, x):
    return _attn(attn, x, softmax_dim=-2)


def self_attention__heads_split_without_transpose(attn, x):
    return _attn(attn, x, no_transpose=True)


def self_attention__no_output_projection(attn, x):
    return _attn(attn, x, project=False)


# ---------------------------------------------------------------- DiT block (uses the correct helpers)
def _block(block, x, t, y, *, gate=True, silu_mlp=False, use_label=True,
           residual_from_normed=False, mlp_uses_msa_mod=False, unmodulated_attention=False):
    emb = block.norm1.emb
    te = emb.timestep_embedder
    t_emb = te.linear_2(F.silu(te.linear_1(timestep_embedding(t, te.linear_1.in_features))))  # noqa: F821
    c = t_emb + (emb.class_embedder.embedding_table(y) if use_label else 0)
    x_mod, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_zero(x, c, block.norm1.linear.weight,  # noqa: F821
                                                                 block.norm1.linear.bias)
    if mlp_uses_msa_mod:
        mod = F.linear(F.silu(c), block.norm1.linear.weight, block.norm1.linear.bias).chunk(6, dim=1)
        shift_mlp, scale_mlp = mod[0], mod[1]
    g1, g2 = (gate_msa[:, None], gate_mlp[:, None]) if gate else (1.0, 1.0)
    base = x_mod if residual_from_normed else x
    attn_in = F.layer_norm(x, (x.shape[-1],), eps=1e-6) if unmodulated_attention else x_mod
    x = base + g1 * self_attention(block.attn1, attn_in)  # noqa: F821
    normed = F.layer_norm(x, (x.shape[-1],), eps=block.norm3.eps)
    h = normed * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    pre = block.ff.net[0].proj(h)
    h = F.silu(pre) if silu_mlp else F.gelu(pre, approximate="tanh")
    return x + g2 * block.ff.net[2](h)


def dit_block__no_gates(block, x, t, y):
    return _block(block, x, t, y, gate=False)


def dit_block__silu_in_mlp(block, x, t, y):
    return _block(block, x, t, y, silu_mlp=True)


def dit_block__attention_on_unmodulated_tokens(block, x, t, y):
    return _block(block, x, t, y, unmodulated_attention=True)


def dit_block__class_label_ignored(block, x, t, y):
    return _block(block, x, t, y, use_label=False)


def dit_block__residual_from_modulated_tokens(block, x, t, y):
    return _block(block, x, t, y, residual_from_normed=True)


def dit_block__mlp_modulated_with_attention_chunks(block, x, t, y):
    return _block(block, x, t, y, mlp_uses_msa_mod=True)


def dit_block__calls_block_forward(block, x, t, y):
    return block(x, timestep=t, class_labels=y)


# ---------------------------------------------------------------- whole DiT
def _forward(model, x, t, y, *, swap_final=False, pos=True, cond_block=0, final_norm=True):
    B, _, H, W = x.shape
    p, D = model.config.patch_size, model.inner_dim
    tokens = patchify(x, model.pos_embed.proj.weight, model.pos_embed.proj.bias)  # noqa: F821
    if pos:
        tokens = tokens + sincos_pos_embed_2d(D, H // p, W // p, model.pos_embed.base_size)  # noqa: F821
    for block in model.transformer_blocks:
        tokens = dit_block(block, tokens, t, y)  # noqa: F821
    c = conditioning(model.transformer_blocks[cond_block], t, y)  # noqa: F821
    shift, scale = model.proj_out_1(F.silu(c)).chunk(2, dim=1)
    if swap_final:
        shift, scale = scale, shift
    normed = F.layer_norm(tokens, (D,), eps=1e-6) if final_norm else tokens
    tokens = model.proj_out_2(normed * (1 + scale[:, None]) + shift[:, None])
    return unpatchify(tokens, H // p, W // p, p, model.out_channels)  # noqa: F821


def dit_forward__final_shift_scale_swapped(model, x, t, y):
    return _forward(model, x, t, y, swap_final=True)


def dit_forward__no_position_embedding(model, x, t, y):
    return _forward(model, x, t, y, pos=False)


def dit_forward__conditioning_from_last_block(model, x, t, y):
    return _forward(model, x, t, y, cond_block=-1)


def dit_forward__no_final_norm(model, x, t, y):
    return _forward(model, x, t, y, final_norm=False)


def dit_forward__calls_model_forward(model, x, t, y):
    return model(x, timestep=t, class_labels=y).sample


def dit_forward__output_channels_truncated(model, x, t, y):
    return _forward(model, x, t, y)[:, : model.config.in_channels].repeat(1, 2, 1, 1)
