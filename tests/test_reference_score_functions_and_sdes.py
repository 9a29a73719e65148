"""Lesson 4's references agree with diffusers, and every convention the lesson states is true.

The notebook states these facts in prose; this file is where they are checked against the
installed diffusers, so a diffusers upgrade that changes one fails here first.
"""

import inspect
import math

import pytest
import torch

from grader.reference import score_functions_and_sdes as ref
from grader.weights import CHECKPOINTS, load_part, resolve


def _g(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


# ---------------------------------------------------------------- 1. the mixture score (no diffusers reference)
def test_gmm_score_of_one_gaussian_is_the_spring():
    x = torch.randn(20, 3, generator=_g())
    mu, s = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([0.7])
    got = ref.gmm_score(x, mu, s, torch.ones(1))
    torch.testing.assert_close(got, (mu - x) / s ** 2, rtol=1e-6, atol=1e-6)


def test_gmm_score_symmetric_midpoint_is_zero_and_far_points_feel_the_nearest_widest():
    means, stds, w = torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5])
    assert ref.gmm_score(torch.zeros(1, 2), means, stds, w).abs().max() < 1e-6
    # next to component 0 and far from component 1: the score is component 0's spring
    x = torch.tensor([[-2.3, 0.4]])
    torch.testing.assert_close(ref.gmm_score(x, means, stds, w), (means[:1] - x) / 0.25, rtol=1e-5, atol=1e-5)


