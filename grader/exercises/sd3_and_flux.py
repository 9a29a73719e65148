"""Lesson 11 (SD3 & Flux): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
small fixed inputs on the CPU, always with the stand-in blocks (instant even where the real
checkpoints are present), covering every code path (QK-norm on and off,
``context_pre_only`` on and off, the plug-in harness). Hidden tests: the grader's seed, other
batch sizes, token counts, head counts and head widths, RoPE axes and θ, packing sizes, the
real SD3.5 / FLUX.1-schnell block when present, the GPU when there is one, and the student's
block run inside the diffusers model.
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..compare import ComparisonError, assert_close
from ..reference import sd3_and_flux as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

LESSON = "11_sd3_and_flux"

_D = "diffusers.models"
_FX = f"{_D}.transformers.transformer_flux"
FORBID_JOINT_ATTN = (f"{_D}.attention_processor.JointAttnProcessor2_0.__call__",
                     f"{_D}.attention_processor.Attention.forward",
                     f"{_D}.attention_processor.AttnProcessor2_0.__call__")
FORBID_JOINT_BLOCK = FORBID_JOINT_ATTN + (f"{_D}.attention.JointTransformerBlock.forward",
                                          f"{_D}.normalization.AdaLayerNormZero.forward",
                                          f"{_D}.attention.FeedForward.forward")
FORBID_TEXT = ("diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3."
               "StableDiffusion3Pipeline.encode_prompt",)
FORBID_PACK = ("diffusers.pipelines.flux.pipeline_flux.FluxPipeline._pack_latents",
               "diffusers.pipelines.flux.pipeline_flux.FluxPipeline._prepare_latent_image_ids")
FORBID_ROPE_APPLY = (f"{_D}.embeddings.apply_rotary_emb", f"{_FX}.apply_rotary_emb")
FORBID_ROPE = FORBID_ROPE_APPLY + (f"{_FX}.FluxPosEmbed.forward", f"{_D}.embeddings.get_1d_rotary_pos_embed",
                                   f"{_FX}.get_1d_rotary_pos_embed")
FORBID_FLUX_ATTN = FORBID_ROPE_APPLY + (f"{_FX}.FluxAttnProcessor.__call__", f"{_FX}.FluxAttention.forward")
FORBID_DOUBLE = FORBID_FLUX_ATTN + (f"{_FX}.FluxTransformerBlock.forward", f"{_D}.normalization.AdaLayerNormZero.forward",
                                    f"{_D}.attention.FeedForward.forward")
FORBID_SINGLE = FORBID_FLUX_ATTN + (f"{_FX}.FluxSingleTransformerBlock.forward",
                                    f"{_D}.normalization.AdaLayerNormZeroSingle.forward")


# ---------------------------------------------------------------- module builders (inputs only)
def _sd3_block(ctx: Context, heads: int, head_dim: int, context_pre_only: bool, qk_norm, offset: int):
    from diffusers.models.attention import JointTransformerBlock

    blk = JointTransformerBlock(heads * head_dim, heads, head_dim, context_pre_only=context_pre_only, qk_norm=qk_norm)
    reinitialise_(blk, (ctx.seed + offset) % 100_000)
    return blk.to(ctx.device).eval()


def _flux_block(ctx: Context, kind: str, heads: int, head_dim: int, offset: int):
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    cls = FluxTransformerBlock if kind == "double" else FluxSingleTransformerBlock
    blk = cls(heads * head_dim, heads, head_dim)
    reinitialise_(blk, (ctx.seed + offset) % 100_000)
    return blk.to(ctx.device).eval()


def _standin_model(ctx: Context, part: str):
    """A whole stand-in model (the plug-in cases). Normally loaded from the saved stand-in; when
    the cache is read-only and that stand-in was never built (the grading sandbox on a machine
    whose grader found the real checkpoint and so built no stand-in), the same deterministic
    recipe runs in memory: build_standin's constructor + reinitialise_(seed 0)."""
    try:
        return ctx.weights(part, standin=True)
    except OSError:
        import diffusers

        from ..weights.registry import checkpoint_of

        ck = checkpoint_of(part)
        model = getattr(diffusers, ck.model_class)(**ck.standin_config)
        reinitialise_(model)
        return model.to(ctx.device).eval()


