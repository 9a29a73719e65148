"""Correct alternatives for lesson 2. Each function's name: <exercise>__<how>."""

import math

import torch


# ---------------------------------------------------------------- Canny control image
def canny_control_image__boolean_mask(image, low_threshold, high_threshold):
    import cv2

    edges = cv2.Canny(image, low_threshold, high_threshold)            # 0 or 255
    mask = torch.as_tensor(edges > 0, dtype=torch.float32)             # (H, W) in {0, 1}
    return mask.expand(1, 3, *mask.shape).contiguous()


def canny_control_image__numpy_repeat(image, low_threshold, high_threshold):
    import cv2
    import numpy as np

    edges = cv2.Canny(np.ascontiguousarray(image), low_threshold, high_threshold)
    hwc = np.repeat(edges[:, :, None], 3, axis=2).astype(np.float32) / 255.0   # (H, W, 3)
    return torch.tensor(hwc.transpose(2, 0, 1)[None])


# ---------------------------------------------------------------- depth control image
def depth_control_image__numpy_percentiles(depth):
    import numpy as np

    out = []
    for d in depth.detach().cpu().double().numpy():
        lo, hi = np.percentile(d, [2, 85])
        x = np.clip(1.0 - (d - lo) / (hi - lo), 0.0, 1.0)
        out.append(np.stack([x] * 3))
    return torch.from_numpy(np.stack(out)).float().to(depth.device)


def depth_control_image__sorted_interpolation(depth):
    B, H, W = depth.shape
    flat, _ = depth.reshape(B, -1).double().sort(dim=1)
    n = flat.shape[1]

    def percentile(q):                                                  # numpy's default (linear) rule
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        return flat[:, lo] + (pos - lo) * (flat[:, hi] - flat[:, lo])

    vmin, vmax = percentile(0.02)[:, None, None], percentile(0.85)[:, None, None]
    x = ((vmax - depth.double()) / (vmax - vmin)).clamp(0, 1).float()  # = 1 - (d - vmin) / (vmax - vmin)
    return torch.stack([x, x, x], dim=1)


# ---------------------------------------------------------------- OpenPose skeleton
_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
          [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
_COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
           [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
           [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]


def openpose_image__bgr_canvas_converted(keypoints, height, width):
    import cv2
    import numpy as np

    k = keypoints.detach().cpu().double().numpy()
    canvas = np.zeros((height, width, 3), dtype=np.uint8)              # drawn in BGR, OpenCV's habit ...
    for (a, b), color in zip(_LIMBS, _COLORS):
        (x1, y1), (x2, y2) = k[a - 1] * [width, height], k[b - 1] * [width, height]
        if np.isnan([x1, y1, x2, y2]).any():
            continue
        length = math.hypot(x1 - x2, y1 - y2)
        angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
        poly = cv2.ellipse2Poly((int((x1 + x2) / 2), int((y1 + y2) / 2)), (int(length / 2), 4), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in color[::-1]])
    for (x, y), color in zip(k * [width, height], _COLORS):
        if not (math.isnan(x) or math.isnan(y)):
            cv2.circle(canvas, (int(x), int(y)), 4, color[::-1], thickness=-1)
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)                      # ... then converted to RGB
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].float().div(255.0).to(keypoints.device)


def openpose_image__given_helpers_missing_first(keypoints, height, width):
    import numpy

    present = ~torch.isnan(keypoints).any(dim=1)                        # (18,)
    pts = (keypoints.double().cpu() * torch.tensor([width, height], dtype=torch.float64)).tolist()
    canvas = numpy.zeros((height, width, 3), dtype=numpy.uint8)
    for (a, b), color in zip(_LIMBS, _COLORS):
        if present[a - 1] and present[b - 1]:
            draw_limb(canvas, *pts[a - 1], *pts[b - 1], [int(c * 0.6) for c in color])  # noqa: F821
    for j in range(18):
        if present[j]:
            draw_joint(canvas, *pts[j], _COLORS[j])  # noqa: F821
    return (torch.tensor(canvas, dtype=torch.float32) / 255.0).permute(2, 0, 1)[None].to(keypoints.device)


# ---------------------------------------------------------------- stacking ControlNets
def multi_controlnet_residuals__scaled_afterwards(controlnets, sample, timestep, encoder_hidden_states, images,
                                                  scales):
    outs = [net(sample, timestep, encoder_hidden_states, image, conditioning_scale=1.0, return_dict=False)
            for net, image in zip(controlnets, images)]
    down = [sum(s * o[0][k] for o, s in zip(outs, scales)) for k in range(len(outs[0][0]))]
    mid = sum(s * o[1] for o, s in zip(outs, scales))
    return down, mid


def multi_controlnet_residuals__stacked(controlnets, sample, timestep, encoder_hidden_states, images, scales):
    outs = [net(sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=image,
                conditioning_scale=scale) for net, image, scale in zip(controlnets, images, scales)]
    S = len(outs[0].down_block_res_samples)
    down = tuple(torch.stack([o.down_block_res_samples[k] for o in outs]).sum(0) for k in range(S))
    return down, torch.stack([o.mid_block_res_sample for o in outs]).sum(0)


# ---------------------------------------------------------------- the control schedule
def control_schedule__pipeline_loops(num_steps, conditioning_scales, control_guidance_start, control_guidance_end):
    rows = []
    for i in range(num_steps):
        keeps = [1.0 - float(i / len(range(num_steps)) < s or (i + 1) / len(range(num_steps)) > e)
                 for s, e in zip(control_guidance_start, control_guidance_end)]
        rows.append([c * k for c, k in zip(conditioning_scales, keeps)])
    return torch.tensor(rows)


def control_schedule__numpy_where(num_steps, conditioning_scales, control_guidance_start, control_guidance_end):
    import numpy as np

    i = np.arange(num_steps)[:, None]
    on = (i / num_steps >= np.asarray(control_guidance_start)) & ((i + 1) / num_steps <= np.asarray(control_guidance_end))
    return torch.from_numpy(np.where(on, np.asarray(conditioning_scales, dtype=np.float64), 0.0)).float()


# ---------------------------------------------------------------- guess mode's ramp
def guess_mode_scales__logspace(num_down_residuals, conditioning_scale):
    return torch.logspace(-1, 0, num_down_residuals + 1) * conditioning_scale


def guess_mode_scales__power_of_linspace(num_down_residuals, conditioning_scale):
    return conditioning_scale * torch.pow(10.0, torch.linspace(-1.0, 0.0, num_down_residuals + 1))


def guess_mode_scales__python_list(num_down_residuals, conditioning_scale):
    n = num_down_residuals
    return torch.tensor([conditioning_scale * 10 ** (k / n - 1) for k in range(n + 1)], dtype=torch.float32)
