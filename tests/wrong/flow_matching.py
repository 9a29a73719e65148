"""Wrong implementations for lesson 5. Each function's name: <exercise>__<mistake>."""

import math

import numpy as np
import torch

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"flow_interpolate_answer": "flow_interpolate__target_reversed",
     "shift_sigmas_answer": "shift_sigmas__no_denominator"},
    ["euler_step_answer"],
)


def _col(sigma, like):
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------- flow_interpolate
def flow_interpolate__target_reversed(x0, noise, sigma):
    s = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    return s * noise + (1 - s) * x0, x0 - noise


def flow_interpolate__sigma_swapped(x0, noise, sigma):
    s = _col(sigma, x0)
    return s * x0 + (1 - s) * noise, noise - x0


def flow_interpolate__sigma_on_last_axis(x0, noise, sigma):
    return sigma * noise + (1 - sigma) * x0, noise - x0


def flow_interpolate__variance_preserving(x0, noise, sigma):
    s = _col(sigma, x0)
    return (1 - s ** 2).sqrt() * x0 + s * noise, noise - x0


def flow_interpolate__epsilon_target(x0, noise, sigma):
    s = _col(sigma, x0)
    return s * noise + (1 - s) * x0, noise


def flow_interpolate__x0_target(x0, noise, sigma):
    s = _col(sigma, x0)
    return s * noise + (1 - s) * x0, x0


def flow_interpolate__target_scaled_by_sigma(x0, noise, sigma):
    s = _col(sigma, x0)
    return s * noise + (1 - s) * x0, s * (noise - x0)


def flow_interpolate__sigma_not_cast_to_the_sample_dtype(x0, noise, sigma):
    s = _col(sigma, x0)                                          # float32 sigma promotes bf16 latents
    return s * noise + (1 - s) * x0, noise - x0


# ---------------------------------------------------------------- flow_matching_loss
def _weight(s, scheme):
    if scheme == "sigma_sqrt":
        return s ** -2.0
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * s + 2 * s ** 2))
    return torch.ones_like(s)


