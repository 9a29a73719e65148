"""Lesson 5's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file checks them against the installed
diffusers, so a diffusers upgrade that changes one fails here first. (The training-script
lines the lesson quotes live in diffusers' examples/, which the wheel does not ship: they
are copied, marked, in grader/reference/flow_matching.py.)
"""

import inspect
import math
import warnings

import numpy as np
import pytest
import torch

from grader.reference import flow_matching as ref


def _sched(**kw):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**kw)


# ---------------------------------------------------------------- forward process and target
def test_scale_noise_is_the_straight_path():
    from diffusers import FlowMatchEulerDiscreteScheduler

    assert "sample = sigma * noise + (1.0 - sigma) * sample" in inspect.getsource(FlowMatchEulerDiscreteScheduler.scale_noise)
    x0, noise = torch.randn(3, 2, 4, 3), torch.randn(3, 2, 4, 3)
    sigma = torch.tensor([0.9, 0.25, 0.6])
    x_t, target = ref.flow_interpolate(x0, noise, sigma)
    s = sigma[:, None, None, None]
    torch.testing.assert_close(x_t, s * noise + (1 - s) * x0, rtol=0, atol=1e-7)
    torch.testing.assert_close(target, noise - x0)
    # with the scheduler's own training table, as img2img pipelines call it
    sched = _sched(shift=3.0)
    t = sched.timesteps[[10, 500, 990]]
    got = sched.scale_noise(x0, t, noise)
    s = sched.sigmas[[10, 500, 990]][:, None, None, None]
    torch.testing.assert_close(got, s * noise + (1 - s) * x0)


# ---------------------------------------------------------------- loss weighting and timestep density
def test_loss_weightings_are_the_stated_formulas():
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    s = torch.linspace(0.05, 0.95, 19)
    torch.testing.assert_close(compute_loss_weighting_for_sd3("sigma_sqrt", s), s ** -2.0)
    torch.testing.assert_close(compute_loss_weighting_for_sd3("cosmap", s), 2 / (math.pi * (1 - 2 * s + 2 * s ** 2)))
    for other in ("logit_normal", "mode", "none", "uniform"):
        torch.testing.assert_close(compute_loss_weighting_for_sd3(other, s), torch.ones_like(s))


def test_cosmap_weighting_is_the_cosmap_density():
    # SD3's CosMap: t = 1 - 1 / (tan(pi u / 2) + 1); its density |d u / d t| is the weighting above.
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    u = 2 / math.pi * torch.atan(1 / (1 - t) - 1)      # inverse of the map
    dt = 1e-6
    u2 = 2 / math.pi * torch.atan(1 / (1 - (t + dt)) - 1)
    torch.testing.assert_close((u2 - u) / dt, 2 / (math.pi * (1 - 2 * t + 2 * t ** 2)), rtol=1e-4, atol=0)


def test_reference_loss_is_the_per_sample_weighted_mean():
    pred, x0, noise = torch.randn(3, 2, 5, 3), torch.randn(3, 2, 5, 3), torch.randn(3, 2, 5, 3)
    sigma = torch.tensor([0.2, 0.5, 0.7])
    got = ref.flow_matching_loss(pred, x0, noise, sigma, "sigma_sqrt")
    w = sigma ** -2.0
    torch.testing.assert_close(got, w * ((pred - (noise - x0)) ** 2).reshape(3, -1).mean(1))


@pytest.mark.parametrize("scheme,kw", [("logit_normal", dict(logit_mean=0.3, logit_std=1.7)),
                                       ("mode", dict(mode_scale=1.29)), ("none", {})])
