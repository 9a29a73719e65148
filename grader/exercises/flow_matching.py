"""Lesson 5 (Flow Matching): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here) and ``judge`` (reference + comparison; trusted side only). Public checks:
fixed small inputs on the CPU that reach every code path the hidden tests grade (static and
dynamic shift, custom sigmas, another VAE factor and other mu anchors, every weighting and
density scheme), with other values. Hidden tests: the grader's seed, shapes the public checks
do not use (batch > 1, token-shaped and 2-D inputs, a last axis as long as the batch so that a
per-sample sigma broadcast along the wrong axis shows), other shifts, mu's, VAE factors,
anchors, resolutions and step counts, and the GPU when there is one. No pretrained weights:
the references are diffusers' FlowMatchEulerDiscreteScheduler, its training utilities and the
SD3/Flux pipeline and training-script code.
"""

from __future__ import annotations

import math
import numbers
import sys

import numpy as np
import torch

from ..compare import ComparisonError, assert_close
from ..reference import flow_matching as ref
from . import Case, Context, Exercise, exercises

LESSON = "05_flow_matching"

_S = "diffusers.schedulers.scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteScheduler"
_SCHEDULER = (f"{_S}.__init__", f"{_S}.set_timesteps", f"{_S}.time_shift", f"{_S}.scale_noise", f"{_S}.step")
FORBID_INTERPOLATE = (f"{_S}.scale_noise",)
FORBID_LOSS = ("diffusers.training_utils.compute_loss_weighting_for_sd3",)
FORBID_DENSITY = ("diffusers.training_utils.compute_density_for_timestep_sampling",)
_PIPELINES_WITH_CALCULATE_SHIFT = ("diffusers.pipelines.flux.pipeline_flux",
                                   "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3")


class _ImportedCalculateShift(tuple):
    """The pipelines' ``calculate_shift`` copies to block, decided when the check runs.

    Importing a pipeline module pulls in transformers' image processors, which log to
    stderr: only the copies a submission has already imported are blocked.
    """

    def __iter__(self):
        return iter(tuple(f"{m}.calculate_shift" for m in _PIPELINES_WITH_CALCULATE_SHIFT if m in sys.modules))


FORBID_MU = _ImportedCalculateShift()


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


def _last_axis(sigma: torch.Tensor, like: torch.Tensor):
    """sigma broadcast along the last axis (the classic mistake), where the shapes allow it."""
    return sigma if like.shape[-1] == sigma.shape[0] else None


#: Low-precision cases (bf16/fp16 latents, as in real SD3/Flux runs): the reference rounds at other
#: places than a correct answer may (bf16 keeps 8 bits of mantissa), so compare to that precision.
LOW_RTOL = {torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _tol(t: torch.Tensor) -> dict:
    return dict(rtol=LOW_RTOL[t.dtype], max_tol=LOW_RTOL[t.dtype]) if t.dtype in LOW_RTOL else {}


def _sigmas(ctx: Context, n: int, offset: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=ctx.generator(offset))).to(ctx.device)


def _uniform(ctx: Context, offset: int, lo: float, hi: float, decimals: int = 3) -> float:
    """A setting drawn from the grading seed (rounded, so messages stay readable)."""
    return round(lo + (hi - lo) * torch.rand(1, generator=ctx.generator(offset)).item(), decimals)


def _randint(ctx: Context, offset: int, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=ctx.generator(offset)).item())


