"""Wrong implementations for lesson 9 (SDXL). Each function's name: <exercise>__<mistake>."""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"encode_text_answer": "encode_text__last_hidden_state", "handoff_answer": "handoff__fraction_of_steps"},
    ["added_embedding_answer"],
)


def _ids(tokenizer, prompts, device):
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


# ---------------------------------------------------------------- encode_text
def encode_text__last_hidden_state(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device))
    out_2 = text_encoder_2(_ids(tokenizer_2, prompts, text_encoder_2.device))
    return torch.cat([out_1.last_hidden_state, out_2.last_hidden_state], -1), out_2.text_embeds


def encode_text__last_layer(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device), output_hidden_states=True)
    out_2 = text_encoder_2(_ids(tokenizer_2, prompts, text_encoder_2.device), output_hidden_states=True)
    return torch.cat([out_1.hidden_states[-1], out_2.hidden_states[-1]], -1), out_2.text_embeds


def encode_text__final_norm_on_penultimate(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device), output_hidden_states=True)
    out_2 = text_encoder_2(_ids(tokenizer_2, prompts, text_encoder_2.device), output_hidden_states=True)
    h1 = text_encoder.final_layer_norm(out_1.hidden_states[-2])
    h2 = text_encoder_2.text_model.final_layer_norm(out_2.hidden_states[-2])
    return torch.cat([h1, h2], -1), out_2.text_embeds


def encode_text__openclip_first(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device), output_hidden_states=True)
    out_2 = text_encoder_2(_ids(tokenizer_2, prompts, text_encoder_2.device), output_hidden_states=True)
    return torch.cat([out_2.hidden_states[-2], out_1.hidden_states[-2]], -1), out_2.text_embeds


def encode_text__one_tokenizer(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    ids = _ids(tokenizer, prompts, text_encoder.device)
    out_1 = text_encoder(ids, output_hidden_states=True)
    out_2 = text_encoder_2(ids, output_hidden_states=True)
    return torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], -1), out_2.text_embeds


def encode_text__unprojected_pooled(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device), output_hidden_states=True)
    ids_2 = _ids(tokenizer_2, prompts, text_encoder_2.device)
    out_2 = text_encoder_2(ids_2, output_hidden_states=True)
    pooled = text_encoder_2.text_model(ids_2).pooler_output
    return torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], -1), pooled


def encode_text__pooled_from_clip_l(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    out_1 = text_encoder(_ids(tokenizer, prompts, text_encoder.device), output_hidden_states=True)
    out_2 = text_encoder_2(_ids(tokenizer_2, prompts, text_encoder_2.device), output_hidden_states=True)
    return torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], -1), out_1.pooler_output


def encode_text__pad_to_longest(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    states = []
    for tok, enc in ((tokenizer, text_encoder), (tokenizer_2, text_encoder_2)):
        ids = tok(prompts, padding="longest", truncation=True, max_length=tok.model_max_length,
                  return_tensors="pt").input_ids.to(enc.device)
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
    return torch.cat(states, -1), out.text_embeds


def encode_text__calls_encode_prompt(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts):
    from diffusers import StableDiffusionXLPipeline

    pe, _, pooled, _ = StableDiffusionXLPipeline.encode_prompt(None, prompts, do_classifier_free_guidance=False)
    return pe, pooled


# ---------------------------------------------------------------- encode_prompt_cfg
def encode_prompt_cfg__empty_string_not_zeros(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                              negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts or [""] * len(prompts))
    n = num_images_per_prompt
    return tuple(t.repeat_interleave(n, dim=0) for t in (embeds, neg_embeds, pooled, neg_pooled))


def encode_prompt_cfg__zeros_for_explicit_empty(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                                negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    empty = negative_prompts is None or all(p == "" for p in negative_prompts)
    if empty and force_zeros_for_empty_prompt:
        neg_embeds, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts or [""] * len(prompts))
    n = num_images_per_prompt
    return tuple(t.repeat_interleave(n, dim=0) for t in (embeds, neg_embeds, pooled, neg_pooled))


def encode_prompt_cfg__zeros_without_flag(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                          negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    if negative_prompts is None:
        neg_embeds, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts)
    n = num_images_per_prompt
    return tuple(t.repeat_interleave(n, dim=0) for t in (embeds, neg_embeds, pooled, neg_pooled))


def encode_prompt_cfg__copies_tiled(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                    negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    if negative_prompts is None and force_zeros_for_empty_prompt:
        neg_embeds, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts or [""] * len(prompts))
    n = num_images_per_prompt
    return tuple(torch.cat([t] * n, dim=0) for t in (embeds, neg_embeds, pooled, neg_pooled))


def encode_prompt_cfg__negative_not_repeated(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                             negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    if negative_prompts is None and force_zeros_for_empty_prompt:
        neg_embeds, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts or [""] * len(prompts))
    n = num_images_per_prompt
    return embeds.repeat_interleave(n, 0), neg_embeds, pooled.repeat_interleave(n, 0), neg_pooled


def encode_prompt_cfg__pooled_negative_encoded(tokenizer, tokenizer_2, text_encoder, text_encoder_2, prompts,
                                               negative_prompts, num_images_per_prompt, force_zeros_for_empty_prompt):
    encoders = (tokenizer, tokenizer_2, text_encoder, text_encoder_2)
    embeds, pooled = encode_text(*encoders, prompts)
    neg_embeds, neg_pooled = encode_text(*encoders, negative_prompts or [""] * len(prompts))
    if negative_prompts is None and force_zeros_for_empty_prompt:
        neg_embeds = torch.zeros_like(embeds)   # the pooled half left as the encoded ""
    n = num_images_per_prompt
    return tuple(t.repeat_interleave(n, dim=0) for t in (embeds, neg_embeds, pooled, neg_pooled))


# ---------------------------------------------------------------- time_id_features
def time_id_features__sin_first(time_ids, dim):
    B, K = time_ids.shape
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / half)
    angles = time_ids.float()[..., None] * omega
    return torch.cat([angles.sin(), angles.cos()], -1).reshape(B, K * dim)


