"""Lesson 1 (ControlNet): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference there) and ``judge`` (reference + comparison; trusted side only). Exercises whose
answer is a module (``zero_conv``, ``controlnet_from_unet``) have a harness (``Case.invoke``)
that turns the returned module into evidence the judge can check: its outputs, its tensors,
what one training step does to it, whether perturbing the UNet it was given changes it.

Public checks: fixed small inputs on the CPU. Hidden tests: the grader's seed, shapes the
public checks do not use (batch > 1, non-square latents, other channel counts, other
conditioning scales, SDXL-like and class-conditional UNets, other UNet/ControlNet layouts),
the real ControlNet 1.1 Canny layers when present, and the GPU when there is one.
Whole-model checks (ControlNet encoder, UNet decoder) run on small stand-ins by design: the
real-weight checks read the layers a ControlNet adds.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import weights
from ..compare import ComparisonError, assert_close
from ..exercise import SubmissionError
from ..reference import controlnet as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises

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


def _standin(ctx: Context, part: str, device=None):
    """A stand-in part chosen by design; its banner says so (once per context)."""
    module, source = weights.get(part, device if device is not None else ctx.device, standin=True)
    note = _ByDesign(source)
    if note.banner() not in [s.banner() for s in ctx.sources]:
        ctx.sources.append(note)
    return module


def harness(name: str, invoke):
    """``invoke`` as a case's harness, with the core's messages for a missing or non-callable answer
    (a harness would otherwise report its own TypeError on calling None)."""
    def run(fn, *args, **kwargs):
        if fn is None:
            raise SubmissionError(f"{name}: not defined. Run the cell that defines `{name}` first.")
        if not callable(fn):
            raise SubmissionError(f"{name}: expected a function, got {type(fn).__name__}.")
        return invoke(fn, *args, **kwargs)
    return run


def copied(fn, *args):
    """A harness for arguments the core does not copy (lists of tensors or modules, numpy arrays):
    the student's function gets its own deep copies, so editing them in place changes nothing else."""
    import copy

    return fn(*copy.deepcopy(args))


def _type_name(value) -> str:
    return getattr(value, "course_type_name", type(value).__name__)


def _pair(got, name: str, expected_len: int):
    """A recorded (list of down residuals, mid residual), checked for its structure."""
    ok = (isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], (tuple, list))
          and all(isinstance(t, torch.Tensor) for t in got[0]) and isinstance(got[1], torch.Tensor))
    if not ok:
        raise ComparisonError(f"{name}: return a pair (list of down residuals, mid residual), "
                              f"got {_type_name(got)}.")
    down, mid = list(got[0]), got[1]
    if len(down) != expected_len:
        raise ComparisonError(
            f"{name}: {len(down)} down residuals, expected {expected_len}: one per skip tensor the UNet's "
            f"encoder hands to its decoder (conv_in's output, every resnet's output, every downsampler's output).")
    return down, mid


