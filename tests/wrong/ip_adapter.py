"""Wrong implementations for lesson 3. Each function's name: <exercise>__<mistake>.

They run inside the source notebook's namespace (tests/notebook_code.py), so the names they
use from other exercises (image_projection, decoupled_cross_attention, ip_layer_ids,
IPAttnProcessor, multihead_attention) are the correct answers.
"""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"ip_layer_ids_answer": "ip_layer_ids__down_mid_up_order"},
    ["ip_adapter_unet_answer"],
)


# ---------------------------------------------------------------- image projection
def _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, *, order="TC", norm="token",
             affine=True, bias=True, num_tokens=None):
    B, C = image_embeds.shape[0], norm_weight.shape[0]
    T = num_tokens or proj_weight.shape[0] // C
    x = image_embeds @ proj_weight.T + (proj_bias if bias else 0)
    if norm == "vector":  # over all T*C numbers, then the per-channel affine
        return F.layer_norm(x, (x.shape[-1],)).reshape(B, T, C) * norm_weight + norm_bias
    x = x.reshape(B, T, C) if order == "TC" else x.reshape(B, C, T).transpose(1, 2)
    if norm == "none":
        return x
    if norm == "tokens":
        x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
        return x * norm_weight + norm_bias
    return F.layer_norm(x, (C,), norm_weight if affine else None, norm_bias if affine else None)


def image_projection__layer_norm_before_reshape(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, norm="vector")


def image_projection__tokens_channel_major(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, order="CT")


def image_projection__norm_without_affine(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, affine=False)


def image_projection__no_layer_norm(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, norm="none")


def image_projection__no_bias(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, bias=False)


def image_projection__norm_over_tokens(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, norm="tokens")


