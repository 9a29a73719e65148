"""Lesson 5: hidden tests stable over seeds, and the classic mistakes diagnosed (generic cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
import torch

from tests.notebook_code import assert_round_trip, namespace_with_wrong, public_diagnosis, solution_namespace

LESSON = "05_flow_matching"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hidden_tests_pass_on_several_seeds(name):
    ns = solution_namespace(LESSON)
    for seed in (1, 12345, 2**31 + 7):
        assert "hidden tests passed" in EXERCISES[name].hidden(ns[name], seed=seed)


@pytest.mark.parametrize("mistake,expected", [
    ("flow_interpolate__target_reversed", "direction reversed"),
    ("flow_interpolate__sigma_swapped", "sigma and 1 - sigma swapped"),
    ("flow_interpolate__epsilon_target", "epsilon target"),
    ("flow_matching_loss__weighting_inverted", "weighting inverted"),
    ("flow_matching_loss__sigma_sqrt_as_square_root", "sigma ** -2.0"),
    ("flow_matching_loss__target_reversed", "target reversed"),
    ("flow_matching_loss__sum_not_mean", "constant factor"),
    ("flow_matching_loss__cosmap_without_pi", "without its 1/pi"),
    ("timestep_density__mean_std_ignored", "logit_mean and logit_std ignored"),
    ("timestep_density__std_as_variance", "variance"),
    ("timestep_density__mode_scale_hardcoded", "mode_scale fixed"),
    ("timestep_density__cosmap_sampled", "loss weighting"),
    ("timestep_density__no_sigmoid", "sigmoid left out"),
    ("timestep_density__mode_without_one_minus", "leading 1 -"),
    ("shift_sigmas__no_denominator", "without the denominator"),
    ("shift_sigmas__inverted", "inverted"),
    ("training_sigmas__sigma_is_u", "sigma = u"),
    ("training_sigmas__unshifted", "no shift"),
    ("flux_mu__unpacked_latent", "unpacked latent"),
    ("flux_mu__float_division", "floor division"),
    ("flux_mu__vae_factor_fixed_at_8", "VAE factor fixed at 8"),
    ("flux_mu__default_anchors_hardcoded", "default anchors"),
    ("flow_schedule__static_shift_on_top_of_mu", "on top of mu"),
    ("flow_schedule__sigma_min_shifted_with_mu", "although mu is given"),
    ("flow_schedule__mu_ignored", "static shift where mu is given"),
    ("flow_schedule__mu_ignored_with_custom_sigmas", "static shift where mu is given"),
    ("flow_schedule__custom_sigmas_ignored", "default linspace"),
    ("flow_schedule__linear_time_shift", "linear time shift"),
    ("flow_schedule__no_terminal_zero", "terminal sigma 0"),
    ("flow_schedule__timesteps_not_scaled", "sigmas * num_train_timesteps"),
    ("flow_schedule__sigma_min_unshifted", "sigma_min"),
    ("flow_schedule__shift_without_denominator", "without the denominator"),
    ("euler_step__sign_flipped", "step reversed"),
    ("euler_step__returns_x0_prediction", "x0 prediction"),
    ("euler_sample__velocity_at_next_sigma", "next sigma"),
    ("euler_sample__last_step_dropped", "last step"),
    ("euler_sample__sigma_as_python_float", "tensor of shape (B,)"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


@pytest.mark.parametrize("mistake,expected", [
    ("flow_interpolate__sigma_on_last_axis", "last axis"),
    ("flux_mu__unpacked_latent", "unpacked latent"),
    ("flux_mu__float_division", "floor division"),
    ("flow_schedule__static_shift_on_top_of_mu", "on top of mu"),
    ("flux_mu__vae_factor_fixed_at_8", "VAE factor fixed at 8"),
])
def test_hidden_test_diagnoses_the_classic_mistake(mistake, expected):
    exercise = mistake.split("__")[0]
    ns = namespace_with_wrong(LESSON, exercise, mistake)
    with pytest.raises(AssertionError) as err:
        EXERCISES[exercise].hidden(ns[exercise], seed=3)
    assert expected in str(err.value), str(err.value)


def test_calling_the_reference_is_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler
    import diffusers.training_utils as tu

    def schedule_by_scheduler(n, shift=1.0, mu=None, sigmas=None, N=1000):
        s = FlowMatchEulerDiscreteScheduler(num_train_timesteps=N, shift=shift, use_dynamic_shifting=mu is not None)
        s.set_timesteps(n, sigmas=sigmas, mu=mu)
        return s.timesteps, s.sigmas

    def density_by_utility(scheme, draws, *args):
        return tu.compute_density_for_timestep_sampling(scheme, len(draws))

    for name, fn in (("flow_schedule", schedule_by_scheduler), ("timestep_density", density_by_utility)):
        with pytest.raises(AssertionError, match="calls"):
            EXERCISES[name].hidden(fn)


def test_flux_mu_may_not_call_the_pipelines_calculate_shift():
    import importlib
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    flux = importlib.import_module("diffusers.pipelines.flux.pipeline_flux")

    def by_pipeline(height, width, vae_scale_factor=8, *anchors):
        return flux.calculate_shift((height // (2 * vae_scale_factor)) * (width // (2 * vae_scale_factor)), *anchors)

    with pytest.raises(AssertionError, match="calls"):
        EXERCISES["flux_mu"].public(by_pipeline)


def test_flux_mu_accepts_a_float_and_refuses_a_non_number():
    ns = solution_namespace(LESSON)
    assert "public checks passed" in EXERCISES["flux_mu"].public(lambda *a: torch.tensor(ns["flux_mu"](*a)))
    with pytest.raises(AssertionError, match="Python float"):
        EXERCISES["flux_mu"].public(lambda *a: str(ns["flux_mu"](*a)))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_trusted_grading_round_trip(name, tmp_path):
    """Record on the untrusted side, read the files back, judge on the trusted side: the same verdicts."""
    assert_round_trip(LESSON, name, tmp_path)
