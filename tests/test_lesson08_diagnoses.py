"""Lesson 8's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from tests.notebook_code import public_diagnosis

LESSON = "08_the_speed_landscape"


@pytest.mark.parametrize("mistake,expected", [
    ("spaced_timesteps__trailing_with_offset", "trailing grid ignores steps_offset"),
    ("spaced_timesteps__leading_without_offset", "without steps_offset"),
    ("spaced_timesteps__leading_fractional_ratio", "integer division"),
    ("spaced_timesteps__linspace_truncated", "truncated instead of rounded"),
    ("spaced_timesteps__increasing", "largest timestep first"),
    ("spaced_timesteps__dpm_solver_grid", "N + 1 points"),
    ("spaced_timesteps__float_timesteps", "timesteps are integers"),
    ("spaced_timesteps__trailing_without_minus_one", "without the final - 1"),
    ("heun_step__plain_euler", "plain Euler step"),
    ("heun_step__corrector_slope_at_sigma", "instead of sigma_next"),
    ("heun_step__corrector_at_start_point", "start point"),
    ("heun_step__slope_sign_flipped", "sign flipped"),
    ("heun_step__evaluates_then_discards_on_last_step", "skips the correction when sigma_next = 0"),
    ("dpmpp_2m_step__ve_ratio", "variance-exploding ratio"),
    ("dpmpp_2m_step__first_order_only", "previous prediction unused"),
    ("dpmpp_2m_step__exp_plus_h", "e^{+h}"),
    ("dpmpp_2m_step__r_inverted", "inverted"),
    ("dpmpp_2m_step__predictions_swapped", "two predictions swapped"),
    ("dpmpp_2m_step__second_order_on_final_step", "first-order step there"),
    ("count_model_calls__one_per_step", "one call per inference step"),
    ("count_model_calls__guidance_ignored", "without classifier-free guidance"),
    ("count_model_calls__guidance_from_one", "guidance_scale <= 1"),
    ("count_model_calls__heun_two_per_step", "two calls on every step"),
    ("count_model_calls__solver_order_times_steps", "two calls on every step"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message
