"""Lesson 1 (ControlNet): public checks and hidden tests for every exercise.

Public checks: fixed small inputs on the CPU. Hidden tests: a seed drawn at grading time,
shapes the public checks do not use (batch > 1, non-square latents, other channel counts,
SDXL-like and class-conditional UNets), the real ControlNet 1.1 Canny layers when present,
and the GPU when there is one. Whole-model checks (ControlNet encoder, UNet decoder) run
on the tiny stand-ins by design: the real-weight checks read the layers a ControlNet adds.
"""

from __future__ import annotations

import copy
import functools
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import weights
from ..compare import ComparisonError, assert_close
from ..exercise import call
from ..reference import controlnet as ref
from ..runtime import generator, randn
from ..weights.resolve import reinitialise_
from . import build, device_for, passed, seed_for

LESSON = "01_controlnet"

_CN = "diffusers.models.controlnets.controlnet"
_UNET = "diffusers.models.unets.unet_2d_condition.UNet2DConditionModel"
_REF = "grader.reference.controlnet"  # the course's own references are off limits too
FORBID_ZERO = (f"{_CN}.zero_module", f"{_REF}.zero_conv")
FORBID_BACKWARD = ("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
                   "torch.nn.functional.conv2d", "torch.conv2d", "torch.nn.Conv2d.forward", f"{_REF}.zero_conv_gradients")
FORBID_FROM_UNET = (f"{_CN}.ControlNetModel.from_unet", f"{_REF}.controlnet_from_unet")
FORBID_EMBED = (f"{_CN}.ControlNetConditioningEmbedding.forward", f"{_REF}.conditioning_embedding")
FORBID_RESIDUALS = (f"{_REF}.control_residuals",)
FORBID_FORWARD = FORBID_EMBED + (f"{_CN}.ControlNetModel.forward", f"{_UNET}.forward", f"{_REF}.controlnet_forward")
FORBID_UNET = (f"{_UNET}.forward", f"{_CN}.ControlNetModel.forward", f"{_REF}.unet_with_control")


class _ByDesign:
    """The banner for a stand-in chosen on purpose (whole-model checks), not for want of real weights."""

    def __init__(self, source):
        self.source = source

    def banner(self) -> str:
        return (f"weights: STAND-IN tiny {self.source.checkpoint.model_class} (seeded random, not pretrained; "
                f"whole-model checks always use the stand-in)")


def standin_banner(source) -> str:
    return _ByDesign(source).banner()


# ---------------------------------------------------------------- recordable results
# Under trusted grading (grader/replay.py) only tensors leave the sandbox where the student's
# code runs. Answers that are modules or nested structures are turned into tensors *inside*
# the recorded call (the functions below run right after the student's function returns),
# and the checks read those tensors, the same way in the sandbox and in the verifier.
def _call_then(fn, name: str, post, n_student_args: int, *args, forbidden=(), case: str = ""):
    """``call``, with ``post(result, *args)`` applied inside the call; the student's function
    receives the first ``n_student_args`` arguments."""
    target = fn
    if callable(fn):
        def target(*a):
            return post(fn(*a[:n_student_args]), *a)
        target.__name__ = name
    return call(target, name, *args, forbidden=forbidden, case=case)


def _type_name(value) -> str:
    return getattr(value, "course_type_name", type(value).__name__)


def _json_tensor(data) -> torch.Tensor:
    return torch.tensor(list(json.dumps(data, default=str).encode()), dtype=torch.uint8)


def _json_of(t, name: str):
    try:
        return json.loads(bytes(t.to("cpu", torch.uint8).tolist()).decode())
    except Exception:  # noqa: BLE001: a damaged or forged record
        raise ComparisonError(f"{name}: the recorded description of your result could not be read.") from None


def _flatten_pair(value, *_):
    """(list of tensors, tensor) -> (marker, *list, tensor); anything else is recorded as it is."""
    if (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], (tuple, list))
            and all(isinstance(t, torch.Tensor) for t in value[0]) and isinstance(value[1], torch.Tensor)):
        return (torch.tensor([float(len(value[0]))]),) + tuple(value[0]) + (value[1],)
    return value