def _grid_ids(ctx: Context, n_text: int, gh: int, gw: int, offset: int, random_text: bool = False) -> torch.Tensor:
    """[text ids; image ids] as the Flux pipeline builds them: text (0, 0, 0), image (0, row, col)."""
    txt = torch.zeros(n_text, 3)
    if random_text:
        txt = torch.randint(0, 4, (n_text, 3), generator=ctx.generator(offset)).float()
    r = torch.arange(gh, dtype=torch.float32)[:, None].expand(gh, gw)
    c = torch.arange(gw, dtype=torch.float32)[None, :].expand(gh, gw)
    img = torch.stack([torch.zeros(gh, gw), r, c], -1).reshape(-1, 3)
    return torch.cat([txt, img]).to(ctx.device)


def _rotary(ids: torch.Tensor, axes_dim) -> tuple[torch.Tensor, torch.Tensor]:
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    return FluxPosEmbed(theta=10000, axes_dim=list(axes_dim))(ids)


def _pair(got, name: str, label: str, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError(f"{name} on {label}: return a tuple of 2: {what}.")
    return got


# ---------------------------------------------------------------- 1. SD3 joint attention
def _joint_attention_cases(ctx: Context):
    if ctx.hidden:
        configs = [("real", 2, 9, 5, ctx.weights("sd3_block").attn),
                   ("fresh", 3, 7, 4, _sd3_block(ctx, 3, 8, False, None, 1).attn),
                   ("fresh", 3, 5, 6, _sd3_block(ctx, 4, 4, True, "rms_norm", 2).attn)]
    else:
        configs = [("standin", 1, 6, 4, ctx.weights("sd3_block", standin=True).attn),
                   ("fresh", 1, 4, 3, _sd3_block(ctx, 2, 8, True, None, 3).attn)]
    for i, (_, B, N, M, attn) in enumerate(configs):
        D = attn.to_q.in_features
        x = ctx.randn(B, N, D, offset=10 + i)
        c = ctx.randn(B, M, D, offset=20 + i)
        qk = "QK RMSNorm" if attn.norm_q is not None else "no QK norm"
        pre = ", context_pre_only" if attn.context_pre_only else ""
        yield Case(f"x {(B, N, D)}, c {(B, M, D)}, {attn.heads} heads, {qk}{pre}", (attn, x, c))
    # SD3 runs in bf16/fp16: the answer keeps the input's dtype, judged against diffusers' own processor.
    attn = _sd3_block(ctx, 2, 8, True, "rms_norm", 4).attn.to(torch.bfloat16)
    D = attn.to_q.in_features
    x, c = ctx.randn(1, 6, D, offset=30).bfloat16(), ctx.randn(1, 4, D, offset=31).bfloat16()
    yield Case(f"x {(1, 6, D)}, c {(1, 4, D)} in bf16 (as SD3 runs), 2 heads, QK RMSNorm", (attn, x, c),
               extra={"bf16": True})


def _joint_variant(attn, x, c, *, split_text_first=False, qk=True, separate=False, heads=None, out_swapped=False):
    """The reference with one knob turned (diagnoses only)."""
    h = heads or attn.heads
    H = ref.heads
    q, k, v = H(attn.to_q(x), h), H(attn.to_k(x), h), H(attn.to_v(x), h)
    cq, ck, cv = H(attn.add_q_proj(c), h), H(attn.add_k_proj(c), h), H(attn.add_v_proj(c), h)
    if qk and heads is None:
        q, k = ref.rms_norm(q, attn.norm_q), ref.rms_norm(k, attn.norm_k)
        cq, ck = ref.rms_norm(cq, attn.norm_added_q), ref.rms_norm(ck, attn.norm_added_k)
    N, M = x.shape[1], c.shape[1]
    if separate:
        xo, co = ref.attend(q, k, v), ref.attend(cq, ck, cv)
    else:
        out = ref.attend(torch.cat([cq, q], 2), torch.cat([ck, k], 2), torch.cat([cv, v], 2))  # [text; image]
        if split_text_first:
            xo, co = out[:, :N], out[:, N:]       # split as if [image; text]
        else:
            xo, co = out[:, M:], out[:, :M]
    if out_swapped and attn.to_add_out is not None:
        return attn.to_add_out(xo), attn.to_out[0](co)
    return attn.to_out[0](xo), (attn.to_add_out(co) if attn.to_add_out is not None else co)


def _joint_attention_judge(case: Case, got) -> None:
    attn, x, c = case.args
    gx, gc = _pair(got, "joint_attention", case.label, "(x_out (B, N, D), c_out (B, M, D))")
    if case.extra.get("bf16"):   # bf16 keeps ~3 digits: any order of the same operations lands within 1e-2
        with torch.no_grad():
            ex, ec = attn(hidden_states=x, encoder_hidden_states=c)
        for g, e, what in ((gx, ex, "image output x_out"), (gc, ec, "text output c_out")):
            assert_close(g, e, name=f"joint_attention {what} on {case.label}", rtol=2e-2, max_tol=3e-2)
        return
    ex, ec = ref.joint_attention(attn, x, c)
    with torch.no_grad():
        for k, (g, e, what) in enumerate(((gx, ex, "image output x_out"), (gc, ec, "text output c_out"))):
            variants = {
                "the [text; image] sequence split as if it were [image; text]":
                    lambda: _joint_variant(attn, x, c, split_text_first=True)[k],
                "two separate attentions (image to image, text to text) instead of one joint attention":
                    lambda: _joint_variant(attn, x, c, separate=True)[k],
                "no QK RMSNorm (attn.norm_q, norm_k, norm_added_q, norm_added_k)":
                    (lambda: _joint_variant(attn, x, c, qk=False)[k]) if attn.norm_q is not None else None,
                "a single head over the full width": lambda: _joint_variant(attn, x, c, heads=1)[k],
                "the output projections swapped (to_add_out on the image, to_out[0] on the text)":
                    (lambda: _joint_variant(attn, x, c, out_swapped=True)[k]) if attn.to_add_out is not None else None,
            }
            assert_close(g, e, name=f"joint_attention {what} on {case.label}", variants=variants)


# ---------------------------------------------------------------- 2. SD3 joint block (+ inside the model)
def _sd3_plugin(fn, model, x, c, pooled, t):
    """Untrusted harness: the student's block as every block's forward, then diffusers' own forward."""
    for blk in model.transformer_blocks:
        blk.forward = types.MethodType(
            lambda self, hidden_states, encoder_hidden_states, temb, joint_attention_kwargs=None:
            fn(self, hidden_states, encoder_hidden_states, temb), blk)
    return model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t).sample


