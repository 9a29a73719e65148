"""Lesson 12's public checks name the classic mistakes (generic pass/fail cases: test_hidden_tests.py)."""

from __future__ import annotations

import pytest

from tests.notebook_code import public_diagnosis

LESSON = "12_z_image"


@pytest.mark.parametrize("mistake,expected", [
    ("position_ids__caption_from_zero", "counted from 0"),
    ("position_ids__caption_pads_zero", "caption pads keep counting"),
    ("position_ids__image_after_unpadded_caption", "unpadded caption"),
    ("apply_rope_3d__rotate_half_pairs", "rotate-half"),
    ("apply_rope_3d__theta_10000", "theta = 10000"),
    ("s3dit_block__gates_without_tanh", "without tanh"),
    ("s3dit_block__scale_without_one_plus", "1 + scale"),
    ("s3dit_block__chunks_scale_scale_gate_gate", "(scale_msa, gate_msa, scale_mlp, gate_mlp)"),
    ("s3dit_block__silu_before_modulation", "SiLU"),
    ("s3dit_block__no_post_norm", "sandwich"),
    ("s3dit_block__ignores_padding_mask", "no attention mask"),
    ("s3dit_block__calls_block_forward", "calls"),
    ("encode_prompt__last_hidden_state", "hidden_states[-1]"),
    ("encode_prompt__keeps_padding", "kept the padding tokens"),
    ("zimage_step__sigma_as_time", "1 - sigma"),
    ("zimage_step__not_negated", "without negating"),
    ("zimage_step__standard_cfg", "pos + s (pos - neg)"),
    ("decoupled_dmd_grad__coupled_noise_levels", "coupled"),
    ("decoupled_dmd_grad__ca_scaled_by_w", "(w - 1)"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


def test_cases_never_call_the_reference(monkeypatch):
    """The untrusted side builds inputs only: every reference function raises while cases are built."""
    from grader.cases import hidden_context, public_context
    from grader.exercises import lesson
    from grader.reference import z_image as ref

    for attr in [a for a in dir(ref) if not a.startswith("__") and callable(getattr(ref, a))
                 and getattr(getattr(ref, a), "__module__", "") == ref.__name__]:
        monkeypatch.setattr(ref, attr, lambda *a, **k: (_ for _ in ()).throw(AssertionError("reference called")))
    for ex in lesson(LESSON).EXERCISES.values():
        for ctx in (public_context(), hidden_context(7, "cpu")):
            assert list(ex.cases(ctx))
