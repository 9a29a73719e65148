"""Lesson 9 (SDXL): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
the stand-in encoders, tokenizers and UNet on the CPU, covering every path the hidden tests
grade. Hidden tests: other prompts, batch sizes, images per prompt, encoder widths,
embedding sizes, original/crop/target sizes, aesthetic scores, schedulers, step counts and
denoising_end values; the real SDXL weights when present, the GPU when there is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..compare import ComparisonError, assert_close
from ..reference import sdxl as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

LESSON = "09_sdxl"

_P = "diffusers.pipelines.stable_diffusion_xl"
FORBID_ENCODE = (f"{_P}.pipeline_stable_diffusion_xl.StableDiffusionXLPipeline.encode_prompt",
                 f"{_P}.pipeline_stable_diffusion_xl_img2img.StableDiffusionXLImg2ImgPipeline.encode_prompt")
FORBID_FEATURES = ("diffusers.models.embeddings.get_timestep_embedding", "diffusers.models.embeddings.Timesteps.forward")
# Not the sinusoid helpers: the plug-in case runs diffusers' UNet forward (its time_proj uses them).
FORBID_ADDED = ("diffusers.models.unets.unet_2d_condition.UNet2DConditionModel.get_aug_embed",)
FORBID_TIME_IDS = (f"{_P}.pipeline_stable_diffusion_xl.StableDiffusionXLPipeline._get_add_time_ids",
                   f"{_P}.pipeline_stable_diffusion_xl_img2img.StableDiffusionXLImg2ImgPipeline._get_add_time_ids")
FORBID_HANDOFF = (f"{_P}.pipeline_stable_diffusion_xl_img2img.StableDiffusionXLImg2ImgPipeline.get_timesteps",)

PROMPTS = ["a cat on the mat", "an astronaut riding a horse on the moon, detailed oil painting at dusk"]
HIDDEN_PROMPTS = ["the cat and the dog", "", "a red cube in the snow", "photo of a castle in the clouds, "
                  "sharp focus, golden hour, wide angle, highly detailed, trending"]


# ---------------------------------------------------------------- shared inputs
def _encoders(ctx: Context):
    """(tokenizer, tokenizer_2, text_encoder, text_encoder_2): the stand-ins (see grader/checkpoints/sdxl.py)."""
    from ..checkpoints import sdxl as ck

    te = ctx.weights("sdxl_text_encoder", standin=True)
    te2 = ctx.weights("sdxl_text_encoder_2", standin=True)
    return (*ck.tokenizers(), te, te2)


def _other_encoders(ctx: Context, max_length: int = 12):
    """A second pair with other widths (24 and 48, projection 20) and another sequence length."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ..checkpoints import sdxl as ck

    common = dict(vocab_size=524, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=max_length, layer_norm_eps=1e-5, bos_token_id=522, eos_token_id=523)
    te = CLIPTextModel(CLIPTextConfig(**common, hidden_size=24, hidden_act="quick_gelu", pad_token_id=523))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, hidden_size=48, projection_dim=20, hidden_act="gelu",
                                                     pad_token_id=0))
    for i, m in enumerate((te, te2)):
        reinitialise_(m, ctx.seed % 1000 + i)
    return (ck.standin_tokenizer(max_length), ck.standin_tokenizer(max_length, pad_token="!"),
            te.to(ctx.device).eval(), te2.to(ctx.device).eval())