def _sd3_model_case(ctx: Context, B: int, H: int, W: int, M: int, offset: int) -> Case:
    model = _standin_model(ctx, "sd3_model")
    cfg = model.config
    x = ctx.randn(B, cfg.in_channels, H, W, offset=offset)
    c = ctx.randn(B, M, cfg.joint_attention_dim, offset=offset + 1)
    pooled = ctx.randn(B, cfg.pooled_projection_dim, offset=offset + 2)
    t = ctx.rand(B, offset=offset + 3) * 1000
    return Case(f"your block inside SD3Transformer2DModel ({cfg.num_layers} blocks), x {(B, cfg.in_channels, H, W)}, "
                f"{M} text tokens", (model, x, c, pooled, t), invoke=_sd3_plugin, extra={"plugin": True})


def _joint_block_cases(ctx: Context):
    if ctx.hidden:
        configs = [(2, 8, 5, ctx.weights("sd3_block")),
                   (3, 6, 4, _sd3_block(ctx, 3, 8, True, "rms_norm", 1)),
                   (2, 5, 7, _sd3_block(ctx, 4, 4, False, None, 2))]
    else:
        configs = [(1, 6, 4, ctx.weights("sd3_block", standin=True)), (1, 4, 3, _sd3_block(ctx, 2, 8, True, None, 3))]
    for i, (B, N, M, blk) in enumerate(configs):
        D = blk.norm1.linear.in_features
        x, c, temb = ctx.randn(B, N, D, offset=10 + i), ctx.randn(B, M, D, offset=20 + i), ctx.randn(B, D, offset=30 + i)
        qk = "QK RMSNorm" if blk.attn.norm_q is not None else "no QK norm"
        pre = ", context_pre_only (the last block)" if blk.context_pre_only else ""
        yield Case(f"x {(B, N, D)}, c {(B, M, D)}, {blk.attn.heads} heads, {qk}{pre}", (blk, x, c, temb))
    yield _sd3_model_case(ctx, 2, 6, 10, 7, 100) if ctx.hidden else _sd3_model_case(ctx, 1, 4, 4, 3, 100)


