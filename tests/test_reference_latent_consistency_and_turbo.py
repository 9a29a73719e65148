"""Lesson 7's references and the facts its notebook states, checked against the installed diffusers."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from grader.reference import latent_consistency_and_turbo as ref


def _close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item()), (a - b).abs().max()


# ---------------------------------------------------------------- scheduler facts
def test_lcm_scheduler_defaults():
    from diffusers import LCMScheduler

    s = LCMScheduler()
    assert s.config.original_inference_steps == 50
    assert s.config.timestep_scaling == 10.0
    assert s.config.prediction_type == "epsilon"
    assert s.config.beta_schedule == "scaled_linear"
    assert s.config.num_train_timesteps == 1000


@pytest.mark.parametrize("scaling", [10.0, 1.0, 37.5])
def test_scalings_match_the_scheduler(scaling):
    from diffusers import LCMScheduler

    s = LCMScheduler(timestep_scaling=scaling)
    t = torch.tensor([0, 1, 19, 259, 999])
    c_skip, c_out = ref.lcm_scalings(t, scaling)
    for i, ti in enumerate(t):
        e_skip, e_out = s.get_scalings_for_boundary_condition_discrete(ti)
        _close(c_skip[i], e_skip)
        _close(c_out[i], e_out)
    # boundary condition: f(x, 0) = x
    assert c_skip[0] == 1 and c_out[0] == 0


def test_scalings_are_not_the_consistency_model_ones():
    """Lesson 6's c_skip uses σ - σ_min on EDM sigmas; LCM's uses the scaled discrete timestep."""
    from diffusers import CMStochasticIterativeScheduler

    cm = CMStochasticIterativeScheduler()
    cm_skip, _ = cm.get_scalings_for_boundary_condition(torch.tensor(2.0))
    lcm_skip, _ = ref.lcm_scalings(torch.tensor([2]))
    assert abs(float(cm_skip) - float(lcm_skip)) > 1e-3


@pytest.mark.parametrize("n,orig,train", [(4, 50, 1000), (1, 50, 1000), (8, 50, 1000), (3, 30, 1000),
                                          (7, 50, 1000), (4, 20, 500), (6, 13, 1000), (50, 50, 1000)])
def test_timesteps_match_set_timesteps(n, orig, train):
    from diffusers import LCMScheduler

    s = LCMScheduler(num_train_timesteps=train)
    s.set_timesteps(n, original_inference_steps=orig)
    got = ref.lcm_timesteps(n, orig, train)
    assert torch.equal(got, s.timesteps), (got, s.timesteps)


def test_default_four_step_grid():
    assert ref.lcm_timesteps(4).tolist() == [999, 759, 499, 259]


def _noises(g_seed, shape, count):
    g = torch.Generator().manual_seed(g_seed)
    return [torch.randn(shape, generator=g) for _ in range(count)]


@pytest.mark.parametrize("n,orig,scaling", [(4, 50, 10.0), (3, 30, 2.0), (1, 50, 10.0)])
def test_step_matches_the_scheduler_and_renoises_except_last(n, orig, scaling):
    from diffusers import LCMScheduler

    s = LCMScheduler(timestep_scaling=scaling)
    s.set_timesteps(n, original_inference_steps=orig)
    shape = (2, 4, 3, 5)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    mine = x.clone()
    g = torch.Generator().manual_seed(7)
    noises = _noises(7, shape, n)
    for i, t in enumerate(s.timesteps):
        eps = torch.randn(shape, generator=torch.Generator().manual_seed(100 + i))
        prev, den = s.step(eps, t, x, generator=g, return_dict=False)
        last = i == n - 1
        p2, d2 = ref.lcm_step(eps, int(t), mine, s.alphas_cumprod, None if last else noises[i],
                              None if last else int(s.timesteps[i + 1]), scaling)
        _close(den, d2)
        _close(prev, p2)
        if last:
            assert torch.equal(prev, den)  # no noise after the last step
        x, mine = prev, p2


def _tiny_unet(cond_dim=6):
    from diffusers import UNet2DConditionModel

    from grader.weights.resolve import reinitialise_

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=12, attention_head_dim=2,
        norm_num_groups=4, in_channels=4, out_channels=4, sample_size=8, time_cond_proj_dim=cond_dim,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    reinitialise_(unet, 3)
    return unet.eval()


def _pipe(unet, scheduler):
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("cond_dim,gs", [(6, 8.5), (7, 3.0)])
def test_pipeline_loop_equals_reference_loop(cond_dim, gs):
    """The whole LCM pipeline (latents out) = our loop with our step and our w-embedding."""
    from diffusers import LCMScheduler

    unet = _tiny_unet(cond_dim)
    pe = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))
    lat = torch.randn(2, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = _pipe(unet, LCMScheduler())(prompt_embeds=pe, latents=lat.clone(), num_inference_steps=4, guidance_scale=gs,
                                          output_type="latent", generator=torch.Generator().manual_seed(9),
                                          height=16, width=16).images
        s = LCMScheduler()
        s.set_timesteps(4)
        w = ref.guidance_features(torch.full((2,), gs), cond_dim)
        mine = ref.lcm_sample(unet, lat.clone(), pe, s.timesteps, s.alphas_cumprod, _noises(9, lat.shape, 3),
                              timestep_cond=w)
    _close(out, mine, 1e-3)


# ---------------------------------------------------------------- guidance embedding
@pytest.mark.parametrize("dim", [256, 6, 7, 32])
def test_guidance_features_match_the_pipeline(dim):
    from diffusers import LatentConsistencyModelPipeline

    gs = torch.tensor([1.0, 2.5, 8.5, 15.0])
    expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, gs - 1, embedding_dim=dim)
    # float32 angles up to 1.4e4 rad in diffusers: agreement to ~1e-3, not 1e-6
    _close(ref.guidance_features(gs, dim), expected, 2e-3)
    small = torch.tensor([1.0, 1.002])  # small angles: float32 is exact enough
    _close(ref.guidance_features(small, dim),
           LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, small - 1, embedding_dim=dim), 1e-5)


def test_pipeline_embeds_guidance_minus_one_and_defaults():
    from diffusers import LatentConsistencyModelPipeline

    src = inspect.getsource(LatentConsistencyModelPipeline.__call__)
    assert "torch.tensor(self.guidance_scale - 1)" in src
    assert "time_cond_proj_dim" in src
    sig = inspect.signature(LatentConsistencyModelPipeline.__call__).parameters
    assert sig["num_inference_steps"].default == 4 and sig["guidance_scale"].default == 8.5
    emb = inspect.getsource(LatentConsistencyModelPipeline.get_guidance_scale_embedding)
    assert "w = w * 1000.0" in emb and "[torch.sin(emb), torch.cos(emb)]" in emb


def test_lcm_pipeline_has_no_cfg_batch():
    from diffusers import LatentConsistencyModelPipeline

    assert "return False" in inspect.getsource(LatentConsistencyModelPipeline.do_classifier_free_guidance.fget)


def test_time_embedding_matches_timestep_embedding_with_cond_proj():
    unet = _tiny_unet(7)
    t_feat = unet.time_proj(torch.tensor([999, 259, 19]))
    gs = torch.tensor([8.5, 1.0, 4.0])
    w, emb = ref.lcm_time_embedding(unet.time_embedding, t_feat, gs)
    with torch.no_grad():
        expected = unet.time_embedding(t_feat, condition=w)
    _close(emb, expected, 1e-5)
    # cond_proj maps the w-embedding to the width of the timestep sinusoid, before linear_1
    assert unet.time_embedding.cond_proj.weight.shape == (unet.time_embedding.linear_1.in_features, 7)
    assert unet.time_embedding.cond_proj.bias is None


def test_sd15_timestep_features_flip_and_shift():
    unet = _tiny_unet()
    assert unet.time_proj.flip_sin_to_cos is True and unet.time_proj.downscale_freq_shift == 0


# ---------------------------------------------------------------- LoRA
def _lora_for(unet, ranks=(2, 3), seed=0):
    from grader.exercises.latent_consistency_and_turbo import lora_state_dict_for

    return lora_state_dict_for(unet, ranks, torch.Generator().manual_seed(seed), "cpu")


@pytest.mark.parametrize("alpha,scale,ranks", [(4.0, 0.7, (2, 3)), (8.0, 1.0, (4,)), (1.0, 1.5, (1, 2, 5))])
def test_fused_weights_match_diffusers_lora_loading_and_fusing(alpha, scale, ranks):
    pytest.importorskip("peft")
    unet = _tiny_unet()
    sd = _lora_for(unet, ranks)
    expected = copy.deepcopy(unet)
    expected.load_lora_adapter({f"unet.{k}": v for k, v in sd.items()}, prefix="unet", adapter_name="lcm",
                               network_alphas={f"unet.{n}.alpha": alpha for n in ref.lora_targets(sd)})
    expected.fuse_lora(lora_scale=scale)
    fused = ref.fused_weights(unet, sd, alpha, scale)
    convs = 0
    for name, w in fused.items():
        base = expected.get_submodule(name).base_layer
        _close(w, base.weight, 1e-5)
        convs += isinstance(base, torch.nn.Conv2d) and base.kernel_size == (3, 3)
    assert convs > 0  # 3x3 convolutions carry LoRA too
    mine = ref.fuse_lora(copy.deepcopy(unet), sd, alpha, scale)
    x, t, e, c = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 12), torch.randn(2, 6)
    with torch.no_grad():
        _close(mine(x, t, e, timestep_cond=c).sample, expected(x, t, e, timestep_cond=c).sample, 1e-4)


def test_lcm_lora_training_script_convention_no_w_embedding():
    """The plain SD1.5 UNet (what LCM-LoRA patches) has no time_cond_proj: nothing to feed w to."""
    from diffusers import UNet2DConditionModel

    assert inspect.signature(UNet2DConditionModel.__init__).parameters["time_cond_proj_dim"].default is None


# ---------------------------------------------------------------- ADD
def _add_inputs(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    real = [torch.randn(B, n, generator=g) * 2 for n in (4, 9)]
    fake = [torch.randn(B, n, generator=g) * 2 for n in (4, 9)]
    xs, xt = torch.randn(B, 4, 3, 5, generator=g), torch.randn(B, 4, 3, 5, generator=g)
    return real, fake, xs, xt, torch.rand(B, generator=g), 2.5


def test_add_losses_match_the_loop_implementation():
    for seed in range(3):
        args = _add_inputs(seed)
        g, d = ref.add_losses(*args)
        g2, d2 = ref.add_losses_loops(*args)
        _close(g, g2, 1e-5)
        _close(d, d2, 1e-5)


def test_add_losses_analytic_properties():
    real, fake, xs, xt, c, lam = _add_inputs(1)
    # a discriminator that is right with margin 1 everywhere pays nothing
    _, d = ref.add_losses([torch.full_like(r, 3.0) for r in real], [torch.full_like(f, -2.0) for f in fake], xs, xt, c, lam)
    assert d == 0
    # a confused discriminator (all logits 0) pays 1 per head and side
    _, d = ref.add_losses([torch.zeros_like(r) for r in real], [torch.zeros_like(f) for f in fake], xs, xt, c, lam)
    assert abs(float(d) - 2 * len(real)) < 1e-6
    # a student equal to the teacher has only the adversarial term
    g, _ = ref.add_losses(real, fake, xs, xs.clone(), c, lam)
    _close(g, -sum(f.mean() for f in fake))
    # the distillation term is linear in lam and in c(t)
    g1, _ = ref.add_losses(real, fake, xs, xt, c, 1.0)
    g2, _ = ref.add_losses(real, fake, xs, xt, c, 2.0)
    g0, _ = ref.add_losses(real, fake, xs, xt, c, 0.0)
    _close(g2 - g1, g1 - g0)
    _close(g1 - g0, (c * ((xs - xt) ** 2).flatten(1).sum(1)).mean())


def test_sdxl_turbo_facts_one_step_no_cfg():
    """guidance_scale <= 1 switches classifier-free guidance off in the SDXL pipeline (one UNet call per step)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

    src = inspect.getsource(StableDiffusionXLPipeline.do_classifier_free_guidance.fget)
    assert "self._guidance_scale > 1" in src
    s = EulerAncestralDiscreteScheduler(timestep_spacing="trailing", beta_schedule="scaled_linear",
                                        beta_start=0.00085, beta_end=0.012)
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [999.0]
    s2 = EulerAncestralDiscreteScheduler(timestep_spacing="leading", steps_offset=1)
    s2.set_timesteps(1)
    assert s2.timesteps.tolist() == [1.0]  # "leading" would start a 1-step sample from almost no noise
    assert math.isclose(float(s.sigmas[0]), float(((1 - s.alphas_cumprod[-1]) / s.alphas_cumprod[-1]).sqrt()), rel_tol=1e-5)


