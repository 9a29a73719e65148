"""Lesson 2 (ControlNet in practice): public checks and hidden tests for every exercise.

Each exercise: ``cases`` (inputs from the context's seed; runs beside the student's code, so
no reference there) and ``judge`` (reference + comparison; trusted side only).

Public checks: fixed small inputs on the CPU. Hidden tests: a seed drawn at grading time,
other image sizes (non-square), other thresholds, batches, missing keypoints, more ControlNets,
other schedules, and the GPU when there is one. The stacking check runs on the tiny
stand-in ControlNets by design (it checks how residuals are combined, not the nets).
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch

from ..compare import assert_close
from ..reference import controlnet_in_practice as ref
from ..weights.resolve import reinitialise_
from . import Case, Context, Exercise, exercises
from .controlnet import _pair, _standin, copied, harness

LESSON = "02_controlnet_in_practice"

_REF = "grader.reference.controlnet_in_practice"  # the course's own references are off limits too
FORBID_PROCESSOR = ("diffusers.image_processor.VaeImageProcessor.preprocess", f"{_REF}.canny_control_image")
FORBID_DEPTH = (f"{_REF}.depth_control_image",)
FORBID_POSE = (f"{_REF}.openpose_image",)
FORBID_MULTI = ("diffusers.models.controlnets.multicontrolnet.MultiControlNetModel.forward",
                f"{_REF}.multi_controlnet_residuals")
FORBID_SCHEDULE = (f"{_REF}.control_schedule",)
FORBID_GUESS = (f"{_REF}.guess_mode_scales",)


# ---------------------------------------------------------------- synthetic inputs (seeded)
def scene(seed: int, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W, 3) RGB picture: a soft gradient, a few filled shapes, a little noise."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([60 + 100 * xx / width, 60 + 100 * yy / height, np.full((height, width), 110.0)], -1)
    img = np.ascontiguousarray(img.astype(np.uint8))
    for _ in range(4):
        color = [int(c) for c in rng.integers(0, 256, 3)]
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(3, max(4, min(height, width) // 3)))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), size, color, -1)
        else:
            cv2.rectangle(img, (cx - size, cy - size), (cx + size, cy + size // 2), color, -1)
    noise = rng.integers(0, 10, img.shape)
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def depth_scene(seed: int, batch: int, height: int, width: int, dev=None) -> torch.Tensor:
    """Metric depth (B, H, W) in metres: a floor receding to the horizon and a few spheres."""
    g = torch.Generator("cpu").manual_seed(seed)
    rows = torch.linspace(0.0, 1.0, height)[:, None].expand(height, width)
    cols = torch.linspace(0.0, 1.0, width)[None, :].expand(height, width)
    out = []
    for _ in range(batch):
        depth = 1.5 + 12.0 * (1.0 - rows) ** 2 + 0.5 * cols * torch.rand((), generator=g)
        for _ in range(3):
            cy, cx, r = torch.rand(3, generator=g).tolist()
            r = 0.1 + 0.2 * r
            d0 = 2.0 + 6.0 * torch.rand((), generator=g).item()
            dist2 = (rows - cy) ** 2 + (cols - cx) ** 2
            inside = dist2 < r * r
            sphere = d0 - 3.0 * torch.sqrt((r * r - dist2).clamp(min=0.0))
            depth = torch.where(inside, torch.minimum(depth, sphere), depth)
        out.append(depth + 0.01 * torch.rand(height, width, generator=g))
    return torch.stack(out).to(dev or torch.device("cpu"))


#: A person standing, facing the viewer: OpenPose's 18 body keypoints, (x, y) in [0, 1].
TEMPLATE = [(0.50, 0.15), (0.50, 0.26), (0.40, 0.26), (0.35, 0.41), (0.32, 0.55), (0.60, 0.26), (0.65, 0.41),
            (0.68, 0.55), (0.44, 0.55), (0.43, 0.72), (0.42, 0.90), (0.56, 0.55), (0.57, 0.72), (0.58, 0.90),
            (0.47, 0.13), (0.53, 0.13), (0.44, 0.15), (0.56, 0.15)]


def skeleton(seed: int, height: int, width: int, missing: int = 0) -> torch.Tensor:
    """Keypoints (18, 2) float64: the template, jittered, snapped to a quarter pixel past a pixel
    corner (so every renderer's int() agrees in float32 and float64), ``missing`` of them NaN."""
    g = torch.Generator("cpu").manual_seed(seed)
    k = torch.tensor(TEMPLATE, dtype=torch.float64)
    k = k + (torch.rand(18, 2, generator=g, dtype=torch.float64) - 0.5) * 0.06
    k = (k - 0.5) * (0.8 + 0.3 * torch.rand((), generator=g, dtype=torch.float64)) + 0.5
    k = k.clamp(0.02, 0.97)
    size = torch.tensor([width, height], dtype=torch.float64)
    k = (torch.floor(k * size) + 0.25) / size
    if missing:
        k[torch.randperm(18, generator=g)[:missing]] = float("nan")
    return k


# ---------------------------------------------------------------- 1. Canny control image
def _gray_canny(image, low, high):
    import cv2

    edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high)
    return torch.from_numpy(np.stack([edges] * 3))[None].float() / 255.0