def _unflatten_pair(got, name: str, expected_len: int):
    ok = (isinstance(got, (tuple, list)) and len(got) >= 2 and isinstance(got[0], torch.Tensor)
          and tuple(got[0].shape) == (1,) and int(got[0].item()) == len(got) - 2)
    if not ok:
        raise ComparisonError(f"{name}: return a pair (list of down residuals, mid residual), "
                              f"got {_type_name(got)}.")
    down, mid = list(got[1:-1]), got[-1]
    if len(down) != expected_len:
        raise ComparisonError(
            f"{name}: {len(down)} down residuals, expected {expected_len}: one per skip tensor the UNet's "
            f"encoder hands to its decoder (conv_in's output, every resnet's output, every downsampler's output).")
    return down, mid


# ---------------------------------------------------------------- 1. zero convolution
_CONV_FIELDS = ("is a Conv2d", "in_channels", "out_channels", "kernel height", "kernel width", "stride (rows)",
                "stride (columns)", "padding (rows)", "padding (columns)", "dilation (rows)", "dilation (columns)",
                "groups", "has a bias", "weight requires grad", "bias requires grad")


def _describe_conv(module, channels, x):
    """What the returned layer is, as tensors: (fields, weight, bias, its output on x)."""
    if not isinstance(module, nn.Conv2d):
        return (torch.zeros(len(_CONV_FIELDS), dtype=torch.float64),)
    pad = module.padding if isinstance(module.padding, tuple) else (-1, -1)
    has_bias = module.bias is not None
    fields = torch.tensor([1, module.in_channels, module.out_channels, *module.kernel_size, *module.stride, *pad,
                           *module.dilation, module.groups, has_bias, module.weight.requires_grad,
                           has_bias and module.bias.requires_grad], dtype=torch.float64)
    bias = module.bias.detach().clone() if has_bias else torch.zeros(0)
    with torch.no_grad():
        out = module(x) if module.in_channels == x.shape[1] else torch.zeros(0)
    return fields, module.weight.detach().clone(), bias, out


def _check_zero_conv(fn, hidden: bool) -> str:
    seed = seed_for(hidden)
    cases = [320, 3, 17] if hidden else [8]
    for i, C in enumerate(cases):
        x = randn(2, C, 5, 7, seed=seed + i)
        got = _call_then(fn, "zero_conv", _describe_conv, 1, C, x, forbidden=FORBID_ZERO, case=f"{C} channels")
        expected = ref.zero_conv(C)
        name = f"zero_conv({C})"
        if not isinstance(got, (tuple, list)) or not got or not isinstance(got[0], torch.Tensor) \
                or got[0].numel() != len(_CONV_FIELDS) or got[0][0].item() != 1 or len(got) != 4:
            raise ComparisonError(f"{name}: expected a torch.nn.Conv2d (a trainable layer).")
        want = _describe_conv(expected, C, x)[0]
        for field, g_, w_ in zip(_CONV_FIELDS, got[0].tolist(), want.tolist()):
            if g_ != w_:
                if field == "has a bias":
                    raise ComparisonError(f"{name}: the convolution has no bias; ControlNet's zero convolutions "
                                          f"have one, initialised to zero like the weight.")
                if field.endswith("requires grad"):
                    raise ComparisonError(f"{name}: its {field.split()[0]} does not require grad: a zero "
                                          f"convolution is trained.")
                raise ComparisonError(f"{name}: {field} is {g_:g}; ControlNet's zero convolutions have {w_:g} "
                                      f"(a 1x1 convolution from C to C channels, stride 1, no padding).")
        for pname, p in (("weight", got[1]), ("bias", got[2])):
            largest = p.abs().max().item()
            if largest != 0:
                raise ComparisonError(f"{name}: its {pname} is not zero (largest |value| {largest:.3g}): "
                                      f"a zero convolution starts with weight and bias both exactly 0.")
        with torch.no_grad():
            assert_close(got[3], expected(x), name=f"{name} applied to x {(2, C, 5, 7)}")
    return passed("zero_conv", len(cases), None, hidden)


