"""Proof for issue 5: hostile submissions graded in one batch with a correct one through plain
`nbgrader autograde` all score 0, the correct one keeps full marks, and the course is untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grader import sandbox
from tests.hostile_cases import CASES
from tests.notebook_code import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sandbox.available(), reason="needs root, unshare, setpriv")]
LESSON = "10_diffusion_transformers"
NB = "diffusion_transformers.ipynb"


def _digest(paths) -> dict[str, str]:
    out = {}
    for base in paths:
        for f in sorted(Path(base).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and ".pytest_cache" not in f.parts:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _nbgrader(course: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env.pop("COURSE_ROOT", None)
    env["COURSE_CELL_TIMEOUT"] = "20"
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course = tmp_path_factory.mktemp("hostile") / "course"
    course.mkdir()
    shutil.copytree(REPO / "source", course / "source")
    shutil.copy(REPO / "nbgrader_config.py", course)
    assert _nbgrader(course, "generate_assignment", LESSON, "--force").returncode == 0
    stub = nbformat.read(REPO / "release" / LESSON / NB, as_version=4)
    for name, attack in CASES.items():
        nb = nbformat.from_dict(stub)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "patchify_answer":
                cell.source = attack.strip() + "\n\n\n" + cell.source
        folder = course / "submitted" / name / LESSON
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NB)
    good = course / "submitted" / "zz_correct" / LESSON
    good.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "submissions" / LESSON / "correct.ipynb", good / NB)
    Path("/tmp/course-pwned-marker").unlink(missing_ok=True)
    protected = [REPO / "grader", REPO / "source", REPO / "release", REPO / "solutions", REPO / "tests",
                 course / "source", course / "release"]
    before = _digest(protected) | {str(course / "nbgrader_config.py"): hashlib.sha256(
        (course / "nbgrader_config.py").read_bytes()).hexdigest()}
    start = time.perf_counter()
    done = _nbgrader(course, "autograde", LESSON)
    elapsed = time.perf_counter() - start
    after = _digest(protected) | {str(course / "nbgrader_config.py"): hashlib.sha256(
        (course / "nbgrader_config.py").read_bytes()).hexdigest()}
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s.student.id: s.score for s in gb.assignment_submissions(LESSON)}
    return scores, before, after, done, elapsed, course


def test_correct_submission_keeps_full_marks(batch):
    scores, *_ = batch
    assert scores["zz_correct"] == 18, batch[3].stdout[-3000:]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_submission_scores_zero(batch, name):
    scores, *_ = batch
    assert scores.get(name, 0) == 0, f"{name} earned {scores.get(name)}"


def test_course_and_package_are_untouched(batch):
    _, before, after, *_ = batch
    changed = [k for k in before if before[k] != after.get(k)]
    assert not changed, changed[:5]
    assert not Path("/tmp/course-pwned-marker").exists()


def test_batch_finished_every_student(batch):
    scores, _, _, done, elapsed, course = batch
    assert set(scores) == set(CASES) | {"zz_correct"}
    for name in list(CASES) + ["zz_correct"]:
        assert (course / "autograded" / name / LESSON / NB).is_file(), name
    print(f"hostile batch of {len(scores)} graded in {elapsed:.0f} s")
