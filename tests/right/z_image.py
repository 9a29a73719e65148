"""Correct alternative implementations for lesson 12: <exercise>__<how>. Each must pass public and hidden."""

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- position_ids
def position_ids__loops_and_int32(cap_len, grid_f, grid_h, grid_w):
    Lc = math.ceil(cap_len / 32) * 32
    cap = torch.tensor([[1 + i, 0, 0] for i in range(Lc)], dtype=torch.int32)
    img = [[Lc + 1 + f, y, x] for f in range(grid_f) for y in range(grid_h) for x in range(grid_w)]
    img += [[0, 0, 0]] * (math.ceil(len(img) / 32) * 32 - len(img))
    return cap, torch.tensor(img, dtype=torch.int32)


def position_ids__index_arithmetic(cap_len, grid_f, grid_h, grid_w):
    Lc = -(-cap_len // 32) * 32
    n = grid_f * grid_h * grid_w
    Li = -(-n // 32) * 32
    cap = torch.zeros(Lc, 3, dtype=torch.long)
    cap[:, 0] = torch.arange(Lc) + 1
    k = torch.arange(n)
    img = torch.zeros(Li, 3, dtype=torch.long)
    img[:n, 0] = Lc + 1 + k // (grid_h * grid_w)
    img[:n, 1] = (k // grid_w) % grid_h
    img[:n, 2] = k % grid_w
    return cap, img


# ---------------------------------------------------------------- apply_rope_3d
def apply_rope_3d__complex_polar(x, ids, axes_dims, theta):
    freqs = []
    for a, d in enumerate(axes_dims):
        inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = (ids[..., a].cpu().double()[..., None] * inv).float()
        freqs.append(torch.polar(torch.ones_like(ang), ang))
    fc = torch.cat(freqs, -1).to(x.device)[:, :, None]                      # (B, N, 1, d/2)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * fc).flatten(-2).type_as(x)


def apply_rope_3d__rotation_matrices_per_axis(x, ids, axes_dims, theta):
    out, start = [], 0
    for a, d in enumerate(axes_dims):
        part = x[..., start:start + d].float()                               # (B, N, h, d_a)
        inv = torch.exp(-math.log(theta) * torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)
        ang = (ids[..., a].to(x.device, torch.float64)[..., None] * inv).float()[:, :, None]
        even, odd = part[..., 0::2], part[..., 1::2]
        rot = torch.empty_like(part)
        rot[..., 0::2] = even * ang.cos() - odd * ang.sin()
        rot[..., 1::2] = even * ang.sin() + odd * ang.cos()
        out.append(rot)
        start += d
    return torch.cat(out, -1).type_as(x)


# ---------------------------------------------------------------- s3dit_block
def _rms(x, w, eps):
    return F.rms_norm(x.float(), (x.shape[-1],), w.float(), eps).type_as(x)


def _explicit_attention(attn, y, mask, freqs_cis):
    B, N, _ = y.shape
    h = attn.heads
    q, k, v = (lin(y).view(B, N, h, -1).transpose(1, 2) for lin in (attn.to_q, attn.to_k, attn.to_v))  # (B, h, N, d)
    q, k = _rms(q, attn.norm_q.weight, attn.norm_q.eps), _rms(k, attn.norm_k.weight, attn.norm_k.eps)
    c, s = freqs_cis.real[:, None], freqs_cis.imag[:, None]                                                # (B, 1, N, d/2)

    def rot(t):
        e, o = t[..., 0::2], t[..., 1::2]
        return torch.stack([e * c - o * s, e * s + o * c], -1).flatten(-2).type_as(t)   # float32 angles, t's dtype

    q, k = rot(q), rot(k)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])                                           # (B, h, N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    o = scores.softmax(-1) @ v
    return attn.to_out[0](o.transpose(1, 2).reshape(B, N, -1))


def s3dit_block__explicit_softmax_and_F_rms_norm(block, x, attn_mask, freqs_cis, adaln_input=None):
    if block.modulation:
        s1, g1, s2, g2 = block.adaLN_modulation(adaln_input).unsqueeze(1).chunk(4, dim=2)
        s1, s2, g1, g2 = 1 + s1, 1 + s2, torch.tanh(g1), torch.tanh(g2)
    else:
        s1 = s2 = g1 = g2 = 1.0
    a = _explicit_attention(block.attention, _rms(x, block.attention_norm1.weight, block.attention_norm1.eps) * s1,
                            attn_mask, freqs_cis)
    x = x + g1 * _rms(a, block.attention_norm2.weight, block.attention_norm2.eps)
    ff = block.feed_forward
    y = _rms(x, block.ffn_norm1.weight, block.ffn_norm1.eps) * s2
    m = ff.w2(F.silu(ff.w1(y)) * ff.w3(y))
    return x + g2 * _rms(m, block.ffn_norm2.weight, block.ffn_norm2.eps)


def s3dit_block__float_additive_mask_and_weight_slices(block, x, attn_mask, freqs_cis, adaln_input=None):
    D = x.shape[-1]
    if block.modulation:
        lin = block.adaLN_modulation[0]
        mod = adaln_input @ lin.weight.T + lin.bias                                   # (B, 4D)
        s1, g1, s2, g2 = (mod[:, None, i * D:(i + 1) * D] for i in range(4))
        s1, s2, g1, g2 = 1 + s1, 1 + s2, torch.tanh(g1), torch.tanh(g2)
    else:
        s1 = s2 = g1 = g2 = 1.0
    attn = block.attention
    B, N, _ = x.shape
    h = attn.heads

    def norm(m, t):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + m.eps) * m.weight

    y = norm(block.attention_norm1, x) * s1
    q, k, v = (lin(y).unflatten(-1, (h, -1)) for lin in (attn.to_q, attn.to_k, attn.to_v))
    q, k = norm(attn.norm_q, q), norm(attn.norm_k, k)
    fc = freqs_cis[:, :, None]
    q = torch.view_as_real(torch.view_as_complex(q.float().reshape(B, N, h, -1, 2).contiguous()) * fc).flatten(3).type_as(q)
    k = torch.view_as_real(torch.view_as_complex(k.float().reshape(B, N, h, -1, 2).contiguous()) * fc).flatten(3).type_as(k)
    bias = None
    if attn_mask is not None:
        bias = torch.zeros(B, 1, 1, N, device=x.device, dtype=q.dtype).masked_fill(~attn_mask[:, None, None, :], float("-inf"))
    o = F.scaled_dot_product_attention(q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3),
                                       attn_mask=bias)
    x = x + g1 * norm(block.attention_norm2, attn.to_out[0](o.permute(0, 2, 1, 3).flatten(2)))
    ff = block.feed_forward
    y = norm(block.ffn_norm1, x) * s2
    return x + g2 * norm(block.ffn_norm2, ff.w2(F.silu(ff.w1(y)) * ff.w3(y)))


