"""Lesson 2 references: control images as the ControlNet pipeline expects them, stacking, scheduling.

Where diffusers has the computation (the control image processor, MultiControlNetModel, the
pipeline's keep schedule, guess mode) the reference is diffusers itself or a marked copy kept
equal to it by tests/test_reference_controlnet_in_practice.py. Where diffusers has none (the
depth and pose annotators live in controlnet_aux, which needs pretrained detectors), the
reference is an independent implementation of the annotator's documented output format,
with analytic checks in the same test file.

Letters: B batch, H W image height/width, N the number of ControlNets, T denoising steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def control_image_processor():
    """The pipeline's ``control_image_processor`` (StableDiffusionControlNetPipeline.__init__)."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)


def canny_control_image(image: np.ndarray, low_threshold: int, high_threshold: int) -> torch.Tensor:
    """diffusers' documented Canny recipe, then the pipeline's own preprocessing.

    image: uint8 (H, W, 3) RGB. ``cv2.Canny`` on the colour image (as controlnet_aux's
    CannyDetector and the docs do), edges copied to 3 channels, a PIL image, then
    ``control_image_processor.preprocess(..., height=H, width=W)``: (1, 3, H, W) float32 in [0, 1].
    """
    import cv2
    from PIL import Image

    edges = cv2.Canny(image, low_threshold, high_threshold)            # (H, W) uint8, 0 or 255
    rgb = np.concatenate([edges[:, :, None]] * 3, axis=2)              # (H, W, 3)
    H, W = image.shape[:2]
    return control_image_processor().preprocess(Image.fromarray(rgb), height=H, width=W).to(torch.float32)


def depth_control_image(depth: torch.Tensor) -> torch.Tensor:
    """A metric depth map as ControlNet 1.1's Zoe annotator renders it (controlnet_aux ZoeDetector).

    depth (B, H, W), distances > 0. Per image: vmin, vmax = the 2nd and 85th percentiles,
    d = 1 - (depth - vmin) / (vmax - vmin) (near is bright), clipped to [0, 1], copied to 3
    channels. The annotator's uint8 round trip is left out (the pipeline accepts float tensors).
    Returns (B, 3, H, W) float32.
    """
    out = []
    for d in depth.detach().double().cpu().numpy():
        vmin, vmax = np.percentile(d, 2), np.percentile(d, 85)
        x = np.clip(1.0 - (d - vmin) / (vmax - vmin), 0.0, 1.0)
        out.append(np.stack([x, x, x]))
    return torch.from_numpy(np.stack(out)).float().to(depth.device)


#: OpenPose's 18-keypoint body (COCO order): the 1-based joint pairs of the 17 limbs the ControlNet
#: annotators draw (OpenPose's list has two more, ear to shoulder, which they leave out), and the
#: 18 colours (RGB), limb i and joint i in colour i.
LIMB_SEQ = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13],
            [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
          [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
          [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
KEYPOINTS = ["nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
             "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
             "right eye", "left eye", "right ear", "left ear"]


def draw_limb(canvas: np.ndarray, x1: float, y1: float, x2: float, y2: float, color) -> None:
    """One limb as OpenPose's renderer draws it: a filled ellipse between two pixels, semi-axes
    (length / 2, 4) as cv2.ellipse2Poly takes them, so about 8 px thick."""
    import cv2

    length = math.hypot(x1 - x2, y1 - y2)
    angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
    center = (int((x1 + x2) / 2), int((y1 + y2) / 2))
    polygon = cv2.ellipse2Poly(center, (int(length / 2), 4), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def draw_joint(canvas: np.ndarray, x: float, y: float, color) -> None:
    """One keypoint as OpenPose's renderer draws it: a filled disc of radius 4."""
    import cv2

    cv2.circle(canvas, (int(x), int(y)), 4, color, thickness=-1)


def openpose_image(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One body rendered the way controlnet_aux's ``draw_bodypose`` renders it.

    keypoints (18, 2): (x, y) in [0, 1] of the image width/height, NaN where a joint is missing.
    On a black RGB canvas: the 17 limbs of LIMB_SEQ, limb i in 60% of COLORS[i] (``int(c * 0.6)``);
    then, on top, the 18 joints, joint i in COLORS[i] at full strength.
    Returns (1, 3, H, W) float32 in [0, 1], RGB, as the pipeline's image processor would give it.
    """
    k = keypoints.detach().double().cpu().numpy()
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for (a, b), color in zip(LIMB_SEQ, COLORS):
        p, q = k[a - 1], k[b - 1]
        if np.isnan(p).any() or np.isnan(q).any():
            continue
        draw_limb(canvas, p[0] * width, p[1] * height, q[0] * width, q[1] * height, [int(c * 0.6) for c in color])
    for point, color in zip(k, COLORS):
        if np.isnan(point).any():
            continue
        draw_joint(canvas, point[0] * width, point[1] * height, color)
    return torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div(255.0).to(keypoints.device)


def multi_controlnet_residuals(controlnets, sample, timestep, encoder_hidden_states, images, scales):
    """``MultiControlNetModel``: every net's residuals, each scaled by its own scale, summed."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    with torch.no_grad():
        down, mid = MultiControlNetModel(list(controlnets))(
            sample, timestep, encoder_hidden_states, controlnet_cond=list(images), conditioning_scale=list(scales),
            return_dict=False)
    return list(down), mid


def control_schedule(num_steps: int, conditioning_scales, control_guidance_start, control_guidance_end):
    """Per-step, per-net conditioning scale of StableDiffusionControlNetPipeline: (T, N) float32.

    Copied from diffusers.pipelines.controlnet.pipeline_controlnet.StableDiffusionControlNetPipeline.__call__
    ("7.2 Create tensor stating which controlnets to keep" and the list branch of cond_scale);
    tests/test_reference_controlnet_in_practice.py runs the pipeline and checks the scales it passes.
    """
    rows = []
    for i in range(num_steps):
        keeps = [
            1.0 - float(i / num_steps < s or (i + 1) / num_steps > e)
            for s, e in zip(control_guidance_start, control_guidance_end)
        ]
        rows.append([c * s for c, s in zip(conditioning_scales, keeps)])
    return torch.tensor(rows, dtype=torch.float32)


def guess_mode_scales(num_down_residuals: int, conditioning_scale: float) -> torch.Tensor:
    """ControlNetModel.forward's guess-mode ramp: (S + 1,), the down residuals' scales then the mid's.

    Copied from diffusers.models.controlnets.controlnet.ControlNetModel.forward ("6. scaling").
    """
    return torch.logspace(-1, 0, num_down_residuals + 1) * conditioning_scale


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("torch", "np", "math", "annotations")]
