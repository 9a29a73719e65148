"""Lesson 6 (consistency models): openai/diffusers-cd_imagenet64_l2, the consistency-distilled ImageNet-64 UNet."""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, parts


def _build_unet2d_lesson06(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    keys = inspect.signature(UNet2DModel.__init__).parameters  # a hub config also carries _class_name, ...
    return UNet2DModel(**{k: v for k, v in cfg.items() if k in keys})


# What every converted consistency-model UNet shares (diffusers' scripts/convert_consistency_to_diffusers.py):
# ADM's scale-shift ResNets and resampling inside ResNets; the time embedding is UNet2DModel's default
# (positional, flip_sin_to_cos=True, freq_shift=0), fed with 250 ln(sigma) by the scheduler.
_CM_COMMON = dict(in_channels=3, out_channels=3, resnet_time_scale_shift="scale_shift",
                  upsample_type="resnet", downsample_type="resnet", time_embedding_type="positional",
                  flip_sin_to_cos=True, freq_shift=0)

CHECKPOINTS = {
    "cd_imagenet64_l2": Checkpoint(
        name="cd_imagenet64_l2",
        model_class="UNet2DModel",
        repo_id="openai/diffusers-cd_imagenet64_l2",
        # Unverified here (no hub access): no commit of this repo was found in the searchable public
        # copies, so "main" until `course weights download` pins it. The pipeline repo keeps the
        # UNet in unet/ and the scheduler (CMStochasticIterativeScheduler, 40 train steps) in scheduler/.
        revision="main",
        subfolder="unet",
        license="mit",
        # IMAGENET_64_UNET_CONFIG of diffusers' conversion script.
        real_config=dict(_CM_COMMON, sample_size=64, layers_per_block=3, num_class_embeds=1000,
                         block_out_channels=(192, 384, 576, 768), attention_head_dim=64, attn_norm_num_groups=32,
                         down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                           "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D")),
        # Same class and block kinds, tiny (the conversion script's TEST_UNET_CONFIG, shrunk): 54 k parameters.
        standin_config=dict(_CM_COMMON, sample_size=8, layers_per_block=1, num_class_embeds=10,
                            block_out_channels=(8, 16), attention_head_dim=4, norm_num_groups=4,
                            attn_norm_num_groups=4, down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D")),
        notes="Consistency distillation from EDM on ImageNet 64x64 (Song et al. 2023), distilled with the squared L2 distance as its metric d "
              "(the _l2; the _lpips repos used LPIPS), class-conditional (1000 labels); 295.9 M parameters (counted from the config), about 1.2 GB in fp32. "
              "Scheduler: CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80).",
    ),
}

PARTS = parts(
    Part("cm_unet", "cd_imagenet64_l2", "", _build_unet2d_lesson06,
         "the whole UNet2DModel: F = unet(c_in x, 250 ln sigma, class_labels).sample"),
)
