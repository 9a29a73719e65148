"""Record/verify (grader.replay): the trusted verdict equals the direct hidden test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import replay
from grader.exercises import lesson
from tests.notebook_code import answer_cells, trusted_verdicts, wrong_implementations, wrong_module

LESSON = "10_diffusion_transformers"
EXERCISES = lesson(LESSON).EXERCISES
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


def _verdicts(cells, tmp_path: Path):
    return trusted_verdicts(LESSON, cells, tmp_path, seed_base=1234, per_exercise_s=60)


def test_solution_passes_every_exercise(tmp_path):
    verdicts = _verdicts([PRELUDE, *answer_cells(LESSON).values()], tmp_path)
    assert all(v["passed"] for v in verdicts.values()), verdicts


@pytest.mark.parametrize("exercise,name", [pytest.param(e, n, id=n) for e, _, n in wrong_implementations(LESSON)[::4]])
def test_wrong_implementation_fails_its_exercise(exercise, name, tmp_path):
    src = Path(wrong_module(LESSON).__file__).read_text()
    cells = [PRELUDE, *answer_cells(LESSON).values(), src, f"{exercise} = {name}"]
    verdicts = _verdicts(cells, tmp_path)
    assert not verdicts[exercise]["passed"]
    assert verdicts["unpatchify" if exercise != "unpatchify" else "patchify"]["passed"]


def test_tampering_inside_the_recording_process_earns_nothing(tmp_path):
    attack = """
import torch, grader.replay, grader.compare
grader.compare.assert_close = lambda *a, **k: None
_orig = grader.replay.Recorder.add_result
def fake(self, name, case, value):
    return _orig(self, name, case, torch.zeros(1))   # claim an answer
grader.replay.Recorder.add_result = fake
"""
    import grader.compare

    # The attack runs in this process here (in grading it runs in the sandbox): undo it after.
    # Verification then runs untouched, as it does in nbgrader's own process.
    seeds = {name: 1234 + i for i, name in enumerate(EXERCISES)}
    saved = replay.Recorder.add_result, grader.compare.assert_close
    try:
        replay.record(LESSON, [PRELUDE, attack, *answer_cells(LESSON).values()], seeds, tmp_path / "rec", 60)
    finally:
        replay.Recorder.add_result, grader.compare.assert_close = saved
    verdicts = replay.verify(LESSON, seeds, tmp_path / "rec")
    assert not any(v["passed"] for v in verdicts.values())


def test_missing_or_garbage_record_fails_cleanly(tmp_path):
    seeds = {name: 1 for name in EXERCISES}
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "manifest.json").write_text("{not json")
    (tmp_path / "rec" / "outputs.safetensors").write_bytes(b"\x00" * 64)
    verdicts = replay.verify(LESSON, seeds, tmp_path / "rec")
    assert not any(v["passed"] for v in verdicts.values())
    assert "no recorded result" in verdicts["patchify"]["message"]
