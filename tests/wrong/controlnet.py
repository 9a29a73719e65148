"""Wrong implementations for lesson 1. Each function's name: <exercise>__<mistake>."""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"zero_conv_answer": "zero_conv__bias_left_at_default",
     "control_residuals_answer": "control_residuals__scale_only_on_mid"},
    ["unet_with_control_answer"],
)


# ---------------------------------------------------------------- zero convolution
def zero_conv__bias_left_at_default(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=1)
    torch.nn.init.zeros_(conv.weight)  # the bias keeps PyTorch's uniform init
    return conv


def zero_conv__default_init(channels):
    return torch.nn.Conv2d(channels, channels, kernel_size=1)


def zero_conv__no_bias(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=1, bias=False)
    torch.nn.init.zeros_(conv.weight)
    return conv


def zero_conv__three_by_three(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=3, padding=1)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    return conv


def zero_conv__frozen(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=1)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    conv.requires_grad_(False)  # "zero and fixed" is a switch that can never open
    return conv


def zero_conv__single_output_channel(channels):
    conv = torch.nn.Conv2d(channels, 1, kernel_size=1)
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    return conv


# ---------------------------------------------------------------- backward through a 1x1 conv
def _conv1x1(x, weight, bias, grad_out, *, transpose_in=False, transpose_w=False, mean_w=False,
             identity_in=False, bias_grad_batch_only=False, no_bias=False):
    W = weight[:, :, 0, 0]
    out = torch.einsum("oc,bchw->bohw", W, x) + (0 if no_bias else bias[None, :, None, None])
    gw = torch.einsum("bohw,bchw->co" if transpose_w else "bohw,bchw->oc", grad_out, x)
    if mean_w:
        gw = gw / x.shape[0]
    gb = grad_out.sum(dim=0).sum(dim=(1, 2)) if not bias_grad_batch_only else grad_out.sum(dim=(2, 3))[0]
    if identity_in:
        gi = grad_out.clone()
    else:
        gi = torch.einsum("co,bohw->bchw" if transpose_in else "oc,bohw->bchw", W, grad_out)
    return out, gw[:, :, None, None], gb, gi


def conv1x1_backward__input_grad_not_transposed(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, transpose_in=True)


def conv1x1_backward__weight_grad_transposed(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, transpose_w=True)


def conv1x1_backward__weight_grad_batch_mean(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, mean_w=True)


def conv1x1_backward__input_grad_passed_through(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, identity_in=True)


def conv1x1_backward__bias_grad_first_sample_only(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, bias_grad_batch_only=True)


def conv1x1_backward__output_without_bias(x, weight, bias, grad_out):
    return _conv1x1(x, weight, bias, grad_out, no_bias=True)


def conv1x1_backward__float32_buffers(x, weight, bias, grad_out):
    # gradients written into fresh torch.zeros buffers: float32 whatever the inputs' dtype
    out, gw, gb, gi = _conv1x1(x, weight, bias, grad_out)
    grad_weight, grad_bias = torch.zeros(gw.shape), torch.zeros(gb.shape)
    grad_weight[:] = gw
    grad_bias[:] = gb
    return out, grad_weight, grad_bias, gi


def conv1x1_backward__uses_autograd(x, weight, bias, grad_out):
    x = x.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    b = bias.clone().requires_grad_(True)
    with torch.enable_grad():
        out = torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]
        gw, gb, gi = torch.autograd.grad(out, (w, b, x), grad_out)
    return out.detach(), gw, gb, gi


# ---------------------------------------------------------------- a ControlNet from a UNet
def _fresh_controlnet(unet, channels):
    import inspect
    from diffusers import ControlNetModel

    accepted = inspect.signature(ControlNetModel.__init__).parameters
    arch = {k: v for k, v in unet.config.items() if k in accepted}
    return ControlNetModel(**arch, conditioning_embedding_out_channels=tuple(channels))