# ---------------------------------------------------------------- 1. zero convolution
def _zero_conv_harness(fn, channels, x, grad_out, x2, lr):
    """Untrusted: the returned layer as evidence: its parameters, its output on x, and its output
    on x2 after one SGD step on the loss sum(layer(x) * grad_out)."""
    module = fn(channels)
    if not isinstance(module, nn.Conv2d):
        return {"type": type(module).__name__}
    module = module.to(x.device)
    params = dict(module.named_parameters())
    evidence = {"type": "Conv2d",
                "params": {n: p.detach().clone() for n, p in params.items()},
                "requires_grad": {n: bool(p.requires_grad) for n, p in params.items()}}
    trainable = [p for p in params.values() if p.requires_grad]
    with torch.enable_grad():
        out = module(x)
        evidence["output"] = out.detach().clone()
        if trainable and out.requires_grad and out.shape == grad_out.shape:
            grads = torch.autograd.grad(out, trainable, grad_out, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(trainable, grads):
                    if g is not None:
                        p -= lr * g
    with torch.no_grad():
        evidence["after_one_step"] = module(x2).detach().clone()
    return evidence


def _zero_conv_cases(ctx: Context):
    configs = [(320, (2, 5, 7)), (3, (3, 4, 6)), (17, (1, 6, 3))] if ctx.hidden else [(8, (2, 5, 7))]
    for i, (C, (B, H, W)) in enumerate(configs):
        x = ctx.randn(B, C, H, W, offset=10 * i)
        grad_out = ctx.randn(B, C, H, W, offset=10 * i + 1)
        x2 = ctx.randn(B, C, H, W, offset=10 * i + 2)
        yield Case(f"{C} channels", (C, x, grad_out, x2, 0.5), invoke=harness("zero_conv", _zero_conv_harness))


def _conv_step(x, grad_out, x2, lr, *, bias=True, kernel=1):
    """A C -> C convolution at zero after one SGD step on sum(conv(x) * grad_out), applied to x2."""
    C = x.shape[1]
    w = torch.zeros(C, C, kernel, kernel, device=x.device, requires_grad=True)
    b = torch.zeros(C, device=x.device, requires_grad=True) if bias else None
    with torch.enable_grad():
        out = F.conv2d(x, w, b, padding=kernel // 2)
        grads = torch.autograd.grad(out, [w] + ([b] if bias else []), grad_out)
    with torch.no_grad():
        w2 = -lr * grads[0]
        b2 = -lr * grads[1] if bias else None
        return F.conv2d(x2, w2, b2, padding=kernel // 2)


def _zero_conv_judge(case: Case, got) -> None:
    C, x, grad_out, x2, lr = case.args
    name = f"zero_conv({C})"
    if not isinstance(got, dict) or got.get("type") != "Conv2d":
        kind = got.get("type") if isinstance(got, dict) else _type_name(got)
        raise ComparisonError(f"{name}: expected a torch.nn.Conv2d (a trainable layer), got {kind}.")
    params, requires_grad = got.get("params") or {}, got.get("requires_grad") or {}
    if not params:
        raise ComparisonError(f"{name}: the layer has no parameters: a zero convolution is trained.")
    for pname, p in params.items():
        if isinstance(p, torch.Tensor) and p.numel() and p.abs().max().item() != 0:
            raise ComparisonError(f"{name}: its {pname} is not zero (largest |value| {p.abs().max().item():.3g}): "
                                  f"a zero convolution starts with weight and bias both exactly 0.")
    for pname, flag in requires_grad.items():
        if not flag:
            raise ComparisonError(f"{name}: its {pname} does not require grad: a zero convolution is trained.")
    if not any(n == "bias" or n.endswith(".bias") for n in params):
        raise ComparisonError(f"{name}: the convolution has no bias; ControlNet's zero convolutions have one, "
                              f"initialised to zero like the weight.")
    with torch.no_grad():
        assert_close(got.get("output"), torch.zeros_like(x), name=f"{name} applied to x {tuple(x.shape)}")
    assert_close(got.get("after_one_step"), _conv_step(x, grad_out, x2, lr),
                 name=f"{name} after one training step (SGD, lr {lr}), applied to new features {tuple(x2.shape)}",
                 variants={
                     "the bias left out (ControlNet's zero convolutions have one, initialised to zero)":
                         lambda: _conv_step(x, grad_out, x2, lr, bias=False),
                     "a 3x3 kernel (a zero convolution is 1x1: it mixes channels at each pixel, not neighbours)":
                         lambda: _conv_step(x, grad_out, x2, lr, kernel=3),
                 })


# ---------------------------------------------------------------- 2. backward through a 1x1 convolution
def _backward_cases(ctx: Context):
    # (B, C_in, H, W, C_out, zero weights?, dtype): the answer keeps its inputs' dtype (float64 in, float64 out)
    f32, f64 = torch.float32, torch.float64
    configs = ([(2, 5, 4, 6, 3, False, f32), (3, 8, 2, 5, 8, True, f32), (1, 6, 3, 3, 6, False, f64),
                (2, 320, 3, 2, 320, True, f32)]
               if ctx.hidden else [(2, 4, 3, 3, 4, False, f32), (1, 4, 3, 3, 4, True, f32), (1, 3, 2, 2, 2, False, f64)])
    for i, (B, C, H, W, O, zero, dtype) in enumerate(configs):
        s = 10 * i
        x = ctx.randn(B, C, H, W, offset=s).to(dtype)
        weight = torch.zeros(O, C, 1, 1, device=ctx.device) if zero else ctx.randn(O, C, 1, 1, offset=s + 1, scale=0.5)
        bias = torch.zeros(O, device=ctx.device) if zero else ctx.randn(O, offset=s + 2)
        grad_out = ctx.randn(B, O, H, W, offset=s + 3).to(dtype)
        weight, bias = weight.to(dtype), bias.to(dtype)
        label = (f"x {(B, C, H, W)}, weight {(O, C, 1, 1)}{' all zero (a zero conv)' if zero else ''}"
                 f"{', float64' if dtype == f64 else ''}")
        yield Case(label, (x, weight, bias, grad_out))


def _autograd_conv1x1(x, weight, bias, grad_out):
    x = x.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    b = bias.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = F.conv2d(x, w, b)
        out.backward(grad_out)
    return out.detach(), w.grad.detach(), b.grad.detach(), x.grad.detach()


def _backward_judge(case: Case, got) -> None:
    x, weight, bias, grad_out = case.args
    expected = _autograd_conv1x1(x, weight, bias, grad_out)
    if not isinstance(got, (tuple, list)) or len(got) != 4:
        raise ComparisonError("conv1x1_backward: return a tuple of 4 tensors: "
                              "(output, grad_weight, grad_bias, grad_input).")
    B, O, C = x.shape[0], weight.shape[0], weight.shape[1]
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
        assert_close(g_, e_, name=f"conv1x1_backward {n_} for {case.label}", variants=variants[n_])


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
#: Another SD1.5-like layout for the whole-model checks: two levels, one resnet per level, 4 heads
#: at the second level, another text width.
_OTHER_SD = dict(block_out_channels=(8, 16), layers_per_block=1, attention_head_dim=(2, 4), norm_num_groups=4,
                 cross_attention_dim=10, sample_size=8, in_channels=4, out_channels=4,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


@functools.lru_cache(maxsize=4)
def _other_unet_cached(kind: str):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**{"sdxl": _SDXL_LIKE, "class": _CLASS_COND, "sd": _OTHER_SD}[kind])
    reinitialise_(unet, seed=11)
    return unet.eval()


def _other_unet(kind: str, device="cpu"):
    import copy

    return copy.deepcopy(_other_unet_cached(kind)).to(device)


@functools.lru_cache(maxsize=2)
def _other_controlnet_cached():
    from diffusers import ControlNetModel

    cfg = {k: v for k, v in _OTHER_SD.items() if k not in ("up_block_types", "out_channels", "sample_size")}
    net = ControlNetModel(**cfg, conditioning_embedding_out_channels=(4, 8))
    reinitialise_(net, seed=13)
    return net.eval()


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def probe_(model, seed: int) -> None:
    """Fill every ``controlnet_*`` parameter (the layers a ControlNet adds) with seeded values, so a
    forward pass shows the architecture and the copied encoder (at zero init every residual is 0)."""
    with torch.no_grad():
        named = sorted((n, p) for n, p in model.named_parameters() if n.startswith("controlnet_"))
        for i, (_, p) in enumerate(named):
            g = torch.Generator("cpu").manual_seed(seed + i)
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.device) * 0.3)


def _from_unet_harness(fn, unet, channels, sample, t, text, cond, scale, extra_inputs, probe_seed):
    """Untrusted: the returned ControlNet as evidence: its tensors, its config, the UNet's tensors after
    the call, its residuals with its new layers probed, and which of its tensors change when the UNet's
    weights are perturbed afterwards (shared storage)."""
    from diffusers import ControlNetModel

    model = fn(unet, channels)
    if not isinstance(model, ControlNetModel):
        return {"type": type(model).__name__}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    evidence = {"type": "ControlNetModel",
                "config": {k: _plain(v) for k, v in model.config.items() if not k.startswith("_")},
                "state": state,
                "unet_after": {k: v.detach().clone() for k, v in unet.state_dict().items()}}
    probe_(model, probe_seed)
    with torch.no_grad():
        down, mid = model.to(sample.device)(sample, t, text, cond, conditioning_scale=scale, return_dict=False,
                                            **extra_inputs)
        evidence["residuals"] = (list(down), mid)
        for p in unet.parameters():
            p.add_(1.0)
        now = model.state_dict()
        evidence["changed_by_unet"] = [k for k in sorted(state) if k in now and not k.startswith("controlnet_")
                                       and not torch.equal(now[k].cpu(), state[k].cpu())][:3]
    return evidence


def _from_unet_cases(ctx: Context):
    g = ctx.generator(7)
    unet = _standin(ctx, "controlnet_sd15_unet_model", "cpu")
    if ctx.hidden:
        configs = [(unet, (8, 16, 32, 32), "the stand-in SD1.5-like UNet", 2, 8, 12, 0.8),
                   (_other_unet("sdxl"), (4, 8), "an SDXL-like UNet (added text/time embedding, 2 transformer layers)",
                    2, 6, 10, 1.3),
                   (_other_unet("class"), (8, 8, 16), "a class-conditional UNet (6 latent channels)", 3, 8, 4, 0.6)]
    else:
        # The SDXL-like and class-conditional UNets here too (other sizes than the hidden tests'):
        # their added/class embeddings are part of the encoder a ControlNet copies.
        configs = [(unet, (4, 8, 16), "the stand-in SD1.5-like UNet", 1, 8, 8, 1.0),
                   (_other_unet("sdxl"), (4, 4), "an SDXL-like UNet (added text/time embedding)", 1, 4, 4, 1.0),
                   (_other_unet("class"), (4, 8), "a class-conditional UNet", 1, 4, 4, 1.0)]
    for i, (model, channels, what, B, H, W, scale) in enumerate(configs):
        cfg = model.config
        factor = 2 ** (len(channels) - 1)
        sample = ctx.randn(B, cfg.in_channels, H, W, offset=100 * i).cpu()
        t = torch.randint(0, 1000, (B,), generator=g)
        text = ctx.randn(B, 5, cfg.cross_attention_dim, offset=100 * i + 1).cpu()
        cond = ctx.rand(B, 3, H * factor, W * factor, offset=100 * i + 2).cpu()
        extra = {}
        if cfg.addition_embed_type == "text_time":
            n_text = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            extra["added_cond_kwargs"] = {"text_embeds": ctx.randn(B, n_text, offset=100 * i + 3).cpu(),
                                          "time_ids": ctx.rand(B, 6, offset=100 * i + 4).cpu() * 512}
        if cfg.num_class_embeds:
            extra["class_labels"] = torch.randint(0, cfg.num_class_embeds, (B,), generator=g)
        label = f"{what}, conditioning_embedding_out_channels={channels}"
        yield Case(label, (model, channels, sample, t, text, cond, scale, extra, (ctx.seed + 1000 * i) % 2 ** 31),
                   invoke=harness("controlnet_from_unet", _from_unet_harness))


def _from_unet_judge(case: Case, got) -> None:
    unet, channels, sample, t, text, cond, scale, extra, probe_seed = case.args
    name = f"controlnet_from_unet on {case.label}"
    if not isinstance(got, dict) or got.get("type") != "ControlNetModel":
        kind = got.get("type") if isinstance(got, dict) else _type_name(got)
        raise ComparisonError(f"{name}: expected a diffusers ControlNetModel, got {kind}.")
    expected = ref.controlnet_from_unet(unet, channels)
    e = expected.state_dict()
    g = got.get("state") if isinstance(got.get("state"), dict) else {}
    extra_keys, missing = sorted(set(g) - set(e)), sorted(set(e) - set(g))
    if extra_keys:
        hint = " The decoder (up_blocks, conv_norm_out, conv_out) is not part of a ControlNet." \
            if any(k.startswith(("up_blocks.", "conv_out.", "conv_norm_out.")) for k in extra_keys) else ""
        raise ComparisonError(f"{name}: {len(extra_keys)} unexpected tensors, e.g. {extra_keys[0]!r}.{hint}")
    if missing:
        raise ComparisonError(f"{name}: {len(missing)} tensors missing, e.g. {missing[0]!r}.")
    for key in e:
        if not isinstance(g[key], torch.Tensor) or tuple(g[key].shape) != tuple(e[key].shape):
            shape = tuple(g[key].shape) if isinstance(g[key], torch.Tensor) else _type_name(g[key])
            raise ComparisonError(f"{name}: {key!r} has shape {shape}, expected {tuple(e[key].shape)}.")
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
    shared = got.get("changed_by_unet") or []
    if shared:
        raise ComparisonError(f"{name}: {shared[0]!r} shares its storage with the UNet's weights: "
                              f"training the ControlNet would then change the frozen UNet. Copy the values, "
                              f"not the modules.")
    after = got.get("unet_after") if isinstance(got.get("unet_after"), dict) else {}
    changed = [k for k, v in u.items() if not isinstance(after.get(k), torch.Tensor) or after[k].shape != v.shape
               or not torch.equal(after[k].cpu(), v.cpu())]
    if changed:
        raise ComparisonError(f"{name}: the UNet you were given was modified ({changed[0]!r}); it must stay frozen.")
    # The architecture: with the new layers filled with the same probe values, the residuals must match.
    probe_(expected, probe_seed)
    with torch.no_grad():
        exp_down, exp_mid = expected(sample, t, text, cond, conditioning_scale=scale, return_dict=False, **extra)
    down, mid = _pair(got.get("residuals"), name, len(exp_down))
    config = got.get("config") if isinstance(got.get("config"), dict) else {}
    differ = [k for k, v in expected.config.items() if not k.startswith("_") and _plain(config.get(k)) != _plain(v)]
    hint = (f"config entry {differ[0]!r} is {config.get(differ[0])!r}, expected {_plain(expected.config[differ[0]])!r} "
            f"(the encoder copy must have the UNet's architecture)") if differ else None
    for k, (g_, e_) in enumerate(list(zip(down, exp_down)) + [(mid, exp_mid)]):
        which = "mid residual" if k == len(down) else f"down residual {k}"
        try:
            assert_close(g_, e_, name=f"{name}: {which} with its new layers filled with probe values")
        except ComparisonError as err:
            raise ComparisonError(f"{err}\n  diagnosis: {hint}." if hint else str(err)) from None


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


def _other_embedding(ctx: Context, seed: int, **kw):
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    emb = ControlNetConditioningEmbedding(**kw).to(ctx.device).eval()
    reinitialise_(emb, seed)
    return emb


def _embed_cases(ctx: Context):
    emb = ctx.weights("controlnet_new_layers")["cond_embedding"]
    if ctx.hidden:
        s = ctx.seed % 1000
        other = _other_embedding(ctx, s, conditioning_embedding_channels=6, conditioning_channels=1,
                                 block_out_channels=(4, 8))
        three = _other_embedding(ctx, s + 1, conditioning_embedding_channels=5, conditioning_channels=3,
                                 block_out_channels=(3, 6, 4))
        configs = [(emb, (2, 3, 40, 64)), (emb, (3, 3, 24, 16)), (other, (2, 1, 12, 20)), (three, (2, 3, 16, 24))]
    else:
        small = _other_embedding(ctx, 3, conditioning_embedding_channels=4, conditioning_channels=1,
                                 block_out_channels=(3, 5))
        configs = [(emb, (1, 3, 32, 32)), (small, (2, 1, 8, 12))]
    for i, (module, shape) in enumerate(configs):
        cond = ctx.rand(*shape, offset=i)  # control images live in [0, 1]
        yield Case(f"control image {shape}", (module, cond))


def _embed_judge(case: Case, got) -> None:
    module, cond = case.args
    assert_close(got, ref.conditioning_embedding(module, cond), name=f"conditioning_embedding on {case.label}",
                 variants={
                     "ReLU instead of SiLU (the paper says ReLU; diffusers' port, and the released weights, use SiLU)":
                         lambda: _cond_embed_variant(module, cond, act=F.relu),
                     "no activation after the last strided convolution":
                         lambda: _cond_embed_variant(module, cond, last_act=False),
                     "an activation after conv_out (it has none: its zero output must reach the UNet unchanged)":
                         lambda: _cond_embed_variant(module, cond, out_act=True),
                 })


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


def _other_new_layers(ctx: Context, seed: int):
    from ..checkpoints.controlnet import _build_controlnet_new_layers

    cfg = dict(block_out_channels=(6, 10, 12, 12), layers_per_block=1, conditioning_embedding_out_channels=(4, 8))
    layers = _build_controlnet_new_layers(cfg)
    reinitialise_(layers, seed)
    return layers.to(ctx.device).eval(), cfg


def _residuals_cases(ctx: Context):
    layers, source = weights.get("controlnet_new_layers", ctx.device)
    if source not in ctx.sources:
        ctx.sources.append(source)
    cfg = source.config
    configs = [(layers, cfg, 2, 16, 24, 0.8), (layers, cfg, 1, 8, 8, 1.7), (layers, cfg, 3, 16, 8, 0.35)]
    other, other_cfg = _other_new_layers(ctx, ctx.seed % 1000)
    if ctx.hidden:
        configs.append((other, other_cfg, 2, 12, 20, 1.25))
    else:
        configs = [(layers, cfg, 1, 8, 8, 0.5), (other, other_cfg, 2, 8, 4, 1.5)]
    for i, (mods, c, B, H, W, scale) in enumerate(configs):
        shapes = skip_shapes(c, B, H, W)
        feats = [ctx.randn(*s, offset=100 * i + k) for k, s in enumerate(shapes)]
        mid = ctx.randn(*shapes[-1], offset=100 * i + 99)
        label = f"{len(feats)} features for a latent {(B, H, W)}, conditioning_scale {scale}"
        yield Case(label, (feats, mid, mods["down_blocks"], mods["mid_block"], scale),
                   invoke=harness("control_residuals", copied))


def _residuals_judge(case: Case, got) -> None:
    feats, mid, convs, mid_conv, scale = case.args
    exp_down, exp_mid = ref.control_residuals(feats, mid, convs, mid_conv, scale)
    down, got_mid = _pair(got, "control_residuals", len(exp_down))
    with torch.no_grad():
        for k, (g_, e_) in enumerate(zip(down, exp_down)):
            assert_close(g_, e_, name=f"control_residuals down residual {k} of {case.label}", variants={
                "conditioning_scale not applied to the down residuals": lambda k=k: convs[k](feats[k]),
                "the zero convolution of the previous skip (pairs shifted by one)":
                    (lambda k=k: convs[k - 1](feats[k]) * scale)
                    if k > 0 and convs[k - 1].in_channels == feats[k].shape[1] else None,
            })
        assert_close(got_mid, exp_mid, name=f"control_residuals mid residual of {case.label}", variants={
            "conditioning_scale not applied to the mid residual": lambda: mid_conv(mid),
            "the last down zero convolution used for the mid block":
                (lambda: convs[-1](mid) * scale) if convs[-1].in_channels == mid.shape[1] else None,
        })


# ---------------------------------------------------------------- 6. the ControlNet forward
def _controlnet_without_image(controlnet, *args):
    import copy

    model = copy.deepcopy(controlnet)
    model.controlnet_cond_embedding.forward = lambda c: torch.zeros((), device=c.device)
    return ref.controlnet_forward(model, *args)


def _inputs(ctx: Context, model, B, H, W, offset, cond_factor=None):
    cfg = model.config
    sample = ctx.randn(B, cfg.in_channels, H, W, offset=offset)
    t = ctx.randint(0, 1000, (B,), offset=offset + 1)
    text = ctx.randn(B, 5 + B, cfg.cross_attention_dim, offset=offset + 2)
    if cond_factor is None:
        return sample, t, text
    cond = ctx.rand(B, 3, H * cond_factor, W * cond_factor, offset=offset + 3)
    return sample, t, text, cond


def _forward_cases(ctx: Context):
    model = _standin(ctx, "controlnet_model")
    import copy

    other = copy.deepcopy(_other_controlnet_cached()).to(ctx.device)
    configs = ([(model, 2, 8, 12, 0.8), (model, 3, 4, 16, 1.3), (other, 2, 6, 10, 0.45)] if ctx.hidden
               else [(model, 1, 8, 8, 0.5), (other, 1, 4, 4, 1.2)])
    for i, (net, B, H, W, scale) in enumerate(configs):
        factor = 2 ** (len(net.config.conditioning_embedding_out_channels) - 1)
        sample, t, text, cond = _inputs(ctx, net, B, H, W, 10 * i, factor)
        label = f"latent {tuple(sample.shape)}, control image {tuple(cond.shape)}, t {t.tolist()}, scale {scale}"
        if net is not model:
            label += f" (a ControlNet with {len(net.config.block_out_channels)} levels, 1 resnet each)"
        yield Case(label, (net, sample, t, text, cond, scale))


def _forward_judge(case: Case, got) -> None:
    net = case.args[0]
    exp_down, exp_mid = ref.controlnet_forward(*case.args)
    down, mid = _pair(got, "controlnet_forward", len(exp_down))
    no_cond = functools.lru_cache(maxsize=1)(lambda: _controlnet_without_image(net, *case.args[1:]))
    for k, (g_, e_) in enumerate(zip(down, exp_down)):
        assert_close(g_, e_, name=f"controlnet_forward down residual {k} for {case.label}", variants={
            "the control image left out (no conditioning embedding added to conv_in's output)":
                lambda k=k: no_cond()[0][k],
        })
    assert_close(mid, exp_mid, name=f"controlnet_forward mid residual for {case.label}", variants={
        "the control image left out (no conditioning embedding added to conv_in's output)": lambda: no_cond()[1],
    })


# ---------------------------------------------------------------- 7. the UNet with control
def _plain_unet(unet, sample, t, text):
    with torch.no_grad():
        return unet(sample, t, text).sample


def _unet_cases(ctx: Context):
    unet = _standin(ctx, "controlnet_sd15_unet_model")
    other = _other_unet("sd", ctx.device)
    configs = ([(unet, 2, 8, 12, 0.8), (unet, 3, 12, 4, 1.6), (other, 2, 6, 10, 0.3)] if ctx.hidden
               else [(unet, 1, 8, 8, 0.5), (other, 1, 4, 4, 1.4)])
    for i, (model, B, H, W, scale) in enumerate(configs):
        s = 100 * i
        sample, t, text = _inputs(ctx, model, B, H, W, s)
        shapes = skip_shapes(model.config, B, H, W)
        down = [ctx.randn(*sh, offset=s + 20 + k) for k, sh in enumerate(shapes)]
        mid = ctx.randn(*shapes[-1], offset=s + 19)
        label = f"latent {tuple(sample.shape)}, t {t.tolist()}, conditioning_scale {scale}"
        if model is not unet:
            label += f" (a UNet with {len(model.config.block_out_channels)} levels, 1 resnet each)"
        yield Case(label, (model, sample, t, text, down, mid, scale),
                   invoke=harness("unet_with_control", copied))


def _unet_judge(case: Case, got) -> None:
    unet, sample, t, text, down, mid, scale = case.args
    expected = ref.unet_with_control(*case.args)
    assert_close(got, expected, name=f"unet_with_control on {case.label}", variants={
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


EXERCISES = exercises(
    Exercise("zero_conv", 1, _zero_conv_cases, _zero_conv_judge, FORBID_ZERO),
    Exercise("conv1x1_backward", 2, _backward_cases, _backward_judge, FORBID_BACKWARD),
    Exercise("controlnet_from_unet", 3, _from_unet_cases, _from_unet_judge, FORBID_FROM_UNET),
    Exercise("conditioning_embedding", 2, _embed_cases, _embed_judge, FORBID_EMBED),
    Exercise("control_residuals", 2, _residuals_cases, _residuals_judge, FORBID_RESIDUALS),
    Exercise("controlnet_forward", 3, _forward_cases, _forward_judge, FORBID_FORWARD),
    Exercise("unet_with_control", 3, _unet_cases, _unet_judge, FORBID_UNET),
)