def _tuple_of(got, n: int, name: str, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != n:
        raise ComparisonError(f"{name}: return a tuple of {n} tensors: {what}.")
    return got


def _hidden_states(encoder, tokenizer, prompts, index=-2, final_norm=False):
    ids = ref.token_ids(tokenizer, prompts, encoder.device)
    with torch.no_grad():
        out = encoder(ids, output_hidden_states=True)
        h = out.hidden_states[index]
        return _final_norm(encoder)(h) if final_norm else h


def _final_norm(encoder):
    # transformers 5: CLIPTextModel holds final_layer_norm itself, CLIPTextModelWithProjection in text_model
    return getattr(encoder, "text_model", encoder).final_layer_norm


# ---------------------------------------------------------------- 1. two text encoders
def _encode_cases(ctx: Context):
    tok, tok2, te, te2 = _encoders(ctx)
    if ctx.hidden:
        yield Case("3 prompts (one empty, one past the token limit), stand-in encoders",
                   (tok, tok2, te, te2, HIDDEN_PROMPTS[1:]))
        yield Case("1 prompt, encoders of widths 24 and 48 (projection 20), 12 tokens",
                   (*_other_encoders(ctx), HIDDEN_PROMPTS[:1]))
    else:
        yield Case("2 prompts (the second past the 16-token limit), stand-in encoders", (tok, tok2, te, te2, PROMPTS))
        yield Case("1 short prompt, stand-in encoders", (tok, tok2, te, te2, PROMPTS[:1]))


def _encode_judge(case: Case, got) -> None:
    tok, tok2, te, te2, prompts = case.args
    name = f"encode_text on {case.label}"
    embeds, pooled = _tuple_of(got, 2, "encode_text", "(prompt_embeds, pooled_prompt_embeds)")
    exp_embeds, exp_pooled = ref.encode_text(*case.args)
    h1, h2 = exp_embeds.split([te.config.hidden_size, te2.config.hidden_size], dim=-1)
    N = tok.model_max_length
    if isinstance(embeds, torch.Tensor) and embeds.ndim == 3 and embeds.shape[1] != N:
        raise ComparisonError(f"{name} (prompt_embeds): {embeds.shape[1]} tokens, expected {N}.\n  diagnosis: "
                              f"pad every prompt to the tokenizer's model_max_length ({N}) and truncate to it, "
                              f"as the pipeline does (padding=\"max_length\", truncation=True).")
    assert_close(embeds, exp_embeds, name=f"{name} (prompt_embeds)", variants={
        "the last_hidden_state (after the final LayerNorm) instead of the penultimate layer":
            lambda: torch.cat([_hidden_states(te, tok, prompts, -1, True), _hidden_states(te2, tok2, prompts, -1, True)], -1),
        "hidden_states[-1] (the last layer) instead of hidden_states[-2]":
            lambda: torch.cat([_hidden_states(te, tok, prompts, -1), _hidden_states(te2, tok2, prompts, -1)], -1),
        "the final LayerNorm applied to the penultimate layer (SD 2's clip-skip style)":
            lambda: torch.cat([_hidden_states(te, tok, prompts, -2, True), _hidden_states(te2, tok2, prompts, -2, True)], -1),
        "the two encoders concatenated in the other order (OpenCLIP first)": torch.cat([h2, h1], -1),
        "the first tokenizer's ids fed to both encoders (tokenizer_2 pads with '!', id 0)":
            lambda: torch.cat([h1, _hidden_states(te2, tok, prompts)], -1),
    })

    if isinstance(pooled, torch.Tensor) and pooled.shape != exp_pooled.shape and pooled.ndim == 2:
        width = pooled.shape[-1]
        hint = {te2.config.hidden_size: "that is text_encoder_2's hidden width: its pooler_output before "
                                        "text_projection (use text_embeds)",
                te.config.hidden_size: "that is CLIP-L's width: SDXL pools from text_encoder_2 (its text_embeds)"}
        if width in hint:
            raise ComparisonError(f"{name} (pooled_prompt_embeds): shape {tuple(pooled.shape)}, expected "
                                  f"{tuple(exp_pooled.shape)}.\n  diagnosis: {hint[width]}.")
    assert_close(pooled, exp_pooled, name=f"{name} (pooled_prompt_embeds)")


# ---------------------------------------------------------------- 2. classifier-free guidance embeddings
def _cfg_cases(ctx: Context):
    tok, tok2, te, te2 = _encoders(ctx)
    if ctx.hidden:
        other = _other_encoders(ctx, max_length=10)
        configs = [((tok, tok2, te, te2), HIDDEN_PROMPTS[2:], None, 3, True),
                   ((tok, tok2, te, te2), HIDDEN_PROMPTS[:3], [""] * 3, 2, True),
                   (other, HIDDEN_PROMPTS[:2], None, 2, False),
                   (other, HIDDEN_PROMPTS[2:3], ["blurry, low quality"], 4, True)]
    else:
        configs = [((tok, tok2, te, te2), PROMPTS, None, 2, True),
                   ((tok, tok2, te, te2), PROMPTS[:1], [""], 1, True),
                   ((tok, tok2, te, te2), PROMPTS, ["blurry", "ugly"], 2, False),
                   ((tok, tok2, te, te2), PROMPTS[:1], None, 1, False)]
    for encoders, prompts, negative, n, zeros in configs:
        neg = "no negative prompt" if negative is None else f"negative prompts {negative}"
        yield Case(f"{len(prompts)} prompts, {neg}, {n} images per prompt, force_zeros_for_empty_prompt={zeros}",
                   (*encoders, prompts, negative, n, zeros))


_CFG_OUTPUTS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def _cfg_judge(case: Case, got) -> None:
    tok, tok2, te, te2, prompts, negative, n, zeros = case.args
    got = _tuple_of(got, 4, "encode_prompt_cfg", ", ".join(_CFG_OUTPUTS))
    expected = ref.encode_prompt_cfg(*case.args)
    B = len(prompts)

    def tiled(t):   # each (B, ...) tensor repeated n times as a block: prompt order a, b, a, b
        base = t[::n]
        return base.repeat(n, *([1] * (t.ndim - 1)))

    for k, (g, e, label) in enumerate(zip(got, expected, _CFG_OUTPUTS)):
        variants = {f"each prompt's {n} copies spread out (a, b, a, b: repeat/tile) instead of kept together "
                    f"(a, a, b, b)": tiled(e) if n > 1 and B > 1 else None}
        if k in (1, 3):
            which = 0 if k == 1 else 1
            if negative is None and zeros:
                variants["the empty string encoded where diffusers uses zeros (force_zeros_for_empty_prompt)"] = \
                    lambda w=which: ref.encode_text(tok, tok2, te, te2, [""] * B)[w].repeat_interleave(n, 0)
            else:
                variants["zeros where diffusers encodes the negative (or empty) prompt"] = torch.zeros_like(e)
        assert_close(g, e, name=f"encode_prompt_cfg {label} on {case.label}", variants=variants)


# ---------------------------------------------------------------- 3. Fourier features of the size/crop numbers
def _features_cases(ctx: Context):
    if ctx.hidden:
        sizes = ctx.randint(256, 2049, (3, 6), offset=1).float()
        refiner = torch.tensor([[768.0, 1024.0, 0.0, 64.0, 6.0], [1024.0, 1024.0, 12.0, 0.0, 2.5]])
        configs = [(sizes, 256), (refiner.to(ctx.device), 8), (ctx.randint(0, 4096, (1, 6), offset=2).float(), 32)]
    else:
        configs = [(torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0],
                                  [512.0, 768.0, 16.0, 32.0, 1024.0, 1024.0]]), 16)]
    for t, dim in configs:
        yield Case(f"time_ids {tuple(t.shape)}, dim {dim}", (t, dim))


