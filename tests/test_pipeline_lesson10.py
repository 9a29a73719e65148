"""Lesson 10 end to end through real nbgrader: one batch of good, partial, broken and hostile-ish
submissions graded by `course autograde`, scores checked against an in-process grading of the
same code, and every damaged submission given a score and a reason.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from grader.autograde import run
from grader.exercises import lesson
from tests.notebook_code import REPO, in_process_score

pytestmark = pytest.mark.slow

LESSON = "10_diffusion_transformers"
EXAMPLES = REPO / "tests" / "submissions" / LESSON
RELEASE = REPO / "release" / LESSON / "diffusion_transformers.ipynb"
EXERCISES = lesson(LESSON).EXERCISES
MAX = sum(e.points for e in EXERCISES.values())


def _edit_answer(nb, exercise: str, edit) -> None:
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == f"{exercise}_answer":
            cell.source = edit(cell.source)
            return
    raise KeyError(exercise)


def _inject(source: str, func: str, lines: str) -> str:
    """Insert ``lines`` as the first statements of ``func``'s body (after its docstring)."""
    m = re.search(rf"def {func}\(.*?\):\n(    \"\"\".*?\"\"\"\n)?", source, re.S)
    return source[: m.end()] + "".join(f"    {l}\n" for l in lines.splitlines()) + source[m.end():]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    flat = root / "flat"
    flat.mkdir()
    for f in EXAMPLES.glob("*.ipynb"):
        shutil.copy(f, flat / f.name)
    shutil.copy(RELEASE, flat / "stub.ipynb")
    correct = nbformat.read(EXAMPLES / "correct.ipynb", as_version=4)

    nb = nbformat.from_dict(correct)
    _edit_answer(nb, "patchify", lambda s: "import sys, warnings\n" + _inject(
        s, "patchify", 'warnings.warn("a student warning")\nprint("debug output", file=sys.stderr)'))
    nbformat.write(nb, flat / "warns.ipynb")

    nb = nbformat.from_dict(correct)
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    nbformat.write(nb, flat / "deleted_tests.ipynb")

    nb = nbformat.from_dict(correct)
    for c in nb.cells:
        c.metadata = {}
    nbformat.write(nb, flat / "stripped_metadata.ipynb")

    nb = nbformat.from_dict(correct)
    for c in nb.cells:  # a student who "fixes" the tests
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.source = "assert True"
    _edit_answer(nb, "unpatchify", lambda s: _inject(s, "unpatchify", "return tokens"))
    nbformat.write(nb, flat / "edited_tests.ipynb")

    nb = nbformat.from_dict(correct)
    _edit_answer(nb, "timestep_embedding", lambda s: _inject(s, "timestep_embedding", 'raise ValueError("oops")'))
    nbformat.write(nb, flat / "raises.ipynb")


    layout = root / "submitted" / "renamed" / LESSON
    layout.mkdir(parents=True)
    shutil.copy(EXAMPLES / "correct.ipynb", layout / "my answers (final).ipynb")

    out = root / "out"
    results = run([flat, root / "submitted"], LESSON, out, jobs=2, progress=False)
    return {r.student: r for r in results}, out, flat


def test_hanging_function_costs_only_the_cells_that_call_it(tmp_path, monkeypatch):
    nb = nbformat.read(EXAMPLES / "correct.ipynb", as_version=4)
    _edit_answer(nb, "dit_forward", lambda s: _inject(s, "dit_forward", "while True:\n    pass"))
    nbformat.write(nb, tmp_path / "hangs.ipynb")
    monkeypatch.setenv("COURSE_CELL_TIMEOUT", "20")  # nbgrader's per-cell limit; room for a slow setup cell
    (r,) = run([tmp_path / "hangs.ipynb"], LESSON, tmp_path / "out", progress=False)
    assert r.status == "graded" and r.score == MAX - EXERCISES["dit_forward"].points
    assert "timeout" in r.exercises["dit_forward"]["message"].lower()


def test_every_submission_has_a_result(graded):
    results, out, flat = graded
    names = {p.stem for p in flat.glob("*.ipynb")} | {"renamed"}
    assert set(results) == names
    assert all((out / "results" / f"{n}.json").is_file() for n in names)
    rows = (out / "grades.csv").read_text().splitlines()
    assert len(rows) == len(names) + 1 and rows[0].startswith("student,assignment,status,score")


@pytest.mark.parametrize("student", ["correct", "warns", "deleted_tests", "stripped_metadata", "renamed"])
def test_full_marks(graded, student):
    r = graded[0][student]
    assert (r.status, r.score, r.max_score) == ("graded", MAX, MAX), r


def test_stub_scores_zero(graded):
    r = graded[0]["stub"]
    assert r.status == "graded" and r.score == 0
    assert all("not implemented yet" in e["message"] for e in r.exercises.values())