def _swapped_continuous(block, x, c, temb):
    """The last block with AdaLayerNormContinuous read as (shift, scale), DiT's order (diagnosis)."""
    probe = copy.deepcopy(block)
    lin = probe.norm1_context.linear
    D = lin.out_features // 2
    perm = torch.cat([torch.arange(D, 2 * D), torch.arange(0, D)]).to(lin.weight.device)
    with torch.no_grad():
        lin.weight.copy_(lin.weight[perm])
        lin.bias.copy_(lin.bias[perm])
    return ref.joint_block(probe, x, c, temb)[1]


def _joint_block_judge(case: Case, got) -> None:
    if case.extra.get("plugin"):
        model, x, c, pooled, t = case.args
        with torch.no_grad():
            expected = model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t).sample
        assert_close(got, expected, name=f"joint_block: {case.label}")
        return
    blk, x, c, temb = case.args
    ec, ex = ref.joint_block(blk, x, c, temb)
    gc, gx = _pair(got, "joint_block", case.label, "(c_out, x_out) in diffusers' order; c_out None for context_pre_only")
    if ec is None:
        if gc is not None:
            raise ComparisonError(f"joint_block on {case.label}: a context_pre_only block returns None for the text "
                                  "stream (diffusers drops it: nothing after the last block reads it).")
    else:
        assert_close(gc, ec, name=f"joint_block text output c_out on {case.label}", variants={
            "the exact GELU in the MLPs (diffusers' FeedForward uses the tanh approximation)":
            lambda: ref.joint_block(blk, x, c, temb, approximate="none")[0]})
    with torch.no_grad():
        variants = {"AdaLayerNormContinuous read as (shift, scale); its linear gives scale, then shift":
                    (lambda: _swapped_continuous(blk, x, c, temb)) if blk.context_pre_only else None,
                    "the exact GELU in the MLPs (diffusers' FeedForward uses the tanh approximation)":
                    lambda: ref.joint_block(blk, x, c, temb, approximate="none")[1]}
        assert_close(gx, ex, name=f"joint_block image output x_out on {case.label}", variants=variants)