# ---------------------------------------------------------------- the real checkpoint's loading path
def test_real_time_embedding_is_read_alone_from_the_real_layout(tmp_path, monkeypatch):
    """A file laid out as `hf download SimianLuo/LCM_Dreamshaper_v7` writes it (config + unet safetensors):
    the part reads only `time_embedding.*`, at the real shapes (320 -> 1280, cond_proj 256 -> 320)."""
    import json

    from safetensors.torch import save_file

    from grader.weights.load import load_part
    from grader.weights.registry import CHECKPOINTS  # (importing grader.checkpoints.<lesson> first would
    #                                                   leave the registry half-gathered)
    from grader.weights.resolve import resolve

    ck = CHECKPOINTS["lcm_dreamshaper_v7"]
    folder = tmp_path / ck.repo_id / ck.subfolder
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **ck.real_config}))
    g = torch.Generator().manual_seed(0)
    tensors = {"time_embedding.linear_1.weight": torch.randn(1280, 320, generator=g),
               "time_embedding.linear_1.bias": torch.randn(1280, generator=g),
               "time_embedding.linear_2.weight": torch.randn(1280, 1280, generator=g),
               "time_embedding.linear_2.bias": torch.randn(1280, generator=g),
               "time_embedding.cond_proj.weight": torch.randn(320, 256, generator=g),
               "conv_in.weight": torch.randn(320, 4, 3, 3, generator=g)}   # another part: not read
    save_file(tensors, str(folder / ck.weights_name))
    module, source = load_part("lcm_time_embedding", source=resolve(ck.name, weights_dir=tmp_path, standin_only=False))
    assert source.kind == "real" and "REAL SimianLuo/LCM_Dreamshaper_v7" in source.banner()
    assert module.cond_proj.weight.shape == (320, 256) and module.linear_1.weight.shape == (1280, 320)
    torch.testing.assert_close(module.cond_proj.weight, tensors["time_embedding.cond_proj.weight"])
    # and the exercise's reference runs on it with the real widths
    feats = torch.randn(2, 320)
    w, emb = ref.lcm_time_embedding(module, feats, torch.tensor([8.5, 2.0]))
    assert w.shape == (2, 256) and emb.shape == (2, 1280)


