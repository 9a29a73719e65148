"""Lesson 1's public checks name the classic mistakes, and its answers survive trusted grading.

Generic pass/fail cases (solution passes, every wrong implementation fails, stubs): test_hidden_tests.py.
Lesson 1 returns modules and nested lists, which trusted grading (grader/record.py) can only
carry as tensors: the record/verify cases below prove the verdicts are the same that way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.exercises import lesson
from tests.notebook_code import answer_cells, public_diagnosis, trusted_verdicts, wrong_module

LESSON = "01_controlnet"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


@pytest.mark.parametrize("mistake,expected", [
    ("zero_conv__bias_left_at_default", "bias is not zero"),
    ("zero_conv__frozen", "does not require grad"),
    ("conv1x1_backward__input_grad_not_transposed", "W^T g"),
    ("conv1x1_backward__weight_grad_batch_mean", "averaged instead of summed"),
    ("conv1x1_backward__uses_autograd", "calls"),
    ("controlnet_from_unet__shares_the_unets_modules", "shares its storage"),
    ("controlnet_from_unet__decoder_copied_too", "decoder"),
    ("controlnet_from_unet__mid_block_not_copied", "mid_block"),
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
    ("unet_with_control__calls_the_unet", "calls"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = public_diagnosis(LESSON, mistake)
    assert expected in message, message


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path, seed_base=4321, per_exercise_s=120)


def test_solution_passes_every_exercise_under_record_and_verify(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts


@pytest.mark.parametrize("name,expected", [
    ("zero_conv__bias_left_at_default", "bias is not zero"),
    ("zero_conv__no_bias", "has no bias"),
    ("controlnet_from_unet__shares_the_unets_modules", "shares its storage"),
    ("controlnet_from_unet__decoder_copied_too", "decoder"),
    ("control_residuals__first_skip_dropped", "one per skip tensor"),
    ("controlnet_forward__control_image_ignored", "values differ"),
    ("unet_with_control__mid_residual_forgotten", "values differ"),
])
def test_wrong_implementation_fails_under_record_and_verify(name, expected, tmp_path):
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
