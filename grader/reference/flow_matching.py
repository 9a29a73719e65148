"""Lesson 5 references: what diffusers computes for flow matching (SD3 / Flux conventions).

Letters: B batch, C channels, H W latent height/width, N training timesteps (1000),
n inference steps. sigma is the noise level: sigma = 1 is pure noise, sigma = 0 is data.

Everything here calls diffusers itself where diffusers has the computation:
``FlowMatchEulerDiscreteScheduler`` (forward process, shift, inference schedule, Euler
step) and ``diffusers.training_utils`` (timestep density, loss weighting). Three pieces are
marked copies: the training scripts' loss and sigma lookup (diffusers' examples/ folder is
not installed) and ``calculate_shift``, because importing the Flux pipeline module pulls in
transformers' image processors, which log to stderr (a graded cell that writes to stderr
scores 0). tests/test_reference_flow_matching.py checks each against what is installed.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def _scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """sigma (B,) -> (B, 1, ..., 1) broadcastable against ``like`` (B, ...)."""
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------- 1. the straight path
def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor):
    """(x_t, target): ``scale_noise`` (x_t = sigma*noise + (1-sigma)*x0) and the velocity noise - x0.

    x0, noise (B, ...); sigma (B,) with values in [0, 1], distinct. The scheduler looks each
    sigma up in its own table, so the table is set to exactly these sigmas (shift 1 leaves
    them unchanged) before calling ``scale_noise``, as img2img pipelines do.
    """
    sched = _scheduler()
    sched.set_timesteps(sigmas=sigma.detach().cpu().tolist())
    timesteps = sched.timesteps.to(x0.device)
    with torch.no_grad():
        x_t = sched.scale_noise(x0, timesteps, noise)
    return x_t, noise - x0


# ---------------------------------------------------------------- 2. the loss
def flow_matching_loss(model_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       sigma: torch.Tensor, weighting_scheme: str) -> torch.Tensor:
    """Per-sample conditional flow-matching loss (B,), as diffusers' Flux/SD3 training scripts compute it.

    Copied from diffusers examples/dreambooth/train_dreambooth_flux.py (``target = noise -
    model_input`` and the "Compute regular loss" lines, before the final ``loss.mean()``);
    train_dreambooth_sd3.py computes the same with ``--precondition_outputs 0``. The examples
    are not part of the installed package, so no test can import them.
    """
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    sigmas = _per_sample(sigma, x0)                                   # (B, 1, ..., 1): get_sigmas(n_dim=ndim)
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=weighting_scheme, sigmas=sigmas)
    target = noise - x0
    return torch.mean((weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(target.shape[0], -1), 1)


# ---------------------------------------------------------------- 3. which sigmas to train on
def draws(weighting_scheme: str, batch_size: int, seed: int) -> torch.Tensor:
    """The random numbers ``compute_density_for_timestep_sampling`` draws with ``generator`` seeded
    ``seed``: standard normal for "logit_normal" (mean/std applied afterwards), uniform otherwise."""
    g = torch.Generator("cpu").manual_seed(seed)
    if weighting_scheme == "logit_normal":
        return torch.normal(mean=0.0, std=1.0, size=(batch_size,), generator=g)
    return torch.rand(size=(batch_size,), generator=g)


def timestep_density(weighting_scheme: str, batch_size: int, seed: int, logit_mean: float = 0.0,
                     logit_std: float = 1.0, mode_scale: float = 1.29) -> torch.Tensor:
    """``compute_density_for_timestep_sampling`` with a generator seeded ``seed``: u (B,) in (0, 1)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    g = torch.Generator("cpu").manual_seed(seed)
    return compute_density_for_timestep_sampling(weighting_scheme, batch_size, logit_mean=logit_mean,
                                                 logit_std=logit_std, mode_scale=mode_scale, generator=g)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The scheduler's static shift s*sigma / (1 + (s-1)*sigma), through ``set_timesteps(sigmas=...)``."""
    sched = _scheduler(shift=shift)
    sched.set_timesteps(sigmas=sigmas.detach().cpu().reshape(-1).tolist())
    return sched.sigmas[:-1].reshape(sigmas.shape).to(sigmas.device)


