"""Lesson 11 (SD3 & Flux): what diffusers computes, written independently of its modules.

Shapes: B batch, N image tokens, M text tokens, D model width, h heads, d head width.
Checked against ``JointTransformerBlock`` / ``JointAttnProcessor2_0`` (SD3, SD3.5),
``FluxTransformerBlock`` / ``FluxSingleTransformerBlock`` / ``FluxPosEmbed`` +
``apply_rotary_emb`` (Flux), ``FluxPipeline._pack_latents`` / ``_prepare_latent_image_ids``
and ``StableDiffusion3Pipeline.encode_prompt`` in tests/test_reference_sd3_and_flux.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- shared pieces
def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """RMSNorm over the last axis with ``norm.weight`` (None = no affine) and ``norm.eps``."""
    if norm is None:
        return x
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    return y * norm.weight if getattr(norm, "weight", None) is not None else y


def heads(t: torch.Tensor, h: int) -> torch.Tensor:
    """`(B, N, h*d)` -> `(B, h, N, d)`."""
    B, N, _ = t.shape
    return t.reshape(B, N, h, -1).transpose(1, 2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v on `(B, h, N, d)`; returns `(B, N, h*d)`."""
    w = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    out = w.softmax(-1) @ v
    B, h, N, d = out.shape
    return out.transpose(1, 2).reshape(B, N, h * d)


def adaln_zero(x: torch.Tensor, emb: torch.Tensor, linear, eps: float = 1e-6):
    """AdaLayerNormZero: (LN(x)(1+scale_msa)+shift_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp)."""
    shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = linear(F.silu(emb)).chunk(6, dim=1)
    normed = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return normed * (1 + scale[:, None]) + shift[:, None], gate, shift_mlp, scale_mlp, gate_mlp


def ada_continuous(x: torch.Tensor, emb: torch.Tensor, linear, eps: float = 1e-6) -> torch.Tensor:
    """AdaLayerNormContinuous: chunk order **scale, shift** (not DiT's shift, scale)."""
    scale, shift = linear(F.silu(emb)).chunk(2, dim=1)
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale[:, None]) + shift[:, None]


def modulate_ln(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=eps) * (1 + scale[:, None]) + shift[:, None]


def feed_forward(ff, x: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """diffusers FeedForward(activation_fn="gelu-approximate"): Linear, tanh-GELU, Linear."""
    return ff.net[2](F.gelu(ff.net[0].proj(x), approximate=approximate))


# ---------------------------------------------------------------- SD3: joint attention and block
def joint_attention(attn, x: torch.Tensor, c: torch.Tensor):
    """SD3's JointAttnProcessor2_0 by hand.

    attn: diffusers ``Attention`` with to_q/k/v, add_q/k/v_proj, optional norm_q/norm_k/
    norm_added_q/norm_added_k (RMSNorm per head, SD3.5), to_out[0], to_add_out (None when
    ``context_pre_only``). x (`(B, N, D)`), c (`(B, M, D)`).
    Returns (x_out `(B, N, D)`, c_out `(B, M, D)`; c_out not projected when context_pre_only).
    """
    h = attn.heads
    q, k, v = heads(attn.to_q(x), h), heads(attn.to_k(x), h), heads(attn.to_v(x), h)
    cq, ck, cv = heads(attn.add_q_proj(c), h), heads(attn.add_k_proj(c), h), heads(attn.add_v_proj(c), h)
    q, k = rms_norm(q, attn.norm_q), rms_norm(k, attn.norm_k)
    cq, ck = rms_norm(cq, attn.norm_added_q), rms_norm(ck, attn.norm_added_k)
    out = attend(torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2))  # [image; text]
    N = x.shape[1]
    x_out, c_out = out[:, :N], out[:, N:]
    x_out = attn.to_out[0](x_out)
    if attn.to_add_out is not None:
        c_out = attn.to_add_out(c_out)
    return x_out, c_out


def joint_block(block, x: torch.Tensor, c: torch.Tensor, temb: torch.Tensor, approximate: str = "tanh"):
    """SD3's JointTransformerBlock (no dual attention). Returns (c_out or None, x_out) as diffusers."""
    nx, gate, shift_mlp, scale_mlp, gate_mlp = adaln_zero(x, temb, block.norm1.linear)
    if block.context_pre_only:
        nc = ada_continuous(c, temb, block.norm1_context.linear)
    else:
        nc, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = adaln_zero(c, temb, block.norm1_context.linear)
    a, ca = joint_attention(block.attn, nx, nc)
    x = x + gate[:, None] * a
    x = x + gate_mlp[:, None] * feed_forward(block.ff, modulate_ln(x, shift_mlp, scale_mlp), approximate)
    if block.context_pre_only:
        return None, x
    c = c + c_gate[:, None] * ca
    c = c + c_gate_mlp[:, None] * feed_forward(block.ff_context, modulate_ln(c, c_shift_mlp, c_scale_mlp), approximate)
    return c, x


# ---------------------------------------------------------------- SD3: text conditioning
def sd3_text_embeds(clip_l: torch.Tensor, pooled_l: torch.Tensor, clip_g: torch.Tensor, pooled_g: torch.Tensor,
                    t5: torch.Tensor):
    """StableDiffusion3Pipeline.encode_prompt's tensor plumbing.

    clip_l `(B, 77, 768)`, clip_g `(B, 77, 1280)` (penultimate hidden states), t5 `(B, 256, 4096)`,
    pooled_l `(B, 768)`, pooled_g `(B, 1280)`. Returns (prompt_embeds `(B, 77+256, 4096)`, pooled `(B, 2048)`).
    """
    clip = torch.cat([clip_l, clip_g], dim=-1)
    clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat([pooled_l, pooled_g], dim=-1)


