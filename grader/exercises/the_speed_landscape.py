"""Lesson 8 (The Speed Landscape): public checks and hidden tests for every exercise.

The toy model (:class:`ToyMixture`) is a 2-D Gaussian mixture whose denoiser is exact (the
posterior mean, closed form), so every sampler here solves a known probability-flow ODE. It
is the *model* the cases hand to the student's solver steps, not a reference of any
exercise. Public checks: fixed small inputs on the CPU that take every code path (first and
second order, the final step to sigma = 0, a whole loop inside the scheduler). Hidden tests:
the grader's seed, other shapes, step counts, beta schedules, spacings, steps_offset,
Karras sigmas, prediction types, training lengths and schedulers, and the GPU when there is
one. No pretrained weights: the references are diffusers' schedulers.
"""

from __future__ import annotations

import math

import torch

from ..compare import ComparisonError, assert_close
from ..exercise import SubmissionError
from ..reference import the_speed_landscape as ref
from . import Case, Context, Exercise, exercises

LESSON = "08_the_speed_landscape"

_S = "diffusers.schedulers"
_WITH_SET_TIMESTEPS = ("scheduling_ddim.DDIMScheduler", "scheduling_euler_discrete.EulerDiscreteScheduler",
                       "scheduling_heun_discrete.HeunDiscreteScheduler", "scheduling_ddpm.DDPMScheduler",
                       "scheduling_pndm.PNDMScheduler", "scheduling_lcm.LCMScheduler",
                       "scheduling_dpmsolver_multistep.DPMSolverMultistepScheduler")
FORBID_TIMESTEPS = tuple(f"{_S}.{c}.set_timesteps" for c in _WITH_SET_TIMESTEPS)
FORBID_HEUN = (f"{_S}.scheduling_heun_discrete.HeunDiscreteScheduler.step",
               f"{_S}.scheduling_flow_match_heun_discrete.FlowMatchHeunDiscreteScheduler.step")
_DPM = f"{_S}.scheduling_dpmsolver_multistep.DPMSolverMultistepScheduler"
FORBID_DPM = (f"{_DPM}.dpm_solver_first_order_update", f"{_DPM}.multistep_dpm_solver_second_order_update",
              f"{_DPM}.multistep_dpm_solver_third_order_update")


# ---------------------------------------------------------------- the toy model (inputs, both sides)
class ToyMixture:
    """An isotropic 2-D (or D-dim) Gaussian mixture and its exact denoiser.

    means (K, D), stds (K,), weights (K,). ``denoise(x, sigma)`` is E[x0 | x0 + sigma * n = x]
    for the variance-exploding sample x (B, D); sigma a number, a 0-d tensor or (B,).
    Computed in float64, returned in x's dtype. Lesson 4's score gives the same numbers
    through Tweedie's formula D = x + sigma^2 * score_sigma(x) (tests check it).
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        self.means, self.stds, self.weights = means, stds, weights

    def __repr__(self) -> str:
        return f"ToyMixture({self.means.shape[0]} components in {self.means.shape[1]}-D)"

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        xd = x.detach().double()
        mu = self.means.to(xd.device).double()                        # (K, D)
        s2 = self.stds.to(xd.device).double() ** 2                     # (K,)
        sig = torch.as_tensor(sigma, dtype=torch.float64, device=xd.device).reshape(-1, 1)  # (B or 1, 1)
        var = s2[None] + sig ** 2                                      # (B, K)
        sq = ((xd[:, None, :] - mu[None]) ** 2).sum(-1)                # (B, K)
        D = xd.shape[-1]
        logr = torch.log(self.weights.to(xd.device).double())[None] - 0.5 * D * torch.log(var) - 0.5 * sq / var
        r = logr.softmax(-1)                                           # (B, K)
        post = (s2[None, :, None] * xd[:, None, :] + (sig ** 2)[:, :, None] * mu[None]) / var[..., None]
        return (r[..., None] * post).sum(1).to(x.dtype)                # (B, D)

    __call__ = denoise

    def vp_denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The same prediction for the variance-preserving sample x = alpha x0 + sigma_t n (DPM-Solver's)."""
        s = torch.as_tensor(sigma, dtype=torch.float64)
        return self.denoise(x * torch.sqrt(1 + s ** 2).to(x.dtype), sigma)

    def flow_velocity(self, x: torch.Tensor, t) -> torch.Tensor:
        """The exact rectified-flow velocity E[eps - x0 | x_t = x] for x_t = (1 - t) x0 + t eps, t in (0, 1].

        x_t / (1 - t) = x0 + (t / (1 - t)) eps is a VE sample with sigma = t / (1 - t), so the
        same denoiser answers; v = (x_t - D) / t. At t = 1 (sigma = inf) D is the mixture's mean.
        """
        td = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1, 1)
        xd = x.double()
        if bool((td >= 1).any()):
            mean = (self.weights.double()[:, None] * self.means.double()).sum(0).to(x.device)
            D = torch.where(td >= 1, mean.expand_as(xd), self.denoise(xd / (1 - td).clamp(min=1e-12),
                                                                     (td / (1 - td).clamp(min=1e-12)).flatten()))
        else:
            D = self.denoise(xd / (1 - td), (td / (1 - td)).flatten())
        return ((xd - D) / td).to(x.dtype)

    def vp_model_output(self, x: torch.Tensor, sigma, prediction_type: str) -> torch.Tensor:
        """What an epsilon / v / sample-predicting network of this mixture outputs for the VP sample x."""
        D = self.vp_denoise(x, sigma)
        if prediction_type == "sample":
            return D
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        alpha_t = 1 / torch.sqrt(s ** 2 + 1)
        sigma_t = s * alpha_t
        eps = (x - alpha_t * D) / sigma_t
        return eps if prediction_type == "epsilon" else alpha_t * eps - sigma_t * D

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k, None] * torch.randn(n, self.means.shape[1], generator=generator)


