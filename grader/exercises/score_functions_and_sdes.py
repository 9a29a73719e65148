"""Lesson 4 (Score Functions & SDEs): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference here: the schedulers built in ``cases`` only supply inputs, such as a noise
level or an alpha-bar) and ``judge`` (reference + comparison; trusted side only). Public
checks: fixed small inputs on the CPU. Hidden tests: the grader's seed, shapes and settings
the public checks do not use (batch > 1, 2D points and images, non-square images, other
beta / sigma ranges and beta schedules, per-sample timesteps, Stable Diffusion's DDIM
configuration), the real google/ddpm-cifar10-32 UNet when present, and the GPU when there is one.

Stochastic steps are made deterministic by passing the noise tensor in: the judge lets
diffusers' scheduler draw it from a generator seeded from the case, and the student's
function receives the very same draw.
"""

from __future__ import annotations

import math

import torch

from ..compare import ComparisonError, assert_close
from ..reference import score_functions_and_sdes as ref
from . import Case, Context, Exercise, exercises

LESSON = "04_score_functions_and_sdes"

_S = "diffusers.schedulers"
FORBID_GMM = ("torch.autograd.grad", "torch.Tensor.backward", "torch.func.grad",
              "torch.distributions.MixtureSameFamily.log_prob")
FORBID_SDE = (f"{_S}.deprecated.scheduling_sde_vp.ScoreSdeVpScheduler.step_pred",
              f"{_S}.scheduling_sde_ve.ScoreSdeVeScheduler.step_pred")
FORBID_ODE = FORBID_SDE + (f"{_S}.scheduling_euler_discrete.EulerDiscreteScheduler.step",)
FORBID_VE = (f"{_S}.scheduling_sde_ve.ScoreSdeVeScheduler.add_noise",
             f"{_S}.scheduling_sde_ve.ScoreSdeVeScheduler.set_sigmas")
FORBID_DDIM = (f"{_S}.scheduling_ddim.DDIMScheduler.step",)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


#: The (B,) trap: a per-sample t, g or alphabar left as (B,) lines up with the LAST axis. Cases whose
#: last axis is as long as the batch (and whose per-sample values differ) make that mistake silent;
#: this names it.
LAST_AXIS = ("a per-sample (B,) tensor broadcast along the LAST axis instead of the batch "
             "(reshape it to (B, 1, ..., 1), e.g. t.reshape(-1, *[1] * (x.ndim - 1)))")


def _last(v: torch.Tensor, like: torch.Tensor):
    """v (B,) as the trap uses it, where the shapes allow it silently; else None."""
    return v if like.ndim > 1 and like.shape[-1] == v.shape[0] else None


def _uniform(ctx: Context, n: int, lo: float, hi: float, offset: int) -> torch.Tensor:
    """n values uniform in [lo, hi), on the CPU (settings and times; moved to the device by the caller)."""
    return lo + (hi - lo) * torch.rand(n, generator=ctx.generator(offset))


# ---------------------------------------------------------------- 1. score of a Gaussian mixture
def _mixture(ctx: Context, K: int, D: int, offset: int, fixed: bool):
    """Overlapping components of different widths, so that every part of the responsibilities matters."""
    if fixed:  # the public check's first mixture
        return (torch.tensor([[0.0, 0.0], [1.5, 0.5], [-1.0, 1.2]], device=ctx.device),
                torch.tensor([0.5, 1.2, 0.8], device=ctx.device), torch.tensor([0.5, 0.3, 0.2], device=ctx.device))
    g = ctx.generator(offset)
    means = torch.randn(K, D, generator=g)
    stds = 0.5 + 1.2 * torch.rand(K, generator=g)
    weights_ = torch.rand(K, generator=g) + 0.1
    return means.to(ctx.device), stds.to(ctx.device), (weights_ / weights_.sum()).to(ctx.device)


