"""Wrong implementations for lesson 8. Each function's name: <exercise>__<mistake>."""

import copy

import numpy as np
import torch

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"spaced_timesteps_answer": "spaced_timesteps__trailing_with_offset", "heun_step_answer": "heun_step__plain_euler"},
    ["count_model_calls_answer"],
)


# ---------------------------------------------------------------- spaced_timesteps
def _grid(N, T, spacing, steps_offset, *, leading_ratio=None, trailing_offset=0, trailing_minus=1, truncate=False):
    if spacing == "linspace":
        t = np.linspace(0, T - 1, N)
        t = t.astype(np.int64) if truncate else t.round().astype(np.int64)
        return torch.from_numpy(t[::-1].copy())
    if spacing == "leading":
        ratio = T // N if leading_ratio is None else leading_ratio
        return torch.from_numpy((np.arange(0, N) * ratio).round()[::-1].astype(np.int64).copy()) + steps_offset
    t = np.round(np.arange(T, 0, -T / N)).astype(np.int64) - trailing_minus
    return torch.from_numpy(t) + trailing_offset


def spaced_timesteps__trailing_with_offset(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                           steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset,
                 trailing_offset=steps_offset if spacing == "trailing" else 0)


def spaced_timesteps__leading_without_offset(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                             steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, 0)


def spaced_timesteps__leading_fractional_ratio(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                               steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset,
                 leading_ratio=num_train_timesteps / num_inference_steps)


def spaced_timesteps__trailing_without_minus_one(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                                 steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset, trailing_minus=0)


def spaced_timesteps__linspace_truncated(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                         steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset, truncate=True)


def spaced_timesteps__increasing(num_inference_steps, num_train_timesteps=1000, spacing="leading", steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset).flip(0)


def spaced_timesteps__dpm_solver_grid(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                      steps_offset=0):
    N, T = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        return torch.from_numpy(np.linspace(0, T - 1, N + 1).round()[::-1][:-1].astype(np.int64).copy())
    if spacing == "leading":
        ratio = T // (N + 1)
        return torch.from_numpy((np.arange(0, N + 1) * ratio).round()[::-1][:-1].astype(np.int64).copy()) + steps_offset
    return _grid(N, T, spacing, steps_offset)


def spaced_timesteps__float_timesteps(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                      steps_offset=0):
    return _grid(num_inference_steps, num_train_timesteps, spacing, steps_offset).float()


# ---------------------------------------------------------------- heun_step
def heun_step__plain_euler(x, sigma, sigma_next, denoiser):
    return x + (sigma_next - sigma) * (x - denoiser(x, sigma)) / sigma