def flow_matching_loss__target_reversed(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    return (_weight(s, weighting_scheme) * (model_pred - (x0 - noise)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__weighting_inverted(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    w = s ** 2.0 if weighting_scheme == "sigma_sqrt" else _weight(s, weighting_scheme)
    return (w * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__sigma_sqrt_as_square_root(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    w = s.sqrt() if weighting_scheme == "sigma_sqrt" else _weight(s, weighting_scheme)
    return (w * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__cosmap_without_pi(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    w = 2 / (1 - 2 * s + 2 * s ** 2) if weighting_scheme == "cosmap" else _weight(s, weighting_scheme)
    return (w * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__no_weighting(model_pred, x0, noise, sigma, weighting_scheme):
    return ((model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__weighting_on_last_axis(model_pred, x0, noise, sigma, weighting_scheme):
    w = _weight(sigma, weighting_scheme)   # (B,) broadcast against the last axis
    return (w * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__sum_not_mean(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    return (_weight(s, weighting_scheme) * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).sum(1)


def flow_matching_loss__batch_mean(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)
    return (_weight(s, weighting_scheme) * (model_pred - (noise - x0)) ** 2).mean()


def flow_matching_loss__weighting_applied_to_all_schemes(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)   # logit_normal / mode treated as if they were loss weightings too
    w = _weight(s, "sigma_sqrt" if weighting_scheme in ("logit_normal", "mode") else weighting_scheme)
    return (w * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


def flow_matching_loss__not_upcast(model_pred, x0, noise, sigma, weighting_scheme):
    s = _col(sigma, x0)                                          # a bf16 loss: the script's .float() left out
    return (_weight(s, weighting_scheme) * (model_pred - (noise - x0)) ** 2).reshape(x0.shape[0], -1).mean(1)


# ---------------------------------------------------------------- timestep_density
def timestep_density__no_sigmoid(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return logit_mean + logit_std * draws
    if weighting_scheme == "mode":
        return 1 - draws - mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    return draws


def timestep_density__mean_std_ignored(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(draws)
    if weighting_scheme == "mode":
        return 1 - draws - mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    return draws


def timestep_density__std_as_variance(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std ** 2 * draws)
    if weighting_scheme == "mode":
        return 1 - draws - mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    return draws


def timestep_density__mode_without_one_minus(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * draws)
    if weighting_scheme == "mode":
        return draws - mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    return draws


def timestep_density__mode_cos_not_squared(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * draws)
    if weighting_scheme == "mode":
        return 1 - draws - mode_scale * (torch.cos(math.pi * draws / 2) - 1 + draws)
    return draws


def timestep_density__mode_scale_sign_flipped(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * draws)
    if weighting_scheme == "mode":
        return 1 - draws + mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    return draws


def timestep_density__cosmap_sampled(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    # the paper's CosMap density used for sampling, although diffusers only weights the loss with it
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * draws)
    if weighting_scheme == "mode":
        return 1 - draws - mode_scale * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)
    if weighting_scheme == "cosmap":
        return 1 - 1 / (torch.tan(math.pi * draws / 2) + 1)
    return draws


def timestep_density__mode_scale_hardcoded(weighting_scheme, draws, logit_mean=0.0, logit_std=1.0, mode_scale=1.29):
    if weighting_scheme == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * draws)
    if weighting_scheme == "mode":
        return 1 - draws - 1.29 * (torch.cos(math.pi * draws / 2) ** 2 - 1 + draws)   # SD3's default, always
    return draws


# ---------------------------------------------------------------- shift_sigmas
def shift_sigmas__no_denominator(sigmas, shift):
    return shift * sigmas


def shift_sigmas__inverted(sigmas, shift):
    s = 1.0 / shift
    return s * sigmas / (1 + (s - 1) * sigmas)


def shift_sigmas__denominator_one_plus_shift_sigma(sigmas, shift):
    return shift * sigmas / (1 + shift * sigmas)


def shift_sigmas__exponential_of_shift(sigmas, shift):
    return math.exp(shift) / (math.exp(shift) + (1 / sigmas - 1))


def shift_sigmas__square_root_of_shift(sigmas, shift):
    s = math.sqrt(shift)   # SD3's alpha = sqrt(m / n) taken one step too far
    return s * sigmas / (1 + (s - 1) * sigmas)


def shift_sigmas__applied_to_one_minus_sigma(sigmas, shift):
    t = 1 - sigmas
    return shift * t / (1 + (shift - 1) * t)


# ---------------------------------------------------------------- training_sigmas
def training_sigmas__sigma_is_u(u, num_train_timesteps=1000, shift=1.0):
    return shift_sigmas(u.float(), shift)  # noqa: F821 (the notebook's correct shift_sigmas)


def training_sigmas__continuous(u, num_train_timesteps=1000, shift=1.0):
    return shift_sigmas(1 - u.float(), shift)  # noqa: F821


def training_sigmas__unshifted(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    return (N - (u * N).long()).float() / N


def training_sigmas__rounded_index(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    return shift_sigmas((N - (u * N).round().long()).float() / N, shift)  # noqa: F821


def training_sigmas__table_off_by_one(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    return shift_sigmas((N - 1 - (u * N).long()).float() / N, shift)  # noqa: F821


def training_sigmas__linspace_table(u, num_train_timesteps=1000, shift=1.0):
    N = num_train_timesteps
    table = torch.linspace(1.0, 0.0, N, device=u.device)    # ends at 0 instead of 1/N
    return shift_sigmas(table[(u * N).long()], shift)  # noqa: F821


# ---------------------------------------------------------------- flux_mu
def _mu(L, base_seq_len, max_seq_len, base_shift, max_shift):
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return L * m + base_shift - m * base_seq_len


def flux_mu__unpacked_latent(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                             base_shift=0.5, max_shift=1.15):
    L = (height // vae_scale_factor) * (width // vae_scale_factor)
    return _mu(L, base_seq_len, max_seq_len, base_shift, max_shift)


def flux_mu__float_division(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                            base_shift=0.5, max_shift=1.15):
    L = (height / (2 * vae_scale_factor)) * (width / (2 * vae_scale_factor))
    return _mu(L, base_seq_len, max_seq_len, base_shift, max_shift)


def flux_mu__intercept_forgotten(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                                 base_shift=0.5, max_shift=1.15):
    L = (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return L * m + base_shift


def flux_mu__anchors_swapped(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                             base_shift=0.5, max_shift=1.15):
    L = (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))
    return _mu(L, base_seq_len, max_seq_len, max_shift, base_shift)


def flux_mu__returns_exp(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                         base_shift=0.5, max_shift=1.15):
    L = (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))
    return math.exp(_mu(L, base_seq_len, max_seq_len, base_shift, max_shift))


def flux_mu__square_from_height(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                                base_shift=0.5, max_shift=1.15):
    L = (height // (2 * vae_scale_factor)) ** 2
    return _mu(L, base_seq_len, max_seq_len, base_shift, max_shift)


def flux_mu__vae_factor_fixed_at_8(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                                   base_shift=0.5, max_shift=1.15):
    L = (height // 16) * (width // 16)                   # Flux's 8x VAE and 2x2 packing hard-coded
    return _mu(L, base_seq_len, max_seq_len, base_shift, max_shift)


def flux_mu__default_anchors_hardcoded(height, width, vae_scale_factor=8, base_seq_len=256, max_seq_len=4096,
                                       base_shift=0.5, max_shift=1.15):
    L = (height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor))
    return _mu(L, 256, 4096, 0.5, 1.15)                  # the arguments passed in are ignored


# ---------------------------------------------------------------- flow_schedule
def _schedule(n, shift, mu, sigmas, N, *, terminal=True, scale_t=True, sigma_min_shifted=True,
              static=None, dynamic=None):
    static = static or (lambda s: shift * s / (1 + (shift - 1) * s))
    dynamic = dynamic or (lambda s: math.exp(mu) / (math.exp(mu) + (1 / s - 1)))
    if sigmas is None:
        sigma_min = 1.0 / N
        if mu is None and sigma_min_shifted:
            sigma_min = float(static(torch.tensor(1.0 / N)))
        sig = torch.linspace(1.0, sigma_min, n, dtype=torch.float64)
    else:
        sig = torch.tensor(list(sigmas), dtype=torch.float64)
    sig = (dynamic(sig) if mu is not None else static(sig)).float()
    t = sig * N if scale_t else sig.clone()
    return t, torch.cat([sig, torch.zeros(1)]) if terminal else sig


def flow_schedule__no_terminal_zero(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps, terminal=False)


def flow_schedule__timesteps_not_scaled(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps, scale_t=False)


def flow_schedule__sigma_min_unshifted(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps, sigma_min_shifted=False)


def flow_schedule__shift_without_denominator(num_inference_steps, shift=1.0, mu=None, sigmas=None,
                                             num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps, static=lambda s: shift * s)


def flow_schedule__shift_inverted(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    inv = 1.0 / shift
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps,
                     static=lambda s: inv * s / (1 + (inv - 1) * s))


def flow_schedule__linear_time_shift(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps,
                     dynamic=lambda s: mu / (mu + (1 / s - 1)))


def flow_schedule__custom_sigmas_ignored(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, None, num_train_timesteps)


def flow_schedule__linspace_to_zero(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    if sigmas is None:
        sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]   # evenly spaced, 1/N floor forgotten
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps)


def flow_schedule__static_shift_on_top_of_mu(num_inference_steps, shift=1.0, mu=None, sigmas=None,
                                             num_train_timesteps=1000):
    static = lambda s: shift * s / (1 + (shift - 1) * s)  # noqa: E731
    return _schedule(num_inference_steps, shift, mu, sigmas, num_train_timesteps,
                     dynamic=lambda s: static(math.exp(mu) / (math.exp(mu) + (1 / s - 1))))


def flow_schedule__sigma_min_shifted_with_mu(num_inference_steps, shift=1.0, mu=None, sigmas=None,
                                             num_train_timesteps=1000):
    N = num_train_timesteps
    if sigmas is None and mu is not None:                # sigma_min taken from a shifted training table
        sigma_min = shift * (1 / N) / (1 + (shift - 1) * (1 / N))
        sigmas = np.linspace(1.0, sigma_min, num_inference_steps).tolist()
    return _schedule(num_inference_steps, shift, mu, sigmas, N)


def flow_schedule__mu_ignored_with_custom_sigmas(num_inference_steps, shift=1.0, mu=None, sigmas=None,
                                                 num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, None if sigmas is not None else mu, sigmas, num_train_timesteps)


def flow_schedule__mu_ignored(num_inference_steps, shift=1.0, mu=None, sigmas=None, num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, None, sigmas, num_train_timesteps)


def flow_schedule__num_train_timesteps_fixed_at_1000(num_inference_steps, shift=1.0, mu=None, sigmas=None,
                                                     num_train_timesteps=1000):
    return _schedule(num_inference_steps, shift, mu, sigmas, 1000)


# ---------------------------------------------------------------- euler_step
def euler_step__sign_flipped(sample, model_output, sigma, sigma_next):
    return sample + (sigma - sigma_next) * model_output


def euler_step__returns_x0_prediction(sample, model_output, sigma, sigma_next):
    return sample - sigma * model_output


def euler_step__dt_is_sigma_next(sample, model_output, sigma, sigma_next):
    return sample - sigma_next * model_output


def euler_step__increment_only(sample, model_output, sigma, sigma_next):
    return (sigma_next - sigma) * model_output


def euler_step__velocity_treated_as_noise(sample, model_output, sigma, sigma_next):
    x0 = sample - sigma * model_output                 # fine so far ...
    return (1 - sigma_next) * x0 + sigma_next * model_output   # ... but v is not the noise


def euler_step__velocity_times_sigma(sample, model_output, sigma, sigma_next):
    return sample + (sigma_next - sigma) * sigma * model_output


def euler_step__upcast_not_cast_back(sample, model_output, sigma, sigma_next):
    return sample.float() + (sigma_next - sigma) * model_output.float()   # fp16 in, float32 out


# ---------------------------------------------------------------- euler_sample
def euler_sample__velocity_at_next_sigma(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 1):
        v = velocity_fn(x, sigmas[i + 1].to(noise.device).expand(noise.shape[0]))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])  # noqa: F821
    return x


def euler_sample__last_step_dropped(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 2):
        v = velocity_fn(x, sigmas[i].to(noise.device).expand(noise.shape[0]))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])  # noqa: F821
    return x


def euler_sample__timesteps_to_model(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 1):
        v = velocity_fn(x, (sigmas[i] * 1000).to(noise.device).expand(noise.shape[0]))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])  # noqa: F821
    return x


def euler_sample__first_sigma_every_step(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 1):
        v = velocity_fn(x, sigmas[0].to(noise.device).expand(noise.shape[0]))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])  # noqa: F821
    return x


def euler_sample__steps_from_the_noise(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 1):
        v = velocity_fn(x, sigmas[i].to(noise.device).expand(noise.shape[0]))
        x = euler_step(noise, v, sigmas[0], sigmas[i + 1])  # noqa: F821 (every step restarts from the noise)
    return x


def euler_sample__sigma_as_python_float(velocity_fn, noise, sigmas):
    x = noise
    for i in range(len(sigmas) - 1):
        v = velocity_fn(x, float(sigmas[i]))
        x = euler_step(x, v, sigmas[i], sigmas[i + 1])  # noqa: F821
    return x
