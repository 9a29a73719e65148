"""Lesson 9's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis

LESSON = "09_sdxl"
EXERCISES = lesson(LESSON).EXERCISES


@pytest.mark.parametrize("mistake,expected", [
    ("encode_text__last_hidden_state", "last_hidden_state"),
    ("encode_text__final_norm_on_penultimate", "final LayerNorm"),
    ("encode_text__openclip_first", "other order"),
    ("encode_text__one_tokenizer", "first tokenizer's ids"),
    ("encode_text__calls_encode_prompt", "calls"),
    ("encode_text__unprojected_pooled", "pooler_output before text_projection"),
    ("encode_text__pooled_from_clip_l", "SDXL pools from text_encoder_2"),
    ("encode_text__pad_to_longest", "model_max_length"),
    ("encode_prompt_cfg__empty_string_not_zeros", "force_zeros_for_empty_prompt"),
    ("encode_prompt_cfg__zeros_for_explicit_empty", "zeros where diffusers encodes"),
    ("encode_prompt_cfg__copies_tiled", "a, a, b, b"),
    ("time_id_features__sin_first", "flip_sin_to_cos"),
    ("time_id_features__freq_shift_one", "downscale_freq_shift=1"),
    ("time_id_features__frequency_major", "frequency-major"),
    ("added_embedding__time_first", "before the pooled text"),
    ("added_embedding__no_silu", "no SiLU"),
    ("cfg_time_ids__positive_first", "negative half first"),
    ("cfg_time_ids__same_score_both_halves", "negative half too"),
    ("cfg_time_ids__integer_dtype", "float32"),
    ("cfg_time_ids__positive_crop_in_negative", "negative_crops_coords_top_left"),
    ("handoff__fraction_of_steps", "fraction of the steps"),
    ("handoff__no_rounding", "rounds"),
    ("handoff__no_second_order_fix", "second-order"),
    ("handoff__strict_base", "t >= cut-off"),
    ("handoff__cut_at_fraction_of_T", "T - f x T"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message
