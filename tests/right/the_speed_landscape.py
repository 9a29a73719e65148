"""Correct alternative implementations for lesson 8. Each function's name: <exercise>__<how>."""

import math

import numpy as np
import torch


# ---------------------------------------------------------------- spaced_timesteps
def spaced_timesteps__numpy_like_diffusers(num_inference_steps, num_train_timesteps=1000, spacing="leading",
                                           steps_offset=0):
    N, T = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        t = np.linspace(0, T - 1, N).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        t = (np.arange(0, N) * (T // N)).round()[::-1].astype(np.int64) + steps_offset
    else:
        t = np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1
    return torch.from_numpy(t.copy())


def spaced_timesteps__python_lists(num_inference_steps, num_train_timesteps=1000, spacing="leading", steps_offset=0):
    N, T = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        ts = [round(i * (T - 1) / (N - 1)) if N > 1 else 0 for i in range(N)]
    elif spacing == "leading":
        ts = [i * (T // N) + steps_offset for i in range(N)]
    else:
        ratio = T / N                    # np.arange(T, 0, -ratio) is T - i * ratio while > 0
        ts = [round(T - i * ratio) - 1 for i in range(math.ceil(T / ratio)) if T - i * ratio > 0][::-1]
    return torch.tensor(ts[::-1], dtype=torch.int64)


# ---------------------------------------------------------------- heun_step
def heun_step__predictor_plus_half_correction(x, sigma, sigma_next, denoiser):
    dt = sigma_next - sigma
    d = (x - denoiser(x, sigma)) / sigma
    x_euler = x + dt * d
    if float(sigma_next) == 0.0:
        return x_euler
    d2 = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
    return x_euler + dt / 2 * (d2 - d)


def heun_step__as_weighted_denoisers(x, sigma, sigma_next, denoiser):
    # Euler in x/sigma form: x' = (sigma'/sigma) x + (1 - sigma'/sigma) D; Heun averages the two slopes.
    D1 = denoiser(x, sigma)
    x_euler = (sigma_next / sigma) * x + (1 - sigma_next / sigma) * D1
    if not bool(sigma_next > 0):
        return x_euler
    D2 = denoiser(x_euler, sigma_next)
    slope = 0.5 * ((x - D1) / sigma + (x_euler - D2) / sigma_next)
    return torch.addcmul(x, torch.ones_like(x) * (sigma_next - sigma), slope)


# ---------------------------------------------------------------- dpmpp_2m_step
def dpmpp_2m_step__diffusers_midpoint_form(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    def alpha_sigma(s):
        a = 1 / ((s ** 2 + 1) ** 0.5)
        return a, s * a

    a_t, s_t = alpha_sigma(sigma_next)
    a_s0, s_s0 = alpha_sigma(sigma)
    lam_t = torch.log(a_t) - torch.log(s_t)          # +inf when sigma_next = 0
    lam_s0 = torch.log(a_s0) - torch.log(s_s0)
    h = lam_t - lam_s0
    if prev_denoised is None or float(sigma_next) == 0.0:
        return (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * denoised
    a_s1, s_s1 = alpha_sigma(sigma_prev)
    r0 = (lam_s0 - (torch.log(a_s1) - torch.log(s_s1))) / h
    D0, D1 = denoised, (1.0 / r0) * (denoised - prev_denoised)
    return (s_t / s_s0) * x - (a_t * (torch.exp(-h) - 1.0)) * D0 - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * D1


def dpmpp_2m_step__ratio_form(x, sigma, sigma_next, denoised, prev_denoised=None, sigma_prev=None):
    # e^{-h} = sigma_next / sigma: everything as ratios of sigmas, in float64
    s, sn = sigma.double(), sigma_next.double()
    an = 1 / torch.sqrt(1 + sn ** 2)
    ratio = sn / s                                                     # e^{-h}
    D = denoised.double()
    if prev_denoised is not None and sn > 0:
        r = torch.log(sigma_prev.double() / s) / torch.log(s / sn)
        D = D + (D - prev_denoised.double()) / (2 * r)
    out = ratio * torch.sqrt((1 + s ** 2) / (1 + sn ** 2)) * x.double() + an * (1 - ratio) * D
    return out.to(x.dtype)


# ---------------------------------------------------------------- count_model_calls
def count_model_calls__fresh_from_config(scheduler, num_inference_steps, guidance_scale=1.0):
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(num_inference_steps)
    return int(fresh.timesteps.shape[0]) * (1 + int(guidance_scale > 1))


def count_model_calls__from_scheduler_order(scheduler, num_inference_steps, guidance_scale=1.0):
    # Heun-type schedulers have order 2: every step but the last costs 2 calls
    per_sample = (num_inference_steps - 1) * scheduler.order + 1
    return per_sample * (2 if guidance_scale > 1 else 1)
