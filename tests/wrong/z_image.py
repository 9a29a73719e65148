"""Wrong implementations for lesson 12. Each function's name: <exercise>__<mistake>.

They run inside the solution namespace (tests.notebook_code.namespace_with_wrong), so the
helpers of the answer cells (rms_norm, rotate_pairs) are the correct ones.
"""

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"position_ids_answer": "position_ids__caption_from_zero", "zimage_step_answer": "zimage_step__standard_cfg"},
    ["decoupled_dmd_grad_answer"],
)


# ---------------------------------------------------------------- position_ids
def _ids(cap_len, grid_f, grid_h, grid_w, *, cap_start=1, img_start=None, cap_pad_zero=False, swap_hw=False,
         pad=True, img_pad_count=False):
    Lc = cap_len + (-cap_len) % 32 if pad else cap_len
    zeros = torch.zeros(Lc, dtype=torch.long)
    cap = torch.stack([torch.arange(cap_start, cap_start + Lc), zeros, zeros], -1)
    if cap_pad_zero:
        cap[cap_len:] = 0
    start = Lc + 1 if img_start is None else img_start(Lc)
    if swap_hw:
        f, x, y = torch.meshgrid(torch.arange(grid_f) + start, torch.arange(grid_w), torch.arange(grid_h), indexing="ij")
    else:
        f, y, x = torch.meshgrid(torch.arange(grid_f) + start, torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    img = torch.stack([f, y, x], -1).reshape(-1, 3)
    n_pad = (-len(img)) % 32 if pad else 0
    tail = torch.zeros(n_pad, 3, dtype=torch.long)
    if img_pad_count:
        tail[:, 0] = torch.arange(n_pad) + start + grid_f
    return cap, torch.cat([img, tail])


def position_ids__caption_from_zero(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, cap_start=0, img_start=lambda Lc: Lc)


def position_ids__caption_pads_zero(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, cap_pad_zero=True)


def position_ids__image_after_unpadded_caption(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, img_start=lambda Lc: cap_len + 1)


def position_ids__image_start_without_plus_one(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, img_start=lambda Lc: Lc)


def position_ids__grid_column_major(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, swap_hw=True)


def position_ids__no_padding(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, pad=False)


def position_ids__image_pads_keep_counting(cap_len, grid_f, grid_h, grid_w):
    return _ids(cap_len, grid_f, grid_h, grid_w, img_pad_count=True)


# ---------------------------------------------------------------- apply_rope_3d
def _rope(x, ids, axes_dims, theta, *, exponent=lambda d: torch.arange(0, d, 2, dtype=torch.float64) / d,
          half=False, flip=False, float32=False):
    angles = []
    for a, d in enumerate(axes_dims):
        inv = theta ** (-exponent(d))
        col = ids[..., len(axes_dims) - 1 - a if flip else a, None].cpu()
        angles.append(col.float() * inv.float() if float32 else col.double() * inv)
    ang = torch.cat(angles, -1).float().to(x.device)[:, :, None]
    c, s = ang.cos(), ang.sin()
    if half:
        a, b = x.float().chunk(2, dim=-1)
        return torch.cat([a * c - b * s, a * s + b * c], -1).type_as(x)
    p = x.float().reshape(*x.shape[:-1], -1, 2)
    return torch.stack([p[..., 0] * c - p[..., 1] * s, p[..., 0] * s + p[..., 1] * c], -1).flatten(-2).type_as(x)


def apply_rope_3d__rotate_half_pairs(x, ids, axes_dims, theta):
    return _rope(x, ids, axes_dims, theta, half=True)


def apply_rope_3d__theta_10000(x, ids, axes_dims, theta):
    return _rope(x, ids, axes_dims, 10000.0)


def apply_rope_3d__axes_reversed(x, ids, axes_dims, theta):
    return _rope(x, ids, axes_dims, theta, flip=True)


def apply_rope_3d__exponent_j_over_d(x, ids, axes_dims, theta):
    return _rope(x, ids, axes_dims, theta, exponent=lambda d: torch.arange(d // 2, dtype=torch.float64) / d)


def apply_rope_3d__one_table_over_all_channels(x, ids, axes_dims, theta):
    # one frequency ladder over the whole head width instead of one per axis
    d = sum(axes_dims)
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    sizes = [k // 2 for k in axes_dims]
    pos = torch.cat([ids[..., a, None].cpu().double().expand(*ids.shape[:-1], n) for a, n in enumerate(sizes)], -1)
    ang = (pos * inv).float().to(x.device)[:, :, None]
    p = x.float().reshape(*x.shape[:-1], -1, 2)
    c, s = ang.cos(), ang.sin()
    return torch.stack([p[..., 0] * c - p[..., 1] * s, p[..., 0] * s + p[..., 1] * c], -1).flatten(-2).type_as(x)


def apply_rope_3d__float32_out(x, ids, axes_dims, theta):
    # Right values, wrong contract: bf16 in, float32 out (rotated in float32, never cast back).
    return _rope(x.float(), ids, axes_dims, theta)


def apply_rope_3d__rotation_backwards(x, ids, axes_dims, theta):
    return _rope(x, -ids, axes_dims, theta)


# ---------------------------------------------------------------- s3dit_block
def s3dit_block__float32_out(block, x, attn_mask, freqs_cis, adaln_input=None):
    # Right values, wrong contract: a float32 copy of the block, so bf16 in, float32 out (never cast back).
    import copy

    return _block(copy.deepcopy(block).float(), x.float(), attn_mask, freqs_cis,
                  None if adaln_input is None else adaln_input.float())


def _block(block, x, attn_mask, freqs_cis, adaln_input, *, tanh=True, one_plus=True, order=(0, 1, 2, 3),
           silu=False, post_norm=True, qk_norm=True, rope=True, mask=True, scale=None):
    attn = block.attention
    B, N, D = x.shape
    h = attn.heads

    def attention(y):
        q, k, v = (lin(y).reshape(B, N, h, -1) for lin in (attn.to_q, attn.to_k, attn.to_v))
        if qk_norm:
            q = rms_norm(q, attn.norm_q.weight, attn.norm_q.eps)  # noqa: F821 (the notebook's helper)
            k = rms_norm(k, attn.norm_k.weight, attn.norm_k.eps)  # noqa: F821
        if rope:
            q, k = rotate_pairs(q, freqs_cis), rotate_pairs(k, freqs_cis)  # noqa: F821
        m = attn_mask[:, None, None, :] if (mask and attn_mask is not None) else None
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m,
                                           scale=scale)
        return attn.to_out[0](o.transpose(1, 2).reshape(B, N, -1))

    def ffn(y):
        ff = block.feed_forward
        return ff.w2(F.silu(ff.w1(y)) * ff.w3(y))

    norm = lambda m, t: rms_norm(t, m.weight, m.eps)  # noqa: E731, F821
    if block.modulation:
        chunks = block.adaLN_modulation(F.silu(adaln_input) if silu else adaln_input)[:, None].chunk(4, dim=-1)
        s1, g1, s2, g2 = (chunks[i] for i in order)
        s1, s2 = (1 + s1, 1 + s2) if one_plus else (s1, s2)
        g1, g2 = (g1.tanh(), g2.tanh()) if tanh else (g1, g2)
    else:
        s1 = g1 = s2 = g2 = 1.0
    a = attention(norm(block.attention_norm1, x) * s1)
    x = x + g1 * (norm(block.attention_norm2, a) if post_norm else a)
    m = ffn(norm(block.ffn_norm1, x) * s2)
    return x + g2 * (norm(block.ffn_norm2, m) if post_norm else m)


def s3dit_block__gates_without_tanh(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, tanh=False)


def s3dit_block__scale_without_one_plus(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, one_plus=False)


def s3dit_block__chunks_scale_scale_gate_gate(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, order=(0, 2, 1, 3))


def s3dit_block__silu_before_modulation(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, silu=True)


def s3dit_block__no_post_norm(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, post_norm=False)


def s3dit_block__no_qk_norm(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, qk_norm=False)


def s3dit_block__no_rope(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, rope=False)


def s3dit_block__ignores_padding_mask(block, x, attn_mask, freqs_cis, adaln_input=None):
    return _block(block, x, attn_mask, freqs_cis, adaln_input, mask=False)


def s3dit_block__scores_over_head_dim(block, x, attn_mask, freqs_cis, adaln_input=None):
    d = block.attention.to_q.out_features // block.attention.heads
    return _block(block, x, attn_mask, freqs_cis, adaln_input, scale=1.0 / d)


def s3dit_block__calls_block_forward(block, x, attn_mask, freqs_cis, adaln_input=None):
    return block(x, attn_mask, freqs_cis, adaln_input)


# ---------------------------------------------------------------- encode_prompt
def _hidden(text_encoder, input_ids, attention_mask):
    return text_encoder(input_ids=input_ids, attention_mask=attention_mask.bool(), output_hidden_states=True)


def encode_prompt__last_hidden_state(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).last_hidden_state
    return [h[i][attention_mask[i].bool()] for i in range(len(h))]


def encode_prompt__third_to_last_layer(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[-3]
    return [h[i][attention_mask[i].bool()] for i in range(len(h))]


def encode_prompt__keeps_padding(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[-2]
    return list(h.unbind(0))


def encode_prompt__padding_zeroed_not_removed(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[-2] * attention_mask[..., None]
    return list(h.unbind(0))


def encode_prompt__final_norm_applied(text_encoder, input_ids, attention_mask):
    h = text_encoder.norm(_hidden(text_encoder, input_ids, attention_mask).hidden_states[-2])
    return [h[i][attention_mask[i].bool()] for i in range(len(h))]


def encode_prompt__embeddings_layer(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[0]
    return [h[i][attention_mask[i].bool()] for i in range(len(h))]


def encode_prompt__hardcoded_layer_index(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[2]   # right only for a 3-layer model
    return [h[i][attention_mask[i].bool()] for i in range(len(h))]


def encode_prompt__shortest_length_for_all(text_encoder, input_ids, attention_mask):
    h = _hidden(text_encoder, input_ids, attention_mask).hidden_states[-2]
    n = int(attention_mask.sum(-1).min())
    return [h[i][:n] for i in range(len(h))]


# ---------------------------------------------------------------- zimage_step
def _step(transformer, latents, sigma, sigma_next, pos_e, neg_e, s, *, time=None, cfg="z", negate=True, sign=1.0):
    B = latents.shape[0]

    def run(lat, t, caps):
        out = transformer(list(lat.unsqueeze(2).unbind(0)), t, list(caps), return_dict=False)[0]
        return torch.stack(out).squeeze(2).float()

    t = torch.full((B,), (1.0 - sigma) if time is None else time(sigma), device=latents.device)
    if s > 0 or cfg == "always":
        pos = run(latents, t, pos_e)
        neg = run(latents, t, neg_e if neg_e is not None else pos_e)
        pred = {"z": pos + s * (pos - neg), "standard": neg + s * (pos - neg), "always": pos + s * (pos - neg),
                "minus_one": pos + (s - 1) * (pos - neg), "flipped": pos + s * (neg - pos)}[cfg]
    else:
        pred = run(latents, t, pos_e)
    v = -pred if negate else pred
    return latents + sign * (sigma_next - sigma) * v


def zimage_step__sigma_as_time(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                               guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 time=lambda s: s)


def zimage_step__time_times_1000(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                                 guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 time=lambda s: 1000 * (1 - s))


def zimage_step__not_negated(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                             guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 negate=False)


def zimage_step__standard_cfg(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                              guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 cfg="standard")


def zimage_step__cfg_scale_minus_one(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                                     guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 cfg="minus_one")


def zimage_step__step_sign_reversed(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds,
                                    guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 sign=-1.0)


def zimage_step__guidance_direction_flipped(transformer, latents, sigma, sigma_next, prompt_embeds,
                                            negative_prompt_embeds, guidance_scale):
    return _step(transformer, latents, sigma, sigma_next, prompt_embeds, negative_prompt_embeds, guidance_scale,
                 cfg="flipped")


# ---------------------------------------------------------------- decoupled_dmd_grad
def _dmd(x0, noise, t_dm, t_ca, w, fake, cond, unc, *, coupled=False, swapped=False, ca_scale=None, ca_sign=-1.0,
         dm_sign=1.0, dm_ref="cond", noising="fm"):
    def renoise(t):
        if noising == "ve":
            return x0 + t[:, None] * noise
        return (1 - t)[:, None] * x0 + t[:, None] * noise

    if swapped:
        t_dm, t_ca = t_ca, t_dm
    if coupled:
        t_ca = t_dm
    x_dm, x_ca = renoise(t_dm), renoise(t_ca)
    real = cond if dm_ref == "cond" else unc
    dm = dm_sign * (fake(x_dm, t_dm) - real(x_dm, t_dm))
    k = (w - 1) if ca_scale is None else ca_scale(w)
    return dm + ca_sign * k * (cond(x_ca, t_ca) - unc(x_ca, t_ca))


def decoupled_dmd_grad__coupled_noise_levels(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, coupled=True)


def decoupled_dmd_grad__noise_levels_swapped(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score,
                                             uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, swapped=True)


def decoupled_dmd_grad__ca_scaled_by_w(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, ca_scale=lambda w: w)


def decoupled_dmd_grad__ca_sign_flipped(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, ca_sign=1.0)


def decoupled_dmd_grad__dm_sign_flipped(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, dm_sign=-1.0)


def decoupled_dmd_grad__dm_against_uncond(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, dm_ref="uncond")


def decoupled_dmd_grad__ve_noising(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score):
    return _dmd(x0, noise, t_dm, t_ca, guidance_scale, fake_score, cond_score, uncond_score, noising="ve")
