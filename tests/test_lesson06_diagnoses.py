"""Lesson 6's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis

LESSON = "06_consistency_models"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("consistency_scalings__edm_no_sigma_min", "EDM's c_skip"),
    ("consistency_scalings__sigma_min_over_sigma", "sigma_min / sigma"),
    ("consistency_scalings__shift_under_sqrt", "also under the square root"),
    ("consistency_scalings__swapped", "swapped"),
    ("consistency_function__no_input_scaling", "c_in"),
    ("consistency_function__time_edm_c_noise", "c_noise"),
    ("consistency_function__time_is_sigma", "sigma itself"),
    ("consistency_function__edm_scalings", "EDM's c_skip and c_out"),
    ("consistency_function__calls_scale_model_input", "calls"),
    ("consistency_step__no_clamp", "no clamp"),
    ("consistency_step__noise_scaled_by_sigma_next", "scaled by sigma_next"),
    ("consistency_step__renoise_current_sample", "not to the denoised sample"),
    ("consistency_step__no_noise", "no noise at all"),
    ("consistency_training_loss__target_not_detached", "gradients reach the target"),
    ("consistency_training_loss__sigmas_swapped", "noise levels swapped"),
    ("consistency_training_loss__x0_as_target", "x0 as the target"),
    ("consistency_training_loss__online_as_target", "its own target"),
    ("consistency_training_loss__not_reduced", "0-d"),
    ("consistency_training_loss__all_under_no_grad", "no gradient reaches the online network"),
    ("consistency_distillation_loss__ode_step_forward", "taken forward"),
    ("consistency_distillation_loss__no_t_in_the_ode", "factor t"),
    ("consistency_distillation_loss__score_at_t_n", "evaluated at t_n"),
    ("consistency_distillation_loss__teacher_ignored", "no teacher"),
    ("consistency_distillation_loss__target_not_detached", "gradients reach the target"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


def test_public_checks_answer_fast_on_a_wrong_answer():
    import time

    start = time.perf_counter()
    public_diagnosis(LESSON, "consistency_training_loss__sigmas_swapped")
    assert time.perf_counter() - start < 2.0 * 3   # 2 s on two idle cores; slack for a loaded CI box
