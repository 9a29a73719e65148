"""Lesson 5: hidden tests stable over seeds, and the classic mistakes diagnosed (generic cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import namespace_with_wrong, public_diagnosis, solution_namespace

LESSON = "05_flow_matching"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hidden_tests_pass_on_several_fresh_seeds(name, monkeypatch):
    import grader.runtime as runtime

    ns = solution_namespace(LESSON)
    for seed in (1, 12345, 2**31 + 7):
        monkeypatch.setattr(runtime, "fresh_seed", lambda: seed)
        assert "hidden tests passed" in EXERCISES[name].hidden(ns[name])


@pytest.mark.parametrize("mistake,expected", [
    ("flow_interpolate__target_reversed", "direction reversed"),
    ("flow_interpolate__sigma_swapped", "sigma and 1 - sigma swapped"),
    ("flow_interpolate__epsilon_target", "epsilon target"),
    ("flow_matching_loss__weighting_inverted", "weighting inverted"),
    ("flow_matching_loss__sigma_sqrt_as_square_root", "sigma ** -2.0"),
    ("flow_matching_loss__target_reversed", "target reversed"),
    ("flow_matching_loss__sum_not_mean", "constant factor"),
    ("timestep_density__no_sigmoid", "sigmoid left out"),
    ("timestep_density__mode_without_one_minus", "leading 1 -"),
    ("shift_sigmas__no_denominator", "without the denominator"),
    ("shift_sigmas__inverted", "inverted"),
    ("training_sigmas__sigma_is_u", "sigma = u"),
    ("training_sigmas__unshifted", "no shift"),
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
    ("flow_schedule__linear_time_shift", "linear time shift"),
])
def test_hidden_test_diagnoses_the_classic_mistake(mistake, expected, monkeypatch):
    import grader.runtime as runtime

    monkeypatch.setattr(runtime, "fresh_seed", lambda: 3)
    exercise = mistake.split("__")[0]
    ns = namespace_with_wrong(LESSON, exercise, mistake)
    with pytest.raises(AssertionError) as err:
        EXERCISES[exercise].hidden(ns[exercise])
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
