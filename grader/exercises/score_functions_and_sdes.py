"""Lesson 4 (Score Functions & SDEs): public checks and hidden tests for every exercise.

Public checks: fixed small inputs on the CPU. Hidden tests: a seed drawn at grading time,
shapes and settings the public checks do not use (batch > 1, 2D points and images,
non-square images, other beta / sigma ranges, per-sample timesteps), the real
google/ddpm-cifar10-32 UNet when present, and the GPU when there is one.

Stochastic steps are made deterministic by passing the noise tensor in: the reference draws
it from a seeded generator inside diffusers' scheduler, the student's function receives the
very same draw.
"""

from __future__ import annotations

import math

import torch

from .. import weights
from ..compare import ComparisonError, assert_close
from ..exercise import call
from ..reference import score_functions_and_sdes as ref
from ..runtime import generator, randn
from . import build, device_for, passed, seed_for

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


def _uniform(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator(seed))


# ---------------------------------------------------------------- 1. score of a Gaussian mixture
def _mixture(K: int, D: int, seed: int, dev) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping components of different widths, so that every part of the responsibilities matters."""
    if seed == 0 and (K, D) == (3, 2):  # the public check's mixture
        return (torch.tensor([[0.0, 0.0], [1.5, 0.5], [-1.0, 1.2]], device=dev),
                torch.tensor([0.5, 1.2, 0.8], device=dev), torch.tensor([0.5, 0.3, 0.2], device=dev))
    g = generator(seed)
    means = torch.randn(K, D, generator=g)
    stds = 0.5 + 1.2 * torch.rand(K, generator=g)
    weights_ = torch.rand(K, generator=g) + 0.1
    return means.to(dev), stds.to(dev), (weights_ / weights_.sum()).to(dev)


def _points(N: int, D: int, means: torch.Tensor, seed: int, dev, far: bool) -> torch.Tensor:
    """N query points near the components, or (``far``) far from all of them."""
    x = torch.randn(N, D, generator=generator(seed))
    if far:  # exp(-|x - mu|^2 / 2 std^2) underflows in float32 out here: 0/0 unless computed in log space
        x = x / x.norm(dim=1, keepdim=True) * (10.0 * means.abs().max().cpu() + 25.0)
    else:
        x = x * 2.0
    return x.to(dev)


def _check_gmm(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    # Far points get their own case: their scores are ~100x longer and would hide errors elsewhere.
    if hidden:
        cases = [(40, 2, 4, False), (7, 3, 2, False), (5, 5, 1, False), (12, 2, 6, False), (6, 3, 3, True)]
    else:
        cases = [(6, 2, 3, False), (2, 2, 3, True)]
    for i, (N, D, K, far) in enumerate(cases):
        means, stds, w = _mixture(K, D, seed + 10 * i, dev)
        x = _points(N, D, means, seed + 10 * i + 1, dev, far)
        expected = ref.gmm_score(x, means, stds, w)
        label = f"{N} {'far-away ' if far else ''}points in {D}D, {K} components"
        got = call(fn, "gmm_score", x, means, stds, w, forbidden=FORBID_GMM, case=label)
        v = lambda **kw: ref.gmm_score_variant(x, means, stds, w, **kw).to(dev)  # noqa: E731
        try:
            assert_close(got, expected, name=f"gmm_score on {label}", variants={
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
    return passed("gmm_score", len(cases), None, hidden)


# ---------------------------------------------------------------- 2. score from a noise prediction
def _ddpm_scheduler(dev):
    """The DDPM schedule of google/ddpm-cifar10-32 (1000 linear betas 1e-4..0.02), tensors on ``dev``."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          clip_sample=False)
    for attr in ("betas", "alphas", "alphas_cumprod"):
        setattr(sched, attr, getattr(sched, attr).to(dev))
    return sched


