"""Correct alternative implementations for lesson 9 (SDXL). Each function's name: <exercise>__<how>."""

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- encode_text
def encode_text__default_max_length_and_projection(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    # padding="max_length" without max_length pads to model_max_length; pooled = text_projection(pooler_output)
    ids_1 = tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    ids_2 = tokenizer_2(prompts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    out_1 = text_encoder(ids_1.to(text_encoder.device), output_hidden_states=True)
    out_2 = text_encoder_2.text_model(ids_2.to(text_encoder_2.device), output_hidden_states=True)
    pooled = text_encoder_2.text_projection(out_2.pooler_output)
    n1 = len(out_1.hidden_states)
    return torch.cat((out_1.hidden_states[n1 - 2], out_2.hidden_states[-2]), dim=2), pooled


def encode_text__tuple_outputs(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    def ids(tok, enc):
        return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt")["input_ids"].to(enc.device)

    out_1 = text_encoder(ids(tokenizer, text_encoder), output_hidden_states=True, return_dict=False)
    out_2 = text_encoder_2(ids(tokenizer_2, text_encoder_2), output_hidden_states=True, return_dict=False)
    # (last_hidden_state, pooler_output, hidden_states) and (text_embeds, last_hidden_state, hidden_states)
    return torch.cat([out_1[2][-2], out_2[2][-2]], -1), out_2[0]


# ---------------------------------------------------------------- encode_prompt_cfg
def encode_prompt_cfg__repeat_view(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                   negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    pe, pooled = encode_text(*encoders, prompts)
    zero = negative_prompts is None and force_zeros_for_empty_prompt
    if zero:
        npe, npooled = pe * 0, pooled * 0
    else:
        npe, npooled = encode_text(*encoders, [""] * len(prompts) if negative_prompts is None else negative_prompts)
    n = num_images_per_prompt
    B, N, _ = pe.shape
    out = [t.repeat(1, n, 1).view(B * n, N, -1) for t in (pe, npe)]
    out += [t.repeat(1, n).view(B * n, -1) for t in (pooled, npooled)]
    return out[0], out[1], out[2], out[3]


def encode_prompt_cfg__index_select(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                    negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    if negative_prompts is not None:
        both, pooled_both = encode_text(*encoders, list(prompts) + list(negative_prompts))
        pe, npe = both.chunk(2)
        pooled, npooled = pooled_both.chunk(2)
    elif force_zeros_for_empty_prompt:
        pe, pooled = encode_text(*encoders, prompts)
        npe, npooled = torch.zeros_like(pe), torch.zeros_like(pooled)
    else:
        pe, pooled = encode_text(*encoders, prompts)
        npe, npooled = encode_text(*encoders, [""] * len(prompts))
    idx = torch.arange(len(prompts), device=pe.device).repeat_interleave(num_images_per_prompt)
    return pe[idx], npe[idx], pooled[idx], npooled[idx]


# ---------------------------------------------------------------- time_id_features
def time_id_features__power_in_float64(time_ids, dim):
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=time_ids.device)
    omega = (10000.0 ** (-i / half)).float()
    angles = time_ids.float().unsqueeze(-1) * omega
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).flatten(1)


def time_id_features__per_number_loop(time_ids, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / half * torch.arange(half, device=time_ids.device, dtype=torch.float32))
    parts = []
    for k in range(time_ids.shape[1]):
        a = time_ids[:, k:k + 1].float() * freqs[None]
        parts += [a.cos(), a.sin()]
    return torch.cat(parts, dim=1)


# ---------------------------------------------------------------- added_embedding
def added_embedding__module_call(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    feats = time_id_features(time_ids, addition_time_embed_dim)
    return add_embedding(torch.cat([text_embeds, feats], dim=1).to(add_embedding.linear_1.weight.dtype))


def added_embedding__functional(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    l1, l2 = add_embedding.linear_1, add_embedding.linear_2
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim).to(text_embeds.dtype)], -1)
    h = F.linear(x, l1.weight, l1.bias)
    return F.linear(h * torch.sigmoid(h), l2.weight, l2.bias)


# ---------------------------------------------------------------- cfg_time_ids
def cfg_time_ids__repeat(original_size, crops_coords_top_left, target_size, batch_size,
                         aesthetic_score=None, negative_aesthetic_score=2.5):
    if aesthetic_score is None:
        pos = torch.tensor([[*original_size, *crops_coords_top_left, *target_size]], dtype=torch.float32)
        neg = pos.clone()
    else:
        pos = torch.tensor([[*original_size, *crops_coords_top_left, aesthetic_score]], dtype=torch.float32)
        neg = torch.tensor([[*original_size, 0, 0, negative_aesthetic_score]], dtype=torch.float32)
    return torch.cat([neg.repeat(batch_size, 1), pos.repeat(batch_size, 1)], dim=0)


def cfg_time_ids__expand(original_size, crops_coords_top_left, target_size, batch_size,
                         aesthetic_score=None, negative_aesthetic_score=2.5):
    if aesthetic_score is None:
        tails = [tuple(crops_coords_top_left) + tuple(target_size)] * 2
    else:
        tails = [(0, 0, negative_aesthetic_score), tuple(crops_coords_top_left) + (aesthetic_score,)]
    rows = torch.stack([torch.tensor(tuple(original_size) + t, dtype=torch.float32)
                        for t in tails])                      # (2, K): negative, positive
    return rows[:, None, :].expand(2, batch_size, rows.shape[1]).reshape(2 * batch_size, -1)


# ---------------------------------------------------------------- handoff
def handoff__first_index_below(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cut = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    values = timesteps.tolist()
    first_below = next((i for i, t in enumerate(values) if t < cut), len(values))
    start = first_below
    if order == 2 and (len(values) - start) % 2 == 0:
        start -= 1
    return timesteps[:first_below], timesteps[start:]


def handoff__masks(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cut = round(num_train_timesteps * 1.0 - num_train_timesteps * denoising_end)
    base = timesteps[timesteps >= cut]
    below = int((timesteps < cut).sum())
    extra = 1 if order == 2 and below % 2 == 0 else 0
    return base, timesteps[timesteps.numel() - below - extra:]
