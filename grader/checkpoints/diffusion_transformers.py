"""Lesson 10 (DiT): facebook/DiT-XL-2-256 and the parts its exercises read."""

from __future__ import annotations

import inspect  # noqa: F401
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, build_diffusers, parts  # noqa: F401


def _dit_inner(cfg: dict[str, Any]) -> int:
    return cfg["num_attention_heads"] * cfg["attention_head_dim"]


def _build_dit_block(cfg: dict[str, Any]) -> nn.Module:
    from diffusers.models.attention import BasicTransformerBlock

    return BasicTransformerBlock(
        _dit_inner(cfg),
        cfg["num_attention_heads"],
        cfg["attention_head_dim"],
        dropout=cfg.get("dropout", 0.0),
        activation_fn=cfg.get("activation_fn", "gelu-approximate"),
        num_embeds_ada_norm=cfg.get("num_embeds_ada_norm", 1000),
        attention_bias=cfg.get("attention_bias", True),
        upcast_attention=cfg.get("upcast_attention", False),
        norm_type="ada_norm_zero",
        norm_elementwise_affine=cfg.get("norm_elementwise_affine", False),
        norm_eps=cfg.get("norm_eps", 1e-5),
    )


def _build_dit_patch_embed(cfg: dict[str, Any]) -> nn.Module:
    from diffusers.models.embeddings import PatchEmbed

    return PatchEmbed(
        height=cfg["sample_size"],
        width=cfg["sample_size"],
        patch_size=cfg["patch_size"],
        in_channels=cfg["in_channels"],
        embed_dim=_dit_inner(cfg),
    )


def _build_dit_final(cfg: dict[str, Any]) -> nn.Module:
    """The DiT final layer as its checkpoint stores it: proj_out_1 (shift, scale) and proj_out_2."""
    inner = _dit_inner(cfg)
    out_channels = cfg.get("out_channels") or cfg["in_channels"]
    p = cfg["patch_size"]
    return nn.ModuleDict({
        "proj_out_1": nn.Linear(inner, 2 * inner),
        "proj_out_2": nn.Linear(inner, p * p * out_channels),
    })


def _build_dit(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import DiTTransformer2DModel

    # A hub config also carries _class_name, _diffusers_version, ...: pass only real arguments.
    keys = inspect.signature(DiTTransformer2DModel.__init__).parameters
    return DiTTransformer2DModel(**{k: v for k, v in cfg.items() if k in keys})


CHECKPOINTS = {
    "dit": Checkpoint(
        name="dit",
        model_class="DiTTransformer2DModel",
        repo_id="facebook/DiT-XL-2-256",
        # main holds only a 3 GB .bin; the safetensors conversion lives on this PR ref.
        revision="refs/pr/1",
        subfolder="transformer",
        license="cc-by-nc-4.0",
        real_config=dict(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
            num_layers=28, sample_size=32, patch_size=2, activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False,
            norm_eps=1e-5, attention_bias=True, upcast_attention=False, dropout=0.0,
        ),
        # diffusers' own DiT test config, with 2 layers so block 0 is not also the last.
        standin_config=dict(
            num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8,
            num_layers=2, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
            num_embeds_ada_norm=8, norm_type="ada_norm_zero", norm_elementwise_affine=False,
            norm_eps=1e-5, attention_bias=True,
        ),
        notes="DiT-XL/2 at 256 px: 32x32x4 latents, 256 tokens of width 1152, 28 blocks.",
    ),
}

PARTS = parts(
    Part("dit_block", "dit", "transformer_blocks.0.", _build_dit_block,
         "DiT block 0: adaLN-Zero (with its timestep+label embedder), attention, MLP"),
    Part("dit_patch_embed", "dit", "pos_embed.", _build_dit_patch_embed,
         "DiT patch embedding: the p x p stride-p convolution (pos_embed is a buffer)"),
    Part("dit_final", "dit", "", _build_dit_final,
         "DiT final layer: proj_out_1 (shift, scale) and proj_out_2"),
    Part("dit_model", "dit", "", _build_dit, "the whole DiTTransformer2DModel"),
)


