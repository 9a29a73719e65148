"""Lesson 6 references: the consistency function's parameterisation, one multistep
consistency-sampling step, and the consistency training and distillation losses.

Letters: B batch, C H W image channels/height/width, D dimensions of a toy point, K mixture
components. ``sigma`` is the paper's time t (EDM's sigma(t) = t); per-sample sigmas are (B,).

The scalings and the step call diffusers' ``CMStochasticIterativeScheduler``. diffusers has no
consistency training or distillation loss: :func:`consistency_training_loss` and
:func:`consistency_distillation_loss` are independent implementations of Song et al. 2023,
Algorithms 2 and 3, and tests/test_reference_consistency_models.py checks them analytically
(zero loss along a known trajectory, the boundary condition, the stop-gradient).
"""

from __future__ import annotations

import numpy as np
import torch


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts over one sample's elements."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def scheduler(sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5, rho: float = 7.0,
              num_train_timesteps: int = 40):
    from diffusers import CMStochasticIterativeScheduler

    return CMStochasticIterativeScheduler(num_train_timesteps=num_train_timesteps, sigma_min=sigma_min,
                                          sigma_max=sigma_max, sigma_data=sigma_data, rho=rho)


# ---------------------------------------------------------------- 1. the boundary scalings
def boundary_scalings(sigma: torch.Tensor, sigma_min: float, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out), each like ``sigma``: CMStochasticIterativeScheduler.get_scalings_for_boundary_condition."""
    return scheduler(sigma_min=sigma_min, sigma_data=sigma_data).get_scalings_for_boundary_condition(sigma)


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's (c_skip, c_out) (the scheduler's ``get_scalings``): no boundary condition at sigma_min."""
    return scheduler(sigma_data=sigma_data).get_scalings(sigma)


# ---------------------------------------------------------------- 2. the consistency function
def input_scaling(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """c_in = 1 / sqrt(sigma^2 + sigma_data^2).

    Copied from CMStochasticIterativeScheduler.scale_model_input (which reads sigma from its
    step index); tests keep the copy equal to it.
    """
    return 1.0 / (sigma ** 2 + sigma_data ** 2) ** 0.5


def time_input(sigma: torch.Tensor) -> torch.Tensor:
    """The network's time input, CMStochasticIterativeScheduler.sigma_to_t: 250 ln(sigma), (B,) -> (B,)."""
    t = scheduler().sigma_to_t(sigma.detach().double().cpu().numpy())
    return torch.from_numpy(np.asarray(t)).to(device=sigma.device, dtype=sigma.dtype)


def consistency_function(net, x: torch.Tensor, sigma: torch.Tensor, sigma_min: float, sigma_data: float,
                         *, scalings=None, c_in=None, t=None) -> torch.Tensor:
    """f(x, sigma) = c_skip x + c_out F(c_in x, 250 ln sigma): x (B, ...), sigma (B,) -> like x.

    ``scalings``, ``c_in`` and ``t`` replace the right ones (for diagnoses only).
    """
    c_skip, c_out = scalings if scalings is not None else boundary_scalings(sigma, sigma_min, sigma_data)
    c_in = input_scaling(sigma, sigma_data) if c_in is None else c_in
    t = time_input(sigma) if t is None else t
    out = net(_per_sample(c_in, x) * x, t)
    return _per_sample(c_skip, x) * x + _per_sample(c_out, x) * out


# ---------------------------------------------------------------- 3. one multistep sampling step
def sampling_scheduler(config: dict, num_inference_steps: int | None = None, timesteps: list | None = None):
    """A CMStochasticIterativeScheduler set up as ConsistencyModelPipeline does."""
    sched = scheduler(**config)
    sched.set_timesteps(num_inference_steps=num_inference_steps, timesteps=timesteps)
    return sched


def consistency_step(sched, index: int, model_output: torch.Tensor, sample: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """CMStochasticIterativeScheduler.step at step ``index`` (its noise drawn from ``generator``)."""
    sched._step_index = index
    sched.is_scale_input_called = True   # we step on given model outputs: no scale_model_input warning
    return sched.step(model_output, sched.timesteps[index], sample, generator=generator).prev_sample


def pipeline_samples(unet, config: dict, steps, class_labels, seed: int, batch: int, step=None) -> torch.Tensor:
    """Every intermediate sample of ConsistencyModelPipeline: (S, B, C, H, W) for S steps.

    ``steps``: an int (num_inference_steps) or a list (the pipeline's custom ``timesteps``).
    ``step``: a replacement for the scheduler's ``step`` (same signature), or None for its own.
    """
    from diffusers import ConsistencyModelPipeline

    pipe = ConsistencyModelPipeline(unet=unet, scheduler=scheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    sched, out = pipe.scheduler, []
    inner = step or sched.step

    def recording_step(model_output, timestep, sample, generator=None, return_dict=True):
        prev = inner(model_output, timestep, sample, generator=generator, return_dict=False)[0]
        out.append(prev.detach().clone())
        return (prev,)

    sched.step = recording_step
    kw = dict(timesteps=list(steps), num_inference_steps=None) if isinstance(steps, (list, tuple)) else dict(num_inference_steps=int(steps))
    with torch.no_grad():
        pipe(batch_size=batch, class_labels=list(class_labels), generator=torch.Generator("cpu").manual_seed(seed),
             output_type="pt", **kw)
    return torch.stack(out)


# ---------------------------------------------------------------- 4. consistency training (Algorithm 3)
def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b): the squared L2 distance averaged over each sample's elements, then over the batch."""
    return ((a - b) ** 2).flatten(1).mean(1).mean()


def consistency_training_loss(online, target, x0: torch.Tensor, sigma_n: torch.Tensor, sigma_n1: torch.Tensor,
                              noise: torch.Tensor, sigma_min: float, sigma_data: float) -> torch.Tensor:
    """d(f_theta(x0 + t_{n+1} z, t_{n+1}), f_theta-(x0 + t_n z, t_n)), lambda = 1: a 0-d tensor.

    x0, noise (B, ...); sigma_n < sigma_n1, each (B,). The target network's branch carries no
    gradient (stop-gradient on theta-minus).
    """
    x_n1 = x0 + _per_sample(sigma_n1, x0) * noise
    x_n = x0 + _per_sample(sigma_n, x0) * noise
    pred = consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data)
    with torch.no_grad():
        tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data)
    return _distance(pred, tgt)


