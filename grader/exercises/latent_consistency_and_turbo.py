"""Lesson 7 (LCM & SDXL Turbo): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
fixed small inputs on the CPU, covering every code path (a middle and a last LCM step, the
step inside the scheduler's loop, an odd w-embedding width, Linear and 1x1/3x3 Conv LoRA
targets with mixed ranks). Hidden tests: the grader's seed, other shapes and batch sizes,
other step counts, ``original_inference_steps``, ``num_train_timesteps``,
``timestep_scaling``, beta schedules, guidance scales, embedding widths, LoRA ranks, alphas
and scales, another UNet, the real LCM_Dreamshaper_v7 time embedding when present, the GPU
when there is one.
"""

from __future__ import annotations

import contextlib
import sys

import torch

from ..compare import ComparisonError, assert_close
from ..exercise import SubmissionError
from ..reference import latent_consistency_and_turbo as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

LESSON = "07_latent_consistency_and_turbo"

_S = "diffusers.schedulers.scheduling_lcm.LCMScheduler"
FORBID_SCALINGS = (f"{_S}.get_scalings_for_boundary_condition_discrete",)
FORBID_TIMESTEPS = (f"{_S}.set_timesteps",)
FORBID_STEP = (f"{_S}.step", f"{_S}.get_scalings_for_boundary_condition_discrete", f"{_S}.add_noise")
FORBID_LORA = ("diffusers.loaders.peft.PeftAdapterMixin.load_lora_adapter",
               "diffusers.loaders.lora_base.LoraBaseMixin.fuse_lora",
               "diffusers.loaders.peft.PeftAdapterMixin.fuse_lora")
_LCM_PIPE = "diffusers.pipelines.latent_consistency_models.pipeline_latent_consistency_text2img"


class _ForbidTimeEmbedding(tuple):
    """TimestepEmbedding.forward always; the pipeline's get_guidance_scale_embedding once its module is loaded.

    Importing the pipeline module just to block it pulls in transformers' image processors,
    which log to stderr: only a copy the submission has already imported is blocked (the
    only way to call it).
    """

    def __iter__(self):
        yield from super().__iter__()
        if _LCM_PIPE in sys.modules:
            yield f"{_LCM_PIPE}.LatentConsistencyModelPipeline.get_guidance_scale_embedding"


FORBID_TIME = _ForbidTimeEmbedding(("diffusers.models.embeddings.TimestepEmbedding.forward",))

from ..weights import registry as _registry  # noqa: E402,F401  gathered first, so the import below
from ..checkpoints.latent_consistency_and_turbo import LORA_TARGETS  # noqa: E402  cannot half-gather it


@contextlib.contextmanager
def _one_thread():
    """Tiny stand-in UNets run fastest on one CPU thread, and several threads on an oversubscribed
    machine made a 4x4-latent forward take seconds instead of milliseconds; the setting is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _single_threaded(f):
    def wrapped(*args, **kwargs):
        with _one_thread():
            return f(*args, **kwargs)
    wrapped.__name__ = f.__name__
    return wrapped


def _require(fn, name: str) -> None:
    """An invoke wraps the student's function: report a missing one as the core does for a plain case."""
    if fn is None:
        raise SubmissionError(f"{name}: not defined. Run the cell that defines `{name}` first.")
    if not callable(fn):
        raise SubmissionError(f"{name}: expected a function, got {type(fn).__name__}.")


def _pair(got, name: str, label: str, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError(f"{name} ({label}): return a tuple of 2 tensors: {what}.")
    return got


def _betas(kind: str):
    from diffusers import LCMScheduler

    if kind == "linear":
        return LCMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02).alphas_cumprod
    return LCMScheduler().alphas_cumprod  # SD's scaled_linear 0.00085 .. 0.012


