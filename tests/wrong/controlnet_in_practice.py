"""Wrong implementations for lesson 2. Each function's name: <exercise>__<mistake>."""

import math

import torch
import torch.nn.functional as F

#: The bundled partly-wrong example (tests/make_examples.py): answers replaced, answers left as stubs.
PARTLY_WRONG = (
    {"canny_control_image_answer": "canny_control_image__values_in_0_255",
     "control_schedule_answer": "control_schedule__start_judged_by_step_end"},
    ["guess_mode_scales_answer"],
)


# ---------------------------------------------------------------- Canny control image
def _canny(image, low, high, *, gray=False, scale=255.0, invert=False, layout="chw", channels=3):
    import cv2
    import numpy as np

    src = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image
    edges = cv2.Canny(src, low, high)
    if invert:
        edges = 255 - edges
    if layout == "hwc":
        arr = np.stack([edges] * channels, axis=-1)[None]          # (1, H, W, C)
    elif layout == "transposed":
        arr = np.stack([edges.T] * channels, axis=0)[None]         # (1, C, W, H)
    else:
        arr = np.stack([edges] * channels, axis=0)[None]           # (1, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr)).float() / scale


def canny_control_image__grayscale_first(image, low_threshold, high_threshold):
    return _canny(image, low_threshold, high_threshold, gray=True)


def canny_control_image__values_in_0_255(image, low_threshold, high_threshold):
    import cv2

    edges = torch.from_numpy(cv2.Canny(image, low_threshold, high_threshold)).float()
    return edges[None, None].repeat(1, 3, 1, 1)                    # [0, 255]: never divided


def canny_control_image__hwc_not_transposed(image, low_threshold, high_threshold):
    return _canny(image, low_threshold, high_threshold, layout="hwc")


def canny_control_image__height_width_swapped(image, low_threshold, high_threshold):
    return _canny(image, low_threshold, high_threshold, layout="transposed")


def canny_control_image__single_channel(image, low_threshold, high_threshold):
    return _canny(image, low_threshold, high_threshold, channels=1)


def canny_control_image__inverted_edges(image, low_threshold, high_threshold):
    return _canny(image, low_threshold, high_threshold, invert=True)


def canny_control_image__calls_the_pipeline_processor(image, low_threshold, high_threshold):
    import cv2
    import numpy as np
    from PIL import Image
    from diffusers.image_processor import VaeImageProcessor

    edges = cv2.Canny(image, low_threshold, high_threshold)
    pil = Image.fromarray(np.stack([edges] * 3, axis=-1))
    return VaeImageProcessor(do_normalize=False).preprocess(pil, height=image.shape[0], width=image.shape[1])


# ---------------------------------------------------------------- depth control image
def _depth(depth, *, lo=0.02, hi=0.85, invert=True, clip=True, per_image=True, minmax=False, inverse=False,
           channels=3):
    d = depth.double()
    if inverse:
        d = 1.0 / d
    B = d.shape[0]
    flat = d.reshape(B, -1) if per_image else d.reshape(1, -1).expand(B, -1)
    if minmax:
        vmin, vmax = flat.min(1).values, flat.max(1).values
    else:
        vmin, vmax = torch.quantile(flat, lo, dim=1), torch.quantile(flat, hi, dim=1)
    x = (d - vmin[:, None, None]) / (vmax - vmin)[:, None, None]
    if invert:
        x = 1.0 - x
    if clip:
        x = x.clamp(0.0, 1.0)
    return x[:, None].repeat(1, channels, 1, 1).float()


def depth_control_image__far_is_bright(depth):
    return _depth(depth, invert=False)


def depth_control_image__min_max(depth):
    return _depth(depth, minmax=True)


def depth_control_image__not_clipped(depth):
    return _depth(depth, clip=False)


def depth_control_image__batch_wide_percentiles(depth):
    return _depth(depth, per_image=False)


def depth_control_image__inverse_depth_min_max(depth):
    return _depth(depth, inverse=True, minmax=True, invert=False)  # MiDaS-style disparity: another annotator


def depth_control_image__percentiles_2_and_98(depth):
    return _depth(depth, hi=0.98)