def toy_mixture(ctx: Context | None = None, offset: int = 0, K: int = 3, D: int = 2) -> ToyMixture:
    """The lesson's mixture (ctx None: the notebook's fixed one), or a seeded one of K components in D dims."""
    if ctx is None:
        return ToyMixture(torch.tensor([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]]), torch.tensor([0.3, 0.5, 0.2]),
                          torch.tensor([0.5, 0.3, 0.2]))
    g = ctx.generator(offset)
    means = torch.randn(K, D, generator=g) * 2
    stds = 0.15 + 0.4 * torch.rand(K, generator=g)
    weights = torch.rand(K, generator=g) + 0.3
    return ToyMixture(means, stds, weights / weights.sum())


class Counted:
    """Wraps a denoiser and counts its calls (the NFE)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.fn(x, sigma)


def _require(fn, name: str) -> None:
    """grader.exercise.call checks the harness, not the student's function, when its user_fn is None:
    repeat its missing/not-callable messages here (a harness must not turn them into a TypeError)."""
    if fn is None:
        raise SubmissionError(f"{name}: not defined. Run the cell that defines `{name}` first.")
    if not callable(fn):
        raise SubmissionError(f"{name}: expected a function, got {type(fn).__name__}.")


def _scalar(v: float, ctx: Context) -> torch.Tensor:
    return torch.tensor(float(v), dtype=torch.float32, device=ctx.device)


def _int_check(got, expected: int, name: str, hints: dict) -> None:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, int):
        raise ComparisonError(f"{name}: expected an int, got {getattr(got, 'course_type_name', type(got).__name__)}.")
    if got != expected:
        msg = f"{name}: got {got}, expected {expected}."
        for why, value in hints.items():
            if value is not None and got == value and value != expected:
                msg += f"\n  diagnosis: your count matches {why}."
                break
        raise ComparisonError(msg)


# ---------------------------------------------------------------- 1. timestep spacing
def _timesteps_cases(ctx: Context):
    if ctx.hidden:
        n = int(ctx.randint(5, 40, (1,), offset=1))
        configs = [(1, 1000, "trailing", 0), (3, 1000, "leading", 1), (7, 500, "linspace", 0),
                   (n, 1000, "leading", 1), (6, 1000, "trailing", 1), (13, 100, "trailing", 0),
                   (2, 1000, "linspace", 2), (n + 1, 800, "linspace", 1), (9, 700, "leading", 3)]
    else:
        configs = [(4, 1000, "leading", 1), (3, 1000, "leading", 0), (4, 1000, "trailing", 0),
                   (6, 1000, "linspace", 0), (3, 1000, "trailing", 1), (1, 1000, "leading", 1)]
    for N, T, spacing, offset in configs:
        yield Case(f"{N} steps of {T}, {spacing!r}, steps_offset {offset}", (N, T, spacing, offset))


def _timesteps_judge(case: Case, got) -> None:
    import numpy as np

    N, T, spacing, offset = case.args
    name = f"spaced_timesteps with {case.label}"
    expected = ref.spaced_timesteps(N, T, spacing, offset)
    if not isinstance(got, torch.Tensor):
        raise ComparisonError(f"{name}: expected a torch.Tensor, got {getattr(got, 'course_type_name', type(got).__name__)}.")
    if got.is_floating_point():
        raise ComparisonError(f"{name}: timesteps are integers here (DDIMScheduler's are int64); got {got.dtype}. "
                              "Round where the scheduler rounds, then convert.")
    got_f = got.detach().cpu().double()
    exp_f = expected.double()
    variants = {
        "'trailing' with steps_offset added (DDIM's trailing grid ignores steps_offset)":
            exp_f + offset if spacing == "trailing" and offset else None,
        "'leading' without steps_offset": exp_f - offset if spacing == "leading" and offset else None,
        "'leading' with a fractional step ratio T / N (DDIM uses integer division T // N)":
            torch.from_numpy((np.arange(0, N) * (T / N)).round()[::-1].copy()).double() + offset
            if spacing == "leading" else None,
        "'trailing' without the final - 1": exp_f + 1 if spacing == "trailing" else None,
        "'linspace' truncated instead of rounded":
            torch.from_numpy(np.linspace(0, T - 1, N)[::-1].astype(np.int64).copy()).double()
            if spacing == "linspace" else None,
        "an increasing order (samplers run from noise to data: largest timestep first)": exp_f.flip(0),
        "DPMSolverMultistepScheduler's grid (N + 1 points, the last dropped)": lambda: _dpm_grid(N, T, spacing, offset),
    }
    assert_close(got_f, exp_f, name=name, rtol=0.0, max_tol=0.0, variants=variants, check_device=False)


def _dpm_grid(N, T, spacing, offset):
    from diffusers import DPMSolverMultistepScheduler

    s = DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
    s.set_timesteps(N)
    return s.timesteps.double() if len(s.timesteps) == N else None


# ---------------------------------------------------------------- 2. Heun's step (and its model calls)
_HEUN_CONFIGS_PUBLIC = [dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                             timestep_spacing="trailing")]
_HEUN_CONFIGS_HIDDEN = [dict(beta_schedule="linear", timestep_spacing="linspace", use_karras_sigmas=True),
                        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                             timestep_spacing="leading", steps_offset=1),
                        dict(beta_schedule="linear", beta_start=0.0005, beta_end=0.02, timestep_spacing="trailing",
                             num_train_timesteps=500)]


def _heun_schedule(config: dict, n: int) -> torch.Tensor:
    """The N + 1 distinct sigmas of HeunDiscreteScheduler.set_timesteps (its table repeats the inner ones)."""
    from diffusers import HeunDiscreteScheduler

    sched = HeunDiscreteScheduler(**config)
    sched.set_timesteps(n)
    return torch.cat([sched.sigmas[0::2], sched.sigmas[-1:]])


def _heun_single(fn, x, sigma, sigma_next, model):
    _require(fn, "heun_step")
    counted = Counted(model)
    out = fn(x, sigma, sigma_next, counted)
    return out, counted.calls


def _heun_loop(fn, x, config, n, model):
    """Your heun_step over HeunDiscreteScheduler's own sigmas, as a pipeline would loop: (x, model calls)."""
    _require(fn, "heun_step")
    sigmas = _heun_schedule(config, n).to(x.device)
    counted = Counted(model)
    for i in range(n):
        x = fn(x, sigmas[i], sigmas[i + 1], counted)
    return x, counted.calls


