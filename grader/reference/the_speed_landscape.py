"""Lesson 8 references: timestep spacing, Heun's step, DPM-Solver++(2M)'s step, and how many
model calls a diffusers sampling loop makes, as diffusers' schedulers compute them.

Letters: B batch (points), D dimensions of a point, N inference steps, T training timesteps.

Samples follow each scheduler's own convention (checked in
tests/test_reference_the_speed_landscape.py):

* ``HeunDiscreteScheduler`` / ``EulerDiscreteScheduler`` step the *variance-exploding* sample
  x = x0 + sigma * eps (Karras et al. 2022, "EDM"), sigma = sqrt((1 - abar) / abar);
* ``DPMSolverMultistepScheduler`` steps the *variance-preserving* sample
  x = alpha_t * x0 + sigma_t * eps with alpha_t = 1 / sqrt(1 + sigma^2), sigma_t = sigma * alpha_t,
  and takes the same ``sigma`` (its ``scheduler.sigmas``) as its time variable.

The step functions here are independent implementations of the papers' updates (Karras
et al. 2022, Alg. 1; Lu et al. 2022, DPM-Solver++ Alg. 2); the ``*_scheduler_sample`` loops
run diffusers' schedulers themselves and are what the judge compares whole sampling loops with.
"""

from __future__ import annotations

from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- 1. timestep spacing
def spaced_timesteps(num_inference_steps: int, num_train_timesteps: int = 1000, spacing: str = "leading",
                     steps_offset: int = 0) -> torch.Tensor:
    """``DDIMScheduler(num_train_timesteps, timestep_spacing=spacing, steps_offset).set_timesteps(N).timesteps``:
    (N,) int64, decreasing."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=num_train_timesteps, timestep_spacing=spacing,
                          steps_offset=steps_offset)
    sched.set_timesteps(num_inference_steps)
    return sched.timesteps.clone()


# ---------------------------------------------------------------- 2. Heun (Karras et al. 2022, Algorithm 1)
def heun_step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, denoiser: Denoiser) -> torch.Tensor:
    """One step of EDM's Heun sampler from sigma to sigma_next: x (B, D) variance-exploding.

    d = (x - D(x, sigma)) / sigma; x' = x + (sigma_next - sigma) d; unless sigma_next == 0,
    correct with the slope at (x', sigma_next): x + (sigma_next - sigma) (d + d') / 2.
    """
    denoised = denoiser(x, sigma)
    d = (x - denoised) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if float(sigma_next) == 0.0:
        return x_euler
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def euler_step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """EulerDiscreteScheduler.step (variance-exploding): x + (sigma_next - sigma) (x - D) / sigma."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma


# ---------------------------------------------------------------- 3. DPM-Solver++(2M) (Lu et al. 2022, Alg. 2)
def alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_t, sigma_t) of the VP process at diffusers' sigma = sigma_t / alpha_t."""
    alpha_t = 1 / torch.sqrt(sigma ** 2 + 1)
    return alpha_t, sigma * alpha_t


def dpmpp_2m_step(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, denoised: torch.Tensor,
                  prev_denoised: torch.Tensor | None = None, sigma_prev: torch.Tensor | None = None) -> torch.Tensor:
    """One DPM-Solver++(2M) step of the VP sample x (B, D) from sigma to sigma_next.

    lambda = log(alpha_t / sigma_t) = -log(sigma); h = lambda_next - lambda.
    First order (no previous prediction, or sigma_next == 0 as diffusers' final step):
        x_next = (sigma_t' / sigma_t) x - alpha_t' (e^{-h} - 1) D.
    Second order: D is replaced by (1 + 1/(2r)) D - 1/(2r) D_prev with r = h_prev / h.
    """
    a_next, s_next = alpha_sigma(sigma_next)
    a, s = alpha_sigma(sigma)
    if float(sigma_next) == 0.0:
        return a_next * denoised            # h = inf: the step lands on the prediction (alpha = 1)
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        h_prev = torch.log(sigma_prev) - torch.log(sigma)
        r = h_prev / h
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (s_next / s) * x - a_next * torch.expm1(-h) * D


# ---------------------------------------------------------------- sampling loops run by diffusers itself
def heun_scheduler_sample(config: dict, num_inference_steps: int, x: torch.Tensor, denoiser: Denoiser,
                          prediction_type: str = "sample") -> tuple[torch.Tensor, int]:
    """HeunDiscreteScheduler's loop as a pipeline runs it: (final sample, number of model calls).

    ``x`` is the variance-exploding start at the scheduler's first sigma; the model returns
    what ``prediction_type`` asks for, computed from ``denoiser``.
    """
    from diffusers import HeunDiscreteScheduler

    sched = HeunDiscreteScheduler(**config, prediction_type=prediction_type)
    sched.set_timesteps(num_inference_steps)
    calls = 0
    for i, t in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        D = denoiser(x, sigma)
        calls += 1
        out = _ve_model_output(x, sigma, D, prediction_type)
        x = sched.step(out, t, x).prev_sample
    return x, calls


def _ve_model_output(x, sigma, D, prediction_type):
    """What an epsilon/v/sample network outputs for a VE sample x (the scheduler scales the input)."""
    if prediction_type == "sample":
        return D
    eps = (x - D) / sigma
    if prediction_type == "epsilon":
        return eps
    a, s = alpha_sigma(sigma)       # v = alpha eps - sigma_t x0
    return a * eps - s * D


def vp_model_output(x, sigma, D, prediction_type):
    """What an epsilon/v/sample network outputs for a VP sample x with data prediction D."""
    if prediction_type == "sample":
        return D
    a, s = alpha_sigma(sigma)
    eps = (x - a * D) / s
    if prediction_type == "epsilon":
        return eps
    return a * eps - s * D


def dpm_scheduler_sample(config: dict, num_inference_steps: int, x: torch.Tensor, vp_denoiser: Denoiser,
                         prediction_type: str = "sample") -> torch.Tensor:
    """DPMSolverMultistepScheduler's loop (order 2, dpmsolver++, midpoint): the final VP sample."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(**config, prediction_type=prediction_type)
    sched.set_timesteps(num_inference_steps)
    for i, t in enumerate(sched.timesteps):
        sigma = sched.sigmas[i]
        out = vp_model_output(x, sigma, vp_denoiser(x, sigma), prediction_type)
        x = sched.step(out, t, x).prev_sample
    return x


# ---------------------------------------------------------------- 4. counting model calls
def count_model_calls(scheduler, num_inference_steps: int, guidance_scale: float = 1.0) -> int:
    """Network evaluations per generated sample of a diffusers text-to-image loop.

    Pipelines call the network once per entry of ``scheduler.timesteps`` (after
    ``set_timesteps``); classifier-free guidance (``guidance_scale > 1``, the SD pipelines'
    ``do_classifier_free_guidance``) runs it on two inputs each time.
    """
    import copy

    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(num_inference_steps)
    return len(sched.timesteps) * (2 if guidance_scale > 1 else 1)


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "annotations", "Callable")]