def heun_step__corrector_slope_at_sigma(x, sigma, sigma_next, denoiser):
    d = (x - denoiser(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_euler
    d_next = (x_euler - denoiser(x_euler, sigma)) / sigma
    return x + (sigma_next - sigma) * (d + d_next) / 2


def heun_step__corrector_at_start_point(x, sigma, sigma_next, denoiser):
    d = (x - denoiser(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_euler
    d_next = (x - denoiser(x, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def heun_step__corrects_the_last_step_too(x, sigma, sigma_next, denoiser):
    d = (x - denoiser(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / torch.clamp(sigma_next, min=1e-3)
    return x + (sigma_next - sigma) * (d + d_next) / 2


def heun_step__evaluates_then_discards_on_last_step(x, sigma, sigma_next, denoiser):
    d = (x - denoiser(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    denoised_next = denoiser(x_euler, sigma_next)
    if sigma_next == 0:
        return x_euler
    return x + (sigma_next - sigma) * (d + (x_euler - denoised_next) / sigma_next) / 2


def heun_step__slope_sign_flipped(x, sigma, sigma_next, denoiser):
    d = (denoiser(x, sigma) - x) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_euler
    d_next = (denoiser(x_euler, sigma_next) - x_euler) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def heun_step__averages_denoised_at_sigma(x, sigma, sigma_next, denoiser):
    D = denoiser(x, sigma)
    x_euler = x + (sigma_next - sigma) * (x - D) / sigma
    if sigma_next == 0:
        return x_euler
    D_avg = (D + denoiser(x_euler, sigma_next)) / 2
    return x + (sigma_next - sigma) * (x - D_avg) / sigma


# ---------------------------------------------------------------- dpmpp_2m_step
def _alpha_sigma(s):
    a = 1 / torch.sqrt(s ** 2 + 1)
    return a, s * a


def dpmpp_2m_step__ve_ratio(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, _ = _alpha_sigma(sigma_next)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = (torch.log(sigma_prev) - torch.log(sigma)) / h
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (sigma_next / sigma) * x - a_next * torch.expm1(-h) * D


def dpmpp_2m_step__first_order_only(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, s_next = _alpha_sigma(sigma_next)
    _, s = _alpha_sigma(sigma)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    return (s_next / s) * x - a_next * torch.expm1(-h) * denoised


def dpmpp_2m_step__exp_plus_h(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, s_next = _alpha_sigma(sigma_next)
    _, s = _alpha_sigma(sigma)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = (torch.log(sigma_prev) - torch.log(sigma)) / h
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (s_next / s) * x - a_next * torch.expm1(h) * D


def dpmpp_2m_step__r_inverted(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, s_next = _alpha_sigma(sigma_next)
    _, s = _alpha_sigma(sigma)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = h / (torch.log(sigma_prev) - torch.log(sigma))
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (s_next / s) * x - a_next * torch.expm1(-h) * D


def dpmpp_2m_step__predictions_swapped(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, s_next = _alpha_sigma(sigma_next)
    _, s = _alpha_sigma(sigma)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = (torch.log(sigma_prev) - torch.log(sigma)) / h
        D = (1 + 1 / (2 * r)) * prev_denoised - 1 / (2 * r) * denoised
    return (s_next / s) * x - a_next * torch.expm1(-h) * D


def dpmpp_2m_step__second_order_on_final_step(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    a_next, s_next = _alpha_sigma(sigma_next)
    _, s = _alpha_sigma(sigma)
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = (torch.log(sigma_prev) - torch.log(sigma)) / h
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (s_next / s) * x - a_next * torch.expm1(-h) * D


def dpmpp_2m_step__alpha_of_current_sigma(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    _, s_next = _alpha_sigma(sigma_next)
    a, s = _alpha_sigma(sigma)
    if sigma_next == 0:
        return denoised
    h = torch.log(sigma) - torch.log(sigma_next)
    D = denoised
    if prev_denoised is not None:
        r = (torch.log(sigma_prev) - torch.log(sigma)) / h
        D = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * prev_denoised
    return (s_next / s) * x - a * torch.expm1(-h) * D


# ---------------------------------------------------------------- count_model_calls
def count_model_calls__one_per_step(scheduler, num_inference_steps, guidance_scale=1.0):
    return num_inference_steps * (2 if guidance_scale > 1 else 1)


def count_model_calls__guidance_ignored(scheduler, num_inference_steps, guidance_scale=1.0):
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(num_inference_steps)
    return len(probe.timesteps)


def count_model_calls__guidance_from_one(scheduler, num_inference_steps, guidance_scale=1.0):
    probe = copy.deepcopy(scheduler)
    probe.set_timesteps(num_inference_steps)
    return len(probe.timesteps) * (2 if guidance_scale >= 1 else 1)


def count_model_calls__heun_two_per_step(scheduler, num_inference_steps, guidance_scale=1.0):
    per = 2 * num_inference_steps if "Heun" in type(scheduler).__name__ else num_inference_steps
    return per * (2 if guidance_scale > 1 else 1)


def count_model_calls__only_heun_by_name(scheduler, num_inference_steps, guidance_scale=1.0):
    n = num_inference_steps
    per = 2 * n - 1 if type(scheduler).__name__ == "HeunDiscreteScheduler" else n
    return per * (2 if guidance_scale > 1 else 1)


def count_model_calls__solver_order_times_steps(scheduler, num_inference_steps, guidance_scale=1.0):
    order = getattr(scheduler.config, "solver_order", None) or scheduler.order
    return order * num_inference_steps * (2 if guidance_scale > 1 else 1)
