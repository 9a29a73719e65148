"""Correct alternatives for lesson 4. Each function's name: <exercise>__<how>."""

import math

import torch


def _b(v, like):
    """(B,) -> (B, 1, ..., 1)."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------- gmm_score
def gmm_score__logsumexp(x, means, stds, weights):
    D = x.shape[-1]
    diff = means[None] - x[:, None]                                             # (N, K, D)
    log_terms = (torch.log(weights) - D * torch.log(stds) - 0.5 * D * math.log(2 * math.pi)
                 - 0.5 * (diff ** 2).sum(-1) / stds ** 2)                      # (N, K): log w_k N_k(x)
    log_p = torch.logsumexp(log_terms, dim=1, keepdim=True)                     # (N, 1): log p(x)
    resp = torch.exp(log_terms - log_p)
    return torch.einsum("nk,nkd->nd", resp, diff / stds[None, :, None] ** 2)


def gmm_score__explicit_max_subtraction(x, means, stds, weights):
    D = x.shape[-1]
    sq = torch.cdist(x, means) ** 2                                             # (N, K)
    log_terms = torch.log(weights) - D * torch.log(stds) - 0.5 * sq / stds ** 2
    w = torch.exp(log_terms - log_terms.max(dim=1, keepdim=True).values)        # largest term is exp(0) = 1
    resp = w / w.sum(dim=1, keepdim=True)
    # sum_k r_k (mu_k - x) / s_k^2 = sum_k r_k mu_k / s_k^2 - x sum_k r_k / s_k^2
    inv_var = 1.0 / stds ** 2
    return (resp * inv_var) @ means - x * (resp * inv_var).sum(1, keepdim=True)


def gmm_score__loop_over_components_float64(x, means, stds, weights):
    xd = x.double()
    D = x.shape[-1]
    logs, grads = [], []
    for k in range(means.shape[0]):
        mu, s = means[k].double(), stds[k].double()
        logs.append(torch.log(weights[k].double()) - D * torch.log(s) - 0.5 * ((xd - mu) ** 2).sum(-1) / s ** 2)
        grads.append((mu - xd) / s ** 2)
    resp = torch.softmax(torch.stack(logs, dim=1), dim=1)                      # (N, K)
    return sum(resp[:, k:k + 1] * grads[k] for k in range(len(grads))).to(x.dtype)


# ---------------------------------------------------------------- ddpm_score
def ddpm_score__alphabar_from_betas(unet, scheduler, x_t, t):
    alpha_bar = torch.cumprod(1.0 - scheduler.betas.to(x_t.device).double(), dim=0)[t].float()
    eps = unet(x_t, t).sample
    return -eps * torch.rsqrt(1 - alpha_bar)[:, None, None, None]


def ddpm_score__per_sample_loop(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    out = [-eps[b] / math.sqrt(1 - float(scheduler.alphas_cumprod[int(t[b])])) for b in range(x_t.shape[0])]
    return torch.stack(out)


# ---------------------------------------------------------------- vp_perturb
def vp_perturb__log_mean_coefficient(x0, noise, t, beta_min, beta_max):
    log_mean = -0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min   # log sqrt(alphabar)
    mean, std = torch.exp(log_mean), torch.sqrt(-torch.expm1(2 * log_mean))
    return (_b(mean, x0) * x0.float() + _b(std, x0) * noise.float()).to(x0.dtype)   # float32, then x0's dtype


def vp_perturb__per_sample_loop(x0, noise, t, beta_min, beta_max):
    out = []
    for b in range(x0.shape[0]):
        tb = float(t[b])
        ab = math.exp(-(beta_min * tb + 0.5 * (beta_max - beta_min) * tb * tb))
        out.append(math.sqrt(ab) * x0[b] + math.sqrt(1 - ab) * noise[b])
    return torch.stack(out)


# ---------------------------------------------------------------- ve_perturb
def ve_perturb__log_space_interpolation(x0, noise, t, sigma_min, sigma_max):
    sigma = torch.exp(math.log(sigma_min) + t * (math.log(sigma_max) - math.log(sigma_min)))
    return x0 + sigma[(...,) + (None,) * (x0.ndim - 1)] * noise


def ve_perturb__per_sample_loop(x0, noise, t, sigma_min, sigma_max):
    return torch.stack([x0[b] + sigma_min * (sigma_max / sigma_min) ** float(t[b]) * noise[b]
                        for b in range(x0.shape[0])])


# ---------------------------------------------------------------- reverse_sde_step
def reverse_sde_step__expanded_terms(x, score, drift, g, dt, noise):
    g2 = (g ** 2)[(...,) + (None,) * (x.ndim - 1)]
    return x - drift * dt + g2 * score * dt + torch.sqrt(g2 * dt) * noise


def reverse_sde_step__per_sample_loop(x, score, drift, g, dt, noise):
    out = []
    for b in range(x.shape[0]):
        gb = float(g[b])
        out.append(x[b] + (gb * gb * score[b] - drift[b]) * dt + gb * math.sqrt(dt) * noise[b])
    return torch.stack(out)


# ---------------------------------------------------------------- probability_flow_step
def probability_flow_step__expanded_terms(x, score, drift, g, dt):
    half_g2 = (0.5 * g ** 2)[(...,) + (None,) * (x.ndim - 1)]
    return torch.addcmul(x - drift * dt, half_g2 * dt, score)


def probability_flow_step__per_sample_loop(x, score, drift, g, dt):
    return torch.stack([x[b] - (drift[b] - 0.5 * float(g[b]) ** 2 * score[b]) * dt for b in range(x.shape[0])])


# ---------------------------------------------------------------- ddim_euler_step
def ddim_euler_step__x0_prediction_form(x, eps, alpha_bar, alpha_bar_prev):
    a, a_prev = _b(alpha_bar, x), _b(alpha_bar_prev, x)
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()                                  # DDIM (Song et al.) eq. 12, eta = 0
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def ddim_euler_step__per_sample_loop(x, eps, alpha_bar, alpha_bar_prev):
    out = []
    for b in range(x.shape[0]):
        a, ap = float(alpha_bar[b]), float(alpha_bar_prev[b])
        sig, sig_prev = math.sqrt((1 - a) / a), math.sqrt((1 - ap) / ap)
        out.append(math.sqrt(ap) * (x[b] / math.sqrt(a) + (sig_prev - sig) * eps[b]))
    return torch.stack(out)
