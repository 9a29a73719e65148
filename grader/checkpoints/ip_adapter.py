"""Lesson 3 (IP-Adapter): h94/IP-Adapter and the SD1.5 UNet attention it plugs into."""

from __future__ import annotations

import inspect  # noqa: F401
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, build_diffusers, parts  # noqa: F401


# The IP-Adapter file is a raw state dict (no config.json): model_class "state_dict"
# (grader.weights.resolve.STATE_DICT); its config here says which UNet it belongs to.
def _ipa_cross_attentions(unet_cfg: dict[str, Any]) -> list[tuple[str, int]]:
    """(processor name, width) of every cross-attention (attn2), in ``unet.attn_processors`` order."""
    import torch
    from diffusers import UNet2DConditionModel

    keys = inspect.signature(UNet2DConditionModel.__init__).parameters
    with torch.device("meta"):
        unet = UNet2DConditionModel(**{k: v for k, v in unet_cfg.items() if k in keys})
    return [(name, unet.get_submodule(name[: -len(".processor")]).to_q.out_features)
            for name in unet.attn_processors if name.endswith("attn2.processor")]


def _build_ipa_image_proj(cfg: dict[str, Any]) -> nn.Module:
    """IP-Adapter's image projection as its file stores it under ``image_proj.``: proj (E -> T*C), norm (C)."""
    C = cfg["unet"]["cross_attention_dim"]
    return nn.ModuleDict({"proj": nn.Linear(cfg["image_embed_dim"], cfg["num_tokens"] * C), "norm": nn.LayerNorm(C)})


def _build_ipa_layers(cfg: dict[str, Any]) -> nn.Module:
    """The new K/V projections under ``ip_adapter.``: ``{id}.to_k_ip`` / ``{id}.to_v_ip`` per cross-attention."""
    C = cfg["unet"]["cross_attention_dim"]
    return nn.ModuleDict({
        str(2 * i + 1): nn.ModuleDict({"to_k_ip": nn.Linear(C, width, bias=False),
                                       "to_v_ip": nn.Linear(C, width, bias=False)})
        for i, (_, width) in enumerate(_ipa_cross_attentions(cfg["unet"]))
    })


def _ipa_standin_state_dict(cfg: dict[str, Any]) -> dict:
    """A random IP-Adapter state dict for the stand-in UNet, every tensor non-trivial, keys as in the real file."""
    from ..weights.resolve import reinitialise_

    tensors = {}
    for prefix, build, seed in (("image_proj.", _build_ipa_image_proj, 1), ("ip_adapter.", _build_ipa_layers, 2)):
        module = build(cfg)
        reinitialise_(module, cfg.get("seed", 0) + seed)
        tensors.update({prefix + k: v.detach().clone() for k, v in module.state_dict().items()})
    return tensors


def _build_ipa_attn2(cfg: dict[str, Any]) -> nn.Module:
    """The first cross-attention of a UNet2DConditionModel (down_blocks.0 ... attn2)."""
    from diffusers.models.attention_processor import Attention

    width = cfg["block_out_channels"][0]
    heads = cfg.get("attention_head_dim", 8)
    heads = heads if isinstance(heads, int) else heads[0]
    return Attention(query_dim=width, cross_attention_dim=cfg["cross_attention_dim"], heads=heads,
                     dim_head=width // heads, bias=False, upcast_attention=cfg.get("upcast_attention", False),
                     out_bias=True)


def _build_ipa_unet(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DConditionModel

    keys = inspect.signature(UNet2DConditionModel.__init__).parameters
    return UNet2DConditionModel(**{k: v for k, v in cfg.items() if k in keys})


_IPA_SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
    norm_num_groups=32, in_channels=4, out_channels=4, sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
# SD1.5's layout at 3 levels: 4 cross-attentions down, 6 up, 1 mid (11, ids 1..21); the mid
# block is as wide as up_blocks.1, as in SD1.5, so a mis-ordered mapping can still fit shapes.
_IPA_TINY_UNET = dict(
    block_out_channels=(8, 16, 16), layers_per_block=2, cross_attention_dim=12, attention_head_dim=2,
    norm_num_groups=4, in_channels=4, out_channels=4, sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

CHECKPOINTS = {
    "ip_adapter_sd15": Checkpoint(
        name="ip_adapter_sd15",
        model_class="state_dict",
        repo_id="h94/IP-Adapter",
        revision="main",
        subfolder="models",
        license="apache-2.0",
        weights_name="ip-adapter_sd15.safetensors",  # 44.6 MB, fp16; keys image_proj.* and ip_adapter.*
        real_config=dict(image_embed_dim=1024, num_tokens=4, unet=_IPA_SD15_UNET),
        standin_config=dict(builder="grader.checkpoints.ip_adapter:_ipa_standin_state_dict", image_embed_dim=16,
                            num_tokens=4, unet=_IPA_TINY_UNET, seed=0),
        notes="IP-Adapter for SD1.5: OpenCLIP ViT-H/14 image embedding (1024) -> 4 tokens of 768; "
              "to_k_ip/to_v_ip for the 16 cross-attentions (ids 1, 3, ..., 31).",
    ),
    "ip_adapter_sd15_unet": Checkpoint(
        name="ip_adapter_sd15_unet",
        model_class="UNet2DConditionModel",
        repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="main",
        subfolder="unet",
        license="creativeml-openrail-m",
        weights_name="diffusion_pytorch_model.fp16.safetensors",
        real_config=_IPA_SD15_UNET,
        standin_config=_IPA_TINY_UNET,
        notes="The frozen SD1.5 UNet the IP-Adapter plugs into (real weights used only together with "
              "the real IP-Adapter file).",
    ),
}

PARTS = parts(
    Part("ip_adapter_image_proj", "ip_adapter_sd15", "image_proj.", _build_ipa_image_proj,
         "IP-Adapter image projection: proj (CLIP image embedding -> T tokens) and norm"),
    Part("ip_adapter_layers", "ip_adapter_sd15", "ip_adapter.", _build_ipa_layers,
         "IP-Adapter to_k_ip / to_v_ip for every cross-attention"),
    Part("ip_adapter_attn2", "ip_adapter_sd15_unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.",
         _build_ipa_attn2, "the UNet's first cross-attention (text K/V)"),
    Part("ip_adapter_unet", "ip_adapter_sd15_unet", "", _build_ipa_unet, "the whole UNet2DConditionModel"),
)
