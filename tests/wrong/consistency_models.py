"""Wrong implementations for lesson 6. Each function's name: <exercise>__<mistake>.

The module runs inside the solution namespace (tests/notebook_code.py), so a wrong answer to
one exercise calls the correct answers of the others (consistency_scalings, consistency_function).
"""

import math

import torch

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"consistency_step_answer": "consistency_step__no_clamp",
     "consistency_training_loss_answer": "consistency_training_loss__target_not_detached"},
    ["consistency_distillation_loss_answer"],
)


def _ps(v, like):
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------- consistency_scalings
def consistency_scalings__edm_no_sigma_min(sigma, sigma_min, sigma_data):
    c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
    c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def consistency_scalings__sigma_min_over_sigma(sigma, sigma_min, sigma_data):
    c_skip = sigma_min / sigma                      # a published "simplification": f(x, sigma_min) = x, but wrong
    return c_skip, 1 - c_skip


def consistency_scalings__shift_under_sqrt(sigma, sigma_min, sigma_data):
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / ((sigma - sigma_min) ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def consistency_scalings__swapped(sigma, sigma_min, sigma_data):
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5
    return c_out, c_skip


def consistency_scalings__no_sqrt(sigma, sigma_min, sigma_data):
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma ** 2 + sigma_data ** 2)
    return c_skip, c_out


def consistency_scalings__sigma_data_not_squared(sigma, sigma_min, sigma_data):
    c_skip = sigma_data / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


# ---------------------------------------------------------------- consistency_function
def _f(net, x, sigma, sigma_min, sigma_data, *, c_in=True, t="250ln", scalings=None, scale_out=True):
    c_skip, c_out = scalings if scalings is not None else consistency_scalings(sigma, sigma_min, sigma_data)
    cin = 1.0 / (sigma ** 2 + sigma_data ** 2) ** 0.5 if c_in else torch.ones_like(sigma)
    time = {"250ln": 250 * torch.log(sigma), "c_noise": torch.log(sigma) / 4, "sigma": sigma,
            "ln": torch.log(sigma)}[t]
    out = net(_ps(cin, x) * x, time)
    return _ps(c_skip, x) * x + (_ps(c_out, x) * out if scale_out else out)


def consistency_function__no_input_scaling(net, x, sigma, sigma_min, sigma_data):
    return _f(net, x, sigma, sigma_min, sigma_data, c_in=False)


def consistency_function__time_edm_c_noise(net, x, sigma, sigma_min, sigma_data):
    return _f(net, x, sigma, sigma_min, sigma_data, t="c_noise")


def consistency_function__time_is_sigma(net, x, sigma, sigma_min, sigma_data):
    return _f(net, x, sigma, sigma_min, sigma_data, t="sigma")


def consistency_function__time_ln_sigma(net, x, sigma, sigma_min, sigma_data):
    return _f(net, x, sigma, sigma_min, sigma_data, t="ln")


def consistency_function__edm_scalings(net, x, sigma, sigma_min, sigma_data):
    sd2 = sigma ** 2 + sigma_data ** 2
    return _f(net, x, sigma, sigma_min, sigma_data, scalings=(sigma_data ** 2 / sd2, sigma * sigma_data / sd2 ** 0.5))


def consistency_function__output_not_scaled(net, x, sigma, sigma_min, sigma_data):
    return _f(net, x, sigma, sigma_min, sigma_data, scale_out=False)


def consistency_function__calls_scale_model_input(net, x, sigma, sigma_min, sigma_data):
    from diffusers import CMStochasticIterativeScheduler

    sched = CMStochasticIterativeScheduler(sigma_min=sigma_min, sigma_data=sigma_data)
    sched.sigmas, sched._step_index = sigma, 0
    sched.scale_model_input(x, None)
    return _f(net, x, sigma, sigma_min, sigma_data)


# ---------------------------------------------------------------- consistency_step
def _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, *, clamp=True, scale="std",
          base="denoised", clamp_last=False, scalings=None):
    c_skip, c_out = scalings or consistency_scalings(sigma, sigma_min, sigma_data)
    denoised = c_out * model_output + c_skip * sample
    if clamp:
        denoised = denoised.clamp(-1, 1)
    s = {"std": math.sqrt(max(sigma_next ** 2 - sigma_min ** 2, 0.0)), "sigma": sigma_next,
         "var": sigma_next ** 2 - sigma_min ** 2, "none": 0.0}[scale]
    out = (denoised if base == "denoised" else sample) + s * noise
    return out.clamp(-1, 1) if clamp_last else out


def consistency_step__no_clamp(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max, sigma_data):
    # self-contained (no helpers): it is also the partly-wrong example's answer
    c_skip, c_out = consistency_scalings(sigma, sigma_min, sigma_data)
    denoised = c_out * model_output + c_skip * sample
    sigma_next = min(max(sigma_next, sigma_min), sigma_max)
    return denoised + math.sqrt(max(sigma_next ** 2 - sigma_min ** 2, 0.0)) * noise