def controlnet_from_unet__shares_the_unets_modules(unet, conditioning_embedding_out_channels):
    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    controlnet.conv_in = unet.conv_in
    controlnet.time_embedding = unet.time_embedding
    if unet.class_embedding is not None:
        controlnet.class_embedding = unet.class_embedding
    if getattr(unet, "add_embedding", None) is not None:
        controlnet.add_embedding = unet.add_embedding
    controlnet.down_blocks = unet.down_blocks
    controlnet.mid_block = unet.mid_block
    return controlnet


def controlnet_from_unet__mid_block_not_copied(unet, conditioning_embedding_out_channels):
    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("mid_block.")}
    controlnet.load_state_dict(state, strict=False)
    return controlnet


def controlnet_from_unet__time_embedding_not_copied(unet, conditioning_embedding_out_channels):
    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    for name in ("conv_in", "down_blocks", "mid_block"):
        getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
    return controlnet


def controlnet_from_unet__only_encoder_blocks_copied(unet, conditioning_embedding_out_channels):
    # conv_in, time embedding, down and mid blocks: the class / added embeddings are forgotten
    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
        getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
    return controlnet


def controlnet_from_unet__decoder_copied_too(unet, conditioning_embedding_out_channels):
    import copy

    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    controlnet.load_state_dict(unet.state_dict(), strict=False)
    controlnet.up_blocks = copy.deepcopy(unet.up_blocks)
    controlnet.conv_norm_out = copy.deepcopy(unet.conv_norm_out)
    controlnet.conv_out = copy.deepcopy(unet.conv_out)
    return controlnet


def controlnet_from_unet__default_embedding_channels(unet, conditioning_embedding_out_channels):
    controlnet = _fresh_controlnet(unet, (16, 32, 96, 256))
    controlnet.load_state_dict(unet.state_dict(), strict=False)
    return controlnet


def controlnet_from_unet__whole_conditioning_embedding_zeroed(unet, conditioning_embedding_out_channels):
    controlnet = _fresh_controlnet(unet, conditioning_embedding_out_channels)
    controlnet.load_state_dict(unet.state_dict(), strict=False)
    for p in controlnet.controlnet_cond_embedding.parameters():
        torch.nn.init.zeros_(p)
    return controlnet


def controlnet_from_unet__block_layout_only(unet, conditioning_embedding_out_channels):
    from diffusers import ControlNetModel

    cfg = unet.config
    controlnet = ControlNetModel(
        in_channels=cfg.in_channels, down_block_types=cfg.down_block_types,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.cross_attention_dim, norm_num_groups=cfg.norm_num_groups,
        conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels))
    controlnet.load_state_dict(unet.state_dict(), strict=False)
    return controlnet


def controlnet_from_unet__calls_from_unet(unet, conditioning_embedding_out_channels):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_embedding_out_channels)


# ---------------------------------------------------------------- conditioning embedding
def _embed(embedding, cond, *, act=F.silu, last_act=True, out_act=False, first_act=True, strided_only=False):
    h = embedding.conv_in(cond)
    if first_act:
        h = act(h)
    blocks = list(embedding.blocks)
    for j, conv in enumerate(blocks):
        if strided_only and conv.stride[0] == 1:
            continue
        h = conv(h)
        if last_act or j < len(blocks) - 1:
            h = act(h)
    h = embedding.conv_out(h)
    return act(h) if out_act else h


def conditioning_embedding__relu_as_in_the_paper(embedding, cond):
    return _embed(embedding, cond, act=F.relu)


def conditioning_embedding__no_activation_after_last_block(embedding, cond):
    return _embed(embedding, cond, last_act=False)


def conditioning_embedding__activation_after_conv_out(embedding, cond):
    return _embed(embedding, cond, out_act=True)


def conditioning_embedding__no_activation_after_conv_in(embedding, cond):
    return _embed(embedding, cond, first_act=False)