def depth_control_image__single_channel(depth):
    return _depth(depth, channels=1)


def depth_control_image__keeps_the_input_dtype(depth):
    return _depth(depth).to(depth.dtype)  # float64 depth in, float64 control image out: not what the pipeline takes


# ---------------------------------------------------------------- OpenPose skeleton (uses the given helpers)
def _pose(keypoints, height, width, *, dim=True, joints_first=False, bgr=False, swap_xy=False, zero_based=False,
          no_skip=False, hwc=False):
    import numpy as np

    k = keypoints.detach().cpu().double().numpy()
    if swap_xy:
        k = k[:, ::-1]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)

    def limbs():
        for (a, b), color in zip(LIMB_SEQ, COLORS):  # noqa: F821
            i, j = (a, b) if zero_based else (a - 1, b - 1)
            if i >= len(k) or j >= len(k):
                continue
            p, q = k[i], k[j]
            if not no_skip and (np.isnan(p).any() or np.isnan(q).any()):
                continue
            p, q = np.nan_to_num(p), np.nan_to_num(q)
            draw_limb(canvas, p[0] * width, p[1] * height, q[0] * width, q[1] * height,  # noqa: F821
                      [int(c * 0.6) for c in color] if dim else color)

    def joints():
        for p, color in zip(k, COLORS):  # noqa: F821
            if not no_skip and np.isnan(p).any():
                continue
            p = np.nan_to_num(p)
            draw_joint(canvas, p[0] * width, p[1] * height, color)  # noqa: F821

    for step in ((joints, limbs) if joints_first else (limbs, joints)):
        step()
    if bgr:
        canvas = canvas[:, :, ::-1]
    image = torch.from_numpy(np.ascontiguousarray(canvas))
    image = image[None] if hwc else image.permute(2, 0, 1)[None]
    return (image.float() / 255.0).to(keypoints.device)


def openpose_image__bgr_canvas(keypoints, height, width):
    return _pose(keypoints, height, width, bgr=True)


def openpose_image__limbs_not_dimmed(keypoints, height, width):
    return _pose(keypoints, height, width, dim=False)


def openpose_image__joints_under_the_limbs(keypoints, height, width):
    return _pose(keypoints, height, width, joints_first=True)


def openpose_image__x_and_y_swapped(keypoints, height, width):
    return _pose(keypoints, height, width, swap_xy=True)


def openpose_image__joint_numbers_used_as_indices(keypoints, height, width):
    return _pose(keypoints, height, width, zero_based=True)


def openpose_image__missing_joints_drawn_at_the_corner(keypoints, height, width):
    return _pose(keypoints, height, width, no_skip=True)


def openpose_image__hwc_not_transposed(keypoints, height, width):
    return _pose(keypoints, height, width, hwc=True)


# ---------------------------------------------------------------- stacking ControlNets
def _multi(controlnets, sample, timestep, text, images, scales, *, scaled=True, combine="sum", same_image=False,
           mid_from="sum"):
    outs = []
    for k, (net, image, scale) in enumerate(zip(controlnets, images, scales)):
        img = images[0] if same_image else image
        outs.append(net(sample, timestep, text, img, conditioning_scale=scale if scaled else 1.0, return_dict=False))
    down = [sum(o[0][i] for o in outs) for i in range(len(outs[0][0]))]
    mid = sum(o[1] for o in outs) if mid_from == "sum" else outs[-1][1]
    if combine == "mean":
        down, mid = [d / len(outs) for d in down], mid / len(outs)
    return down, mid


def multi_controlnet_residuals__unscaled_sum(controlnets, sample, timestep, encoder_hidden_states, images, scales):
    return _multi(controlnets, sample, timestep, encoder_hidden_states, images, scales, scaled=False)


def multi_controlnet_residuals__averaged(controlnets, sample, timestep, encoder_hidden_states, images, scales):
    return _multi(controlnets, sample, timestep, encoder_hidden_states, images, scales, combine="mean")


def multi_controlnet_residuals__first_image_for_every_net(controlnets, sample, timestep, encoder_hidden_states,
                                                          images, scales):
    return _multi(controlnets, sample, timestep, encoder_hidden_states, images, scales, same_image=True)