def _features_judge(case: Case, got) -> None:
    from diffusers.models.embeddings import get_timestep_embedding

    t, dim = case.args
    B, K = t.shape
    expected = ref.time_id_features(t, dim)
    flat = t.flatten()
    assert_close(got, expected, name=f"time_id_features with {case.label}", variants={
        "[sin | cos] (diffusers' SDXL UNet has flip_sin_to_cos=True: cos first)":
            get_timestep_embedding(flat, dim, flip_sin_to_cos=False, downscale_freq_shift=0).reshape(B, -1),
        "downscale_freq_shift=1 (DiT's spacing: denominator d/2 - 1; SDXL uses 0)":
            get_timestep_embedding(flat, dim, flip_sin_to_cos=True, downscale_freq_shift=1).reshape(B, -1),
        "the features laid out frequency-major (all numbers' first feature, then the second, ...)":
            expected.reshape(B, K, dim).transpose(1, 2).reshape(B, -1),
    })


# ---------------------------------------------------------------- 4. the added (micro-conditioning) embedding
def _unet_inputs(unet, ctx: Context, B: int, offset: int):
    cfg = unet.config
    S = cfg.sample_size
    sample = ctx.randn(B, cfg.in_channels, S, S, offset=offset)
    t = ctx.randint(0, 1000, (B,), offset=offset + 1)
    ehs = ctx.randn(B, 5, cfg.cross_attention_dim, offset=offset + 2)
    return sample, t, ehs


