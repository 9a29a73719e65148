"""Correct alternatives for lesson 7. Each function's name: <exercise>__<how>."""

import math

import numpy as np
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- lcm_scalings
def lcm_scalings__float64_then_float32(timesteps, timestep_scaling=10.0):
    s = timesteps.double() * timestep_scaling
    return (0.25 / (s ** 2 + 0.25)).float(), (s * torch.rsqrt(s ** 2 + 0.25)).float()


def lcm_scalings__per_element_python(timesteps, timestep_scaling=10.0):
    skip, out = [], []
    for t in timesteps.tolist():
        s = t * timestep_scaling
        skip.append(0.5 ** 2 / (s ** 2 + 0.5 ** 2))
        out.append(s / math.sqrt(s ** 2 + 0.5 ** 2))
    kw = dict(dtype=torch.float32, device=timesteps.device)
    return torch.tensor(skip, **kw), torch.tensor(out, **kw)


# ---------------------------------------------------------------- lcm_timesteps
def lcm_timesteps__numpy_like_diffusers(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    origin = (np.arange(1, original_inference_steps + 1) * k - 1)[::-1]
    idx = np.floor(np.linspace(0, len(origin), num=num_inference_steps, endpoint=False)).astype(np.int64)
    return torch.from_numpy(origin[idx].copy()).long()


def lcm_timesteps__integer_arithmetic(num_inference_steps, original_inference_steps=50, num_train_timesteps=1000):
    k = num_train_timesteps // original_inference_steps
    n, m = num_inference_steps, original_inference_steps
    return torch.tensor([(m - (j * m) // n) * k - 1 for j in range(n)], dtype=torch.long)


# ---------------------------------------------------------------- lcm_step
def lcm_step__v_style_algebra(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                              timestep_scaling=10.0):
    a = alphas_cumprod[timestep].item()
    s = timestep * timestep_scaling
    c_skip, c_out = 0.25 / (s * s + 0.25), s / math.sqrt(s * s + 0.25)
    # denoised = (c_out / sqrt(a) + c_skip) x - c_out sqrt(1-a)/sqrt(a) eps
    denoised = (c_out / math.sqrt(a) + c_skip) * sample - c_out * math.sqrt(1 - a) / math.sqrt(a) * model_output
    if prev_timestep is None:
        return denoised, denoised.clone()
    ap = alphas_cumprod[prev_timestep].item()
    return math.sqrt(ap) * denoised + math.sqrt(1 - ap) * noise, denoised


def lcm_step__torch_lerp_style(model_output, timestep, sample, alphas_cumprod, noise, prev_timestep=None,
                               timestep_scaling=10.0):
    a_t = alphas_cumprod[timestep].to(sample.device)
    x0 = (sample - torch.sqrt(1 - a_t) * model_output) * torch.rsqrt(a_t)
    c_skip, c_out = lcm_scalings(torch.tensor([timestep]), timestep_scaling)
    denoised = torch.addcmul(c_skip.item() * sample, x0, torch.full_like(x0, c_out.item()))
    if prev_timestep is None:
        return denoised, denoised
    a_p = alphas_cumprod[prev_timestep].to(sample.device)
    return torch.addcmul(torch.sqrt(a_p) * denoised, noise, torch.sqrt(1 - a_p).expand_as(noise)), denoised


# ---------------------------------------------------------------- lcm_time_embedding
def lcm_time_embedding__float64_features(time_embedding, t_features, guidance_scale):
    dim = time_embedding.cond_proj.in_features
    half = dim // 2
    w = (guidance_scale.double() - 1) * 1000
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=w.device) / (half - 1))
    ang = torch.outer(w, freqs)
    w_emb = torch.zeros(w.shape[0], dim, dtype=torch.float64, device=w.device)
    w_emb[:, :half], w_emb[:, half:2 * half] = ang.sin(), ang.cos()
    w_emb = w_emb.float()
    h = t_features + w_emb @ time_embedding.cond_proj.weight.T
    h = F.silu(h @ time_embedding.linear_1.weight.T + time_embedding.linear_1.bias)
    return w_emb, h @ time_embedding.linear_2.weight.T + time_embedding.linear_2.bias


def lcm_time_embedding__pow_frequencies(time_embedding, t_features, guidance_scale):
    dim = time_embedding.cond_proj.in_features
    half = dim // 2
    freqs = 10000.0 ** (-torch.arange(half, device=guidance_scale.device).float() / (half - 1))
    ang = (guidance_scale.float() - 1)[:, None] * 1000.0 * freqs
    w_emb = torch.cat([torch.sin(ang), torch.cos(ang), ang.new_zeros(ang.shape[0], dim - 2 * half)], dim=-1)
    m = time_embedding
    return w_emb, m.linear_2(m.act(m.linear_1(t_features + m.cond_proj(w_emb))))


# ---------------------------------------------------------------- fuse_lora
def fuse_lora__einsum_and_conv_via_conv2d(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    names = sorted({k.rsplit(".lora_", 1)[0] for k in lora_state_dict})
    for name in names:
        A, B = lora_state_dict[f"{name}.lora_A.weight"], lora_state_dict[f"{name}.lora_B.weight"]
        module = unet.get_submodule(name)
        s = lora_scale * network_alpha / A.shape[0]
        if A.ndim == 2:
            delta = torch.einsum("or,ri->oi", B, A)
        else:  # peft's conv formula: conv2d(A^T, B)^T
            delta = F.conv2d(A.permute(1, 0, 2, 3), B).permute(1, 0, 2, 3)
        module.weight.data.add_(s * delta)
    return unet


def fuse_lora__new_state_dict(unet, lora_state_dict, network_alpha, lora_scale=1.0):
    state = unet.state_dict()
    for key in [k for k in lora_state_dict if "lora_A" in k]:
        name = key.replace(".lora_A.weight", "")
        A, B = lora_state_dict[key], lora_state_dict[name + ".lora_B.weight"]
        r = A.shape[0]
        W = state[name + ".weight"]
        state[name + ".weight"] = W + (lora_scale * network_alpha / r) * (B.flatten(1) @ A.flatten(1)).view_as(W)
    unet.load_state_dict(state)
    return None  # fused in place


# ---------------------------------------------------------------- add_losses
def add_losses__stacked_means(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    d_real = torch.stack([torch.clamp(1 - r, min=0).mean() for r in real_logits]).sum()
    d_fake = torch.stack([torch.clamp(1 + f, min=0).mean() for f in fake_logits]).sum()
    adv = -torch.stack([f.mean() for f in fake_logits]).sum()
    dist = torch.einsum("b...,b...->b", x0_student - x0_teacher, x0_student - x0_teacher)
    return adv + lam * torch.dot(c_t, dist) / c_t.numel(), d_real + d_fake


def add_losses__mse_loss_times_numel(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    B = x0_student.shape[0]
    per = F.mse_loss(x0_student, x0_teacher, reduction="none").reshape(B, -1).sum(-1)
    loss_g = -sum(f.mean() for f in fake_logits) + lam * (c_t * per).sum() / B
    loss_d = sum(F.relu(1.0 - r).mean() for r in real_logits) + sum(F.relu(1.0 + f).mean() for f in fake_logits)
    return loss_g, loss_d