# ---------------------------------------------------------------- Flux: packing, ids, RoPE
def pack_latents(latents: torch.Tensor):
    """FluxPipeline._pack_latents + _prepare_latent_image_ids.

    latents `(B, C, H, W)`, H and W even. Returns (packed `(B, HW/4, 4C)`, ids `(HW/4, 3)` float32
    with rows (0, row, col) on the 2x2-packed grid).
    """
    B, C, H, W = latents.shape
    x = latents.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    packed = x.reshape(B, (H // 2) * (W // 2), C * 4)
    r = torch.arange(H // 2, device=latents.device, dtype=torch.float32)
    cl = torch.arange(W // 2, device=latents.device, dtype=torch.float32)
    ids = torch.stack([torch.zeros(H // 2, W // 2, device=latents.device),
                       r[:, None].expand(H // 2, W // 2), cl[None, :].expand(H // 2, W // 2)], dim=-1)
    return packed, ids.reshape(-1, 3)


def unpack_latents(packed: torch.Tensor, H: int, W: int) -> torch.Tensor:
    B, N, C4 = packed.shape
    x = packed.reshape(B, H // 2, W // 2, C4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C4 // 4, H, W)


def rope_freqs(ids: torch.Tensor, axes_dim, theta: float = 10000.0):
    """FluxPosEmbed: per axis i, angles pos_i * theta^(-2k/d_i) (k < d_i/2), each repeated twice
    (interleaved pairs); axes concatenated. ids `(N, n_axes)`. Returns (cos, sin) `(N, sum(axes_dim))`."""
    cos, sin = [], []
    for i, d in enumerate(axes_dim):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d)
        ang = ids[:, i].double()[:, None] * freqs[None]
        cos.append(ang.cos().repeat_interleave(2, dim=1))
        sin.append(ang.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, -1).float(), torch.cat(sin, -1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1) by the angle: x `(B, N, h, d)`, cos/sin `(N, d)`.

    In float32 and cast back to x's dtype, as diffusers' apply_rotary_emb does (bf16 in, bf16 out).
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return (x.float() * cos[None, :, None] + rotated.float() * sin[None, :, None]).to(x.dtype)


def flux_rope(x: torch.Tensor, ids: torch.Tensor, axes_dim, theta: float = 10000.0) -> torch.Tensor:
    """FluxPosEmbed(ids) then apply_rotary_emb(x, ..., sequence_dim=1); x `(B, N, h, d)`."""
    cos, sin = rope_freqs(ids, axes_dim, theta)
    return apply_rope(x, cos, sin)


# ---------------------------------------------------------------- Flux blocks
def _bnhd(t: torch.Tensor, d: int) -> torch.Tensor:
    return t.unflatten(-1, (-1, d))                   # (B, N, h, d)


def _sdpa_bnhd(q, k, v) -> torch.Tensor:
    out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out                                        # (B, N, h*d)


def flux_attention(attn, x: torch.Tensor, c: torch.Tensor | None, rotary):
    """FluxAttnProcessor: [text; image], QK RMSNorm per head, RoPE on the concatenation."""
    d = attn.head_dim
    q, k, v = _bnhd(attn.to_q(x), d), _bnhd(attn.to_k(x), d), _bnhd(attn.to_v(x), d)
    q, k = rms_norm(q, attn.norm_q), rms_norm(k, attn.norm_k)
    if c is not None:
        cq, ck, cv = _bnhd(attn.add_q_proj(c), d), _bnhd(attn.add_k_proj(c), d), _bnhd(attn.add_v_proj(c), d)
        cq, ck = rms_norm(cq, attn.norm_added_q), rms_norm(ck, attn.norm_added_k)
        q, k, v = torch.cat([cq, q], 1), torch.cat([ck, k], 1), torch.cat([cv, v], 1)
    if rotary is not None:
        q, k = apply_rope(q, *rotary), apply_rope(k, *rotary)
    out = _sdpa_bnhd(q, k, v)
    if c is None:
        return out
    M = c.shape[1]
    return attn.to_add_out(out[:, :M]), attn.to_out[0](out[:, M:])


def flux_double_block(block, x: torch.Tensor, c: torch.Tensor, temb: torch.Tensor, rotary):
    """FluxTransformerBlock. rotary = (cos, sin) `(M+N, d)` for [text; image]. Returns (c_out, x_out)."""
    nx, gate, shift_mlp, scale_mlp, gate_mlp = adaln_zero(x, temb, block.norm1.linear)
    nc, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = adaln_zero(c, temb, block.norm1_context.linear)
    ca, a = flux_attention(block.attn, nx, nc, rotary)
    x = x + gate[:, None] * a
    x = x + gate_mlp[:, None] * feed_forward(block.ff, modulate_ln(x, shift_mlp, scale_mlp))
    c = c + c_gate[:, None] * ca
    c = c + c_gate_mlp[:, None] * feed_forward(block.ff_context, modulate_ln(c, c_shift_mlp, c_scale_mlp))
    return c, x


def flux_single_block(block, x: torch.Tensor, c: torch.Tensor, temb: torch.Tensor, rotary):
    """FluxSingleTransformerBlock: one stream [text; image], attention and MLP in parallel,
    AdaLayerNormZeroSingle (shift, scale, gate). Returns (c_out, x_out)."""
    M = c.shape[1]
    s = torch.cat([c, x], dim=1)
    shift, scale, gate = block.norm.linear(F.silu(temb)).chunk(3, dim=1)
    n = modulate_ln(s, shift, scale)
    mlp = F.gelu(block.proj_mlp(n), approximate="tanh")
    a = flux_attention(block.attn, n, None, rotary)
    s = s + gate[:, None] * block.proj_out(torch.cat([a, mlp], dim=2))
    return s[:, :M], s[:, M:]
