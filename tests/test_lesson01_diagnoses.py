"""Lesson 1's public checks name the classic mistakes quickly, and its answers survive trusted grading.

Generic pass/fail cases (solution passes, every wrong implementation fails, every correct
alternative passes, stubs): test_hidden_tests.py. Lesson 1 returns modules and nested lists:
the record/judge cases below run the untrusted side (grader.cases.record, grader.record files)
and the trusted side (grader.cases.judge_record) apart, as trusted grading does, and prove the
verdicts come out the same that way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.cases import hidden_context
from grader.exercises import lesson
from tests.notebook_code import answer_cells, wrong_module
from tests.trusted import timed_public_diagnosis, trusted_verdicts, warm

LESSON = "01_controlnet"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm(LESSON)


@pytest.mark.parametrize("mistake,expected", [
    ("zero_conv__bias_left_at_default", "bias is not zero"),
    ("zero_conv__frozen", "does not require grad"),
    ("zero_conv__no_bias", "has no bias"),
    ("zero_conv__three_by_three", "3x3 kernel"),
    ("zero_conv__single_output_channel", "shape (2, 1, 5, 7)"),
    ("conv1x1_backward__input_grad_not_transposed", "W^T g"),
    ("conv1x1_backward__weight_grad_batch_mean", "averaged instead of summed"),
    ("conv1x1_backward__uses_autograd", "calls"),
    ("controlnet_from_unet__shares_the_unets_modules", "shares its storage"),
    ("controlnet_from_unet__decoder_copied_too", "decoder"),
    ("controlnet_from_unet__mid_block_not_copied", "mid_block"),
    ("controlnet_from_unet__only_encoder_blocks_copied", "add_embedding"),
    ("controlnet_from_unet__block_layout_only", "attention_head_dim"),
    ("controlnet_from_unet__whole_conditioning_embedding_zeroed", "gradients would stay zero"),
    ("controlnet_from_unet__calls_from_unet", "calls"),
    ("conditioning_embedding__relu_as_in_the_paper", "ReLU instead of SiLU"),
    ("conditioning_embedding__activation_after_conv_out", "after conv_out"),
    ("control_residuals__scale_only_on_mid", "not applied to the down residuals"),
    ("control_residuals__last_down_conv_for_mid", "last down zero convolution"),
    ("control_residuals__first_skip_dropped", "one per skip tensor"),
    ("controlnet_forward__control_image_ignored", "control image left out"),
    ("controlnet_forward__calls_the_model", "calls"),
    ("unet_with_control__residuals_added_before_the_skip", "inside the encoder"),
    ("unet_with_control__mid_residual_before_mid_block", "before the mid block"),
    ("unet_with_control__mid_residual_forgotten", "mid residual left out"),
    ("unet_with_control__scale_only_on_mid", "mid residual only"),
    ("unet_with_control__unscaled", "not multiplied by conditioning_scale"),
    ("unet_with_control__calls_the_unet", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = timed_public_diagnosis(LESSON, mistake)
    assert expected in message, message


def test_padding_same_is_as_right_as_padding_zero():
    """Mutation testing found a 1x1 conv built with padding="same" rejected ("padding (rows) is -1")."""
    ns: dict = {}
    exec(PRELUDE + "def zero_conv(channels):\n"
         "    conv = torch.nn.Conv2d(channels, channels, 1, padding='same')\n"
         "    torch.nn.init.zeros_(conv.weight)\n    torch.nn.init.zeros_(conv.bias)\n    return conv\n", ns)
    assert "passed" in EXERCISES["zero_conv"].public(ns["zero_conv"])
    assert "passed" in EXERCISES["zero_conv"].hidden(ns["zero_conv"], seed=5)


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path / "rec", seed_base=4321)


def test_solution_passes_every_exercise_under_record_and_judge(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts


@pytest.mark.parametrize("name,expected", [
    ("zero_conv__bias_left_at_default", "bias is not zero"),
    ("zero_conv__no_bias", "has no bias"),
    ("zero_conv__frozen", "does not require grad"),
    ("controlnet_from_unet__shares_the_unets_modules", "shares its storage"),
    ("controlnet_from_unet__decoder_copied_too", "decoder"),
    ("controlnet_from_unet__block_layout_only", "attention_head_dim"),
    ("control_residuals__first_skip_dropped", "one per skip tensor"),
    ("controlnet_forward__control_image_ignored", "values differ"),
    ("unet_with_control__mid_residual_forgotten", "values differ"),
])
def test_wrong_implementation_fails_under_record_and_judge(name, expected, tmp_path):
    exercise = name.split("__")[0]
    src = Path(wrong_module(LESSON).__file__).read_text()
    cells = [PRELUDE, *answer_cells(LESSON).values(), src, f"{exercise} = {name}"]
    verdicts = _verdicts(cells, tmp_path)
    assert not verdicts[exercise]["passed"] and expected in verdicts[exercise]["message"], verdicts[exercise]
    assert verdicts["conv1x1_backward"]["passed"]


def test_a_returned_object_that_is_not_a_model_fails_cleanly(tmp_path):
    cells = [PRELUDE, *answer_cells(LESSON).values(),
             "def zero_conv(channels):\n    return 'a conv'\n",
             "def controlnet_from_unet(unet, conditioning_embedding_out_channels):\n    return unet\n",
             "def control_residuals(*args):\n    return 3\n"]
    verdicts = _verdicts(cells, tmp_path)
    assert "expected a torch.nn.Conv2d" in verdicts["zero_conv"]["message"]
    assert "got UNet2DConditionModel" in verdicts["controlnet_from_unet"]["message"]
    assert "return a pair" in verdicts["control_residuals"]["message"]


def test_cases_hold_no_reference():
    """The untrusted side builds inputs only: no case carries a value computed by grader.reference."""
    import grader.reference.controlnet as ref

    called = []
    saved = {n: getattr(ref, n) for n in ref.__all__ if callable(getattr(ref, n))}
    try:
        for n in saved:
            setattr(ref, n, lambda *a, _n=n, **k: called.append(_n))
        for ex in EXERCISES.values():
            list(ex.cases(hidden_context(7)))
    finally:
        for n, fn in saved.items():
            setattr(ref, n, fn)
    assert not called, called