# ---------------------------------------------------------------- 3. SD3 text conditioning
def _text_cases(ctx: Context):
    # (B, CLIP tokens, CLIP-L width, CLIP-G width, T5 tokens, T5 width)
    configs = ([(2, 77, 768, 1280, 256, 4096), (3, 5, 3, 4, 11, 16), (1, 6, 8, 8, 4, 16)] if ctx.hidden
               else [(1, 7, 6, 10, 9, 24), (2, 3, 4, 4, 5, 8)])
    for i, (B, L, dl, dg, T, dt) in enumerate(configs):
        args = (ctx.randn(B, L, dl, offset=10 * i), ctx.randn(B, dl, offset=10 * i + 1),
                ctx.randn(B, L, dg, offset=10 * i + 2), ctx.randn(B, dg, offset=10 * i + 3),
                ctx.randn(B, T, dt, offset=10 * i + 4))
        yield Case(f"batch {B}, CLIP-L {(L, dl)}, CLIP-G {(L, dg)}, T5 {(T, dt)}", args)
    if ctx.hidden:
        # The three stand-in encoders (tiny CLIPTextModelWithProjection x 2, T5EncoderModel) on
        # prompts; the judge compares with StableDiffusion3Pipeline.encode_prompt itself.
        from ..checkpoints.sd3_and_flux import sd3_prompt_states

        words = ["a", "red", "fox", "under", "neon", "rain", "two", "cats", "reading"]
        g = ctx.generator(99)
        prompts = [" ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g)) for n in (3, 6)]
        T = 32 + int(torch.randint(0, 32, (1,), generator=g))
        states = tuple(s.to(ctx.device) for s in sd3_prompt_states(prompts, t5_tokens=T))
        yield Case(f"stand-in CLIP-L, CLIP-G and T5 encoders on {prompts}, {T} T5 tokens, "
                   "against StableDiffusion3Pipeline.encode_prompt", states,
                   extra={"prompts": prompts, "t5_tokens": T})


def _text_judge(case: Case, got) -> None:
    l, pl, g, pg, t5 = case.args
    if "prompts" in case.extra:
        from ..checkpoints.sd3_and_flux import sd3_encode_prompt

        embeds, pooled = sd3_encode_prompt(case.extra["prompts"], t5_tokens=case.extra["t5_tokens"])
        g_embeds, g_pooled = _pair(got, "sd3_text_embeds", case.label, "(prompt_embeds, pooled_prompt_embeds)")
        assert_close(g_embeds, embeds.to(l.device), name=f"sd3_text_embeds prompt_embeds on {case.label}")
        assert_close(g_pooled, pooled.to(l.device), name=f"sd3_text_embeds pooled on {case.label}")
        return
    e_embeds, e_pooled = ref.sd3_text_embeds(l, pl, g, pg, t5)
    g_embeds, g_pooled = _pair(got, "sd3_text_embeds", case.label, "(prompt_embeds, pooled_prompt_embeds)")
    clip = torch.cat([l, g], -1)
    pad = t5.shape[-1] - clip.shape[-1]
    assert_close(g_embeds, e_embeds, name=f"sd3_text_embeds prompt_embeds on {case.label}", variants={
        "T5's tokens first, then CLIP's": torch.cat([t5, F.pad(clip, (0, pad))], -2),
        "the zero padding in front of the CLIP features instead of after them":
            torch.cat([F.pad(clip, (pad, 0)), t5], -2) if pad else None,
        "CLIP-G's features before CLIP-L's": torch.cat([F.pad(torch.cat([g, l], -1), (0, pad)), t5], -2),
    })
    assert_close(g_pooled, e_pooled, name=f"sd3_text_embeds pooled on {case.label}", variants={
        "CLIP-G's pooled vector before CLIP-L's": torch.cat([pg, pl], -1)})


# ---------------------------------------------------------------- 4. Flux latent packing
def _pack_cases(ctx: Context):
    shapes = [(2, 16, 8, 12), (3, 3, 6, 2), (1, 5, 2, 10)] if ctx.hidden else [(1, 4, 4, 6)]
    for i, shape in enumerate(shapes):
        yield Case(f"latents {shape}", (ctx.randn(*shape, offset=i),))


def _pack_judge(case: Case, got) -> None:
    (lat,) = case.args
    e_packed, e_ids = ref.pack_latents(lat)
    g_packed, g_ids = _pair(got, "pack_latents", case.label, "(packed (B, HW/4, 4C), img_ids (HW/4, 3))")
    B, C, H, W = lat.shape
    x6 = lat.reshape(B, C, H // 2, 2, W // 2, 2)
    assert_close(g_packed, e_packed, name=f"pack_latents packed on {case.label}", variants={
        "each token's vector ordered (row-in-patch, column-in-patch, channel) instead of (channel, row, column)":
            x6.permute(0, 2, 4, 3, 5, 1).reshape(e_packed.shape),
        "the 2x2 patches read column by column (w before h)": x6.permute(0, 4, 2, 1, 3, 5).reshape(e_packed.shape),
        "the two in-patch axes swapped": x6.permute(0, 2, 4, 1, 5, 3).reshape(e_packed.shape),
    })
    if isinstance(g_ids, torch.Tensor) and g_ids.dtype != e_ids.dtype and g_ids.shape == e_ids.shape:
        raise ComparisonError(f"pack_latents img_ids on {case.label}: dtype {g_ids.dtype}, expected float32 "
                              "(FluxPosEmbed turns ids into float positions).")
    assert_close(g_ids, e_ids, name=f"pack_latents img_ids on {case.label}", variants={
        "the columns (0, column, row) instead of (0, row, column)": e_ids[:, [0, 2, 1]],
        "positions counted in latent pixels (2 per packed token) instead of packed tokens":
            e_ids * torch.tensor([1.0, 2.0, 2.0], device=e_ids.device),
    })


# ---------------------------------------------------------------- 5. Flux RoPE
def _rope_cases(ctx: Context):
    # (B, text tokens, grid h, grid w, heads, axes_dim, theta, random text ids)
    configs = ([(2, 3, 4, 6, 2, (16, 56, 56), 10000.0, False), (1, 4, 3, 5, 3, (2, 6, 8), 256.0, True),
                (3, 2, 5, 2, 1, (8, 4, 4), 10000.0, True)] if ctx.hidden
               else [(1, 2, 3, 4, 2, (4, 4, 8), 10000.0, False)])
    for i, (B, M, gh, gw, h, axes, theta, rnd) in enumerate(configs):
        ids = _grid_ids(ctx, M, gh, gw, 50 + i, random_text=rnd)
        x = ctx.randn(B, M + gh * gw, h, sum(axes), offset=i)
        yield Case(f"x {tuple(x.shape)}, {M} text + {gh}x{gw} image ids, axes_dim {axes}, theta {theta:g}",
                   (x, ids, axes, theta))
    # Flux runs in bf16: diffusers rotates in float32 and casts back, judged against its own functions.
    ids = _grid_ids(ctx, 2, 3, 4, 60, random_text=False)
    x = ctx.randn(1, 2 + 12, 2, 16, offset=9).bfloat16()
    yield Case(f"x {tuple(x.shape)} in bf16 (as Flux runs), 2 text + 3x4 image ids, axes_dim (4, 4, 8), theta 10000",
               (x, ids, (4, 4, 8), 10000.0), extra={"bf16": True})


def _rope_variant(x, ids, axes, theta, *, half=False, concat=False, exponent=2, reversed_axes=False, sign=1):
    cos, sin = [], []
    order = list(range(len(axes)))[::-1] if reversed_axes else list(range(len(axes)))
    for i in order:
        d = axes[i]
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d * (exponent / 2))
        ang = ids[:, i].double()[:, None] * freqs[None]
        if concat or half:
            cos.append(torch.cat([ang.cos(), ang.cos()], 1)); sin.append(torch.cat([ang.sin(), ang.sin()], 1))
        else:
            cos.append(ang.cos().repeat_interleave(2, 1)); sin.append(ang.sin().repeat_interleave(2, 1))
    cos, sin = torch.cat(cos, -1).float(), torch.cat(sin, -1).float()
    if half:
        a, b = x.chunk(2, dim=-1)
        rot = torch.cat([-b, a], -1)
        return x * cos[None, :, None] + sign * rot * sin[None, :, None]
    return ref.apply_rope(x, cos, sign * sin)


def _rope_judge(case: Case, got) -> None:
    x, ids, axes, theta = case.args
    if case.extra.get("bf16"):
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import FluxPosEmbed

        expected = apply_rotary_emb(x, FluxPosEmbed(theta=int(theta), axes_dim=list(axes))(ids), sequence_dim=1)
        assert_close(got, expected, name=f"flux_rope on {case.label}", rtol=1e-2, max_tol=2e-2)
        return
    expected = ref.flux_rope(x, ids, axes, theta)
    assert_close(got, expected, name=f"flux_rope on {case.label}", variants={
        "rotate-half pairs (x_k with x_{k+d/2}, GPT-NeoX style) instead of interleaved pairs (x_2k, x_2k+1)":
            lambda: _rope_variant(x, ids, axes, theta, half=True),
        "cos/sin concatenated [f, f] instead of interleaved [f0, f0, f1, f1, ...]":
            lambda: _rope_variant(x, ids, axes, theta, concat=True),
        "the rotation angle negated (sin with the wrong sign)": lambda: _rope_variant(x, ids, axes, theta, sign=-1),
        "frequencies theta^(-k/d) instead of theta^(-2k/d)": lambda: _rope_variant(x, ids, axes, theta, exponent=1),
    })


# ---------------------------------------------------------------- 6-7. Flux blocks (+ inside the model)
def _flux_plugin(kind: str):
    def harness(fn, model, x, c, pooled, t, img_ids, txt_ids):
        blocks = model.transformer_blocks if kind == "double" else model.single_transformer_blocks
        for blk in blocks:
            blk.forward = types.MethodType(
                lambda self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None,
                joint_attention_kwargs=None: fn(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb), blk)
        return model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t,
                     img_ids=img_ids, txt_ids=txt_ids).sample
    return harness