def image_projection__four_tokens_hard_coded(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    return _project(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias, num_tokens=4)


def image_projection__fp16_returned_as_float32(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    # "compute in float32 for stability" and forget to cast back: an fp16 pipeline gets float32 tokens
    e, w, b, nw, nb = (t.float() for t in (image_embeds, proj_weight, proj_bias, norm_weight, norm_bias))
    C = nw.shape[0]
    return F.layer_norm((e @ w.T + b).reshape(e.shape[0], -1, C), (C,), nw, nb)


def image_projection__calls_image_projection(image_embeds, proj_weight, proj_bias, norm_weight, norm_bias):
    from diffusers.models.embeddings import ImageProjection

    C = norm_weight.shape[0]
    proj = ImageProjection(proj_weight.shape[1], C, proj_weight.shape[0] // C).to(image_embeds.device)
    proj.image_embeds.weight.copy_(proj_weight)
    proj.image_embeds.bias.copy_(proj_bias)
    proj.norm.weight.copy_(norm_weight)
    proj.norm.bias.copy_(norm_bias)
    return proj(image_embeds)


# ---------------------------------------------------------------- decoupled cross-attention
def _mh(q, k, v, heads):
    B, N, D = q.shape
    d = D // heads
    q, k, v = (t.reshape(B, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    w = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(B, N, D)


def _dca(attn, x, ctx, wk, wv, scale, T, *, text_scale=1.0, image_scale=None, joint=False, frozen_kv=False,
         image_first=False, separate_out=False, image_heads=None):
    image_scale = scale if image_scale is None else image_scale
    if image_first:
        image, text = ctx[:, :T], ctx[:, T:]
    else:
        text, image = ctx[:, :-T], ctx[:, -T:]
    q = attn.to_q(x)
    kt, vt = attn.to_k(text), attn.to_v(text)
    ki, vi = (attn.to_k(image), attn.to_v(image)) if frozen_kv else (image @ wk.T, image @ wv.T)
    if joint:
        return attn.to_out[0](_mh(q, torch.cat([kt, ki], 1), torch.cat([vt, image_scale * vi], 1), attn.heads))
    t_out = _mh(q, kt, vt, attn.heads)
    i_out = _mh(q, ki, vi, image_heads or attn.heads)
    if separate_out:
        return text_scale * attn.to_out[0](t_out) + image_scale * attn.to_out[0](i_out)
    return attn.to_out[0](text_scale * t_out + image_scale * i_out)


def decoupled_cross_attention__scale_ignored(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale,
                                             num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, image_scale=1.0)


def decoupled_cross_attention__scale_on_text_branch(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip,
                                                    scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens,
                text_scale=scale, image_scale=1.0)


def decoupled_cross_attention__concatenated_single_softmax(attn, hidden_states, encoder_hidden_states, to_k_ip,
                                                           to_v_ip, scale, num_tokens):
    # What IP-Adapter replaces: image tokens appended to the text and read by the frozen to_k / to_v.
    return attn.to_out[0](_mh(attn.to_q(hidden_states), attn.to_k(encoder_hidden_states),
                              attn.to_v(encoder_hidden_states), attn.heads))


def decoupled_cross_attention__joint_softmax_with_ip_projections(attn, hidden_states, encoder_hidden_states,
                                                                 to_k_ip, to_v_ip, scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, joint=True)


def decoupled_cross_attention__frozen_kv_for_image(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip,
                                                   scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, frozen_kv=True)


def decoupled_cross_attention__k_v_ip_swapped(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale,
                                              num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_v_ip, to_k_ip, scale, num_tokens)


def decoupled_cross_attention__image_tokens_first(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip,
                                                  scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, image_first=True)


def decoupled_cross_attention__branches_projected_separately(attn, hidden_states, encoder_hidden_states, to_k_ip,
                                                             to_v_ip, scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, separate_out=True)


def decoupled_cross_attention__four_image_tokens_hard_coded(attn, hidden_states, encoder_hidden_states, to_k_ip,
                                                            to_v_ip, scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, 4)


def decoupled_cross_attention__image_branch_single_head(attn, hidden_states, encoder_hidden_states, to_k_ip,
                                                        to_v_ip, scale, num_tokens):
    return _dca(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip, scale, num_tokens, image_heads=1)


def decoupled_cross_attention__calls_attention_module(attn, hidden_states, encoder_hidden_states, to_k_ip, to_v_ip,
                                                      scale, num_tokens):
    text, image = encoder_hidden_states[:, :-num_tokens], encoder_hidden_states[:, -num_tokens:]
    image_out = _mh(attn.to_q(hidden_states), image @ to_k_ip.T, image @ to_v_ip.T, attn.heads)
    return attn(hidden_states, encoder_hidden_states=text) + scale * (image_out @ attn.to_out[0].weight.T)


# ---------------------------------------------------------------- ip_layer_ids
def _ids(names, order=None, *, start=1, step=2, self_attention=False):
    cross = [i for i, n in enumerate(names) if n.endswith("attn2.processor")]
    ids = [-1] * len(names)
    for rank, pos in enumerate(order if order is not None else cross):
        ids[pos] = start + step * rank
    if self_attention:
        ids = list(range(len(names)))
    return torch.tensor(ids, dtype=torch.long)


def ip_layer_ids__ids_from_zero(unet):
    return _ids(list(unet.attn_processors), start=0)


def ip_layer_ids__consecutive_ids(unet):
    return _ids(list(unet.attn_processors), step=1)


def ip_layer_ids__down_mid_up_order(unet):
    # Follows the data through the U: down blocks, the middle, then up. diffusers does not.
    names = list(unet.attn_processors)
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    cross = [i for i, n in enumerate(names) if n.endswith("attn2.processor")]
    return _ids(names, sorted(cross, key=lambda i: (rank[names[i].split(".")[0]], i)))


def ip_layer_ids__sorted_names(unet):
    names = list(unet.attn_processors)
    cross = [i for i, n in enumerate(names) if n.endswith("attn2.processor")]
    return _ids(names, sorted(cross, key=lambda i: names[i]))


def ip_layer_ids__self_attention_numbered_too(unet):
    return _ids(list(unet.attn_processors), self_attention=True)


def ip_layer_ids__one_id_per_attention_module(unet):
    # Counts Transformer2DModel modules, as if each held exactly one transformer block.
    names = list(unet.attn_processors)
    modules, ids = [], []
    for n in names:
        if not n.endswith("attn2.processor"):
            ids.append(-1)
            continue
        owner = n.split(".transformer_blocks.")[0]
        if owner not in modules:
            modules.append(owner)
        ids.append(2 * modules.index(owner) + 1)
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------- the UNet with an image prompt
def _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, *, proc_scale=None,
          token_scale=1.0, prepend=False, only=None, layer_norm=True, num_tokens=None):
    sd = state_dict
    if layer_norm:
        tokens = image_projection(image_embeds, sd["image_proj.proj.weight"], sd["image_proj.proj.bias"],  # noqa: F821
                                  sd["image_proj.norm.weight"], sd["image_proj.norm.bias"])
    else:
        C = sd["image_proj.norm.weight"].shape[0]
        tokens = (image_embeds @ sd["image_proj.proj.weight"].T + sd["image_proj.proj.bias"]).reshape(
            image_embeds.shape[0], -1, C)
    tokens = tokens * token_scale
    T = num_tokens or tokens.shape[1]
    procs = {}
    for (name, proc), i in zip(unet.attn_processors.items(), ip_layer_ids(unet).tolist()):  # noqa: F821
        if i < 0 or (only is not None and not name.startswith(only)):
            procs[name] = proc
        else:
            procs[name] = IPAttnProcessor(sd[f"ip_adapter.{i}.to_k_ip.weight"],  # noqa: F821
                                          sd[f"ip_adapter.{i}.to_v_ip.weight"],
                                          scale if proc_scale is None else proc_scale, T)
    unet.set_attn_processor(procs)
    context = torch.cat([tokens, text_embeds] if prepend else [text_embeds, tokens], dim=1)
    return unet(sample, timestep, encoder_hidden_states=context).sample


def ip_adapter_unet__scale_ignored(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, proc_scale=1.0)


def ip_adapter_unet__image_tokens_prepended(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, prepend=True)


def ip_adapter_unet__scale_on_the_image_tokens(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, proc_scale=1.0,
                 token_scale=scale)


def ip_adapter_unet__down_blocks_only(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, only="down_blocks")


def ip_adapter_unet__no_layer_norm(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale, layer_norm=False)


def ip_adapter_unet__text_length_as_num_tokens(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    return _unet(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale,
                 num_tokens=text_embeds.shape[1])


def ip_adapter_unet__uses_diffusers_loader(unet, state_dict, sample, timestep, text_embeds, image_embeds, scale):
    nested = {"image_proj": {k[len("image_proj."):]: v for k, v in state_dict.items() if k.startswith("image_proj.")},
              "ip_adapter": {k[len("ip_adapter."):]: v for k, v in state_dict.items() if k.startswith("ip_adapter.")}}
    unet._load_ip_adapter_weights([nested])
    for proc in unet.attn_processors.values():
        if hasattr(proc, "scale"):
            proc.scale = [scale]
    return unet(sample, timestep, encoder_hidden_states=text_embeds,
                added_cond_kwargs={"image_embeds": [image_embeds[:, None]]}).sample