# ---------------------------------------------------------------- 1. boundary scalings
def _scalings_cases(ctx: Context):
    if ctx.hidden:
        cases = [(ctx.randint(0, 1000, (7,), offset=1), 10.0),
                 (torch.cat([torch.tensor([0, 1]), ctx.randint(2, 1000, (4,), offset=2)]), 1.0),
                 (ctx.randint(0, 500, (3,), offset=3), 37.5)]
    else:
        cases = [(torch.tensor([0, 1, 19, 259, 999]), 10.0), (torch.tensor([0, 1, 2, 5, 40]), 0.5)]
    for t, scaling in cases:
        yield Case(f"timesteps {t.tolist()}, timestep_scaling {scaling}", (t.to(ctx.device), scaling))


def _cm_scalings(t, scaling, sigma_min=0.002, sd=0.5):
    s = t.double() * scaling
    return (sd ** 2 / ((s - sigma_min) ** 2 + sd ** 2)).float(), ((s - sigma_min) * sd / (s ** 2 + sd ** 2).sqrt()).float()


def _scalings_judge(case: Case, got) -> None:
    t, scaling = case.args
    c_skip, c_out = _pair(got, "lcm_scalings", case.label, "(c_skip, c_out)")
    e_skip, e_out = ref.lcm_scalings(t, scaling)
    unscaled = ref.lcm_scalings(t, 1.0) if scaling != 1.0 else (None, None)
    sd1 = ref.lcm_scalings(t, scaling, sigma_data=1.0)
    cm = _cm_scalings(t, scaling)
    for k, (g_, e_, n_) in enumerate(((c_skip, e_skip, "c_skip"), (c_out, e_out, "c_out"))):
        other = (e_out, e_skip)[k]
        assert_close(g_, e_, name=f"lcm_scalings {n_} on {case.label}", variants={
            "the timestep left unscaled (timestep_scaling ignored)": unscaled[k],
            "sigma_data = 1 instead of 0.5": sd1[k],
            "c_skip and c_out swapped": other,
            "lesson 6's continuous-time form (σ - σ_min) instead of LCM's scaled discrete timestep": cm[k],
        })


# ---------------------------------------------------------------- 2. timestep grid
def _timesteps_cases(ctx: Context):
    if ctx.hidden:
        g = ctx.generator(0)
        n_rand = int(torch.randint(2, 9, (1,), generator=g))
        # (6, 50) and (4, 30): floor(j * N / n) differs from a fixed stride N // n.
        cases = [(n_rand, 50, 1000), (6, 50, 1000), (7, 50, 1000), (4, 30, 1000), (6, 13, 1000), (5, 40, 500),
                 (1, 50, 1000), (8, 32, 1024)]
    else:
        cases = [(4, 50, 1000), (3, 50, 1000), (5, 30, 1000)]
    for n, orig, train in cases:
        yield Case(f"num_inference_steps {n}, original_inference_steps {orig}, num_train_timesteps {train}",
                   (n, orig, train))


