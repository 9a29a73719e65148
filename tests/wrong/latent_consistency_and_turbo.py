"""Wrong implementations for lesson 7. Each function's name: <exercise>__<mistake>."""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"lcm_scalings_answer": "lcm_scalings__unscaled_timestep", "lcm_step_answer": "lcm_step__renoise_with_eps"},
    ["fuse_lora_answer"],
)


# ---------------------------------------------------------------- lcm_scalings
def lcm_scalings__unscaled_timestep(timesteps, timestep_scaling=10.0):
    s = timesteps.float()
    return 0.25 / (s ** 2 + 0.25), s / (s ** 2 + 0.25).sqrt()


def lcm_scalings__sigma_data_one(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * timestep_scaling
    return 1 / (s ** 2 + 1), s / (s ** 2 + 1).sqrt()


def lcm_scalings__swapped(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * timestep_scaling
    return s / (s ** 2 + 0.25).sqrt(), 0.25 / (s ** 2 + 0.25)


def lcm_scalings__consistency_model_sigma_min(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * timestep_scaling
    return 0.25 / ((s - 0.002) ** 2 + 0.25), (s - 0.002) * 0.5 / (s ** 2 + 0.25).sqrt()


def lcm_scalings__c_out_times_sigma_data(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * timestep_scaling
    return 0.25 / (s ** 2 + 0.25), 0.5 * s / (s ** 2 + 0.25).sqrt()


def lcm_scalings__scaling_fixed_at_10(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * 10.0
    return 0.25 / (s ** 2 + 0.25), s / (s ** 2 + 0.25).sqrt()


def lcm_scalings__c_out_without_sqrt(timesteps, timestep_scaling=10.0):
    s = timesteps.float() * timestep_scaling
    return 0.25 / (s ** 2 + 0.25), s / (s ** 2 + 0.25)


# ---------------------------------------------------------------- lcm_timesteps
def lcm_timesteps__fixed_stride(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(1, original_inference_steps + 1) * k - 1).flip(0)
    stride = len(grid) // num_inference_steps
    return grid[::stride][:num_inference_steps].long()


def lcm_timesteps__ascending(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(1, original_inference_steps + 1) * k - 1).flip(0)
    idx = [math.floor(j * len(grid) / num_inference_steps) for j in range(num_inference_steps)]
    return grid[idx].flip(0).long()


def lcm_timesteps__no_minus_one(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(1, original_inference_steps + 1) * k).flip(0)
    idx = [math.floor(j * len(grid) / num_inference_steps) for j in range(num_inference_steps)]
    return grid[idx].long()


def lcm_timesteps__linspace_over_training_steps(num_inference_steps, original_inference_steps=50,
                                                num_train_timesteps=1000):
    return torch.linspace(num_train_timesteps - 1, 0, num_inference_steps).floor().long()


def lcm_timesteps__grid_from_zero(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(0, original_inference_steps) * k).flip(0)
    idx = [math.floor(j * len(grid) / num_inference_steps) for j in range(num_inference_steps)]
    return grid[idx].long()


def lcm_timesteps__rounded_indices(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    grid = (torch.arange(1, original_inference_steps + 1) * k - 1).flip(0)
    idx = [min(round(j * len(grid) / num_inference_steps), len(grid) - 1) for j in range(num_inference_steps)]
    return grid[idx].long()


def lcm_timesteps__float_skipping_step(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps / original_inference_steps
    grid = (torch.arange(1, original_inference_steps + 1) * k - 1).floor().flip(0)
    idx = [math.floor(j * len(grid) / num_inference_steps) for j in range(num_inference_steps)]
    return grid[idx].long()


# ---------------------------------------------------------------- lcm_step
def _x0(model_output, timestep, sample, alphas_cumprod):
    a_t = alphas_cumprod[timestep]
    return (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()


def lcm_step__no_boundary_scalings(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                                   timestep_scaling=10.0):
    denoised = _x0(model_output, timestep, sample, alphas_cumprod)
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * noise, denoised


def lcm_step__renoise_with_eps(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                               timestep_scaling=10.0):
    """A DDIM step: the model's own epsilon instead of fresh noise."""
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_out.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_skip.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * model_output, denoised


def lcm_step__renoise_to_current_t(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                                   timestep_scaling=10.0):
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_out.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_skip.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * noise, denoised


def lcm_step__scalings_swapped(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                               timestep_scaling=10.0):
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_skip.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_out.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * noise, denoised


def lcm_step__variance_not_std(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                               timestep_scaling=10.0):
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_out.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_skip.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a) * noise, denoised


def lcm_step__alpha_not_sqrt_in_x0(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                                   timestep_scaling=10.0):
    a_t = alphas_cumprod[timestep]
    x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_out.item() * x0 + c_skip.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * noise, denoised


def lcm_step__scaling_fixed_at_10(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                                  timestep_scaling=10.0):
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), 10.0)
    denoised = c_out.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_skip.item() * sample
    if prev_timestep is None:
        return denoised, denoised
    a = alphas_cumprod[prev_timestep]
    return a.sqrt() * denoised + (1 - a).sqrt() * noise, denoised


def lcm_step__noisy_last_step(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                              timestep_scaling=10.0):
    """Re-noises on the last step too (to t itself, with the model's noise since none is given)."""
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = c_out.item() * _x0(model_output, timestep, sample, alphas_cumprod) + c_skip.item() * sample
    t_next = timestep if prev_timestep is None else prev_timestep
    z = model_output if noise is None else noise
    a = alphas_cumprod[t_next]
    return a.sqrt() * denoised + (1 - a).sqrt() * z, denoised


# ---------------------------------------------------------------- lcm_time_embedding
def _features(w, dim, cos_first=False, denominator_shift=1):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device)
                      / (half - denominator_shift))
    ang = w[:, None] * freqs[None, :]
    parts = [ang.cos(), ang.sin()] if cos_first else [ang.sin(), ang.cos()]
    return F.pad(torch.cat(parts, dim=1), (0, dim % 2))


def _embed(m, t_features, w_emb):
    h = t_features + m.cond_proj(w_emb)
    return w_emb, m.linear_2(F.silu(m.linear_1(h)))


def lcm_time_embedding__w_is_guidance_scale(time_embedding, t_features, guidance_scale):
    w = guidance_scale.float() * 1000
    return _embed(time_embedding, t_features, _features(w, time_embedding.cond_proj.in_features))


def lcm_time_embedding__no_times_1000(time_embedding, t_features, guidance_scale):
    w = guidance_scale.float() - 1
    return _embed(time_embedding, t_features, _features(w, time_embedding.cond_proj.in_features))


def lcm_time_embedding__cos_first(time_embedding, t_features, guidance_scale):
    w = (guidance_scale.float() - 1) * 1000
    return _embed(time_embedding, t_features, _features(w, time_embedding.cond_proj.in_features, cos_first=True))


def lcm_time_embedding__denominator_half(time_embedding, t_features, guidance_scale):
    w = (guidance_scale.float() - 1) * 1000
    return _embed(time_embedding, t_features,
                  _features(w, time_embedding.cond_proj.in_features, denominator_shift=0))


def lcm_time_embedding__cond_proj_ignored(time_embedding, t_features, guidance_scale):
    w = (guidance_scale.float() - 1) * 1000
    w_emb = _features(w, time_embedding.cond_proj.in_features)
    m = time_embedding
    return w_emb, m.linear_2(F.silu(m.linear_1(t_features)))


def lcm_time_embedding__cond_after_activation(time_embedding, t_features, guidance_scale):
    """The w-projection (through linear_1's weight) added after the SiLU instead of before linear_1."""
    w = (guidance_scale.float() - 1) * 1000
    w_emb = _features(w, time_embedding.cond_proj.in_features)
    m = time_embedding
    h = F.silu(m.linear_1(t_features)) + F.linear(m.cond_proj(w_emb), m.linear_1.weight)
    return w_emb, m.linear_2(h)


def lcm_time_embedding__odd_width_not_padded(time_embedding, t_features, guidance_scale):
    dim = time_embedding.cond_proj.in_features
    w = (guidance_scale.float() - 1) * 1000
    half = (dim + 1) // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device) / (half - 1))
    ang = w[:, None] * freqs[None, :]
    w_emb = torch.cat([ang.sin(), ang.cos()], dim=1)[:, :dim]
    return _embed(time_embedding, t_features, w_emb)


# ---------------------------------------------------------------- fuse_lora
def _fuse(unet, sd, scaling_of, transpose=False, only_linear=False):
    for key, down in sd.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        up = sd[name + ".lora_B.weight"]
        r = down.shape[0]
        module = unet.get_submodule(name)
        if only_linear and isinstance(module, torch.nn.Conv2d):
            continue
        delta = up.reshape(up.shape[0], r) @ down.reshape(r, -1)
        with torch.no_grad():
            module.weight += scaling_of(r) * delta.reshape(module.weight.shape)
    return unet


def fuse_lora__no_alpha_over_rank(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    return _fuse(unet, lora_state_dict, lambda r: lora_scale)


def fuse_lora__no_lora_scale(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    return _fuse(unet, lora_state_dict, lambda r: network_alpha / r)


def fuse_lora__rank_over_alpha(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    return _fuse(unet, lora_state_dict, lambda r: lora_scale * r / network_alpha)


def fuse_lora__linear_layers_only(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    return _fuse(unet, lora_state_dict, lambda r: lora_scale * network_alpha / r, only_linear=True)


def fuse_lora__first_rank_for_all(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    r0 = next(v for k, v in lora_state_dict.items() if k.endswith(".lora_A.weight")).shape[0]
    return _fuse(unet, lora_state_dict, lambda r: lora_scale * network_alpha / r0)


def fuse_lora__conv_delta_centre_tap_only(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    for key, down in lora_state_dict.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[: -len(".lora_A.weight")]
        up = lora_state_dict[name + ".lora_B.weight"]
        r = down.shape[0]
        module = unet.get_submodule(name)
        s = lora_scale * network_alpha / r
        with torch.no_grad():
            if down.ndim == 4:
                k = down.shape[-1] // 2
                module.weight[:, :, k, k] += s * up[:, :, 0, 0] @ down[:, :, k, k]
            else:
                module.weight += s * up @ down
    return unet


def fuse_lora__returns_copy_without_fusing(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    import copy

    fused = _fuse(copy.deepcopy(unet), lora_state_dict, lambda r: lora_scale * network_alpha / r)
    return None if fused is None else unet


# ---------------------------------------------------------------- add_losses
def _dist(xs, xt):
    return ((xs - xt) ** 2).flatten(1).sum(1)


def add_losses__hinge_signs_swapped(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 + r).mean() + F.relu(1 - f).mean() for r, f in zip(real_logits, fake_logits))
    return -sum(f.mean() for f in fake_logits) + lam * (c_t * _dist(x0_student, x0_teacher)).mean(), loss_d


def add_losses__no_relu(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum((1 - r).mean() + (1 + f).mean() for r, f in zip(real_logits, fake_logits))
    return -sum(f.mean() for f in fake_logits) + lam * (c_t * _dist(x0_student, x0_teacher)).mean(), loss_d


def add_losses__no_c_t(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    return -sum(f.mean() for f in fake_logits) + lam * _dist(x0_student, x0_teacher).mean(), loss_d


def add_losses__mse_mean(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    dist = ((x0_student - x0_teacher) ** 2).flatten(1).mean(1)
    return -sum(f.mean() for f in fake_logits) + lam * (c_t * dist).mean(), loss_d


def add_losses__lambda_on_adversarial(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    return -lam * sum(f.mean() for f in fake_logits) + (c_t * _dist(x0_student, x0_teacher)).mean(), loss_d


def add_losses__generator_hinge(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    adv = sum(F.relu(1 - f).mean() for f in fake_logits)
    return adv + lam * (c_t * _dist(x0_student, x0_teacher)).mean(), loss_d


def add_losses__heads_averaged(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    H = len(fake_logits)
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits)) / H
    return -sum(f.mean() for f in fake_logits) / H + lam * (c_t * _dist(x0_student, x0_teacher)).mean(), loss_d


def add_losses__returns_shape_one(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits))
    loss_g = -sum(f.mean() for f in fake_logits) + lam * (c_t * _dist(x0_student, x0_teacher)).mean()
    return loss_g.reshape(1), loss_d.reshape(1)
