"""Wrong implementations for lesson 11. Each function's name: <exercise>__<mistake>.

The source runs inside the solution namespace (tests.notebook_code.namespace_with_wrong), so
the correct answers of the other exercises (joint_attention, flux_attention, apply_rope, ...)
are available to the blocks here.
"""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"pack_latents_answer": "pack_latents__ids_col_row", "sd3_text_embeds_answer": "sd3_text_embeds__t5_first"},
    ["flux_single_block_answer"],
)


# ---------------------------------------------------------------- helpers
def _split(t, h):
    B, L, _ = t.shape
    return t.reshape(B, L, h, -1).transpose(1, 2)                  # (B, h, L, d)


def _rms(t, norm):
    if norm is None:
        return t
    return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


def _attend(q, k, v, scale=None):
    d = q.shape[-1]
    w = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(d) if scale is None else scale)
    out = w.softmax(-1) @ v
    B, h, L, _ = out.shape
    return out.transpose(1, 2).reshape(B, L, -1)


def _joint(attn, x, c, *, order="xc", split_as="xc", qk=True, separate=False, scale=None, project_text=True,
           shared_norms=False):
    h = attn.heads
    nq, nk = attn.norm_q, attn.norm_k
    naq, nak = (nq, nk) if shared_norms else (attn.norm_added_q, attn.norm_added_k)
    if not qk:
        nq = nk = naq = nak = None
    q, k, v = _rms(_split(attn.to_q(x), h), nq), _rms(_split(attn.to_k(x), h), nk), _split(attn.to_v(x), h)
    cq, ck = _rms(_split(attn.add_q_proj(c), h), naq), _rms(_split(attn.add_k_proj(c), h), nak)
    cv = _split(attn.add_v_proj(c), h)
    N, M = x.shape[1], c.shape[1]
    if separate:
        xo, co = _attend(q, k, v, scale), _attend(cq, ck, cv, scale)
    else:
        if order == "xc":
            out = _attend(torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2), scale)
        else:
            out = _attend(torch.cat([cq, q], 2), torch.cat([ck, k], 2), torch.cat([cv, v], 2), scale)
        xo, co = (out[:, :N], out[:, N:]) if split_as == "xc" else (out[:, M:], out[:, :M])
    xo = attn.to_out[0](xo)
    if attn.to_add_out is not None and project_text:
        co = attn.to_add_out(co)
    return xo, co


def _ff(net, h, approximate="tanh"):
    return net.net[2](F.gelu(net.net[0].proj(h), approximate=approximate))


def _mod(h, shift, scale, eps=1e-6):
    return F.layer_norm(h, (h.shape[-1],), eps=eps) * (1 + scale[:, None]) + shift[:, None]


def _sd3_block(block, x, c, temb, *, cont_order="scale_shift", silu=True, context_norm="own", approximate="tanh",
               gates=True, last_returns_c=False, swap_ffs=False):
    y = F.silu(temb) if silu else temb
    shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = block.norm1.linear(y).chunk(6, dim=1)
    cnorm = block.norm1 if context_norm == "image" else block.norm1_context
    if block.context_pre_only:
        lin = block.norm1_context.linear
        a_, b_ = lin(y).chunk(2, dim=1)
        c_scale, c_shift = (a_, b_) if cont_order == "scale_shift" else (b_, a_)
    else:
        c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = cnorm.linear(y).chunk(6, dim=1)
    a, ca = joint_attention(block.attn, _mod(x, shift, scale), _mod(c, c_shift, c_scale))  # noqa: F821
    g = (lambda t: t[:, None]) if gates else (lambda t: 1.0)
    ff_x, ff_c = (block.ff_context, block.ff) if swap_ffs else (block.ff, block.ff_context)
    x = x + g(gate) * a
    x = x + g(gate_mlp) * _ff(ff_x, _mod(x, shift_mlp, scale_mlp), approximate)
    if block.context_pre_only:
        return (c, x) if last_returns_c else (None, x)
    c = c + g(c_gate) * ca
    c = c + g(c_gate_mlp) * _ff(ff_c, _mod(c, c_shift_mlp, c_scale_mlp), approximate)
    return c, x


# ---------------------------------------------------------------- 1. joint_attention
def joint_attention__float32_out(attn, x, c):
    # Right values, wrong contract: a float32 copy of the module, so bf16 in, float32 out (never cast back).
    import copy

    return _joint(copy.deepcopy(attn).float(), x.float(), c.float())