def test_one_euler_ancestral_step_to_zero_is_the_x0_prediction():
    """The notebook's Turbo demo: 1 step, guidance 0 = one UNet call and x - sigma * eps_hat(x / sqrt(sigma^2 + 1), 999)."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from grader.weights.resolve import reinitialise_

    unet = UNet2DConditionModel.from_config(_tiny_unet().config, time_cond_proj_dim=None).eval()
    reinitialise_(unet, 5)
    calls = []
    unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    sched = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                            timestep_spacing="trailing", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pe, lat = torch.randn(2, 5, 12), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        out = pipe(prompt_embeds=pe, num_inference_steps=1, guidance_scale=0.0, output_type="latent",
                   latents=lat.clone(), height=32, width=32, generator=torch.Generator().manual_seed(0)).images
        assert len(calls) == 1
        sigma = pipe.scheduler.sigmas[0]
        x = lat * pipe.scheduler.init_noise_sigma
        by_hand = x - sigma * unet(x / (sigma ** 2 + 1) ** 0.5, 999, encoder_hidden_states=pe).sample
    _close(out, by_hand, 1e-6)


def test_lora_standin_file_is_a_lora_diffusers_loads_and_fuses_like_ours():
    """The stand-in for latent-consistency/lcm-lora-sdv1-5: diffusers' naming, loadable, fused as ref.fused_weights."""
    pytest.importorskip("peft")
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from grader.weights.registry import CHECKPOINTS
    from grader.weights.resolve import resolve

    ck = CHECKPOINTS["lcm_lora_sdv15"]
    assert ck.license == "openrail++" and ck.weights_name == "pytorch_lora_weights.safetensors"
    sd = load_file(str(resolve("lcm_lora_sdv15").weight_files[0]))
    assert all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in sd)
    unet = UNet2DConditionModel(**ck.standin_config["unet"]).eval()
    theirs = copy.deepcopy(unet)
    theirs.load_lora_adapter(dict(sd), prefix="unet", adapter_name="lcm")
    theirs.fuse_lora(lora_scale=1.0)
    ours = ref.fused_weights(unet, {k[len("unet."):]: v for k, v in sd.items()}, network_alpha=ck.standin_config["rank"],
                             lora_scale=1.0)   # no alpha tensors: diffusers takes alpha = rank
    for name, w in ours.items():
        _close(w, theirs.get_submodule(name).base_layer.weight, 1e-5)
