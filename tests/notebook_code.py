"""Wrong implementations run inside the source notebook's answers, so hidden tests run in-process."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path


from grader.notebook_code import REPO, answer_cells, solution_namespace, source_path  # noqa: F401


def wrong_module(assignment: str, kind: str = "wrong"):
    slug = assignment.split("_", 1)[1]
    return importlib.import_module(f"tests.{kind}.{slug}")


def right_module(assignment: str):
    """tests/right/<slug>.py (correct alternatives), or None when the lesson has none yet."""
    try:
        return wrong_module(assignment, "right")
    except ModuleNotFoundError:
        return None


def wrong_implementations(assignment: str, kind: str = "wrong") -> list[tuple[str, str, str]]:
    """(exercise, mistake, name) for every function named <exercise>__<mistake> in tests/<kind>/<slug>.py."""
    module = wrong_module(assignment, kind) if kind == "wrong" else right_module(assignment)
    if module is None:
        return []
    out = []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if "__" in name and not name.startswith("_") and fn.__module__ == module.__name__:
            exercise, mistake = name.split("__", 1)
            out.append((exercise, mistake, name))
    return out


def namespace_with_wrong(assignment: str, exercise: str, name: str, kind: str = "wrong") -> dict:
    """The solution namespace with ``exercise`` replaced by the wrong function ``name``.

    The wrong module's source runs inside the namespace, so its helpers resolve to the
    correct answers of the other exercises.
    """
    ns = solution_namespace(assignment)
    module = wrong_module(assignment, kind)
    exec(compile(Path(module.__file__).read_text(), module.__file__, "exec"), ns)
    ns[exercise] = ns[name]
    return ns


def public_diagnosis(assignment: str, mistake: str) -> str:
    """The public check's failure message for the wrong implementation ``mistake`` (<exercise>__<what>)."""
    import pytest

    from grader.exercises import lesson

    exercise = mistake.split("__")[0]
    ns = namespace_with_wrong(assignment, exercise, mistake)
    with pytest.raises(AssertionError) as err:
        lesson(assignment).EXERCISES[exercise].public(ns[exercise])
    message = str(err.value)
    assert "def " not in message  # never the reference's code
    return message


def in_process_score(assignment: str, path) -> float:
    """Grade a notebook's answer cells in-process with the same hidden tests (independent of nbgrader)."""
    import nbformat

    from grader.exercises import lesson

    nb = nbformat.read(path, as_version=4)
    code = "\n\n".join(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
    ns: dict = {}
    exec("import math, torch\nimport torch.nn.functional as F\n" + code, ns)
    total = 0.0
    for name, ex in lesson(assignment).EXERCISES.items():
        try:
            ex.hidden(ns.get(name))
            total += ex.points
        except AssertionError:
            pass
    return total


def trusted_verdicts(assignment: str, cells: list[str], folder, *, seed_base: int, per_exercise_s: int = 60) -> dict:
    """What trusted grading decides for ``cells``, in-process: the cells run as a grading kernel
    runs them, each hidden-test cell records (grader.exercises.grade with the job's folder and
    seeds set), then grader.verify judges the record. {exercise: {"passed", "message", "flags"}}.
    ``per_exercise_s`` is kept for callers; the in-process run has no per-cell limit.
    """
    import contextlib
    import io
    import json
    import os
    from pathlib import Path

    from grader.exercises import DEVICE_ENV, RECORD_DIR_ENV, SEEDS_ENV, grade, lesson
    from grader.verify import judge_job

    names = list(lesson(assignment).EXERCISES)
    seeds = {name: seed_base + i for i, name in enumerate(names)}
    record = Path(folder) / "rec"
    record.mkdir(parents=True, exist_ok=True)
    ns: dict = {"__name__": "__main__"}
    for src in cells:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(src, "<submission>", "exec"), ns)
        except BaseException:  # noqa: BLE001: a failing cell is skipped, as in the kernel
            continue
    saved = {k: os.environ.get(k) for k in (RECORD_DIR_ENV, SEEDS_ENV, DEVICE_ENV)}
    os.environ.update({RECORD_DIR_ENV: str(record), SEEDS_ENV: json.dumps(seeds), DEVICE_ENV: "cpu"})
    try:
        for name in names:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    grade(assignment, name, ns.get(name))
            except BaseException:  # noqa: BLE001
                pass
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    verdicts = judge_job(assignment, record, seeds, "cpu")
    return {name: {"passed": v.passed, "message": v.message, "flags": v.flags} for name, v in verdicts.items()}


def assert_round_trip(assignment: str, name: str, folder) -> None:
    """Record ``name``'s hidden cases to files (untrusted side), read them back and judge them
    (trusted side): the solution passes and its first wrong implementation fails, as in-process."""
    from grader.cases import hidden_context, judge_record, record
    from grader.exercises import lesson
    from grader.record import read_entries, write_entry

    ex = lesson(assignment).EXERCISES[name]
    wrong = next(n for e, _, n in wrong_implementations(assignment) if e == name)
    for fn, ok in ((solution_namespace(assignment)[name], True),
                   (namespace_with_wrong(assignment, name, wrong)[name], False)):
        sub = folder / ("right" if ok else "wrong")
        sub.mkdir()
        n = len(record(ex, fn, hidden_context(5, "cpu"), sink=lambda i, e: write_entry(str(sub), name, i, e)))
        verdict = judge_record(ex, read_entries(str(sub), name, n), hidden_context(5, "cpu"))
        assert verdict.passed is ok, verdict.message