def time_id_features__freq_shift_one(time_ids, dim):
    B, K = time_ids.shape
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device)
                      / (half - 1))
    angles = time_ids.float()[..., None] * omega
    return torch.cat([angles.cos(), angles.sin()], -1).reshape(B, K * dim)


def time_id_features__frequency_major(time_ids, dim):
    B, K = time_ids.shape
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / half)
    angles = time_ids.float()[..., None] * omega
    feats = torch.cat([angles.cos(), angles.sin()], -1)        # (B, K, d)
    return feats.transpose(1, 2).reshape(B, K * dim)           # (B, d, K) flattened


def time_id_features__exponent_over_dim(time_ids, dim):
    B, K = time_ids.shape
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / dim)
    angles = time_ids.float()[..., None] * omega
    return torch.cat([angles.cos(), angles.sin()], -1).reshape(B, K * dim)


def time_id_features__interleaved_cos_sin(time_ids, dim):
    B, K = time_ids.shape
    half = dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / half)
    angles = time_ids.float()[..., None] * omega
    return torch.stack([angles.cos(), angles.sin()], -1).reshape(B, K * dim)   # cos0, sin0, cos1, ...


def time_id_features__calls_get_timestep_embedding(time_ids, dim):
    from diffusers.models.embeddings import get_timestep_embedding

    B, _ = time_ids.shape
    return get_timestep_embedding(time_ids.flatten(), dim, flip_sin_to_cos=True, downscale_freq_shift=0).reshape(B, -1)


# ---------------------------------------------------------------- added_embedding
def added_embedding__time_first(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    x = torch.cat([time_id_features(time_ids, addition_time_embed_dim), text_embeds], -1)
    return add_embedding.linear_2(F.silu(add_embedding.linear_1(x)))


def added_embedding__no_silu(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim)], -1)
    return add_embedding.linear_2(add_embedding.linear_1(x))


def added_embedding__sin_first_features(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    B, K = time_ids.shape
    half = addition_time_embed_dim // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=time_ids.device) / half)
    angles = time_ids.float()[..., None] * omega
    feats = torch.cat([angles.sin(), angles.cos()], -1).reshape(B, -1)
    x = torch.cat([text_embeds, feats], -1)
    return add_embedding.linear_2(F.silu(add_embedding.linear_1(x)))


def added_embedding__gelu(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim)], -1)
    return add_embedding.linear_2(F.gelu(add_embedding.linear_1(x)))


def added_embedding__only_linear_1(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim)], -1)
    return F.silu(add_embedding.linear_1(x))


