"""Lesson 4 references: scores, the VP/VE forward processes, and one step of the reverse SDE
and of the probability-flow ODE, as diffusers' schedulers compute them.

Letters: B batch, C H W image channels/height/width, N points, D dimensions of a point,
K mixture components, T training timesteps.

diffusers has no score function for a known density: :func:`gmm_score` is an independent
implementation (autograd of a log-density written with ``torch.distributions``), and
tests/test_reference_score_functions_and_sdes.py checks it against closed forms. Everything
else calls the diffusers scheduler that computes it, or is a marked copy of one of its lines
with a test that keeps the copy equal to the scheduler.
"""

from __future__ import annotations

import torch


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts over one sample's elements."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------- 1. the score of a Gaussian mixture
def gmm_log_prob(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log p(x) of an isotropic Gaussian mixture, via torch.distributions: x (N, D) -> (N,).

    means (K, D), stds (K,) (component k has covariance stds[k]**2 * I), weights (K,) summing to 1.
    """
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    K, D = means.shape
    comps = Independent(Normal(means, stds[:, None].expand(K, D)), 1)
    return MixtureSameFamily(Categorical(probs=weights), comps).log_prob(x)


def gmm_score(x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x) by autograd of :func:`gmm_log_prob`, computed in float64: (N, D), x's dtype."""
    with torch.enable_grad():
        xd = x.detach().double().requires_grad_(True)
        logp = gmm_log_prob(xd, means.double(), stds.double(), weights.double())
        (grad,) = torch.autograd.grad(logp.sum(), xd)
    return grad.to(x.dtype)


def gmm_score_variant(x, means, stds, weights, *, normalise=True, use_weights=True, use_norm_const=True,
                      equal_resp=False, power=2):
    """The mixture score with a classic mistake switched on (for diagnoses), in float64."""
    x, means, stds, weights = (t.double() for t in (x, means, stds, weights))
    D = x.shape[-1]
    diff = means[None] - x[:, None]                                            # (N, K, D)
    logc = -0.5 * (diff ** 2).sum(-1) / stds ** 2                              # (N, K)
    if use_norm_const:
        logc = logc - D * torch.log(stds) - 0.5 * D * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
    if use_weights:
        logc = logc + torch.log(weights)
    if equal_resp:
        resp = torch.full_like(logc, 1.0 / logc.shape[1])
    elif normalise:
        resp = logc.softmax(dim=1)
    else:
        resp = logc.exp()
    return (resp[..., None] * diff / stds[None, :, None] ** power).sum(1).float()


# ---------------------------------------------------------------- 2. the score from a noise prediction
def ddpm_score(unet, alphas_cumprod: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """score = -eps / sqrt(1 - alphabar_t) with eps = unet(x_t, t): x_t (B, C, H, W), t (B,) -> (B, C, H, W).

    The same conversion as ScoreSdeVpScheduler.step_pred (``score = -score / std``) with
    DDPM's discrete alphabar (tests check it against DDPMScheduler's x0 prediction: Tweedie).
    """
    with torch.no_grad():
        eps = unet(x_t, t).sample
    alpha_bar = alphas_cumprod.to(x_t.device)[t]
    return -eps / _per_sample((1 - alpha_bar) ** 0.5, eps)


def unet_eps(unet, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(x_t, t).sample


# ---------------------------------------------------------------- 3. the VP forward process
def vp_mean_std(t: torch.Tensor, beta_min: float, beta_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(alphabar(t)) and sqrt(1 - alphabar(t)) of the VP SDE with linear beta(t).

    Copied from diffusers.schedulers.deprecated.scheduling_sde_vp.ScoreSdeVpScheduler.step_pred
    (tests/test_reference_score_functions_and_sdes.py keeps the copy equal to it).
    """
    log_mean_coeff = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    mean = torch.exp(log_mean_coeff)
    std = torch.sqrt(1.0 - torch.exp(2.0 * log_mean_coeff))
    return mean, std


def vp_perturb(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """x_t = sqrt(alphabar(t)) x0 + sqrt(1 - alphabar(t)) noise; x0 (B, ...), t (B,) in [0, 1].

    In x0's dtype: the coefficients are cast to it first, as DDPMScheduler.add_noise casts its
    alphas_cumprod to the sample's dtype (fp16 latents in, fp16 out).
    """
    mean, std = vp_mean_std(t, beta_min, beta_max)
    return _per_sample(mean, x0).to(x0.dtype) * x0 + _per_sample(std, x0).to(x0.dtype) * noise


def vp_beta(t: torch.Tensor, beta_min: float, beta_max: float) -> torch.Tensor:
    """beta(t) = beta_min + t (beta_max - beta_min), as ScoreSdeVpScheduler.step_pred computes it."""
    return beta_min + t * (beta_max - beta_min)


# ---------------------------------------------------------------- 4. the VE forward process
def ve_sigma(t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t, from ScoreSdeVeScheduler.set_sigmas: t (B,) -> (B,)."""
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(sigma_min=sigma_min, sigma_max=sigma_max)
    sched.timesteps = t.detach().float().cpu()   # set_sigmas evaluates sigma at self.timesteps
    sched.set_sigmas(len(t), sigma_min, sigma_max)
    return sched.sigmas.to(device=t.device, dtype=torch.float32)


def ve_perturb(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """x_t = x0 + sigma(t) noise; x0 (B, ...), t (B,) in [0, 1]."""
    return x0 + _per_sample(ve_sigma(t, sigma_min, sigma_max), x0) * noise


# ---------------------------------------------------------------- 5. reverse SDE, Euler-Maruyama
def vp_sde_step(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, beta_min: float, beta_max: float,
                num_steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ScoreSdeVpScheduler.step_pred: (x at t - 1/num_steps, its noise-free mean). eps (B, ...), t (B,)."""
    from diffusers.schedulers import ScoreSdeVpScheduler

    sched = ScoreSdeVpScheduler(beta_min=beta_min, beta_max=beta_max)
    sched.set_timesteps(num_steps, device=x.device)
    return sched.step_pred(eps, x, t, generator=generator)


def ve_step_sigmas(scheduler, timestep: float, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma, adjacent sigma), each (B,), that ScoreSdeVeScheduler.step_pred uses at ``timestep``.

    Copied from diffusers.schedulers.scheduling_sde_ve.ScoreSdeVeScheduler.step_pred (its
    index arithmetic); tests check that step_pred's noise scale is sqrt(sigma^2 - adjacent^2).
    """
    timestep = timestep * torch.ones(batch)
    timesteps = (timestep * (len(scheduler.timesteps) - 1)).long()
    sigma = scheduler.discrete_sigmas[timesteps]
    adjacent = scheduler.get_adjacent_sigma(timesteps, timestep)
    return sigma, adjacent


def ve_scheduler(sigma_min: float, sigma_max: float, num_steps: int):
    """A ScoreSdeVeScheduler set up as ScoreSdeVePipeline does (set_timesteps, then set_sigmas)."""
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler(sigma_min=sigma_min, sigma_max=sigma_max)
    sched.set_timesteps(num_steps)
    sched.set_sigmas(num_steps)
    return sched


def ve_sde_step(scheduler, score: torch.Tensor, timestep: float, x: torch.Tensor,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ScoreSdeVeScheduler.step_pred: (prev_sample, prev_sample_mean)."""
    out = scheduler.step_pred(score, timestep, x, generator=generator)
    return out.prev_sample, out.prev_sample_mean


# ---------------------------------------------------------------- 6. probability-flow ODE, Euler
def euler_scheduler(num_steps: int):
    """EulerDiscreteScheduler predicting the clean sample (model_output = denoised), deterministic."""
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(prediction_type="sample")
    sched.set_timesteps(num_steps)
    sched.is_scale_input_called = True   # we step on given samples: no scale_model_input warning
    return sched


def euler_sigma_step(scheduler, index: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """EulerDiscreteScheduler.step at step ``index``: x + (sigma_next - sigma) (x - denoised) / sigma."""
    scheduler._step_index = index
    return scheduler.step(denoised, scheduler.timesteps[index], x).prev_sample


def vp_ode_step(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, beta_min: float, beta_max: float,
                num_steps: int) -> torch.Tensor:
    """Euler on the VP probability-flow ODE: the mean of ScoreSdeVpScheduler.step_pred with the score halved.

    step_pred's mean is x - (f - g^2 s) dt; passing eps / 2 turns its score s = -eps/std into s/2,
    which gives x - (f - g^2 s / 2) dt: the probability-flow ODE's Euler step.
    """
    g = torch.Generator("cpu").manual_seed(0)   # the noise it draws is not used
    return vp_sde_step(eps / 2, x, t, beta_min, beta_max, num_steps, g)[1]


# ---------------------------------------------------------------- 7. DDIM is Euler in (x / sqrt(abar), sigma)
def ddim_scheduler(num_steps: int):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(num_steps)
    return sched


def ddim_alpha_bars(scheduler, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphabar_t, alphabar_prev), each (B,), that DDIMScheduler.step uses at each timestep.

    Copied from diffusers.schedulers.scheduling_ddim.DDIMScheduler.step.
    """
    cur, prev = [], []
    for t in timesteps.tolist():
        prev_timestep = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        cur.append(scheduler.alphas_cumprod[t])
        prev.append(scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod)
    return torch.stack(cur), torch.stack(prev)


def ddim_step(scheduler, x: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """DDIMScheduler.step with eta = 0, one sample at a time (each has its own timestep)."""
    out = [scheduler.step(eps[b:b + 1], int(t), x[b:b + 1], eta=0.0).prev_sample
           for b, t in enumerate(timesteps.tolist())]
    return torch.cat(out)


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "annotations")]