def test_density_is_the_stated_formula_of_the_stated_draws(scheme, kw):
    from diffusers.training_utils import compute_density_for_timestep_sampling

    for B in (3, 16, 100):
        g = torch.Generator().manual_seed(B)
        u = compute_density_for_timestep_sampling(scheme, B, logit_mean=kw.get("logit_mean"), logit_std=kw.get("logit_std"),
                                                  mode_scale=kw.get("mode_scale"), generator=g)
        d = ref.draws(scheme, B, B)
        if scheme == "logit_normal":
            expected = torch.sigmoid(kw["logit_mean"] + kw["logit_std"] * d)
        elif scheme == "mode":
            expected = 1 - d - kw["mode_scale"] * (torch.cos(math.pi * d / 2) ** 2 - 1 + d)
        else:
            expected = d
        torch.testing.assert_close(u, expected, rtol=1e-6, atol=1e-6)


def test_mode_density_is_symmetric_so_the_table_reversal_does_not_matter():
    v = torch.rand(1000, dtype=torch.float64)
    f = lambda v: 1 - v - 1.29 * (torch.cos(math.pi * v / 2) ** 2 - 1 + v)  # noqa: E731
    torch.testing.assert_close(f(1 - v), 1 - f(v))


# ---------------------------------------------------------------- the scheduler's tables
def test_training_table_is_descending_and_shifted():
    N, s = 1000, 3.0
    sched = _sched(num_train_timesteps=N, shift=s)
    i = torch.arange(N)
    base = (N - i).float() / N
    torch.testing.assert_close(sched.sigmas, s * base / (1 + (s - 1) * base))
    torch.testing.assert_close(sched.timesteps, sched.sigmas * N)
    assert sched.sigma_max == 1.0 and abs(sched.sigma_min - 3 * 0.001 / (1 + 2 * 0.001)) < 1e-8
    dyn = _sched(num_train_timesteps=N, shift=s, use_dynamic_shifting=True)
    torch.testing.assert_close(dyn.sigmas, base)  # dynamic shifting: __init__ leaves the table unshifted
    assert abs(dyn.sigma_min - 1 / N) < 1e-8


def test_reference_training_sigmas_index_the_table():
    u = torch.rand(50)
    for N, s in ((1000, 3.0), (100, 1.5)):
        sched = _sched(num_train_timesteps=N, shift=s)
        torch.testing.assert_close(ref.training_sigmas(u, N, s), sched.sigmas[(u * N).long()])


def test_set_timesteps_conventions():
    from diffusers import FlowMatchEulerDiscreteScheduler

    src = inspect.getsource(FlowMatchEulerDiscreteScheduler.set_timesteps)
    assert "sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)" in src
    assert "sigmas = self.time_shift(mu, 1.0, sigmas)" in src
    assert "timesteps = sigmas * self.config.num_train_timesteps" in src
    assert "torch.cat([sigmas, torch.zeros(1, device=sigmas.device)])" in src
    assert "self._sigma_to_t(self.sigma_max)" in src and "self._sigma_to_t(self.sigma_min)" in src
    params = inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters
    assert params["time_shift_type"].default == "exponential"
    assert (params["base_shift"].default, params["max_shift"].default) == (0.5, 1.15)
    assert (params["base_image_seq_len"].default, params["max_image_seq_len"].default) == (256, 4096)
    # the static shift, through set_timesteps, on given sigmas
    sig = np.linspace(1.0, 0.1, 7)
    t, s = ref.flow_schedule(7, shift=3.0, sigmas=sig.tolist())
    torch.testing.assert_close(s[:-1], torch.from_numpy(3 * sig / (1 + 2 * sig)).float())
    assert s[-1] == 0 and len(s) == 8
    # the last inference sigma of a static-shift default schedule is shifted twice
    _, s = ref.flow_schedule(28, shift=3.0)
    once = 3 * 0.001 / (1 + 2 * 0.001)
    assert abs(s[-2].item() - 3 * once / (1 + 2 * once)) < 1e-6