def _timesteps_judge(case: Case, got) -> None:
    n, orig, train = case.args
    expected = ref.lcm_timesteps(n, orig, train)
    name = f"lcm_timesteps with {case.label}"
    if not isinstance(got, torch.Tensor):
        raise ComparisonError(f"{name}: expected a torch.Tensor of int64 timesteps, got {type(got).__name__}.")
    if got.dtype != torch.long:
        raise ComparisonError(f"{name}: dtype {got.dtype}, expected torch.int64 (timesteps index alphas_cumprod).")
    if tuple(got.shape) != tuple(expected.shape):
        raise ComparisonError(f"{name}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    got = got.cpu()
    if torch.equal(got, expected):
        return
    k = train // orig
    grid = torch.arange(1, orig + 1) * k - 1
    hints = {
        "the timesteps in ascending order (LCM samples from t = T-1 down)": expected.flip(0),
        "a fixed stride of len(grid) // n through the grid instead of floor(linspace(0, len, n))":
            grid.flip(0)[:: max(len(grid) // n, 1)][:n],
        "the grid i*k instead of i*k - 1 (the last training timestep is T - 1)": expected + 1,
        "the inference steps spread over all training timesteps instead of the original_inference_steps grid":
            torch.linspace(train - 1, 0, n).floor().long() if n > 1 else None,
    }
    msg = f"{name}: values differ from the reference: got {got.tolist()[:12]}"
    for what, variant in hints.items():
        if variant is not None and variant.shape == got.shape and torch.equal(got, variant):
            msg += f"\n  diagnosis: your output matches what you get with {what}."
            break
    raise ComparisonError(msg)


# ---------------------------------------------------------------- 3. the LCM step, alone and in the loop
@_single_threaded
def _loop_invoke(fn, unet, latents, prompt_embeds, timesteps, alphas_cumprod, noises, timestep_cond, scaling):
    """The LCM pipeline's sampling loop with the student's step in place of ``LCMScheduler.step``."""
    _require(fn, "lcm_step")
    denoised = None
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(ts):
        with _one_thread():
            out = unet(latents, t, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond).sample
        last = i == len(ts) - 1
        result = fn(out, t, latents, alphas_cumprod, None if last else noises[i], None if last else ts[i + 1], scaling)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise SubmissionError(f"lcm_step: return a tuple (prev_sample, denoised); got {type(result).__name__}.")
        latents, denoised = result
    return denoised


def _lcm_timesteps_for(n: int, orig: int, scheduler_kwargs: dict) -> torch.Tensor:
    from diffusers import LCMScheduler

    s = LCMScheduler(**scheduler_kwargs)
    s.set_timesteps(n, original_inference_steps=orig)
    return s.timesteps


def _step_cases(ctx: Context):
    if ctx.hidden:
        # Small timesteps / small timestep_scaling: where c_skip is far from 0 (at t >= 19 with
        # scaling 10 it is below 1e-5, so a step without the scalings would pass there).
        singles = [((3, 4, 6, 10), 759, 499, 10.0, "scaled_linear"), ((2, 4, 5, 3), 259, None, 10.0, "scaled_linear"),
                   ((1, 3, 8, 8), 5, 2, 0.2, "linear"), ((4, 4, 2, 7), 3, None, 0.5, "linear"),
                   ((2, 4, 3, 3), 39, 19, 0.01, "scaled_linear")]
        loops = [(4, 50, 10.0, {}, 2, 5.5),
                 (3, 1000, 0.002, {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                                   "timestep_scaling": 0.002}, 3, 1.5)]
    else:
        singles = [((1, 4, 4, 4), 999, 759, 10.0, "scaled_linear"), ((1, 4, 4, 4), 259, None, 10.0, "scaled_linear"),
                   ((1, 4, 4, 4), 9, 4, 0.1, "scaled_linear"), ((1, 4, 4, 4), 2, None, 0.1, "scaled_linear")]
        loops = [(2, 50, 10.0, {}, 1, 8.5)]
    for i, (shape, t, prev, scaling, betas) in enumerate(singles):
        x = ctx.randn(*shape, offset=10 + i)
        eps = ctx.randn(*shape, offset=20 + i)
        noise = ctx.randn(*shape, offset=30 + i) if prev is not None else None
        where = f"prev_timestep {prev}" if prev is not None else "the last step (prev_timestep None)"
        yield Case(f"sample {shape}, timestep {t}, {where}, timestep_scaling {scaling}, {betas} betas",
                   (eps, t, x, _betas(betas).to(ctx.device), noise, prev, scaling))
    unet = ctx.weights("lcm_unet", standin=True)
    cond_dim = unet.config.time_cond_proj_dim
    for j, (n, orig, scaling, kwargs, B, gs) in enumerate(loops):
        from diffusers import LCMScheduler

        timesteps = _lcm_timesteps_for(n, orig, kwargs)
        alphas = LCMScheduler(**kwargs).alphas_cumprod
        lat = ctx.randn(B, 4, 4, 4, offset=40 + j)
        pe = ctx.randn(B, 5, unet.config.cross_attention_dim, offset=50 + j)
        g = torch.Generator("cpu").manual_seed(ctx.seed + 60 + j)
        noises = [torch.randn(lat.shape, generator=g).to(ctx.device) for _ in range(n - 1)]
        w = ctx.randn(B, cond_dim, offset=70 + j)  # any timestep_cond: this case is about the step
        yield Case(f"the LCM loop: stand-in UNet, {n} steps {timesteps.tolist()} from original_inference_steps {orig}, "
                   f"timestep_scaling {scaling}, batch {B}",
                   (unet, lat, pe, timesteps, alphas.to(ctx.device), noises, w, scaling),
                   invoke=_loop_invoke, extra={"scheduler": kwargs, "n": n, "orig": orig, "seed": ctx.seed + 60 + j})


def _renoise_variants(eps, t, x, alphas, noise, prev, scaling, expected_den):
    a_t = alphas[t]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    out = {}
    if prev is not None:
        a_p = alphas[prev]
        out["a deterministic DDIM step (predicted noise instead of fresh noise)"] = \
            a_p.sqrt() * expected_den + (1 - a_p).sqrt() * eps
        out["re-noising to the current timestep t instead of the next one"] = \
            a_t.sqrt() * expected_den + (1 - a_t).sqrt() * noise
        out["the boundary scalings left out (re-noising x0 itself)"] = a_p.sqrt() * x0 + (1 - a_p).sqrt() * noise
        out["(1 - ᾱ_prev) instead of its square root on the noise"] = a_p.sqrt() * expected_den + (1 - a_p) * noise
    return out


def _step_judge(case: Case, got) -> None:
    if case.invoke is not None:
        return _loop_judge(case, got)
    eps, t, x, alphas, noise, prev, scaling = case.args
    prev_sample, denoised = _pair(got, "lcm_step", case.label, "(prev_sample, denoised)")
    e_prev, e_den = ref.lcm_step(eps, t, x, alphas, noise, prev, scaling)
    a_t = alphas[t]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    c_skip, c_out = (float(v) for v in ref.lcm_scalings(torch.tensor([t]), scaling))
    assert_close(denoised, e_den, name=f"lcm_step denoised on {case.label}", variants={
        "the boundary scalings left out, or evaluated with timestep_scaling 10 instead of the one given "
        "(both give denoised ≈ predicted x0 here)": x0,
        "the timestep_scaling fixed at 10": lambda: ref.lcm_step(eps, t, x, alphas, noise, prev, 10.0)[1]
        if scaling != 10.0 else None,
        "c_skip and c_out swapped": c_skip * x0 + c_out * x,
        "ᾱ_t instead of its square root in the x0 prediction": (x - (1 - a_t).sqrt() * eps) / a_t,
    })
    if prev is None:
        assert_close(prev_sample, e_prev, name=f"lcm_step prev_sample on {case.label}", variants={
            "the predicted x0 returned without the boundary scalings": x0,
        })
        return
    assert_close(prev_sample, e_prev, name=f"lcm_step prev_sample on {case.label}",
                 variants=_renoise_variants(eps, t, x, alphas, noise, prev, scaling, e_den))


@_single_threaded
def _loop_judge(case: Case, got) -> None:
    """diffusers' own LCMScheduler.step in the same loop, its generator seeded to draw the same noise."""
    from diffusers import LCMScheduler

    unet, lat, pe, timesteps, alphas, noises, w, scaling = case.args
    sched = LCMScheduler(**case.extra["scheduler"])
    sched.set_timesteps(case.extra["n"], original_inference_steps=case.extra["orig"])
    g = torch.Generator("cpu").manual_seed(case.extra["seed"])
    latents, denoised = lat, None
    with torch.no_grad(), _one_thread():
        for t in sched.timesteps:
            out = unet(latents, t, encoder_hidden_states=pe, timestep_cond=w).sample
            latents, denoised = sched.step(out, t, latents, generator=g, return_dict=False)
    assert_close(got, denoised, name=f"lcm_step inside {case.label}")


# ---------------------------------------------------------------- 4. guidance-scale embedding into the time embedding
#: The w-embedding's angles reach 1000 * 14 = 1.4e4 rad, where float32 keeps about three decimals
#: (diffusers computes in float32): the same formula in another operation order or in float64
#: differs by ~1e-3. Every classic mistake is off by O(1), so this looser bound still separates them.
W_RTOL, W_MAX_TOL = 3e-3, 1e-2


def _plugged_time_embedding(fn, unet, x, t, prompt_embeds, guidance_scale):
    """The UNet's forward with its time embedding computed by the student's function."""
    _require(fn, "lcm_time_embedding")
    module = unet.time_embedding
    unet.time_embedding.forward = lambda sample, condition=None: _emb_of(fn(module, sample, guidance_scale))
    try:
        with _one_thread():
            return unet(x, t, encoder_hidden_states=prompt_embeds).sample
    finally:
        del unet.time_embedding.forward


def _emb_of(result):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise SubmissionError(f"lcm_time_embedding: return a tuple (w_embedding, emb); got {type(result).__name__}.")
    return result[1]


def _random_time_embedding(ctx: Context, c0: int, cond_dim: int, offset: int):
    from diffusers.models.embeddings import TimestepEmbedding

    m = TimestepEmbedding(c0, 4 * c0, cond_proj_dim=cond_dim)
    reinitialise_(m, (ctx.seed + offset) % 10_000)
    return m.to(ctx.device).eval()


def _time_embedding_features(t: torch.Tensor, c0: int) -> torch.Tensor:
    """SD1.5's Timesteps(c0, flip_sin_to_cos=True, downscale_freq_shift=0): an input, not the graded part."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(t, c0, flip_sin_to_cos=True, downscale_freq_shift=0)


def _time_cases(ctx: Context):
    if ctx.hidden:
        real = ctx.weights("lcm_time_embedding")
        modules = [(real, torch.tensor([8.5, 1.0, 3.0, 15.0])), (_random_time_embedding(ctx, 12, 7, 1), None),
                   (_random_time_embedding(ctx, 10, 32, 2), torch.tensor([1.2, 6.0]))]
    else:
        modules = [(ctx.weights("lcm_time_embedding", standin=True), torch.tensor([8.5, 1.0])),
                   (_random_time_embedding(ctx, 8, 5, 1), torch.tensor([2.0, 4.5, 7.0]))]
    for i, (m, gs) in enumerate(modules):
        if gs is None:
            gs = 1 + 14 * ctx.rand(3, offset=100 + i).cpu()
        B = gs.shape[0]
        t = ctx.randint(0, 1000, (B,), offset=110 + i)
        feats = _time_embedding_features(t, m.linear_1.in_features).to(ctx.device)
        yield Case(f"time_cond_proj_dim {m.cond_proj.in_features}, width {m.linear_1.in_features}, "
                   f"guidance_scale {[round(v, 3) for v in gs.tolist()]}", (m, feats, gs.to(ctx.device)))
    unet = ctx.weights("lcm_unet", standin=True)
    B = 2 if ctx.hidden else 1
    gs = torch.tensor([8.5, 2.0][:B], device=ctx.device)
    x = ctx.randn(B, 4, 8, 8, offset=120)
    t = ctx.randint(0, 1000, (B,), offset=121)
    pe = ctx.randn(B, 5, unet.config.cross_attention_dim, offset=122)
    yield Case(f"inside the stand-in UNet: x {tuple(x.shape)}, t {t.tolist()}, guidance_scale {gs.tolist()}",
               (unet, x, t, pe, gs), invoke=_plugged_time_embedding)


def _time_judge(case: Case, got) -> None:
    if case.invoke is not None:
        unet, x, t, pe, gs = case.args
        w = ref.guidance_features(gs, unet.config.time_cond_proj_dim).to(x.device)
        with torch.no_grad(), _one_thread():
            expected = unet(x, t, encoder_hidden_states=pe, timestep_cond=w).sample
        assert_close(got, expected, name=f"lcm_time_embedding {case.label}", rtol=W_RTOL, max_tol=W_MAX_TOL)
        return
    m, feats, gs = case.args
    w_got, emb_got = _pair(got, "lcm_time_embedding", case.label, "(w_embedding, emb)")
    w_exp, emb_exp = ref.lcm_time_embedding(m, feats, gs)
    dim = m.cond_proj.in_features
    half = dim // 2
    raw = ref.guidance_features(gs + 1, dim)   # w = guidance_scale (the "- 1" left out)
    cos_first = torch.cat([w_exp[:, half:2 * half], w_exp[:, :half], w_exp[:, 2 * half:]], dim=1)
    assert_close(w_got, w_exp, name=f"lcm_time_embedding w_embedding with {case.label}", rtol=W_RTOL,
                 max_tol=W_MAX_TOL, variants={
        "w = guidance_scale instead of guidance_scale - 1 (diffusers' CFG convention)": raw.to(w_exp.device),
        "w not multiplied by 1000": lambda: ref.guidance_features(1 + (gs - 1) / 1000, dim).to(w_exp.device),
        "[cos | sin] instead of [sin | cos]": cos_first,
        "frequencies exp(-ln(10000) i / half) (denominator half instead of half - 1)": lambda: _shift0(gs, dim),
    })
    assert_close(emb_got, emb_exp, name=f"lcm_time_embedding emb with {case.label}", rtol=W_RTOL,
                 max_tol=W_MAX_TOL, variants={
        "the w-embedding left out (cond_proj unused)": lambda: _emb_without_cond(m, feats),
        "w = guidance_scale instead of guidance_scale - 1": lambda: ref.lcm_time_embedding(m, feats, gs + 1)[1],
    })


def _shift0(gs, dim):
    import math

    w = (gs.double() - 1) * 1000
    half = dim // 2
    ang = w[:, None] * torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=w.device) / half)
    emb = torch.cat([ang.sin(), ang.cos()], 1)
    return torch.nn.functional.pad(emb, (0, dim % 2)).float()


def _emb_without_cond(m, feats):
    import torch.nn.functional as F

    h = F.silu(F.linear(feats, m.linear_1.weight, m.linear_1.bias))
    return F.linear(h, m.linear_2.weight, m.linear_2.bias)


# ---------------------------------------------------------------- 5. fusing LoRA deltas
def lora_state_dict_for(unet, ranks, generator: torch.Generator, device) -> dict:
    """A random LoRA in diffusers/PEFT naming for every LCM-LoRA target of ``unet``; rank cycles through ``ranks``."""
    sd, i = {}, 0
    for name, module in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in LORA_TARGETS):
            continue
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        r = ranks[i % len(ranks)]
        i += 1
        if isinstance(module, torch.nn.Linear):
            down = torch.randn(r, module.in_features, generator=generator)
            up = torch.randn(module.out_features, r, generator=generator)
        else:
            down = torch.randn(r, module.in_channels, *module.kernel_size, generator=generator)
            up = torch.randn(module.out_channels, r, 1, 1, generator=generator)
        sd[f"{name}.lora_A.weight"] = (0.3 * down).to(device)
        sd[f"{name}.lora_B.weight"] = (0.3 * up).to(device)
    return sd


def _lora_names(state_dict: dict) -> list[str]:
    """The modules a PEFT-named LoRA state dict patches (inputs bookkeeping, not the graded merge)."""
    return sorted({k[: -len(".lora_A.weight")] for k in state_dict if k.endswith(".lora_A.weight")})


@_single_threaded
def _lora_invoke(fn, unet, state_dict, network_alpha, lora_scale, x, t, pe, w):
    _require(fn, "fuse_lora")
    out = fn(unet, {k: v.clone() for k, v in state_dict.items()}, network_alpha, lora_scale)
    fused = out if isinstance(out, torch.nn.Module) else unet
    weights = {name: fused.get_submodule(name).weight.detach().clone() for name in _lora_names(state_dict)}
    with torch.no_grad(), _one_thread():
        sample = fused(x, t, encoder_hidden_states=pe, timestep_cond=w).sample
    return {"weights": weights, "sample": sample}


def _other_unet(ctx: Context):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(6, 12, 12), layers_per_block=1, cross_attention_dim=10, attention_head_dim=3,
        norm_num_groups=3, in_channels=4, out_channels=4, sample_size=8, time_cond_proj_dim=None,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    reinitialise_(unet, ctx.seed % 10_000)
    return unet.to(ctx.device).eval()


def _lora_cases(ctx: Context):
    standin = ctx.weights("lcm_unet", standin=True)
    if ctx.hidden:
        configs = [(standin, (4, 1, 8), 8.0, 1.0, 2), (_other_unet(ctx), (3,), 1.0, 0.6, 3),
                   (standin, (2, 5), 5.0, 1.7, 1)]
    else:
        configs = [(standin, (2, 3), 4.0, 0.7, 1)]
    for i, (unet, ranks, alpha, scale, B) in enumerate(configs):
        sd = lora_state_dict_for(unet, ranks, ctx.generator(200 + i), ctx.device)
        cond = unet.config.time_cond_proj_dim
        x = ctx.randn(B, 4, 8, 8, offset=210 + i)
        t = ctx.randint(0, 1000, (B,), offset=220 + i)
        pe = ctx.randn(B, 5, unet.config.cross_attention_dim, offset=230 + i)
        w = ctx.randn(B, cond, offset=240 + i) if cond else None
        n = len(_lora_names(sd))
        yield Case(f"UNet {tuple(unet.config.block_out_channels)}, {n} LoRA targets, ranks {ranks}, "
                   f"network_alpha {alpha}, lora_scale {scale}", (unet, sd, alpha, scale, x, t, pe, w),
                   invoke=_lora_invoke)


@_single_threaded
def _lora_judge(case: Case, got) -> None:
    import copy

    unet, sd, alpha, scale, x, t, pe, w = case.args
    name = "fuse_lora"
    if not isinstance(got, dict) or "weights" not in got or "sample" not in got:
        raise ComparisonError(f"{name} ({case.label}): the fused UNet could not be read back.")
    expected = ref.fused_weights(unet, sd, alpha, scale)
    weights = got["weights"]
    if not isinstance(weights, dict) or set(weights) != set(expected):
        raise ComparisonError(f"{name} ({case.label}): the fused UNet does not have the LoRA target modules.")
    for mod, e in expected.items():
        base = unet.get_submodule(mod).weight.detach()
        down, up = sd[mod + ".lora_A.weight"], sd[mod + ".lora_B.weight"]
        r = down.shape[0]
        first_r = sd[ref.lora_targets(sd)[0] + ".lora_A.weight"].shape[0]
        assert_close(weights[mod], e, name=f"{name}: weight of {mod} ({type(unet.get_submodule(mod)).__name__}, "
                                            f"rank {r}) on {case.label}", variants={
            "this module left unchanged (no LoRA delta added)": base,
            "the alpha / rank factor left out": lambda: base + ref.lora_delta(base.shape, down, up, scale).float(),
            "lora_scale left out": lambda: base + ref.lora_delta(base.shape, down, up, alpha / r).float(),
            "rank / alpha instead of alpha / rank": lambda: base + ref.lora_delta(base.shape, down, up,
                                                                                  scale * r / alpha).float(),
            "one rank (the first module's) for every module": lambda: base + ref.lora_delta(
                base.shape, down, up, scale * alpha / first_r).float() if first_r != r else None,
        })
    fused = ref.fuse_lora(copy.deepcopy(unet), sd, alpha, scale)
    with torch.no_grad(), _one_thread():
        sample = fused(x, t, encoder_hidden_states=pe, timestep_cond=w).sample
    assert_close(got["sample"], sample, name=f"{name}: the fused UNet's output on {case.label}")


# ---------------------------------------------------------------- 6. the ADD objective
def _add_cases(ctx: Context):
    if ctx.hidden:
        configs = [(4, (16, 4, 9), (4, 6, 10), 2.5), (1, (5,), (4, 3, 3), 1.0), (3, (8, 8), (3, 5, 2), 0.3)]
    else:
        configs = [(2, (4, 9), (4, 3, 3), 2.5)]
    alphas = _betas("scaled_linear")
    for i, (B, tokens, shape, lam) in enumerate(configs):
        real = [ctx.randn(B, n, offset=300 + 10 * i + k, scale=1.5) + 0.3 for k, n in enumerate(tokens)]
        fake = [ctx.randn(B, n, offset=350 + 10 * i + k, scale=1.5) - 0.3 for k, n in enumerate(tokens)]
        xs = ctx.randn(B, *shape, offset=400 + i)
        xt = xs + ctx.randn(B, *shape, offset=410 + i, scale=0.5)
        t = ctx.randint(0, 1000, (B,), offset=420 + i)
        c_t = alphas[t.cpu()].to(ctx.device)   # c(t) = ᾱ_t, one of the weightings the paper compares
        yield Case(f"batch {B}, {len(tokens)} discriminator heads with {list(tokens)} tokens, x0 {(B,) + shape}, "
                   f"lambda {lam}", (real, fake, xs, xt, c_t, lam))


def _add_judge(case: Case, got) -> None:
    import torch.nn.functional as F

    real, fake, xs, xt, c_t, lam = case.args
    loss_g, loss_d = _pair(got, "add_losses", case.label, "(loss_G, loss_D)")
    e_g, e_d = ref.add_losses(*case.args)
    e_g, e_d = e_g.to(xs.device), e_d.to(xs.device)
    dist = ((xs - xt) ** 2).flatten(1).sum(1)
    adv = -sum(f.mean() for f in fake)
    H = len(fake)
    for got_, exp_, n_ in ((loss_g, e_g, "loss_G"), (loss_d, e_d, "loss_D")):
        if isinstance(got_, torch.Tensor) and got_.numel() == 1 and got_.ndim > 0:
            raise ComparisonError(f"add_losses {n_} on {case.label}: return a 0-d tensor (shape ()), "
                                  f"got shape {tuple(got_.shape)}.")
    assert_close(loss_d, e_d, name=f"add_losses loss_D on {case.label}", variants={
        "the hinge signs swapped (real pushed down, fake pushed up)":
            sum(F.relu(1 + r).mean() + F.relu(1 - f).mean() for r, f in zip(real, fake)),
        "no relu (a linear critic loss instead of the hinge)": sum((1 - r).mean() + (1 + f).mean() for r, f in zip(real, fake)),
        "the heads averaged instead of summed": e_d / H if H > 1 else None,
    })
    assert_close(loss_g, e_g, name=f"add_losses loss_G on {case.label}", variants={
        "the distillation term without its weighting c(t)": adv + lam * dist.mean(),
        "the squared distance averaged over elements instead of summed": adv + lam * (c_t * dist).mean() / xs[0].numel(),
        "lambda on the adversarial term instead of the distillation term": lam * adv + (c_t * dist).mean(),
        "a hinge for the generator (relu(1 - D(fake))) instead of -D(fake)":
            sum(F.relu(1 - f).mean() for f in fake) + lam * (c_t * dist).mean(),
        "the adversarial term with the wrong sign": -adv + lam * (c_t * dist).mean(),
    })


EXERCISES = exercises(
    Exercise("lcm_scalings", 2, _scalings_cases, _scalings_judge, FORBID_SCALINGS),
    Exercise("lcm_timesteps", 2, _timesteps_cases, _timesteps_judge, FORBID_TIMESTEPS),
    Exercise("lcm_step", 3, _step_cases, _step_judge, FORBID_STEP),
    Exercise("lcm_time_embedding", 2, _time_cases, _time_judge, FORBID_TIME),
    Exercise("fuse_lora", 3, _lora_cases, _lora_judge, FORBID_LORA),
    Exercise("add_losses", 2, _add_cases, _add_judge),
)