def _pair(got, name: str, label: str, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError(f"{name} ({label}): return a tuple of 2 tensors: {what}.")
    return got


# ---------------------------------------------------------------- 1. the straight path
def _interpolate_cases(ctx: Context):
    if ctx.hidden:
        # (3, 2, 5, 3): the last axis is as long as the batch; (4, 6, 8): packed tokens; (5, 2): 2-D points.
        configs = [((3, 2, 5, 3), _sigmas(ctx, 3, 1), torch.float32),
                   ((4, 6, 8), torch.tensor([1.0, 0.0, 0.37, 0.81]).to(ctx.device), torch.float32),
                   ((5, 2), _sigmas(ctx, 5, 2), torch.float32),
                   # bf16 latents with float32 sigmas, as SD3/Flux training runs: x_t stays bf16
                   ((3, 4, 6, 3), _sigmas(ctx, 3, 3), torch.bfloat16)]
    else:
        configs = [((2, 3, 4, 4), torch.tensor([0.25, 0.8]), torch.float32),
                   ((2, 3, 4, 2), torch.tensor([0.3, 0.9]), torch.bfloat16)]
    for i, (shape, sigma, dtype) in enumerate(configs):
        x0 = ctx.randn(*shape, offset=10 + i).to(dtype)
        noise = ctx.randn(*shape, offset=20 + i).to(dtype)
        kind = "" if dtype == torch.float32 else f" {str(dtype).split('.')[-1]} (sigma float32)"
        yield Case(f"x0 {shape}{kind}, sigma {[round(s, 3) for s in sigma.tolist()]}", (x0, noise, sigma))


def _interpolate_judge(case: Case, got) -> None:
    x0, noise, sigma = case.args
    x_t, target = ref.flow_interpolate(x0, noise, sigma)
    got = _pair(got, "flow_interpolate", case.label, "(x_t, target)")
    s = _per_sample(sigma, x0).to(x0.dtype)
    last = _last_axis(sigma, x0)
    assert_close(got[0], x_t, name=f"flow_interpolate x_t on {case.label}", **_tol(x0), variants={
        "sigma and 1 - sigma swapped (sigma weighs the data, 1 - sigma the noise)": s * x0 + (1 - s) * noise,
        "sigma broadcast along the last axis instead of one sigma per sample (reshape it to (B, 1, ..., 1))":
            None if last is None else (last.to(x0.dtype) * noise + (1 - last.to(x0.dtype)) * x0),
        "a variance-preserving (DDPM-style) path, sqrt(1 - sigma^2) * x0 + sigma * noise":
            (1 - s ** 2).sqrt() * x0 + s * noise,
    })
    assert_close(got[1], target, name=f"flow_interpolate target on {case.label}", **_tol(x0), variants={
        "the direction reversed, x0 - noise (diffusers' sigma runs from data at 0 to noise at 1, "
        "so d x_t / d sigma = noise - x0)": x0 - noise,
        "the noise alone (DDPM's epsilon target), not the velocity": noise,
        "the data alone (an x0 target), not the velocity": x0,
    })


# ---------------------------------------------------------------- 2. the loss
def _loss_cases(ctx: Context):
    if ctx.hidden:
        configs = [((3, 2, 5, 3), "sigma_sqrt"), ((4, 6, 8), "cosmap"), ((5, 3, 2, 2), "logit_normal"),
                   ((2, 4, 3, 2), "mode"), ((6, 2), "none"),
                   # a bf16 model's prediction, bf16 latents and sigmas (get_sigmas(dtype=model_input.dtype)):
                   # the script upcasts with .float(), so the loss is float32
                   ((3, 4, 2, 3), "cosmap", torch.bfloat16), ((2, 3, 4, 2), "none", torch.float16)]
    else:
        configs = [((2, 3, 4, 4), "sigma_sqrt"), ((2, 3, 4, 4), "cosmap"), ((2, 3, 4, 4), "logit_normal"),
                   ((2, 3, 2, 2), "sigma_sqrt", torch.bfloat16)]
    for i, (shape, scheme, *dtype) in enumerate(configs):
        dtype = dtype[0] if dtype else torch.float32
        x0 = ctx.randn(*shape, offset=10 + i)
        noise = ctx.randn(*shape, offset=20 + i)
        pred = ((noise - x0) + ctx.randn(*shape, offset=30 + i, scale=0.5)).to(dtype)
        x0, noise = x0.to(dtype), noise.to(dtype)
        sigma = _sigmas(ctx, shape[0], 40 + i, 0.1, 0.95) if ctx.hidden else torch.tensor([0.3, 0.9], device=ctx.device)
        sigma = sigma.to(dtype)
        kind = "" if dtype == torch.float32 else f" all {str(dtype).split('.')[-1]}"
        label = f"{scheme!r}, x0 {shape}{kind}, sigma {[round(s, 3) for s in sigma.float().tolist()]}"
        yield Case(label, (pred, x0, noise, sigma, scheme))


def _loss_judge(case: Case, got) -> None:
    pred, x0, noise, sigma, scheme = case.args
    B = x0.shape[0]
    expected = ref.flow_matching_loss(pred, x0, noise, sigma, scheme)
    s = _per_sample(sigma, x0)
    per = lambda e: e.reshape(B, -1).mean(1)  # noqa: E731
    variants = {"the target reversed (x0 - noise instead of noise - x0)":
                ref.flow_matching_loss(pred, noise, x0, sigma, scheme),
                "no loss weighting at all": per((pred - (noise - x0)) ** 2)}
    if scheme == "sigma_sqrt":
        variants["the weighting inverted (sigma ** 2 instead of sigma ** -2)"] = per(s ** 2 * (pred - (noise - x0)) ** 2)
        variants["a square-root weighting sqrt(sigma) (despite its name, sigma_sqrt is sigma ** -2.0 in "
                 "diffusers)"] = per(s.sqrt() * (pred - (noise - x0)) ** 2)
    if scheme == "cosmap":
        variants["cosmap without its 1/pi (2 / (1 - 2 sigma + 2 sigma^2))"] = \
            per(2 / (1 - 2 * s + 2 * s ** 2) * (pred - (noise - x0)) ** 2)
    assert_close(got, expected, name=f"flow_matching_loss with {case.label}", **_tol(x0), variants=variants)


# ---------------------------------------------------------------- 3. the timestep density
def _density_cases(ctx: Context):
    if ctx.hidden:
        configs = [("logit_normal", 9, _uniform(ctx, 1, -1, 1), _uniform(ctx, 2, 0.5, 2.0), 1.29),
                   ("mode", 7, 0.0, 1.0, _uniform(ctx, 3, 0.3, 1.5)), ("mode", 6, 0.0, 1.0, 1.29),
                   ("logit_normal", 5, -0.5, 0.6, 1.29), ("none", 4, 0.0, 1.0, 1.29), ("cosmap", 3, 0.0, 1.0, 1.29)]
    else:
        configs = [("logit_normal", 4, 0.0, 1.0, 1.29), ("logit_normal", 4, 0.3, 0.7, 1.29),
                   ("mode", 4, 0.0, 1.0, 1.29), ("mode", 3, 0.0, 1.0, 0.8), ("uniform", 3, 0.0, 1.0, 1.29),
                   ("cosmap", 3, 0.0, 1.0, 1.29)]
    for i, (scheme, B, mean, std, mode_scale) in enumerate(configs):
        # The draws compute_density_for_timestep_sampling makes with a generator seeded draw_seed:
        # standard normal for "logit_normal" (mean and std applied afterwards), uniform otherwise.
        draw_seed = (ctx.seed + 100 + i) % (2 ** 63)
        g = torch.Generator("cpu").manual_seed(draw_seed)
        draws = torch.normal(mean=0.0, std=1.0, size=(B,), generator=g) if scheme == "logit_normal" \
            else torch.rand(size=(B,), generator=g)
        label = f"{scheme!r}, logit_mean {mean}, logit_std {std}, mode_scale {mode_scale}, {B} draws"
        yield Case(label, (scheme, draws, mean, std, mode_scale), extra=dict(draw_seed=draw_seed))


def _density_judge(case: Case, got) -> None:
    scheme, u, mean, std, mode_scale = case.args
    expected = ref.timestep_density(scheme, u.shape[0], case.extra["draw_seed"], mean, std, mode_scale)
    variants = {}
    if scheme == "logit_normal":
        variants = {"the sigmoid left out (a normal sample is not in (0, 1))": mean + std * u,
                    "logit_mean and logit_std ignored": torch.sigmoid(u),
                    "logit_std used as a variance": torch.sigmoid(mean + std ** 2 * u)}
    elif scheme == "mode":
        variants = {"the leading 1 - left out of 1 - u - s(...)": u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u),
                    "cos instead of cos^2": 1 - u - mode_scale * (torch.cos(math.pi * u / 2) - 1 + u),
                    "mode_scale fixed at its default 1.29":
                        1 - u - 1.29 * (torch.cos(math.pi * u / 2) ** 2 - 1 + u) if mode_scale != 1.29 else None}
    elif scheme == "cosmap":
        variants = {"CosMap used as a sampling density: diffusers' compute_density_for_timestep_sampling "
                    "samples uniformly for every scheme but logit_normal and mode (cosmap is a loss weighting)":
                    1 - 1 / (torch.tan(math.pi * u / 2) + 1)}
    assert_close(got, expected, name=f"timestep_density with {case.label}", variants=variants, check_device=False)