def joint_attention__text_first_split_as_image_first(attn, x, c):
    return _joint(attn, x, c, order="cx", split_as="xc")


def joint_attention__two_separate_attentions(attn, x, c):
    return _joint(attn, x, c, separate=True)


def joint_attention__no_qk_norm(attn, x, c):
    return _joint(attn, x, c, qk=False)


def joint_attention__image_norms_on_text(attn, x, c):
    return _joint(attn, x, c, shared_norms=True)


def joint_attention__no_sqrt_d_scale(attn, x, c):
    return _joint(attn, x, c, scale=1.0)


def joint_attention__text_never_projected(attn, x, c):
    return _joint(attn, x, c, project_text=False)


def joint_attention__qk_norm_over_full_width(attn, x, c):
    h = attn.heads

    def norm_full(t, norm):                                       # RMS over all h*d channels, then the weight per head
        if norm is None:
            return _split(t, h)
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm.eps)
        return _split(t, h) * norm.weight

    q, k, v = norm_full(attn.to_q(x), attn.norm_q), norm_full(attn.to_k(x), attn.norm_k), _split(attn.to_v(x), h)
    cq, ck = norm_full(attn.add_q_proj(c), attn.norm_added_q), norm_full(attn.add_k_proj(c), attn.norm_added_k)
    cv = _split(attn.add_v_proj(c), h)
    out = _attend(torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2))
    N = x.shape[1]
    co = out[:, N:]
    return attn.to_out[0](out[:, :N]), attn.to_add_out(co) if attn.to_add_out is not None else co


# ---------------------------------------------------------------- 2. joint_block
def joint_block__continuous_norm_shift_then_scale(block, x, c, temb):
    return _sd3_block(block, x, c, temb, cont_order="shift_scale")


def joint_block__no_silu_before_modulation(block, x, c, temb):
    return _sd3_block(block, x, c, temb, silu=False)


def joint_block__text_modulated_by_image_norm(block, x, c, temb):
    return _sd3_block(block, x, c, temb, context_norm="image")


def joint_block__exact_gelu(block, x, c, temb):
    return _sd3_block(block, x, c, temb, approximate="none")


def joint_block__no_gates(block, x, c, temb):
    return _sd3_block(block, x, c, temb, gates=False)


def joint_block__last_block_returns_text(block, x, c, temb):
    return _sd3_block(block, x, c, temb, last_returns_c=True)


def joint_block__feed_forwards_swapped(block, x, c, temb):
    return _sd3_block(block, x, c, temb, swap_ffs=True)


# ---------------------------------------------------------------- 3. sd3_text_embeds
def sd3_text_embeds__t5_first(clip_l, pooled_l, clip_g, pooled_g, t5):
    clip = F.pad(torch.cat([clip_l, clip_g], -1), (0, t5.shape[-1] - clip_l.shape[-1] - clip_g.shape[-1]))
    return torch.cat([t5, clip], 1), torch.cat([pooled_l, pooled_g], -1)


def sd3_text_embeds__padded_on_the_left(clip_l, pooled_l, clip_g, pooled_g, t5):
    clip = F.pad(torch.cat([clip_l, clip_g], -1), (t5.shape[-1] - clip_l.shape[-1] - clip_g.shape[-1], 0))
    return torch.cat([clip, t5], 1), torch.cat([pooled_l, pooled_g], -1)


def sd3_text_embeds__clip_g_first(clip_l, pooled_l, clip_g, pooled_g, t5):
    clip = F.pad(torch.cat([clip_g, clip_l], -1), (0, t5.shape[-1] - clip_l.shape[-1] - clip_g.shape[-1]))
    return torch.cat([clip, t5], 1), torch.cat([pooled_g, pooled_l], -1)


def sd3_text_embeds__pooled_g_first(clip_l, pooled_l, clip_g, pooled_g, t5):
    clip = F.pad(torch.cat([clip_l, clip_g], -1), (0, t5.shape[-1] - clip_l.shape[-1] - clip_g.shape[-1]))
    return torch.cat([clip, t5], 1), torch.cat([pooled_g, pooled_l], -1)


def sd3_text_embeds__clip_encoders_joined_on_sequence(clip_l, pooled_l, clip_g, pooled_g, t5):
    d = t5.shape[-1]
    seq = [F.pad(clip_l, (0, d - clip_l.shape[-1])), F.pad(clip_g, (0, d - clip_g.shape[-1])), t5]
    return torch.cat(seq, 1), torch.cat([pooled_l, pooled_g], -1)