def _flux_model_case(ctx: Context, kind: str, B: int, gh: int, gw: int, M: int, offset: int) -> Case:
    model = copy.deepcopy(_standin_model(ctx, "flux_model"))
    # Only the student's kind of block runs: the other kind is removed from this copy (and from
    # the reference run in the judge), so neither calls diffusers code the exercise forbids.
    if kind == "double":
        model.single_transformer_blocks = nn.ModuleList()
    else:
        model.transformer_blocks = nn.ModuleList()
    cfg = model.config
    x = ctx.randn(B, gh * gw, cfg.in_channels, offset=offset)
    c = ctx.randn(B, M, cfg.joint_attention_dim, offset=offset + 1)
    pooled = ctx.randn(B, cfg.pooled_projection_dim, offset=offset + 2)
    t = ctx.rand(B, offset=offset + 3)
    ids = _grid_ids(ctx, M, gh, gw, offset + 4)
    n = len(model.transformer_blocks) + len(model.single_transformer_blocks)
    return Case(f"your {kind} blocks inside FluxTransformer2DModel ({n} of them, the other kind removed), "
                f"{gh}x{gw} packed tokens, {M} text tokens",
                (model, x, c, pooled, t, ids[M:], ids[:M]), invoke=_flux_plugin(kind), extra={"plugin": True})