def _plug_in(fn, unet, sample, t, ehs, text_embeds, time_ids):
    """Diffusers' UNet forward with the student's added embedding in place of get_aug_embed."""
    d = unet.config.addition_time_embed_dim

    def aug(emb, encoder_hidden_states, added_cond_kwargs):
        return fn(unet.add_embedding, added_cond_kwargs["text_embeds"], added_cond_kwargs["time_ids"], d)

    unet.get_aug_embed = aug
    return unet(sample, t, encoder_hidden_states=ehs,
                added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample


def _time_ids(ctx: Context, B: int, K: int, offset: int) -> torch.Tensor:
    ids = ctx.randint(0, 2048, (B, K), offset=offset).float()
    if K == 5:  # the refiner: the last number is an aesthetic score
        ids[:, -1] = ctx.rand(B, offset=offset + 1) * 10
    return ids


def _added_cases(ctx: Context):
    from diffusers.models.embeddings import TimestepEmbedding

    emb = ctx.weights("sdxl_add_embedding")
    d_real = 256 if emb.linear_1.in_features == 2816 else 8
    P = emb.linear_1.in_features - 6 * d_real
    configs = [(emb, d_real, 6, P, 3 if ctx.hidden else 2)]
    if ctx.hidden:
        for i, (d, K, P_, width) in enumerate(((8, 5, 24, 96), (16, 6, 20, 40))):  # refiner-like, other widths
            m = TimestepEmbedding(K * d + P_, width)
            reinitialise_(m, ctx.seed % 1000 + i)
            configs.append((m.to(ctx.device).eval(), d, K, P_, 2))
    else:
        m = TimestepEmbedding(5 * 8 + 24, 64)   # the refiner's layout: 5 numbers
        reinitialise_(m, 7)
        configs.append((m.eval(), 8, 5, 24, 1))
    for i, (module, d, K, P_, B) in enumerate(configs):
        text = ctx.randn(B, P_, offset=10 + i)
        ids = _time_ids(ctx, B, K, offset=20 + 2 * i)
        yield Case(f"{B} x ({P_} pooled + {K} numbers x {d}) -> {module.linear_2.out_features}",
                   (module, text, ids, d))
    # The fp16 SDXL pipeline: module and pooled text in half precision, time ids float32 (diffusers' CPU
    # half linear runs this too). The answer keeps the module's dtype (the docstring's contract).
    m = TimestepEmbedding(6 * 8 + 24, 48)
    reinitialise_(m, ctx.seed % 1000 + 5)
    yield Case("fp16 module and pooled text (the fp16 pipeline), 2 x (24 pooled + 6 numbers x 8) -> 48",
               (m.to(ctx.device).half().eval(), ctx.randn(2, 24, offset=30).half(), _time_ids(ctx, 2, 6, offset=31), 8),
               extra={"fp16": True})
    # The plug-in: diffusers' (stand-in) SDXL UNet running the student's added embedding.
    unet = ctx.weights("sdxl_unet", standin=True)
    B = 2
    sample, t, ehs = _unet_inputs(unet, ctx, B, 40)
    P_ = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    yield Case(f"inside UNet2DConditionModel.forward, batch {B}",
               (unet, sample, t, ehs, ctx.randn(B, P_, offset=50), _time_ids(ctx, B, 6, 51)),
               invoke=_plug_in, extra={"unet": True})


def _added_variants(module, text, ids, d):
    from diffusers.models.embeddings import get_timestep_embedding

    feats = ref.time_id_features(ids, d)
    lin1, lin2 = module.linear_1, module.linear_2
    sin_first = get_timestep_embedding(ids.flatten(), d, flip_sin_to_cos=False, downscale_freq_shift=0)
    sin_first = sin_first.reshape(ids.shape[0], -1)
    return {
        "the time features before the pooled text (diffusers: [text_embeds, time features])":
            lambda: lin2(F.silu(lin1(torch.cat([feats, text], -1)))),
        "no SiLU between linear_1 and linear_2": lambda: lin2(lin1(torch.cat([text, feats], -1))),
        "[sin | cos] features (SDXL's UNet: flip_sin_to_cos=True, cos first)":
            lambda: lin2(F.silu(lin1(torch.cat([text, sin_first], -1)))),
    }


def _added_judge(case: Case, got) -> None:
    if case.extra.get("unet"):
        unet, sample, t, ehs, text, ids = case.args
        with torch.no_grad():
            expected = unet(sample, t, encoder_hidden_states=ehs,
                            added_cond_kwargs={"text_embeds": text, "time_ids": ids}).sample
        assert_close(got, expected, name=f"added_embedding {case.label}")
        return
    module, text, ids, d = case.args
    with torch.no_grad():
        expected = ref.added_embedding(module, text, ids, d)
        if case.extra.get("fp16"):   # fp16 rounding: computing in float32 and casting back is fine too
            assert_close(got, expected, name=f"added_embedding on {case.label}", rtol=5e-3, max_tol=1e-2)
            return
        assert_close(got, expected, name=f"added_embedding on {case.label}", variants=_added_variants(module, text, ids, d))


# ---------------------------------------------------------------- 5. time ids under classifier-free guidance
def _time_ids_cases(ctx: Context):
    if ctx.hidden:
        h, w = (int(v) * 64 for v in ctx.randint(8, 33, (2,), offset=1).tolist())
        top, left = (int(v) for v in ctx.randint(0, 200, (2,), offset=2).tolist())
        aes = round(float(ctx.rand(1, offset=3)) * 4 + 5, 2)
        configs = [((h, w), (top, left), (1024, 1024), 3, None, 2.5),
                   ((h, w), (top, left), (896, 1152), 2, aes, 3.0),
                   ((1024, 768), (0, 0), (1024, 768), 1, 7.5, 2.5)]
    else:
        configs = [((1024, 1024), (0, 0), (1024, 1024), 1, None, 2.5),
                   ((512, 768), (16, 32), (1024, 1024), 2, 6.0, 2.5)]
    for size, crop, target, B, aes, neg in configs:
        who = "base" if aes is None else f"refiner, aesthetic {aes} / {neg}"
        yield Case(f"original {size}, crop {crop}, target {target}, batch {B}, {who}",
                   (size, crop, target, B, aes, neg))


def _time_ids_judge(case: Case, got) -> None:
    size, crop, target, B, aes, neg = case.args
    expected = ref.cfg_time_ids(size, crop, target, B, aes, neg)
    variants = {"the prompt's rows first (diffusers: the negative half first, as in torch.cat([neg, pos]))":
                torch.cat([expected[B:], expected[:B]]) if aes is not None else None,
                "rows interleaved (neg, pos, neg, pos) instead of all negative rows first":
                expected.reshape(2, B, -1).transpose(0, 1).reshape(2 * B, -1) if aes is not None and B > 1 else None}
    if aes is not None:
        same = ref.cfg_time_ids(size, crop, target, B, aes, aes)
        variants["the positive aesthetic score in the negative half too"] = same
        with_crop = expected.clone()
        with_crop[:B, 2:4] = torch.tensor([float(c) for c in crop])
        variants["your crop in the refiner's negative half (diffusers: negative_crops_coords_top_left, "
                 "default (0, 0))"] = with_crop if tuple(crop) != (0, 0) else None
    if isinstance(got, torch.Tensor) and got.dtype != torch.float32:
        raise ComparisonError(f"cfg_time_ids on {case.label}: dtype {got.dtype}, expected torch.float32 "
                              "(the UNet embeds these numbers like timesteps: floats).")
    assert_close(got, expected, name=f"cfg_time_ids on {case.label}", variants=variants, check_device=False)


# ---------------------------------------------------------------- 6. base -> refiner handoff
def _scheduler_timesteps(kind: str, steps: int) -> tuple[torch.Tensor, int]:
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

    from ..checkpoints.sdxl import SDXL_SCHEDULER

    if kind == "euler":
        s = EulerDiscreteScheduler(**SDXL_SCHEDULER)
    elif kind == "euler-karras":
        s = EulerDiscreteScheduler(**dict(SDXL_SCHEDULER, use_karras_sigmas=True))
    elif kind == "heun":
        s = HeunDiscreteScheduler(**{k: v for k, v in SDXL_SCHEDULER.items() if k != "interpolation_type"})
    else:
        s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, timestep_spacing="trailing", clip_sample=False)
    s.set_timesteps(steps)
    return s.timesteps.clone(), s.order


