"""Lesson 12 references: Z-Image's position ids, 3D RoPE, the single-stream S3-DiT block, the
Qwen3 prompt embeddings, one guided pipeline step, and the Decoupled-DMD generator gradient.

Letters: B batch, C H W latent channels/height/width, F frames, N tokens, h heads, d head
width, D model width, L caption tokens, K mixture components.

Everything diffusers computes is written here independently and checked against diffusers'
own module or pipeline in tests/test_reference_z_image.py. Decoupled-DMD has no diffusers
code: :func:`decoupled_dmd_grad` is an independent implementation with analytic checks on a
2D Gaussian mixture whose scores are exact (:func:`mixture_score`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: diffusers' transformer_z_image.SEQ_MULTI_OF: caption and image sequences are padded to a multiple of 32.
SEQ_MULTI_OF = 32


# ---------------------------------------------------------------- 1. position ids
def _grid(size: tuple[int, int, int], start: tuple[int, int, int]) -> torch.Tensor:
    """(f, h, w) ids of a size[0] x size[1] x size[2] grid, row-major (f slowest): (N, 3) int64."""
    axes = [torch.arange(s0, s0 + n) for s0, n in zip(start, size)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def padded(n: int) -> int:
    return n + (-n) % SEQ_MULTI_OF


def position_ids(cap_len: int, grid_f: int, grid_h: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption and image position ids as ``ZImageTransformer2DModel.patchify_and_embed`` makes them.

    Caption: padded to Lc = a multiple of 32; token i (pad tokens included) gets (1 + i, 0, 0).
    Image: token (f, y, x) gets (Lc + 1 + f, y, x); padded to a multiple of 32 with (0, 0, 0).
    Returns ``(cap_ids (Lc, 3), img_ids (Li, 3))``, int64.
    """
    Lc = padded(cap_len)
    cap = _grid((Lc, 1, 1), (1, 0, 0))
    img = _grid((grid_f, grid_h, grid_w), (Lc + 1, 0, 0))
    pad = padded(len(img)) - len(img)
    img = torch.cat([img, torch.zeros(pad, 3, dtype=img.dtype)])
    return cap, img


# ---------------------------------------------------------------- 2. 3D RoPE
def rope_angles(ids: torch.Tensor, axes_dims, theta: float) -> torch.Tensor:
    """Rotation angles (..., sum(axes_dims) / 2): per axis a, pair j turns by ids[..., a] * theta^(-2j/d_a)."""
    out = []
    for a, d in enumerate(axes_dims):
        inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))      # (d/2,)
        out.append(ids[..., a, None].double().cpu() * inv)                           # (..., d/2)
    return torch.cat(out, dim=-1)


def rope_freqs_cis(ids: torch.Tensor, axes_dims, theta: float) -> torch.Tensor:
    """The complex rotations ``RopeEmbedder`` returns: (..., sum(axes_dims) / 2), complex64, on ids' device."""
    ang = rope_angles(ids, axes_dims, theta).float()
    return torch.polar(torch.ones_like(ang), ang).to(ids.device)


def rotate(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x (B, N, h, d) by freqs_cis (B, N, d/2)."""
    xr = x.float().reshape(*x.shape[:-1], -1, 2)
    c, s = freqs_cis.real[:, :, None], freqs_cis.imag[:, :, None]                   # (B, N, 1, d/2)
    out = torch.stack([xr[..., 0] * c - xr[..., 1] * s, xr[..., 0] * s + xr[..., 1] * c], dim=-1)
    return out.flatten(-2).type_as(x)


def apply_rope_3d(x: torch.Tensor, ids: torch.Tensor, axes_dims, theta: float) -> torch.Tensor:
    """x (B, N, h, d) with ids (B, N, 3): each head's pairs turned by the 3D RoPE angles."""
    return rotate(x, rope_freqs_cis(ids, axes_dims, theta))


def rotate_half_variant(x, ids, axes_dims, theta):
    """The mistake of pairing x[j] with x[j + d/2] (GPT-NeoX/Llama layout) instead of interleaved pairs."""
    ang = rope_angles(ids, axes_dims, theta).float().to(x.device)[:, :, None]     # (B, N, 1, d/2)
    a, b = x.float().chunk(2, dim=-1)
    c, s = ang.cos(), ang.sin()
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1).type_as(x)