def _heun_cases(ctx: Context):
    if ctx.hidden:
        singles = [(5, 2, 7.3, 2.9), (1, 2, 0.8, 0.0), (4, 3, 30.0, 11.5), (3, 2, 0.35, 0.0)]
        loops = [(cfg, n, B) for cfg, n, B in zip(_HEUN_CONFIGS_HIDDEN, (6, 2, 4), (5, 3, 2))]
    else:
        singles = [(3, 2, 4.0, 1.5), (2, 2, 0.5, 0.0)]
        loops = [(_HEUN_CONFIGS_PUBLIC[0], 3, 2)]
    for i, (B, D, s, s_next) in enumerate(singles):
        model = toy_mixture(ctx, offset=10 + i, D=D) if ctx.hidden else toy_mixture()
        x = ctx.randn(B, D, offset=20 + i, scale=max(s, 1.0))
        yield Case(f"one step sigma {s} -> {s_next}, x {(B, D)}", (x, _scalar(s, ctx), _scalar(s_next, ctx), model),
                   invoke=_heun_single)
    for i, (cfg, n, B) in enumerate(loops):
        model = toy_mixture(ctx, offset=30 + i) if ctx.hidden else toy_mixture()
        sigma_max = float(_heun_schedule(cfg, n)[0])
        x = ctx.randn(B, 2, offset=40 + i, scale=sigma_max)
        yield Case(f"{n}-step loop on HeunDiscreteScheduler({_cfg(cfg)}) sigmas, x {(B, 2)}",
                   (x, cfg, n, model), invoke=_heun_loop)