@pytest.mark.parametrize("student", ["partly_wrong", "raises"])
def test_partial_scores_match_in_process_grading(graded, student):
    results, _, flat = graded
    assert 0 < results[student].score < MAX
    assert results[student].score == in_process_score(LESSON, flat / f"{student}.ipynb")


def test_broken_json_gets_zero_and_a_reason(graded):
    r = graded[0]["broken"]
    assert (r.status, r.score) == ("invalid", 0) and "not valid JSON" in r.notes[0]


def test_damage_is_reported(graded):
    results = graded[0]
    assert any("deleted in the submission, restored" in n for n in results["deleted_tests"].notes)
    assert any("lost their nbgrader metadata" in n for n in results["stripped_metadata"].notes)
    assert any("graded as diffusion_transformers.ipynb" in n for n in results["renamed"].notes)


def test_edited_tests_earn_nothing_extra(graded):
    r = graded[0]["edited_tests"]
    assert r.score == MAX - EXERCISES["unpatchify"].points - EXERCISES["dit_forward"].points


def test_raising_cell_reports_the_students_exception(graded):
    r = graded[0]["raises"]
    assert "ValueError: oops" in r.exercises["timestep_embedding"]["message"]
    assert "timestep_embedding" in r.exercises["dit_block"]["message"]


def test_feedback_shows_messages_but_no_hidden_tests(graded):
    results, out, _ = graded
    for r in results.values():
        if r.status != "graded":
            continue
        html = (out / "feedback" / r.student / LESSON / "diffusion_transformers.html").read_text()
        assert "BEGIN HIDDEN TESTS" not in html and "grade(LESSON" not in html
        assert "grader.exercises" not in html
    html = (out / "feedback" / "partly_wrong" / LESSON / "diffusion_transformers.html").read_text()
    assert "column-major order" in html  # the diagnosis reaches the student
    assert "public check skipped while autograding" in html  # grading kernels skip the otter checks


def test_resume_reuses_finished_results(graded, tmp_path):
    results, out, flat = graded
    before = json.loads((out / "results" / "correct.json").read_text())
    again = run([flat / "correct.ipynb"], LESSON, out, progress=False)
    assert again[0].seconds == before["seconds"]  # not regraded


# ------------------------------------------------ the feedback page (grader/feedback.py, issue 11)
def _page(out, student: str) -> str:
    return (out / "feedback" / student / LESSON / "diffusion_transformers.html").read_text()


def _text(page: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", page))


def test_feedback_names_each_exercise_with_its_score(graded):
    results, out, _ = graded
    page = _page(out, "partly_wrong")
    toc = page[page.index('<div id="toc">'):page.index("</ol>", page.index('<div id="toc">'))]
    r = results["partly_wrong"]
    for name, ex in EXERCISES.items():
        assert f'>{name}</a> — {r.exercises[name]["score"]:g} / {ex.points}</li>' in toc, name
        assert f"Hidden tests: <b>{name}</b>" in page
    assert "Test cell" not in page and "Grade cell:" not in page
    assert f"(Score: {r.score:.1f} / {MAX:.1f})" in page  # nbgrader's own summary stays


def test_feedback_renders_formulas_offline(graded):
    from grader.feedback import mathjax_script

    _, out, _ = graded
    page = _page(out, "correct")
    assert not re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page)
    assert "cdnjs" not in page and "window.MathJax" in page and mathjax_script()[-500:] in page
    assert "\\mathbb{R}" in page  # the lesson's formulas, for MathJax to typeset


def test_demo_cells_in_feedback_say_what_is_unfinished_without_server_paths(graded):
    """Demos over unfinished exercises print one line (checks.demo), not a traceback; what tracebacks
    remain (an answer cell's own error) are trimmed, tests/test_feedback_page.py."""
    _, out, _ = graded
    text = _text(_page(out, "stub"))
    assert "demo skipped: `dit_block` is not finished yet" in text
    for server_path in ("site-packages", sys.prefix, str(REPO), "course-autograde-"):
        assert server_path not in text, server_path
    assert "SubmissionError: patchify: not implemented yet" in text  # graded cells' messages untouched


def test_unreadable_submission_gets_a_page_that_says_how_to_fix_it(graded):
    results, out, _ = graded
    r = results["broken"]
    assert r.feedback == str(out / "feedback" / "broken" / LESSON / "diffusion_transformers.html")
    page = Path(r.feedback).read_text()
    assert "the notebook file is not valid JSON: line " in page and " column " in r.notes[0]
    assert "How to fix it" in page and f"(Score: 0 / {MAX})" in page
    saved = json.loads((out / "results" / "broken.json").read_text())
    assert (saved["status"], saved["score"], saved["feedback"]) == ("invalid", 0, r.feedback)
