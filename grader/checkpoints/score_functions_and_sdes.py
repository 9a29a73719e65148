"""Lesson 4 (score functions & SDEs): google/ddpm-cifar10-32."""

from __future__ import annotations

import inspect  # noqa: F401
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, build_diffusers, parts  # noqa: F401


def _build_unet2d_lesson04(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    keys = inspect.signature(UNet2DModel.__init__).parameters  # a hub config also carries _class_name, ...
    return UNet2DModel(**{k: v for k, v in cfg.items() if k in keys})


# The time embedding of google/ddpm-cifar10-32 (flip_sin_to_cos=False, freq_shift=1, positional),
# kept in the stand-in so that wrong timestep handling (t/1000) changes its output as it would the real one.
_DDPM_CIFAR10_TIME = dict(time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
                          norm_eps=1e-6, downsample_padding=0, act_fn="silu", center_input_sample=False,
                          mid_block_scale_factor=1, attention_head_dim=None, in_channels=3, out_channels=3)

CHECKPOINTS = {
    "ddpm_cifar10": Checkpoint(
        name="ddpm_cifar10",
        model_class="UNet2DModel",
        repo_id="google/ddpm-cifar10-32",
        # Unverified here (no hub access): the UNet's config.json and weights sit at the repo root
        # (DDPMPipeline falls back to the root when there is no unet/ folder); the repo is tagged
        # Safetensors but the file name was not seen. Commit ff056c9de317d5b9ced74e0886174801c2ecb5fb
        # appears in public copies of its config; pin with `course weights download`.
        revision="main",
        subfolder="",
        license="apache-2.0",
        real_config=dict(_DDPM_CIFAR10_TIME, sample_size=32, block_out_channels=(128, 256, 256, 256),
                         layers_per_block=2, norm_num_groups=32,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
        # diffusers' own UNet2DModel test config (2 levels, one with attention), with the real time embedding.
        standin_config=dict(_DDPM_CIFAR10_TIME, sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
                            norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D")),
        notes="DDPM (Ho et al. 2020) on CIFAR-10, 32x32 RGB, eps-prediction, 1000 linear betas 1e-4..0.02 "
              "(its scheduler_config: clip_sample true, variance_type fixed_large); ~35.7 M parameters.",
    ),
}

PARTS = parts(
    Part("ddpm_unet", "ddpm_cifar10", "", _build_unet2d_lesson04, "the whole UNet2DModel: eps = unet(x_t, t).sample"),
)