def sd3_text_embeds__pad_to_4096_hardcoded(clip_l, pooled_l, clip_g, pooled_g, t5):
    clip = F.pad(torch.cat([clip_l, clip_g], -1), (0, 4096 - clip_l.shape[-1] - clip_g.shape[-1]))
    return torch.cat([clip, t5], 1), torch.cat([pooled_l, pooled_g], -1)


# ---------------------------------------------------------------- 4. pack_latents
def _ids(h, w, device):
    ids = torch.zeros(h, w, 3, device=device)
    ids[..., 1] = torch.arange(h, device=device)[:, None]
    ids[..., 2] = torch.arange(w, device=device)[None, :]
    return ids.reshape(h * w, 3)


def pack_latents__channel_last_in_token(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 3, 5, 1)   # (2, 2, C) per token
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device)


def pack_latents__column_major_tokens(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 4, 2, 1, 3, 5)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device)


def pack_latents__in_patch_axes_swapped(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 5, 3)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device)


def pack_latents__ids_col_row(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device)[:, [0, 2, 1]]


def pack_latents__ids_in_latent_pixels(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device) * torch.tensor([1.0, 2.0, 2.0])


def pack_latents__ids_as_integers(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device).long()


def pack_latents__ids_without_first_axis(latents):
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, 4 * C), _ids(H // 2, W // 2, latents.device)[:, 1:]


# ---------------------------------------------------------------- 5. flux_rope
def _angles(ids, axes_dim, theta, exponent=2.0, same_dim=None):
    out = []
    for i, d in enumerate(axes_dim):
        dd = same_dim or d
        omega = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) * (exponent / 2) / dd)
        out.append(ids[:, i].double()[:, None] * omega[None])
    return out


def _interleave(x, angles, sign=1.0):
    cos = torch.cat([a.cos().repeat_interleave(2, 1) for a in angles], 1).float()
    sin = torch.cat([a.sin().repeat_interleave(2, 1) for a in angles], 1).float() * sign
    a, b = x[..., 0::2], x[..., 1::2]
    rot = torch.stack([-b, a], -1).flatten(-2)
    return x * cos[None, :, None] + rot * sin[None, :, None]


def flux_rope__float32_out(x, ids, axes_dim, theta=10000.0):
    # Right values, wrong contract: bf16 in, float32 out (the float32 angles promote x, never cast back).
    return _interleave(x.float(), _angles(ids, axes_dim, theta))


def flux_rope__rotate_half(x, ids, axes_dim, theta=10000.0):
    ang = _angles(ids, axes_dim, theta)
    cos = torch.cat([torch.cat([a.cos(), a.cos()], 1) for a in ang], 1).float()
    sin = torch.cat([torch.cat([a.sin(), a.sin()], 1) for a in ang], 1).float()
    a, b = x.chunk(2, dim=-1)
    return x * cos[None, :, None] + torch.cat([-b, a], -1) * sin[None, :, None]


def flux_rope__cos_sin_concatenated_not_interleaved(x, ids, axes_dim, theta=10000.0):
    ang = _angles(ids, axes_dim, theta)
    cos = torch.cat([torch.cat([a.cos(), a.cos()], 1) for a in ang], 1).float()
    sin = torch.cat([torch.cat([a.sin(), a.sin()], 1) for a in ang], 1).float()
    a, b = x[..., 0::2], x[..., 1::2]
    return x * cos[None, :, None] + torch.stack([-b, a], -1).flatten(-2) * sin[None, :, None]


def flux_rope__rotation_sign_flipped(x, ids, axes_dim, theta=10000.0):
    return _interleave(x, _angles(ids, axes_dim, theta), sign=-1.0)


def flux_rope__frequencies_k_over_d(x, ids, axes_dim, theta=10000.0):
    return _interleave(x, _angles(ids, axes_dim, theta, exponent=1.0))


def flux_rope__one_frequency_ladder_over_the_whole_head(x, ids, axes_dim, theta=10000.0):
    return _interleave(x, _angles(ids, axes_dim, theta, same_dim=sum(axes_dim)))


def flux_rope__row_and_column_ids_swapped(x, ids, axes_dim, theta=10000.0):
    return _interleave(x, _angles(ids[:, [0, 2, 1]], axes_dim, theta))