def _canny_cases(ctx: Context):
    configs = [(48, 80, 100, 200), (64, 40, 50, 150), (24, 24, 150, 250)] if ctx.hidden else [(64, 64, 100, 200)]
    for i, (H, W, low, high) in enumerate(configs):
        image = scene((ctx.seed + i) % 2 ** 32, H, W)
        yield Case(f"a {H}x{W} RGB image, thresholds {low}/{high}", (image, low, high),
                   invoke=harness("canny_control_image", copied))


def _canny_judge(case: Case, got) -> None:
    image, low, high = case.args
    expected = ref.canny_control_image(image, low, high)
    assert_close(got, expected, name=f"canny_control_image on {case.label}", check_device=False, variants={
        "Canny run on a grayscale copy (the annotators run it on the RGB image)": lambda: _gray_canny(image, low, high),
        "black edges on white (inverted)": 1.0 - expected,
        "values left in [0, 255]": expected * 255.0,
    })


# ---------------------------------------------------------------- 2. depth control image
def _depth_variant(depth, *, lo=0.02, hi=0.85, invert=True, clip=True, per_image=True, minmax=False):
    d = depth.double()
    flat = d.reshape(d.shape[0], -1) if per_image else d.reshape(1, -1).expand(d.shape[0], -1)
    if minmax:
        vmin, vmax = flat.min(1).values, flat.max(1).values
    else:
        vmin, vmax = torch.quantile(flat, lo, dim=1), torch.quantile(flat, hi, dim=1)
    x = (d - vmin[:, None, None]) / (vmax - vmin)[:, None, None]
    x = 1.0 - x if invert else x
    x = x.clamp(0.0, 1.0) if clip else x
    return x[:, None].repeat(1, 3, 1, 1).float()


def _depth_cases(ctx: Context):
    # float64 depth (numpy's default) must still give the pipeline's float32 control image.
    configs = ([(2, 24, 40, torch.float32), (3, 16, 16, torch.float64), (1, 40, 24, torch.float32)] if ctx.hidden
               else [(2, 32, 32, torch.float32), (1, 24, 16, torch.float64)])
    for i, (B, H, W, dtype) in enumerate(configs):
        depth = depth_scene((ctx.seed + i) % 2 ** 62, B, H, W, ctx.device).to(dtype)
        kind = "" if dtype == torch.float32 else f", {str(dtype).replace('torch.', '')}"
        yield Case(f"depth {(B, H, W)}{kind}", (depth,))


def _depth_judge(case: Case, got) -> None:
    (depth,) = case.args
    assert_close(got, ref.depth_control_image(depth), name=f"depth_control_image on {case.label}", variants={
        "far bright and near dark (not inverted)": lambda: _depth_variant(depth, invert=False),
        "min-max normalisation instead of the 2nd/85th percentiles": lambda: _depth_variant(depth, minmax=True),
        "no clipping to [0, 1]": lambda: _depth_variant(depth, clip=False),
        "percentiles over the whole batch instead of per image": lambda: _depth_variant(depth, per_image=False),
    })


