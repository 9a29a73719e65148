"""Correct alternative implementations for lesson 6. Each function's name: <exercise>__<how>.

Runs inside the solution namespace, like tests/wrong/consistency_models.py.
"""

import math

import torch


# ---------------------------------------------------------------- consistency_scalings
def consistency_scalings__shifted_time(sigma, sigma_min, sigma_data):
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    s = sigma - sigma_min                                      # time since the boundary
    c_skip = 1.0 / (1.0 + (s / sigma_data) ** 2)
    c_out = s * sigma_data * torch.rsqrt(sigma.square() + sigma_data ** 2)
    return c_skip, c_out


def consistency_scalings__float64_then_back(sigma, sigma_min, sigma_data):
    s = sigma.double()
    c_skip = sigma_data ** 2 / ((s - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (s - sigma_min) * sigma_data / torch.sqrt(s ** 2 + sigma_data ** 2)
    return c_skip.to(sigma.dtype), c_out.to(sigma.dtype)


# ---------------------------------------------------------------- consistency_function
def consistency_function__view_and_scheduler_constant(net, x, sigma, sigma_min, sigma_data):
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    c_skip, c_out = (c.view(shape) for c in consistency_scalings(sigma, sigma_min, sigma_data))
    c_in = torch.rsqrt(sigma ** 2 + sigma_data ** 2).view(shape)
    t = 1000 * 0.25 * torch.log(sigma + 1e-44)                 # diffusers' sigma_to_t, written out
    return torch.addcmul(c_skip * x, c_out, net(c_in * x, t))


def consistency_function__flattened(net, x, sigma, sigma_min, sigma_data):
    B = x.shape[0]
    c_skip, c_out = consistency_scalings(sigma, sigma_min, sigma_data)
    c_in = 1 / torch.sqrt(sigma ** 2 + sigma_data ** 2)
    flat = x.reshape(B, -1)                                    # (B, everything else)
    out = net((c_in[:, None] * flat).reshape(x.shape), 250 * sigma.log()).reshape(B, -1)
    return (c_skip[:, None] * flat + c_out[:, None] * out).reshape(x.shape)


# ---------------------------------------------------------------- consistency_step
def consistency_step__tensor_ops(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max, sigma_data):
    sigma_t = torch.tensor(sigma, dtype=sample.dtype, device=sample.device)
    c_skip, c_out = consistency_scalings(sigma_t, sigma_min, sigma_data)
    denoised = torch.clamp(c_out * model_output + c_skip * sample, min=-1.0, max=1.0)
    nxt = torch.tensor(sigma_next, dtype=torch.float64).clamp(sigma_min, sigma_max)
    return denoised + noise * float((nxt ** 2 - sigma_min ** 2).clamp(min=0).sqrt())


def consistency_step__where_clip(model_output, sample, sigma, sigma_next, noise, sigma_min, sigma_max, sigma_data):
    c_skip = sigma_data ** 2 / ((sigma - sigma_min) ** 2 + sigma_data ** 2)
    c_out = (sigma - sigma_min) * sigma_data / math.sqrt(sigma ** 2 + sigma_data ** 2)
    d = c_skip * sample + c_out * model_output
    d = torch.where(d > 1, torch.ones_like(d), torch.where(d < -1, -torch.ones_like(d), d))
    return d + math.sqrt(max(sigma_next, sigma_min) ** 2 - sigma_min ** 2) * noise


# ---------------------------------------------------------------- consistency_training_loss
def consistency_training_loss__detach_and_mse(online, target, x0, sigma_n, sigma_n1, noise, sigma_min, sigma_data):
    import torch.nn.functional as F

    shape = (-1,) + (1,) * (x0.ndim - 1)
    pred = consistency_function(online, x0 + sigma_n1.view(shape) * noise, sigma_n1, sigma_min, sigma_data)
    tgt = consistency_function(target, x0 + sigma_n.view(shape) * noise, sigma_n, sigma_min, sigma_data).detach()
    return F.mse_loss(pred, tgt)                               # equal-size samples: the mean of per-sample means


def consistency_training_loss__per_sample_then_mean(online, target, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                    sigma_data):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    with torch.no_grad():
        tgt = consistency_function(target, x0 + sigma_n.reshape(shape) * noise, sigma_n, sigma_min, sigma_data)
    pred = consistency_function(online, x0 + sigma_n1.reshape(shape) * noise, sigma_n1, sigma_min, sigma_data)
    per_sample = torch.stack([((p - t) ** 2).mean() for p, t in zip(pred, tgt)])   # (B,)
    return per_sample.mean()


# ---------------------------------------------------------------- consistency_distillation_loss
def consistency_distillation_loss__denoiser_form(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                 sigma_data):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    t1, t0 = sigma_n1.reshape(shape), sigma_n.reshape(shape)
    x_n1 = x0 + t1 * noise
    with torch.no_grad():
        denoised = x_n1 + t1 ** 2 * score(x_n1, sigma_n1)    # Tweedie: D(x, t) = x + t^2 grad log p_t(x)
        x_n = x_n1 + (t0 - t1) * (x_n1 - denoised) / t1        # Euler with EDM's dx/dt = (x - D) / t
        tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data)
    pred = consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data)
    return ((pred - tgt) ** 2).flatten(1).mean(1).mean()


def consistency_distillation_loss__detach_and_mse(online, target, score, x0, sigma_n, sigma_n1, noise, sigma_min,
                                                  sigma_data):
    import torch.nn.functional as F

    shape = (-1,) + (1,) * (x0.ndim - 1)
    x_n1 = x0 + sigma_n1.view(shape) * noise
    x_n = (x_n1 - (sigma_n - sigma_n1).view(shape) * sigma_n1.view(shape) * score(x_n1, sigma_n1)).detach()
    tgt = consistency_function(target, x_n, sigma_n, sigma_min, sigma_data).detach()
    return F.mse_loss(consistency_function(online, x_n1, sigma_n1, sigma_min, sigma_data), tgt)
