"""Correct alternatives for lesson 5. Each function's name: <exercise>__<how>."""

import math

import numpy as np
import torch


# ---------------------------------------------------------------- flow_interpolate
def flow_interpolate__lerp(x0, noise, sigma):
    s = sigma[(...,) + (None,) * (x0.ndim - 1)].to(x0.dtype)
    return torch.lerp(x0, noise, s), noise - x0                 # x0 + s (noise - x0)


def flow_interpolate__per_sample_loop(x0, noise, sigma):
    x_t = torch.stack([float(sigma[b]) * noise[b] + (1 - float(sigma[b])) * x0[b] for b in range(x0.shape[0])])
    return x_t, torch.sub(noise, x0)


# ---------------------------------------------------------------- flow_matching_loss
def flow_matching_loss__mse_per_sample(model_pred, x0, noise, sigma, weighting_scheme):
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    if weighting_scheme == "sigma_sqrt":
        w = 1.0 / (s * s)
    elif weighting_scheme == "cosmap":
        w = 2.0 / math.pi / (1 - 2 * s + 2 * s * s)
    else:
        w = torch.ones_like(s)
    err = torch.nn.functional.mse_loss(model_pred.float(), (noise - x0).float(), reduction="none")
    return (w.float() * err).flatten(1).mean(1)


def flow_matching_loss__per_sample_loop(model_pred, x0, noise, sigma, weighting_scheme):
    out = []
    for b in range(x0.shape[0]):
        s = float(sigma[b])
        w = {"sigma_sqrt": s ** -2.0, "cosmap": 2 / (math.pi * (1 - 2 * s + 2 * s ** 2))}.get(weighting_scheme, 1.0)
        out.append(w * ((model_pred[b].float() - (noise[b] - x0[b]).float()) ** 2).mean())
    return torch.stack(out)


# ---------------------------------------------------------------- timestep_density
def timestep_density__explicit_logistic(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return 1 / (1 + torch.exp(-(logit_mean + logit_std * draws)))
    if weighting_scheme == "mode":                               # cos^2(pi u / 2) = (1 + cos(pi u)) / 2
        return 1 - draws - mode_scale * ((1 + torch.cos(math.pi * draws)) / 2 - 1 + draws)
    return draws.clone()


def timestep_density__torch_where(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    u = draws
    by_scheme = {
        "logit_normal": lambda: torch.special.expit(torch.addcmul(torch.full_like(u, logit_mean), u,
                                                                  torch.full_like(u, logit_std))),
        "mode": lambda: (1 - u) * (1 + mode_scale) - mode_scale * torch.cos(math.pi * u / 2) ** 2,
    }
    return by_scheme.get(weighting_scheme, lambda: u)()


# ---------------------------------------------------------------- shift_sigmas
def shift_sigmas__as_exponential_time_shift(sigmas, shift):
    # shift s sigma / (1 + (s - 1) sigma) = exp(mu) / (exp(mu) + 1/sigma - 1) with mu = log(shift)
    return shift / (shift + (1 / sigmas - 1))


def shift_sigmas__odds_scaled(sigmas, shift):
    odds = shift * sigmas / (1 - sigmas).clamp_min(1e-30)     # the shift multiplies the odds sigma / (1 - sigma)
    return torch.where(sigmas >= 1, torch.ones_like(sigmas), odds / (1 + odds))


# ---------------------------------------------------------------- training_sigmas
def training_sigmas__table_lookup(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    table = torch.arange(N, 0, -1, dtype=torch.float32, device=u.device) / N   # (N,): 1, (N-1)/N, ..., 1/N
    table = shift * table / (1 + (shift - 1) * table)
    return table[(u * N).long()]


def training_sigmas__floor(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    sigma = 1 - torch.floor(u * N) / N
    return (shift * sigma / (1 + (shift - 1) * sigma)).float()


# ---------------------------------------------------------------- flux_mu
def flux_mu__latent_then_tokens(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                                base_shift=0.5, max_shift=1.15):
    tokens = ((height // vae_scale_factor) // 2) * ((width // vae_scale_factor) // 2)
    return base_shift + (tokens - base_seq_len) * (max_shift - base_shift) / (max_seq_len - base_seq_len)


def flux_mu__numpy_interp_line(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                               base_shift=0.5, max_shift=1.15):
    tokens = (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))
    slope, intercept = np.polyfit([base_seq_len, max_seq_len], [base_shift, max_shift], 1)
    return float(slope * tokens + intercept)


# ---------------------------------------------------------------- flow_schedule
def flow_schedule__numpy_like_diffusers(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    N = num_train_timesteps
    table = np.linspace(1, N, N)[::-1] / N                      # the training table, from __init__
    if mu is None:
        table = shift * table / (1 + (shift - 1) * table)
    if sigmas is None:
        sigmas = np.linspace(table[0] * N, table[-1] * N, num_inference_steps) / N
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if mu is not None:
        sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    else:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas = torch.from_numpy(sigmas).float()
    return sigmas * N, torch.cat([sigmas, sigmas.new_zeros(1)])


def flow_schedule__python_lists(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    N, n = num_train_timesteps, num_inference_steps
    static = lambda s: shift * s / (1 + (shift - 1) * s)        # noqa: E731
    if sigmas is None:
        lo = 1 / N if mu is not None else static(1 / N)
        sigmas = [1.0 + (lo - 1.0) * i / (n - 1) for i in range(n)] if n > 1 else [1.0]
    out = [math.exp(mu) / (math.exp(mu) + 1 / s - 1) if mu is not None else static(s) for s in sigmas]
    s = torch.tensor(out + [0.0], dtype=torch.float32)
    return s[:-1] * N, s


# ---------------------------------------------------------------- euler_step
def euler_step__minus_dsigma(sample, model_output, sigma, sigma_next):
    return sample - (sigma - sigma_next) * model_output


def euler_step__addcmul_float64(sample, model_output, sigma, sigma_next):
    dt = float(sigma_next) - float(sigma)
    return (sample.double() + dt * model_output.double()).to(model_output.dtype)


# ---------------------------------------------------------------- euler_sample
def euler_sample__zip_pairs(velocity_fn, noise, sigmas):
    x = noise
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s).to(x.device) * velocity_fn(x, s.to(x.device).repeat(x.shape[0]))
    return x


def euler_sample__precomputed_steps(velocity_fn, noise, sigmas):
    sig = sigmas.to(noise.device)
    dts = sig[1:] - sig[:-1]
    x = noise.clone()
    for i in range(len(dts)):
        x += dts[i] * velocity_fn(x, torch.full((noise.shape[0],), float(sig[i]), device=noise.device))
    return x