def _cfg(cfg: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k not in ("beta_start", "beta_end"))


def _heun_flipped(x, sigma, sigma_next, model):
    d = (model(x, sigma) - x) / sigma
    x_e = x + (sigma_next - sigma) * d
    if float(sigma_next) == 0.0:
        return x_e
    return x + (sigma_next - sigma) * (d + (model(x_e, sigma_next) - x_e) / sigma_next) / 2


def _heun_judge(case: Case, got) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ComparisonError("heun_step: the check could not read your step's result.")
    x_got, calls = got
    if case.invoke is _heun_loop:
        x, cfg, n, model = case.args
        expected, exp_calls = ref.heun_scheduler_sample(cfg, n, x, model)
        assert_close(x_got, expected, name=f"heun_step inside a {case.label}")
        _int_check(calls, exp_calls, f"heun_step: model calls in the {case.label}", {
            "two calls on every step (the last step, to sigma = 0, is a plain Euler step: one call)": 2 * n,
            "one call per step (Heun evaluates the model again at the Euler point)": n})
        return
    x, sigma, sigma_next, model = case.args
    expected = ref.heun_step(x, sigma, sigma_next, model)
    d = (x - model(x, sigma)) / sigma
    euler = x + (sigma_next - sigma) * d
    final = float(sigma_next) == 0.0
    variants = {"a plain Euler step (no correction with the slope at the Euler point)": euler if not final else None,
                "the corrector's slope taken at sigma instead of sigma_next":
                    lambda: x + (sigma_next - sigma) * (d + (euler - model(euler, sigma)) / sigma) / 2,
                "the corrector's slope taken at the start point x instead of the Euler point":
                    lambda: x + (sigma_next - sigma) * (d + (x - model(x, sigma_next)) / sigma_next) / 2,
                "the slope's sign flipped ((D - x) / sigma)": lambda: _heun_flipped(x, sigma, sigma_next, model)}
    assert_close(x_got, expected, name=f"heun_step on {case.label}", variants=variants)
    _int_check(calls, 1 if final else 2, f"heun_step: model calls on {case.label}", {
        "Heun's two calls on the final step (Karras et al.'s Alg. 1 skips the correction when sigma_next = 0: "
        "its slope would divide by zero)": 2 if final else None,
        "a single call (the correction needs the model at the Euler point)": 1 if not final else None})


# ---------------------------------------------------------------- 3. DPM-Solver++(2M)
_DPM_PUBLIC = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing")
_DPM_HIDDEN = [dict(beta_schedule="linear", timestep_spacing="linspace", use_karras_sigmas=True),
               dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
                    steps_offset=1),
               dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", num_train_timesteps=500,
                    final_sigmas_type="sigma_min"),
               dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="trailing",
                    final_sigmas_type="sigma_min", lower_order_final=False)]