# ---------------------------------------------------------------- 4. the static shift
def _shift_cases(ctx: Context):
    if ctx.hidden:
        configs = [(_sigmas(ctx, 11, 0, 0.001, 1.0), 3.0), (_sigmas(ctx, 6, 1, 0.01, 1.0), 0.5),
                   (torch.linspace(1.0, 0.05, 7).to(ctx.device), _uniform(ctx, 2, 1.2, 6.0))]
    else:
        configs = [(torch.linspace(1.0, 0.1, 5), 3.0)]
    for sigmas, shift in configs:
        yield Case(f"{sigmas.numel()} sigmas, shift {shift}", (sigmas, shift))


def _shift_judge(case: Case, got) -> None:
    sigmas, shift = case.args
    assert_close(got, ref.shift_sigmas(sigmas, shift), name=f"shift_sigmas with {case.label}", variants={
        "shift * sigma without the denominator 1 + (shift - 1) * sigma": shift * sigmas,
        "the shift inverted (1 / shift): the schedule moved toward the data, not the noise":
            ref.shift_sigmas(sigmas, 1.0 / shift),
    })


# ---------------------------------------------------------------- 5. training sigmas
def _training_cases(ctx: Context):
    if ctx.hidden:
        configs = [(_sigmas(ctx, 9, 0, 0.0, 0.9999), 1000, 3.0),
                   (_sigmas(ctx, 7, 1, 0.0, 0.9999), _randint(ctx, 2, 20, 200), _uniform(ctx, 3, 1.2, 4.0)),
                   (torch.tensor([0.0, 0.0005, 0.5, 0.9995]).to(ctx.device), 1000, 1.0)]
    else:
        configs = [(torch.tensor([0.0, 0.27, 0.5, 0.96]), 10, 3.0)]
    for u, N, shift in configs:
        yield Case(f"u {[round(x, 4) for x in u.tolist()]}, num_train_timesteps {N}, shift {shift}", (u, N, shift))


