"""Lesson 10 references: what diffusers' DiT modules compute.

Letters: B batch, C channels, H W latent height/width, p patch size, h w = H/p W/p the
token grid, N = h*w tokens, D model width, T timestep-embedding width.
"""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``PatchEmbed``'s projection: x (B, C, H, W), weight (D, C, p, p), bias (D,) -> (B, N, D)."""
    from diffusers.models.embeddings import PatchEmbed

    D, C, p, _ = weight.shape
    embed = PatchEmbed(height=x.shape[-2], width=x.shape[-1], patch_size=p, in_channels=C,
                       embed_dim=D, pos_embed_type=None).to(x.device, x.dtype)
    with torch.no_grad():
        embed.proj.weight.copy_(weight)
        embed.proj.bias.copy_(bias)
        return embed(x)


def unpatchify(tokens: torch.Tensor, grid_h: int, grid_w: int, patch_size: int, out_channels: int) -> torch.Tensor:
    """DiT's final reshape: tokens (B, N, p*p*C) -> (B, C, h*p, w*p).

    Copied from diffusers.models.transformers.dit_transformer_2d.DiTTransformer2DModel.forward,
    with height/width passed in rather than ``int(N ** 0.5)`` so non-square grids work (as in
    Transformer2DModel._get_output_for_patched_inputs). tests/test_reference_dit.py keeps it
    equal to the model's own output.
    """
    p = patch_size
    x = tokens.reshape(shape=(-1, grid_h, grid_w, p, p, out_channels))  # (B, h, w, p, q, C)
    x = torch.einsum("nhwpqc->nchpwq", x)                                # (B, C, h, p, w, q)
    return x.reshape(shape=(-1, out_channels, grid_h * p, grid_w * p))   # (B, C, H, W)


def sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int, base_size: int) -> torch.Tensor:
    """``get_2d_sincos_pos_embed`` with interpolation_scale 1: (grid_h*grid_w, embed_dim) fp32."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    return get_2d_sincos_pos_embed(embed_dim, (grid_h, grid_w), base_size=base_size, output_type="pt").float()


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """DiT's ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=1)``: t (B,) -> (B, dim)."""
    from diffusers.models.embeddings import Timesteps

    return Timesteps(num_channels=dim, flip_sin_to_cos=True, downscale_freq_shift=1)(t)


def adaln_zero(x: torch.Tensor, c: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """``AdaLayerNormZero`` given the conditioning vector c (B, D); weight (6D, D).

    Returns (x_modulated (B, N, D), gate_msa, shift_mlp, scale_mlp, gate_mlp), each (B, D).
    """
    from diffusers.models.normalization import AdaLayerNormZero

    D = x.shape[-1]
    norm = AdaLayerNormZero(D, num_embeddings=None).to(x.device)
    with torch.no_grad():
        norm.linear.weight.copy_(weight)
        norm.linear.bias.copy_(bias)
        return norm(x, emb=c)


def self_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """A diffusers ``Attention`` (self-attention) module's output for x (B, N, D)."""
    with torch.no_grad():
        return attn(x)


def dit_block(block, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``BasicTransformerBlock(norm_type="ada_norm_zero")``: x (B, N, D), t (B,), y (B,) -> (B, N, D)."""
    with torch.no_grad():
        return block(x, timestep=t, class_labels=y)


def dit_forward(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``DiTTransformer2DModel``: x (B, C, H, W) square latents -> (B, out_channels, H, W)."""
    with torch.no_grad():
        return model(x, timestep=t, class_labels=y).sample


def final_layer_variant(model, x, t, y, *, swap_shift_scale: bool = False) -> torch.Tensor:
    """The model's output with its final layer altered the way a known mistake alters it (for diagnoses)."""
    original = model.proj_out_1.forward
    if swap_shift_scale:
        model.proj_out_1.forward = lambda h: torch.cat(original(h).chunk(2, dim=1)[::-1], dim=1)
    try:
        return dit_forward(model, x, t, y)
    finally:
        model.proj_out_1.forward = original


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "annotations")]
