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



def _record_then_judge(fn_by_exercise: dict, tmp_path, seed: int) -> dict:
    """The grading split in-process: record on the untrusted side into files (grader.record), read
    them back and judge on the trusted side (grader.cases.judge_record) with the same seed."""
    from grader.cases import hidden_context, judge_record, record
    from grader.exercises import lesson
    from grader.record import read_entries, write_entry

    verdicts = {}
    for name, ex in lesson(LESSON).EXERCISES.items():
        folder = tmp_path / name
        folder.mkdir()
        entries = record(ex, fn_by_exercise[name], hidden_context(seed),
                         sink=lambda i, e, n=name: write_entry(str(folder), n, i, e))
        back = read_entries(str(folder), name, len(entries))
        verdicts[name] = judge_record(ex, back, hidden_context(seed))
    return verdicts


def test_solution_passes_every_exercise_through_record_files(tmp_path):
    """Tuples, None (the last SD3 block's text stream) and plug-in outputs survive the record files."""
    from tests.notebook_code import solution_namespace

    ns = solution_namespace(LESSON)
    verdicts = _record_then_judge(ns, tmp_path, seed=1111)
    assert all(v.passed for v in verdicts.values()), {k: v.message for k, v in verdicts.items()}


def test_a_wrong_block_recorded_is_failed_by_the_trusted_judge(tmp_path):
    from tests.notebook_code import namespace_with_wrong

    ns = namespace_with_wrong(LESSON, "flux_double_block", "flux_double_block__image_first_like_sd3")
    verdicts = _record_then_judge(ns, tmp_path, seed=2222)
    assert not verdicts["flux_double_block"].passed
    assert "[image; text]" in verdicts["flux_double_block"].message
    assert verdicts["flux_single_block"].passed and verdicts["joint_block"].passed
