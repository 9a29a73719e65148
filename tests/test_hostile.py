"""Hostile submissions graded in one batch with a correct one, through plain `nbgrader autograde`
and through `course autograde`: every hostile one scores 0, the correct one keeps full marks,
the course, the package, the gradebook and a canary file outside the course are unchanged, no
solution or hidden-test text appears in any output, and no process is left afterwards.
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
from tests.hostile_cases import AFTER, CANARY, CASES, DAEMON_MARKER, NOTEBOOK_ATTACKS, UNREADABLE
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


def write_hostile_submissions(folder: Path) -> None:
    """submitted/<case>/<lesson>/<nb> for every hostile case, and zz_correct."""
    import json

    stub = nbformat.read(REPO / "release" / LESSON / NB, as_version=4)
    for name, attack in CASES.items():
        nb = nbformat.from_dict(stub)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "patchify_answer":
                after = attack.startswith(AFTER)
                code = attack[len(AFTER):] if after else attack
                cell.source = (cell.source + "\n\n" + code.strip()) if after else (code.strip() + "\n\n\n" + cell.source)
        (folder / name / LESSON).mkdir(parents=True)
        nbformat.write(nb, folder / name / LESSON / NB)
    for name, edit in NOTEBOOK_ATTACKS.items():
        (folder / name / LESSON).mkdir(parents=True)
        raw = json.loads((REPO / "release" / LESSON / NB).read_text())
        (folder / name / LESSON / NB).write_text(json.dumps(edit(raw)))
    (folder / "zz_correct" / LESSON).mkdir(parents=True)
    shutil.copy(REPO / "tests" / "submissions" / LESSON / "correct.ipynb", folder / "zz_correct" / LESSON / NB)


HOSTILE = list(CASES) + list(NOTEBOOK_ATTACKS)


def leftover_processes() -> list[str]:
    """Processes of a graded submission still running: uid nobody, or the daemon's marker."""
    ps = subprocess.run(["ps", "-ww", "-eo", "user,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if line.startswith("nobody") or DAEMON_MARKER in line]


def json_escaped(text: str) -> str:
    import json

    return json.dumps(text)[1:-1]


def solution_text_in(paths) -> list[str]:
    """Files under ``paths`` whose student-visible text (feedback, results, cell outputs) quotes a
    solution line or a hidden test."""
    from tests.notebook_code import answer_cells

    import json

    release = (REPO / "release" / LESSON / NB).read_text()
    lines = [l.strip() for src in answer_cells(LESSON).values() for l in src.splitlines()
             if len(l.strip()) > 30 and json_escaped(l.strip()) not in release]   # solution-only lines
    source = json.loads((REPO / "source" / LESSON / NB).read_text())
    hidden = [l.strip() for c in source["cells"] if c["metadata"].get("nbgrader", {}).get("grade")
              for l in "".join(c["source"]).splitlines() if l.strip().startswith("grade(")]
    # Not the bare markers: the attackers' own code (shown in their feedback) contains them.
    needles = [*lines[:40], *hidden]
    assert lines and hidden
    hits = []
    for base in paths:
        for f in Path(base).rglob("*"):
            if f.is_file() and f.suffix in (".ipynb", ".html", ".json", ".csv"):
                text = f.read_text(errors="ignore")
                if f.suffix == ".ipynb":   # instructor-side notebooks hold the hidden tests: only outputs count
                    import json

                    text = json.dumps([c.get("outputs", []) for c in json.loads(text)["cells"]])
                hits += [f"{f}: {n[:40]}" for n in needles if n in text or json_escaped(n) in text]
    return hits


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    course = tmp_path_factory.mktemp("hostile") / "course"
    course.mkdir()
    shutil.copytree(REPO / "source", course / "source")
    shutil.copy(REPO / "nbgrader_config.py", course)
    assert _nbgrader(course, "generate_assignment", LESSON, "--force").returncode == 0
    write_hostile_submissions(course / "submitted")
    Path(CANARY).write_text("canary")
    Path("/tmp/course-pwned-marker").unlink(missing_ok=True)
    protected = [REPO / "grader", REPO / "source", REPO / "release", REPO / "solutions", REPO / "tests",
                 course / "source", course / "release"]
    before = _digest(protected) | {str(course / "nbgrader_config.py"): hashlib.sha256(
        (course / "nbgrader_config.py").read_bytes()).hexdigest()}
    start = time.perf_counter()
    done = _nbgrader(course, "autograde", LESSON)
    elapsed = time.perf_counter() - start
    _nbgrader(course, "generate_feedback", LESSON)
    after = _digest(protected) | {str(course / "nbgrader_config.py"): hashlib.sha256(
        (course / "nbgrader_config.py").read_bytes()).hexdigest()}
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s.student.id: s.score for s in gb.assignment_submissions(LESSON)}
    return scores, before, after, done, elapsed, course


def test_correct_submission_keeps_full_marks(batch):
    scores, *_ = batch
    assert scores["zz_correct"] == 18, batch[3].stdout[-3000:]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_submission_scores_zero(batch, name):
    scores, *_ = batch
    assert scores.get(name, 0) == 0, f"{name} earned {scores.get(name)}"


def test_course_and_package_are_untouched(batch):
    _, before, after, *_ = batch
    changed = [k for k in before if before[k] != after.get(k)]
    assert not changed, changed[:5]
    assert not Path("/tmp/course-pwned-marker").exists()
    assert Path(CANARY).read_text() == "canary" and not Path(CANARY).is_symlink()


def test_gradebook_and_outputs_are_intact(batch):
    scores, _, _, _, _, course = batch
    assert (course / "gradebook.db").read_bytes()[:15] == b"SQLite format 3"
    for name in [n for n in HOSTILE if n not in UNREADABLE] + ["zz_correct"]:
        folder = course / "autograded" / name / LESSON
        assert not any(p.is_symlink() for p in folder.rglob("*")), name
        assert sorted(p.name for p in folder.iterdir()) in ([NB], [NB, "timestamp.txt"]), name
    assert not solution_text_in([course / "autograded", course / "feedback"])
    assert len(list((course / "feedback").rglob("*.html"))) >= len(HOSTILE) - len(UNREADABLE)


def test_no_process_is_left(batch):
    assert not leftover_processes()


def test_batch_finished_every_student(batch):
    scores, _, _, done, elapsed, course = batch
    assert set(scores) >= (set(HOSTILE) - UNREADABLE) | {"zz_correct"}
    for name in UNREADABLE:
        assert f"for student '{name}'" in done.stdout + done.stderr   # an error for that student alone
    for name in [n for n in HOSTILE if n not in UNREADABLE] + ["zz_correct"]:
        assert (course / "autograded" / name / LESSON / NB).is_file(), name
    print(f"hostile batch of {len(scores)} graded in {elapsed:.0f} s")


@pytest.mark.extended
def test_course_autograde_batch(tmp_path):
    """The same hostile batch through `course autograde -j 2`: scores, canary, outputs, processes."""
    import csv

    submitted = tmp_path / "submitted"
    write_hostile_submissions(submitted)
    Path(CANARY).write_text("canary")
    out = tmp_path / "out"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               COURSE_CELL_TIMEOUT="20")
    done = subprocess.run([sys.executable, "-m", "grader.cli", "autograde", str(submitted), "-a", LESSON, "-o", str(out),
                           "-j", "2", "--no-progress"], env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {r["student"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert float(rows["zz_correct"]["score"]) == 18
    for name in HOSTILE:
        assert float(rows[name]["score"]) == 0, (name, rows[name])
    for name in UNREADABLE:
        assert rows[name]["status"] == "invalid" and "not a readable notebook" in rows[name]["notes"]
    assert Path(CANARY).read_text() == "canary"
    assert not solution_text_in([out])
    assert not leftover_processes()