def _handoff_cases(ctx: Context):
    if ctx.hidden:
        configs = [("euler", 25, 0.8), ("euler-karras", 30, 0.75), ("ddim-trailing", 20, 0.9), ("heun", 8, 0.8),
                   ("heun", 9, 0.65)]
        f = round(0.55 + float(ctx.rand(1, offset=1)) * 0.4, 3)
        cut = int(round(1000 - f * 1000))
        crafted = torch.tensor([999.0, 800.0, cut + 40.0, cut + 0.0, cut - 0.4, cut - 1.0, 40.0, 0.0])
        extra = [("crafted", crafted, 1, f, 1000),
                 ("crafted", torch.tensor([950.0, 600.0, 223.0, 222.0, 150.0, 50.0]), 1, 0.7773, 1000),
                 ("crafted, T = 500", torch.tensor([499, 400, 300, 250, 100, 3]), 1, 0.5, 500)]
    else:
        configs = [("euler", 10, 0.8), ("heun", 6, 0.7)]
        extra = [("crafted", torch.tensor([999.0, 500.0, 167.0, 166.0, 100.0, 1.0]), 1, 0.8333, 1000)]
    for kind, steps, f in configs:
        ts, order = _scheduler_timesteps(kind, steps)
        yield Case(f"{kind} scheduler, {steps} steps, denoising_end {f}", (ts, f, 1000, order))
    for label, ts, order, f, T in extra:
        yield Case(f"{label} timesteps {ts.tolist()}, denoising_end {f}", (ts, f, T, order))