def consistency_step__noise_scaled_by_sigma_next(model_output, sample, sigma, sigma_next, noise, sigma_min,
                                                 sigma_max, sigma_data):
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, scale="sigma")


def consistency_step__noise_scaled_by_variance(model_output, sample, sigma, sigma_next, noise, sigma_min,
                                               sigma_max, sigma_data):
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, scale="var")


def consistency_step__renoise_current_sample(model_output, sample, sigma, sigma_next, noise, sigma_min,
                                             sigma_max, sigma_data):
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, base="sample")


def consistency_step__clamp_after_noise(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max,
                                        sigma_data):
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, clamp=False, clamp_last=True)


def consistency_step__edm_scalings(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max, sigma_data):
    sd2 = sigma ** 2 + sigma_data ** 2
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data,
                 scalings=(sigma_data ** 2 / sd2, sigma * sigma_data / sd2 ** 0.5))


def consistency_step__no_noise(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max, sigma_data):
    return _step(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_data, scale="none")


# ---------------------------------------------------------------- consistency_training_loss
def _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, *, swap=False, detach=True,
        same=False, x0_target=False, reduce="mean", fresh_noise=False, grad=True):
    x_n1 = x0 + _ps(sigma_n1, x0) * noise
    x_n = x0 + _ps(sigma_n, x0) * (torch.randn_like(noise) if fresh_noise else noise)
    a, b = (sigma_n1, sigma_n) if swap else (sigma_n, sigma_n1)
    if swap:
        x_n, x_n1 = x_n1, x_n
    with torch.set_grad_enabled(grad):
        pred = consistency_function(online, x_n1, b, sigma_min, sigma_data)
    with torch.set_grad_enabled(not detach):
        tgt = x0 if x0_target else consistency_function(online if same else target, x_n, a, sigma_min, sigma_data)
    d = ((pred - tgt) ** 2).flatten(1)
    return {"mean": d.mean(1).mean(), "sum": d.sum(1).mean(), "per_sample": d.mean(1)}[reduce]


def consistency_training_loss__sigmas_swapped(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, swap=True)


def consistency_training_loss__target_not_detached(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                   sigma_data):
    # self-contained (no helpers): it is also the partly-wrong example's answer
    per_sample = (-1,) + (1,) * (x0.ndim - 1)
    x_n1 = x0 + sigma_n1.reshape(per_sample) * noise
    x_n = x0 + sigma_n.reshape(per_sample) * noise
    pred = consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data)
    tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data)   # no stop-gradient
    return ((pred - tgt) ** 2).flatten(1).mean(1).mean()


def consistency_training_loss__online_as_target(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, same=True)


def consistency_training_loss__x0_as_target(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, x0_target=True)


def consistency_training_loss__summed_over_elements(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                    sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, reduce="sum")


def consistency_training_loss__fresh_noise_for_the_target(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                          sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, fresh_noise=True)


def consistency_training_loss__not_reduced(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, reduce="per_sample")


def consistency_training_loss__all_under_no_grad(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                 sigma_data):
    return _ct(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, grad=False)


# ---------------------------------------------------------------- consistency_distillation_loss
def _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, *, sign=1.0, t_factor=True,
        score_at="n1", teacher=True, x0_target=False, detach=True):
    x_n1 = x0 + _ps(sigma_n1, x0) * noise
    with torch.set_grad_enabled(not detach):
        if x0_target:
            tgt = x0
        else:
            if teacher:
                at = sigma_n1 if score_at == "n1" else sigma_n
                dxdt = -(_ps(sigma_n1, x0) if t_factor else 1.0) * score(x_n1, at)
                x_n = x_n1 + sign * _ps(sigma_n - sigma_n1, x0) * dxdt
            else:
                x_n = x0 + _ps(sigma_n, x0) * noise
            tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data)
    pred = consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data)
    return ((pred - tgt) ** 2).flatten(1).mean(1).mean()


def consistency_distillation_loss__ode_step_forward(online, target, score, x0, sigma_n, sigma_n1, noise,
                                                    sigma_min, sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, sign=-1.0)


def consistency_distillation_loss__no_t_in_the_ode(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                   sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, t_factor=False)


def consistency_distillation_loss__score_at_t_n(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, score_at="n")


def consistency_distillation_loss__teacher_ignored(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                   sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, teacher=False)


def consistency_distillation_loss__x0_as_target(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, x0_target=True)


def consistency_distillation_loss__target_not_detached(online, target, score, x0, sigma_n, sigma_n1, noise,
                                                       sigma_min, sigma_data):
    return _cd(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data, detach=False)