def _points(ctx: Context, N: int, D: int, means: torch.Tensor, offset: int, far: bool) -> torch.Tensor:
    """N query points near the components, or (``far``) far from all of them."""
    x = torch.randn(N, D, generator=ctx.generator(offset))
    if far:  # exp(-|x - mu|^2 / 2 std^2) underflows in float32 out here: 0/0 unless computed in log space
        x = x / x.norm(dim=1, keepdim=True) * (10.0 * means.abs().max().cpu() + 25.0)
    else:
        x = x * 2.0
    return x.to(ctx.device)


def _gmm_cases(ctx: Context):
    # Far points get their own case: their scores are ~100x longer and would hide errors elsewhere.
    if ctx.hidden:
        configs = [(40, 2, 4, False), (7, 3, 2, False), (5, 5, 1, False), (12, 2, 6, False), (6, 3, 3, True)]
    else:
        configs = [(6, 2, 3, False), (2, 2, 3, True)]
    for i, (N, D, K, far) in enumerate(configs):
        means, stds, w = _mixture(ctx, K, D, 10 * i, fixed=not ctx.hidden and i == 0)
        x = _points(ctx, N, D, means, 10 * i + 1, far)
        yield Case(f"{N} {'far-away ' if far else ''}points in {D}D, {K} components", (x, means, stds, w))


def _gmm_judge(case: Case, got) -> None:
    x, means, stds, w = case.args
    expected = ref.gmm_score(x, means, stds, w)
    v = lambda **kw: lambda: ref.gmm_score_variant(x, means, stds, w, **kw).to(x.device)  # noqa: E731
    try:
        assert_close(got, expected, name=f"gmm_score on {case.label}", variants={
            "unnormalised responsibilities: the gradient of p(x), not of log p(x)": v(normalise=False),
            "every component weighted equally (responsibilities ignored)": v(equal_resp=True),
            "the mixture weights left out of the responsibilities": v(use_weights=False),
            "each component's normalising constant (1/std^D) left out of the responsibilities":
                v(use_norm_const=False),
            "(mu - x) divided by the std instead of the variance": v(power=1),
        })
    except ComparisonError as err:
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.isfinite(got).all():
            raise ComparisonError(
                f"{err}\n  hint: far from every component each exp(-|x - mu|^2 / 2 std^2) underflows to 0 and "
                f"the responsibilities become 0/0. Compute them from log-terms with a softmax "
                f"(torch.softmax or logsumexp subtract the largest term first).") from None
        raise


# ---------------------------------------------------------------- 2. score from a noise prediction
#: DDPM beta schedules real checkpoints use: google/ddpm-cifar10-32 (linear 1e-4..0.02), Stable
#: Diffusion (scaled_linear 0.00085..0.012), improved DDPM (squaredcos_cap_v2).
_DDPM_SCHEDULES = {
    "linear": dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
    "scaled_linear": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    "squaredcos_cap_v2": dict(beta_schedule="squaredcos_cap_v2"),
}