def multi_controlnet_residuals__mid_from_the_last_net_only(controlnets, sample, timestep, encoder_hidden_states,
                                                           images, scales):
    return _multi(controlnets, sample, timestep, encoder_hidden_states, images, scales, mid_from="last")


def multi_controlnet_residuals__scales_in_reverse(controlnets, sample, timestep, encoder_hidden_states, images,
                                                  scales):
    return _multi(controlnets, sample, timestep, encoder_hidden_states, images, list(reversed(scales)))


def multi_controlnet_residuals__scaled_after_summing(controlnets, sample, timestep, encoder_hidden_states, images,
                                                     scales):
    down, mid = _multi(controlnets, sample, timestep, encoder_hidden_states, images, scales, scaled=False)
    return [d * scales[0] for d in down], mid * scales[0]


# ---------------------------------------------------------------- the control schedule
def _sched(T, scales, starts, ends, *, start_shift=0, end_shift=0, inclusive=False, keep_only=False,
           inverted=False, end_is_fraction_of_start=False):
    rows = []
    for i in range(T):
        row = []
        for c, s, e in zip(scales, starts, ends):
            if inclusive:
                off = i / T <= s or (i + 1) / T >= e
            else:
                off = (i + start_shift) / T < s or (i + 1 + end_shift) / T > e
            keep = float(off) if inverted else 1.0 - float(off)
            row.append(keep if keep_only else c * keep)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def control_schedule__start_judged_by_step_end(num_steps, conditioning_scales, control_guidance_start,
                                               control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end, start_shift=1)


def control_schedule__end_judged_by_step_start(num_steps, conditioning_scales, control_guidance_start,
                                               control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end, end_shift=-1)


def control_schedule__inclusive_boundaries(num_steps, conditioning_scales, control_guidance_start,
                                           control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end, inclusive=True)


def control_schedule__keep_mask_only(num_steps, conditioning_scales, control_guidance_start, control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end, keep_only=True)


def control_schedule__mask_inverted(num_steps, conditioning_scales, control_guidance_start, control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end, inverted=True)


def control_schedule__steps_by_timestep_not_index(num_steps, conditioning_scales, control_guidance_start,
                                                  control_guidance_end):
    # fraction of the noise level left (1 at the first step) instead of the fraction of steps done
    rows = []
    for i in range(num_steps):
        frac = 1.0 - i / num_steps
        rows.append([c * (1.0 - float(frac < s or frac > e)) for c, s, e in
                     zip(conditioning_scales, control_guidance_start, control_guidance_end)])
    return torch.tensor(rows, dtype=torch.float32)


def control_schedule__nets_and_steps_transposed(num_steps, conditioning_scales, control_guidance_start,
                                                control_guidance_end):
    return _sched(num_steps, conditioning_scales, control_guidance_start, control_guidance_end).T.contiguous()


# ---------------------------------------------------------------- guess mode's ramp
def guess_mode_scales__linear_ramp(num_down_residuals, conditioning_scale):
    return torch.linspace(0.1, 1.0, num_down_residuals + 1) * conditioning_scale


def guess_mode_scales__reversed(num_down_residuals, conditioning_scale):
    return torch.logspace(0, -1, num_down_residuals + 1) * conditioning_scale


def guess_mode_scales__scale_forgotten(num_down_residuals, conditioning_scale):
    return torch.logspace(-1, 0, num_down_residuals + 1)


def guess_mode_scales__mid_appended_at_full_scale(num_down_residuals, conditioning_scale):
    ramp = torch.logspace(-1, 0, num_down_residuals) * conditioning_scale
    return torch.cat([ramp, torch.tensor([float(conditioning_scale)])])


def guess_mode_scales__natural_log_base(num_down_residuals, conditioning_scale):
    return torch.logspace(-1, 0, num_down_residuals + 1, base=math.e) * conditioning_scale


def guess_mode_scales__flat(num_down_residuals, conditioning_scale):
    return torch.ones(num_down_residuals + 1) * conditioning_scale  # as if guess mode were off