def test_gmm_score_matches_a_finite_difference_of_the_log_density():
    g = _g(3)
    means, stds = torch.randn(4, 2, generator=g, dtype=torch.float64), 0.4 + torch.rand(4, generator=g, dtype=torch.float64)
    w = torch.rand(4, generator=g, dtype=torch.float64) + 0.1
    w = w / w.sum()
    x = torch.randn(10, 2, generator=g, dtype=torch.float64)
    h = 1e-5
    fd = torch.stack([(ref.gmm_log_prob(x + h * e, means, stds, w) - ref.gmm_log_prob(x - h * e, means, stds, w)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(ref.gmm_score(x, means, stds, w), fd, rtol=1e-6, atol=1e-6)


def test_gmm_variant_without_mistakes_is_the_reference():
    g = _g(4)
    means, stds = torch.randn(3, 2, generator=g), 0.4 + torch.rand(3, generator=g)
    w = torch.tensor([0.2, 0.3, 0.5])
    x = torch.randn(8, 2, generator=g)
    torch.testing.assert_close(ref.gmm_score_variant(x, means, stds, w), ref.gmm_score(x, means, stds, w),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 2. score from eps
def test_eps_to_score_is_tweedie_with_ddpm_schedulers_x0_prediction():
    """-eps / sqrt(1 - abar) == (sqrt(abar) x0_hat - x_t) / (1 - abar), x0_hat from DDPMScheduler.step."""
    from diffusers import DDPMScheduler

    unet = load_part("ddpm_unet")[0]
    sched = DDPMScheduler(clip_sample=False)
    x0, noise = torch.rand(2, 3, 8, 8, generator=_g()) * 2 - 1, torch.randn(2, 3, 8, 8, generator=_g(1))
    for t in (50, 400, 900):
        tt = torch.tensor([t, t])
        x_t = sched.add_noise(x0, noise, tt)
        score = ref.ddpm_score(unet, sched.alphas_cumprod, x_t, tt)
        eps = unet(x_t, tt).sample.detach()
        x0_hat = sched.step(eps, t, x_t).pred_original_sample
        ab = sched.alphas_cumprod[t]
        torch.testing.assert_close(score, (ab.sqrt() * x0_hat - x_t) / (1 - ab), rtol=1e-4, atol=1e-4)
        # with the true noise, the conditional score of q(x_t | x0) is -noise / sqrt(1 - abar)
        torch.testing.assert_close((ab.sqrt() * x0 - x_t) / (1 - ab), -noise / (1 - ab).sqrt(), rtol=1e-4, atol=1e-4)


def test_score_sde_vp_converts_eps_to_score_the_same_way():
    from diffusers.schedulers import ScoreSdeVpScheduler

    src = inspect.getsource(ScoreSdeVpScheduler.step_pred)
    assert "score = -score / std" in src


# ---------------------------------------------------------------- 3. VP SDE
def test_vp_mean_std_is_the_copy_in_score_sde_vp():
    from diffusers.schedulers import ScoreSdeVpScheduler

    src = inspect.getsource(ScoreSdeVpScheduler.step_pred)
    assert "log_mean_coeff = -0.25 * t**2 * (self.config.beta_max - self.config.beta_min) - 0.5 * t * self.config.beta_min" in src
    assert "std = torch.sqrt(1.0 - torch.exp(2.0 * log_mean_coeff))" in src
    # and the std step_pred really uses: eps = 1, x = 0 gives x_mean = beta / std * dt
    N, t = 40, torch.tensor([0.03, 0.5, 0.97])
    sched = ScoreSdeVpScheduler(beta_min=0.1, beta_max=20.0)
    sched.set_timesteps(N)
    _, x_mean = sched.step_pred(torch.ones(3, 1), torch.zeros(3, 1), t, generator=_g())
    beta = ref.vp_beta(t, 0.1, 20.0)
    _, std = ref.vp_mean_std(t, 0.1, 20.0)
    torch.testing.assert_close(x_mean[:, 0], -beta / std / N, rtol=1e-5, atol=1e-7)


def test_ddpm_schedule_is_the_vp_sde_with_beta_01_to_20():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler()
    cfg = sched.config
    assert (cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (1000, 1e-4, 0.02, "linear")
    assert abs(sched.betas[0] * 1000 - 0.1) < 1e-6 and abs(sched.betas[-1] * 1000 - 20.0) < 1e-4
    t = torch.arange(1, 1001) / 1000
    mean, _ = ref.vp_mean_std(t, 0.1, 20.0)
    gap = (sched.alphas_cumprod - mean ** 2).abs().max()
    assert gap < 1e-3, gap  # the notebook prints ~8e-4


def test_vp_perturb_matches_ddpm_add_noise_given_the_same_alphabar():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler()
    t = torch.tensor([0.2, 0.7])
    mean, _ = ref.vp_mean_std(t, 0.1, 20.0)
    sched.alphas_cumprod = torch.cat([mean ** 2, sched.alphas_cumprod[2:]])  # steps 0, 1 <- the continuous values
    x0, noise = torch.randn(2, 3, 4, 4, generator=_g()), torch.randn(2, 3, 4, 4, generator=_g(1))
    torch.testing.assert_close(ref.vp_perturb(x0, noise, t, 0.1, 20.0),
                               sched.add_noise(x0, noise, torch.tensor([0, 1])), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- 4. VE SDE
def test_ve_sigma_is_geometric_and_score_sde_ve_defaults():
    from diffusers import ScoreSdeVeScheduler

    sched = ScoreSdeVeScheduler()
    assert (sched.config.sigma_min, sched.config.sigma_max, sched.config.num_train_timesteps) == (0.01, 1348.0, 2000)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(ref.ve_sigma(t, 0.01, 50.0), 0.01 * (50.0 / 0.01) ** t, rtol=1e-5, atol=0)
    # the discrete sigmas add_noise uses are the same curve sampled at i / (N - 1)
    s = ref.ve_scheduler(0.01, 50.0, 11)
    torch.testing.assert_close(s.discrete_sigmas, ref.ve_sigma(torch.arange(11) / 10, 0.01, 50.0), rtol=1e-5, atol=0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=_g()), torch.randn(2, 3, 4, 4, generator=_g(1))
    torch.testing.assert_close(s.add_noise(x0, noise, torch.tensor([3, 10])),
                               ref.ve_perturb(x0, noise, torch.tensor([0.3, 1.0]), 0.01, 50.0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 5. reverse SDE
def test_score_sde_vp_step_is_euler_maruyama():
    from diffusers.schedulers import ScoreSdeVpScheduler

    src = inspect.getsource(ScoreSdeVpScheduler.step_pred)
    assert "dt = -1.0 / len(self.timesteps)" in src and "x_mean = x + drift * dt" in src
    assert "drift = -0.5 * beta_t * x" in src and "diffusion = torch.sqrt(beta_t)" in src
    x, eps = torch.randn(3, 2, 4, 4, generator=_g()), torch.randn(3, 2, 4, 4, generator=_g(1))
    t, N = torch.tensor([0.1, 0.5, 0.9]), 30
    prev, mean = ref.vp_sde_step(eps, x, t, 0.1, 20.0, N, _g(7))
    _, std = ref.vp_mean_std(t, 0.1, 20.0)
    score, beta = -eps / std[:, None, None, None], ref.vp_beta(t, 0.1, 20.0)[:, None, None, None]
    z = torch.randn(x.shape, generator=_g(7))      # randn_tensor's draw from a CPU generator
    expected_mean = x - (-0.5 * beta * x - beta * score) / N
    torch.testing.assert_close(mean, expected_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(prev, expected_mean + beta.sqrt() * math.sqrt(1 / N) * z, rtol=1e-5, atol=1e-5)


def test_score_sde_ve_step_adds_the_variance_between_noise_levels():
    from diffusers import ScoreSdeVeScheduler

    src = inspect.getsource(ScoreSdeVeScheduler.step_pred)
    assert "diffusion = (sigma**2 - adjacent_sigma**2) ** 0.5" in src and "prev_sample_mean = sample - drift" in src
    N = 12
    sched = ref.ve_scheduler(0.01, 50.0, N)
    x, score = torch.randn(2, 3, 4, 4, generator=_g()), torch.randn(2, 3, 4, 4, generator=_g(1))
    for i in (0, 5, N - 1):
        timestep = sched.timesteps[i]
        sigma, adjacent = ref.ve_step_sigmas(sched, timestep, 2)
        assert torch.allclose(sigma, sched.discrete_sigmas[N - 1 - i].expand(2))  # timesteps run 1 -> eps
        prev, mean = ref.ve_sde_step(sched, score, timestep, x, _g(9))
        var = (sigma ** 2 - adjacent ** 2)[:, None, None, None]
        torch.testing.assert_close(mean, x + var * score, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(prev, mean + var.sqrt() * torch.randn(x.shape, generator=_g(9)), rtol=1e-5, atol=1e-5)
    assert ref.ve_step_sigmas(sched, sched.timesteps[N - 1], 1)[1].item() == 0.0  # last step: adjacent sigma 0


def test_randn_tensor_from_a_cpu_generator_is_torch_randn():
    from diffusers.utils.torch_utils import randn_tensor

    a = randn_tensor((2, 3), generator=_g(5), device=torch.device("cpu"), dtype=torch.float32)
    torch.testing.assert_close(a, torch.randn(2, 3, generator=_g(5)), rtol=0, atol=0)


def test_score_sde_schedulers_live_where_the_references_import_them():
    from diffusers import ScoreSdeVeScheduler
    from diffusers.schedulers import ScoreSdeVpScheduler  # deprecated: not exported from the top level

    assert ScoreSdeVpScheduler.__module__ == "diffusers.schedulers.deprecated.scheduling_sde_vp"
    assert ScoreSdeVeScheduler.__module__ == "diffusers.schedulers.scheduling_sde_ve"


# ---------------------------------------------------------------- 6. probability-flow ODE
def test_euler_discrete_step_is_euler_in_sigma():
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    src = inspect.getsource(EulerDiscreteScheduler.step)
    assert "derivative = (sample - pred_original_sample) / sigma_hat" in src
    assert "prev_sample = sample + derivative * dt" in src
    euler, ddpm = EulerDiscreteScheduler(), DDPMScheduler()
    ab = ddpm.alphas_cumprod
    torch.testing.assert_close(euler.sigmas[:-1], ((1 - ab) / ab).sqrt()[euler.timesteps.long()])
    sched = ref.euler_scheduler(8)
    x, d = torch.randn(2, 3, 4, 4, generator=_g()), torch.randn(2, 3, 4, 4, generator=_g(1))
    for i in (0, 3, 7):
        s, s_next = sched.sigmas[i], sched.sigmas[i + 1]
        torch.testing.assert_close(ref.euler_sigma_step(sched, i, x, d), x + (s_next - s) * (x - d) / s)
        # the same step as the probability-flow ODE with sigma as the clock: f = 0, g^2 = 2 sigma, dt = sigma - sigma_next
        score = (d - x) / s ** 2
        torch.testing.assert_close(ref.euler_sigma_step(sched, i, x, d), x + 0.5 * (2 * s) * score * (s - s_next),
                                   rtol=1e-5, atol=1e-5)


def test_vp_ode_step_is_the_sde_mean_with_half_the_score():
    x, eps = torch.randn(3, 2, 4, 4, generator=_g()), torch.randn(3, 2, 4, 4, generator=_g(1))
    t, N = torch.tensor([0.1, 0.5, 0.9]), 30
    _, std = ref.vp_mean_std(t, 0.1, 20.0)
    score, beta = -eps / std[:, None, None, None], ref.vp_beta(t, 0.1, 20.0)[:, None, None, None]
    torch.testing.assert_close(ref.vp_ode_step(eps, x, t, 0.1, 20.0, N),
                               x - (-0.5 * beta * x - 0.5 * beta * score) / N, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 7. DDIM
def test_ddim_is_euler_in_xbar_sigma_and_its_alpha_bookkeeping():
    from diffusers import DDIMScheduler

    src = inspect.getsource(DDIMScheduler.step)
    assert "prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps" in src
    sched = ref.ddim_scheduler(10)
    assert sched.final_alpha_cumprod.item() == 1.0 and sched.config.clip_sample is False
    timesteps = sched.timesteps[torch.tensor([0, 4, 9])]
    a, a_prev = ref.ddim_alpha_bars(sched, timesteps)
    assert a_prev[-1].item() == 1.0
    x, eps = torch.randn(3, 3, 4, 4, generator=_g()), torch.randn(3, 3, 4, 4, generator=_g(1))
    a4, ap4 = a[:, None, None, None], a_prev[:, None, None, None]
    sig, sig_prev = ((1 - a4) / a4).sqrt(), ((1 - ap4) / ap4).sqrt()
    euler = ap4.sqrt() * (x / a4.sqrt() + (sig_prev - sig) * eps)
    torch.testing.assert_close(ref.ddim_step(sched, x, eps, timesteps), euler, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- weights
def test_real_config_is_ddpm_cifar10_and_its_size():
    from diffusers import UNet2DModel

    real = CHECKPOINTS["ddpm_cifar10"].real_config
    # the fields of google/ddpm-cifar10-32's config.json (public copies of it; see registry notes)
    assert real["block_out_channels"] == (128, 256, 256, 256) and real["layers_per_block"] == 2
    assert real["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert real["up_block_types"] == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert (real["flip_sin_to_cos"], real["freq_shift"], real["norm_eps"], real["downsample_padding"]) == (False, 1, 1e-6, 0)
    with torch.device("meta"):
        m = UNet2DModel(**real)
    n = sum(p.numel() for p in m.parameters())
    assert 35.7e6 < n < 35.8e6, n  # DDPM's CIFAR-10 model: 35.7 M parameters


def test_standin_is_non_trivial_and_sensitive_to_the_timestep():
    unet, source = load_part("ddpm_unet")
    assert source.kind == "stand-in"
    for name, p in unet.named_parameters():
        assert p.std() > 0.05 or p.numel() == 1, name
    x = torch.randn(2, 3, 8, 8, generator=_g())
    with torch.no_grad():
        a = unet(x, torch.tensor([10, 500])).sample
        b = unet(x, torch.tensor([10, 500]).float() / 1000).sample
    assert (a - b).norm() / a.norm() > 1e-2


def _write_root_checkpoint(folder):
    import diffusers

    from grader.weights.resolve import reinitialise_

    model = diffusers.UNet2DModel(**CHECKPOINTS["ddpm_cifar10"].standin_config)
    reinitialise_(model, seed=3)
    model.save_pretrained(folder, safe_serialization=True)
    return model


def test_repo_root_checkpoint_loads_from_an_explicit_directory(tmp_path, monkeypatch):
    model = _write_root_checkpoint(tmp_path / "google" / "ddpm-cifar10-32")
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    source = resolve("ddpm_cifar10", weights_dir=tmp_path)
    assert source.kind == "real" and source.origin == "explicit directory"
    unet, _ = load_part("ddpm_unet", source=source)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(unet.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_repo_root_checkpoint_loads_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--google--ddpm-cifar10-32"
    _write_root_checkpoint(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COURSE_STANDIN_ONLY", raising=False)
    monkeypatch.delenv("COURSE_WEIGHTS_DIR", raising=False)
    source = resolve("ddpm_cifar10")
    assert source.kind == "real" and source.origin == "Hugging Face cache"
    load_part("ddpm_unet", source=source)


def test_lesson_statements_on_deprecation_last_step_and_score_scale():
    """Notebook statements: ScoreSdeVpScheduler is deprecated; samplers drop the last step's noise;
    1/sqrt(1 - alphabar) spans about 100x on DDPM's linear schedule (not three orders of magnitude)."""
    import diffusers
    from diffusers import DDPMScheduler
    from diffusers.schedulers import ScoreSdeVpScheduler

    assert "schedulers.deprecated" in ScoreSdeVpScheduler.__module__
    pipe_src = inspect.getsource(diffusers.ScoreSdeVePipeline.__call__)
    assert "sample = sample_mean.clamp(0, 1)" in pipe_src
    assert "pipelines.deprecated" in diffusers.ScoreSdeVePipeline.__module__
    step_src = inspect.getsource(DDPMScheduler.step)
    assert "if t > 0:" in step_src
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    scale = 1 / (1 - sched.alphas_cumprod).sqrt()
    assert scale[0].item() == pytest.approx(100.0, rel=1e-3) and scale[-1].item() == pytest.approx(1.0, abs=1e-3)
    # the DDIM configurations the hidden tests use: the last step's alphabar_prev
    from diffusers import DDIMScheduler

    sd = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False)
    assert sd.final_alpha_cumprod == sd.alphas_cumprod[0] and DDIMScheduler().final_alpha_cumprod == 1.0
