"""Correct alternatives for lesson 3. Each function's name: <exercise>__<how>.

They run inside the solution namespace, so image_projection, decoupled_cross_attention and
ip_layer_ids resolve to the solution's where an alternative reuses them.
"""

import math

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- image projection
def image_projection__layer_norm_by_hand(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    C = norm_weight.numel()
    tokens = F.linear(image_embeds, proj_weight, proj_bias).view(image_embeds.shape[0], -1, C)   # (B, T, C)
    mean = tokens.mean(-1, keepdim=True)
    var = tokens.var(-1, unbiased=False, keepdim=True)
    return (tokens - mean) / torch.sqrt(var + 1e-5) * norm_weight + norm_bias


def image_projection__einsum_and_module(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    C = norm_weight.shape[0]
    T = proj_weight.shape[0] // C
    w = proj_weight.reshape(T, C, -1)                                   # (T, C, E)
    tokens = torch.einsum("tce,be->btc", w, image_embeds) + proj_bias.reshape(T, C)
    norm = torch.nn.LayerNorm(C, eps=1e-5).to(image_embeds.device)
    with torch.no_grad():
        norm.weight.copy_(norm_weight)
        norm.bias.copy_(norm_bias)
    return norm(tokens)


# ---------------------------------------------------------------- decoupled cross-attention
def _sdpa_heads(q, k, v, heads):
    B, N, D = q.shape
    d = D // heads
    q, k, v = (t.unflatten(-1, (heads, d)).transpose(1, 2) for t in (q, k, v))   # (B, h, tokens, d)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)    # (B, N, D)


def decoupled_cross_attention__sdpa(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale,
                                    num_tokens):
    L = encoder_hidden_states.shape[1] - num_tokens
    text, image = encoder_hidden_states.split([L, num_tokens], dim=1)
    q = attn.to_q(hidden_states)
    out = _sdpa_heads(q, attn.to_k(text), attn.to_v(text), attn.heads)
    out = out + scale * _sdpa_heads(q, F.linear(image, to_k_ip), F.linear(image, to_v_ip), attn.heads)
    return attn.to_out[1](attn.to_out[0](out))                          # to_out[1] is dropout (identity in eval)


def decoupled_cross_attention__einsum_head_size_from_weights(attn, hidden_states, encoder_hidden_states, to_k_ip,
                                                             to_v_ip, scale, num_tokens):
    h = attn.heads
    d = to_k_ip.shape[0] // h                                           # inner width / heads
    text = encoder_hidden_states[:, :encoder_hidden_states.shape[1] - num_tokens]
    image = encoder_hidden_states[:, encoder_hidden_states.shape[1] - num_tokens:]

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], h, d)                  # (B, tokens, h, d)

    def attend(q, k, v):
        w = torch.einsum("bnhd,bmhd->bhnm", q, k) * d ** -0.5
        return torch.einsum("bhnm,bmhd->bnhd", w.softmax(-1), v)

    q = split(attn.to_q(hidden_states))
    both = attend(q, split(attn.to_k(text)), split(attn.to_v(text))) \
        + scale * attend(q, split(torch.einsum("btc,dc->btd", image, to_k_ip)),
                         split(torch.einsum("btc,dc->btd", image, to_v_ip)))
    return attn.to_out[0](both.flatten(2))


def decoupled_cross_attention__diffusers_helpers(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip,
                                                 scale, num_tokens):
    text, image = encoder_hidden_states[:, :-num_tokens], encoder_hidden_states[:, -num_tokens:]
    q = attn.head_to_batch_dim(attn.to_q(hidden_states))                # (B*h, N, d)

    def branch(k, v):
        probs = attn.get_attention_scores(q, attn.head_to_batch_dim(k))  # softmax(q k^T * attn.scale)
        return attn.batch_to_head_dim(torch.bmm(probs, attn.head_to_batch_dim(v)))

    out = branch(attn.to_k(text), attn.to_v(text)) + scale * branch(image @ to_k_ip.T, image @ to_v_ip.T)
    return attn.to_out[0](out)


# ---------------------------------------------------------------- which processor loads which ip_adapter.N
def ip_layer_ids__cumulative_count(unet):
    names = list(unet.attn_processors)
    cross = torch.tensor([n.endswith("attn2.processor") for n in names])
    ids = 2 * torch.cumsum(cross.long(), 0) - 1
    return torch.where(cross, ids, torch.full_like(ids, -1))


def ip_layer_ids__not_self_attention(unet):
    out, k = [], 0
    for name in unet.attn_processors.keys():
        if "attn1" in name.split("."):
            out.append(-1)
        else:
            out.append(2 * k + 1)
            k += 1
    return torch.tensor(out, dtype=torch.int64)


# ---------------------------------------------------------------- the UNet with an image prompt
class _TupleProcessor:
    """Receives the UNet's (text, [image tokens]) tuple, as diffusers' IP processors do."""

    def __init__(self, to_k_ip, to_v_ip, scale):
        self.to_k_ip, self.to_v_ip, self.scale = to_k_ip, to_v_ip, scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        text, (image,) = encoder_hidden_states
        image = image[:, 0] if image.ndim == 4 else image
        return decoupled_cross_attention(attn, hidden_states, torch.cat([text, image], 1),  # noqa: F821
                                         self.to_k_ip, self.to_v_ip, self.scale, image.shape[1])


def ip_adapter_unet__tuple_through_the_unet_on_a_copy(unet, state_dict, sample, timestep, text_embeds, image_embeds,
                                                     scale):
    import copy

    sd = state_dict
    tokens = image_projection(image_embeds, sd["image_proj.proj.weight"], sd["image_proj.proj.bias"],  # noqa: F821
                              sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])
    model = copy.deepcopy(unet)
    for name, i in zip(list(model.attn_processors), ip_layer_ids(model).tolist()):  # noqa: F821
        if i >= 0:
            module = model.get_submodule(name[: -len(".processor")])
            module.set_processor(_TupleProcessor(sd.pop(f"ip_adapter.{i}.to_k_ip.weight"),
                                                 sd.pop(f"ip_adapter.{i}.to_v_ip.weight"), scale))
    return model(sample, timestep, encoder_hidden_states=(text_embeds, [tokens[:, None]])).sample


def ip_adapter_unet__processors_by_module(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    sd = state_dict
    C = sd["image_proj.norm.weight"].shape[0]
    tokens = F.layer_norm(F.linear(image_embeds, sd["image_proj.proj.weight"], sd["image_proj.proj.bias"])
                          .reshape(image_embeds.shape[0], -1, C), (C,), sd["image_proj.norm.weight"],
                          sd["image_proj.norm.bias"])
    saved, k = {}, 0
    for name, module in unet.named_modules():                           # the same order as attn_processors
        if name.endswith("attn2") and hasattr(module, "set_processor"):
            i = 2 * k + 1
            k += 1
            saved[name] = module.processor
            module.set_processor(IPAttnProcessor(sd[f"ip_adapter.{i}.to_k_ip.weight"],  # noqa: F821
                                                 sd[f"ip_adapter.{i}.to_v_ip.weight"], scale, tokens.shape[1]))
    try:
        return unet(sample, timestep, encoder_hidden_states=torch.cat([text_embeds, tokens], 1)).sample
    finally:
        for name, proc in saved.items():
            unet.get_submodule(name).set_processor(proc)