def test_exponential_time_shift_is_the_static_shift_with_exp_mu():
    sig = np.linspace(1.0, 1 / 9, 9).tolist()
    for mu in (0.5, 0.83, 1.15):
        _, dynamic = ref.flow_schedule(9, mu=mu, sigmas=sig)
        _, static = ref.flow_schedule(9, shift=math.exp(mu), sigmas=sig)
        torch.testing.assert_close(dynamic, static, rtol=1e-6, atol=1e-6)
    sched = _sched(use_dynamic_shifting=True)
    t = torch.tensor([0.2, 0.5, 0.9])
    torch.testing.assert_close(sched.time_shift(0.7, 1.0, t), math.exp(0.7) / (math.exp(0.7) + (1 / t - 1)))


def test_default_sigmas_helper_matches_set_timesteps():
    for kw, dyn in ((dict(shift=3.0), False), (dict(mu=0.9), True)):
        base = ref.default_sigmas(6, shift=kw.get("shift", 1.0), dynamic=dyn)
        _, got = ref.flow_schedule(6, **kw)
        shifted = (math.exp(0.9) / (math.exp(0.9) + (1 / base - 1))) if dyn else 3 * base / (1 + 2 * base)
        torch.testing.assert_close(got[:-1], shifted.float(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- Euler
def test_step_is_euler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    src = inspect.getsource(FlowMatchEulerDiscreteScheduler.step)
    assert "dt = sigma_next - sigma" in src and "prev_sample = sample + dt * model_output" in src
    x, v = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(ref.euler_step(x, v, 0.7, 0.2), x + (0.2 - 0.7) * v)
    torch.testing.assert_close(ref.euler_step(x, v, 0.3, 0.0), x - 0.3 * v)


def test_euler_sample_reference_is_the_plain_loop():
    sigmas = ref.flow_schedule(5, shift=3.0)[1]
    field = lambda x, s: torch.sin(x) * (1 + s[:, None])  # noqa: E731
    x0 = torch.randn(3, 4)
    x = x0
    for i in range(5):
        x = x + (sigmas[i + 1] - sigmas[i]) * field(x, sigmas[i].expand(3))
    torch.testing.assert_close(ref.euler_sample(field, x0, sigmas), x)


def test_ddim_step_equals_euler_step_on_the_straight_path():
    x, v = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for s, s2 in ((0.9, 0.4), (1.0, 0.0), (0.3, 0.29)):
        x0_hat, eps_hat = x - s * v, x + (1 - s) * v
        torch.testing.assert_close((1 - s2) * x0_hat + s2 * eps_hat, x + (s2 - s) * v)


def test_velocity_from_score_formula():
    # 1-D Gaussian data N(m, c^2): p_sigma is Gaussian, so the score and E[eps - x0 | x] are exact.
    m, c = 1.3, 0.7
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for s in (0.2, 0.5, 0.8):
        a = 1 - s
        var = a ** 2 * c ** 2 + s ** 2
        score = -(x - a * m) / var
        x0_hat = m + a * c ** 2 / var * (x - a * m)
        eps_hat = (x - a * x0_hat) / s
        torch.testing.assert_close(eps_hat - x0_hat, -(x + s * score) / (1 - s))
        torch.testing.assert_close(eps_hat, -s * score)


# ---------------------------------------------------------------- pipelines
def _flux_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers.pipelines.flux import pipeline_flux
    return pipeline_flux


def test_calculate_shift_copy_and_packed_length_match_the_flux_pipeline():
    pf = _flux_module()
    pipe = pf.FluxPipeline.__new__(pf.FluxPipeline)
    pipe.vae_scale_factor = 8
    for H, W in ((1024, 1024), (1000, 744), (512, 768), (1023, 1025), (256, 256)):
        latents, _ = pipe.prepare_latents(1, 16, H, W, torch.float32, "cpu", torch.Generator().manual_seed(0))
        assert latents.shape[1] == ref.flux_image_seq_len(H, W)
        for args in ((), (1024, 4096, 0.95, 2.05)):
            assert pf.calculate_shift(latents.shape[1], *args) == ref.calculate_shift(latents.shape[1], *args)
    assert ref.flux_image_seq_len(1024, 1024) == 4096
    assert ref.flux_mu(1024, 1024) == pytest.approx(1.15) and ref.flux_mu(256, 256) == pytest.approx(0.5)


def test_pipelines_call_the_scheduler_as_stated():
    pf = _flux_module()
    src = inspect.getsource(pf.FluxPipeline.__call__)
    assert "np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)" in src
    assert "image_seq_len = latents.shape[1]" in src
    assert "timestep = t.expand(latents.shape[0])" in src and "timestep=timestep / 1000" in src
    assert inspect.signature(pf.FluxPipeline.__call__).parameters["num_inference_steps"].default == 28
    from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

    assert "timestep = timestep.to(hidden_states.dtype) * 1000" in inspect.getsource(FluxTransformer2DModel.forward)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers.pipelines.stable_diffusion_3 import pipeline_stable_diffusion_3 as p3
    params = inspect.signature(p3.StableDiffusion3Pipeline.__call__).parameters
    assert params["sigmas"].default is None and params["num_inference_steps"].default == 28
    assert "timestep = t.expand(latent_model_input.shape[0])" in inspect.getsource(p3.StableDiffusion3Pipeline.__call__)


def test_with_dynamic_shifting_the_static_shift_is_not_used():
    """Flux's scheduler config has shift=3.0 and use_dynamic_shifting=True: set_timesteps(mu=...)
    applies only the time shift, and __init__ leaves the training table (so sigma_min) unshifted."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    src = inspect.getsource(FlowMatchEulerDiscreteScheduler.__init__)
    assert "if not use_dynamic_shifting:" in src
    for kw in (dict(), dict(sigmas=np.linspace(1.0, 1 / 6, 6).tolist())):
        with_shift, without = _sched(shift=3.0, use_dynamic_shifting=True), _sched(use_dynamic_shifting=True)
        with_shift.set_timesteps(6, mu=0.8, **kw)
        without.set_timesteps(6, mu=0.8, **kw)
        torch.testing.assert_close(with_shift.sigmas, without.sigmas, rtol=0, atol=0)
        torch.testing.assert_close(with_shift.sigmas, ref.flow_schedule(6, shift=3.0, mu=0.8, **kw)[1], rtol=0, atol=0)
    assert _sched(shift=3.0, use_dynamic_shifting=True).sigma_min == pytest.approx(1 / 1000)
    assert _sched(shift=3.0).sigma_min == pytest.approx(3 * 0.001 / (1 + 2 * 0.001))


def test_flux_packed_length_with_other_vae_factors_matches_the_pipeline():
    pf = _flux_module()
    for vsf in (4, 8, 16):
        pipe = pf.FluxPipeline.__new__(pf.FluxPipeline)
        pipe.vae_scale_factor = vsf
        for H, W in ((1000, 744), (300, 452), (1360, 776)):
            latents, _ = pipe.prepare_latents(1, 16, H, W, torch.float32, "cpu", torch.Generator().manual_seed(0))
            assert latents.shape[1] == ref.flux_image_seq_len(H, W, vsf)
    src = inspect.getsource(pf.FluxPipeline.__init__)
    assert "self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)" in src
    call = inspect.getsource(pf.FluxPipeline.__call__)
    for key in ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift"):
        assert f'self.scheduler.config.get("{key}"' in call   # the anchors come from the scheduler config


def test_anchor_fallbacks_the_lesson_names():
    """LTX2Pipeline's calculate_shift fallbacks (1024, 4096, 0.95, 2.05), named in the notebook and the cases."""
    import diffusers.pipelines.ltx2.pipeline_ltx2 as p

    src = inspect.getsource(p.LTX2Pipeline.__call__)
    for key, value in (("base_image_seq_len", "1024"), ("max_image_seq_len", "4096"), ("base_shift", "0.95"),
                       ("max_shift", "2.05")):
        assert f'self.scheduler.config.get("{key}", {value})' in src
