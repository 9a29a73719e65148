"""Lesson 3 (IP-Adapter): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference there) and ``judge`` (reference + comparison; trusted side only).

Public checks: fixed small inputs on the CPU, the stand-in UNet for the UNet-level checks.
Hidden tests: a seed drawn at grading time, other batch sizes, token counts, widths, head
counts (attentions whose inner width differs from their query width) and UNet layouts (two
transformer layers per block; SD1.5's and SDXL's real layouts on the meta
device), the real ``h94/IP-Adapter`` + SD1.5 weights when both are present, and the GPU
when there is one.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .. import weights
from ..checkpoints.ip_adapter import _ipa_standin_state_dict
from ..compare import ComparisonError, assert_close
from ..reference import ip_adapter as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises
from .controlnet import harness

LESSON = "03_ip_adapter"

_D = "diffusers.models"
_LOADER = "diffusers.loaders.unet.UNet2DConditionLoadersMixin"
FORBID_PROJ = (f"{_D}.embeddings.ImageProjection.forward", f"{_D}.embeddings.MultiIPAdapterImageProjection.forward")
FORBID_IP_ATTN = (f"{_D}.attention_processor.IPAdapterAttnProcessor2_0.__call__",
                  f"{_D}.attention_processor.IPAdapterAttnProcessor.__call__")
FORBID_ATTN = FORBID_IP_ATTN + (f"{_D}.attention_processor.Attention.forward",
                                f"{_D}.attention_processor.AttnProcessor2_0.__call__",
                                f"{_D}.attention_processor.AttnProcessor.__call__")
FORBID_LOADER = (f"{_LOADER}._load_ip_adapter_weights", f"{_LOADER}._convert_ip_adapter_attn_to_diffusers",
                 f"{_LOADER}._convert_ip_adapter_image_proj_to_diffusers")
FORBID_UNET = FORBID_PROJ + FORBID_IP_ATTN + FORBID_LOADER

#: SDXL's UNet layout (diffusers' stabilityai/stable-diffusion-xl-base-1.0 unet config): 70 cross-attentions.
SDXL_UNET = dict(
    sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    in_channels=4, out_channels=4, norm_num_groups=32,
)
#: A small layout unlike the stand-in's: two transformer blocks per attention in the
#: second level and the mid block, one layer per down block (11 cross-attentions).
TWO_LAYER_UNET = dict(
    block_out_channels=(8, 16, 16), layers_per_block=1, cross_attention_dim=10, attention_head_dim=2,
    transformer_layers_per_block=(1, 2, 2), norm_num_groups=4, in_channels=4, out_channels=4, sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


#: The public check's layout with two transformer blocks per attention (hidden tests use TWO_LAYER_UNET).
PUBLIC_TWO_LAYER_UNET = dict(
    block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=6, attention_head_dim=2,
    transformer_layers_per_block=(2, 2), norm_num_groups=4, in_channels=4, out_channels=4, sample_size=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)


@functools.lru_cache(maxsize=4)
def _meta_unet(layout: str):
    """A UNet at a real layout on the meta device (no memory): only its processor layout is used."""
    from diffusers import UNet2DConditionModel

    cfg = {"sd15": weights.CHECKPOINTS["ip_adapter_sd15_unet"].real_config, "sdxl": SDXL_UNET,
           "two": PUBLIC_TWO_LAYER_UNET}[layout]
    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


def _note(ctx: Context, sources) -> None:
    """Name each checkpoint used (the adapter and its UNet) in the pass line's banner."""
    for source in sources:
        if source is not None and source.banner() not in [s.banner() for s in ctx.sources]:
            ctx.sources.append(source)


