"""Lessons 1-2 (ControlNet, ControlNet in practice): the Canny ControlNet and the SD1.5 UNet it steers."""

from __future__ import annotations

import inspect  # noqa: F401
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, build_diffusers, parts  # noqa: F401


def _build_controlnet_new_layers(cfg: dict[str, Any]) -> nn.Module:
    """What a ControlNet adds to the UNet's encoder copy, as its checkpoint stores it under
    ``controlnet_``: ``cond_embedding`` (the conditioning-image encoder), ``down_blocks`` (one zero
    convolution per skip tensor) and ``mid_block`` (the zero convolution on the middle block)."""
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    channels = list(cfg["block_out_channels"])
    skips = [channels[0]]
    for i, c in enumerate(channels):
        skips += [c] * cfg.get("layers_per_block", 2) + ([c] if i < len(channels) - 1 else [])
    return nn.ModuleDict({
        "cond_embedding": ControlNetConditioningEmbedding(
            conditioning_embedding_channels=channels[0],
            conditioning_channels=cfg.get("conditioning_channels", 3),
            block_out_channels=tuple(cfg.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)),
        ),
        "down_blocks": nn.ModuleList(nn.Conv2d(c, c, kernel_size=1) for c in skips),
        "mid_block": nn.Conv2d(channels[-1], channels[-1], kernel_size=1),
    })


_SD15_BLOCKS = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                    attention_head_dim=8, norm_num_groups=32, in_channels=4,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))
# Stand-ins: SD1.5's block order (attention first, plain last) at 3 levels, so a 9-skip encoder
# exercises the same bookkeeping as SD1.5's 12; 2 heads of width 4 at the first level.
_TINY_BLOCKS = dict(block_out_channels=(8, 16, 16), layers_per_block=2, cross_attention_dim=12,
                    attention_head_dim=(2, 4, 4), norm_num_groups=4, in_channels=4,
                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"))

CHECKPOINTS = {
    "controlnet_canny": Checkpoint(
        name="controlnet_canny",
        model_class="ControlNetModel",
        repo_id="lllyasviel/control_v11p_sd15_canny",
        revision="1924abb7afb3f36fecd21f424c126f0195454c87",  # seen on the hub; re-check with `course weights download`
        subfolder="",
        license="openrail",
        weights_name="diffusion_pytorch_model.fp16.safetensors",  # 723 MB; the fp32 file is 1.45 GB
        real_config=dict(_SD15_BLOCKS, conditioning_embedding_out_channels=(16, 32, 96, 256),
                         controlnet_conditioning_channel_order="rgb"),
        standin_config=dict(_TINY_BLOCKS, conditioning_embedding_out_channels=(4, 8, 16)),
        notes="ControlNet 1.1 Canny for SD1.5: 12 zero convs + 1 mid, conditioning image 8x the latent side.",
    ),
    "controlnet_sd15_unet": Checkpoint(
        name="controlnet_sd15_unet",
        model_class="UNet2DConditionModel",
        repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="main",
        subfolder="unet",
        license="creativeml-openrail-m",
        weights_name="diffusion_pytorch_model.fp16.safetensors",
        real_config=dict(_SD15_BLOCKS, sample_size=64, out_channels=4,
                         up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        standin_config=dict(_TINY_BLOCKS, sample_size=16, out_channels=4,
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
        notes="The frozen SD1.5 UNet a ControlNet steers. Lessons 1-2 run whole-model checks on the "
              "stand-in only (their real-weight checks read the ControlNet's own layers).",
    ),
}

PARTS = parts(
    Part("controlnet_new_layers", "controlnet_canny", "controlnet_", _build_controlnet_new_layers,
         "everything a ControlNet adds: conditioning embedding, zero convs (down and mid)"),
    Part("controlnet_model", "controlnet_canny", "", build_diffusers("ControlNetModel"),
         "the whole ControlNetModel (lessons 1-2 use its stand-in)"),
    Part("controlnet_sd15_unet_model", "controlnet_sd15_unet", "", build_diffusers("UNet2DConditionModel"),
         "the whole UNet2DConditionModel (lessons 1-2 use its stand-in)"),
)