def training_sigmas(u: torch.Tensor, num_train_timesteps: int = 1000, shift: float = 1.0) -> torch.Tensor:
    """sigma (B,) for the u's, as train_dreambooth_sd3.py picks them from the training scheduler.

    Copied from the script: ``indices = (u * N).long()``, ``timesteps = scheduler.timesteps[indices]``,
    then ``get_sigmas`` looks each timestep up in ``scheduler.sigmas``.
    """
    sched = _scheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    indices = (u.cpu() * sched.config.num_train_timesteps).long()
    timesteps = sched.timesteps[indices]
    step_indices = [(sched.timesteps == t).nonzero().item() for t in timesteps]
    return sched.sigmas[step_indices].flatten().to(u.device)


# ---------------------------------------------------------------- 4. resolution-dependent shift
def flux_image_seq_len(height: int, width: int, vae_scale_factor: int = 8) -> int:
    """Tokens of a Flux image: the packed latent's length (FluxPipeline.prepare_latents + _pack_latents)."""
    h = 2 * (int(height) // (vae_scale_factor * 2))   # latent height, made even for the 2x2 packing
    w = 2 * (int(width) // (vae_scale_factor * 2))
    return (h // 2) * (w // 2)


def calculate_shift(image_seq_len, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15):
    """Copied from diffusers.pipelines.flux.pipeline_flux.calculate_shift."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    mu = image_seq_len * m + b
    return mu


def flux_mu(height: int, width: int, vae_scale_factor: int = 8, base_seq_len: int = 256, max_seq_len: int = 4096,
            base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu as FluxPipeline.__call__ computes it for an image of height x width pixels."""
    return calculate_shift(flux_image_seq_len(height, width, vae_scale_factor), base_seq_len, max_seq_len,
                           base_shift, max_shift)


# ---------------------------------------------------------------- 5. the inference schedule
def flow_schedule(num_inference_steps: int, shift: float = 1.0, mu: float | None = None,
                  sigmas: Sequence[float] | None = None, num_train_timesteps: int = 1000):
    """(timesteps (n,), sigmas (n+1,)) of ``FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift,
    use_dynamic_shifting=mu is not None).set_timesteps(num_inference_steps, sigmas=sigmas, mu=mu)``."""
    sched = _scheduler(num_train_timesteps=num_train_timesteps, shift=shift, use_dynamic_shifting=mu is not None)
    sched.set_timesteps(num_inference_steps, sigmas=None if sigmas is None else list(sigmas), mu=mu)
    return sched.timesteps, sched.sigmas


def default_sigmas(num_inference_steps: int, shift: float = 1.0, dynamic: bool = False,
                   num_train_timesteps: int = 1000) -> torch.Tensor:
    """The unshifted sigmas ``set_timesteps`` starts from when none are given (float32, (n,)):
    ``linspace(sigma_max * N, sigma_min * N, n) / N`` with the scheduler's own sigma_max/sigma_min."""
    import numpy as np

    sched = _scheduler(num_train_timesteps=num_train_timesteps, shift=shift, use_dynamic_shifting=dynamic)
    N = sched.config.num_train_timesteps
    t = np.linspace(sched.sigma_max * N, sched.sigma_min * N, num_inference_steps)
    return torch.from_numpy(t / N).float()


# ---------------------------------------------------------------- 6. Euler
def euler_step(sample: torch.Tensor, model_output: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """``FlowMatchEulerDiscreteScheduler.step`` from sigma to sigma_next (sigma > sigma_next >= 0)."""
    sched = _scheduler()
    sched.set_timesteps(sigmas=[sigma] if sigma_next == 0 else [sigma, sigma_next], device=sample.device)
    return sched.step(model_output, sched.timesteps[0], sample).prev_sample


def euler_sample(velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 sigmas: torch.Tensor) -> torch.Tensor:
    """A pipeline's denoising loop with the scheduler: sigmas (n+1,) strictly decreasing, ending at 0.

    velocity_fn(x, sigma) gets sigma as a (B,) tensor on x's device (pipelines pass
    ``t.expand(B)``); the scheduler's own table is set to these sigmas (shift 1).
    """
    assert float(sigmas[-1]) == 0.0
    sched = _scheduler()
    sched.set_timesteps(sigmas=sigmas[:-1].detach().cpu().tolist(), device=noise.device)
    x = noise
    B = noise.shape[0]
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            v = velocity_fn(x, sched.sigmas[i].to(noise.device).expand(B))
            x = sched.step(v, t, x).prev_sample
    return x


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "annotations", "Callable",
                                                                              "Sequence")]