def _check_ddpm_score(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    # The public check stays instant on the stand-in; hidden tests use the real UNet when present.
    unet, source = weights.get("ddpm_unet", dev, standin=not hidden)
    cases = [(2, 32, 32), (2, 16, 24)] if hidden else [(2, 8, 8)]
    for i, (B, H, W) in enumerate(cases):
        sched = _ddpm_scheduler(dev)
        g = generator(seed + 100 + i)
        t = torch.randint(0, 1000, (B,), generator=g)
        t[0] = torch.randint(0, 40, (1,), generator=g)        # a small t: 1 - alphabar far from 1
        t = t.to(dev)
        x0 = randn(B, 3, H, W, seed=seed + 10 * i, dev=dev).clamp(-1, 1)
        noise = randn(B, 3, H, W, seed=seed + 10 * i + 1, dev=dev)
        x_t = sched.add_noise(x0, noise, t)
        expected = ref.ddpm_score(unet, sched.alphas_cumprod, x_t, t)
        label = f"x_t {(B, 3, H, W)}, t {t.tolist()}"
        got = call(fn, "ddpm_score", unet, sched, x_t, t, case=label)
        ab, a = _bcast(sched.alphas_cumprod[t], x_t), _bcast(sched.alphas[t], x_t)
        eps = -expected * (1 - ab).sqrt()                     # the UNet's output, without another forward
        assert_close(got, expected, name=f"ddpm_score on {label}", variants={
            "alpha_t (scheduler.alphas) in place of alpha-bar (scheduler.alphas_cumprod)": -eps / (1 - a).sqrt(),
            "1 - alphabar without its square root": -eps / (1 - ab),
            "sqrt(alphabar) in place of sqrt(1 - alphabar)": -eps / ab.sqrt(),
            "the noise prediction itself, not divided by the noise std": -eps,
            "the UNet called with t / 1000 (continuous time) instead of the integer DDPM step":
                lambda: -ref.unet_eps(unet, x_t, t.float() / 1000) / (1 - ab).sqrt(),
        })
    return passed("ddpm_score", len(cases), source, hidden)


# ---------------------------------------------------------------- 3. VP forward process
def _vp_variant(x0, noise, t, bmin, bmax, *, integral=None, std_power=2, sqrt_mean=True):
    if integral is None:
        integral = bmin * t + 0.5 * (bmax - bmin) * t ** 2
    ab = _bcast(torch.exp(-integral), x0)
    mean = ab.sqrt() if sqrt_mean else ab
    std = (1 - mean ** std_power).sqrt() if sqrt_mean else 1 - ab
    return mean * x0 + std * noise


def _check_vp(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [((3, 3, 8, 12), 0.1, 20.0), ((64, 2), 0.1, 20.0), ((2, 4, 6, 6), 0.05, 12.0), ((5, 7), 1.0, 5.0)]
    else:
        cases = [((4, 3, 4, 4), 0.1, 20.0)]
    for i, (shape, bmin, bmax) in enumerate(cases):
        B = shape[0]
        x0 = randn(*shape, seed=seed + 10 * i, dev=dev)
        noise = randn(*shape, seed=seed + 10 * i + 1, dev=dev)
        t = _uniform(B, 0.0, 1.0, seed + 10 * i + 2)
        t[0] = 0.02 + 0.1 * t[0]                              # one early time: mostly signal
        t = t.to(dev)
        expected = ref.vp_perturb(x0, noise, t, bmin, bmax)
        label = f"x0 {shape}, beta_min {bmin}, beta_max {bmax}"
        got = call(fn, "vp_perturb", x0, noise, t, bmin, bmax, case=label)
        beta_t = ref.vp_beta(t, bmin, bmax)
        assert_close(got, expected, name=f"vp_perturb on {label}", variants={
            "alphabar and 1 - alphabar without their square roots": _vp_variant(x0, noise, t, bmin, bmax, sqrt_mean=False),
            "alphabar = exp(-beta(t) t) (the rate at time t, not its integral from 0 to t)":
                _vp_variant(x0, noise, t, bmin, bmax, integral=beta_t * t),
            "the 1/2 of the integral of the linear part dropped (beta_min t + (beta_max - beta_min) t^2)":
                _vp_variant(x0, noise, t, bmin, bmax, integral=bmin * t + (bmax - bmin) * t ** 2),
            "noise std sqrt(1 - sqrt(alphabar)): the mean coefficient not squared":
                _vp_variant(x0, noise, t, bmin, bmax, std_power=1),
        })
    return passed("vp_perturb", len(cases), None, hidden)


# ---------------------------------------------------------------- 4. VE forward process
def _check_ve(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [((3, 3, 8, 12), 0.01, 1348.0), ((50, 2), 0.01, 50.0), ((4, 2, 5, 5), 0.002, 80.0)]
    else:
        cases = [((4, 3, 4, 4), 0.01, 50.0)]
    for i, (shape, smin, smax) in enumerate(cases):
        B = shape[0]
        x0 = randn(*shape, seed=seed + 10 * i, dev=dev)
        noise = randn(*shape, seed=seed + 10 * i + 1, dev=dev)
        t = _uniform(B, 0.0, 1.0, seed + 10 * i + 2)
        t[0] = 0.15 * t[0]                                    # one early time: sigma near sigma_min
        t = t.to(dev)
        expected = ref.ve_perturb(x0, noise, t, smin, smax)
        label = f"x0 {shape}, sigma_min {smin}, sigma_max {smax}"
        got = call(fn, "ve_perturb", x0, noise, t, smin, smax, forbidden=FORBID_VE, case=label)
        sigma = _bcast(ref.ve_sigma(t, smin, smax), x0)
        assert_close(got, expected, name=f"ve_perturb on {label}", variants={
            "the noise scaled by sigma^2 (the variance) instead of sigma": x0 + sigma ** 2 * noise,
            "sigma interpolated linearly in t, not geometrically": x0 + _bcast(smin + t * (smax - smin), x0) * noise,
            "time running backwards: sigma_max (sigma_min / sigma_max)^t": x0 + _bcast(smax * (smin / smax) ** t, x0) * noise,
            "a VP-style scaling of x_t by 1 / sqrt(1 + sigma^2)": (x0 + sigma * noise) / (1 + sigma ** 2).sqrt(),
        })
    return passed("ve_perturb", len(cases), None, hidden)


# ---------------------------------------------------------------- 5. reverse SDE: one Euler-Maruyama step
def _sde_variants(x, score, drift, g, dt, noise):
    g = _bcast(g, x)
    noise_term = g * math.sqrt(dt) * noise
    return {
        "the drift taken forward in time: x + (f - g^2 score) dt": x + (drift - g ** 2 * score) * dt + noise_term,
        "the noise scaled by g dt instead of g sqrt(dt)": x - (drift - g ** 2 * score) * dt + g * dt * noise,
        "the noise scaled by g without sqrt(dt)": x - (drift - g ** 2 * score) * dt + g * noise,
        "the probability-flow ODE's 1/2 in the score term (1/2 g^2 score)":
            x - (drift - 0.5 * g ** 2 * score) * dt + noise_term,
        "g instead of g^2 in front of the score": x - (drift - g * score) * dt + noise_term,
        "no noise at all (only the mean of the step)": x - (drift - g ** 2 * score) * dt,
    }


def _vp_case(shape, bmin, bmax, N, seed, dev):
    """Inputs of one VP step; the model's output eps is drawn, the score is -eps / std(t)."""
    B = shape[0]
    x = randn(*shape, seed=seed, dev=dev)
    eps = randn(*shape, seed=seed + 1, dev=dev)
    t = _uniform(B, 1e-3, 1.0, seed + 2).to(dev)
    mean, std = ref.vp_mean_std(t, bmin, bmax)
    score = -eps / _bcast(std, eps)
    beta_t = ref.vp_beta(t, bmin, bmax)
    drift = -0.5 * _bcast(beta_t, x) * x
    return x, eps, t, score, drift, torch.sqrt(beta_t), 1.0 / N


def _noise_like(shape, seed: int, dev) -> torch.Tensor:
    """The draw diffusers' randn_tensor makes from a CPU generator seeded with ``seed``."""
    return torch.randn(shape, generator=generator(seed)).to(dev)


def _check_reverse_sde(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [("vp", (3, 3, 8, 12), 0.1, 20.0, 1000), ("vp", (64, 2), 0.05, 12.0, 37),
                 ("ve", (2, 3, 6, 10), 0.01, 50.0, 25), ("ve", (40, 2), 0.002, 80.0, 100)]
    else:
        cases = [("vp", (2, 3, 4, 4), 0.1, 20.0, 50), ("ve", (2, 3, 4, 4), 0.01, 50.0, 10)]
    for i, (kind, shape, lo, hi, N) in enumerate(cases):
        s = seed + 10 * i
        noise_seed = s + 5
        if kind == "vp":
            x, eps, t, score, drift, g, dt = _vp_case(shape, lo, hi, N, s, dev)
            expected = ref.vp_sde_step(eps, x, t, lo, hi, N, generator(noise_seed))[0]
            label = f"VP SDE, x {shape}, beta {lo}..{hi}, {N} steps"
        else:
            sched = ref.ve_scheduler(lo, hi, N)
            idx = int(torch.randint(0, N, (1,), generator=generator(s + 3)))
            timestep = sched.timesteps[idx]
            sigma, adjacent = ref.ve_step_sigmas(sched, timestep, shape[0])
            x = randn(*shape, seed=s, dev=dev) * float(sigma[0])
            score = randn(*shape, seed=s + 1, dev=dev) / float(sigma[0])
            drift = torch.zeros_like(x)
            dt = 1.0 / N
            # ScoreSdeVeScheduler's g^2 dt is the variance added between neighbouring noise levels.
            g = ((sigma ** 2 - adjacent ** 2) / dt).sqrt().to(dev)
            expected = ref.ve_sde_step(sched, score, timestep, x, generator(noise_seed))[0]
            label = f"VE SDE, x {shape}, sigma {float(sigma[0]):.4g} -> {float(adjacent[0]):.4g}, {N} steps"
        noise = _noise_like(shape, noise_seed, dev)
        got = call(fn, "reverse_sde_step", x, score, drift, g, dt, noise, forbidden=FORBID_SDE, case=label)
        assert_close(got, expected, name=f"reverse_sde_step on {label}",
                     variants=_sde_variants(x, score, drift, g, dt, noise))
    return passed("reverse_sde_step", len(cases), None, hidden)


# ---------------------------------------------------------------- 6. probability-flow ODE: one Euler step
def _ode_variants(x, score, drift, g, dt):
    g = _bcast(g, x)
    return {
        "the reverse SDE's full g^2 score (the probability-flow ODE has 1/2 g^2)": x - (drift - g ** 2 * score) * dt,
        "the drift taken forward in time: x + (f - 1/2 g^2 score) dt": x + (drift - 0.5 * g ** 2 * score) * dt,
        "g instead of g^2 in front of the score": x - (drift - 0.5 * g * score) * dt,
        "the drift f left out": x + 0.5 * g ** 2 * score * dt,
    }


def _check_pf_ode(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    if hidden:
        cases = [("sigma", (2, 3, 6, 10), 30), ("vp", (3, 4, 5, 7), 0.1, 20.0, 1000),
                 ("vp", (64, 2), 0.05, 12.0, 23), ("sigma", (50, 2), 7)]
    else:
        cases = [("sigma", (2, 3, 4, 4), 10), ("vp", (2, 3, 4, 4), 0.1, 20.0, 50)]
    for i, case in enumerate(cases):
        kind, shape = case[0], case[1]
        s = seed + 10 * i
        if kind == "sigma":
            N = case[2]
            sched = ref.euler_scheduler(N)
            idx = int(torch.randint(0, N, (1,), generator=generator(s + 3)))
            sigma, sigma_next = float(sched.sigmas[idx]), float(sched.sigmas[idx + 1])
            x = randn(*shape, seed=s, dev=dev) * math.sqrt(1 + sigma ** 2)
            denoised = randn(*shape, seed=s + 1, dev=dev).clamp(-1, 1)
            expected = ref.euler_sigma_step(sched, idx, x, denoised)
            # sigma itself as the clock (sigma(t) = t): f = 0, g^2 = d(sigma^2)/dt = 2 sigma, dt = sigma - sigma_next.
            score = (denoised - x) / sigma ** 2
            drift = torch.zeros_like(x)
            g = torch.full((shape[0],), math.sqrt(2 * sigma), device=dev)
            dt = sigma - sigma_next
            label = f"Euler in sigma (EulerDiscreteScheduler), x {shape}, sigma {sigma:.4g} -> {sigma_next:.4g}"
        else:
            lo, hi, N = case[2], case[3], case[4]
            x, eps, t, score, drift, g, dt = _vp_case(shape, lo, hi, N, s, dev)
            expected = ref.vp_ode_step(eps, x, t, lo, hi, N)
            label = f"VP probability-flow ODE, x {shape}, beta {lo}..{hi}, {N} steps"
        got = call(fn, "probability_flow_step", x, score, drift, g, dt, forbidden=FORBID_ODE, case=label)
        assert_close(got, expected, name=f"probability_flow_step on {label}",
                     variants=_ode_variants(x, score, drift, g, dt))
    return passed("probability_flow_step", len(cases), None, hidden)


# ---------------------------------------------------------------- 7. DDIM = Euler in (x / sqrt(abar), sigma)
def _ddim_variants(x, eps, a, a_prev):
    a, a_prev = _bcast(a, x), _bcast(a_prev, x)
    sig, sig_prev = ((1 - a) / a).sqrt(), ((1 - a_prev) / a_prev).sqrt()
    xbar_prev = x / a.sqrt() + (sig_prev - sig) * eps
    vp_sig, vp_sig_prev = (1 - a).sqrt(), (1 - a_prev).sqrt()
    return {
        "sigma = sqrt(1 - alphabar) (the VP noise std) instead of sqrt((1 - alphabar) / alphabar)":
            a_prev.sqrt() * (x / a.sqrt() + (vp_sig_prev - vp_sig) * eps),
        "the step left in the rescaled variable x / sqrt(alphabar) (not multiplied back by sqrt(alphabar_prev))": xbar_prev,
        "the result scaled back with the current sqrt(alphabar) instead of sqrt(alphabar_prev)": a.sqrt() * xbar_prev,
        "the sigma step reversed: (sigma - sigma_prev) instead of (sigma_prev - sigma)":
            a_prev.sqrt() * (x / a.sqrt() + (sig - sig_prev) * eps),
        "the Euler step taken on x itself, without the change of variables": x + (sig_prev - sig) * eps,
    }


def _check_ddim(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    cases = [((4, 3, 6, 10), 50), ((3, 2, 5, 5), 10), ((16, 2), 4)] if hidden else [((2, 3, 4, 4), 10)]
    for i, (shape, n) in enumerate(cases):
        s = seed + 10 * i
        sched = ref.ddim_scheduler(n)
        B = shape[0]
        pick = torch.randint(0, n, (B,), generator=generator(s + 3))
        pick[-1] = n - 1                                      # the last step: alphabar_prev = 1 (final_alpha_cumprod)
        timesteps = sched.timesteps[pick]
        a, a_prev = ref.ddim_alpha_bars(sched, timesteps)
        a, a_prev = a.to(dev), a_prev.to(dev)
        x = randn(*shape, seed=s, dev=dev)
        eps = randn(*shape, seed=s + 1, dev=dev)
        expected = ref.ddim_step(sched, x, eps, timesteps)
        label = f"x {shape}, {n} DDIM steps, timesteps {timesteps.tolist()}"
        got = call(fn, "ddim_euler_step", x, eps, a, a_prev, forbidden=FORBID_DDIM, case=label)
        assert_close(got, expected, name=f"ddim_euler_step on {label}", variants=_ddim_variants(x, eps, a, a_prev))
    return passed("ddim_euler_step", len(cases), None, hidden)


EXERCISES = build(
    ("gmm_score", 3, _check_gmm), ("ddpm_score", 2, _check_ddpm_score),
    ("vp_perturb", 2, _check_vp), ("ve_perturb", 1, _check_ve),
    ("reverse_sde_step", 2, _check_reverse_sde), ("probability_flow_step", 2, _check_pf_ode),
    ("ddim_euler_step", 3, _check_ddim),
)
