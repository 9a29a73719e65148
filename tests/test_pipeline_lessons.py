"""Every lesson through real nbgrader (sandboxed, trusted verdicts): the correct example gets full
marks, the release stub 0, the partly wrong example what in-process grading of its code gives,
the broken file a reason. Lesson 10's deeper end-to-end cases live in test_pipeline_lesson10.py.
"""

from __future__ import annotations

import shutil

import pytest

from grader.autograde import run
from grader.exercises import lesson
from tests.notebook_code import REPO, in_process_score

pytestmark = [pytest.mark.slow, pytest.mark.extended]
LESSONS = sorted(p.name for p in (REPO / "tests" / "submissions").iterdir()
                 if p.is_dir() and p.name != "10_diffusion_transformers")  # covered in depth elsewhere


@pytest.mark.parametrize("assignment", LESSONS)
def test_examples_and_stub_through_nbgrader(assignment, tmp_path):
    examples = REPO / "tests" / "submissions" / assignment
    batch = tmp_path / "batch"
    shutil.copytree(examples, batch)
    (release,) = sorted((REPO / "release" / assignment).glob("*.ipynb"))
    shutil.copy(release, batch / "stub.ipynb")
    results = {r.student: r for r in run([batch], assignment, tmp_path / "out", jobs=2, progress=False)}
    full = sum(e.points for e in lesson(assignment).EXERCISES.values())
    assert (results["correct"].status, results["correct"].score) == ("graded", full), results["correct"]
    assert (results["stub"].status, results["stub"].score) == ("graded", 0), results["stub"]
    assert results["broken"].status == "invalid" and results["broken"].score == 0
    partial = results["partly_wrong"].score
    assert 0 < partial < full
    assert partial == in_process_score(assignment, batch / "partly_wrong.ipynb")
    for r in results.values():
        if r.feedback:
            html = open(r.feedback).read()
            assert "BEGIN HIDDEN TESTS" not in html and "from grader.exercises import grade" not in html