def _training_judge(case: Case, got) -> None:
    u, N, shift = case.args
    idx = (u * N).long()
    assert_close(got, ref.training_sigmas(u, N, shift), name=f"training_sigmas with {case.label}", variants={
        "sigma = u (the training table runs from sigma = 1 down: index i holds (N - i) / N)":
            ref.shift_sigmas(u.float(), shift),
        "no shift applied (the training scheduler's table is shifted too)": ((N - idx).float() / N),
        "u used continuously, without the index into the N-entry table": ref.shift_sigmas(1 - u, shift),
        "shift * sigma without the denominator (does your shift_sigmas pass its check?)":
            shift * ((N - idx).float() / N),
    }, check_device=False)


# ---------------------------------------------------------------- 6. Flux's resolution-dependent mu
#: mu's anchors (base_image_seq_len, max_image_seq_len, base_shift, max_shift) as scheduler configs set
#: them (the pipelines' fallbacks in diffusers 0.42): Flux/SD3's (256, 4096, 0.5, 1.15), LTX-2's
#: (1024, 4096, 0.95, 2.05), CogView4's shifts (0.25, 0.75), Krea2's longer max length 6400.
_FLUX_DEFAULTS = (8, 256, 4096, 0.5, 1.15)


def _mu_cases(ctx: Context):
    if ctx.hidden:
        H, W = _randint(ctx, 0, 200, 2100), _randint(ctx, 1, 200, 2100)
        configs = [(1000, 744), (1023, 1025), (H, W, 16),
                   (800, 1216, 8, 1024, 4096, 0.95, 2.05),
                   (_randint(ctx, 2, 300, 1800), _randint(ctx, 3, 300, 1800), 8, 256, 6400, 0.5, 1.15),
                   (1360, 776, 16, 256, 4096, 0.25, 0.75),
                   (_randint(ctx, 4, 100, 900), _randint(ctx, 5, 100, 900), 4, 256, _randint(ctx, 6, 2048, 8192),
                    _uniform(ctx, 7, 0.2, 0.7), _uniform(ctx, 8, 0.9, 2.0))]
    else:
        configs = [(512, 768), (300, 452, 4, 128, 2048, 0.4, 1.2)]
    for args in configs:
        label = f"{args[0]} x {args[1]} pixels" + (
            f", vae_scale_factor {args[2]}" if len(args) == 3 else
            f", (vae_scale_factor, base_seq_len, max_seq_len, base_shift, max_shift) = {args[2:]}" if len(args) > 3 else "")
        yield Case(label, args)