# ---------------------------------------------------------------- 2. backward through a 1x1 convolution
def _check_backward(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    # (B, C_in, H, W, C_out, zero weights?)
    cases = ([(2, 5, 4, 6, 3, False), (3, 8, 2, 5, 8, True), (1, 6, 3, 3, 6, False), (2, 320, 3, 2, 320, True)]
             if hidden else [(2, 4, 3, 3, 4, False), (1, 4, 3, 3, 4, True)])
    for i, (B, C, H, W, O, zero) in enumerate(cases):
        s = seed + 10 * i
        x = randn(B, C, H, W, seed=s, dev=dev)
        weight = torch.zeros(O, C, 1, 1, device=dev) if zero else randn(O, C, 1, 1, seed=s + 1, dev=dev, scale=0.5)
        bias = torch.zeros(O, device=dev) if zero else randn(O, seed=s + 2, dev=dev)
        grad_out = randn(B, O, H, W, seed=s + 3, dev=dev)
        expected = _autograd_conv1x1(x, weight, bias, grad_out)
        label = f"x {(B, C, H, W)}, weight {(O, C, 1, 1)}{' all zero (a zero conv)' if zero else ''}"
        got = call(fn, "conv1x1_backward", x, weight, bias, grad_out, forbidden=FORBID_BACKWARD, case=label)
        if not isinstance(got, (tuple, list)) or len(got) != 4:
            raise ComparisonError("conv1x1_backward: return a tuple of 4 tensors: "
                                  "(output, grad_weight, grad_bias, grad_input).")
        W2 = weight[:, :, 0, 0]
        variants = {
            "output": {"the bias left out": expected[0] - bias[None, :, None, None]},
            "grad_weight": {"the batch averaged instead of summed": expected[1] / B},
            "grad_bias": {},
            "grad_input": {"the weight used as is instead of transposed (W g, not W^T g)":
                           torch.einsum("co,bohw->bchw", W2, grad_out) if O == C else None,
                           "the incoming gradient passed straight through (as if the branch were an identity)":
                           grad_out if O == C else None},
        }
        for g_, e_, n_ in zip(got, expected, ("output", "grad_weight", "grad_bias", "grad_input")):
            assert_close(g_, e_, name=f"conv1x1_backward {n_} for {label}", variants=variants[n_])
    return passed("conv1x1_backward", len(cases), None, hidden)


def _autograd_conv1x1(x, weight, bias, grad_out):
    x = x.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = F.conv2d(x, w, b)
        out.backward(grad_out)
    return out.detach(), w.grad.detach(), b.grad.detach(), x.grad.detach()


# ---------------------------------------------------------------- 3. a ControlNet from a UNet
_SDXL_LIKE = dict(block_out_channels=(8, 16), layers_per_block=2, attention_head_dim=(2, 4), norm_num_groups=4,
                  use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                  transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
                  cross_attention_dim=16, sample_size=16, in_channels=4, out_channels=4,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
_CLASS_COND = dict(block_out_channels=(8, 8, 16), layers_per_block=1, attention_head_dim=2, norm_num_groups=4,
                   num_class_embeds=10, cross_attention_dim=12, sample_size=16, in_channels=6, out_channels=6,
                   down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"))


@functools.lru_cache(maxsize=4)
def _other_unet(kind: str):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**{"sdxl": _SDXL_LIKE, "class": _CLASS_COND}[kind])
    reinitialise_(unet, seed=11)
    return unet.eval()


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def _describe_controlnet(model, unet, channels, original):
    """A returned model as tensors: a JSON header (type, config, tensor names, storage shared with the
    UNet it was given, UNet tensors it changed), then every tensor of its state dict in name order."""
    from diffusers import ControlNetModel

    if not isinstance(model, ControlNetModel):
        return (_json_tensor({"type": type(model).__name__}),)
    state = model.state_dict()
    keys = sorted(state)
    given = {p.data_ptr() for p in unet.parameters()}
    before = original.state_dict()
    header = {
        "type": "ControlNetModel",
        "config": {k: _plain(v) for k, v in model.config.items() if not k.startswith("_")},
        "keys": keys,
        "shared": [n for n, p in model.named_parameters() if p.data_ptr() in given][:3],
        "unet_changed": [k for k, v in unet.state_dict().items()
                         if k not in before or v.shape != before[k].shape or not torch.equal(v.cpu(), before[k].cpu())][:3],
    }
    return (_json_tensor(header),) + tuple(state[k].detach().clone() for k in keys)


def _check_from_unet(fn, hidden: bool) -> str:
    unet_standin, source = weights.get("controlnet_sd15_unet_model", standin=True)
    cases = [(unet_standin, (4, 8, 16), "the stand-in SD1.5-like UNet")]
    if hidden:
        cases = [(unet_standin, (8, 16, 32, 32), "the stand-in SD1.5-like UNet"),
                 (_other_unet("sdxl"), (4, 8), "an SDXL-like UNet (added text/time embedding, 2 transformer layers)"),
                 (_other_unet("class"), (8, 8, 16), "a class-conditional UNet (6 latent channels)")]
    for unet, channels, what in cases:
        label = f"{what}, conditioning_embedding_out_channels={channels}"
        post = functools.partial(_describe_with_original, original=unet)
        got = _call_then(fn, "controlnet_from_unet", post, 2, unet, channels, forbidden=FORBID_FROM_UNET, case=label)
        expected = ref.controlnet_from_unet(unet, channels)
        _compare_controlnet(got, expected, unet, label)
    return passed("controlnet_from_unet", len(cases), _ByDesign(source), hidden)


def _describe_with_original(model, unet, channels, *, original):
    return _describe_controlnet(model, unet, channels, original)


def _compare_controlnet(got, expected, unet, label: str) -> None:
    name = f"controlnet_from_unet on {label}"
    if not isinstance(got, (tuple, list)) or not got or not isinstance(got[0], torch.Tensor):
        raise ComparisonError(f"{name}: expected a diffusers ControlNetModel, got {_type_name(got)}.")
    header = _json_of(got[0], name)
    if not isinstance(header, dict) or header.get("type") != "ControlNetModel":
        kind = header.get("type") if isinstance(header, dict) else "something else"
        raise ComparisonError(f"{name}: expected a diffusers ControlNetModel, got {kind}.")
    config, keys = header.get("config") or {}, header.get("keys") or []
    for key, value in expected.config.items():
        if not key.startswith("_") and config.get(key) != _plain(value):
            raise ComparisonError(f"{name}: config entry {key!r} is {config.get(key)!r}, expected {_plain(value)!r} "
                                  f"(the encoder copy must have the UNet's architecture).")
    e = expected.state_dict()
    extra, missing = sorted(set(keys) - set(e)), sorted(set(e) - set(keys))
    if extra:
        hint = " The decoder (up_blocks, conv_norm_out, conv_out) is not part of a ControlNet." \
            if any(k.startswith(("up_blocks.", "conv_out.", "conv_norm_out.")) for k in extra) else ""
        raise ComparisonError(f"{name}: {len(extra)} unexpected tensors, e.g. {extra[0]!r}.{hint}")
    if missing:
        raise ComparisonError(f"{name}: {len(missing)} tensors missing, e.g. {missing[0]!r}.")
    if len(got) != len(keys) + 1:
        raise ComparisonError(f"{name}: the recorded model is incomplete.")
    g = dict(zip(keys, got[1:]))
    for key in e:
        if tuple(g[key].shape) != tuple(e[key].shape):
            raise ComparisonError(f"{name}: {key!r} has shape {tuple(g[key].shape)}, expected {tuple(e[key].shape)}.")
    u = unet.state_dict()
    for key in e:
        if key.startswith(ref.COPIED_PREFIXES):
            if not torch.equal(g[key].cpu(), u[key].cpu()):
                group = key.split(".")[0]
                raise ComparisonError(f"{name}: {key!r} is not the UNet's: every weight of `{group}` is copied "
                                      f"from the frozen UNet (the trainable copy starts as the UNet's encoder).")
        elif key.startswith(("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")):
            if g[key].abs().max().item() != 0:
                raise ComparisonError(f"{name}: {key!r} is not zero: the zero convolutions (and the conditioning "
                                      f"embedding's last convolution) start at exactly 0.")
        elif key.startswith("controlnet_cond_embedding.") and key.endswith("weight"):
            if g[key].abs().max().item() == 0:
                raise ComparisonError(
                    f"{name}: {key!r} is all zero: only the conditioning embedding's last convolution is a zero "
                    f"convolution. With the earlier ones at zero too, their gradients would stay zero forever.")
    if header.get("shared"):
        raise ComparisonError(f"{name}: {header['shared'][0]!r} shares its storage with the UNet's weights: "
                              f"training the ControlNet would then change the frozen UNet. Copy the values, "
                              f"not the modules.")
    if header.get("unet_changed"):
        raise ComparisonError(f"{name}: the UNet you were given was modified ({header['unet_changed'][0]!r}); "
                              f"it must stay frozen.")


# ---------------------------------------------------------------- 4. conditioning embedding
def _cond_embed_variant(emb, cond, *, act=F.silu, last_act=True, out_act=False):
    with torch.no_grad():
        h = act(emb.conv_in(cond))
        for j, conv in enumerate(emb.blocks):
            h = conv(h)
            if last_act or j < len(emb.blocks) - 1:
                h = act(h)
        h = emb.conv_out(h)
        return act(h) if out_act else h


def _check_cond_embedding(fn, hidden: bool) -> str:
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    dev, seed = device_for(hidden), seed_for(hidden)
    layers, source = weights.get("controlnet_new_layers", dev)
    emb = layers["cond_embedding"]
    if hidden:
        other = ControlNetConditioningEmbedding(conditioning_embedding_channels=6, conditioning_channels=1,
                                                block_out_channels=(4, 8)).to(dev).eval()
        reinitialise_(other, seed % 1000)
        cases = [(emb, (2, 3, 40, 64)), (emb, (3, 3, 24, 16)), (other, (2, 1, 12, 20))]
    else:
        cases = [(emb, (1, 3, 32, 32))]
    for i, (module, shape) in enumerate(cases):
        cond = torch.rand(*shape, generator=generator(seed + i)).to(dev)  # control images live in [0, 1]
        expected = ref.conditioning_embedding(module, cond)
        label = f"control image {shape}"
        got = call(fn, "conditioning_embedding", module, cond, forbidden=FORBID_EMBED, case=label)
        assert_close(got, expected, name=f"conditioning_embedding on {label}", variants={
            "ReLU instead of SiLU (the paper says ReLU; diffusers' port, and the released weights, use SiLU)":
                lambda: _cond_embed_variant(module, cond, act=F.relu),
            "no activation after the last strided convolution": lambda: _cond_embed_variant(module, cond, last_act=False),
            "an activation after conv_out (it has none: its zero output must reach the UNet unchanged)":
                lambda: _cond_embed_variant(module, cond, out_act=True),
        })
    return passed("conditioning_embedding", len(cases), source, hidden)


# ---------------------------------------------------------------- 5. control residuals
def skip_shapes(config, B: int, H: int, W: int) -> list[tuple[int, ...]]:
    """Shapes of the S skip tensors for a latent (B, C, H, W): each downsampler halves the side."""
    channels = list(config["block_out_channels"])
    shapes = [(B, channels[0], H, W)]
    for i, c in enumerate(channels):
        shapes += [(B, c, H, W)] * config["layers_per_block"]
        if i < len(channels) - 1:
            H, W = (H + 1) // 2, (W + 1) // 2
            shapes.append((B, c, H, W))
    return shapes


def _check_residuals(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    layers, source = weights.get("controlnet_new_layers", dev)
    cfg = source.config
    convs, mid_conv = layers["down_blocks"], layers["mid_block"]
    cases = [(2, 16, 24, 0.8), (1, 8, 8, 1.7), (3, 16, 8, 0.35)] if hidden else [(1, 8, 8, 0.5)]
    for i, (B, H, W, scale) in enumerate(cases):
        shapes = skip_shapes(cfg, B, H, W)
        feats = [randn(*s, seed=seed + 100 * i + k, dev=dev) for k, s in enumerate(shapes)]
        mid = randn(*shapes[-1][:2], *shapes[-1][2:], seed=seed + 100 * i + 99, dev=dev)
        exp_down, exp_mid = ref.control_residuals(feats, mid, convs, mid_conv, scale)
        label = f"{len(feats)} features for a latent {(B, H, W)}, conditioning_scale {scale}"
        got = _call_then(fn, "control_residuals", _flatten_pair, 5, feats, mid, convs, mid_conv, scale,
                         forbidden=FORBID_RESIDUALS, case=label)
        down, got_mid = _unflatten_pair(got, "control_residuals", len(exp_down))
        with torch.no_grad():
            raw_down = [c(f) for f, c in zip(feats, convs)]
            for k, (g_, e_) in enumerate(zip(down, exp_down)):
                assert_close(g_, e_, name=f"control_residuals down residual {k} of {label}", variants={
                    "conditioning_scale not applied to the down residuals": raw_down[k],
                    "the zero convolution of the previous skip (pairs shifted by one)":
                        convs[k - 1](feats[k]) * scale if k > 0 and convs[k - 1].in_channels == feats[k].shape[1] else None,
                })
            assert_close(got_mid, exp_mid, name=f"control_residuals mid residual of {label}", variants={
                "conditioning_scale not applied to the mid residual": mid_conv(mid),
                "the last down zero convolution used for the mid block": convs[-1](mid) * scale,
            })
    return passed("control_residuals", len(cases), source, hidden)


# ---------------------------------------------------------------- 6. the ControlNet forward
def _controlnet_variant(controlnet, *args, no_cond: bool = False):
    model = copy.deepcopy(controlnet)
    if no_cond:
        model.controlnet_cond_embedding.forward = lambda c: torch.zeros((), device=c.device)
    return ref.controlnet_forward(model, *args)


def _inputs(model, B, H, W, seed, dev, cond_factor=None):
    cfg = model.config
    sample = randn(B, cfg.in_channels, H, W, seed=seed, dev=dev)
    t = torch.randint(0, 1000, (B,), generator=generator(seed + 1)).to(dev)
    text = randn(B, 5 + B, cfg.cross_attention_dim, seed=seed + 2, dev=dev)
    if cond_factor is None:
        return sample, t, text
    cond = torch.rand(B, 3, H * cond_factor, W * cond_factor, generator=generator(seed + 3)).to(dev)
    return sample, t, text, cond


def _check_controlnet_forward(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    model, source = weights.get("controlnet_model", dev, standin=True)
    factor = 2 ** (len(model.config.conditioning_embedding_out_channels) - 1)
    cases = [(2, 8, 12, 0.8), (3, 4, 16, 1.3)] if hidden else [(1, 8, 8, 0.5)]
    for i, (B, H, W, scale) in enumerate(cases):
        sample, t, text, cond = _inputs(model, B, H, W, seed + 10 * i, dev, factor)
        exp_down, exp_mid = ref.controlnet_forward(model, sample, t, text, cond, scale)
        label = f"latent {tuple(sample.shape)}, control image {tuple(cond.shape)}, t {t.tolist()}, scale {scale}"
        got = _call_then(fn, "controlnet_forward", _flatten_pair, 6, model, sample, t, text, cond, scale,
                         forbidden=FORBID_FORWARD, case=label)
        down, got_mid = _unflatten_pair(got, "controlnet_forward", len(exp_down))
        no_cond = functools.lru_cache(maxsize=1)(
            lambda: _controlnet_variant(model, sample, t, text, cond, scale, no_cond=True))
        for k, (g_, e_) in enumerate(zip(down, exp_down)):
            assert_close(g_, e_, name=f"controlnet_forward down residual {k} for {label}", variants={
                "the control image left out (no conditioning embedding added to conv_in's output)":
                    lambda k=k: no_cond()[0][k],
            })
        assert_close(got_mid, exp_mid, name=f"controlnet_forward mid residual for {label}", variants={
            "the control image left out (no conditioning embedding added to conv_in's output)": lambda: no_cond()[1],
        })
    return passed("controlnet_forward", len(cases), _ByDesign(source), hidden)


# ---------------------------------------------------------------- 7. the UNet with control
def _plain_unet(unet, sample, t, text):
    with torch.no_grad():
        return unet(sample, t, text).sample


def _check_unet_with_control(fn, hidden: bool) -> str:
    dev, seed = device_for(hidden), seed_for(hidden)
    unet, source = weights.get("controlnet_sd15_unet_model", dev, standin=True)
    cases = [(2, 8, 12, 0.8), (3, 12, 4, 1.6)] if hidden else [(1, 8, 8, 0.5)]
    for i, (B, H, W, scale) in enumerate(cases):
        s = seed + 10 * i
        sample, t, text = _inputs(unet, B, H, W, s, dev)
        shapes = skip_shapes(unet.config, B, H, W)
        down = [randn(*sh, seed=s + 20 + k, dev=dev) for k, sh in enumerate(shapes)]
        mid = randn(*shapes[-1], seed=s + 19, dev=dev)
        expected = ref.unet_with_control(unet, sample, t, text, down, mid, scale)
        label = f"latent {tuple(sample.shape)}, t {t.tolist()}, conditioning_scale {scale}"
        got = call(fn, "unet_with_control", unet, sample, t, text, down, mid, scale, forbidden=FORBID_UNET, case=label)
        assert_close(got, expected, name=f"unet_with_control on {label}", variants={
            "no residuals at all (the UNet on its own)": lambda: _plain_unet(unet, sample, t, text),
            "the mid residual added before the mid block instead of after it":
                lambda: _mid_before(unet, sample, t, text, down, mid, scale),
            "the residuals added inside the encoder (so they also flow into the deeper blocks), "
            "not only to the skips": lambda: _in_path(unet, sample, t, text, down, mid, scale),
            "the mid residual left out": lambda: ref.unet_with_control(unet, sample, t, text, down, mid * 0, scale),
            "the residuals not multiplied by conditioning_scale":
                lambda: ref.unet_with_control(unet, sample, t, text, down, mid, 1.0),
            "conditioning_scale applied to the mid residual only":
                lambda: ref.unet_with_control(unet, sample, t, text, [r / scale for r in down], mid, scale),
        })
    return passed("unet_with_control", len(cases), _ByDesign(source), hidden)


def _mid_before(unet, sample, t, text, down, mid, scale):
    """Down residuals on the skips, the mid residual added to the mid block's input."""
    h = unet.mid_block.register_forward_pre_hook(
        lambda m, args, kwargs: ((args[0] + scale * mid,) + args[1:], kwargs), with_kwargs=True)
    try:
        return ref.unet_with_control(unet, sample, t, text, down, torch.zeros_like(mid), scale)
    finally:
        h.remove()


def _in_path(unet, sample, t, text, down, mid, scale):
    """Each residual added to the encoder's own tensor, which then also feeds the next block."""
    queue = [scale * r for r in down]
    hooks = [unet.conv_in.register_forward_hook(lambda m, a, out: out + queue.pop(0))]

    def add(m, a, out):
        _, res = out
        res = tuple(r + queue.pop(0) for r in res)
        return res[-1], res

    hooks += [block.register_forward_hook(add) for block in unet.down_blocks]
    hooks.append(unet.mid_block.register_forward_hook(lambda m, a, out: out + scale * mid))
    try:
        with torch.no_grad():
            return unet(sample, t, text).sample
    finally:
        for h in hooks:
            h.remove()


EXERCISES = build(
    ("zero_conv", 1, _check_zero_conv), ("conv1x1_backward", 2, _check_backward),
    ("controlnet_from_unet", 3, _check_from_unet), ("conditioning_embedding", 2, _check_cond_embedding),
    ("control_residuals", 2, _check_residuals), ("controlnet_forward", 3, _check_controlnet_forward),
    ("unet_with_control", 3, _check_unet_with_control),
)
