"""Wrong implementations for lesson 4. Each function's name: <exercise>__<mistake>."""

import math

import torch

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"gmm_score_answer": "gmm_score__equal_responsibilities",
     "probability_flow_step_answer": "probability_flow_step__full_score_no_half"},
    ["ddim_euler_step_answer"],
)


def _b(v, like):
    """(B,) -> (B, 1, ..., 1)."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------- gmm_score
def _gmm(x, means, stds, weights, *, sign=1.0, normalise=True, use_weights=True, norm_const=True,
         equal=False, power=2, naive=False, softmax_dim=1):
    D = x.shape[-1]
    diff = means[None] - x[:, None]                                   # (N, K, D)
    logt = -0.5 * (diff ** 2).sum(-1) / stds ** 2                     # (N, K)
    if norm_const:
        logt = logt - D * torch.log(stds) - 0.5 * D * math.log(2 * math.pi)
    if use_weights:
        logt = logt + torch.log(weights)
    if equal:
        resp = torch.full_like(logt, 1.0 / logt.shape[1])
    elif not normalise:
        resp = logt.exp()                                             # w_k N_k(x): the gradient of p, not log p
    elif naive:
        resp = logt.exp() / logt.exp().sum(1, keepdim=True)           # no max subtraction: 0/0 far away
    else:
        resp = torch.softmax(logt, dim=softmax_dim)
    return sign * (resp[..., None] * diff / stds[None, :, None] ** power).sum(1)


def gmm_score__sign_flipped(x, means, stds, weights):
    return _gmm(x, means, stds, weights, sign=-1.0)


def gmm_score__gradient_of_density_not_log(x, means, stds, weights):
    return _gmm(x, means, stds, weights, normalise=False)


def gmm_score__equal_responsibilities(x, means, stds, weights):
    return _gmm(x, means, stds, weights, equal=True)


def gmm_score__weights_ignored(x, means, stds, weights):
    return _gmm(x, means, stds, weights, use_weights=False)


def gmm_score__normalising_constant_dropped(x, means, stds, weights):
    return _gmm(x, means, stds, weights, norm_const=False)


def gmm_score__divides_by_std_not_variance(x, means, stds, weights):
    return _gmm(x, means, stds, weights, power=1)


def gmm_score__naive_exp_underflows(x, means, stds, weights):
    return _gmm(x, means, stds, weights, naive=True)


def gmm_score__softmax_over_points(x, means, stds, weights):
    return _gmm(x, means, stds, weights, softmax_dim=0)


def gmm_score__uses_autograd(x, means, stds, weights):
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        diff = means[None] - xg[:, None]
        logt = torch.log(weights) - x.shape[-1] * torch.log(stds) - 0.5 * (diff ** 2).sum(-1) / stds ** 2
        (grad,) = torch.autograd.grad(torch.logsumexp(logt, dim=1).sum(), xg)
    return grad


# ---------------------------------------------------------------- ddpm_score
def ddpm_score__sign_flipped(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    return eps / _b((1 - scheduler.alphas_cumprod[t]).sqrt(), eps)


def ddpm_score__missing_sqrt(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    return -eps / _b(1 - scheduler.alphas_cumprod[t], eps)


def ddpm_score__alpha_t_instead_of_alphabar(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    return -eps / _b((1 - scheduler.alphas[t]).sqrt(), eps)


def ddpm_score__sqrt_alphabar(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    return -eps / _b(scheduler.alphas_cumprod[t].sqrt(), eps)


def ddpm_score__returns_minus_eps(unet, scheduler, x_t, t):
    return -unet(x_t, t).sample


def ddpm_score__continuous_time_input(unet, scheduler, x_t, t):
    eps = unet(x_t, t.float() / 1000).sample
    return -eps / _b((1 - scheduler.alphas_cumprod[t]).sqrt(), eps)


def ddpm_score__linear_betas_hardcoded(unet, scheduler, x_t, t):
    # DDPM's CIFAR-10 schedule rebuilt instead of reading the scheduler it is given
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=x_t.device), 0)[t]
    eps = unet(x_t, t).sample
    return -eps / _b((1 - alpha_bar).sqrt(), eps)


def ddpm_score__std_on_the_last_axis(unet, scheduler, x_t, t):
    eps = unet(x_t, t).sample
    return -eps / (1 - scheduler.alphas_cumprod.to(x_t.device)[t]).sqrt()   # (B,) meets the width, not the batch


# ---------------------------------------------------------------- vp_perturb
def _vp(x0, noise, t, beta_min, beta_max, *, integral=None, roots=True, std_power=2, shrink=True):
    if integral is None:
        integral = beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2
    ab = _b(torch.exp(-integral), x0)
    mean = ab.sqrt() if roots else ab
    std = (1 - mean ** std_power).sqrt() if roots else 1 - ab
    return (mean if shrink else 1.0) * x0 + std * noise


def vp_perturb__alphabar_without_roots(x0, noise, t, beta_min, beta_max):
    return _vp(x0, noise, t, beta_min, beta_max, roots=False)


def vp_perturb__instantaneous_beta(x0, noise, t, beta_min, beta_max):
    beta_t = beta_min + t * (beta_max - beta_min)
    return _vp(x0, noise, t, beta_min, beta_max, integral=beta_t * t)


def vp_perturb__integral_missing_half(x0, noise, t, beta_min, beta_max):
    return _vp(x0, noise, t, beta_min, beta_max, integral=beta_min * t + (beta_max - beta_min) * t ** 2)


def vp_perturb__std_from_unsquared_mean(x0, noise, t, beta_min, beta_max):
    return _vp(x0, noise, t, beta_min, beta_max, std_power=1)


def vp_perturb__beta_schedule_reversed(x0, noise, t, beta_min, beta_max):
    return _vp(x0, noise, t, beta_min, beta_max, integral=beta_max * t + 0.5 * (beta_min - beta_max) * t ** 2)


def vp_perturb__signal_not_shrunk(x0, noise, t, beta_min, beta_max):
    return _vp(x0, noise, t, beta_min, beta_max, shrink=False)


def vp_perturb__promoted_to_float32(x0, noise, t, beta_min, beta_max):
    ab = _b(torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2)), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise             # float32 t promotes fp16 latents


def vp_perturb__t_on_the_last_axis(x0, noise, t, beta_min, beta_max):
    ab = torch.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t ** 2)).to(x0.dtype)   # (B,), not (B, 1, ..., 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# ---------------------------------------------------------------- ve_perturb
def ve_perturb__variance_as_std(x0, noise, t, sigma_min, sigma_max):
    sigma = sigma_min * (sigma_max / sigma_min) ** t
    return x0 + _b(sigma ** 2, x0) * noise


def ve_perturb__linear_sigma(x0, noise, t, sigma_min, sigma_max):
    return x0 + _b(sigma_min + t * (sigma_max - sigma_min), x0) * noise


def ve_perturb__time_reversed(x0, noise, t, sigma_min, sigma_max):
    return x0 + _b(sigma_max * (sigma_min / sigma_max) ** t, x0) * noise


def ve_perturb__vp_style_rescaling(x0, noise, t, sigma_min, sigma_max):
    sigma = _b(sigma_min * (sigma_max / sigma_min) ** t, x0)
    return (x0 + sigma * noise) / (1 + sigma ** 2).sqrt()


def ve_perturb__sqrt_sigma(x0, noise, t, sigma_min, sigma_max):
    return x0 + _b((sigma_min * (sigma_max / sigma_min) ** t).sqrt(), x0) * noise


def ve_perturb__sigma_max_to_the_t(x0, noise, t, sigma_min, sigma_max):
    return x0 + _b(sigma_max ** t, x0) * noise


# ---------------------------------------------------------------- reverse_sde_step
def reverse_sde_step__drift_forward_in_time(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x + (drift - g ** 2 * score) * dt + g * math.sqrt(dt) * noise


def reverse_sde_step__noise_missing_sqrt_dt(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x - (drift - g ** 2 * score) * dt + g * dt * noise


def reverse_sde_step__noise_without_dt(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x - (drift - g ** 2 * score) * dt + g * noise


def reverse_sde_step__half_score_like_the_ode(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x - (drift - 0.5 * g ** 2 * score) * dt + g * math.sqrt(dt) * noise


def reverse_sde_step__g_not_squared(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x - (drift - g * score) * dt + g * math.sqrt(dt) * noise


def reverse_sde_step__forward_drift_kept(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x + (drift + g ** 2 * score) * dt + g * math.sqrt(dt) * noise


def reverse_sde_step__g_broadcast_over_last_dim(x, score, drift, g, dt, noise):
    return x - (drift - g ** 2 * score) * dt + g * math.sqrt(dt) * noise


def reverse_sde_step__noise_scaled_by_g_squared(x, score, drift, g, dt, noise):
    g = _b(g, x)
    return x - (drift - g ** 2 * score) * dt + g ** 2 * math.sqrt(dt) * noise


# ---------------------------------------------------------------- probability_flow_step
def probability_flow_step__full_score_no_half(x, score, drift, g, dt):
    g = _b(g, x)
    return x - (drift - g ** 2 * score) * dt


def probability_flow_step__drift_forward_in_time(x, score, drift, g, dt):
    g = _b(g, x)
    return x + (drift - 0.5 * g ** 2 * score) * dt


def probability_flow_step__score_sign_flipped(x, score, drift, g, dt):
    g = _b(g, x)
    return x - (drift + 0.5 * g ** 2 * score) * dt


def probability_flow_step__g_not_squared(x, score, drift, g, dt):
    g = _b(g, x)
    return x - (drift - 0.5 * g * score) * dt


def probability_flow_step__drift_ignored(x, score, drift, g, dt):
    g = _b(g, x)
    return x + 0.5 * g ** 2 * score * dt


def probability_flow_step__half_on_the_drift_too(x, score, drift, g, dt):
    g = _b(g, x)
    return x - 0.5 * (drift - g ** 2 * score) * dt


# ---------------------------------------------------------------- ddim_euler_step
def _ddim(x, eps, alpha_bar, alpha_bar_prev, *, vp_sigma=False, back=True, back_with_current=False,
          reversed_step=False, power=0.5, change_vars=True):
    a, a_prev = _b(alpha_bar, x), _b(alpha_bar_prev, x)
    if vp_sigma:
        sig, sig_prev = (1 - a).sqrt(), (1 - a_prev).sqrt()
    else:
        sig, sig_prev = ((1 - a) / a).sqrt(), ((1 - a_prev) / a_prev).sqrt()
    step = (sig - sig_prev) if reversed_step else (sig_prev - sig)
    if not change_vars:
        return x + step * eps
    x_bar = x / a ** power + step * eps
    if not back:
        return x_bar
    return (a if back_with_current else a_prev) ** power * x_bar


def ddim_euler_step__vp_std_as_sigma(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, vp_sigma=True)


def ddim_euler_step__not_scaled_back(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, back=False)


def ddim_euler_step__scaled_back_with_current_alpha(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, back_with_current=True)


def ddim_euler_step__sigma_step_reversed(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, reversed_step=True)


def ddim_euler_step__alpha_not_square_rooted(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, power=1.0)


def ddim_euler_step__no_change_of_variables(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar, alpha_bar_prev, change_vars=False)


def ddim_euler_step__alphas_swapped(x, eps, alpha_bar, alpha_bar_prev):
    return _ddim(x, eps, alpha_bar_prev, alpha_bar)


def ddim_euler_step__alphas_on_the_last_axis(x, eps, alpha_bar, alpha_bar_prev):
    sigma, sigma_prev = ((1 - alpha_bar) / alpha_bar).sqrt(), ((1 - alpha_bar_prev) / alpha_bar_prev).sqrt()
    return alpha_bar_prev.sqrt() * (x / alpha_bar.sqrt() + (sigma_prev - sigma) * eps)   # (B,) meets the last axis