def _ddpm_scheduler(kind: str, dev):
    """A DDPMScheduler with one of the schedules above, its tables on ``dev`` (an input, not a reference)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, **_DDPM_SCHEDULES[kind])
    for attr in ("betas", "alphas", "alphas_cumprod"):
        setattr(sched, attr, getattr(sched, attr).to(dev))
    return sched


def _ddpm_cases(ctx: Context):
    # The public check stays instant on the stand-in; hidden tests use the real UNet when present.
    unet = ctx.weights("ddpm_unet", standin=not ctx.hidden)
    if ctx.hidden:
        # first: 8 images 8 pixels wide, so a (B,) std left unreshaped divides along the width, silently
        configs = [(8, 8, 8, "linear"), (2, 32, 32, "linear"), (2, 16, 24, "squaredcos_cap_v2"),
                   (3, 8, 16, "scaled_linear")]
    else:
        configs = [(8, 8, 8, "linear"), (2, 8, 8, "linear"), (1, 8, 8, "scaled_linear")]
    for i, (B, H, W, kind) in enumerate(configs):
        sched = _ddpm_scheduler(kind, ctx.device)
        g = ctx.generator(100 + i)
        t = torch.randint(0, 1000, (B,), generator=g)
        t[0] = torch.randint(0, 40, (1,), generator=g)        # a small t: 1 - alphabar far from 1
        t = t.to(ctx.device)
        x0 = ctx.randn(B, 3, H, W, offset=10 * i).clamp(-1, 1)
        noise = ctx.randn(B, 3, H, W, offset=10 * i + 1)
        x_t = sched.add_noise(x0, noise, t)
        yield Case(f"x_t {(B, 3, H, W)}, {kind} betas, t {t.tolist()}", (unet, sched, x_t, t))


def _ddpm_judge(case: Case, got) -> None:
    unet, sched, x_t, t = case.args
    expected = ref.ddpm_score(unet, sched.alphas_cumprod, x_t, t)
    ab, a = _bcast(sched.alphas_cumprod[t], x_t), _bcast(sched.alphas[t], x_t)
    eps = -expected * (1 - ab).sqrt()                     # the UNet's output, without another forward
    try:
        assert_close(got, expected, name=f"ddpm_score on {case.label}")
        return
    except ComparisonError:
        # Near t = 0, 1 - alphabar is ~1e-5 and diffusers' float32 cumprod is itself off by ~2e-4
        # relative: alphabar computed in float64 from the betas is as right (more accurate).
        exact = torch.cumprod(1.0 - sched.betas.double(), dim=0).float().to(x_t.device)
        try:
            assert_close(got, ref.ddpm_score(unet, exact, x_t, t), name=f"ddpm_score on {case.label}")
            return
        except ComparisonError:
            pass
    ab_last = _last(sched.alphas_cumprod[t], x_t)
    assert_close(got, expected, name=f"ddpm_score on {case.label}", variants={
        LAST_AXIS: None if ab_last is None else -eps / (1 - ab_last).sqrt(),
        "alpha_t (scheduler.alphas) in place of alpha-bar (scheduler.alphas_cumprod)": -eps / (1 - a).sqrt(),
        "1 - alphabar without its square root": -eps / (1 - ab),
        "sqrt(alphabar) in place of sqrt(1 - alphabar)": -eps / ab.sqrt(),
        "the noise prediction itself, not divided by the noise std": -eps,
        "the UNet called with t / 1000 (continuous time) instead of the integer DDPM step":
            lambda: -ref.unet_eps(unet, x_t, t.float() / 1000) / (1 - ab).sqrt(),
    })


# ---------------------------------------------------------------- 3. VP forward process
def _vp_variant(x0, noise, t, bmin, bmax, *, integral=None, std_power=2, sqrt_mean=True):
    if integral is None:
        integral = bmin * t + 0.5 * (bmax - bmin) * t ** 2
    ab = _bcast(torch.exp(-integral), x0)
    mean = ab.sqrt() if sqrt_mean else ab
    std = (1 - mean ** std_power).sqrt() if sqrt_mean else 1 - ab
    return mean * x0 + std * noise


def _vp_cases(ctx: Context):
    if ctx.hidden:
        # first: last axis = batch, so the (B,) trap gives a wrong answer (named) rather than an error
        configs = [((3, 2, 4, 3), 0.1, 20.0),
                   ((3, 3, 8, 12), 0.1, 20.0), ((64, 2), 0.1, 20.0), ((2, 4, 6, 6), 0.05, 12.0), ((5, 7), 1.0, 5.0),
                   ((3, 4, 5, 5), 0.1, 20.0, torch.float16)]    # fp16 latents, float32 t: x_t stays fp16
    else:
        configs = [((4, 3, 4, 4), 0.1, 20.0), ((2, 3, 2, 2), 0.1, 20.0, torch.float16)]
    for i, (shape, bmin, bmax, *dtype) in enumerate(configs):
        dtype = dtype[0] if dtype else torch.float32
        x0 = ctx.randn(*shape, offset=10 * i).to(dtype)
        noise = ctx.randn(*shape, offset=10 * i + 1).to(dtype)
        t = _uniform(ctx, shape[0], 0.0, 1.0, 10 * i + 2)
        t[0] = 0.02 + 0.1 * t[0]                              # one early time: mostly signal
        kind = "" if dtype == torch.float32 else f" {str(dtype).split('.')[-1]} (t float32)"
        yield Case(f"x0 {shape}{kind}, beta_min {bmin}, beta_max {bmax}", (x0, noise, t.to(ctx.device), bmin, bmax))


def _vp_judge(case: Case, got) -> None:
    x0, noise, t, bmin, bmax = case.args
    beta_t = ref.vp_beta(t, bmin, bmax)
    last = _last(t, x0)
    tol = dict(rtol=3e-3, max_tol=3e-3) if x0.dtype == torch.float16 else {}
    assert_close(got, ref.vp_perturb(x0, noise, t, bmin, bmax), name=f"vp_perturb on {case.label}", **tol, variants={
        LAST_AXIS: None if last is None else (
            torch.exp(-(bmin * last + 0.5 * (bmax - bmin) * last ** 2)).sqrt() * x0
            + (1 - torch.exp(-(bmin * last + 0.5 * (bmax - bmin) * last ** 2))).sqrt() * noise),
        "alphabar and 1 - alphabar without their square roots": _vp_variant(x0, noise, t, bmin, bmax, sqrt_mean=False),
        "alphabar = exp(-beta(t) t) (the rate at time t, not its integral from 0 to t)":
            _vp_variant(x0, noise, t, bmin, bmax, integral=beta_t * t),
        "the 1/2 of the integral of the linear part dropped (beta_min t + (beta_max - beta_min) t^2)":
            _vp_variant(x0, noise, t, bmin, bmax, integral=bmin * t + (bmax - bmin) * t ** 2),
        "noise std sqrt(1 - sqrt(alphabar)): the mean coefficient not squared":
            _vp_variant(x0, noise, t, bmin, bmax, std_power=1),
    })


# ---------------------------------------------------------------- 4. VE forward process
def _ve_cases(ctx: Context):
    if ctx.hidden:
        configs = [((3, 2, 4, 3), 0.01, 50.0),                  # first: last axis = batch, the (B,) trap is named
                   ((3, 3, 8, 12), 0.01, 1348.0), ((50, 2), 0.01, 50.0), ((4, 2, 5, 5), 0.002, 80.0)]
    else:
        configs = [((4, 3, 4, 4), 0.01, 50.0)]
    for i, (shape, smin, smax) in enumerate(configs):
        x0 = ctx.randn(*shape, offset=10 * i)
        noise = ctx.randn(*shape, offset=10 * i + 1)
        t = _uniform(ctx, shape[0], 0.0, 1.0, 10 * i + 2)
        t[0] = 0.15 * t[0]                                    # one early time: sigma near sigma_min
        yield Case(f"x0 {shape}, sigma_min {smin}, sigma_max {smax}", (x0, noise, t.to(ctx.device), smin, smax))


def _ve_judge(case: Case, got) -> None:
    x0, noise, t, smin, smax = case.args
    sigma = _bcast(ref.ve_sigma(t, smin, smax), x0)
    last = _last(t, x0)
    assert_close(got, ref.ve_perturb(x0, noise, t, smin, smax), name=f"ve_perturb on {case.label}", variants={
        LAST_AXIS: None if last is None else x0 + smin * (smax / smin) ** last * noise,
        "the noise scaled by sigma^2 (the variance) instead of sigma": x0 + sigma ** 2 * noise,
        "sigma interpolated linearly in t, not geometrically": x0 + _bcast(smin + t * (smax - smin), x0) * noise,
        "time running backwards: sigma_max (sigma_min / sigma_max)^t": x0 + _bcast(smax * (smin / smax) ** t, x0) * noise,
        "a VP-style scaling of x_t by 1 / sqrt(1 + sigma^2)": (x0 + sigma * noise) / (1 + sigma ** 2).sqrt(),
    })


# ---------------------------------------------------------------- inputs of one reverse-time step
def _vp_step_inputs(ctx: Context, shape, bmin: float, bmax: float, N: int, offset: int):
    """Inputs of one VP step, as ScoreSdeVpScheduler.step_pred sees them: the model's output eps is
    drawn; the score is -eps / std(t), f = -beta(t) x / 2, g = sqrt(beta(t)), dt = 1 / N."""
    x = ctx.randn(*shape, offset=offset)
    eps = ctx.randn(*shape, offset=offset + 1)
    t = _uniform(ctx, shape[0], 1e-3, 1.0, offset + 2).to(ctx.device)
    log_mean_coeff = -0.25 * t ** 2 * (bmax - bmin) - 0.5 * t * bmin
    std = torch.sqrt(1.0 - torch.exp(2.0 * log_mean_coeff))
    beta_t = bmin + t * (bmax - bmin)
    score = -eps / _bcast(std, eps)
    drift = -0.5 * _bcast(beta_t, x) * x
    return x, eps, t, score, drift, torch.sqrt(beta_t), 1.0 / N


def _ve_scheduler(smin: float, smax: float, N: int):
    """A ScoreSdeVeScheduler set up as ScoreSdeVePipeline does (set_timesteps, then set_sigmas)."""
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(sigma_min=smin, sigma_max=smax)
    sched.set_timesteps(N)
    sched.set_sigmas(N)
    return sched


def _ve_step_sigmas(sched, timestep, batch: int):
    """(sigma, adjacent sigma), each (B,), that ScoreSdeVeScheduler.step_pred uses at ``timestep``."""
    timestep = timestep * torch.ones(batch)
    index = (timestep * (len(sched.timesteps) - 1)).long()
    return sched.discrete_sigmas[index], sched.get_adjacent_sigma(index, timestep)


# ---------------------------------------------------------------- 5. reverse SDE: one Euler-Maruyama step
def _sde_variants(x, score, drift, g, dt, noise):
    last = _last(g, x)
    g = _bcast(g, x)
    noise_term = g * math.sqrt(dt) * noise
    return {
        LAST_AXIS: None if last is None else x - (drift - last ** 2 * score) * dt + last * math.sqrt(dt) * noise,
        "the drift taken forward in time: x + (f - g^2 score) dt": x + (drift - g ** 2 * score) * dt + noise_term,
        "the noise scaled by g dt instead of g sqrt(dt)": x - (drift - g ** 2 * score) * dt + g * dt * noise,
        "the noise scaled by g without sqrt(dt)": x - (drift - g ** 2 * score) * dt + g * noise,
        "the probability-flow ODE's 1/2 in the score term (1/2 g^2 score)":
            x - (drift - 0.5 * g ** 2 * score) * dt + noise_term,
        "g instead of g^2 in front of the score": x - (drift - g * score) * dt + noise_term,
        "no noise at all (only the mean of the step)": x - (drift - g ** 2 * score) * dt,
    }


def _sde_cases(ctx: Context):
    if ctx.hidden:
        configs = [("vp", (3, 2, 4, 3), 0.1, 20.0, 1000),      # first: last axis = batch, the (B,) trap is named
                   ("vp", (3, 3, 8, 12), 0.1, 20.0, 1000), ("vp", (64, 2), 0.05, 12.0, 37),
                   ("ve", (2, 3, 6, 10), 0.01, 50.0, 25), ("ve", (40, 2), 0.002, 80.0, 100)]
    else:
        configs = [("vp", (2, 3, 4, 2), 0.1, 20.0, 50), ("ve", (2, 3, 4, 4), 0.01, 50.0, 10)]
    for i, (kind, shape, lo, hi, N) in enumerate(configs):
        off = 10 * i
        # The judge's scheduler draws its noise from a CPU generator seeded with noise_seed,
        # as diffusers' randn_tensor does; the student gets the same draw.
        noise_seed = (ctx.seed + off + 5) % (2 ** 63)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(noise_seed)).to(ctx.device)
        extra = dict(kind=kind, lo=lo, hi=hi, N=N, noise_seed=noise_seed)
        if kind == "vp":
            x, eps, t, score, drift, g, dt = _vp_step_inputs(ctx, shape, lo, hi, N, off)
            extra.update(eps=eps, t=t)
            label = f"VP SDE, x {shape}, beta {lo}..{hi}, {N} steps"
        else:
            sched = _ve_scheduler(lo, hi, N)
            idx = int(torch.randint(0, N, (1,), generator=ctx.generator(off + 3)))
            timestep = sched.timesteps[idx]
            sigma, adjacent = _ve_step_sigmas(sched, timestep, shape[0])
            x = ctx.randn(*shape, offset=off) * float(sigma[0])
            score = ctx.randn(*shape, offset=off + 1) / float(sigma[0])
            drift = torch.zeros_like(x)
            dt = 1.0 / N
            # ScoreSdeVeScheduler's g^2 dt is the variance added between neighbouring noise levels.
            g = ((sigma ** 2 - adjacent ** 2) / dt).sqrt().to(ctx.device)
            extra.update(scheduler=sched, timestep=timestep)
            label = f"VE SDE, x {shape}, sigma {float(sigma[0]):.4g} -> {float(adjacent[0]):.4g}, {N} steps"
        yield Case(label, (x, score, drift, g, dt, noise), extra=extra)


def _sde_judge(case: Case, got) -> None:
    x, score, drift, g, dt, noise = case.args
    e = case.extra
    gen = torch.Generator("cpu").manual_seed(e["noise_seed"])
    if e["kind"] == "vp":
        expected = ref.vp_sde_step(e["eps"], x, e["t"], e["lo"], e["hi"], e["N"], gen)[0]
    else:
        expected = ref.ve_sde_step(e["scheduler"], score, e["timestep"], x, gen)[0]
    assert_close(got, expected, name=f"reverse_sde_step on {case.label}",
                 variants=_sde_variants(x, score, drift, g, dt, noise))


# ---------------------------------------------------------------- 6. probability-flow ODE: one Euler step
def _ode_variants(x, score, drift, g, dt):
    last = _last(g, x)
    g = _bcast(g, x)
    return {
        LAST_AXIS: None if last is None else x - (drift - 0.5 * last ** 2 * score) * dt,
        "the reverse SDE's full g^2 score (the probability-flow ODE has 1/2 g^2)": x - (drift - g ** 2 * score) * dt,
        "the drift taken forward in time: x + (f - 1/2 g^2 score) dt": x + (drift - 0.5 * g ** 2 * score) * dt,
        "g instead of g^2 in front of the score": x - (drift - 0.5 * g * score) * dt,
        "the drift f left out": x + 0.5 * g ** 2 * score * dt,
    }


def _ode_cases(ctx: Context):
    if ctx.hidden:
        configs = [("vp", (3, 2, 4, 3), 0.1, 20.0, 1000),      # first: last axis = batch, the (B,) trap is named
                   ("sigma", (2, 3, 6, 10), 30), ("vp", (3, 4, 5, 7), 0.1, 20.0, 1000),
                   ("vp", (64, 2), 0.05, 12.0, 23), ("sigma", (50, 2), 7)]
    else:
        configs = [("sigma", (2, 3, 4, 4), 10), ("vp", (2, 3, 4, 2), 0.1, 20.0, 50)]
    for i, cfg in enumerate(configs):
        kind, shape = cfg[0], cfg[1]
        off = 10 * i
        if kind == "sigma":
            N = cfg[2]
            sched = _euler_sigma_table(N)
            idx = int(torch.randint(0, N, (1,), generator=ctx.generator(off + 3)))
            sigma, sigma_next = float(sched.sigmas[idx]), float(sched.sigmas[idx + 1])
            x = ctx.randn(*shape, offset=off) * math.sqrt(1 + sigma ** 2)
            denoised = ctx.randn(*shape, offset=off + 1).clamp(-1, 1)
            # sigma itself as the clock (sigma(t) = t): f = 0, g^2 = d(sigma^2)/dt = 2 sigma, dt = sigma - sigma_next.
            score = (denoised - x) / sigma ** 2
            drift = torch.zeros_like(x)
            g = torch.full((shape[0],), math.sqrt(2 * sigma), device=ctx.device)
            dt = sigma - sigma_next
            extra = dict(kind=kind, N=N, index=idx, denoised=denoised)
            label = f"Euler in sigma (EulerDiscreteScheduler), x {shape}, sigma {sigma:.4g} -> {sigma_next:.4g}"
        else:
            lo, hi, N = cfg[2], cfg[3], cfg[4]
            x, eps, t, score, drift, g, dt = _vp_step_inputs(ctx, shape, lo, hi, N, off)
            extra = dict(kind=kind, lo=lo, hi=hi, N=N, eps=eps, t=t)
            label = f"VP probability-flow ODE, x {shape}, beta {lo}..{hi}, {N} steps"
        yield Case(label, (x, score, drift, g, dt), extra=extra)


def _euler_sigma_table(num_steps: int):
    """EulerDiscreteScheduler predicting the clean sample, for its sigma table (an input)."""
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(prediction_type="sample")
    sched.set_timesteps(num_steps)
    return sched


def _ode_judge(case: Case, got) -> None:
    x, score, drift, g, dt = case.args
    e = case.extra
    if e["kind"] == "sigma":
        expected = ref.euler_sigma_step(ref.euler_scheduler(e["N"]), e["index"], x, e["denoised"])
    else:
        expected = ref.vp_ode_step(e["eps"], x, e["t"], e["lo"], e["hi"], e["N"])
    assert_close(got, expected, name=f"probability_flow_step on {case.label}",
                 variants=_ode_variants(x, score, drift, g, dt))


# ---------------------------------------------------------------- 7. DDIM = Euler in (x / sqrt(abar), sigma)
#: DDIMScheduler settings of real checkpoints: diffusers' defaults (DDPM's linear betas, alphabar_prev = 1
#: at the last step) and Stable Diffusion's (scaled_linear betas, set_alpha_to_one=False: the last
#: step's alphabar_prev is alphas_cumprod[0], steps_offset=1), with its "leading" or "trailing" spacing.
_DDIM_CONFIGS = {
    "default": dict(),
    "stable-diffusion": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             set_alpha_to_one=False, steps_offset=1),
    "stable-diffusion, trailing": dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       set_alpha_to_one=False, timestep_spacing="trailing"),
}


def _ddim_scheduler(config: str, n: int):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(clip_sample=False, **_DDIM_CONFIGS[config])
    sched.set_timesteps(n)
    return sched


def _ddim_alpha_bars(sched, timesteps: torch.Tensor):
    """(alphabar_t, alphabar_prev), each (B,), that DDIMScheduler.step reads at each timestep (inputs)."""
    cur, prev = [], []
    for t in timesteps.tolist():
        p = t - sched.config.num_train_timesteps // sched.num_inference_steps
        cur.append(sched.alphas_cumprod[t])
        prev.append(sched.alphas_cumprod[p] if p >= 0 else sched.final_alpha_cumprod)
    return torch.stack(cur), torch.stack(prev)


def _ddim_variants(x, eps, a, a_prev):
    la, lp = _last(a, x), _last(a_prev, x)
    trap = None
    if la is not None:
        s_, sp_ = ((1 - la) / la).sqrt(), ((1 - lp) / lp).sqrt()
        trap = lp.sqrt() * (x / la.sqrt() + (sp_ - s_) * eps)
    a, a_prev = _bcast(a, x), _bcast(a_prev, x)
    sig, sig_prev = ((1 - a) / a).sqrt(), ((1 - a_prev) / a_prev).sqrt()
    xbar_prev = x / a.sqrt() + (sig_prev - sig) * eps
    vp_sig, vp_sig_prev = (1 - a).sqrt(), (1 - a_prev).sqrt()
    return {
        LAST_AXIS: trap,
        "sigma = sqrt(1 - alphabar) (the VP noise std) instead of sqrt((1 - alphabar) / alphabar)":
            a_prev.sqrt() * (x / a.sqrt() + (vp_sig_prev - vp_sig) * eps),
        "the step left in the rescaled variable x / sqrt(alphabar) (not multiplied back by sqrt(alphabar_prev))": xbar_prev,
        "the result scaled back with the current sqrt(alphabar) instead of sqrt(alphabar_prev)": a.sqrt() * xbar_prev,
        "the sigma step reversed: (sigma - sigma_prev) instead of (sigma_prev - sigma)":
            a_prev.sqrt() * (x / a.sqrt() + (sig - sig_prev) * eps),
        "the Euler step taken on x itself, without the change of variables": x + (sig_prev - sig) * eps,
    }


def _ddim_cases(ctx: Context):
    if ctx.hidden:
        configs = [((3, 2, 4, 3), 20, "default"),              # first: last axis = batch, the (B,) trap is named
                   ((4, 3, 6, 10), 50, "default"), ((3, 2, 5, 5), 10, "stable-diffusion"),
                   ((16, 2), 4, "default"), ((3, 4, 3, 7), 25, "stable-diffusion, trailing")]
    else:
        configs = [((2, 3, 4, 2), 10, "default"), ((2, 5), 8, "stable-diffusion")]
    for i, (shape, n, config) in enumerate(configs):
        off = 10 * i
        sched = _ddim_scheduler(config, n)
        pick = torch.randint(0, n, (shape[0],), generator=ctx.generator(off + 3))
        pick[-1] = n - 1                                      # the last step: alphabar_prev = final_alpha_cumprod
        timesteps = sched.timesteps[pick]
        a, a_prev = _ddim_alpha_bars(sched, timesteps)
        x = ctx.randn(*shape, offset=off)
        eps = ctx.randn(*shape, offset=off + 1)
        yield Case(f"x {shape}, {n} DDIM steps ({config}), timesteps {timesteps.tolist()}",
                   (x, eps, a.to(ctx.device), a_prev.to(ctx.device)),
                   extra=dict(config=config, n=n, timesteps=timesteps))


def _ddim_judge(case: Case, got) -> None:
    x, eps, a, a_prev = case.args
    e = case.extra
    expected = ref.ddim_step(_ddim_scheduler(e["config"], e["n"]), x, eps, e["timesteps"])
    assert_close(got, expected, name=f"ddim_euler_step on {case.label}", variants=_ddim_variants(x, eps, a, a_prev))


EXERCISES = exercises(
    Exercise("gmm_score", 3, _gmm_cases, _gmm_judge, FORBID_GMM),
    Exercise("ddpm_score", 2, _ddpm_cases, _ddpm_judge),
    Exercise("vp_perturb", 2, _vp_cases, _vp_judge),
    Exercise("ve_perturb", 1, _ve_cases, _ve_judge, FORBID_VE),
    Exercise("reverse_sde_step", 2, _sde_cases, _sde_judge, FORBID_SDE),
    Exercise("probability_flow_step", 2, _ode_cases, _ode_judge, FORBID_ODE),
    Exercise("ddim_euler_step", 3, _ddim_cases, _ddim_judge, FORBID_DDIM),
)