def _flux_block_cases(kind: str):
    part = "flux_double_block" if kind == "double" else "flux_single_block"

    def cases(ctx: Context):
        if ctx.hidden:
            real = ctx.weights(part)
            real_axes = (16, 56, 56) if real.attn.head_dim == 128 else (4, 4, 8)
            configs = [(2, 4, 2, 3, real, real_axes), (3, 3, 3, 2, _flux_block(ctx, kind, 3, 8, 1), (2, 2, 4)),
                       (1, 5, 2, 5, _flux_block(ctx, kind, 4, 12, 2), (4, 4, 4))]
        else:
            configs = [(1, 3, 2, 3, ctx.weights(part, standin=True), (4, 4, 8))]
        for i, (B, M, gh, gw, blk, axes) in enumerate(configs):
            D = blk.attn.to_q.in_features
            rotary = _rotary(_grid_ids(ctx, M, gh, gw, 40 + i), axes)
            x, c = ctx.randn(B, gh * gw, D, offset=10 + i), ctx.randn(B, M, D, offset=20 + i)
            temb = ctx.randn(B, D, offset=30 + i)
            yield Case(f"x {(B, gh * gw, D)}, c {(B, M, D)}, {blk.attn.heads} heads of {blk.attn.head_dim}, "
                       f"RoPE axes {axes}", (blk, x, c, temb, rotary))
        yield (_flux_model_case(ctx, kind, 2, 3, 4, 5, 100) if ctx.hidden
               else _flux_model_case(ctx, kind, 1, 2, 3, 2, 100))
    return cases


def _flux_attention_variant(attn, x, c, rotary, *, image_first=False, rope=True, qk=True):
    d = attn.head_dim
    q, k, v = ref._bnhd(attn.to_q(x), d), ref._bnhd(attn.to_k(x), d), ref._bnhd(attn.to_v(x), d)
    if qk:
        q, k = ref.rms_norm(q, attn.norm_q), ref.rms_norm(k, attn.norm_k)
    M = 0 if c is None else c.shape[1]
    if c is not None:
        cq, ck, cv = ref._bnhd(attn.add_q_proj(c), d), ref._bnhd(attn.add_k_proj(c), d), ref._bnhd(attn.add_v_proj(c), d)
        if qk:
            cq, ck = ref.rms_norm(cq, attn.norm_added_q), ref.rms_norm(ck, attn.norm_added_k)
        if image_first:
            q, k, v = torch.cat([q, cq], 1), torch.cat([k, ck], 1), torch.cat([v, cv], 1)
        else:
            q, k, v = torch.cat([cq, q], 1), torch.cat([ck, k], 1), torch.cat([cv, v], 1)
    if rope:
        q, k = ref.apply_rope(q, *rotary), ref.apply_rope(k, *rotary)
    out = ref._sdpa_bnhd(q, k, v)
    if c is None:
        return out
    N = x.shape[1]
    co, xo = (out[:, N:], out[:, :N]) if image_first else (out[:, :M], out[:, M:])
    return attn.to_add_out(co), attn.to_out[0](xo)


