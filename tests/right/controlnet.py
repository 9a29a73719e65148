"""Correct alternatives for lesson 1. Each function's name: <exercise>__<how>.

They run inside the solution namespace (tests.notebook_code.namespace_with_wrong), so the
helpers of the answer cells (time_embedding, unet_encoder, conditioning_embedding,
control_residuals) resolve to the solution's.
"""

import math  # noqa: F401

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- zero convolution
def zero_conv__padding_same(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=1, padding="same")  # identical to padding=0 for 1x1
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


def zero_conv__tuple_kernel_and_dilation(channels):
    conv = torch.nn.Conv2d(channels, channels, kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), dilation=2)
    torch.nn.init.constant_(conv.weight, 0.0)
    torch.nn.init.constant_(conv.bias, 0.0)
    return conv


def zero_conv__parameters_replaced(channels):
    conv = torch.nn.Conv2d(channels, channels, 1)
    conv.weight = torch.nn.Parameter(torch.zeros(channels, channels, 1, 1))
    conv.bias = torch.nn.Parameter(torch.zeros(channels))
    return conv


# ---------------------------------------------------------------- backward through a 1x1 conv
def conv1x1_backward__matmul(x, weight, bias, grad_out):
    B, C, H, W = x.shape
    O = weight.shape[0]
    Wm = weight.reshape(O, C)                                          # (O, C)
    xs = x.permute(0, 2, 3, 1).reshape(-1, C)                          # (B*H*W, C)
    gs = grad_out.permute(0, 2, 3, 1).reshape(-1, O)                   # (B*H*W, O)
    out = (xs @ Wm.T + bias).reshape(B, H, W, O).permute(0, 3, 1, 2)
    grad_weight = (gs.T @ xs).reshape(O, C, 1, 1)
    grad_bias = gs.sum(0)
    grad_input = (gs @ Wm).reshape(B, H, W, C).permute(0, 3, 1, 2)
    return out.contiguous(), grad_weight, grad_bias, grad_input.contiguous()


def conv1x1_backward__flattened_pixels(x, weight, bias, grad_out):
    B, C, H, W = x.shape
    Wm = weight.flatten(1)                                              # (O, C)
    xf, gf = x.flatten(2), grad_out.flatten(2)                          # (B, C, HW), (B, O, HW)
    out = (Wm @ xf + bias[:, None]).reshape(B, -1, H, W)
    grad_weight = torch.bmm(gf, xf.transpose(1, 2)).sum(0)[:, :, None, None]
    grad_bias = gf.sum(dim=(0, 2))
    grad_input = (Wm.T @ gf).reshape(B, C, H, W)
    return out, grad_weight, grad_bias, grad_input


# ---------------------------------------------------------------- a ControlNet from a UNet
def controlnet_from_unet__module_by_module(unet, conditioning_embedding_out_channels):
    from diffusers import ControlNetModel

    cfg = dict(unet.config)
    controlnet = ControlNetModel(
        in_channels=cfg["in_channels"], flip_sin_to_cos=cfg["flip_sin_to_cos"], freq_shift=cfg["freq_shift"],
        down_block_types=cfg["down_block_types"], only_cross_attention=cfg["only_cross_attention"],
        block_out_channels=cfg["block_out_channels"], layers_per_block=cfg["layers_per_block"],
        downsample_padding=cfg["downsample_padding"], mid_block_scale_factor=cfg["mid_block_scale_factor"],
        act_fn=cfg["act_fn"], norm_num_groups=cfg["norm_num_groups"], norm_eps=cfg["norm_eps"],
        cross_attention_dim=cfg["cross_attention_dim"],
        transformer_layers_per_block=cfg["transformer_layers_per_block"],
        encoder_hid_dim=cfg["encoder_hid_dim"], encoder_hid_dim_type=cfg["encoder_hid_dim_type"],
        attention_head_dim=cfg["attention_head_dim"], num_attention_heads=cfg["num_attention_heads"],
        use_linear_projection=cfg["use_linear_projection"], class_embed_type=cfg["class_embed_type"],
        addition_embed_type=cfg["addition_embed_type"], addition_time_embed_dim=cfg["addition_time_embed_dim"],
        num_class_embeds=cfg["num_class_embeds"], upcast_attention=cfg["upcast_attention"],
        resnet_time_scale_shift=cfg["resnet_time_scale_shift"],
        projection_class_embeddings_input_dim=cfg["projection_class_embeddings_input_dim"],
        mid_block_type=cfg["mid_block_type"],
        conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels))
    for name in ("conv_in", "time_proj", "time_embedding", "class_embedding", "add_time_proj", "add_embedding",
                 "down_blocks", "mid_block"):
        mine, theirs = getattr(controlnet, name, None), getattr(unet, name, None)
        if mine is not None and theirs is not None:
            mine.load_state_dict(theirs.state_dict())
    return controlnet


def controlnet_from_unet__copy_tensor_by_tensor(unet, conditioning_embedding_out_channels):
    import inspect

    from diffusers import ControlNetModel

    keys = inspect.signature(ControlNetModel.__init__).parameters
    controlnet = ControlNetModel(**{k: v for k, v in unet.config.items() if k in keys and k != "conditioning_channels"},
                                 conditioning_embedding_out_channels=conditioning_embedding_out_channels)
    theirs = unet.state_dict()
    with torch.no_grad():
        for name, tensor in controlnet.state_dict().items():
            if name in theirs:
                tensor.copy_(theirs[name])
    return controlnet