def _dpm_loop(fn, x, config, n, prediction_type, model):
    """Your step inside DPMSolverMultistepScheduler: its step() decides the order and calls your update."""
    from diffusers import DPMSolverMultistepScheduler

    _require(fn, "dpmpp_2m_step")
    sched = DPMSolverMultistepScheduler(**config, prediction_type=prediction_type)
    sched.set_timesteps(n)

    def first(model_output, *args, sample=None, noise=None, **kwargs):
        i = sched.step_index
        return fn(sample, sched.sigmas[i], sched.sigmas[i + 1], model_output)

    def second(model_output_list, *args, sample=None, noise=None, **kwargs):
        i = sched.step_index
        return fn(sample, sched.sigmas[i], sched.sigmas[i + 1], model_output_list[-1],
                  model_output_list[-2], sched.sigmas[i - 1])

    sched.dpm_solver_first_order_update = first
    sched.multistep_dpm_solver_second_order_update = second
    for i, t in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        x = sched.step(model.vp_model_output(x, sigma, prediction_type), t, x).prev_sample
    return x


def _dpm_cases(ctx: Context):
    if ctx.hidden:
        singles = [((5, 2), (None, 6.1, 2.2)), ((2, 3, 4, 4), (9.0, 3.5, 0.9)), ((3, 2), (1.1, 0.4, 0.0)),
                   ((4, 7), (0.6, 0.25, 0.05)), ((2, 2), (None, 0.3, 0.0))]
        loops = [(cfg, n, p) for cfg, n, p in zip(_DPM_HIDDEN, (5, 8, 3, 20), ("epsilon", "v_prediction", "sample",
                                                                               "epsilon"))]
    else:
        singles = [((3, 2), (None, 5.0, 2.0)), ((3, 2), (5.0, 2.0, 0.7)), ((3, 2), (2.0, 0.7, 0.0))]
        loops = [(_DPM_PUBLIC, 4, "epsilon")]
    for i, (shape, (s_prev, s, s_next)) in enumerate(singles):
        x = ctx.randn(*shape, offset=50 + i)
        D = ctx.randn(*shape, offset=60 + i)
        args = [x, _scalar(s, ctx), _scalar(s_next, ctx), D]
        kind = "first order" if s_prev is None else "second order"
        if s_prev is not None:
            args += [D + 0.3 * ctx.randn(*shape, offset=70 + i), _scalar(s_prev, ctx)]
        yield Case(f"{kind}, sigma {s_prev} -> {s} -> {s_next}, x {shape}" if s_prev is not None
                   else f"{kind}, sigma {s} -> {s_next}, x {shape}", tuple(args))
    for i, (cfg, n, pred) in enumerate(loops):
        model = toy_mixture(ctx, offset=80 + i) if ctx.hidden else toy_mixture()
        x = ctx.randn(3, 2, offset=90 + i)
        yield Case(f"{n}-step loop in DPMSolverMultistepScheduler({_cfg(cfg)}), {pred} model",
                   (x, cfg, n, pred, model), invoke=_dpm_loop)