# ---------------------------------------------------------------- weights: a UNet and its adapter, as a pair
def load_adapter(dev: torch.device | str = "cpu", *, standin: bool = False, unet: bool = False):
    """(state_dict, [sources], attn2 or UNet module): the IP-Adapter file's tensors (flat, float32,
    keys as in the file) with the UNet side it belongs to: the first cross-attention, or the whole
    UNet with ``unet=True``. Real weights only as a pair: a real adapter with a stand-in UNet (or
    the reverse) would not fit, so then both are stand-ins. The notebook loads its weights here too."""
    parts = ("ip_adapter_image_proj", "ip_adapter_layers", "ip_adapter_unet" if unet else "ip_adapter_attn2")
    loaded = [weights.get(p, dev, standin=standin) for p in parts]
    if len({s.kind for _, s in loaded}) > 1:
        loaded = [weights.get(p, dev, standin=True) for p in parts]
    (proj, src), (layers, _), (module, unet_src) = loaded
    return _flat(proj, layers), [src, unet_src], module


def _flat(proj: torch.nn.Module, layers: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = {"image_proj." + k: v.detach().float() for k, v in proj.state_dict().items()}
    sd.update({"ip_adapter." + k: v.detach().float() for k, v in layers.state_dict().items()})
    return sd


def _copy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fresh dict of fresh tensors: the student may pop keys or edit tensors in place."""
    return {k: v.clone() for k, v in sd.items()}


def _random_unet(cfg: dict, seed: int, dev: torch.device):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**cfg)
    reinitialise_(unet, seed)
    return unet.to(dev).eval()


def _random_state_dict(unet_cfg: dict, image_embed_dim: int, num_tokens: int, seed: int, dev) -> dict:
    cfg = dict(unet=unet_cfg, image_embed_dim=image_embed_dim, num_tokens=num_tokens, seed=seed)
    return {k: v.to(dev) for k, v in _ipa_standin_state_dict(cfg).items()}


# ---------------------------------------------------------------- 1. image projection
def _proj_variants(e, w, b, nw, nb):
    B, C = e.shape[0], nw.shape[0]
    T = w.shape[0] // C
    lin = e @ w.T + b                                                     # (B, T*C)
    tokens = lin.reshape(B, T, C)
    return {
        "the LayerNorm applied before the reshape (over all T*C numbers at once)":
            F.layer_norm(lin, (T * C,)).reshape(B, T, C) * nw + nb,
        "the projection read as (C, T) instead of (T, C): reshape(B, C, T) then transpose":
            F.layer_norm(lin.reshape(B, C, T).transpose(1, 2), (C,), nw, nb),
        "the LayerNorm's own weight and bias left out": F.layer_norm(tokens, (C,)),
        "no LayerNorm at all (tokens straight from the linear layer)": tokens,
        "the linear layer's bias left out": F.layer_norm((e @ w.T).reshape(B, T, C), (C,), nw, nb),
    }


def _proj_cases(ctx: Context):
    proj, source = weights.get("ip_adapter_image_proj", ctx.device)
    _note(ctx, [source])
    real = (proj.proj.weight.detach().float(), proj.proj.bias.detach().float(),
            proj.norm.weight.detach().float(), proj.norm.bias.detach().float())
    if ctx.hidden:
        def rand(T, C, E, o):
            return (ctx.randn(T * C, E, offset=o, scale=0.3), ctx.randn(T * C, offset=o + 1),
                    1 + ctx.randn(C, offset=o + 2, scale=0.2), ctx.randn(C, offset=o + 3, scale=0.2))
        configs = [(3, real), (2, rand(16, 6, 10, 1)), (4, rand(3, 5, 7, 5)), (1, rand(1, 8, 4, 9)),
                   (2, tuple(w.half() for w in rand(4, 8, 12, 13)))]
    else:
        small = (ctx.randn(2 * 6, 5, offset=1, scale=0.3), ctx.randn(2 * 6, offset=2),
                 1 + ctx.randn(6, offset=3, scale=0.2), ctx.randn(6, offset=4, scale=0.2))
        configs = [(1, real), (2, small), (2, tuple(w.half() for w in small))]
    # The last case is an fp16 pipeline's: fp16 embeddings and weights in, fp16 tokens out.
    for i, (B, (wt, bs, nwt, nbs)) in enumerate(configs):
        e = ctx.randn(B, wt.shape[1], offset=20 + i).to(wt.dtype)
        T, C = wt.shape[0] // nwt.shape[0], nwt.shape[0]
        kind = "" if wt.dtype == torch.float32 else f", {str(wt.dtype).replace('torch.', '')} (dtype kept)"
        yield Case(f"image_embeds {tuple(e.shape)} -> {T} tokens of width {C}{kind}", (e, wt, bs, nwt, nbs))


def _proj_judge(case: Case, got) -> None:
    e, wt, bs, nwt, nbs = case.args
    # fp16: two correct orders of the same fp16 ops differ by a few units of fp16's 1e-3 precision.
    tol = dict(rtol=5e-3, max_tol=5e-3) if e.dtype in (torch.float16, torch.bfloat16) else {}
    assert_close(got, ref.image_projection(*case.args), name=f"image_projection on {case.label}",
                 variants=_proj_variants(e, wt, bs, nwt, nbs), **tol)


# ---------------------------------------------------------------- 2. decoupled cross-attention
def _heads(attn, t: torch.Tensor, d: int) -> torch.Tensor:
    B = t.shape[0]
    return t.reshape(B, -1, attn.heads, d).transpose(1, 2)                # (B, h, tokens, d)


def _sdpa(q, k, v):
    return ((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])).softmax(-1) @ v


def _decoupled(attn, x, text, image, wk, wv, *, text_scale=1.0, image_scale=1.0, joint=False,
               frozen_kv_for_image=False, separate_out=False):
    """Independent decoupled cross-attention with knobs for the classic mistakes (diagnoses only)."""
    B, N, _ = x.shape
    q = attn.to_q(x)
    D = q.shape[-1]
    d = D // attn.heads
    q = _heads(attn, q, d)
    kt, vt = _heads(attn, attn.to_k(text), d), _heads(attn, attn.to_v(text), d)
    if frozen_kv_for_image:
        ki, vi = _heads(attn, attn.to_k(image), d), _heads(attn, attn.to_v(image), d)
    else:
        ki, vi = _heads(attn, image @ wk.T, d), _heads(attn, image @ wv.T, d)
    if joint:
        out = _sdpa(q, torch.cat([kt, ki], 2), torch.cat([vt, image_scale * vi], 2))
        merged = out.transpose(1, 2).reshape(B, N, D)
        return attn.to_out[0](merged)
    txt = _sdpa(q, kt, vt).transpose(1, 2).reshape(B, N, D)
    img = _sdpa(q, ki, vi).transpose(1, 2).reshape(B, N, D)
    if separate_out:
        return text_scale * attn.to_out[0](txt) + image_scale * attn.to_out[0](img)
    return attn.to_out[0](text_scale * txt + image_scale * img)


def _attn_variants(attn, x, ctx, wk, wv, scale, T):
    text, image = ctx[:, :-T], ctx[:, -T:]
    front_image, front_text = ctx[:, :T], ctx[:, T:]
    return {
        "the image branch added without its scale (scale ignored)":
            lambda: _decoupled(attn, x, text, image, wk, wv),
        "the scale applied to the text branch instead of the image branch":
            lambda: _decoupled(attn, x, text, image, wk, wv, text_scale=scale),
        "image tokens appended to the text's keys/values in ONE softmax through the frozen to_k/to_v "
        "(the concatenation IP-Adapter replaces)":
            lambda: _decoupled(attn, x, text, image, wk, wv, joint=True, frozen_kv_for_image=True),
        "one joint softmax over text and image keys (to_k_ip/to_v_ip used, but not decoupled)":
            lambda: _decoupled(attn, x, text, image, wk, wv, joint=True, image_scale=scale),
        "the frozen to_k / to_v used for the image tokens (to_k_ip / to_v_ip unused)":
            lambda: _decoupled(attn, x, text, image, wk, wv, image_scale=scale, frozen_kv_for_image=True),
        "to_k_ip and to_v_ip swapped":
            lambda: _decoupled(attn, x, text, image, wv, wk, image_scale=scale),
        "the first num_tokens tokens taken as the image's (they are the last: [text; image])":
            lambda: _decoupled(attn, x, front_text, front_image, wk, wv, image_scale=scale),
        "each branch sent through to_out on its own and the results added (to_out's bias counted twice)":
            lambda: _decoupled(attn, x, text, image, wk, wv, image_scale=scale, separate_out=True),
    }


def _other_attention(seed: int, dev, *, query_dim: int, cross: int, heads: int, dim_head: int, bias: bool = False):
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=query_dim, cross_attention_dim=cross, heads=heads, dim_head=dim_head, bias=bias,
                     out_bias=True)
    reinitialise_(attn, seed)
    return attn.to(dev).eval()


def _attention_cases(ctx: Context):
    sd, sources, attn = load_adapter(ctx.device)
    _note(ctx, sources)
    wk, wv = sd["ip_adapter.1.to_k_ip.weight"], sd["ip_adapter.1.to_v_ip.weight"]
    T = sd["image_proj.proj.weight"].shape[0] // sd["image_proj.norm.weight"].shape[0]
    s = ctx.seed % 10007
    # Inner width heads * dim_head (15) differs from the query width (6): the head size comes
    # from the projections, not from hidden_states.
    narrow = _other_attention(s + 3, ctx.device, query_dim=6, cross=4, heads=3, dim_head=5)
    configs = [(attn, wk, wv, 1, 16, 5, T, 0.5),
               (narrow, ctx.randn(15, 4, offset=5, scale=0.4), ctx.randn(15, 4, offset=6, scale=0.4), 2, 7, 3, 2, 1.5)]
    if ctx.hidden:
        other = _other_attention(s, ctx.device, query_dim=10, cross=6, heads=3, dim_head=4)
        owk, owv = ctx.randn(12, 6, offset=1, scale=0.4), ctx.randn(12, 6, offset=2, scale=0.4)
        four = _other_attention(s + 1, ctx.device, query_dim=12, cross=7, heads=4, dim_head=5, bias=True)
        fwk, fwv = ctx.randn(20, 7, offset=3, scale=0.4), ctx.randn(20, 7, offset=4, scale=0.4)
        configs = [(attn, wk, wv, 2, 24, 7, T, 1.0), (attn, wk, wv, 2, 6, 3, T, 0.0),
                   (other, owk, owv, 3, 5, 4, 16, 0.35), (other, owk, owv, 1, 9, 9, 1, 2.0),
                   (four, fwk, fwv, 2, 10, 6, 3, 0.8)]
    for i, (module, k_ip, v_ip, B, N, L, Ti, scale) in enumerate(configs):
        C = k_ip.shape[1]
        x = ctx.randn(B, N, module.to_q.in_features, offset=10 + i)
        enc = ctx.randn(B, L + Ti, C, offset=20 + i)
        label = (f"hidden_states {tuple(x.shape)}, {L} text + {Ti} image tokens of width {C}, "
                 f"{module.heads} heads of width {module.to_q.out_features // module.heads}, scale {scale}")
        yield Case(label, (module, x, enc, k_ip, v_ip, scale, Ti))


def _attention_judge(case: Case, got) -> None:
    module, x, enc, k_ip, v_ip, scale, Ti = case.args
    name = f"decoupled_cross_attention on {case.label}"
    if scale == 0:
        name += " (scale 0 must give the frozen text cross-attention alone)"
    with torch.no_grad():
        assert_close(got, ref.decoupled_cross_attention(*case.args), name=name,
                     variants=_attn_variants(module, x, enc, k_ip, v_ip, scale, Ti))


# ---------------------------------------------------------------- 3. which processor gets which ip_adapter.N
def _ids_variants(unet, expected: torch.Tensor) -> dict:
    names = list(unet.attn_processors)
    cross = [i for i, n in enumerate(names) if n.endswith("attn2.processor")]

    def numbered(order):
        out = torch.full_like(expected, -1)
        for rank, pos in enumerate(order):
            out[pos] = 2 * rank + 1
        return out

    def group(pos):
        n = names[pos]
        return 0 if n.startswith("down_blocks") else 1 if n.startswith("mid_block") else 2
    down_mid_up = sorted(cross, key=lambda p: (group(p), p))
    by_name = sorted(cross, key=lambda p: names[p])
    variants = {
        "ids counted from 0 (0, 2, 4, ...): the first cross-attention is ip_adapter.1":
            torch.where(expected >= 0, expected - 1, expected),
        "consecutive ids (1, 2, 3, ...): the ids step by 2, one per attn1/attn2 pair":
            torch.where(expected >= 0, (expected + 1) // 2, expected),
        "every processor numbered by its position, self-attention included: attn1 processors must get -1":
            torch.arange(len(names), dtype=torch.long),
        "the cross-attentions numbered down blocks, mid block, up blocks: unet.attn_processors (and diffusers' "
        "loader) go down blocks, UP blocks, then the MID block, the order the UNet registers its children":
            numbered(down_mid_up) if down_mid_up != cross else None,
        "the processor names sorted alphabetically before numbering: number them in unet.attn_processors order":
            numbered(by_name) if by_name != cross and by_name != down_mid_up else None,
    }
    return variants


def _ids_output(unet, ids: torch.Tensor, sd: dict, inputs: tuple, label: str) -> None:
    """The UNet with diffusers' IP processors placed where ``ids`` says, against diffusers' own loader."""
    names = list(unet.attn_processors)
    try:
        mapping = {n: (sd[f"ip_adapter.{i}.to_k_ip.weight"], sd[f"ip_adapter.{i}.to_v_ip.weight"])
                   for n, i in zip(names, ids.tolist()) if i >= 0}
        sample, t, text, emb = inputs
        got = ref.unet_with_attn_weights(unet, mapping, sd, sample, t, text, emb, 0.8)
    except (KeyError, RuntimeError) as err:
        raise ComparisonError(f"ip_layer_ids on {label}: the UNet with your mapping cannot load the adapter "
                              f"({type(err).__name__}: {str(err)[:200]}).") from None
    expected = ref.ip_adapter_unet(unet, sd, sample, t, text, emb, 0.8)
    assert_close(got, expected, name=f"ip_layer_ids: the UNet with your mapping ({label}) against diffusers' loader")


def _ids_cases(ctx: Context):
    sd_p, sources, unet = load_adapter(ctx.device, standin=True, unet=True)
    _note(ctx, sources)
    configs = [("the lesson's stand-in UNet", unet, sd_p)]
    if not ctx.hidden:
        configs.append(("a UNet with 2 transformer blocks per attention (meta device)", _meta_unet("two"), None))
    if ctx.hidden:
        s = ctx.seed % 10007
        configs.append(("a UNet with 2 transformer blocks per attention", _random_unet(TWO_LAYER_UNET, s, ctx.device),
                        _random_state_dict(TWO_LAYER_UNET, 6, 4, s + 1, ctx.device)))
        configs.append(("SD1.5's UNet layout (meta device)", _meta_unet("sd15"), None))
        configs.append(("SDXL's UNet layout (meta device)", _meta_unet("sdxl"), None))
    B = 2 if ctx.hidden else 1
    for i, (label, model, sd) in enumerate(configs):
        extra = {"label": label, "sd": sd}
        if sd is not None:
            cfg = model.config
            extra["inputs"] = (ctx.randn(B, cfg.in_channels, 8, 12, offset=100 * i + 1), torch.tensor([17, 803][:B],
                               device=ctx.device), ctx.randn(B, 5, cfg.cross_attention_dim, offset=100 * i + 2),
                               ctx.randn(B, sd["image_proj.proj.weight"].shape[1], offset=100 * i + 3))
        yield Case(label, (model,), extra=extra)


def _ids_judge(case: Case, got) -> None:
    (model,) = case.args
    expected = ref.ip_layer_ids(model)
    label, sd = case.extra["label"], case.extra["sd"]
    assert_close(got, expected, name=f"ip_layer_ids on {label} ({len(expected)} processors)",
                 variants=_ids_variants(model, expected), check_device=False)
    if sd is not None:
        _ids_output(model, got.to("cpu"), sd, case.extra["inputs"], label)


# ---------------------------------------------------------------- 4. the UNet with an image prompt
def _fresh_state_dict(fn, unet, state_dict, *rest):
    """A harness: the student's function gets its own copy of the state dict (it may pop keys)."""
    return fn(unet, _copy(state_dict), *rest)


def _unet_cases(ctx: Context):
    sd, sources, unet = load_adapter(ctx.device, standin=not ctx.hidden, unet=True)
    _note(ctx, sources)
    # Small latents whatever the checkpoint (any multiple of 8 fits SD1.5's three downsamplings):
    # the real UNet on a CPU grader stays within the cell time limit.
    configs = [(unet, sd, 1, 8, 8, 5, 0.6)]
    if not ctx.hidden:
        # Another layout, text width 6, 3 image tokens: nothing may assume SD1.5's 4 tokens or widths.
        other = _random_unet(PUBLIC_TWO_LAYER_UNET, 21, ctx.device)
        configs.append((other, _random_state_dict(PUBLIC_TWO_LAYER_UNET, 5, 3, 22, ctx.device), 2, 8, 8, 4, 1.2))
    if ctx.hidden:
        s = ctx.seed % 10007
        # Another layout, text width 10, 2 image tokens from a 6-wide image embedding.
        other = _random_unet(TWO_LAYER_UNET, s + 2, ctx.device)
        other_sd = _random_state_dict(TWO_LAYER_UNET, 6, 2, s + 3, ctx.device)
        configs = [(unet, sd, 2, 16, 24, 7, 0.75), (unet, sd, 1, 8, 8, 3, 0.0), (unet, sd, 3, 24, 16, 4, 1.3),
                   (other, other_sd, 2, 8, 16, 6, 0.5)]
    for i, (model, state, B, H, W, L, scale) in enumerate(configs):
        cfg = model.config
        C, E = cfg.cross_attention_dim, state["image_proj.proj.weight"].shape[1]
        T = state["image_proj.proj.weight"].shape[0] // state["image_proj.norm.weight"].shape[0]
        sample = ctx.randn(B, cfg.in_channels, H, W, offset=10 + i)
        text = ctx.randn(B, L, C, offset=20 + i)
        emb = ctx.randn(B, E, offset=30 + i)
        t = ctx.randint(0, 1000, (B,), offset=40 + i)
        label = (f"sample {tuple(sample.shape)}, {L} text tokens of width {C}, {T} image tokens, t {t.tolist()}, "
                 f"scale {scale}")
        yield Case(label, (model, state, sample, t, text, emb, scale),
                   invoke=harness("ip_adapter_unet", _fresh_state_dict))


def _reference_unet(unet, sd, sample, t, text, emb, scale):
    """diffusers' loader, end to end; its image projection assumes 4 tokens, so for another count
    diffusers' processors hold the weights where its loader puts them and the tokens come from
    diffusers' ImageProjection (tests/test_reference_ip_adapter.py: the same on 4 tokens)."""
    T = sd["image_proj.proj.weight"].shape[0] // sd["image_proj.norm.weight"].shape[0]
    if T == 4:
        return ref.ip_adapter_unet(unet, sd, sample, t, text, emb, scale)
    mapping = ref.ip_adapter_attn_weights(unet, sd)
    return ref.unet_with_attn_weights(unet, mapping, sd, sample, t, text, emb, scale)


def _unet_judge(case: Case, got) -> None:
    unet, sd, sample, t, text, emb, scale = case.args
    name = f"ip_adapter_unet on {case.label}"
    if scale == 0:
        name += " (scale 0 must give the text-only UNet)"

    def text_only():
        with torch.no_grad():
            return unet(sample, t, encoder_hidden_states=text).sample
    assert_close(got, _reference_unet(*case.args), name=name, variants={
        "the adapter switched off (the text-only UNet)": text_only if scale != 0 else None,
        "scale 1 (the scale argument ignored)":
            (lambda: _reference_unet(unet, sd, sample, t, text, emb, 1.0)) if scale != 1 else None,
    })


EXERCISES = exercises(
    Exercise("image_projection", 2, _proj_cases, _proj_judge, FORBID_PROJ),
    Exercise("decoupled_cross_attention", 3, _attention_cases, _attention_judge, FORBID_ATTN),
    Exercise("ip_layer_ids", 2, _ids_cases, _ids_judge),
    Exercise("ip_adapter_unet", 3, _unet_cases, _unet_judge, FORBID_UNET),
)