# ---------------------------------------------------------------- 3. the S3-DiT block
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """diffusers' RMSNorm: x / sqrt(mean(x^2) + eps) * weight (computed in float32)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).type_as(x)


def _eps(norm) -> float:
    return float(norm.eps)


def attention(attn, x: torch.Tensor, attn_mask: torch.Tensor | None, freqs_cis: torch.Tensor | None,
              *, rope=rotate, qk_norm: bool = True, scale: float | None = None) -> torch.Tensor:
    """``ZSingleStreamAttnProcessor``: per-head q/k RMSNorm, RoPE on q and k, masked SDPA, to_out."""
    B, N, _ = x.shape
    h = attn.heads
    q, k, v = (lin(x).unflatten(-1, (h, -1)) for lin in (attn.to_q, attn.to_k, attn.to_v))   # (B, N, h, d)
    if qk_norm and attn.norm_q is not None:
        q = rms_norm(q, attn.norm_q.weight, _eps(attn.norm_q))
        k = rms_norm(k, attn.norm_k.weight, _eps(attn.norm_k))
    if freqs_cis is not None:
        q, k = rope(q, freqs_cis), rope(k, freqs_cis)
    d = q.shape[-1]
    w = torch.einsum("bnhd,bmhd->bhnm", q, k) * (d ** -0.5 if scale is None else scale)        # (B, h, N, N)
    if attn_mask is not None:
        w = w.masked_fill(~attn_mask.bool()[:, None, None, :], float("-inf"))
    out = torch.einsum("bhnm,bmhd->bnhd", w.softmax(-1), v).flatten(2)                          # (B, N, h*d)
    return attn.to_out[0](out)


def swiglu(ff, x: torch.Tensor) -> torch.Tensor:
    """Z-Image's FeedForward: w2(silu(w1 x) * w3 x)."""
    return ff.w2(F.silu(ff.w1(x)) * ff.w3(x))


def s3dit_block(block, x: torch.Tensor, attn_mask: torch.Tensor | None, freqs_cis: torch.Tensor,
                adaln_input: torch.Tensor | None = None, *, variant: str = "") -> torch.Tensor:
    """``ZImageTransformerBlock.forward`` (global modulation): x (B, N, D) -> (B, N, D).

    With ``block.modulation``: (scale_msa, gate_msa, scale_mlp, gate_mlp) = chunks of
    adaLN_modulation(adaln_input) (no SiLU, no shift), gates through tanh, scales as 1 + scale;
    x += tanh(gate_msa) * norm2(attn(norm1(x) * (1 + scale_msa))); the same for the SwiGLU MLP.
    Without modulation (the context refiner): the same block with no scales and no gates.

    ``variant`` switches on one classic mistake, for diagnoses only.
    """
    n1, n2 = block.attention_norm1, block.attention_norm2
    f1, f2 = block.ffn_norm1, block.ffn_norm2
    norm = lambda m, t: rms_norm(t, m.weight, _eps(m))  # noqa: E731
    kw = {}
    if variant == "no_rope":
        freqs_cis = None
    if variant == "rotate_half":
        kw["rope"] = _rotate_half_cis
    if variant == "no_qk_norm":
        kw["qk_norm"] = False
    if block.modulation:
        mod = block.adaLN_modulation(F.silu(adaln_input) if variant == "silu" else adaln_input)[:, None]
        scale_msa, gate_msa, scale_mlp, gate_mlp = mod.chunk(4, dim=-1)
        if variant == "chunk_order":
            scale_msa, scale_mlp, gate_msa, gate_mlp = mod.chunk(4, dim=-1)
        gate_msa, gate_mlp = (g if variant == "no_tanh" else g.tanh() for g in (gate_msa, gate_mlp))
        one = 0.0 if variant == "no_one_plus" else 1.0
        scale_msa, scale_mlp = one + scale_msa, one + scale_mlp
    else:
        scale_msa = gate_msa = scale_mlp = gate_mlp = 1.0
    a = attention(block.attention, norm(n1, x) * scale_msa, attn_mask, freqs_cis, **kw)
    x = x + gate_msa * (a if variant == "no_post_norm" else norm(n2, a))
    m = swiglu(block.feed_forward, norm(f1, x) * scale_mlp)
    return x + gate_mlp * (m if variant == "no_post_norm" else norm(f2, m))