def _dpm_judge(case: Case, got) -> None:
    if case.invoke is _dpm_loop:
        x, cfg, n, pred, model = case.args
        expected = ref.dpm_scheduler_sample(cfg, n, x, model.vp_denoise, pred)
        assert_close(got, expected, name=f"dpmpp_2m_step inside a {case.label}")
        return
    x, sigma, sigma_next, D, *prev = case.args
    expected = ref.dpmpp_2m_step(x, sigma, sigma_next, D, *prev)
    first = ref.dpmpp_2m_step(x, sigma, sigma_next, D)
    a_next, s_next = ref.alpha_sigma(sigma_next)
    a, s = ref.alpha_sigma(sigma)
    variants = {}
    if float(sigma_next) > 0:
        h = torch.log(sigma) - torch.log(sigma_next)
        variants["the variance-exploding ratio sigma_next / sigma where DPM-Solver++ has sigma_t' / sigma_t "
                 "(alpha_t = 1 / sqrt(1 + sigma^2), sigma_t = sigma * alpha_t)"] = \
            (sigma_next / sigma) * x - a_next * torch.expm1(-h) * D if prev == [] else None
        variants["a first-order step (the previous prediction unused)"] = first if prev else None
        variants["e^{+h} where the data-prediction form has e^{-h}"] = \
            (s_next / s) * x - a_next * torch.expm1(h) * D if not prev else None
        if prev:
            h_prev = torch.log(prev[1]) - torch.log(sigma)
            r = h_prev / h
            variants["r = h / h_prev inverted (r is h_{i-1} / h_i)"] = \
                (s_next / s) * x - a_next * torch.expm1(-h) * ((1 + r / 2) * D - r / 2 * prev[0])
            variants["the two predictions swapped (D_prev weighted 1 + 1/(2r))"] = \
                ref.dpmpp_2m_step(x, sigma, sigma_next, prev[0], D, prev[1])
    elif isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.isfinite(got).all():
        raise ComparisonError(f"dpmpp_2m_step on {case.label}: NaN or infinite values.\n  diagnosis: on the final "
                              "step to sigma = 0, h is infinite and r = h_prev / h is 0, so the multistep correction "
                              "divides by zero; diffusers takes a first-order step there (final_sigmas_type='zero').")
    assert_close(got, expected, name=f"dpmpp_2m_step on {case.label}", variants=variants)


# ---------------------------------------------------------------- 4. counting model calls
_COUNT_PUBLIC = [("EulerDiscreteScheduler", {}, 4, 1.0), ("HeunDiscreteScheduler", {}, 4, 1.0),
                 ("DPMSolverMultistepScheduler", {}, 4, 7.5), ("KDPM2DiscreteScheduler", {}, 3, 1.0)]
_COUNT_HIDDEN = [("HeunDiscreteScheduler", {"use_karras_sigmas": True}, 9, 5.0),
                 ("KDPM2DiscreteScheduler", {}, 6, 1.0), ("DDIMScheduler", {}, 25, 7.5),
                 ("LCMScheduler", {}, 4, 1.0), ("FlowMatchHeunDiscreteScheduler", {}, 7, 3.5),
                 ("DPMSolverSinglestepScheduler", {}, 12, 1.0),
                 ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, 1, 1.0),
                 ("HeunDiscreteScheduler", {}, 1, 1.0)]


def _count_cases(ctx: Context):
    import diffusers

    for cls, cfg, n, w in (_COUNT_HIDDEN if ctx.hidden else _COUNT_PUBLIC):
        sched = getattr(diffusers, cls)(**cfg)
        yield Case(f"{cls}({_cfg(cfg)}), {n} steps, guidance_scale {w}", (sched, n, w))


def _count_judge(case: Case, got) -> None:
    sched, n, w = case.args
    expected = ref.count_model_calls(sched, n, w)
    per = expected // (2 if w > 1 else 1)
    cfg_mult = 2 if w > 1 else 1
    _int_check(got, expected, f"count_model_calls for {case.label}", {
        "one call per inference step (this scheduler's set_timesteps lists more timesteps than steps)":
            n * cfg_mult if per != n else None,
        "the count without classifier-free guidance (guidance_scale > 1 runs the network on 2 inputs)":
            per if w > 1 else None,
        "classifier-free guidance counted although guidance_scale <= 1 (pipelines skip it there)":
            2 * per if w <= 1 else None,
        "two calls on every step (the last Heun-type step is a single Euler call)":
            2 * n * cfg_mult if per == 2 * n - 1 else None,
    })


EXERCISES = exercises(
    Exercise("spaced_timesteps", 2, _timesteps_cases, _timesteps_judge, FORBID_TIMESTEPS),
    Exercise("heun_step", 3, _heun_cases, _heun_judge, FORBID_HEUN),
    Exercise("dpmpp_2m_step", 3, _dpm_cases, _dpm_judge, FORBID_DPM),
    Exercise("count_model_calls", 2, _count_cases, _count_judge),
)

__all__ = ["EXERCISES", "LESSON", "ToyMixture", "toy_mixture", "Counted", "math"]
