"""Lesson 11's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from tests.notebook_code import public_diagnosis

LESSON = "11_sd3_and_flux"


@pytest.mark.parametrize("mistake,expected", [
    ("joint_attention__text_first_split_as_image_first", "split as if it were [image; text]"),
    ("joint_attention__two_separate_attentions", "two separate attentions"),
    ("joint_attention__no_qk_norm", "no QK RMSNorm"),
    ("joint_block__continuous_norm_shift_then_scale", "scale, then shift"),
    ("joint_block__exact_gelu", "exact GELU"),
    ("joint_block__last_block_returns_text", "returns None for the text"),
    ("sd3_text_embeds__t5_first", "T5's tokens first"),
    ("sd3_text_embeds__padded_on_the_left", "zero padding in front"),
    ("pack_latents__channel_last_in_token", "(row-in-patch, column-in-patch, channel)"),
    ("pack_latents__ids_col_row", "(0, column, row)"),
    ("pack_latents__ids_as_integers", "float32"),
    ("flux_rope__rotate_half", "rotate-half"),
    ("flux_rope__cos_sin_concatenated_not_interleaved", "interleaved"),
    ("flux_double_block__image_first_like_sd3", "[image; text]"),
    ("flux_double_block__no_rope", "RoPE left out"),
    ("flux_single_block__mlp_after_attention", "in parallel"),
    ("flux_single_block__exact_gelu", "exact GELU"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


def test_calling_the_diffusers_block_is_refused():
    from grader.exercises import lesson
    from grader.guard import ReferenceCallError

    def lazy(block, x, c, temb, rotary):
        return block(x, c, temb, rotary)

    with pytest.raises(ReferenceCallError):
        lesson(LESSON).EXERCISES["flux_double_block"].public(lazy)
