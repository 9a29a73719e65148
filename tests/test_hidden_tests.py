"""Every lesson's hidden tests in-process: the solution passes, every wrong implementation fails.

Lessons are found by convention (source/NN_slug/, grader/exercises/slug.py,
tests/wrong/slug.py); per-lesson files keep only their diagnosis checks.
"""

from __future__ import annotations

import importlib

import pytest

from grader.exercises import lesson
from tests.notebook_code import REPO, namespace_with_wrong, solution_namespace, wrong_implementations


def _lessons() -> list[str]:
    out = []
    for folder in sorted((REPO / "source").iterdir()):
        slug = folder.name.split("_", 1)[-1]
        if (REPO / "grader" / "exercises" / f"{slug}.py").is_file() and (REPO / "tests" / "wrong" / f"{slug}.py").is_file():
            out.append(folder.name)
    return out


LESSONS = _lessons()
SOLUTION_CASES = [pytest.param(l, n, id=f"{l}-{n}") for l in LESSONS for n in lesson(l).EXERCISES]
WRONG_CASES = [pytest.param(l, e, n, id=f"{l}-{n}") for l in LESSONS for e, _, n in wrong_implementations(l)]
RIGHT_CASES = [pytest.param(l, e, n, id=f"{l}-{n}") for l in LESSONS for e, _, n in wrong_implementations(l, "right")]


@pytest.mark.parametrize("assignment,name", SOLUTION_CASES)
def test_solution_passes_public_and_hidden(assignment, name):
    ex = lesson(assignment).EXERCISES[name]
    ns = solution_namespace(assignment)
    assert "public checks passed" in ex.public(ns[name])
    assert "hidden tests passed" in ex.hidden(ns[name])


@pytest.mark.parametrize("assignment,exercise,name", WRONG_CASES)
def test_hidden_test_rejects_wrong_implementation(assignment, exercise, name):
    ns = namespace_with_wrong(assignment, exercise, name)
    with pytest.raises(AssertionError) as err:
        lesson(assignment).EXERCISES[exercise].hidden(ns[exercise])
    assert exercise in str(err.value)  # the message names the exercise it is about


@pytest.mark.parametrize("assignment,exercise,name", RIGHT_CASES)
def test_correct_alternative_passes_public_and_hidden(assignment, exercise, name):
    ns = namespace_with_wrong(assignment, exercise, name, kind="right")
    ex = lesson(assignment).EXERCISES[exercise]
    assert "public checks passed" in ex.public(ns[exercise])
    assert "hidden tests passed" in ex.hidden(ns[exercise])


@pytest.mark.parametrize("assignment", LESSONS)
def test_every_exercise_has_at_least_two_correct_alternatives(assignment):
    right = wrong_implementations(assignment, "right")
    counts = {name: sum(1 for e, _, _ in right if e == name) for name in lesson(assignment).EXERCISES}
    assert all(n >= 2 for n in counts.values()), counts


@pytest.mark.parametrize("assignment", LESSONS)
def test_every_exercise_has_at_least_five_wrong_implementations(assignment):
    wrong = wrong_implementations(assignment)
    counts = {name: sum(1 for e, _, _ in wrong if e == name) for name in lesson(assignment).EXERCISES}
    assert all(n >= 5 for n in counts.values()), counts


@pytest.mark.parametrize("assignment", LESSONS)
def test_unfinished_or_missing_answers_fail_with_a_clear_message(assignment):
    def stub(*args):
        raise NotImplementedError()

    for name, ex in lesson(assignment).EXERCISES.items():
        with pytest.raises(AssertionError, match="not implemented yet"):
            ex.hidden(stub)
        with pytest.raises(AssertionError, match="not defined"):
            ex.hidden(None)


@pytest.mark.parametrize("assignment", LESSONS)
def test_partly_wrong_example_recipe_names_real_functions(assignment):
    module = importlib.import_module(f"tests.wrong.{assignment.split('_', 1)[-1]}")
    replace, stubs = module.PARTLY_WRONG
    assert all(hasattr(module, fn) for fn in replace.values())


@pytest.mark.parametrize("assignment", LESSONS)
def test_notebook_points_match_the_exercises(assignment):
    import json

    from tests.notebook_code import source_path

    nb = json.loads(source_path(assignment).read_text())
    graded = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in nb["cells"]
              if c["metadata"].get("nbgrader", {}).get("grade")}
    assert graded == {f"{name}_hidden": ex.points for name, ex in lesson(assignment).EXERCISES.items()}
