"""Lesson 9 (SDXL): stabilityai/stable-diffusion-xl-base-1.0: its UNet's added embedding and its two text encoders.

The text encoders are transformers classes (model_class "transformers:<Class>", see
grader.weights.resolve._build_class); their stand-ins are tiny configs of the same classes.
The tokenizers are not modules: :func:`tokenizers` builds two tiny CLIP BPE tokenizers in memory
(tokenizer_2 pads with "!", id 0, as the real OpenCLIP tokenizer does).

The lesson's tests use the stand-in encoders only. Reading the real CLIP-L file through
grader.weights would need one more step: transformers 5's ``CLIPTextModel`` has no
``text_model.`` level (its state dict starts at ``embeddings.``) while the hub file's keys
start with ``text_model.`` (``CLIPTextModelWithProjection`` still has the level, so
text_encoder_2's keys match).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, parts

REPO = "stabilityai/stable-diffusion-xl-base-1.0"
# No commit hash of this repo could be confirmed offline (the hub is unreachable here): "main".
REVISION = "main"
LICENSE = "openrail++ (CreativeML Open RAIL++-M)"

#: Stand-in tokenizers: model_max_length (the real ones: 77).
STANDIN_MAX_LENGTH = 16


def _unet_time_embed_dim(cfg: dict[str, Any]) -> int:
    return cfg.get("time_embedding_dim") or cfg["block_out_channels"][0] * 4


def _build_add_embedding(cfg: dict[str, Any]) -> nn.Module:
    """UNet2DConditionModel.add_embedding for addition_embed_type="text_time": Linear, SiLU, Linear."""
    from diffusers.models.embeddings import TimestepEmbedding

    return TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], _unet_time_embed_dim(cfg))


def _build_unet(cfg: dict[str, Any]) -> nn.Module:
    from diffusers import UNet2DConditionModel

    keys = inspect.signature(UNet2DConditionModel.__init__).parameters
    return UNet2DConditionModel(**{k: v for k, v in cfg.items() if k in keys})


def _build_transformers(class_name: str):
    def build(cfg: dict[str, Any]) -> nn.Module:
        import transformers

        cls = getattr(transformers, class_name)
        return cls(cls.config_class(**cfg))
    return build


# The real UNet's config (unet/config.json; the same numbers as sgm's sd_xl_base.yaml:
# model_channels 320, channel_mult [1, 2, 4], transformer_depth [0, 2, 10], context_dim 2048,
# adm_in_channels 2816, num_head_channels 64).
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], center_input_sample=False,
    cross_attention_dim=2048, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True,
)
# The refiner (stabilityai/stable-diffusion-xl-refiner-1.0), for comparison only (sd_xl_refiner.yaml):
# 4 levels of 384/768/1536/1536, transformer depth [0, 4, 4, 0], context 1280 (OpenCLIP only),
# adm_in_channels 2560 = 5 x 256 + 1280 (no target size: an aesthetic score instead).
SDXL_REFINER_UNET = dict(
    SDXL_UNET, attention_head_dim=[6, 12, 24, 24], block_out_channels=[384, 768, 1536, 1536], cross_attention_dim=1280,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    projection_class_embeddings_input_dim=2560, transformer_layers_per_block=4,
)

# Stand-in encoders: hidden widths 32 and 40 (so a mix-up of the two shows in the shapes),
# projection 24, 16 positions. Their concatenation (72) is the stand-in UNet's cross_attention_dim.
TEXT_ENCODER_STANDIN = dict(
    vocab_size=524, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=STANDIN_MAX_LENGTH, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    bos_token_id=522, eos_token_id=523, pad_token_id=523, projection_dim=24,
)
TEXT_ENCODER_2_STANDIN = dict(TEXT_ENCODER_STANDIN, hidden_size=40, intermediate_size=64, hidden_act="gelu",
                              pad_token_id=0)

CHECKPOINTS = {
    "sdxl_unet": Checkpoint(
        name="sdxl_unet",
        model_class="UNet2DConditionModel",
        repo_id=REPO,
        revision=REVISION,
        subfolder="unet",
        license=LICENSE,
        real_config=SDXL_UNET,
        # diffusers' own SDXL test UNet (tests/pipelines/stable_diffusion_xl): addition_time_embed_dim 8,
        # here with cross_attention_dim 72 (32 + 40) and projection input 6 x 8 + 24 = 72.
        standin_config=dict(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=72,
            cross_attention_dim=72, norm_num_groups=1,
        ),
        weights_name="diffusion_pytorch_model.fp16.safetensors",
        notes="SDXL base UNet: 2.6 B parameters, fp16 file 5.14 GB; the tests read add_embedding.* only.",
    ),
    "sdxl_text_encoder": Checkpoint(
        name="sdxl_text_encoder",
        model_class="transformers:CLIPTextModel",
        repo_id=REPO,
        revision=REVISION,
        subfolder="text_encoder",
        license=LICENSE,
        real_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=768),
        standin_config=TEXT_ENCODER_STANDIN,
        weights_name="model.fp16.safetensors",
        notes="CLIP ViT-L/14 text encoder (123 M parameters, fp16 file 246 MB).",
    ),
    "sdxl_text_encoder_2": Checkpoint(
        name="sdxl_text_encoder_2",
        model_class="transformers:CLIPTextModelWithProjection",
        repo_id=REPO,
        revision=REVISION,
        subfolder="text_encoder_2",
        license=LICENSE,
        real_config=dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                         num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                         projection_dim=1280),
        standin_config=TEXT_ENCODER_2_STANDIN,
        weights_name="model.fp16.safetensors",
        notes="OpenCLIP ViT-bigG/14 text encoder with its projection (695 M parameters, fp16 file 1.39 GB).",
    ),
}

PARTS = parts(
    Part("sdxl_add_embedding", "sdxl_unet", "add_embedding.", _build_add_embedding,
         "SDXL's added embedding: Linear(2816 -> 1280), SiLU, Linear(1280 -> 1280)"),
    Part("sdxl_unet", "sdxl_unet", "", _build_unet, "the whole SDXL UNet2DConditionModel"),
    Part("sdxl_text_encoder", "sdxl_text_encoder", "", _build_transformers("CLIPTextModel"),
         "CLIP ViT-L text encoder"),
    Part("sdxl_text_encoder_2", "sdxl_text_encoder_2", "", _build_transformers("CLIPTextModelWithProjection"),
         "OpenCLIP ViT-bigG text encoder with projection"),
)


# ---------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) byte -> printable character table for byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "c a", "ca t</w>", "o n</w>", "r e", "i n", "in g</w>")


def standin_tokenizer(max_length: int = STANDIN_MAX_LENGTH, pad_token: str = "<|endoftext|>"):
    """A tiny CLIP BPE tokenizer built in memory: 256 bytes, 256 word-final bytes, 10 merges,
    <|startoftext|> (522) and <|endoftext|> (523, the largest id, as in CLIP)."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = [tuple(m.split()) for m in _MERGES]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)