# ---------------------------------------------------------------- 5. consistency distillation (Algorithm 2)
def euler_teacher_step(score, x: torch.Tensor, sigma: torch.Tensor, sigma_to: torch.Tensor) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dt = -t grad log p_t(x) from sigma to sigma_to."""
    dxdt = -_per_sample(sigma, x) * score(x, sigma)
    return x + _per_sample(sigma_to - sigma, x) * dxdt


def consistency_distillation_loss(online, target, score, x0: torch.Tensor, sigma_n: torch.Tensor,
                                  sigma_n1: torch.Tensor, noise: torch.Tensor, sigma_min: float,
                                  sigma_data: float) -> torch.Tensor:
    """d(f_theta(x_{n+1}, t_{n+1}), f_theta-(x^phi_n, t_n)) with x^phi_n one teacher Euler step back: 0-d."""
    x_n1 = x0 + _per_sample(sigma_n1, x0) * noise
    with torch.no_grad():
        x_n = euler_teacher_step(score, x_n1, sigma_n1, sigma_n)
        tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data)
    pred = consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data)
    return _distance(pred, tgt)


def mixture_score(x: torch.Tensor, sigma: torch.Tensor, means: torch.Tensor, stds: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Exact score of a Gaussian mixture blurred to noise level sigma: x (B, D), sigma (B,) -> (B, D).

    Each component N(mu_k, s_k^2 I) becomes N(mu_k, (s_k^2 + sigma^2) I); the score is lesson 4's
    autograd reference (grader.reference.score_functions_and_sdes.gmm_score), one sigma at a time.
    """
    from .score_functions_and_sdes import gmm_score

    out = torch.empty_like(x)
    for s in torch.unique(sigma):
        rows = sigma == s
        out[rows] = gmm_score(x[rows], means, (stds ** 2 + s ** 2).sqrt(), weights)
    return out


# ---------------------------------------------------------------- the sigma discretisation (given code)
def karras_boundaries(N: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """t_1 < ... < t_N (paper Sec. 5 / App. C): the scheduler's Karras grid, ascending, float64 (N,)."""
    sched = scheduler(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, num_train_timesteps=N)
    return torch.from_numpy(sched._convert_to_karras(np.linspace(0, 1, N))[::-1].copy())


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "np", "annotations")]