def added_embedding__silu_after_linear_2(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    x = torch.cat([text_embeds, time_id_features(time_ids, addition_time_embed_dim)], -1)
    return F.silu(add_embedding.linear_2(F.silu(add_embedding.linear_1(x))))


def added_embedding__float32_out(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    # Right values, wrong contract: an fp16 module gives float32 out (everything upcast, never cast back).
    l1, l2 = add_embedding.linear_1, add_embedding.linear_2
    x = torch.cat([text_embeds.float(), time_id_features(time_ids, addition_time_embed_dim)], -1)
    h = F.silu(F.linear(x, l1.weight.float(), l1.bias.float()))
    return F.linear(h, l2.weight.float(), l2.bias.float())


def added_embedding__calls_get_aug_embed(add_embedding, text_embeds, time_ids, addition_time_embed_dim):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.get_aug_embed(None, None, None, {"text_embeds": text_embeds, "time_ids": time_ids})


# ---------------------------------------------------------------- cfg_time_ids
def _rows(original_size, crops_coords_top_left, target_size, aesthetic_score, negative_aesthetic_score):
    """(positive, negative) rows as the pipelines build them (correct): the one mistake is elsewhere."""
    if aesthetic_score is None:
        row = list(original_size) + list(crops_coords_top_left) + list(target_size)
        return row, row
    return (list(original_size) + list(crops_coords_top_left) + [aesthetic_score],
            list(original_size) + [0, 0] + [negative_aesthetic_score])


def cfg_time_ids__positive_first(original_size, crops_coords_top_left, target_size, batch_size,
                                 aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(original_size, crops_coords_top_left, target_size, aesthetic_score,
                               negative_aesthetic_score)
    return torch.tensor([positive] * batch_size + [negative] * batch_size, dtype=torch.float32)


def cfg_time_ids__interleaved(original_size, crops_coords_top_left, target_size, batch_size,
                              aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(original_size, crops_coords_top_left, target_size, aesthetic_score,
                               negative_aesthetic_score)
    return torch.tensor([negative, positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__target_kept_in_refiner(original_size, crops_coords_top_left, target_size, batch_size,
                                         aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(original_size, crops_coords_top_left, target_size, aesthetic_score,
                               negative_aesthetic_score)
    if aesthetic_score is not None:   # the target size stays, the score is appended: 7 numbers
        positive = positive[:4] + list(target_size) + positive[4:]
        negative = negative[:4] + list(target_size) + negative[4:]
    return torch.tensor([negative] * batch_size + [positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__same_score_both_halves(original_size, crops_coords_top_left, target_size, batch_size,
                                         aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(original_size, crops_coords_top_left, target_size, aesthetic_score,
                               aesthetic_score)
    return torch.tensor([negative] * batch_size + [positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__positive_crop_in_negative(original_size, crops_coords_top_left, target_size, batch_size,
                                            aesthetic_score=None, negative_aesthetic_score=2.5):
    head = list(original_size) + list(crops_coords_top_left)
    if aesthetic_score is None:
        positive = negative = head + list(target_size)
    else:
        positive, negative = head + [aesthetic_score], head + [negative_aesthetic_score]
    return torch.tensor([negative] * batch_size + [positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__score_replaces_original_size(original_size, crops_coords_top_left, target_size, batch_size,
                                               aesthetic_score=None, negative_aesthetic_score=2.5):
    if aesthetic_score is None:
        positive = negative = list(original_size) + list(crops_coords_top_left) + list(target_size)
    else:
        positive = [aesthetic_score] + list(crops_coords_top_left) + list(target_size)
        negative = [negative_aesthetic_score] + [0, 0] + list(target_size)
    return torch.tensor([negative] * batch_size + [positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__width_height(original_size, crops_coords_top_left, target_size, batch_size,
                               aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(tuple(original_size)[::-1], tuple(crops_coords_top_left)[::-1],
                               tuple(target_size)[::-1], aesthetic_score, negative_aesthetic_score)
    return torch.tensor([negative] * batch_size + [positive] * batch_size, dtype=torch.float32)


def cfg_time_ids__integer_dtype(original_size, crops_coords_top_left, target_size, batch_size,
                                aesthetic_score=None, negative_aesthetic_score=2.5):
    positive, negative = _rows(original_size, crops_coords_top_left, target_size, aesthetic_score,
                               negative_aesthetic_score)
    return torch.tensor([negative] * batch_size + [positive] * batch_size).round().long()


# ---------------------------------------------------------------- handoff
def handoff__fraction_of_steps(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    k = int(round(denoising_end * len(timesteps)))
    return timesteps[:k], timesteps[k:]


def handoff__no_rounding(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(num_train_timesteps - denoising_end * num_train_timesteps)
    n_base = int((timesteps >= cutoff).sum())
    n_refiner = int((timesteps < cutoff).sum())
    if order == 2 and n_refiner % 2 == 0:
        n_refiner += 1
    return timesteps[:n_base], timesteps[len(timesteps) - n_refiner:]


def handoff__no_second_order_fix(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    n_base = int((timesteps >= cutoff).sum())
    return timesteps[:n_base], timesteps[n_base:]


def handoff__strict_base(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    n_base = int((timesteps > cutoff).sum())
    n_refiner = int((timesteps <= cutoff).sum())
    if order == 2 and n_refiner % 2 == 0:
        n_refiner += 1
    return timesteps[:n_base], timesteps[len(timesteps) - n_refiner:]


def handoff__cut_at_fraction_of_T(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(round(denoising_end * num_train_timesteps))          # 800 instead of 200
    n_base = int((timesteps >= cutoff).sum())
    n_refiner = int((timesteps < cutoff).sum())
    if order == 2 and n_refiner % 2 == 0:
        n_refiner += 1
    return timesteps[:n_base], timesteps[len(timesteps) - n_refiner:]


def handoff__refiner_like_strength(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    n_base = int((timesteps >= cutoff).sum())
    steps = len(timesteps) if order == 1 else (len(timesteps) + 1) // 2
    n_refiner = int(steps * (1 - denoising_end)) * order   # img2img's strength rule with strength = 1 - f
    return timesteps[:n_base], timesteps[len(timesteps) - n_refiner:]


def handoff__returns_lists(timesteps, denoising_end, num_train_timesteps=1000, order=1):
    cutoff = int(round(num_train_timesteps - denoising_end * num_train_timesteps))
    base = [t for t in timesteps.tolist() if t >= cutoff]
    refiner = [t for t in timesteps.tolist() if t < cutoff]
    if order == 2 and len(refiner) % 2 == 0:
        refiner = [base[-1]] + refiner
    return base, refiner