# ---------------------------------------------------------------- conditioning embedding
def conditioning_embedding__functional_conv(embedding, cond):
    def conv(layer, h):
        return F.conv2d(h, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding)

    h = conv(embedding.conv_in, cond)
    h = h * torch.sigmoid(h)                                            # SiLU written out
    for layer in embedding.blocks:
        h = conv(layer, h)
        h = h * torch.sigmoid(h)
    return conv(embedding.conv_out, h)


def conditioning_embedding__module_silu(embedding, cond):
    act = torch.nn.SiLU()
    layers = [embedding.conv_in, act]
    for layer in embedding.blocks:
        layers += [layer, act]
    return torch.nn.Sequential(*layers, embedding.conv_out)(cond)


# ---------------------------------------------------------------- control residuals
def control_residuals__functional_conv(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    down = []
    for f, conv in zip(down_features, zero_convs):
        down.append(conditioning_scale * F.conv2d(f, conv.weight, conv.bias))
    mid = conditioning_scale * F.conv2d(mid_feature, mid_zero_conv.weight, mid_zero_conv.bias)
    return tuple(down), mid


def control_residuals__einsum(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale):
    def conv(layer, f):
        return torch.einsum("oc,bchw->bohw", layer.weight[:, :, 0, 0], f) + layer.bias[None, :, None, None]

    return ([conv(c, f) * conditioning_scale for f, c in zip(down_features, zero_convs)],
            conv(mid_zero_conv, mid_feature) * conditioning_scale)


# ---------------------------------------------------------------- the ControlNet forward
def controlnet_forward__blocks_inline(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                      conditioning_scale):
    t = timestep.expand(sample.shape[0]) if timestep.ndim else timestep[None].expand(sample.shape[0])
    emb = controlnet.time_embedding(controlnet.time_proj(t).to(sample.dtype))
    c = controlnet.controlnet_cond_embedding
    hc = F.silu(c.conv_in(controlnet_cond))
    for conv in c.blocks:
        hc = F.silu(conv(hc))
    h = controlnet.conv_in(sample) + c.conv_out(hc)
    skips = (h,)
    for block in controlnet.down_blocks:
        if block.has_cross_attention if hasattr(block, "has_cross_attention") else False:
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += tuple(res)
    h = controlnet.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states)
    down = [conv(s) * conditioning_scale for s, conv in zip(skips, controlnet.controlnet_down_blocks)]
    return down, controlnet.controlnet_mid_block(h) * conditioning_scale


def controlnet_forward__hooks_on_the_blocks(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond,
                                           conditioning_scale):
    emb = time_embedding(controlnet, timestep)  # noqa: F821
    h = controlnet.conv_in(sample) + conditioning_embedding(controlnet.controlnet_cond_embedding,  # noqa: F821
                                                            controlnet_cond)
    skips, mid = unet_encoder(controlnet, h, emb, encoder_hidden_states)  # noqa: F821
    down = [F.conv2d(s, z.weight, z.bias) * conditioning_scale for s, z in zip(skips, controlnet.controlnet_down_blocks)]
    z = controlnet.controlnet_mid_block
    return down, F.conv2d(mid, z.weight, z.bias) * conditioning_scale


# ---------------------------------------------------------------- the UNet with control
def _decode(unet, h, skips, emb, text):
    for block in unet.up_blocks:
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        size = skips[-1].shape[2:] if skips else None
        if getattr(block, "has_cross_attention", False):
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, encoder_hidden_states=text, upsample_size=size)
        else:
            h = block(h, res_hidden_states_tuple=tuple(res), temb=emb, upsample_size=size)
    return unet.conv_out(F.silu(unet.conv_norm_out(h)))


def unet_with_control__residuals_scaled_first(unet, sample, timestep, encoder_hidden_states, down_residuals,
                                              mid_residual, conditioning_scale):
    down = [r * conditioning_scale for r in down_residuals]
    mid = mid_residual * conditioning_scale
    emb = time_embedding(unet, timestep)  # noqa: F821
    skips, h = unet_encoder(unet, unet.conv_in(sample), emb, encoder_hidden_states)  # noqa: F821
    skips = [s + r for s, r in zip(skips, down)]
    return _decode(unet, h + mid, skips, emb, encoder_hidden_states)


def unet_with_control__skips_collected_by_hand(unet, sample, timestep, encoder_hidden_states, down_residuals,
                                               mid_residual, conditioning_scale):
    emb = unet.time_embedding(unet.time_proj(timestep))
    h = unet.conv_in(sample)
    skips = [h]
    for block in unet.down_blocks:
        for k, resnet in enumerate(block.resnets):
            h = resnet(h, emb)
            if getattr(block, "has_cross_attention", False):
                h = block.attentions[k](h, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
            skips.append(h)
        for down in block.downsamplers or []:
            h = down(h)
            skips.append(h)
    h = unet.mid_block(h, emb, encoder_hidden_states=encoder_hidden_states) + conditioning_scale * mid_residual
    skips = [s + conditioning_scale * r for s, r in zip(skips, down_residuals)]
    return _decode(unet, h, skips, emb, encoder_hidden_states)