def _rotate_half_cis(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    a, b = x.float().chunk(2, dim=-1)
    c, s = freqs_cis.real[:, :, None], freqs_cis.imag[:, :, None]
    return torch.cat([a * c - b * s, a * s + b * c], dim=-1).type_as(x)


# ---------------------------------------------------------------- 4. the Qwen3 prompt embeddings
def prompt_embeds(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, layer: int = -2,
                  masked: bool = True) -> list[torch.Tensor]:
    """``ZImagePipeline._encode_prompt`` after tokenising: hidden_states[-2] (the output of the
    second-to-last decoder layer, not final-normed), each prompt's real tokens only.
    Returns a list of B tensors (L_i, D)."""
    mask = attention_mask.bool()
    hs = text_encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    return [hs[i][mask[i]] if masked else hs[i] for i in range(len(hs))]


# ---------------------------------------------------------------- 5. one guided pipeline step
def _model_out(transformer, latents: torch.Tensor, t: torch.Tensor, embeds: list) -> torch.Tensor:
    """The transformer on a batch: (B, C, H, W) -> (B, C, H, W) (one frame added and removed)."""
    out = transformer(list(latents.unsqueeze(2).unbind(0)), t, list(embeds), return_dict=False)[0]
    return torch.stack([o.float() for o in out]).squeeze(2)


def zimage_step(transformer, latents: torch.Tensor, sigma: float, sigma_next: float, prompt_embeds: list,
                negative_prompt_embeds: list | None, guidance_scale: float, *, variant: str = "") -> torch.Tensor:
    """One step of ``ZImagePipeline``'s loop from noise level sigma to sigma_next.

    The transformer is given 1 - sigma (its "time" runs from noise 0 to data 1); guided output
    pred = pos + s (pos - neg) (s = 0: no negative pass); the velocity is -pred; Euler step
    latents + (sigma_next - sigma) * velocity.
    """
    B = latents.shape[0]
    t = torch.full((B,), 1.0 - sigma if variant != "sigma_as_time" else sigma, device=latents.device)
    if guidance_scale > 0:
        out = _model_out(transformer, latents.repeat(2, 1, 1, 1), t.repeat(2),
                         list(prompt_embeds) + list(negative_prompt_embeds))
        pos, neg = out[:B], out[B:]
        pred = neg + guidance_scale * (pos - neg) if variant == "standard_cfg" else pos + guidance_scale * (pos - neg)
    else:
        pred = _model_out(transformer, latents, t, prompt_embeds)
    v = pred if variant == "not_negated" else -pred
    return latents + (sigma_next - sigma) * v


# ---------------------------------------------------------------- 6. Decoupled-DMD on exact scores
def mixture_score(x: torch.Tensor, t: torch.Tensor, means: torch.Tensor, stds: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Exact score of p_t for x_t = (1 - t) x0 + t eps, x0 from an isotropic Gaussian mixture.

    x (B, D), t (B,); means (K, D), stds (K,), weights (K,). Component k of p_t is
    N((1 - t) mu_k, ((1 - t)^2 s_k^2 + t^2) I). Computed in float64, returned in x's dtype.
    """
    xd, td = x.double(), t.double().to(x.device)[:, None]                           # (B, D), (B, 1)
    mu = (1 - td)[:, :, None] * means.double().to(x.device)[None]                   # (B, K, D)
    var = (1 - td) ** 2 * stds.double().to(x.device)[None] ** 2 + td ** 2           # (B, K)
    D = x.shape[-1]
    diff = mu - xd[:, None]                                                         # (B, K, D)
    logc = -0.5 * (diff ** 2).sum(-1) / var - 0.5 * D * var.log() + weights.double().to(x.device).log()
    resp = logc.softmax(-1)                                                         # (B, K)
    return (resp[..., None] * diff / var[..., None]).sum(1).to(x.dtype)


def renoise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, t (B,)."""
    t = t.reshape((-1,) + (1,) * (x0.ndim - 1))
    return (1 - t) * x0 + t * noise


def decoupled_dmd_grad(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score,
                       *, variant: str = "") -> torch.Tensor:
    """The Decoupled-DMD generator gradient at the generator's samples x0 (B, D).

    DMD with a CFG teacher uses s_fake - s_cfg, s_cfg = s_uncond + w (s_cond - s_uncond); that
    splits exactly into a distribution-matching term (s_fake - s_cond) and a CFG-augmentation
    term -(w - 1)(s_cond - s_uncond). Decoupled, each is evaluated at its own noise level:
        g = [s_fake - s_cond](x_{t_dm}, t_dm) - (w - 1) [s_cond - s_uncond](x_{t_ca}, t_ca),
    with x_t = (1 - t) x0 + t eps (the same eps). Descending g moves x0 toward the guided data.
    """
    w = guidance_scale
    x_dm, x_ca = renoise(x0, noise, t_dm), renoise(x0, noise, t_ca)
    if variant == "coupled":
        x_ca, t_ca = x_dm, t_dm
    if variant == "swapped":
        x_dm, t_dm, x_ca, t_ca = x_ca, t_ca, x_dm, t_dm
    dm = fake_score(x_dm, t_dm) - cond_score(x_dm, t_dm)
    ca = cond_score(x_ca, t_ca) - uncond_score(x_ca, t_ca)
    if variant == "w_not_w_minus_1":
        return dm - w * ca
    if variant == "ca_sign":
        return dm + (w - 1) * ca
    return dm - (w - 1) * ca


def dmd_grad_cfg_teacher(x0, noise, t, guidance_scale, fake_score, cond_score, uncond_score) -> torch.Tensor:
    """Plain DMD with a CFG teacher at one noise level: s_fake - (s_uncond + w (s_cond - s_uncond))."""
    xt = renoise(x0, noise, t)
    s_c, s_u = cond_score(xt, t), uncond_score(xt, t)
    return fake_score(xt, t) - (s_u + guidance_scale * (s_c - s_u))