def _handoff_judge(case: Case, got) -> None:
    ts, f, T, order = case.args
    base, refiner = _tuple_of(got, 2, "handoff", "(base_timesteps, refiner_timesteps)")
    exp_base, exp_ref = ref.handoff(ts, f, T, order)
    cut_int = int(T - f * T)
    n = len(ts)
    k = int(round(f * n))
    for g, e, label in ((base, exp_base, "base"), (refiner, exp_ref, "refiner")):
        if not isinstance(g, torch.Tensor):
            raise ComparisonError(f"handoff {label} timesteps on {case.label}: expected a torch.Tensor (a slice of "
                                  f"the schedule), got {type(g).__name__}.")
        if g.shape != e.shape:
            why = []
            if order == 2:
                n_ref = int((ts < round(T - f * T)).sum())
                if label == "refiner" and n_ref % 2 == 0 and g.numel() == n_ref:
                    why.append("the refiner's extra step for a second-order scheduler (an even count gets + 1) "
                               "is missing")
            if cut_int != round(T - f * T):
                b, r = (ts[:int((ts >= cut_int).sum())], ts[n - int((ts < cut_int).sum()):])
                if g.shape == (b if label == "base" else r).shape:
                    why.append(f"the cut taken at int({T} - {f} x {T}) = {cut_int}: diffusers rounds it "
                               f"(int(round(...)) = {round(T - f * T)})")
            if g.numel() == (k if label == "base" else n - k):
                why.append("a fraction of the steps taken, not of the noise schedule "
                           "(denoising_end is compared with the timesteps)")
            if label == "base" and g.numel() == int((ts >= round(f * T)).sum()) != e.numel():
                why.append(f"the cut taken at f x T = {round(f * T)} instead of T - f x T = {round(T - f * T)} "
                           "(denoising_end is the fraction of the schedule the base runs, from T down)")
            if label == "base" and g.numel() == int((ts > round(T - f * T)).sum()):
                why.append("the base stopping before the cut-off timestep (diffusers keeps t >= cut-off)")
            hint = ("\n  diagnosis: " + "; or ".join(why)) if why else ""
            raise ComparisonError(f"handoff {label} timesteps on {case.label}: {g.numel()} timesteps, expected "
                                  f"{e.numel()}.{hint}")
        assert_close(g, e, name=f"handoff {label} timesteps on {case.label}", check_device=False)


EXERCISES = exercises(
    Exercise("encode_text", 3, _encode_cases, _encode_judge, FORBID_ENCODE),
    Exercise("encode_prompt_cfg", 2, _cfg_cases, _cfg_judge, FORBID_ENCODE),
    Exercise("time_id_features", 2, _features_cases, _features_judge, FORBID_FEATURES),
    Exercise("added_embedding", 3, _added_cases, _added_judge, FORBID_ADDED),
    Exercise("cfg_time_ids", 2, _time_ids_cases, _time_ids_judge, FORBID_TIME_IDS),
    Exercise("handoff", 2, _handoff_cases, _handoff_judge, FORBID_HANDOFF),
)
