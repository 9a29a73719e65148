"""Lesson 4: the public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import assert_round_trip, public_diagnosis, solution_namespace

LESSON = "04_score_functions_and_sdes"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("gmm_score__gradient_of_density_not_log", "not of log p(x)"),
    ("gmm_score__normalising_constant_dropped", "normalising constant"),
    ("gmm_score__equal_responsibilities", "weighted equally"),
    ("gmm_score__naive_exp_underflows", "softmax"),
    ("gmm_score__sign_flipped", "sign flipped"),
    ("gmm_score__uses_autograd", "calls"),
    ("ddpm_score__alpha_t_instead_of_alphabar", "alpha_t (scheduler.alphas)"),
    ("ddpm_score__missing_sqrt", "without its square root"),
    ("ddpm_score__continuous_time_input", "t / 1000"),
    ("vp_perturb__instantaneous_beta", "the rate at time t"),
    ("vp_perturb__alphabar_without_roots", "without their square roots"),
    ("ve_perturb__variance_as_std", "sigma^2"),
    ("ve_perturb__linear_sigma", "linearly"),
    ("reverse_sde_step__noise_missing_sqrt_dt", "g dt instead of g sqrt(dt)"),
    ("reverse_sde_step__half_score_like_the_ode", "1/2"),
    ("reverse_sde_step__drift_forward_in_time", "forward in time"),
    ("probability_flow_step__full_score_no_half", "full g^2 score"),
    ("probability_flow_step__drift_ignored", "drift f left out"),
    ("ddim_euler_step__vp_std_as_sigma", "VP noise std"),
    ("ddim_euler_step__not_scaled_back", "not multiplied back"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


@pytest.mark.parametrize("name", list(EXERCISES))
def test_hidden_tests_pass_on_several_seeds(name):
    ns = solution_namespace(LESSON)
    for seed in (1, 12345, 2**31 + 7):
        assert "hidden tests passed" in EXERCISES[name].hidden(ns[name], seed=seed)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_trusted_grading_round_trip(name, tmp_path):
    """Record on the untrusted side, read the files back, judge on the trusted side: the same verdicts."""
    assert_round_trip(LESSON, name, tmp_path)
