"""Lesson 6's stated facts and references, checked against the installed diffusers.

Everything the notebook says about CMStochasticIterativeScheduler / ConsistencyModelPipeline is
asserted here; the losses (no diffusers code) are checked analytically: along a known
trajectory the exact consistency function makes them vanish, and the target gets no gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grader.exercises.consistency_models import LabelledUNet, MixtureScore, ToyNet, toy_mixture
from grader.reference import consistency_models as ref
from grader.weights.resolve import reinitialise_


def _sched(**kw):
    from diffusers import CMStochasticIterativeScheduler

    return CMStochasticIterativeScheduler(**kw)


def _unet(seed=0):
    from grader.checkpoints.consistency_models import CHECKPOINTS, _build_unet2d_lesson06

    unet = _build_unet2d_lesson06(CHECKPOINTS["cd_imagenet64_l2"].standin_config)
    reinitialise_(unet, seed)
    return unet.eval()


# ---------------------------------------------------------------- the scheduler's conventions
def test_scheduler_defaults():
    cfg = _sched().config
    assert (cfg.sigma_min, cfg.sigma_max, cfg.sigma_data, cfg.rho) == (0.002, 80.0, 0.5, 7.0)
    assert (cfg.num_train_timesteps, cfg.clip_denoised, cfg.s_noise) == (40, True, 1.0)


@pytest.mark.parametrize("smin,sd", [(0.002, 0.5), (0.01, 1.0), (0.005, 0.25)])
def test_boundary_scalings_are_the_papers_and_exact_at_sigma_min(smin, sd):
    sigma = torch.tensor([smin, 0.1, 1.0, 20.0, 80.0], dtype=torch.float64)
    c_skip, c_out = ref.boundary_scalings(sigma, smin, sd)
    torch.testing.assert_close(c_skip, sd ** 2 / ((sigma - smin) ** 2 + sd ** 2))
    torch.testing.assert_close(c_out, (sigma - smin) * sd / (sigma ** 2 + sd ** 2).sqrt())   # t^2, not (t - eps)^2
    assert c_skip[0] == 1 and c_out[0] == 0
    edm_skip, edm_out = ref.edm_scalings(sigma, sd)          # the same file's get_scalings: EDM's, not the boundary pair
    assert edm_skip[0] < 1 and edm_out[0] > 0


def test_the_sigma_min_over_t_version_is_not_the_schedulers():
    sigma = torch.tensor([0.5, 2.0])
    c_skip, _ = ref.boundary_scalings(sigma, 0.002, 0.5)
    assert not torch.allclose(c_skip, 0.002 / sigma)


def test_input_scaling_and_time_input_are_the_schedulers():
    sched = _sched()
    sched.set_timesteps(5)
    x = torch.randn(2, 3, 4, 4)
    for i, t in enumerate(sched.timesteps):
        sched._step_index = i
        got = sched.scale_model_input(x, t)
        torch.testing.assert_close(got, x * ref.input_scaling(sched.sigmas[i], 0.5))
    # the time input the pipeline passes to the UNet is 250 ln sigma (sigma_to_t), negative below sigma = 1
    torch.testing.assert_close(sched.timesteps, 250 * torch.log(sched.sigmas[:-1].double()), rtol=1e-6, atol=1e-5)
    sigma = torch.tensor([0.002, 0.5, 1.0, 80.0])
    torch.testing.assert_close(ref.time_input(sigma), 250 * torch.log(sigma))
    assert ref.time_input(sigma)[0] < 0 and ref.time_input(sigma)[2] == 0


def test_sampling_sigmas_end_with_sigma_min_and_custom_timesteps_index_the_training_grid():
    sched = _sched()
    sched.set_timesteps(4)
    assert len(sched.sigmas) == 5 and sched.sigmas[-1] == torch.tensor(0.002, dtype=torch.float32)
    assert sched.sigmas[0] == 80.0
    sched.set_timesteps(timesteps=[22, 0])
    karras = sched._convert_to_karras(np.array([0.0, 22 / 39]))
    torch.testing.assert_close(sched.sigmas.double(), torch.tensor([*karras, 0.002], dtype=torch.float64),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("N,smin,smax,rho", [(40, 0.002, 80.0, 7.0), (18, 0.002, 10.0, 7.0), (201, 0.01, 50.0, 5.0)])
def test_karras_boundaries_are_the_papers_discretisation(N, smin, smax, rho):
    got = ref.karras_boundaries(N, smin, smax, rho)
    i = torch.arange(1, N + 1, dtype=torch.float64)
    paper = (smin ** (1 / rho) + (i - 1) / (N - 1) * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
    torch.testing.assert_close(got, paper)
    torch.testing.assert_close(got, _sched(num_train_timesteps=N, sigma_min=smin, sigma_max=smax, rho=rho)
                               .sigmas.flip(0).double())
    assert abs(got[0] - smin) < 1e-12 and abs(got[-1] - smax) < 1e-9 * smax


# ---------------------------------------------------------------- the step
def test_step_clamps_then_renoises_with_sqrt_sigma_next_sq_minus_sigma_min_sq():
    sched = _sched()
    sched.set_timesteps(4)
    i = 1
    x = torch.randn(2, 3, 4, 4) * float(sched.sigmas[i])
    F = torch.randn(2, 3, 4, 4) * 3
    out = ref.consistency_step(sched, i, F, x, torch.Generator().manual_seed(7))
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    c_skip, c_out = ref.boundary_scalings(sched.sigmas[i], 0.002, 0.5)
    denoised = c_out * F + c_skip * x
    assert (denoised.abs() > 1).any()                                # the clamp matters for these inputs
    nxt = float(sched.sigmas[i + 1])
    torch.testing.assert_close(out, denoised.clamp(-1, 1) + math.sqrt(nxt ** 2 - 0.002 ** 2) * z)


def test_last_step_adds_no_noise_but_still_draws_it_and_one_step_draws_none():
    sched = _sched()
    sched.set_timesteps(3)
    x, F = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    g = torch.Generator().manual_seed(3)
    out = ref.consistency_step(sched, 2, F, x, g)
    c_skip, c_out = ref.boundary_scalings(sched.sigmas[2], 0.002, 0.5)
    torch.testing.assert_close(out, (c_out * F + c_skip * x).clamp(-1, 1), atol=1e-5, rtol=0)
    assert not torch.equal(g.get_state(), torch.Generator().manual_seed(3).get_state())   # the draw happened
    one = _sched()
    one.set_timesteps(1)
    g1 = torch.Generator().manual_seed(3)
    ref.consistency_step(one, 0, F, x * 80, g1)
    assert torch.equal(g1.get_state(), torch.Generator().manual_seed(3).get_state())      # zeros, no draw


def test_one_step_pipeline_is_the_clamped_consistency_function_at_sigma_max():
    unet = _unet()
    labels = [1, 4]
    got = ref.pipeline_samples(unet, dict(), 1, labels, seed=5, batch=2)[0]
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 80.0
    net = LabelledUNet(unet, torch.tensor(labels))
    with torch.no_grad():
        f = ref.consistency_function(net, x_T, torch.full((2,), 80.0), 0.002, 0.5)
    torch.testing.assert_close(got, f.clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_the_plugin_harness_with_the_schedulers_own_step_reproduces_the_pipeline():
    from grader.exercises.consistency_models import _step_in_pipeline

    unet = _unet(1)
    cfg = dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, rho=7.0, num_train_timesteps=40)
    expected = ref.pipeline_samples(unet, cfg, [22, 0], [3, 5], seed=2, batch=2)

    def scheduler_formula(F, x, sigma, sigma_next, z, smin, smax, sd):
        c_skip, c_out = ref.boundary_scalings(torch.tensor(sigma), smin, sd)
        return (c_out * F + c_skip * x).clamp(-1, 1) + math.sqrt(max(sigma_next ** 2 - smin ** 2, 0)) * z

    with torch.no_grad():
        got = _step_in_pipeline(scheduler_formula, unet, cfg, [22, 0], [3, 5], 2, 2)
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------- the losses, analytically
class ExactNet(torch.nn.Module):
    """F such that c_skip x + c_out F(c_in x, 250 ln t) = f*(x, t) = mu + a(t) (x - mu), for t > sigma_min."""

    def __init__(self, mu, s, smin, sd):
        super().__init__()
        self.mu, self.s, self.smin, self.sd = mu, s, smin, sd
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_in, t):
        sigma = torch.exp(t / 250).reshape(-1, 1)
        x = x_in * (sigma ** 2 + self.sd ** 2).sqrt()
        a = ((self.s ** 2 + self.smin ** 2) / (self.s ** 2 + sigma ** 2)).sqrt()     # x - mu scales as sqrt(s^2 + t^2)
        f = self.mu + a * (x - self.mu)
        c_skip, c_out = ref.boundary_scalings(sigma, self.smin, self.sd)
        return (f - c_skip * x) / c_out + 0 * self.dummy


def _pairs(N, B, smin=0.002, smax=10.0, seed=0):
    grid = ref.karras_boundaries(N, smin, smax, 7.0)
    n = torch.randint(1, N - 1, (B,), generator=torch.Generator().manual_seed(seed))   # t_n > sigma_min
    return grid[n].double(), grid[n + 1].double()


def _point_mass_case(B=16, s=0.0):
    mu = torch.tensor([[0.7, -0.3]], dtype=torch.float64)
    net = ExactNet(mu, s, 0.002, 0.5).double()
    g = torch.Generator().manual_seed(1)
    x0 = mu + s * torch.randn(B, 2, generator=g, dtype=torch.float64)
    z = torch.randn(B, 2, generator=g, dtype=torch.float64)
    return net, x0, z, mu


def test_training_loss_vanishes_for_the_exact_consistency_function_of_a_point_mass():
    # delta data: every x0 + t z with one z lies on one straight trajectory, so CT is exact
    net, x0, z, mu = _point_mass_case()
    sn, sn1 = _pairs(30, 16)
    loss = ref.consistency_training_loss(net, net, x0, sn, sn1, z, 0.002, 0.5)
    assert loss.item() < 1e-20


def test_distillation_loss_vanishes_with_the_exact_teacher_of_a_point_mass():
    net, x0, z, mu = _point_mass_case()
    sn, sn1 = _pairs(30, 16)
    score = lambda x, sigma: -(x - mu) / sigma.reshape(-1, 1) ** 2   # noqa: E731  (Euler is exact on straight lines)
    loss = ref.consistency_distillation_loss(net, net, score, x0, sn, sn1, z, 0.002, 0.5)
    assert loss.item() < 1e-20


def test_distillation_error_is_eulers_and_training_is_not_exact_for_a_gaussian():
    s = 0.6
    net, x0, z, mu = _point_mass_case(B=128, s=s)
    score = lambda x, sigma: -(x - mu) / (s ** 2 + sigma.reshape(-1, 1) ** 2)   # noqa: E731
    cd = []
    for N in (20, 40, 80):
        grid = ref.karras_boundaries(N, 0.002, 10.0, 7.0).double()
        sn, sn1 = grid[1:-1], grid[2:]
        B = len(sn)
        cd.append(ref.consistency_distillation_loss(net, net, score, x0[:B], sn, sn1, z[:B], 0.002, 0.5).item())
    assert cd[1] < cd[0] / 8 and cd[2] < cd[1] / 8              # squared O(dt^2) error: ~16x per halving
    sn, sn1 = _pairs(40, 128)
    ct = ref.consistency_training_loss(net, net, x0, sn, sn1, z, 0.002, 0.5).item()
    assert ct > 100 * cd[1]                                      # CT's pair is not on one trajectory


def test_consistency_function_meets_the_boundary_condition_with_any_network():
    net = ToyNet(3)
    x = torch.randn(5, 3)
    with torch.no_grad():
        f = ref.consistency_function(net, x, torch.full((5,), 0.01), 0.01, 1.0)
    assert torch.equal(f, x)


@pytest.mark.parametrize("loss", ["ct", "cd"])
def test_losses_send_no_gradient_to_the_target(loss):
    torch.manual_seed(0)
    online, target = ToyNet(2), ToyNet(2)
    mix = toy_mixture()
    x0 = torch.randn(8, 2)
    sn, sn1 = (t.float() for t in _pairs(10, 8))
    z = torch.randn(8, 2)
    if loss == "ct":
        value = ref.consistency_training_loss(online, target, x0, sn, sn1, z, 0.002, 0.7)
    else:
        value = ref.consistency_distillation_loss(online, target, mix, x0, sn, sn1, z, 0.002, 0.7)
    value.backward()
    assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in online.parameters())


def test_the_students_teacher_is_lesson_4s_mixture_score_blurred():
    g = torch.Generator().manual_seed(0)
    means, stds = torch.randn(4, 3, generator=g), 0.1 + torch.rand(4, generator=g)
    w = torch.rand(4, generator=g) + 0.1
    w = w / w.sum()
    x = torch.randn(10, 3, generator=g) * 3
    sigma = torch.tensor([0.002, 0.1, 1.0, 5.0, 80.0] * 2)
    torch.testing.assert_close(MixtureScore(means, stds, w)(x, sigma), ref.mixture_score(x, sigma, means, stds, w),
                               rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the checkpoint
def test_real_config_builds_the_stated_model_and_the_standin_is_the_same_class():
    from diffusers import UNet2DModel

    from grader.checkpoints.consistency_models import CHECKPOINTS

    ck = CHECKPOINTS["cd_imagenet64_l2"]
    with torch.device("meta"):
        real = UNet2DModel(**ck.real_config)
    assert round(sum(p.numel() for p in real.parameters()) / 1e6, 1) == 295.9
    assert real.config.time_embedding_type == "positional" and real.config.num_class_embeds == 1000
    assert (ck.license, ck.subfolder, ck.model_class) == ("mit", "unet", "UNet2DModel")
    standin = _unet()
    assert {type(b).__name__ for b in standin.down_blocks} <= {type(b).__name__ for b in real.down_blocks}
    assert {type(b).__name__ for b in standin.up_blocks} <= {type(b).__name__ for b in real.up_blocks}
