"""Lesson 7 references: LCM's scheduler and guidance embedding, LoRA fusing, the ADD objective.

Written independently of diffusers and kept equal to it by
tests/test_reference_latent_consistency_and_turbo.py (``LCMScheduler``,
``LatentConsistencyModelPipeline.get_guidance_scale_embedding``, ``TimestepEmbedding`` with
``cond_proj``, ``load_lora_adapter`` + ``fuse_lora``). Adversarial diffusion distillation has
no diffusers code: its reference here is checked against a second, loop-based implementation
and analytic properties.

Letters: B batch, C channels, H W latent height/width, N timesteps (or tokens), D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIGMA_DATA = 0.5


# ---------------------------------------------------------------- 1. boundary scalings
def lcm_scalings(timesteps: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = SIGMA_DATA):
    """``LCMScheduler.get_scalings_for_boundary_condition_discrete``: timesteps (N,) -> (c_skip, c_out), each (N,) fp32.

    s = timestep_scaling * t;  c_skip = σd² / (s² + σd²);  c_out = s / √(s² + σd²).
    """
    s = timesteps.double() * timestep_scaling
    c_skip = sigma_data ** 2 / (s ** 2 + sigma_data ** 2)
    c_out = s / (s ** 2 + sigma_data ** 2).sqrt()
    return c_skip.float(), c_out.float()


# ---------------------------------------------------------------- 2. the skipping-step timestep grid
def lcm_timesteps(num_inference_steps: int, original_inference_steps: int = 50,
                  num_train_timesteps: int = 1000) -> torch.Tensor:
    """``LCMScheduler.set_timesteps`` (strength 1): (num_inference_steps,) int64, descending.

    The distillation grid is t_i = i*k - 1 for i = 1..original_inference_steps with
    k = num_train_timesteps // original_inference_steps; the inference steps take
    floor(j * len / n) for j = 0..n-1 of that grid read from the top.
    """
    k = num_train_timesteps // original_inference_steps
    grid = [i * k - 1 for i in range(1, original_inference_steps + 1)][::-1]
    n = num_inference_steps
    idx = [math.floor(j * len(grid) / n) for j in range(n)]
    return torch.tensor([grid[i] for i in idx], dtype=torch.long)


# ---------------------------------------------------------------- 3. one LCM step
def lcm_step(model_output: torch.Tensor, timestep: int, sample: torch.Tensor, alphas_cumprod: torch.Tensor,
             noise: torch.Tensor | None, prev_timestep: int | None = None, timestep_scaling: float = 10.0):
    """``LCMScheduler.step`` (epsilon prediction, no clipping): returns (prev_sample, denoised), each (B, C, H, W).

    prev_timestep None = the last step: no re-noising, prev_sample is the denoised sample.
    """
    a_t = alphas_cumprod[int(timestep)].to(sample.device)
    x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
    c_skip, c_out = (float(v) for v in lcm_scalings(torch.tensor([int(timestep)]), timestep_scaling))
    denoised = c_out * x0 + c_skip * sample
    if prev_timestep is None:
        return denoised, denoised
    a_prev = alphas_cumprod[int(prev_timestep)].to(sample.device)
    return a_prev.sqrt() * denoised + (1 - a_prev).sqrt() * noise, denoised


def lcm_sample(unet, latents: torch.Tensor, prompt_embeds: torch.Tensor, timesteps: torch.Tensor,
               alphas_cumprod: torch.Tensor, noises: list, step=None, timestep_cond=None,
               timestep_scaling: float = 10.0) -> torch.Tensor:
    """The LCM pipeline's loop with ``step`` (default: :func:`lcm_step`); noises[i] re-noises after step i."""
    step = step or lcm_step
    denoised = latents
    for i, t in enumerate(timesteps.tolist()):
        out = unet(latents, t, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond).sample
        last = i == len(timesteps) - 1
        latents, denoised = step(out, t, latents, alphas_cumprod, None if last else noises[i],
                                 None if last else int(timesteps[i + 1]), timestep_scaling)
    return denoised


