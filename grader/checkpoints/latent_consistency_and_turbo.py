"""Lesson 7 (LCM & SDXL Turbo): SimianLuo/LCM_Dreamshaper_v7's UNet and the parts its exercises read."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, build_diffusers, parts


def _build_time_embedding(cfg: dict[str, Any]) -> nn.Module:
    """The UNet's ``time_embedding`` (TimestepEmbedding with the LCM's ``cond_proj``), as the checkpoint stores it."""
    from diffusers.models.embeddings import TimestepEmbedding

    c0 = cfg["block_out_channels"][0]
    return TimestepEmbedding(c0, c0 * 4, act_fn=cfg.get("act_fn", "silu"), cond_proj_dim=cfg["time_cond_proj_dim"])


# SD1.5's UNet (stable-diffusion-v1-5 unet/config.json) plus the LCM's w-conditioning.
_LCM_SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=96, time_cond_proj_dim=256,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
# Tiny, same class: two levels, 1x1-conv proj_in/out as in SD1.5, a 6-wide w-conditioning.
_LCM_TINY_UNET = dict(
    block_out_channels=[8, 16], layers_per_block=1, cross_attention_dim=12, attention_head_dim=2, norm_num_groups=4,
    in_channels=4, out_channels=4, sample_size=8, time_cond_proj_dim=6,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
)

CHECKPOINTS = {
    "lcm_dreamshaper_v7": Checkpoint(
        name="lcm_dreamshaper_v7",
        model_class="UNet2DConditionModel",
        repo_id="SimianLuo/LCM_Dreamshaper_v7",
        # No machine here reaches the hub to read a commit hash: pin it with `course weights download`.
        revision="main",
        subfolder="unet",
        license="mit",
        real_config=_LCM_SD15_UNET,
        standin_config=_LCM_TINY_UNET,
        notes="LCM distilled from Dreamshaper v7 (an SD1.5 fine-tune): SD1.5's UNet plus time_embedding.cond_proj "
              "(256 -> 320) for the guidance-scale embedding; unet fp32 safetensors 3.44 GB.",
    ),
}

PARTS = parts(
    Part("lcm_time_embedding", "lcm_dreamshaper_v7", "time_embedding.", _build_time_embedding,
         "the UNet's time embedding: linear_1, linear_2 and cond_proj (the w-embedding's projection)"),
    Part("lcm_unet", "lcm_dreamshaper_v7", "", build_diffusers("UNet2DConditionModel"),
         "the whole UNet2DConditionModel with time_cond_proj_dim"),
)