# ---------------------------------------------------------------- 3. OpenPose skeleton
def _pose_variant(keypoints, H, W, *, dim=True, joints_first=False, bgr=False, swap_xy=False):
    k = keypoints.detach().double().cpu().numpy()
    if swap_xy:
        k = k[:, ::-1]
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    colors = [c[::-1] for c in ref.COLORS] if bgr else ref.COLORS

    def limbs():
        for (a, b), color in zip(ref.LIMB_SEQ, colors):
            p, q = k[a - 1], k[b - 1]
            if not (np.isnan(p).any() or np.isnan(q).any()):
                ref.draw_limb(canvas, p[0] * W, p[1] * H, q[0] * W, q[1] * H,
                              [int(c * 0.6) for c in color] if dim else list(color))

    def joints():
        for p, color in zip(k, colors):
            if not np.isnan(p).any():
                ref.draw_joint(canvas, p[0] * W, p[1] * H, list(color))

    for step in ((joints, limbs) if joints_first else (limbs, joints)):
        step()
    return torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div(255.0)


def _pose_cases(ctx: Context):
    configs = [(64, 128, 0), (128, 64, 2), (32, 64, 1)] if ctx.hidden else [(64, 64, 1)]
    for i, (H, W, missing) in enumerate(configs):
        k = skeleton((ctx.seed + i) % 2 ** 62, H, W, missing).to(ctx.device)
        yield Case(f"{H}x{W} canvas, {18 - missing} of 18 keypoints", (k, H, W))


def _pose_judge(case: Case, got) -> None:
    k, H, W = case.args
    expected = ref.openpose_image(k, H, W)
    dev = expected.device
    assert_close(got, expected, name=f"openpose_image on a {case.label}", variants={
        "the colours in BGR order (OpenCV's habit; the annotators' canvas is RGB)":
            lambda: _pose_variant(k, H, W, bgr=True).to(dev),
        "limbs at full colour (the annotators draw them at 60%)": lambda: _pose_variant(k, H, W, dim=False).to(dev),
        "the joints drawn first and the limbs over them": lambda: _pose_variant(k, H, W, joints_first=True).to(dev),
        "x and y swapped": lambda: _pose_variant(k, H, W, swap_xy=True).to(dev),
    })


# ---------------------------------------------------------------- 4. stacking ControlNets
@functools.lru_cache(maxsize=4)
def _other_controlnet(seed: int):
    from .. import weights

    net, _ = weights.get("controlnet_model", standin=True)
    reinitialise_(net, seed)
    return net


def _multi_variant(nets, sample, t, text, images, scales, *, combine="sum", scale=True):
    with torch.no_grad():
        outs = [net(sample, t, text, image, conditioning_scale=(s if scale else 1.0), return_dict=False)
                for net, image, s in zip(nets, images, scales)]
    down = [sum(o[0][k] for o in outs) for k in range(len(outs[0][0]))]
    mid = sum(o[1] for o in outs)
    if combine == "mean":
        down, mid = [d / len(outs) for d in down], mid / len(outs)
    return down, mid


def _multi_cases(ctx: Context):
    configs = ([(2, 8, 12, (0.7, 1.3)), (1, 4, 8, (0.5, 0.0, 1.2)), (3, 8, 4, (1.0, 0.25))] if ctx.hidden
               else [(1, 8, 8, (1.0, 0.5))])
    for i, (B, H, W, scales) in enumerate(configs):
        base = _standin(ctx, "controlnet_model")
        nets = [base] + [copy.deepcopy(_other_controlnet(7 + k)).to(ctx.device) for k in range(len(scales) - 1)]
        cfg = nets[0].config
        factor = 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)
        s = 10 * i
        sample = ctx.randn(B, cfg.in_channels, H, W, offset=s)
        t = ctx.randint(0, 1000, (B,), offset=s + 1)
        text = ctx.randn(B, 6, cfg.cross_attention_dim, offset=s + 2)
        images = [ctx.rand(B, 3, H * factor, W * factor, offset=s + 3 + k) for k in range(len(scales))]
        label = f"{len(nets)} ControlNets, scales {list(scales)}, latent {tuple(sample.shape)}"
        yield Case(label, (nets, sample, t, text, images, list(scales)),
                   invoke=harness("multi_controlnet_residuals", copied))


