"""Lesson 2's public checks name the classic mistakes quickly, and its answers survive trusted grading.

Generic pass/fail cases (solution passes, every wrong implementation fails, stubs): test_hidden_tests.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.exercises import lesson
from tests.notebook_code import answer_cells, wrong_module
from tests.trusted import timed_public_diagnosis, trusted_verdicts, warm

LESSON = "02_controlnet_in_practice"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm(LESSON)


@pytest.mark.parametrize("mistake,expected", [
    ("canny_control_image__grayscale_first", "grayscale"),
    ("canny_control_image__values_in_0_255", "[0, 255]"),
    ("canny_control_image__hwc_not_transposed", "permuted by"),
    ("canny_control_image__height_width_swapped", "shape"),
    ("canny_control_image__inverted_edges", "inverted"),
    ("canny_control_image__calls_the_pipeline_processor", "calls"),
    ("depth_control_image__far_is_bright", "not inverted"),
    ("depth_control_image__min_max", "min-max"),
    ("depth_control_image__batch_wide_percentiles", "whole batch"),
    ("openpose_image__bgr_canvas", "BGR"),
    ("openpose_image__limbs_not_dimmed", "60%"),
    ("openpose_image__joints_under_the_limbs", "joints drawn first"),
    ("openpose_image__x_and_y_swapped", "x and y swapped"),
    ("multi_controlnet_residuals__unscaled_sum", "without its conditioning scale"),
    ("multi_controlnet_residuals__averaged", "averaged"),
    ("control_schedule__start_judged_by_step_end", "one step too late"),
    ("control_schedule__end_judged_by_step_start", "one step too long"),
    ("control_schedule__keep_mask_only", "without the conditioning scales"),
    ("guess_mode_scales__linear_ramp", "linear ramp"),
    ("guess_mode_scales__reversed", "reversed"),
    ("guess_mode_scales__scale_forgotten", "conditioning_scale 0.5"),
    ("openpose_image__missing_joints_drawn_at_the_corner", "17 of 18 keypoints"),
])
def test_public_check_diagnoses_the_classic_mistake(mistake, expected):
    message = timed_public_diagnosis(LESSON, mistake)
    assert expected in message, message


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path / "rec", seed_base=987)


def test_solution_passes_every_exercise_under_record_and_judge(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts


@pytest.mark.parametrize("name", ["multi_controlnet_residuals__mid_from_the_last_net_only",
                                  "openpose_image__bgr_canvas", "control_schedule__inclusive_boundaries"])
def test_wrong_implementation_fails_under_record_and_judge(name, tmp_path):
    exercise = name.split("__")[0]
    src = Path(wrong_module(LESSON).__file__).read_text()
    cells = [PRELUDE, *answer_cells(LESSON).values(), src, f"{exercise} = {name}"]
    verdicts = _verdicts(cells, tmp_path)
    assert not verdicts[exercise]["passed"], verdicts[exercise]
    assert verdicts["guess_mode_scales"]["passed"]
