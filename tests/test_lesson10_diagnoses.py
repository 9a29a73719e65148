"""Lesson 10's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis

LESSON = "10_diffusion_transformers"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("patchify__tokens_column_major", "column-major"),
    ("adaln_zero__shift_scale_swapped", "shift and scale swapped"),
    ("adaln_zero__no_one_plus", "1 +"),
    ("self_attention__missing_sqrt_d", "1/sqrt(head_dim)"),
    ("timestep_embedding__sin_first", "flip_sin_to_cos=False"),
    ("timestep_embedding__freq_shift_zero", "downscale_freq_shift=0"),
    ("dit_forward__final_shift_scale_swapped", "shift and scale swapped"),
    ("patchify__calls_conv2d", "calls"),
    ("dit_block__calls_block_forward", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message