def _multi_judge(case: Case, got) -> None:
    nets, sample, t, text, images, scales = case.args
    exp_down, exp_mid = ref.multi_controlnet_residuals(nets, sample, t, text, images, scales)
    down, mid = _pair(got, "multi_controlnet_residuals", len(exp_down))
    unscaled = functools.lru_cache(maxsize=1)(lambda: _multi_variant(nets, sample, t, text, images, scales,
                                                                     scale=False))
    mean = functools.lru_cache(maxsize=1)(lambda: _multi_variant(nets, sample, t, text, images, scales,
                                                                 combine="mean"))
    for k, (g_, e_) in enumerate(zip(down + [mid], exp_down + [exp_mid])):
        which = "mid residual" if k == len(down) else f"down residual {k}"
        assert_close(g_, e_, name=f"multi_controlnet_residuals {which} for {case.label}", variants={
            "each net's residuals summed without its conditioning scale": lambda k=k: (unscaled()[0] + [unscaled()[1]])[k],
            "the residuals averaged instead of summed": lambda k=k: (mean()[0] + [mean()[1]])[k],
        })


# ---------------------------------------------------------------- 5. the control schedule
def _schedule_variant(T, scales, starts, ends, *, start_shift=0, end_shift=0):
    rows = []
    for i in range(T):
        rows.append([c * (1.0 - float((i + start_shift) / T < s or (i + 1 + end_shift) / T > e))
                     for c, s, e in zip(scales, starts, ends)])
    return torch.tensor(rows, dtype=torch.float32)


def _schedule_cases(ctx: Context):
    if ctx.hidden:
        r = torch.rand(6, generator=ctx.generator(0)).tolist()
        configs = [(25, [0.8, 1.2, 0.5], [0.1, 0.0, 0.32], [0.6, 1.0, 0.88]),
                   (10, [1.0, 0.7], [0.2, 0.0], [0.7, 0.3]),               # boundaries i/T == start, (i+1)/T == end
                   (7, [round(0.5 + r[0], 3)], [round(0.4 * r[1], 3)], [round(0.6 + 0.4 * r[2], 3)]),
                   (50, [1.0, round(0.3 + r[3], 3)], [0.0, 0.5], [0.5, 1.0])]
    else:
        configs = [(8, [1.0, 0.5], [0.0, 0.25], [0.75, 1.0])]
    for T, scales, starts, ends in configs:
        yield Case(f"{T} steps, scales {scales}, start {starts}, end {ends}", (T, scales, starts, ends),
                   invoke=harness("control_schedule", copied))


def _schedule_judge(case: Case, got) -> None:
    T, scales, starts, ends = case.args
    assert_close(got, ref.control_schedule(T, scales, starts, ends), name=f"control_schedule for {case.label}",
                 check_device=False, variants={
                     "each step judged by its end, (i+1)/T, against the start (one step too late)":
                         _schedule_variant(T, scales, starts, ends, start_shift=1),
                     "each step judged by its start, i/T, against the end (one step too long)":
                         _schedule_variant(T, scales, starts, ends, end_shift=-1),
                     "the keep mask without the conditioning scales":
                         _schedule_variant(T, [1.0] * len(scales), starts, ends),
                 })


# ---------------------------------------------------------------- 6. guess mode's ramp
def _guess_cases(ctx: Context):
    for n, scale in ([(9, 0.7), (3, 2.0), (15, 1.0)] if ctx.hidden else [(12, 0.5)]):
        yield Case(f"{n} down residuals, conditioning_scale {scale}", (n, scale))


def _guess_judge(case: Case, got) -> None:
    n, scale = case.args
    expected = ref.guess_mode_scales(n, scale)
    assert_close(got, expected, name=f"guess_mode_scales for {case.label}", check_device=False, variants={
        "a linear ramp from 0.1 to 1 (the ramp is geometric: logspace)": torch.linspace(0.1, 1.0, n + 1) * scale,
        "the ramp reversed (deep residuals damped, shallow ones kept)": expected.flip(0),
        "a ramp of n values with the mid residual appended at full scale":
            torch.cat([torch.logspace(-1, 0, n) * scale, torch.tensor([scale])]),
    })


EXERCISES = exercises(
    Exercise("canny_control_image", 2, _canny_cases, _canny_judge, FORBID_PROCESSOR),
    Exercise("depth_control_image", 2, _depth_cases, _depth_judge, FORBID_DEPTH),
    Exercise("openpose_image", 3, _pose_cases, _pose_judge, FORBID_POSE),
    Exercise("multi_controlnet_residuals", 2, _multi_cases, _multi_judge, FORBID_MULTI),
    Exercise("control_schedule", 2, _schedule_cases, _schedule_judge, FORBID_SCHEDULE),
    Exercise("guess_mode_scales", 1, _guess_cases, _guess_judge, FORBID_GUESS),
)