def conditioning_embedding__strided_convs_only(embedding, cond):
    return _embed(embedding, cond, strided_only=True)


def conditioning_embedding__image_in_0_255(embedding, cond):
    return _embed(embedding, cond * 255.0)


# ---------------------------------------------------------------- control residuals
def control_residuals__scale_only_on_mid(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    return [c(f) for f, c in zip(down_features, zero_convs)], mid_zero_conv(mid_feature) * conditioning_scale


def control_residuals__scale_only_on_down(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    return [c(f) * conditioning_scale for f, c in zip(down_features, zero_convs)], mid_zero_conv(mid_feature)


def control_residuals__unscaled(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    return [c(f) for f, c in zip(down_features, zero_convs)], mid_zero_conv(mid_feature)


def control_residuals__last_down_conv_for_mid(down_features, mid_feature, zero_convs, mid_zero_conv,
                                              conditioning_scale):
    down = [c(f) * conditioning_scale for f, c in zip(down_features, zero_convs)]
    return down, zero_convs[-1](mid_feature) * conditioning_scale


def control_residuals__first_skip_dropped(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    down = [c(f) * conditioning_scale for f, c in zip(down_features[1:], zero_convs[1:])]
    return down, mid_zero_conv(mid_feature) * conditioning_scale


def control_residuals__scale_before_the_bias(down_features, mid_feature, zero_convs, mid_zero_conv,
                                             conditioning_scale):
    def conv(c, f):
        return F.conv2d(f * conditioning_scale, c.weight, c.bias)
    return [conv(c, f) for f, c in zip(down_features, zero_convs)], conv(mid_zero_conv, mid_feature)


# ---------------------------------------------------------------- the ControlNet forward (uses the correct helpers)
def _cn_forward(controlnet, sample, timestep, text, cond, scale, *, use_cond=True, use_latent=True,
                drop_first=False, mid_from_last_skip=False, unscaled=False):
    emb = time_embedding(controlnet, timestep)  # noqa: F821
    c = conditioning_embedding(controlnet.controlnet_cond_embedding, cond)  # noqa: F821
    h = controlnet.conv_in(sample) if use_latent else 0
    h = h + c if use_cond else h
    skips, mid = unet_encoder(controlnet, h, emb, text)  # noqa: F821
    if drop_first:
        skips = skips[1:]
    if mid_from_last_skip:
        mid = skips[-1]
    return control_residuals(skips, mid, controlnet.controlnet_down_blocks,  # noqa: F821
                             controlnet.controlnet_mid_block, 1.0 if unscaled else scale)


def controlnet_forward__control_image_ignored(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                              conditioning_scale):
    return _cn_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                       use_cond=False)


def controlnet_forward__latent_ignored(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                       conditioning_scale):
    return _cn_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                       use_latent=False)


def controlnet_forward__conv_in_skip_missing(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                             conditioning_scale):
    return _cn_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                       drop_first=True)


def controlnet_forward__mid_residual_from_last_skip(controlnet, sample, timestep, encoder_hidden_states,
                                                    controlnet_cond, conditioning_scale):
    return _cn_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                       mid_from_last_skip=True)


def controlnet_forward__unscaled(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                 conditioning_scale):
    return _cn_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale,
                       unscaled=True)


def controlnet_forward__control_image_added_after_first_block(controlnet, sample, timestep, encoder_hidden_states,
                                                              controlnet_cond, conditioning_scale):
    emb = time_embedding(controlnet, timestep)  # noqa: F821
    h = controlnet.conv_in(sample)
    skips = [h]
    c = conditioning_embedding(controlnet.controlnet_cond_embedding, controlnet_cond)  # noqa: F821
    for i, block in enumerate(controlnet.down_blocks):
        if getattr(block, "has_cross_attention", False):
            h, res = block(h + (c if i == 0 else 0), temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            h, res = block(h + (c if i == 0 else 0), temb=emb)
        skips.extend(res)
    mid = controlnet.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states)
    return control_residuals(skips, mid, controlnet.controlnet_down_blocks,  # noqa: F821
                             controlnet.controlnet_mid_block, conditioning_scale)