def _double_variant(block, x, c, temb, rotary, approximate="tanh", **knobs):
    nx, gate, shift_mlp, scale_mlp, gate_mlp = ref.adaln_zero(x, temb, block.norm1.linear)
    nc, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = ref.adaln_zero(c, temb, block.norm1_context.linear)
    ca, a = _flux_attention_variant(block.attn, nx, nc, rotary, **knobs)
    x = x + gate[:, None] * a
    x = x + gate_mlp[:, None] * ref.feed_forward(block.ff, ref.modulate_ln(x, shift_mlp, scale_mlp), approximate)
    c = c + c_gate[:, None] * ca
    c = c + c_gate_mlp[:, None] * ref.feed_forward(block.ff_context, ref.modulate_ln(c, c_shift_mlp, c_scale_mlp),
                                                   approximate)
    return c, x


def _single_variant(block, x, c, temb, rotary, *, sequential=False, approximate="tanh", **knobs):
    M = c.shape[1]
    s = torch.cat([c, x], 1)
    shift, scale, gate = block.norm.linear(F.silu(temb)).chunk(3, dim=1)
    n = ref.modulate_ln(s, shift, scale)
    a = _flux_attention_variant(block.attn, n, None, rotary, **knobs)
    mlp = F.gelu(block.proj_mlp(a if sequential else n), approximate=approximate)
    s = s + gate[:, None] * block.proj_out(torch.cat([a, mlp], 2))
    return s[:, :M], s[:, M:]


def _flux_block_judge(kind: str):
    name = f"flux_{kind}_block"
    reference = ref.flux_double_block if kind == "double" else ref.flux_single_block
    variant = _double_variant if kind == "double" else _single_variant

    def judge(case: Case, got) -> None:
        if case.extra.get("plugin"):
            model, x, c, pooled, t, img_ids, txt_ids = case.args
            with torch.no_grad():
                expected = model(hidden_states=x, encoder_hidden_states=c, pooled_projections=pooled, timestep=t,
                                 img_ids=img_ids, txt_ids=txt_ids).sample
            assert_close(got, expected, name=f"{name}: {case.label}")
            return
        blk, x, c, temb, rotary = case.args
        ec, ex = reference(blk, x, c, temb, rotary)
        gc, gx = _pair(got, name, case.label, "(c_out, x_out) in diffusers' order")
        with torch.no_grad():
            for k, (g, e, what) in enumerate(((gc, ec, "text output c_out"), (gx, ex, "image output x_out"))):
                variants = {
                    "RoPE left out": lambda: variant(blk, x, c, temb, rotary, rope=False)[k],
                    "no QK RMSNorm (attn.norm_q, norm_k, ...)": lambda: variant(blk, x, c, temb, rotary, qk=False)[k],
                    "the exact GELU (Flux's MLPs use the tanh approximation)":
                        lambda: variant(blk, x, c, temb, rotary, approximate="none")[k],
                }
                if kind == "double":
                    variants["the joint sequence as [image; text] (Flux puts the text first, and the RoPE "
                             "table follows that order)"] = lambda: variant(blk, x, c, temb, rotary, image_first=True)[k]
                else:
                    variants["the MLP run after the attention (sequentially) instead of in parallel on the same "
                             "normalised input"] = lambda: variant(blk, x, c, temb, rotary, sequential=True)[k]
                assert_close(g, e, name=f"{name} {what} on {case.label}", variants=variants)
    return judge


EXERCISES = exercises(
    Exercise("joint_attention", 3, _joint_attention_cases, _joint_attention_judge, FORBID_JOINT_ATTN),
    Exercise("joint_block", 3, _joint_block_cases, _joint_block_judge, FORBID_JOINT_BLOCK),
    Exercise("sd3_text_embeds", 2, _text_cases, _text_judge, FORBID_TEXT),
    Exercise("pack_latents", 2, _pack_cases, _pack_judge, FORBID_PACK),
    Exercise("flux_rope", 2, _rope_cases, _rope_judge, FORBID_ROPE),
    Exercise("flux_double_block", 2, _flux_block_cases("double"), _flux_block_judge("double"), FORBID_DOUBLE),
    Exercise("flux_single_block", 2, _flux_block_cases("single"), _flux_block_judge("single"), FORBID_SINGLE),
)