def _as_float(got, label: str) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        return float(got.reshape(-1)[0])
    if isinstance(got, np.ndarray) and got.size == 1:
        return float(got.reshape(-1)[0])
    if isinstance(got, numbers.Real) and not isinstance(got, bool):
        return float(got)
    kind = getattr(got, "course_type_name", type(got).__name__)
    raise ComparisonError(f"flux_mu for {label}: return mu as a Python float, not {kind}.")


def _mu_judge(case: Case, got) -> None:
    H, W = case.args[:2]
    full = tuple(case.args) + _FLUX_DEFAULTS[len(case.args) - 2:]
    vsf, rest = full[2], full[3:]
    value = torch.tensor([_as_float(got, case.label)], dtype=torch.float64)
    mu = ref.flux_mu(*full)
    expected = torch.tensor([mu], dtype=torch.float64)
    f64 = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    variants = {}
    if vsf != 8:   # first: with a factor of 16 it coincides with the unpacked length below
        variants[f"the VAE factor fixed at 8 (this case's vae_scale_factor is {vsf})"] = \
            f64(ref.flux_mu(H, W, 8, *rest))
    variants.update({
        "the unpacked latent's length (H/8)(W/8): Flux packs 2x2 latent patches into one token":
            f64(ref.calculate_shift((H // vsf) * (W // vsf), *rest)),
        "a fractional token count (H/16)(W/16) without the pipeline's floor division":
            f64(ref.calculate_shift((H / (2 * vsf)) * (W / (2 * vsf)), *rest)),
        "exp(mu), the equivalent static shift, instead of mu": f64(math.exp(mu)),
    })
    if rest != _FLUX_DEFAULTS[1:]:
        variants["Flux's default anchors (256, 4096, 0.5, 1.15) instead of the base_seq_len, max_seq_len, "
                 "base_shift and max_shift passed in"] = f64(ref.flux_mu(H, W, vsf))
    assert_close(value, expected, name=f"flux_mu for {case.label}", check_device=False, variants=variants)


# ---------------------------------------------------------------- 7. the inference schedule
def _schedule_cases(ctx: Context):
    if ctx.hidden:
        n3 = _randint(ctx, 1, 2, 30)
        configs = [dict(num_inference_steps=28, shift=3.0),
                   dict(num_inference_steps=_randint(ctx, 0, 3, 40), mu=_uniform(ctx, 2, 0.4, 1.6)),
                   # FluxPipeline: shift 3.0 in the scheduler config, dynamic shifting, sigmas linspace(1, 1/n, n).
                   dict(num_inference_steps=n3, shift=3.0, mu=_uniform(ctx, 3, 0.4, 1.6),
                        sigmas=np.linspace(1.0, 1 / n3, n3).tolist()),
                   dict(num_inference_steps=_randint(ctx, 4, 2, 50), shift=_uniform(ctx, 5, 1.2, 6.0)),
                   dict(num_inference_steps=_randint(ctx, 6, 3, 30), shift=_uniform(ctx, 7, 1.5, 6.0),
                        mu=_uniform(ctx, 8, 0.3, 2.0)),
                   dict(num_inference_steps=5, shift=1.0, num_train_timesteps=100),
                   dict(num_inference_steps=6, shift=_uniform(ctx, 9, 1.5, 4.0),
                        num_train_timesteps=_randint(ctx, 10, 50, 2000)),
                   dict(num_inference_steps=7, shift=3.0, mu=1.0, num_train_timesteps=200),
                   dict(num_inference_steps=4, shift=2.0, sigmas=[1.0, 0.8, 0.45, 0.2])]
    else:
        configs = [dict(num_inference_steps=4, shift=3.0),
                   dict(num_inference_steps=3, shift=2.5, mu=0.7, num_train_timesteps=500),
                   dict(num_inference_steps=3, shift=2.0, sigmas=[1.0, 0.6, 0.3]),
                   dict(num_inference_steps=4, shift=3.0, mu=1.1, sigmas=[1.0, 0.75, 0.5, 0.25]),
                   dict(num_inference_steps=5, shift=2.0, num_train_timesteps=100)]
    for kw in configs:
        label = ", ".join(f"{k}={[round(s, 3) for s in v] if isinstance(v, list) else v}" for k, v in kw.items())
        args = (kw["num_inference_steps"], kw.get("shift", 1.0), kw.get("mu"),
                None if kw.get("sigmas") is None else list(kw["sigmas"]), kw.get("num_train_timesteps", 1000))
        yield Case(label, args)


def _time_shift(mu: float, sigmas: torch.Tensor) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def _schedule_judge(case: Case, got) -> None:
    n, shift, mu, custom, N = case.args
    timesteps, sigmas = ref.flow_schedule(n, shift=shift, mu=mu, sigmas=custom, num_train_timesteps=N)
    label = case.label
    got_t, got_s = _pair(got, "flow_schedule", label, "(timesteps, sigmas)")
    # sigmas first: wrong sigmas make wrong timesteps, and the diagnosis is about sigmas
    if isinstance(got_s, torch.Tensor) and got_s.shape == (n,) and torch.allclose(got_s.cpu().float(), sigmas[:-1], rtol=1e-4):
        raise ComparisonError(f"flow_schedule ({label}): sigmas has {n} entries, expected {n + 1}: "
                              f"the terminal sigma 0 that the scheduler appends is missing.")
    # What set_timesteps starts from before shifting: the given sigmas, or its default linspace.
    base = torch.tensor(custom, dtype=torch.float32) if custom is not None else \
        ref.default_sigmas(n, shift=shift, dynamic=mu is not None, num_train_timesteps=N)
    zero = torch.zeros(1)
    variants = {}
    if mu is None and custom is None and shift != 1.0:
        variants["sigma_min = 1 / num_train_timesteps, unshifted (with a static shift, __init__ shifts the "
                 "training table first, so the scheduler's sigma_min is shift(1 / N))"] = torch.cat(
            [ref.shift_sigmas(ref.default_sigmas(n, shift=shift, dynamic=True, num_train_timesteps=N), shift), zero])
    if mu is None and shift != 1.0:
        variants["shift * sigma without the denominator 1 + (shift - 1) * sigma"] = torch.cat([shift * base, zero])
        variants["the shift inverted (1 / shift)"] = torch.cat([ref.shift_sigmas(base, 1.0 / shift), zero])
    if mu is not None:
        variants["a linear time shift mu / (mu + (1/sigma - 1)) instead of the exponential "
                 "exp(mu) / (exp(mu) + (1/sigma - 1))"] = torch.cat([mu / (mu + (1 / base - 1)), zero])
        variants["the static shift where mu is given (with dynamic shifting, set_timesteps applies only the "
                 "time shift with mu)"] = lambda: ref.flow_schedule(n, shift=shift, sigmas=custom, num_train_timesteps=N)[1]
        if shift != 1.0:
            variants["the static shift applied on top of mu's time shift (with dynamic shifting, set_timesteps "
                     "applies only the time shift: the config's shift is not used)"] = \
                torch.cat([ref.shift_sigmas(_time_shift(mu, base), shift), zero])
            if custom is None:
                variants["sigma_min shifted by the static shift although mu is given (with dynamic shifting, "
                         "__init__ leaves the training table unshifted: sigma_min = 1 / num_train_timesteps)"] = \
                    torch.cat([_time_shift(mu, ref.default_sigmas(n, shift=shift, dynamic=False,
                                                                  num_train_timesteps=N)), zero])
    if custom is not None:
        default = ref.default_sigmas(n, shift=shift, dynamic=mu is not None, num_train_timesteps=N)
        variants["the default linspace instead of the sigmas passed in"] = torch.cat(
            [_time_shift(mu, default) if mu is not None else ref.shift_sigmas(default, shift), zero])
    assert_close(got_s, sigmas, name=f"flow_schedule sigmas with {label}", check_device=False, variants=variants)
    assert_close(got_t, timesteps, name=f"flow_schedule timesteps with {label}", check_device=False, variants={
        "the sigmas themselves (timesteps are sigmas * num_train_timesteps)": timesteps / N,
    })


# ---------------------------------------------------------------- 8. one Euler step
def _euler_step_cases(ctx: Context):
    if ctx.hidden:
        configs = [((3, 2, 5, 3), _uniform(ctx, 50, 0.55, 1.0), _uniform(ctx, 51, 0.05, 0.5)), ((2, 9, 6), 0.3, 0.0),
                   ((4, 2), 1.0, 0.95),
                   # an fp16 pipeline: the scheduler upcasts the sample and casts the result back
                   ((2, 4, 3, 5), _uniform(ctx, 52, 0.55, 1.0), _uniform(ctx, 53, 0.05, 0.5), torch.float16)]
    else:
        configs = [((1, 4, 4, 4), 0.8, 0.6), ((2, 4, 2, 2), 0.5, 0.25, torch.float16)]
    for i, (shape, sigma, sigma_next, *dtype) in enumerate(configs):
        dtype = dtype[0] if dtype else torch.float32
        x = ctx.randn(*shape, offset=i).to(dtype)
        v = ctx.randn(*shape, offset=10 + i).to(dtype)
        kind = "" if dtype == torch.float32 else f" {str(dtype).split('.')[-1]}"
        yield Case(f"sample {shape}{kind}, sigma {sigma} -> {sigma_next}", (x, v, sigma, sigma_next))


def _euler_step_judge(case: Case, got) -> None:
    x, v, sigma, sigma_next = case.args
    assert_close(got, ref.euler_step(x, v, sigma, sigma_next), name=f"euler_step with {case.label}", **_tol(x), variants={
        "the step reversed, (sigma - sigma_next) * velocity: that walks back toward the noise":
            x + (sigma - sigma_next) * v,
        "the x0 prediction sample - sigma * velocity (a jump to sigma = 0) instead of one step":
            x - sigma * v,
        "only the increment (sigma_next - sigma) * velocity, without the sample": (sigma_next - sigma) * v,
    })


# ---------------------------------------------------------------- 9. the sampling loop
class _Velocity:
    """A fixed, nonlinear test field v(x, sigma); checks that sigma arrives as pipelines pass it."""

    def __init__(self, g: torch.Generator):
        self.a, self.b, self.c = (0.5 + torch.rand(3, generator=g)).tolist()

    def __call__(self, x, sigma):
        if not isinstance(sigma, torch.Tensor) or sigma.shape != (x.shape[0],):
            got = tuple(sigma.shape) if isinstance(sigma, torch.Tensor) else type(sigma).__name__
            raise TypeError(f"velocity_fn(x, sigma) takes sigma as a tensor of shape (B,) = ({x.shape[0]},), "
                            f"one per sample, as pipelines pass t.expand(B); got {got}")
        if sigma.device.type != x.device.type:
            raise TypeError(f"velocity_fn: sigma is on {sigma.device}, x on {x.device}: put sigma on x's device")
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return torch.tanh(self.a * x + self.b * x.roll(1, dims=-1)) * (0.5 + s) - self.c * s ** 2 * x


def _scheduler_sigmas(n: int, shift: float = 1.0, mu: float | None = None, sigmas=None) -> torch.Tensor:
    """The (n + 1,) sigmas a pipeline's scheduler walks (an input of the sampling loop)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=shift, use_dynamic_shifting=mu is not None)
    sched.set_timesteps(n, sigmas=sigmas, mu=mu)
    return sched.sigmas


def _sample_cases(ctx: Context):
    if ctx.hidden:
        n = _randint(ctx, 0, 3, 12)
        configs = [((3, 4, 5), _scheduler_sigmas(6, 3.0, mu=0.9, sigmas=np.linspace(1.0, 1 / 6, 6).tolist())),
                   ((2, 3, 4, 4), _scheduler_sigmas(10, 3.0)),
                   ((2, 16, 8), _scheduler_sigmas(n, 3.0, mu=_uniform(ctx, 1, 0.4, 1.6))),
                   ((5, 2), torch.tensor([1.0, 0.5, 0.0]))]
    else:
        configs = [((2, 2, 3, 3), _scheduler_sigmas(4, 3.0))]
    for i, (shape, sigmas) in enumerate(configs):
        noise = ctx.randn(*shape, offset=i)
        field = _Velocity(ctx.generator(100 + i))
        yield Case(f"noise {shape}, {len(sigmas) - 1} steps", (field, noise, sigmas))


def _sample_judge(case: Case, got) -> None:
    field, noise, sigmas = case.args
    dev, B = noise.device, noise.shape[0]

    def loop(at_next=False, scale=1.0, steps=None):
        x = noise
        for k in range(len(sigmas) - 1 if steps is None else steps):
            s = sigmas[k + 1 if at_next else k].to(dev).expand(B)
            x = x + (sigmas[k + 1] - sigmas[k]).item() * field(x, s * scale)
        return x
    assert_close(got, ref.euler_sample(field, noise, sigmas), name=f"euler_sample with {case.label}", variants={
        "the velocity evaluated at the next sigma instead of the current one": lambda: loop(at_next=True),
        "the model given timesteps (sigma * 1000) instead of sigmas: for this exercise's velocity_fn, "
        "pass sigma itself": lambda: loop(scale=1000.0),
        "the last step (to sigma = 0) left out": lambda: loop(steps=len(sigmas) - 2),
    })


EXERCISES = exercises(
    Exercise("flow_interpolate", 2, _interpolate_cases, _interpolate_judge, FORBID_INTERPOLATE),
    Exercise("flow_matching_loss", 2, _loss_cases, _loss_judge, FORBID_LOSS),
    Exercise("timestep_density", 2, _density_cases, _density_judge, FORBID_DENSITY),
    Exercise("shift_sigmas", 1, _shift_cases, _shift_judge, _SCHEDULER),
    Exercise("training_sigmas", 1, _training_cases, _training_judge, _SCHEDULER),
    Exercise("flux_mu", 2, _mu_cases, _mu_judge, FORBID_MU),
    Exercise("flow_schedule", 3, _schedule_cases, _schedule_judge, _SCHEDULER),
    Exercise("euler_step", 1, _euler_step_cases, _euler_step_judge, _SCHEDULER),
    Exercise("euler_sample", 2, _sample_cases, _sample_judge, _SCHEDULER),
)
