"""Lesson 11 (SD3 & Flux): one SD3.5 joint block and one FLUX.1-schnell double/single block.

Only the tensors of one block are read (through the shard index for Flux's 24 GB of shards);
the whole models are used as tiny stand-ins only (the notebook's plug-in proof).
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch.nn as nn

from ..weights.spec import Checkpoint, Part, parts


def _model(class_name: str):
    def build(cfg: dict[str, Any]) -> nn.Module:
        import diffusers

        cls = getattr(diffusers, class_name)
        keys = inspect.signature(cls.__init__).parameters  # a hub config also carries _class_name, ...
        return cls(**{k: v for k, v in cfg.items() if k in keys})
    return build


def _build_sd3_block(cfg: dict[str, Any]) -> nn.Module:
    """SD3Transformer2DModel.transformer_blocks[0] (never the last, context_pre_only one)."""
    from diffusers.models.attention import JointTransformerBlock

    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return JointTransformerBlock(dim=inner, num_attention_heads=cfg["num_attention_heads"],
                                 attention_head_dim=cfg["attention_head_dim"], context_pre_only=False,
                                 qk_norm=cfg.get("qk_norm"),
                                 use_dual_attention=0 in tuple(cfg.get("dual_attention_layers") or ()))


def _build_flux_double(cfg: dict[str, Any]) -> nn.Module:
    from diffusers.models.transformers.transformer_flux import FluxTransformerBlock

    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return FluxTransformerBlock(dim=inner, num_attention_heads=cfg["num_attention_heads"],
                                attention_head_dim=cfg["attention_head_dim"])


def _build_flux_single(cfg: dict[str, Any]) -> nn.Module:
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    return FluxSingleTransformerBlock(dim=inner, num_attention_heads=cfg["num_attention_heads"],
                                      attention_head_dim=cfg["attention_head_dim"])


CHECKPOINTS = {
    "sd35_large": Checkpoint(
        name="sd35_large",
        model_class="SD3Transformer2DModel",
        repo_id="stabilityai/stable-diffusion-3.5-large",
        # Gated: the hub serves it only to an account that accepted the Stability AI Community
        # License; unreachable here, so no commit could be looked up: pin one when downloading.
        revision="main",
        subfolder="transformer",
        license="stabilityai-ai-community (gated: accept the licence on the model page first)",
        real_config=dict(
            sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
            num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm",
            dual_attention_layers=(),
        ),
        # diffusers' own SD3 test config with SD3.5's qk_norm; 3 layers, so block 0 is a full
        # joint block and block 2 the context_pre_only one.
        standin_config=dict(
            sample_size=32, patch_size=1, in_channels=4, num_layers=3, attention_head_dim=8,
            num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
            pooled_projection_dim=64, out_channels=4, pos_embed_max_size=96, qk_norm="rms_norm",
            dual_attention_layers=(),
        ),
        notes="SD3.5 Large: 8.1 B parameters, 38 joint blocks of width 2432 (38 heads x 64); "
              "the transformer alone is ~16 GB in bf16.",
    ),
    "flux_schnell": Checkpoint(
        name="flux_schnell",
        model_class="FluxTransformer2DModel",
        repo_id="black-forest-labs/FLUX.1-schnell",
        # The hub is unreachable from here, so no commit could be looked up: pin one when downloading.
        revision="main",
        subfolder="transformer",
        license="apache-2.0",
        real_config=dict(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            guidance_embeds=False, axes_dims_rope=(16, 56, 56),
        ),
        # diffusers' own Flux test config, with 16 packed input channels (4 latent channels x 2x2)
        # and two blocks of each kind.
        standin_config=dict(
            patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            guidance_embeds=False, axes_dims_rope=(4, 4, 8),
        ),
        notes="FLUX.1 [schnell]: 12 B parameters, 19 double + 38 single blocks of width 3072; "
              "transformer shards ~24 GB bf16, one double block ~650 MB.",
    ),
}

PARTS = parts(
    Part("sd3_block", "sd35_large", "transformer_blocks.0.", _build_sd3_block,
         "SD3 joint block 0: adaLN-Zero on both streams, joint attention (QK RMSNorm), two MLPs"),
    Part("sd3_model", "sd35_large", "", _model("SD3Transformer2DModel"), "the whole SD3Transformer2DModel"),
    Part("flux_double_block", "flux_schnell", "transformer_blocks.0.", _build_flux_double,
         "Flux double-stream block 0"),
    Part("flux_single_block", "flux_schnell", "single_transformer_blocks.0.", _build_flux_single,
         "Flux single-stream block 0"),
    Part("flux_model", "flux_schnell", "", _model("FluxTransformer2DModel"), "the whole FluxTransformer2DModel"),
)


# ---------------------------------------------------------------- SD3's three text encoders, tiny
class WordTokenizer:
    """A stand-in tokenizer with the call signature the SD3 pipeline uses: one id per word
    (a stable hash), BOS/EOS around it, padded to ``max_length`` (CLIP pads with EOS, T5 with 0)."""

    def __init__(self, vocab_size: int, model_max_length: int, bos: int | None, eos: int, pad: int):
        self.vocab_size, self.model_max_length = vocab_size, model_max_length
        self.bos, self.eos, self.pad = bos, eos, pad

    def _ids(self, text: str) -> list[int]:
        import zlib

        words = [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in text.lower().split()]
        return ([self.bos] if self.bos is not None else []) + words + [self.eos]

    def __call__(self, prompt, padding="max_length", max_length=None, truncation=False, return_tensors="pt",
                 add_special_tokens=True, **_):
        import torch
        from types import SimpleNamespace

        rows = [self._ids(p) for p in ([prompt] if isinstance(prompt, str) else prompt)]
        if truncation and max_length:
            rows = [r[: max_length - 1] + [self.eos] if len(r) > max_length else r for r in rows]
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        rows = [r + [self.pad] * (width - len(r)) for r in rows]
        return SimpleNamespace(input_ids=torch.tensor(rows))

    def batch_decode(self, ids, **_):
        return [" ".join(str(int(i)) for i in row) for row in ids]


def _build_text_encoders(seed: int, clip_tokens: int) -> dict:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ..weights.resolve import reinitialise_

    def clip(width: int, proj: int, s: int):
        cfg = CLIPTextConfig(vocab_size=1000, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3,
                             num_attention_heads=2, max_position_embeddings=clip_tokens, projection_dim=proj,
                             bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_act="gelu")
        model = CLIPTextModelWithProjection(cfg)
        reinitialise_(model, seed + s)
        return model

    t5 = T5EncoderModel(T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                 pad_token_id=0, eos_token_id=1))
    reinitialise_(t5, seed + 3)
    return {"text_encoder": clip(8, 8, 1), "text_encoder_2": clip(12, 12, 2), "text_encoder_3": t5}


def standin_sd3_text_encoders(seed: int = 0, clip_tokens: int = 77, t5_tokens: int = 256):
    """Tiny CLIP-L, OpenCLIP-G-style (both CLIPTextModelWithProjection) and T5 encoders with
    stand-in tokenizers: {text_encoder, tokenizer, text_encoder_2, tokenizer_2, text_encoder_3,
    tokenizer_3}. The real widths are 768 / 1280 / 4096; these are 8 / 12 / 32 (so the CLIP
    features, 8 + 12 = 20, are zero-padded to 32 as the real 2048 are to 4096).

    Like every stand-in, they are built once (seeded, every parameter re-initialised), written
    with ``save_pretrained`` into the course cache in the pipeline's folder layout
    (``text_encoder``, ``text_encoder_2``, ``text_encoder_3``) and loaded back with
    ``from_pretrained``: the loading code a real checkpoint goes through.
    """
    from transformers import CLIPTextModelWithProjection, T5EncoderModel
    from transformers.utils import logging as hf_logging

    from ..weights.resolve import cache_root

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no progress bars on stderr (a graded cell writing to stderr scores 0)
    try:
        return _load_text_encoders(seed, clip_tokens, t5_tokens, cache_root(), CLIPTextModelWithProjection,
                                   T5EncoderModel)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_text_encoders(seed, clip_tokens, t5_tokens, root, clip_cls, t5_cls) -> dict:
    import os
    import shutil
    import tempfile
    from pathlib import Path

    folder = root / "standins" / f"sd3-text-encoders-s{seed}-c{clip_tokens}"
    if not (folder / "text_encoder_3" / "config.json").is_file():
        built = _build_text_encoders(seed, clip_tokens)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
        except OSError:
            # A read-only cache (the grading sandbox, when the grader did not build these first):
            # the build is deterministic, so the models in memory are the ones a save would hold.
            tmp = None
        if tmp is not None:
            for sub, model in built.items():
                model.save_pretrained(tmp / sub, safe_serialization=True)
            try:
                os.replace(tmp, folder)  # atomic: parallel graders never see half a stand-in
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "text_encoder_3" / "config.json").is_file():
            encoders = {sub: model.eval() for sub, model in built.items()}
            return _with_tokenizers(encoders, clip_tokens, t5_tokens)
    load = {"text_encoder": clip_cls, "text_encoder_2": clip_cls, "text_encoder_3": t5_cls}
    encoders = {sub: cls.from_pretrained(folder / sub).eval() for sub, cls in load.items()}
    return _with_tokenizers(encoders, clip_tokens, t5_tokens)


def _with_tokenizers(encoders: dict, clip_tokens: int, t5_tokens: int) -> dict:
    return dict(encoders, tokenizer=WordTokenizer(1000, clip_tokens, 1, 2, 2),
                tokenizer_2=WordTokenizer(1000, clip_tokens, 1, 2, 2),
                tokenizer_3=WordTokenizer(1000, t5_tokens, None, 1, 0))


@lru_cache(maxsize=2)
def _cached_pipeline(seed: int, clip_tokens: int, t5_tokens: int):
    return standin_sd3_pipeline(seed, clip_tokens, t5_tokens)


def cached_sd3_pipeline(seed: int = 0):
    """The stand-in text pipeline, built once per process (the hidden tests use the same one)."""
    return _cached_pipeline(seed, 77, 256)


def sd3_prompt_states(prompts: list[str], seed: int = 0, t5_tokens: int = 256):
    """What the three stand-in encoders give for ``prompts``: (clip_l, pooled_l, clip_g, pooled_g, t5),
    with the penultimate CLIP states and the projected pooled outputs, as encode_prompt reads them."""
    import torch

    pipe = cached_sd3_pipeline(seed)
    with torch.no_grad():
        states = []
        for enc, tok in ((pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)):
            out = enc(tok(prompts, max_length=77, truncation=True).input_ids, output_hidden_states=True)
            states += [out.hidden_states[-2], out.text_embeds]
        states.append(pipe.text_encoder_3(pipe.tokenizer_3(prompts, max_length=t5_tokens, truncation=True).input_ids)[0])
    return tuple(states)


def sd3_encode_prompt(prompts: list[str], seed: int = 0, t5_tokens: int = 256):
    """StableDiffusion3Pipeline.encode_prompt with the stand-in encoders: (prompt_embeds, pooled)."""
    import torch

    pipe = cached_sd3_pipeline(seed)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=torch.device("cpu"),
                                                  do_classifier_free_guidance=False, max_sequence_length=t5_tokens)
    return embeds, pooled


def standin_sd3_pipeline(seed: int = 0, clip_tokens: int = 77, t5_tokens: int = 256):
    """StableDiffusion3Pipeline around the tiny text encoders (its transformer and VAE are not needed
    for ``encode_prompt``; a stand-in transformer is attached for the pipeline's bookkeeping)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    parts = standin_sd3_text_encoders(seed, clip_tokens, t5_tokens)
    return StableDiffusion3Pipeline(transformer=None, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, **parts)