def controlnet_forward__calls_the_model(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                        conditioning_scale):
    out = controlnet(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=conditioning_scale)
    return list(out.down_block_res_samples), out.mid_block_res_sample


# ---------------------------------------------------------------- the UNet with control (uses the correct helpers)
def _unet_ctrl(unet, sample, timestep, text, down, mid, scale, *, in_path=False,
               scale_sum=False, mid_scale_only=False, skip_mid=False, unscaled=False):
    emb = time_embedding(unet, timestep)  # noqa: F821
    down_scale = 1.0 if (mid_scale_only or unscaled) else scale
    mid_scale = 1.0 if unscaled else scale
    h = unet.conv_in(sample)
    if in_path:
        queue = list(down)
        h = h + scale * queue.pop(0)
        skips = [h]
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(h, temb=emb, encoder_hidden_states=text)
            else:
                h, res = block(h, temb=emb)
            res = [r + scale * queue.pop(0) for r in res]
            h = res[-1]
            skips.extend(res)
        h = unet.mid_block(h, emb, encoder_hidden_states=text)
    else:
        skips, h = unet_encoder(unet, h, emb, text)  # noqa: F821
        if scale_sum:
            skips = [scale * (s + r) for s, r in zip(skips, down)]
        else:
            skips = [s + down_scale * r for s, r in zip(skips, down)]
    if not skip_mid:
        h = h + mid_scale * mid
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        size = skips[-1].shape[2:] if skips else None
        if getattr(block, "has_cross_attention", False):
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, encoder_hidden_states=text, upsample_size=size)
        else:
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, upsample_size=size)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def unet_with_control__residuals_added_before_the_skip(unet, sample, timestep, encoder_hidden_states,
                                                       down_residuals, mid_residual, conditioning_scale):
    return _unet_ctrl(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale, in_path=True)


def unet_with_control__mid_residual_before_mid_block(unet, sample, timestep, encoder_hidden_states,
                                                     down_residuals, mid_residual, conditioning_scale):
    emb = time_embedding(unet, timestep)  # noqa: F821
    skips = [unet.conv_in(sample)]
    h = skips[0]
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(h, temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            h, res = block(h, temb=emb)
        skips.extend(res)
    skips = [s + conditioning_scale * r for s, r in zip(skips, down_residuals)]
    h = unet.mid_block(h + conditioning_scale * mid_residual, emb, encoder_hidden_states=encoder_hidden_states)
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        size = skips[-1].shape[2:] if skips else None
        if getattr(block, "has_cross_attention", False):
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, encoder_hidden_states=encoder_hidden_states,
                      upsample_size=size)
        else:
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, upsample_size=size)
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def unet_with_control__scale_applied_to_skip_plus_residual(unet, sample, timestep, encoder_hidden_states,
                                                           down_residuals, mid_residual, conditioning_scale):
    return _unet_ctrl(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale, scale_sum=True)


def unet_with_control__scale_only_on_mid(unet, sample, timestep, encoder_hidden_states, down_residuals,
                                         mid_residual, conditioning_scale):
    return _unet_ctrl(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale, mid_scale_only=True)


def unet_with_control__mid_residual_forgotten(unet, sample, timestep, encoder_hidden_states, down_residuals,
                                              mid_residual, conditioning_scale):
    return _unet_ctrl(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale, skip_mid=True)


def unet_with_control__unscaled(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                                conditioning_scale):
    return _unet_ctrl(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale, unscaled=True)


def unet_with_control__calls_the_unet(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                                      conditioning_scale):
    return unet(sample, timestep, encoder_hidden_states,
                down_block_additional_residuals=[r * conditioning_scale for r in down_residuals],
                mid_block_additional_residual=mid_residual * conditioning_scale).sample
