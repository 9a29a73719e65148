"""Lesson 3's public checks name the classic mistakes quickly, and its answers survive trusted grading.

Generic pass/fail cases (solution passes, every wrong implementation fails, every correct
alternative passes, stubs): test_hidden_tests.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.exercises import lesson
from tests.notebook_code import answer_cells, wrong_module
from tests.trusted import timed_public_diagnosis, trusted_verdicts, warm

LESSON = "03_ip_adapter"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm(LESSON)


@pytest.mark.parametrize("mistake,expected", [
    ("image_projection__layer_norm_before_reshape", "before the reshape"),
    ("image_projection__tokens_channel_major", "(C, T) instead of (T, C)"),
    ("image_projection__norm_without_affine", "weight and bias left out"),
    ("image_projection__four_tokens_hard_coded", "2 tokens of width 6"),
    ("decoupled_cross_attention__scale_ignored", "scale ignored"),
    ("decoupled_cross_attention__scale_on_text_branch", "text branch instead"),
    ("decoupled_cross_attention__concatenated_single_softmax", "ONE softmax"),
    ("decoupled_cross_attention__frozen_kv_for_image", "to_k_ip / to_v_ip unused"),
    ("decoupled_cross_attention__image_tokens_first", "they are the last"),
    ("decoupled_cross_attention__branches_projected_separately", "bias counted twice"),
    ("decoupled_cross_attention__calls_attention_module", "calls"),
    ("decoupled_cross_attention__four_image_tokens_hard_coded", "2 image tokens"),
    ("ip_layer_ids__ids_from_zero", "counted from 0"),
    ("ip_layer_ids__consecutive_ids", "consecutive ids"),
    ("ip_layer_ids__down_mid_up_order", "UP blocks, then the MID block"),
    ("ip_layer_ids__self_attention_numbered_too", "attn1 processors must get -1"),
    ("ip_layer_ids__one_id_per_attention_module", "2 transformer blocks per attention"),
    ("ip_adapter_unet__scale_ignored", "scale argument ignored"),
    ("ip_adapter_unet__uses_diffusers_loader", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = timed_public_diagnosis(LESSON, mistake)
    assert expected in message, message


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path / "rec", seed_base=555)


def test_solution_passes_every_exercise_under_record_and_judge(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts


@pytest.mark.parametrize("name,expected", [
    ("decoupled_cross_attention__scale_on_text_branch", "text branch instead"),
    ("ip_layer_ids__down_mid_up_order", "UP blocks, then the MID block"),
    ("ip_adapter_unet__image_tokens_prepended", "values differ"),
])
def test_wrong_implementation_fails_under_record_and_judge(name, expected, tmp_path):
    exercise = name.split("__")[0]
    src = Path(wrong_module(LESSON).__file__).read_text()
    cells = [PRELUDE, *answer_cells(LESSON).values(), src, f"{exercise} = {name}"]
    verdicts = _verdicts(cells, tmp_path)
    assert not verdicts[exercise]["passed"] and expected in verdicts[exercise]["message"], verdicts[exercise]
    assert verdicts["image_projection"]["passed"]