# ---------------------------------------------------------------- 4. guidance-scale embedding
def guidance_features(guidance_scale: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """The LCM pipeline's w-embedding: guidance_scale (B,) -> (B, embedding_dim) fp32.

    w = guidance_scale - 1 (diffusers' CFG convention; the LCM paper's ω), times 1000; frequencies
    exp(-ln(10000) i / (half - 1)); [sin | cos]; a zero column appended when embedding_dim is odd.
    """
    w = (guidance_scale.double() - 1.0) * 1000.0
    half = embedding_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=w.device) / (half - 1))
    ang = w[:, None] * freqs[None, :]
    emb = torch.cat([ang.sin(), ang.cos()], dim=1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb.float()


def lcm_time_embedding(time_embedding, t_features: torch.Tensor, guidance_scale: torch.Tensor):
    """``TimestepEmbedding.forward(t_features, condition=w_embedding)`` with the w-embedding above.

    time_embedding: diffusers TimestepEmbedding with ``cond_proj``; t_features (B, C0).
    Returns (w_embedding (B, time_cond_proj_dim), emb (B, D)).
    """
    w_emb = guidance_features(guidance_scale, time_embedding.cond_proj.in_features).to(t_features.device)
    h = t_features + w_emb @ time_embedding.cond_proj.weight.T
    h = F.silu(F.linear(h, time_embedding.linear_1.weight, time_embedding.linear_1.bias))
    return w_emb, F.linear(h, time_embedding.linear_2.weight, time_embedding.linear_2.bias)


# ---------------------------------------------------------------- 5. LoRA fusing
def lora_delta(weight_shape, down: torch.Tensor, up: torch.Tensor, scaling: float) -> torch.Tensor:
    """ΔW = scaling · B A for a Linear (down (r, in), up (out, r)) or a Conv2d (down (r, in, k, k), up (out, r, 1, 1))."""
    r = down.shape[0]
    return (scaling * (up.reshape(up.shape[0], r).double() @ down.reshape(r, -1).double())).reshape(weight_shape)


def lora_targets(state_dict: dict) -> list[str]:
    return sorted({k[: -len(".lora_A.weight")] for k in state_dict if k.endswith(".lora_A.weight")})


def fused_weights(unet, state_dict: dict, network_alpha: float, lora_scale: float) -> dict:
    """{module name: fused weight} for every LoRA target: W + lora_scale · (alpha / r) · B A."""
    out = {}
    for name in lora_targets(state_dict):
        w = unet.get_submodule(name).weight
        down, up = state_dict[name + ".lora_A.weight"], state_dict[name + ".lora_B.weight"]
        delta = lora_delta(w.shape, down, up, lora_scale * network_alpha / down.shape[0])
        out[name] = (w.double() + delta.to(w.device)).float()
    return out


def fuse_lora(unet, state_dict: dict, network_alpha: float, lora_scale: float = 1.0):
    """Fuse in place (for the judge's forward pass) and return the UNet."""
    with torch.no_grad():
        for name, w in fused_weights(unet, state_dict, network_alpha, lora_scale).items():
            unet.get_submodule(name).weight.copy_(w)
    return unet


# ---------------------------------------------------------------- 6. adversarial diffusion distillation
def add_losses(real_logits, fake_logits, x0_student: torch.Tensor, x0_teacher: torch.Tensor,
               c_t: torch.Tensor, lam: float):
    """ADD's two objectives (Sauer et al. 2023, eqs. 2-5 without the R1 penalty).

    real_logits, fake_logits: lists of (B, N_k) head outputs (one per discriminator feature
    layer k); x0_student, x0_teacher (B, C, H, W); c_t (B,).
    loss_D = Σ_k [mean relu(1 - D_k(real)) + mean relu(1 + D_k(fake))]
    loss_G = -Σ_k mean D_k(fake) + lam · mean_b c_t[b] · ||x0_student[b] - x0_teacher[b]||²
    Returns (loss_G, loss_D), scalars (0-d tensors).
    """
    loss_d = sum(F.relu(1 - r.double()).mean() + F.relu(1 + f.double()).mean() for r, f in zip(real_logits, fake_logits))
    adv_g = -sum(f.double().mean() for f in fake_logits)
    dist = ((x0_student.double() - x0_teacher.double()) ** 2).flatten(1).sum(1)
    loss_g = adv_g + lam * (c_t.double() * dist).mean()
    return loss_g.float(), loss_d.float()


def add_losses_loops(real_logits, fake_logits, x0_student, x0_teacher, c_t, lam):
    """A second implementation with explicit loops (tests compare the two)."""
    loss_d, adv = 0.0, 0.0
    for r, f in zip(real_logits, fake_logits):
        loss_d += sum(max(0.0, 1 - v) for v in r.flatten().tolist()) / r.numel()
        loss_d += sum(max(0.0, 1 + v) for v in f.flatten().tolist()) / f.numel()
        adv -= sum(f.flatten().tolist()) / f.numel()
    B = x0_student.shape[0]
    dist = 0.0
    for b in range(B):
        d = sum((a - t) ** 2 for a, t in zip(x0_student[b].flatten().tolist(), x0_teacher[b].flatten().tolist()))
        dist += float(c_t[b]) * d / B
    return torch.tensor(adv + lam * dist), torch.tensor(loss_d)