# ---------------------------------------------------------------- 6-7. Flux blocks
def _flux_attn(attn, x, c, rotary, *, image_first=False, rope=True, qk=True, rope_values=False):
    d = attn.head_dim
    sp = lambda t: t.unflatten(-1, (-1, d))                       # noqa: E731
    nrm = (lambda t, n: _rms(t, n)) if qk else (lambda t, n: t)   # noqa: E731
    q, k, v = nrm(sp(attn.to_q(x)), attn.norm_q), nrm(sp(attn.to_k(x)), attn.norm_k), sp(attn.to_v(x))
    if c is not None:
        cq, ck, cv = nrm(sp(attn.add_q_proj(c)), attn.norm_added_q), nrm(sp(attn.add_k_proj(c)), attn.norm_added_k), \
            sp(attn.add_v_proj(c))
        if image_first:
            q, k, v = torch.cat([q, cq], 1), torch.cat([k, ck], 1), torch.cat([v, cv], 1)
        else:
            q, k, v = torch.cat([cq, q], 1), torch.cat([ck, k], 1), torch.cat([cv, v], 1)
    if rope:
        q, k = apply_rope(q, *rotary), apply_rope(k, *rotary)        # noqa: F821
        if rope_values:
            v = apply_rope(v, *rotary)                                # noqa: F821
    out = _attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if c is None:
        return out
    M, N = c.shape[1], x.shape[1]
    co, xo = (out[:, N:], out[:, :N]) if image_first else (out[:, :M], out[:, M:])
    return attn.to_add_out(co), attn.to_out[0](xo)


def _double(block, x, c, temb, rotary, shared_mod=False, approximate="tanh", **kw):
    y = F.silu(temb)
    shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = block.norm1.linear(y).chunk(6, dim=1)
    cn = block.norm1 if shared_mod else block.norm1_context
    c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = cn.linear(y).chunk(6, dim=1)
    ca, a = _flux_attn(block.attn, _mod(x, shift, scale), _mod(c, c_shift, c_scale), rotary, **kw)
    x = x + gate[:, None] * a
    x = x + gate_mlp[:, None] * _ff(block.ff, _mod(x, shift_mlp, scale_mlp), approximate)
    c = c + c_gate[:, None] * ca
    c = c + c_gate_mlp[:, None] * _ff(block.ff_context, _mod(c, c_shift_mlp, c_scale_mlp), approximate)
    return c, x


def flux_double_block__image_first_like_sd3(block, x, c, temb, rotary):
    return _double(block, x, c, temb, rotary, image_first=True)


def flux_double_block__no_rope(block, x, c, temb, rotary):
    return _double(block, x, c, temb, rotary, rope=False)


def flux_double_block__rope_on_values_too(block, x, c, temb, rotary):
    return _double(block, x, c, temb, rotary, rope_values=True)


def flux_double_block__no_qk_norm(block, x, c, temb, rotary):
    return _double(block, x, c, temb, rotary, qk=False)


def flux_double_block__text_modulated_by_image_norm(block, x, c, temb, rotary):
    return _double(block, x, c, temb, rotary, shared_mod=True)


def flux_double_block__returns_image_then_text(block, x, c, temb, rotary):
    c, x = _double(block, x, c, temb, rotary)
    return x, c


def _single(block, x, c, temb, rotary, *, sequential=False, image_first=False, gate_on=True, approximate="tanh",
            chunk_order="shift_scale_gate", **kw):
    M, N = c.shape[1], x.shape[1]
    s = torch.cat([x, c], 1) if image_first else torch.cat([c, x], 1)
    a_, b_, gate = block.norm.linear(F.silu(temb)).chunk(3, dim=1)
    shift, scale = (a_, b_) if chunk_order == "shift_scale_gate" else (b_, a_)
    n = _mod(s, shift, scale)
    attn = _flux_attn(block.attn, n, None, rotary, **kw)
    mlp = F.gelu(block.proj_mlp(attn if sequential else n), approximate=approximate)
    out = block.proj_out(torch.cat([attn, mlp], 2))
    s = s + (gate[:, None] * out if gate_on else out)
    return (s[:, N:], s[:, :N]) if image_first else (s[:, :M], s[:, M:])


def flux_single_block__mlp_after_attention(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, sequential=True)


def flux_single_block__image_first(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, image_first=True)


def flux_single_block__no_gate(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, gate_on=False)


def flux_single_block__exact_gelu(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, approximate="none")


def flux_single_block__scale_before_shift(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, chunk_order="scale_shift_gate")


def flux_single_block__no_rope(block, x, c, temb, rotary):
    return _single(block, x, c, temb, rotary, rope=False)
