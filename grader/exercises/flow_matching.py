"""Lesson 5 (Flow Matching): public checks and hidden tests for every exercise.

Public checks: fixed small inputs on the CPU. Hidden tests: a seed drawn at grading time,
shapes the public checks do not use (batch > 1, token-shaped and 2-D inputs, a last axis
as long as the batch so that a per-sample sigma broadcast along the wrong axis shows),
other shifts, resolutions and step counts, and the GPU when there is one. No pretrained
weights: the references are diffusers' FlowMatchEulerDiscreteScheduler, its training
utilities and the SD3/Flux pipeline and training-script code.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from ..compare import ComparisonError, assert_close
from ..exercise import call
from ..reference import flow_matching as ref
from ..runtime import generator, randn
from . import build, device_for, seed_for

LESSON = "05_flow_matching"

_S = "diffusers.schedulers.scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteScheduler"
_SCHEDULER = (f"{_S}.__init__", f"{_S}.set_timesteps", f"{_S}.time_shift", f"{_S}.scale_noise", f"{_S}.step")
FORBID_INTERPOLATE = (f"{_S}.scale_noise",)
FORBID_LOSS = ("diffusers.training_utils.compute_loss_weighting_for_sd3",)
FORBID_DENSITY = ("diffusers.training_utils.compute_density_for_timestep_sampling",)
_PIPELINES_WITH_CALCULATE_SHIFT = ("diffusers.pipelines.flux.pipeline_flux",
                                   "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3")


def _forbid_calculate_shift() -> tuple[str, ...]:
    # Importing a pipeline module pulls in transformers' image processors, which log to
    # stderr: only block the copies of calculate_shift a submission has already imported.
    return tuple(f"{m}.calculate_shift" for m in _PIPELINES_WITH_CALCULATE_SHIFT if m in sys.modules)


def _passed(name: str, n: int, hidden: bool = False) -> str:
    kind = "hidden tests" if hidden else "public checks"
    return f"{name}: {n} {kind} passed [no pretrained weights needed: diffusers' scheduler and training utilities]"


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


def _last_axis(sigma: torch.Tensor, like: torch.Tensor):
    """sigma broadcast along the last axis (the classic mistake), where the shapes allow it."""
    return sigma if like.shape[-1] == sigma.shape[0] else None


def _sigmas(n: int, seed: int, dev, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=generator(seed))).to(dev)


def _uniform(seed: int, lo: float, hi: float, decimals: int = 3) -> float:
    """A setting drawn from the grading seed (rounded, so messages stay readable)."""
    return round(lo + (hi - lo) * torch.rand(1, generator=generator(seed)).item(), decimals)


def _randint(seed: int, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=generator(seed)).item())


def _pair(got, name: str, label: str, what: str):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError(f"{name} ({label}): return a tuple of 2 tensors: {what}.")
    return got


# ---------------------------------------------------------------- 1. the straight path
def _check_interpolate(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        # (3, 2, 5, 3): the last axis is as long as the batch; (4, 6, 8): packed tokens; (5, 2): 2-D points.
        cases = [((3, 2, 5, 3), _sigmas(3, seed + 1, dev)),
                 ((4, 6, 8), torch.tensor([1.0, 0.0, 0.37, 0.81]).to(dev)),
                 ((5, 2), _sigmas(5, seed + 2, dev))]
    else:
        cases = [((2, 3, 4, 4), torch.tensor([0.25, 0.8]))]
    for i, (shape, sigma) in enumerate(cases):
        x0 = randn(*shape, seed=seed + 10 + i, dev=dev)
        noise = randn(*shape, seed=seed + 20 + i, dev=dev)
        x_t, target = ref.flow_interpolate(x0, noise, sigma)
        label = f"x0 {shape}, sigma {[round(s, 3) for s in sigma.tolist()]}"
        got = _pair(call(fn, "flow_interpolate", x0, noise, sigma, forbidden=FORBID_INTERPOLATE, case=label),
                    "flow_interpolate", label, "(x_t, target)")
        s = _per_sample(sigma, x0)
        last = _last_axis(sigma, x0)
        assert_close(got[0], x_t, name=f"flow_interpolate x_t on {label}", variants={
            "sigma and 1 - sigma swapped (sigma weighs the data, 1 - sigma the noise)": s * x0 + (1 - s) * noise,
            "sigma broadcast along the last axis instead of one sigma per sample (reshape it to (B, 1, ..., 1))":
                None if last is None else last * noise + (1 - last) * x0,
            "a variance-preserving (DDPM-style) path, sqrt(1 - sigma^2) * x0 + sigma * noise":
                (1 - s ** 2).sqrt() * x0 + s * noise,
        })
        assert_close(got[1], target, name=f"flow_interpolate target on {label}", variants={
            "the direction reversed, x0 - noise (diffusers' sigma runs from data at 0 to noise at 1, "
            "so d x_t / d sigma = noise - x0)": x0 - noise,
            "the noise alone (DDPM's epsilon target), not the velocity": noise,
            "the data alone (an x0 target), not the velocity": x0,
        })
    return _passed("flow_interpolate", len(cases), hidden)


# ---------------------------------------------------------------- 2. the loss
def _check_loss(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [((3, 2, 5, 3), "sigma_sqrt"), ((4, 6, 8), "cosmap"), ((5, 3, 2, 2), "logit_normal"),
                 ((2, 4, 3, 2), "mode"), ((6, 2), "none")]
    else:
        cases = [((2, 3, 4, 4), "sigma_sqrt"), ((2, 3, 4, 4), "logit_normal")]
    for i, (shape, scheme) in enumerate(cases):
        B = shape[0]
        x0 = randn(*shape, seed=seed + 10 + i, dev=dev)
        noise = randn(*shape, seed=seed + 20 + i, dev=dev)
        pred = (noise - x0) + randn(*shape, seed=seed + 30 + i, dev=dev, scale=0.5)
        sigma = _sigmas(B, seed + 40 + i, dev, 0.1, 0.95) if hidden else torch.tensor([0.3, 0.9])
        expected = ref.flow_matching_loss(pred, x0, noise, sigma, scheme)
        label = f"{scheme!r}, x0 {shape}, sigma {[round(s, 3) for s in sigma.tolist()]}"
        got = call(fn, "flow_matching_loss", pred, x0, noise, sigma, scheme, forbidden=FORBID_LOSS, case=label)
        s = _per_sample(sigma, x0)
        per = lambda e: e.reshape(B, -1).mean(1)  # noqa: E731
        variants = {"the target reversed (x0 - noise instead of noise - x0)":
                    ref.flow_matching_loss(pred, noise, x0, sigma, scheme),
                    "no loss weighting at all": per((pred - (noise - x0)) ** 2)}
        if scheme == "sigma_sqrt":
            variants["the weighting inverted (sigma ** 2 instead of sigma ** -2)"] = per(s ** 2 * (pred - (noise - x0)) ** 2)
            variants["a square-root weighting sqrt(sigma) (despite its name, sigma_sqrt is sigma ** -2.0 in "
                     "diffusers)"] = per(s.sqrt() * (pred - (noise - x0)) ** 2)
        assert_close(got, expected, name=f"flow_matching_loss with {label}", variants=variants)
    return _passed("flow_matching_loss", len(cases), hidden)


# ---------------------------------------------------------------- 3. the timestep density
def _check_density(fn, hidden: bool) -> str:
    seed = seed_for(hidden)
    if hidden:
        cases = [("logit_normal", 9, _uniform(seed + 1, -1, 1), _uniform(seed + 2, 0.5, 2.0), 1.29),
                 ("mode", 7, 0.0, 1.0, _uniform(seed + 3, 0.3, 1.5)), ("mode", 6, 0.0, 1.0, 1.29),
                 ("logit_normal", 5, -0.5, 0.6, 1.29), ("none", 4, 0.0, 1.0, 1.29), ("cosmap", 3, 0.0, 1.0, 1.29)]
    else:
        cases = [("logit_normal", 4, 0.0, 1.0, 1.29), ("mode", 4, 0.0, 1.0, 1.29), ("uniform", 3, 0.0, 1.0, 1.29)]
    for i, (scheme, B, mean, std, mode_scale) in enumerate(cases):
        draws = ref.draws(scheme, B, seed + i)
        expected = ref.timestep_density(scheme, B, seed + i, mean, std, mode_scale)
        label = f"{scheme!r}, logit_mean {mean}, logit_std {std}, mode_scale {mode_scale}, {B} draws"
        got = call(fn, "timestep_density", scheme, draws, mean, std, mode_scale, forbidden=FORBID_DENSITY, case=label)
        u = draws
        variants = {}
        if scheme == "logit_normal":
            variants = {"the sigmoid left out (a normal sample is not in (0, 1))": mean + std * u,
                        "logit_mean and logit_std ignored": torch.sigmoid(u),
                        "logit_std used as a variance": torch.sigmoid(mean + std ** 2 * u)}
        elif scheme == "mode":
            variants = {"the leading 1 - left out of 1 - u - s(...)": u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u),
                        "cos instead of cos^2": 1 - u - mode_scale * (torch.cos(math.pi * u / 2) - 1 + u)}
        assert_close(got, expected, name=f"timestep_density with {label}", variants=variants, check_device=False)
    return _passed("timestep_density", len(cases), hidden)


# ---------------------------------------------------------------- 4. the static shift
def _check_shift(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [(_sigmas(11, seed, dev, 0.001, 1.0), 3.0), (_sigmas(6, seed + 1, dev, 0.01, 1.0), 0.5),
                 (torch.linspace(1.0, 0.05, 7).to(dev), _uniform(seed + 2, 1.2, 6.0))]
    else:
        cases = [(torch.linspace(1.0, 0.1, 5), 3.0)]
    for sigmas, shift in cases:
        expected = ref.shift_sigmas(sigmas, shift)
        label = f"{sigmas.numel()} sigmas, shift {shift}"
        got = call(fn, "shift_sigmas", sigmas, shift, forbidden=_SCHEDULER, case=label)
        assert_close(got, expected, name=f"shift_sigmas with {label}", variants={
            "shift * sigma without the denominator 1 + (shift - 1) * sigma": shift * sigmas,
            "the shift inverted (1 / shift): the schedule moved toward the data, not the noise":
                ref.shift_sigmas(sigmas, 1.0 / shift),
        })
    return _passed("shift_sigmas", len(cases), hidden)


# ---------------------------------------------------------------- 5. training sigmas
def _check_training_sigmas(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [(_sigmas(9, seed, dev, 0.0, 0.9999), 1000, 3.0),
                 (_sigmas(7, seed + 1, dev, 0.0, 0.9999), _randint(seed + 2, 20, 200), _uniform(seed + 3, 1.2, 4.0)),
                 (torch.tensor([0.0, 0.0005, 0.5, 0.9995]).to(dev), 1000, 1.0)]
    else:
        cases = [(torch.tensor([0.0, 0.25, 0.5, 0.93]), 10, 3.0)]
    for u, N, shift in cases:
        expected = ref.training_sigmas(u, N, shift)
        label = f"u {[round(x, 4) for x in u.tolist()]}, num_train_timesteps {N}, shift {shift}"
        got = call(fn, "training_sigmas", u, N, shift, forbidden=_SCHEDULER, case=label)
        idx = (u * N).long()
        assert_close(got, expected, name=f"training_sigmas with {label}", variants={
            "sigma = u (the training table runs from sigma = 1 down: index i holds (N - i) / N)":
                ref.shift_sigmas(u.float(), shift),
            "no shift applied (the training scheduler's table is shifted too)": ((N - idx).float() / N),
            "u used continuously, without the index into the N-entry table": ref.shift_sigmas(1 - u, shift),
            "shift * sigma without the denominator (does your shift_sigmas pass its check?)":
                shift * ((N - idx).float() / N),
        }, check_device=False)
    return _passed("training_sigmas", len(cases), hidden)


# ---------------------------------------------------------------- 6. Flux's resolution-dependent mu
def _as_float_tensor(fn):
    """Run the submission and turn the float it returns into a float64 tensor (a recordable output)."""
    if fn is None or not callable(fn):
        return fn  # call() reports "not defined" / "expected a function"

    def wrapped(*args):
        value = fn(*args)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"return mu as a Python float, not {type(value).__name__}")
        return torch.tensor([float(value)], dtype=torch.float64)
    wrapped.__name__ = getattr(fn, "__name__", "flux_mu")
    return wrapped


def _check_flux_mu(fn, hidden: bool) -> str:
    seed = seed_for(hidden)
    if hidden:
        cases = [(1000, 744), (_randint(seed, 200, 2100), _randint(seed + 1, 200, 2100)), (256, 256), (1023, 1025),
                 (800, 1216, 8, 1024, 4096, 0.95, 2.05)]
    else:
        cases = [(512, 768)]
    for args in cases:
        expected = torch.tensor([ref.flux_mu(*args)], dtype=torch.float64)
        H, W = args[:2]
        label = f"{H} x {W} pixels" + (f", settings {args[2:]}" if len(args) > 2 else "")
        got = call(_as_float_tensor(fn), "flux_mu", *args, forbidden=_forbid_calculate_shift(), case=label)
        vsf = args[2] if len(args) > 2 else 8
        rest = args[3:]
        unpacked = (H // vsf) * (W // vsf)
        assert_close(got, expected, name=f"flux_mu for {label}", check_device=False, variants={
            "the unpacked latent's length (H/8)(W/8): Flux packs 2x2 latent patches into one token":
                torch.tensor([ref.calculate_shift(unpacked, *rest)], dtype=torch.float64),
            "a fractional token count (H/16)(W/16) without the pipeline's floor division":
                torch.tensor([ref.calculate_shift((H / (2 * vsf)) * (W / (2 * vsf)), *rest)], dtype=torch.float64),
            "exp(mu), the equivalent static shift, instead of mu":
                torch.tensor([math.exp(ref.flux_mu(*args))], dtype=torch.float64),
        })
    return _passed("flux_mu", len(cases), hidden)


# ---------------------------------------------------------------- 7. the inference schedule
def _check_schedule(fn, hidden: bool) -> str:
    seed = seed_for(hidden)
    if hidden:
        n2, n3 = _randint(seed, 3, 40), _randint(seed + 1, 2, 30)
        cases = [dict(num_inference_steps=28, shift=3.0),
                 dict(num_inference_steps=n2, mu=_uniform(seed + 2, 0.4, 1.6)),
                 dict(num_inference_steps=n3, mu=_uniform(seed + 3, 0.4, 1.6), sigmas=np.linspace(1.0, 1 / n3, n3).tolist()),
                 dict(num_inference_steps=_randint(seed + 4, 2, 50), shift=_uniform(seed + 5, 1.2, 6.0)),
                 dict(num_inference_steps=5, shift=1.0, num_train_timesteps=100),
                 dict(num_inference_steps=4, shift=2.0, sigmas=[1.0, 0.8, 0.45, 0.2])]
    else:
        cases = [dict(num_inference_steps=4, shift=3.0)]
    for kw in cases:
        n = kw["num_inference_steps"]
        N = kw.get("num_train_timesteps", 1000)
        shift, mu, custom = kw.get("shift", 1.0), kw.get("mu"), kw.get("sigmas")
        timesteps, sigmas = ref.flow_schedule(**kw)
        label = ", ".join(f"{k}={[round(s, 3) for s in v] if isinstance(v, list) else v}" for k, v in kw.items())
        args = (n, shift, mu, None if custom is None else list(custom), N)
        got = _pair(call(fn, "flow_schedule", *args, forbidden=_SCHEDULER, case=label),
                    "flow_schedule", label, "(timesteps, sigmas)")
        got_t, got_s = got  # sigmas first: wrong sigmas make wrong timesteps, and the diagnosis is about sigmas
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
        assert_close(got_s, sigmas, name=f"flow_schedule sigmas with {label}", check_device=False, variants=variants)
        assert_close(got_t, timesteps, name=f"flow_schedule timesteps with {label}", check_device=False, variants={
            "the sigmas themselves (timesteps are sigmas * num_train_timesteps)": timesteps / N,
        })
    return _passed("flow_schedule", len(cases), hidden)


# ---------------------------------------------------------------- 8. one Euler step
def _check_euler_step(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    cases = [((3, 2, 5, 3), _uniform(seed + 50, 0.55, 1.0), _uniform(seed + 51, 0.05, 0.5)), ((2, 9, 6), 0.3, 0.0),
             ((4, 2), 1.0, 0.95)] if hidden else [((1, 4, 4, 4), 0.8, 0.6)]
    for i, (shape, sigma, sigma_next) in enumerate(cases):
        x = randn(*shape, seed=seed + i, dev=dev)
        v = randn(*shape, seed=seed + 10 + i, dev=dev)
        expected = ref.euler_step(x, v, sigma, sigma_next)
        label = f"sample {shape}, sigma {sigma} -> {sigma_next}"
        got = call(fn, "euler_step", x, v, sigma, sigma_next, forbidden=_SCHEDULER, case=label)
        assert_close(got, expected, name=f"euler_step with {label}", variants={
            "the step reversed, (sigma - sigma_next) * velocity: that walks back toward the noise":
                x + (sigma - sigma_next) * v,
            "the x0 prediction sample - sigma * velocity (a jump to sigma = 0) instead of one step":
                x - sigma * v,
            "only the increment (sigma_next - sigma) * velocity, without the sample": (sigma_next - sigma) * v,
        })
    return _passed("euler_step", len(cases), hidden)


# ---------------------------------------------------------------- 9. the sampling loop
class _Velocity:
    """A fixed, nonlinear test field v(x, sigma); checks that sigma arrives as pipelines pass it."""

    def __init__(self, seed: int):
        g = generator(seed)
        self.a, self.b, self.c = (0.5 + torch.rand(3, generator=g)).tolist()
        self.sigmas_seen: list[float] = []

    def __call__(self, x, sigma):
        if not isinstance(sigma, torch.Tensor) or sigma.shape != (x.shape[0],):
            got = tuple(sigma.shape) if isinstance(sigma, torch.Tensor) else type(sigma).__name__
            raise TypeError(f"velocity_fn(x, sigma) takes sigma as a tensor of shape (B,) = ({x.shape[0]},), "
                            f"one per sample, as pipelines pass t.expand(B); got {got}")
        if sigma.device.type != x.device.type:
            raise TypeError(f"velocity_fn: sigma is on {sigma.device}, x on {x.device}: put sigma on x's device")
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return torch.tanh(self.a * x + self.b * x.roll(1, dims=-1)) * (0.5 + s) - self.c * s ** 2 * x


def _check_euler_sample(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [((3, 4, 5), ref.flow_schedule(6, mu=0.9, sigmas=np.linspace(1.0, 1 / 6, 6).tolist())[1]),
                 ((2, 3, 4, 4), ref.flow_schedule(10, shift=3.0)[1]),
                 ((5, 2), torch.tensor([1.0, 0.5, 0.0]))]
    else:
        cases = [((2, 2, 3, 3), ref.flow_schedule(4, shift=3.0)[1])]
    for i, (shape, sigmas) in enumerate(cases):
        noise = randn(*shape, seed=seed + i, dev=dev)
        field = _Velocity(seed + 100 + i)
        expected = ref.euler_sample(field, noise, sigmas)
        label = f"noise {shape}, {len(sigmas) - 1} steps"
        got = call(fn, "euler_sample", field, noise, sigmas, forbidden=_SCHEDULER, case=label)

        def loop(at_next=False, scale=1.0, steps=None):
            x = noise
            n = len(sigmas) - 1 if steps is None else steps
            for k in range(n):
                s = sigmas[k + 1 if at_next else k].to(dev).expand(shape[0])
                x = x + (sigmas[k + 1] - sigmas[k]).item() * field(x, s * scale)
            return x
        assert_close(got, expected, name=f"euler_sample with {label}", variants={
            "the velocity evaluated at the next sigma instead of the current one": lambda: loop(at_next=True),
            "the model given timesteps (sigma * 1000) instead of sigmas: for this exercise's velocity_fn, "
            "pass sigma itself": lambda: loop(scale=1000.0),
            "the last step (to sigma = 0) left out": lambda: loop(steps=len(sigmas) - 2),
        })
    return _passed("euler_sample", len(cases), hidden)


EXERCISES = build(
    ("flow_interpolate", 2, _check_interpolate), ("flow_matching_loss", 2, _check_loss),
    ("timestep_density", 2, _check_density), ("shift_sigmas", 1, _check_shift),
    ("training_sigmas", 1, _check_training_sigmas), ("flux_mu", 2, _check_flux_mu),
    ("flow_schedule", 3, _check_schedule), ("euler_step", 1, _check_euler_step),
    ("euler_sample", 2, _check_euler_sample),
)
