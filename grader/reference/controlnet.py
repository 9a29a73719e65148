"""Lesson 1 references: what diffusers' ControlNet modules compute.

Letters: B batch, C channels, H W latent height/width, L text tokens, E text width
(cross_attention_dim), S = the number of skip tensors the UNet's encoder hands to its decoder.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def zero_conv(channels: int) -> nn.Conv2d:
    """One of ``ControlNetModel``'s ``controlnet_down_blocks``: ``zero_module(nn.Conv2d(C, C, 1))``."""
    from diffusers.models.controlnets.controlnet import zero_module

    return zero_module(nn.Conv2d(channels, channels, kernel_size=1))


def zero_conv_gradients(x: torch.Tensor, grad_out: torch.Tensor):
    """Autograd through a freshly initialised zero convolution.

    x (B, C, H, W), grad_out (B, C, H, W) = dLoss/d(output). Returns (output, dLoss/dweight
    (C, C, 1, 1), dLoss/dbias (C,), dLoss/dx (B, C, H, W)).
    """
    conv = zero_conv(x.shape[1]).to(x.device)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = conv(x)
        out.backward(grad_out)
    return out.detach(), conv.weight.grad.detach(), conv.bias.grad.detach(), x.grad.detach()


def controlnet_from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)):
    """``ControlNetModel.from_unet``: the encoder copied from ``unet``, new layers freshly initialised."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(conditioning_embedding_out_channels))


#: The groups of weights from_unet copies from the UNet (checked in tests/test_reference_controlnet.py).
COPIED_PREFIXES = ("conv_in.", "time_embedding.", "class_embedding.", "add_embedding.", "down_blocks.", "mid_block.")
#: The groups a ControlNet adds, all under ``controlnet_``.
NEW_PREFIXES = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")


def conditioning_embedding(embedding, cond: torch.Tensor) -> torch.Tensor:
    """``ControlNetConditioningEmbedding.forward``: cond (B, 3, 8H, 8W) in [0, 1] -> (B, C0, H, W)."""
    with torch.no_grad():
        return embedding(cond)


def control_residuals(down_features, mid_feature, zero_convs, mid_zero_conv, conditioning_scale: float):
    """Steps 5-6 of ``ControlNetModel.forward`` (guess_mode off, global_pool_conditions off).

    Copied from diffusers.models.controlnets.controlnet.ControlNetModel.forward; the test
    tests/test_reference_controlnet.py keeps it equal to the model's own outputs.
    down_features: S tensors (B, C_s, H_s, W_s); mid_feature (B, C_mid, h, w).
    Returns (S residuals, mid residual).
    """
    with torch.no_grad():
        down = [conv(f) for f, conv in zip(down_features, zero_convs)]
        mid = mid_zero_conv(mid_feature)
        return [d * conditioning_scale for d in down], mid * conditioning_scale


def controlnet_forward(controlnet, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0):
    """``ControlNetModel.forward``: (down_block_res_samples as a list, mid_block_res_sample)."""
    with torch.no_grad():
        out = controlnet(sample, timestep, encoder_hidden_states, controlnet_cond,
                         conditioning_scale=conditioning_scale)
    return list(out.down_block_res_samples), out.mid_block_res_sample


def unet_with_control(unet, sample, timestep, encoder_hidden_states, down_residuals, mid_residual,
                      conditioning_scale=1.0):
    """``UNet2DConditionModel`` with ControlNet residuals, scaled as ``ControlNetModel`` scales them."""
    with torch.no_grad():
        return unet(sample, timestep, encoder_hidden_states,
                    down_block_additional_residuals=[r * conditioning_scale for r in down_residuals],
                    mid_block_additional_residual=mid_residual * conditioning_scale).sample


def skip_channels(config) -> list[int]:
    """Channels of the S skip tensors of a UNet encoder with this config (conv_in, resnets, downsamplers)."""
    channels = list(config["block_out_channels"])
    out = [channels[0]]
    for i, c in enumerate(channels):
        out += [c] * config["layers_per_block"] + ([c] if i < len(channels) - 1 else [])
    return out


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "nn", "annotations")]
