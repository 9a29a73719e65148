"""Lesson 9 (SDXL): what diffusers computes, written independently.

Checked against ``StableDiffusionXLPipeline.encode_prompt`` / ``_get_add_time_ids``, the
img2img (refiner) pipeline's ``_get_add_time_ids`` and ``get_timesteps``, and
``UNet2DConditionModel.get_aug_embed`` with ``addition_embed_type="text_time"``
(tests/test_reference_sdxl.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- 1. two text encoders
def token_ids(tokenizer, prompts: list[str], device) -> torch.Tensor:
    """`(B, N)` ids, padded to the tokenizer's model_max_length and truncated to it."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def encode_text(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts: list[str]):
    """SDXL's text conditioning for a batch of prompts.

    Returns (prompt_embeds `(B, N, D1 + D2)`: each encoder's penultimate hidden states, CLIP-L's
    first; pooled `(B, P)`: text_encoder_2's projected pooled output, ``text_embeds``).
    """
    device = text_encoder.device
    with torch.no_grad():
        out_1 = text_encoder(token_ids(tokenizer, prompts, device), output_hidden_states=True)
        out_2 = text_encoder_2(token_ids(tokenizer_2, prompts, device), output_hidden_states=True)
    embeds = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)   # (B, N, D1 + D2)
    return embeds, out_2.text_embeds                                                  # (B, P)


def encode_prompt_cfg(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts, negative_prompts,
                      num_images_per_prompt: int, force_zeros_for_empty_prompt: bool):
    """``encode_prompt`` with classifier-free guidance on.

    Returns (prompt_embeds, negative_prompt_embeds, pooled, negative_pooled), each repeated
    ``num_images_per_prompt`` times per prompt (prompt 0's copies first): `(B n, N, D)` and `(B n, P)`.
    No negative prompt and ``force_zeros_for_empty_prompt``: zeros; otherwise the negative
    prompts (or "") are encoded like the prompts.
    """
    pe, pooled = encode_text(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts)
    if negative_prompts is None and force_zeros_for_empty_prompt:
        npe, npooled = torch.zeros_like(pe), torch.zeros_like(pooled)
    else:
        negatives = negative_prompts if negative_prompts is not None else [""] * len(prompts)
        npe, npooled = encode_text(tokenizer, tokenizer_2, text_encoder, text_encoder_2, negatives)
    n = num_images_per_prompt
    return tuple(t.repeat_interleave(n, dim=0) for t in (pe, npe, pooled, npooled))


# ---------------------------------------------------------------- 2. micro-conditioning
def time_id_features(time_ids: torch.Tensor, dim: int) -> torch.Tensor:
    """Fourier features of every number, concatenated per sample.

    time_ids `(B, K)`. Each number c gets [cos(c w_0..w_{d/2-1}), sin(c w_0..)] with
    w_i = 10000^(-i / (d/2)) (diffusers: flip_sin_to_cos=True, downscale_freq_shift=0).
    Returns `(B, K * dim)` float32, number 0's features first.
    """
    B, K = time_ids.shape
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / half)
    angles = time_ids.float().reshape(B, K, 1) * freqs                 # (B, K, d/2)
    feats = torch.cat([angles.cos(), angles.sin()], dim=-1)            # (B, K, d)
    return feats.reshape(B, K * dim)


def added_embedding(add_embedding, text_embeds: torch.Tensor, time_ids: torch.Tensor, addition_time_embed_dim: int):
    """UNet2DConditionModel's ``text_time`` added embedding: MLP([pooled text ; Fourier(time ids)]).

    text_embeds `(B, P)`, time_ids `(B, K)`; returns `(B, D_t)` (added to the timestep embedding) in the
    module's dtype: the float32 features are cast with the concatenation, as get_aug_embed's
    ``add_embeds.to(emb.dtype)`` does (emb has the UNet's dtype).
    """
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim)], dim=-1)  # (B, P + K d)
    x = x.to(add_embedding.linear_1.weight.dtype)
    return add_embedding.linear_2(F.silu(add_embedding.linear_1(x)))


def cfg_time_ids(original_size, crops_coords_top_left, target_size, batch_size: int, aesthetic_score=None,
                 negative_aesthetic_score: float = 2.5) -> torch.Tensor:
    """The ``time_ids`` the UNet receives under classifier-free guidance: `(2 B, K)` float32.

    Rows 0..B-1 belong to the negative (unconditional) half, B..2B-1 to the prompt.
    Base (aesthetic_score None): K = 6, (h, w, top, left, target h, target w) in both halves.
    Refiner: K = 5, the target size replaced by the aesthetic score; its negative half has the
    negative score and the pipeline's default ``negative_crops_coords_top_left`` (0, 0).
    """
    if aesthetic_score is None:
        pos = neg = list(original_size) + list(crops_coords_top_left) + list(target_size)
    else:
        pos = list(original_size) + list(crops_coords_top_left) + [aesthetic_score]
        neg = list(original_size) + [0, 0] + [negative_aesthetic_score]
    rows = [neg] * batch_size + [pos] * batch_size
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- 3. base -> refiner handoff
def handoff(timesteps: torch.Tensor, denoising_end: float, num_train_timesteps: int = 1000, order: int = 1):
    """Split a schedule between the base (``denoising_end``) and the refiner (``denoising_start``).

    The cut is at the discrete timestep round(T (1 - f)): the base runs every timestep >= it,
    the refiner every timestep below it, plus one for a second-order scheduler whose count
    would otherwise be even. Returns (base_timesteps, refiner_timesteps), slices of ``timesteps``.
    """
    cutoff = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    n_base = int(sum(1 for t in timesteps.tolist() if t >= cutoff))
    n_refiner = int((timesteps < cutoff).sum().item())
    if order == 2 and n_refiner % 2 == 0:
        n_refiner += 1
    return timesteps[:n_base], timesteps[len(timesteps) - n_refiner:]
