"""What each reference needs: the real checkpoint, the tensors to read, a stand-in config.

A :class:`Checkpoint` is one diffusers model repository (real weights, pinned revision,
the real architecture's config and a tiny stand-in config of the same class). A
:class:`Part` is the piece of it a test needs (a tensor-name prefix and how to build the
module for it from the checkpoint's config), so that one DiT block is read without the
other 27.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class Checkpoint:
    name: str
    model_class: str                      # diffusers class the stand-in is built from
    repo_id: str
    revision: str                         # pinned: a commit, or a ref the hub keeps (refs/pr/N)
    subfolder: str
    license: str
    real_config: dict[str, Any]           # the real architecture (random-weight builds at size)
    standin_config: dict[str, Any]        # tiny, same class (diffusers' own test configs)
    weights_name: str = "diffusion_pytorch_model.safetensors"
    notes: str = ""

    @property
    def index_name(self) -> str:
        return self.weights_name + ".index.json"


@dataclass(frozen=True)
class Part:
    name: str
    checkpoint: str
    prefix: str                            # tensor-name prefix in the checkpoint ("" = all)
    build: Callable[[dict[str, Any]], nn.Module] = field(repr=False)
    description: str = ""


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


CHECKPOINTS: dict[str, Checkpoint] = {
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

PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part("dit_block", "dit", "transformer_blocks.0.", _build_dit_block,
             "DiT block 0: adaLN-Zero (with its timestep+label embedder), attention, MLP"),
        Part("dit_patch_embed", "dit", "pos_embed.", _build_dit_patch_embed,
             "DiT patch embedding: the p x p stride-p convolution (pos_embed is a buffer)"),
        Part("dit_final", "dit", "", _build_dit_final,
             "DiT final layer: proj_out_1 (shift, scale) and proj_out_2"),
        Part("dit_model", "dit", "", _build_dit, "the whole DiTTransformer2DModel"),
    )
}


def part(name: str) -> Part:
    try:
        return PARTS[name]
    except KeyError:
        raise KeyError(f"no weights entry {name!r}; known: {sorted(PARTS)}") from None


def checkpoint_of(name: str) -> Checkpoint:
    return CHECKPOINTS[part(name).checkpoint]


# ---------------------------------------------------------------- lessons 1-2: ControlNet
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


def _build_diffusers(class_name: str) -> Callable[[dict[str, Any]], nn.Module]:
    def build(cfg: dict[str, Any]) -> nn.Module:
        import diffusers

        cls = getattr(diffusers, class_name)
        keys = inspect.signature(cls.__init__).parameters  # a hub config also carries _class_name, ...
        return cls(**{k: v for k, v in cfg.items() if k in keys})
    return build


_SD15_BLOCKS = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                    attention_head_dim=8, norm_num_groups=32, in_channels=4,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))
# Stand-ins: SD1.5's block order (attention first, plain last) at 3 levels, so a 9-skip encoder
# exercises the same bookkeeping as SD1.5's 12; 2 heads of width 4 at the first level.
_TINY_BLOCKS = dict(block_out_channels=(8, 16, 16), layers_per_block=2, cross_attention_dim=12,
                    attention_head_dim=(2, 4, 4), norm_num_groups=4, in_channels=4,
                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"))

CHECKPOINTS.update({
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
})

PARTS.update({
    p.name: p
    for p in (
        Part("controlnet_new_layers", "controlnet_canny", "controlnet_", _build_controlnet_new_layers,
             "everything a ControlNet adds: conditioning embedding, zero convs (down and mid)"),
        Part("controlnet_model", "controlnet_canny", "", _build_diffusers("ControlNetModel"),
             "the whole ControlNetModel (lessons 1-2 use its stand-in)"),
        Part("controlnet_sd15_unet_model", "controlnet_sd15_unet", "", _build_diffusers("UNet2DConditionModel"),
             "the whole UNet2DConditionModel (lessons 1-2 use its stand-in)"),
    )
})


# ---------------------------------------------------------------- lesson 4: Score Functions & SDEs
def _build_unet2d_lesson04(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DModel

    keys = inspect.signature(UNet2DModel.__init__).parameters  # a hub config also carries _class_name, ...
    return UNet2DModel(**{k: v for k, v in cfg.items() if k in keys})


# The time embedding of google/ddpm-cifar10-32 (flip_sin_to_cos=False, freq_shift=1, positional),
# kept in the stand-in so that wrong timestep handling (t/1000) changes its output as it would the real one.
_DDPM_CIFAR10_TIME = dict(time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
                          norm_eps=1e-6, downsample_padding=0, act_fn="silu", center_input_sample=False,
                          mid_block_scale_factor=1, attention_head_dim=None, in_channels=3, out_channels=3)

CHECKPOINTS.update({
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
})

PARTS.update({
    "ddpm_unet": Part("ddpm_unet", "ddpm_cifar10", "", _build_unet2d_lesson04,
                      "the whole UNet2DModel: eps = unet(x_t, t).sample"),
})


# ---------------------------------------------------------------- lesson 3: IP-Adapter
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
    from .resolve import reinitialise_

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

CHECKPOINTS.update({
    "ip_adapter_sd15": Checkpoint(
        name="ip_adapter_sd15",
        model_class="state_dict",
        repo_id="h94/IP-Adapter",
        revision="main",
        subfolder="models",
        license="apache-2.0",
        weights_name="ip-adapter_sd15.safetensors",  # 44.6 MB, fp16; keys image_proj.* and ip_adapter.*
        real_config=dict(image_embed_dim=1024, num_tokens=4, unet=_IPA_SD15_UNET),
        standin_config=dict(builder="grader.weights.registry:_ipa_standin_state_dict", image_embed_dim=16,
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
})

PARTS.update({
    p.name: p
    for p in (
        Part("ip_adapter_image_proj", "ip_adapter_sd15", "image_proj.", _build_ipa_image_proj,
             "IP-Adapter image projection: proj (CLIP image embedding -> T tokens) and norm"),
        Part("ip_adapter_layers", "ip_adapter_sd15", "ip_adapter.", _build_ipa_layers,
             "IP-Adapter to_k_ip / to_v_ip for every cross-attention"),
        Part("ip_adapter_attn2", "ip_adapter_sd15_unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.",
             _build_ipa_attn2, "the UNet's first cross-attention (text K/V)"),
        Part("ip_adapter_unet", "ip_adapter_sd15_unet", "", _build_ipa_unet, "the whole UNet2DConditionModel"),
    )
})