# ---------------------------------------------------------------- encode_prompt
def encode_prompt__slice_by_length(text_encoder, input_ids, attention_mask):
    out = text_encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    h = out.hidden_states[len(out.hidden_states) - 2]
    lengths = attention_mask.sum(-1).tolist()
    return [h[i, :n] for i, n in enumerate(lengths)]


def encode_prompt__no_mask_needed_with_right_padding(text_encoder, input_ids, attention_mask):
    # causal attention: with right padding, real tokens never see the pads, so the mask changes nothing
    h = text_encoder(input_ids=input_ids, output_hidden_states=True).hidden_states[-2]
    return [row[m.bool()] for row, m in zip(h, attention_mask)]


# ---------------------------------------------------------------- zimage_step
def _run(transformer, lat, t, caps):
    return torch.stack(transformer([l[:, None] for l in lat], t, list(caps)).sample).squeeze(2).float()


def zimage_step__two_separate_passes(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                                     guidance_scale):
    t = torch.full((latents.shape[0],), 1 - sigma, device=latents.device)
    pred = _run(transformer, latents, t, prompt_embeds)
    if guidance_scale > 0:
        neg = _run(transformer, latents, t, negative_prompt_embeds)
        pred = (1 + guidance_scale) * pred - guidance_scale * neg
    return latents - (sigma_next - sigma) * pred


def zimage_step__standard_cfg_with_w_plus_one(transformer, latents, sigma, sigma_next, prompt_embeds,
                                              negative_prompt_embeds, guidance_scale):
    # the same formula written as standard CFG with w = s + 1, time in the model's direction
    t = torch.full((latents.shape[0],), 1 - sigma, device=latents.device)
    cond = _run(transformer, latents, t, prompt_embeds)
    if guidance_scale > 0:
        uncond = _run(transformer, latents, t, negative_prompt_embeds)
        w = guidance_scale + 1
        cond = uncond + w * (cond - uncond)
    dt = (1 - sigma_next) - (1 - sigma)           # the model's time step
    return latents + dt * cond


# ---------------------------------------------------------------- decoupled_dmd_grad
def decoupled_dmd_grad__via_cfg_score_and_correction(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score,
                                                     uncond_score):
    # s_fake - s_cfg at t_dm, then move the CA part from t_dm to t_ca
    w = guidance_scale
    xd = (1 - t_dm[:, None]) * x0 + t_dm[:, None] * noise
    xc = (1 - t_ca[:, None]) * x0 + t_ca[:, None] * noise
    sc_d, su_d = cond_score(xd, t_dm), uncond_score(xd, t_dm)
    plain = fake_score(xd, t_dm) - (su_d + w * (sc_d - su_d))
    return plain + (w - 1) * (sc_d - su_d) - (w - 1) * (cond_score(xc, t_ca) - uncond_score(xc, t_ca))


def decoupled_dmd_grad__torch_lerp(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    xd = torch.lerp(x0, noise, t_dm[:, None])
    xc = torch.lerp(x0, noise, t_ca[:, None])
    return (fake_score(xd, t_dm) - cond_score(xd, t_dm)
            + (1 - guidance_scale) * cond_score(xc, t_ca) + (guidance_scale - 1) * uncond_score(xc, t_ca))
