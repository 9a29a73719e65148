"""Lesson 8: every convention the lesson states, checked against the installed diffusers.

The step references are independent implementations (Karras et al. Alg. 1, DPM-Solver++
Alg. 2); here they are run against diffusers' schedulers on the toy mixture, and the
scheduler facts the notebook states are read from the schedulers themselves.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import diffusers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler)
from grader.exercises.the_speed_landscape import Counted, toy_mixture
from grader.reference import the_speed_landscape as ref
from grader.reference.score_functions_and_sdes import gmm_score

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
CONFIGS = [dict(SD, timestep_spacing="trailing"), dict(SD, timestep_spacing="leading", steps_offset=1),
           dict(beta_schedule="linear", timestep_spacing="linspace"),
           dict(SD, timestep_spacing="trailing", use_karras_sigmas=True)]


def _g(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- the toy model
def test_toy_denoiser_is_tweedie_with_lesson_4s_score():
    toy = toy_mixture()
    x = torch.randn(50, 2, generator=_g(0), dtype=torch.float64) * 3
    for sigma in (0.01, 0.5, 3.0, 40.0):
        stds = torch.sqrt(toy.stds.double() ** 2 + sigma ** 2)
        tweedie = x + sigma ** 2 * gmm_score(x, toy.means.double(), stds, toy.weights.double())
        torch.testing.assert_close(toy.denoise(x, sigma), tweedie, rtol=1e-10, atol=1e-10)


def test_toy_denoiser_accepts_per_sample_sigmas_and_is_the_identity_at_sigma_zero():
    toy = toy_mixture()
    x = torch.randn(4, 2, generator=_g(1))
    sig = torch.tensor([0.1, 1.0, 2.0, 5.0])
    per = toy.denoise(x, sig)
    for i in range(4):
        torch.testing.assert_close(per[i], toy.denoise(x[i:i + 1], sig[i])[0])
    torch.testing.assert_close(toy.denoise(x, 0.0), x)


def test_vp_denoise_and_flow_velocity_are_the_same_model_in_other_coordinates():
    toy = toy_mixture()
    x0 = toy.sample(64, _g(2)).double()
    n = torch.randn(64, 2, generator=_g(3), dtype=torch.float64)
    sigma = 1.7
    a = 1 / math.sqrt(1 + sigma ** 2)
    torch.testing.assert_close(toy.vp_denoise(a * (x0 + sigma * n), sigma), toy.denoise(x0 + sigma * n, sigma))
    t = sigma / (1 + sigma)                       # x_t / (1 - t) = x0 + sigma n
    x_t = (1 - t) * x0 + t * n
    v = toy.flow_velocity(x_t, t)
    torch.testing.assert_close(x_t - t * v, toy.denoise(x0 + sigma * n, sigma))   # x0-prediction
    mean = (toy.weights[:, None] * toy.means).sum(0).double()
    torch.testing.assert_close(toy.flow_velocity(n, 1.0), n - mean)


# ---------------------------------------------------------------- 1. spacing
@pytest.mark.parametrize("N,T,spacing,offset", [(1, 1000, "leading", 1), (3, 1000, "trailing", 1),
                                                (7, 500, "linspace", 0), (13, 100, "trailing", 0),
                                                (50, 1000, "leading", 1)])
def test_spaced_timesteps_is_ddims_set_timesteps(N, T, spacing, offset):
    s = DDIMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
    s.set_timesteps(N)
    assert torch.equal(ref.spaced_timesteps(N, T, spacing, offset), s.timesteps)
    assert s.timesteps.dtype == torch.int64


def test_spacing_facts_the_lesson_states():
    assert ref.spaced_timesteps(1, 1000, "leading", 1).tolist() == [1]            # SD1.5's 1 step: nearly clean
    assert ref.spaced_timesteps(4, 1000, "leading", 1).tolist() == [751, 501, 251, 1]
    assert ref.spaced_timesteps(4, 1000, "trailing", 0).tolist() == [999, 749, 499, 249]
    assert ref.spaced_timesteps(3, 1000, "trailing", 5).tolist() == ref.spaced_timesteps(3, 1000, "trailing", 0).tolist()
    assert ref.spaced_timesteps(4, 1000, "linspace", 3).tolist() == [999, 666, 333, 0]
    dpm = DPMSolverMultistepScheduler(timestep_spacing="leading", steps_offset=1)
    dpm.set_timesteps(4)
    assert dpm.timesteps.tolist() == [801, 601, 401, 201]                          # N + 1 grid
    eul = EulerDiscreteScheduler(timestep_spacing="linspace")
    eul.set_timesteps(6)                                                           # 999 / 5 = 199.8 apart
    assert eul.timesteps.dtype.is_floating_point and abs(float(eul.timesteps[1]) - 799.2) < 1e-3
    abar = DDIMScheduler(**SD).alphas_cumprod
    assert abs(abar[751].sqrt().item() - 0.236) < 0.001 and abs(abar[999].sqrt().item() - 0.068) < 0.001


# ---------------------------------------------------------------- 2. Heun
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("N", [1, 3, 6])
def test_heun_step_reproduces_heun_discrete_scheduler_and_its_model_calls(config, N):
    toy = toy_mixture()
    s = HeunDiscreteScheduler(**config)
    s.set_timesteps(N)
    sig = torch.cat([s.sigmas[0::2], s.sigmas[-1:]])
    x0 = torch.randn(16, 2, generator=_g(N)) * float(sig[0])
    x, model = x0.clone(), Counted(toy.denoise)
    for i in range(N):
        x = ref.heun_step(x, sig[i], sig[i + 1], model)
    for pred in ("sample", "epsilon", "v_prediction"):
        theirs, calls = ref.heun_scheduler_sample(config, N, x0.clone(), toy.denoise, pred)
        torch.testing.assert_close(x, theirs, rtol=1e-4, atol=1e-4)
        assert calls == model.calls == 2 * N - 1 == len(s.timesteps)


def test_heun_init_noise_sigma_depends_on_spacing():
    for spacing, expect in (("trailing", "max"), ("linspace", "max"), ("leading", "sqrt")):
        s = HeunDiscreteScheduler(**SD, timestep_spacing=spacing)
        s.set_timesteps(4)
        smax = s.sigmas.max()
        want = smax if expect == "max" else (smax ** 2 + 1) ** 0.5
        assert torch.allclose(torch.as_tensor(s.init_noise_sigma), want)


# ---------------------------------------------------------------- 3. DPM-Solver++(2M)
def test_dpm_solver_multistep_defaults_the_lesson_states():
    c = DPMSolverMultistepScheduler().config
    assert (c.solver_order, c.algorithm_type, c.solver_type, c.lower_order_final, c.final_sigmas_type) == \
        (2, "dpmsolver++", "midpoint", True, "zero")
    s = DPMSolverMultistepScheduler(**SD)
    s.set_timesteps(5)
    assert float(s.init_noise_sigma) == 1.0 and float(s.sigmas[-1]) == 0.0
    a, st = s._sigma_to_alpha_sigma_t(s.sigmas[:3])
    ra, rs = ref.alpha_sigma(s.sigmas[:3])
    torch.testing.assert_close((a, st), (ra, rs))


@pytest.mark.parametrize("config", CONFIGS + [dict(SD, timestep_spacing="trailing", final_sigmas_type="sigma_min",
                                                   lower_order_final=False)])
@pytest.mark.parametrize("N", [1, 2, 5, 20])
def test_dpmpp_2m_step_reproduces_the_scheduler_loop(config, N):
    toy = toy_mixture()
    s = DPMSolverMultistepScheduler(**config)
    s.set_timesteps(N)
    x0 = torch.randn(16, 2, generator=_g(N))
    final_first = s.config.final_sigmas_type == "zero" or (s.config.lower_order_final and N < 15)
    x, prev = x0.clone(), None
    for i in range(N):
        D = toy.vp_denoise(x, s.sigmas[i])
        first = prev is None or (i == N - 1 and final_first)
        x_next = ref.dpmpp_2m_step(x, s.sigmas[i], s.sigmas[i + 1], D) if first else \
            ref.dpmpp_2m_step(x, s.sigmas[i], s.sigmas[i + 1], D, prev, s.sigmas[i - 1])
        x, prev = x_next, D
    for pred in ("sample", "epsilon", "v_prediction"):
        torch.testing.assert_close(x, ref.dpm_scheduler_sample(config, N, x0.clone(), toy.vp_denoise, pred),
                                   rtol=1e-4, atol=1e-5)


def test_dpmpp_first_order_is_ddim_and_lands_on_the_prediction_at_sigma_zero():
    x, D = torch.randn(8, 2, generator=_g(5)), torch.randn(8, 2, generator=_g(6))
    s, s_next = torch.tensor(3.0), torch.tensor(1.2)
    a, st = ref.alpha_sigma(s)
    a2, st2 = ref.alpha_sigma(s_next)
    eps = (x - a * D) / st
    torch.testing.assert_close(ref.dpmpp_2m_step(x, s, s_next, D), a2 * D + st2 * eps)      # DDIM, eta = 0
    torch.testing.assert_close(ref.dpmpp_2m_step(x, s, torch.tensor(0.0), D, x, torch.tensor(9.0)), D)


def test_euler_and_ddim_agree_when_the_step_count_divides_T():
    toy = toy_mixture()
    z = torch.randn(64, 2, generator=_g(7))
    for N, same in ((1, True), (4, True), (5, True), (7, False)):
        e = EulerDiscreteScheduler(**SD, timestep_spacing="trailing", prediction_type="sample")
        e.set_timesteps(N)
        x = z * math.sqrt(1 + float(e.sigmas[0]) ** 2)
        for i, t in enumerate(e.timesteps):
            e.is_scale_input_called = True
            x = e.step(toy.denoise(x, e.sigmas[i]), t, x).prev_sample
        d = DDIMScheduler(**SD, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)
        d.set_timesteps(N)
        y = z.clone()
        for t in d.timesteps:
            a = d.alphas_cumprod[t]
            D = toy.vp_denoise(y, ((1 - a) / a) ** 0.5)
            y = d.step((y - a ** 0.5 * D) / (1 - a) ** 0.5, t, y).prev_sample
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-3) == same, N


def test_ddim_steps_to_t_minus_floor_T_over_N_not_to_its_next_trailing_timestep():
    src = inspect.getsource(DDIMScheduler.step)
    assert "timestep - self.config.num_train_timesteps // self.num_inference_steps" in src
    assert ref.spaced_timesteps(7, 1000, "trailing").tolist()[:2] == [999, 856]      # 999 - 142 = 857


# ---------------------------------------------------------------- 4. model calls
@pytest.mark.parametrize("cls,N,expected", [("EulerDiscreteScheduler", 4, 4), ("HeunDiscreteScheduler", 4, 7),
                                            ("KDPM2DiscreteScheduler", 6, 11),
                                            ("FlowMatchHeunDiscreteScheduler", 7, 13),
                                            ("DPMSolverMultistepScheduler", 4, 4), ("LCMScheduler", 4, 4),
                                            ("HeunDiscreteScheduler", 1, 1)])
def test_model_calls_are_the_entries_of_timesteps(cls, N, expected):
    sched = getattr(diffusers, cls)()
    assert ref.count_model_calls(sched, N) == expected
    assert ref.count_model_calls(sched, N, 7.5) == 2 * expected
    assert ref.count_model_calls(sched, N, 1.0) == expected
    assert (N - 1) * sched.order + 1 == expected


def test_pipelines_call_the_model_once_per_timestep_and_use_cfg_above_one():
    from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as sd

    src = inspect.getsource(sd.StableDiffusionPipeline)
    assert "self._guidance_scale > 1" in src
    assert "for i, t in enumerate(timesteps)" in src


def test_consistency_model_constants_the_notebook_uses():
    from diffusers import CMStochasticIterativeScheduler

    s = CMStochasticIterativeScheduler()
    assert (s.config.sigma_min, s.config.sigma_data) == (0.002, 0.5)
    sigma = torch.tensor([0.002, 0.1, 3.0])
    c_skip, c_out = s.get_scalings_for_boundary_condition(sigma)
    torch.testing.assert_close(c_skip, 0.25 / ((sigma - 0.002) ** 2 + 0.25))
    torch.testing.assert_close(c_out, (sigma - 0.002) * 0.5 / (sigma ** 2 + 0.25) ** 0.5)


def test_the_schedulers_the_lesson_names_exist():
    for name in ("HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
                 "CMStochasticIterativeScheduler", "LCMScheduler", "TCDScheduler", "FlowMatchEulerDiscreteScheduler",
                 "FlowMatchLCMScheduler", "FlowMatchHeunDiscreteScheduler", "KDPM2DiscreteScheduler"):
        assert hasattr(diffusers, name), name


def test_the_toys_network_outputs_match_the_references_conversion():
    toy = toy_mixture()
    x = torch.randn(8, 2, generator=_g(8))
    for pred in ("sample", "epsilon", "v_prediction"):
        for sigma in (torch.tensor(0.3), torch.tensor(7.0)):
            torch.testing.assert_close(toy.vp_model_output(x, sigma, pred),
                                       ref.vp_model_output(x, sigma, toy.vp_denoise(x, sigma), pred))


def test_lcm_grid_starts_at_the_noisiest_timestep():
    from diffusers import LCMScheduler

    s = LCMScheduler()
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [999, 759, 499, 259]


def test_cases_and_harnesses_never_call_a_reference(monkeypatch):
    """The untrusted side (cases, and the invoke harnesses around the solution) builds inputs only."""
    from grader.cases import hidden_context, public_context
    from grader.exercises import lesson
    from grader.notebook_code import solution_namespace

    ns = solution_namespace("08_the_speed_landscape")
    for attr in [a for a in dir(ref) if not a.startswith("_") and callable(getattr(ref, a))]:
        monkeypatch.setattr(ref, attr, lambda *a, **k: (_ for _ in ()).throw(AssertionError("reference called")))
    for name, ex in lesson("08_the_speed_landscape").EXERCISES.items():
        for ctx in (public_context(), hidden_context(7, "cpu")):
            cases = list(ex.cases(ctx))
            assert cases
            for case in cases:
                ex.call(ns[name], case)
