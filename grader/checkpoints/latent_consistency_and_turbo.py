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


# SD1.5's UNet (stable-diffusion-v1-5 unet/config.json) plus the LCM's w-conditioning; sample_size 96
# (768 px, as LCM_Dreamshaper_v7 samples) changes no weight.
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

#: LCM-LoRA's targets (diffusers' train_lcm_distill_lora_sd_wds.py): attention, MLP, resnet convs, samplers.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")


def _lora_standin_state_dict(cfg: dict[str, Any]) -> dict:
    """A seeded LoRA for the tiny UNet, named as diffusers' ``save_lora_weights`` writes it (``unet.<module>.lora_A.weight``)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg["unet"])
    g = torch.Generator("cpu").manual_seed(cfg.get("seed", 0))
    r, out = cfg["rank"], {}
    for name, m in unet.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or not any(name == t or name.endswith("." + t) for t in LORA_TARGETS):
            continue
        if isinstance(m, nn.Linear):
            down, up = torch.randn(r, m.in_features, generator=g), torch.randn(m.out_features, r, generator=g)
        else:
            down = torch.randn(r, m.in_channels, *m.kernel_size, generator=g)
            up = torch.randn(m.out_channels, r, 1, 1, generator=g)
        out[f"unet.{name}.lora_A.weight"], out[f"unet.{name}.lora_B.weight"] = 0.2 * down, 0.2 * up
    return out


CHECKPOINTS = {
    "lcm_dreamshaper_v7": Checkpoint(
        name="lcm_dreamshaper_v7",
        model_class="UNet2DConditionModel",
        repo_id="SimianLuo/LCM_Dreamshaper_v7",
        # A commit of the repo whose unet/ holds this file (hub listing "add-onnx (#11)"; the safetensors
        # file dates from "Upload model"). Read from a stored copy of the hub page: no machine here
        # reaches the hub, so `course weights download` on a networked machine is the first real test.
        revision="a85df6a8bd976cdd08b4fd8f3b73f229c9e54df5",
        subfolder="unet",
        license="mit",
        real_config=_LCM_SD15_UNET,
        standin_config=_LCM_TINY_UNET,
        notes="LCM distilled from Dreamshaper v7 (an SD1.5 fine-tune): SD1.5's UNet plus time_embedding.cond_proj "
              "(256 -> 320) for the guidance-scale embedding; unet fp32 safetensors 3.44 GB.",
    ),
    # A raw LoRA state dict (no config.json): model_class "state_dict" (grader.weights.resolve.STATE_DICT).
    "lcm_lora_sdv15": Checkpoint(
        name="lcm_lora_sdv15",
        model_class="state_dict",
        repo_id="latent-consistency/lcm-lora-sdv1-5",
        # main as listed on the hub ("Update README.md"); the weights file dates from commit d2a6220 ("uP").
        revision="cf2fced511dbe7e26c8d1d397e728fbab875db4b",
        subfolder="",
        license="openrail++",
        weights_name="pytorch_lora_weights.safetensors",   # 135 MB
        real_config=dict(base="stable-diffusion-v1-5 UNet", targets=LORA_TARGETS),
        standin_config=dict(builder="grader.checkpoints.latent_consistency_and_turbo:_lora_standin_state_dict",
                            rank=4, seed=0, unet={**_LCM_TINY_UNET, "time_cond_proj_dim": None}),
        notes="LCM-LoRA for SD1.5: LoRA deltas on attention, MLP, ResNet and sampler layers; no w-embedding. "
              "Only its header is read, by the notebook's demo (not by the checks).",
    ),
}

PARTS = parts(
    Part("lcm_time_embedding", "lcm_dreamshaper_v7", "time_embedding.", _build_time_embedding,
         "the UNet's time embedding: linear_1, linear_2 and cond_proj (the w-embedding's projection)"),
    Part("lcm_unet", "lcm_dreamshaper_v7", "", build_diffusers("UNet2DConditionModel"),
         "the whole UNet2DConditionModel with time_cond_proj_dim"),
)