def tokenizers(max_length: int = STANDIN_MAX_LENGTH):
    """(tokenizer, tokenizer_2) stand-ins. Like SDXL's own, tokenizer_2 pads with "!" (id 0) where
    tokenizer pads with <|endoftext|>; the real ones (subfolders tokenizer/, tokenizer_2/) have 49408
    tokens and model_max_length 77."""
    return standin_tokenizer(max_length), standin_tokenizer(max_length, pad_token="!")


# ---------------------------------------------------------------- stand-in pipelines (notebook, tests)
#: The scheduler of SDXL base and refiner (scheduler/scheduler_config.json): Euler, "leading" spacing.
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
                      interpolation_type="linear", use_karras_sigmas=False)


def standin_refiner_unet(seed: int = 1):
    """A tiny refiner-like UNet: OpenCLIP width only (40) and 5 time ids (5 x 8 + 24 = 64)."""
    from ..weights.resolve import reinitialise_

    cfg = dict(CHECKPOINTS["sdxl_unet"].standin_config, cross_attention_dim=40,
               projection_class_embeddings_input_dim=64)
    unet = _build_unet(cfg)
    reinitialise_(unet, seed)
    return unet.eval()


def standin_pipelines(device="cpu"):
    """(base, refiner): StableDiffusionXLPipeline and StableDiffusionXLImg2ImgPipeline from stand-ins.

    Same components as the real pair (two encoders for the base, OpenCLIP only for the refiner,
    which has requires_aesthetics_score=True and force_zeros_for_empty_prompt=False), tiny sizes.
    """
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline)

    from .. import weights
    from ..weights.resolve import reinitialise_

    te, _ = weights.get("sdxl_text_encoder", device, standin=True)
    te2, _ = weights.get("sdxl_text_encoder_2", device, standin=True)
    unet, _ = weights.get("sdxl_unet", device, standin=True)
    tok, tok2 = tokenizers()
    vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4, sample_size=16)
    reinitialise_(vae, 2)
    vae = vae.to(device).eval()
    base = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                     add_watermarker=False)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2,
        unet=standin_refiner_unet().to(device), scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    return base, refiner
