"""Lesson 2's references agree with diffusers, and every convention the lesson states is true.

The pipeline-level facts (the keep schedule, guess mode's halves, what reaches each ControlNet)
are checked by running diffusers' own StableDiffusionControlNetPipeline on the stand-ins.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch

from grader.exercises.controlnet_in_practice import TEMPLATE, depth_scene, scene, skeleton
from grader.notebook_code import solution_namespace
from grader.reference import controlnet_in_practice as ref
from grader.weights import load_part
from grader.weights.resolve import reinitialise_


@pytest.fixture(scope="module")
def standins():
    unet = load_part("controlnet_sd15_unet_model")[0]
    net = load_part("controlnet_model")[0]
    other = copy.deepcopy(net)
    reinitialise_(other, seed=7)
    return unet, net, other


def _pipeline(unet, nets):
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.controlnet.pipeline_controlnet import StableDiffusionControlNetPipeline

    transformers.logging.set_verbosity_error()
    vae = AutoencoderKL(block_out_channels=(4, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=2,
                        layers_per_block=1)
    pipe = StableDiffusionControlNetPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, controlnet=nets,
                                             scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, nets, T, scales, starts, ends, guess=False):
    heard, unet_res = [], []
    hooks = [net.register_forward_pre_hook(
        lambda m, a, kw, k=k: heard.append((k, kw["conditioning_scale"], kw["sample"].shape[0], kw["guess_mode"])),
        with_kwargs=True) for k, net in enumerate(nets)]
    hooks.append(pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: unet_res.append(kw["mid_block_additional_residual"]), with_kwargs=True))
    images = [torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(k)) for k in range(len(nets))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe(prompt_embeds=torch.randn(1, 6, 12), negative_prompt_embeds=torch.randn(1, 6, 12), image=images,
             height=32, width=32, num_inference_steps=T, guidance_scale=5.0, output_type="latent", guess_mode=guess,
             controlnet_conditioning_scale=list(scales), control_guidance_start=list(starts),
             control_guidance_end=list(ends))
    for h in hooks:
        h.remove()
    return heard, unet_res


@pytest.mark.parametrize("T,scales,starts,ends", [
    (6, [0.8, 0.5], [0.0, 0.4], [0.6, 1.0]),
    (10, [1.0, 0.7], [0.2, 0.0], [0.7, 0.3]),          # boundaries: i/T == start, (i+1)/T == end
    (7, [0.9, 1.3], [0.15, 0.5], [0.85, 0.95]),
])
def test_schedule_is_what_the_pipeline_passes_each_controlnet(standins, T, scales, starts, ends):
    unet, net, other = standins
    pipe = _pipeline(unet, [net, other])
    heard, _ = _run(pipe, pipe.controlnet.nets, T, scales, starts, ends)
    used = torch.tensor([[s for k, s, _, _ in heard if k == n] for n in range(2)]).T
    torch.testing.assert_close(used.float(), ref.control_schedule(T, scales, starts, ends), rtol=0, atol=0)
    assert len(heard) == 2 * T  # a switched-off ControlNet still runs, with scale 0
    assert any(s == 0.0 for _, s, _, _ in heard)


def test_guess_mode_runs_the_controlnets_on_the_conditional_half_only(standins):
    unet, net, other = standins
    pipe = _pipeline(unet, [net, other])
    heard, unet_res = _run(pipe, pipe.controlnet.nets, 4, [1.0, 1.0], [0.0, 0.0], [1.0, 1.0], guess=True)
    assert {b for _, _, b, _ in heard} == {1} and all(g for _, _, _, g in heard)
    for mid in unet_res:  # the unconditional half of the CFG batch gets zero residuals
        assert mid.shape[0] == 2 and mid[0].abs().max() == 0 and mid[1].abs().max() > 0
    heard, _ = _run(pipe, pipe.controlnet.nets, 4, [1.0, 1.0], [0.0, 0.0], [1.0, 1.0], guess=False)
    assert {b for _, _, b, _ in heard} == {2}
    src = inspect.getsource(type(pipe).prepare_image)
    assert "if do_classifier_free_guidance and not guess_mode:" in src and "torch.cat([image] * 2)" in src


def test_canny_reference_is_what_prepare_image_hands_the_controlnet(standins):
    from PIL import Image

    import cv2

    unet, net, _ = standins
    pipe = _pipeline(unet, net)
    image = scene(4, 48, 80)
    edges = cv2.Canny(image, 100, 200)
    assert set(np.unique(edges)) <= {0, 255}
    pil = Image.fromarray(np.concatenate([edges[:, :, None]] * 3, axis=2))
    prepared = pipe.prepare_image(pil, width=80, height=48, batch_size=1, num_images_per_prompt=1,
                                  device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(prepared, ref.canny_control_image(image, 100, 200), rtol=0, atol=0)
    assert prepared.shape == (1, 3, 48, 80) and prepared.min() == 0 and prepared.max() == 1
    cfg = pipe.control_image_processor.config
    assert cfg.do_normalize is False and cfg.do_convert_rgb is True
    # Canny on the RGB image is not Canny on its grey version (the notebook's convention matters).
    grey = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
    assert not np.array_equal(grey, edges)


def test_depth_reference_properties():
    depth = depth_scene(3, 2, 24, 40)
    out = ref.depth_control_image(depth)
    assert out.shape == (2, 3, 24, 40) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    for b in range(2):
        d, x = depth[b].flatten(), out[b, 0].flatten()
        lo, hi = np.percentile(d.numpy(), 2), np.percentile(d.numpy(), 85)
        assert torch.quantile(d.double(), 0.02).item() == pytest.approx(lo, rel=1e-12)
        assert (x[d <= float(lo)] == 1).all() and (x[d >= float(hi)] == 0).all()   # near bright, far black
        order = torch.argsort(d)
        assert (x[order][1:] <= x[order][:-1] + 1e-7).all()                         # monotone: nearer is brighter


def test_openpose_reference_properties():
    assert len(ref.LIMB_SEQ) == 17 and len(ref.COLORS) == 18 and len(ref.KEYPOINTS) == 18
    assert ref.COLORS[0] == [255, 0, 0]                       # joint 1 (nose) is pure red, in RGB
    H, W = 256, 256                                            # large enough that joints do not overlap
    k = torch.tensor(TEMPLATE, dtype=torch.float64)
    img = (ref.openpose_image(k, H, W)[0] * 255).round().to(torch.uint8)
    x, y = int(k[0, 0] * W), int(k[0, 1] * H)
    assert img[:, y, x].tolist() == [255, 0, 0]              # a joint on top, full colour, RGB order
    # the middle of limb 13 (neck -> nose, COLORS[12]) is drawn at 60%: int(c * 0.6)
    mid = ((k[1] + k[0]) / 2 * torch.tensor([W, H])).long()
    colours = {tuple(img[:, mid[1] + dy, mid[0] + dx].tolist()) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert tuple(int(c * 0.6) for c in ref.COLORS[12]) in colours
    missing = k.clone()
    missing[4] = float("nan")                                  # right wrist: its joint and limb 4 disappear
    a, b = ref.openpose_image(k, H, W), ref.openpose_image(missing, H, W)
    assert not torch.equal(a, b)
    wrist = (k[4] * torch.tensor([W, H])).long()
    assert b[0, :, wrist[1], wrist[0]].abs().max() < a[0, :, wrist[1], wrist[0]].abs().max()


def test_notebook_gives_the_reference_conventions():
    ns = solution_namespace("02_controlnet_in_practice")
    assert ns["LIMB_SEQ"] == ref.LIMB_SEQ and ns["COLORS"] == ref.COLORS
    k = skeleton(1, 64, 128, missing=2)
    for name in ("draw_limb", "draw_joint"):
        assert inspect.signature(ns[name]).parameters.keys() == inspect.signature(getattr(ref, name)).parameters.keys()
    torch.testing.assert_close(ns["openpose_image"](k, 64, 128), ref.openpose_image(k, 64, 128), rtol=0, atol=0)


def test_multi_reference_sums_scaled_residuals(standins):
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    _, net, other = standins
    x, t, text = torch.randn(2, 4, 8, 12), torch.tensor([5, 600]), torch.randn(2, 6, 12)
    imgs = [torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)]
    down, mid = ref.multi_controlnet_residuals([net, other], x, t, text, imgs, [0.7, 1.3])
    with torch.no_grad():
        a = net(x, t, text, imgs[0], conditioning_scale=0.7, return_dict=False)
        b = other(x, t, text, imgs[1], conditioning_scale=1.3, return_dict=False)
    for d, p, q in zip(down, a[0], b[0], strict=True):
        torch.testing.assert_close(d, p + q, rtol=0, atol=0)
    torch.testing.assert_close(mid, a[1] + b[1], rtol=0, atol=0)
    src = inspect.getsource(MultiControlNetModel.forward)
    assert "samples_prev + samples_curr" in src and "mid_block_res_sample += mid_sample" in src


def test_guess_mode_ramp_is_the_models_own(standins):
    _, net, _ = standins
    x, t, text, img = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.randn(1, 6, 12), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        plain = net(x, t, text, img, conditioning_scale=1.0, return_dict=False)
        guess = net(x, t, text, img, conditioning_scale=0.6, guess_mode=True, return_dict=False)
    ramp = ref.guess_mode_scales(len(plain[0]), 0.6)
    for k, (p, g) in enumerate(zip(plain[0] + [plain[1]], guess[0] + [guess[1]])):
        torch.testing.assert_close(g, p * ramp[k], rtol=1e-6, atol=1e-7)
    assert "torch.logspace(-1, 0, len(down_block_res_samples) + 1" in inspect.getsource(type(net).forward)
    # the original repository's 0.825 ** (12 - i) is the same ramp to within 1% (13 residuals)
    original = torch.tensor([0.825 ** (12 - i) for i in range(13)])
    assert ((original - ref.guess_mode_scales(12, 1.0)).abs() / original).max() < 0.01
    assert "A `guidance_scale` between 3.0 and 5.0 is recommended" in inspect.getsource(type(net).forward)
