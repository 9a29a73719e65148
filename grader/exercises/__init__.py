"""Per-lesson exercises: each lesson module defines ``EXERCISES``: name -> :class:`grader.cases.Exercise`.

An exercise declares its cases (inputs from a seed) and a judge (reference + comparison);
see :mod:`grader.cases`. Hidden-test cells in the source notebooks call :func:`grade` in
one line, so pytest runs every wrong implementation through the same code in milliseconds.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import warnings
from typing import Any

from ..cases import Case, Context, Exercise  # noqa: F401  (the API lesson modules use)

#: Set by the trusted grader in a grading kernel: the folder the kernel records into and the seeds.
RECORD_DIR_ENV = "COURSE_RECORD_DIR"
SEEDS_ENV = "COURSE_SEEDS"
DEVICE_ENV = "COURSE_GRADE_DEVICE"


def exercises(*items: Exercise) -> dict[str, Exercise]:
    """``EXERCISES`` in notebook order."""
    return {ex.name: ex for ex in items}


def lesson(assignment: str):
    """The exercises module of an assignment folder: ``10_diffusion_transformers`` ->
    ``grader.exercises.diffusion_transformers`` (one module per lesson, named after it)."""
    slug = assignment.split("_", 1)[-1]
    try:
        return importlib.import_module(f"grader.exercises.{slug}")
    except ModuleNotFoundError as exc:
        if exc.name != f"grader.exercises.{slug}":
            raise
        raise KeyError(f"no exercises module grader/exercises/{slug}.py for {assignment!r}") from None


def grade(assignment: str, name: str, fn: Any) -> None:
    """Hidden test entry point (one line in each graded cell).

    In a grading kernel (the trusted grader set ``COURSE_RECORD_DIR``): only record what
    ``fn`` returns on the grader's inputs; the verdict is decided outside this process and
    replaces this cell's output. Elsewhere: run the hidden tests in-process, raising
    AssertionError with a message unless ``fn`` is right.

    nbgrader scores a graded cell 0 when it writes anything to stderr, so warnings are
    silenced and stderr is sent to stdout while the test runs.
    """
    ex = lesson(assignment).EXERCISES[name]
    with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("ignore")
        _quiet_libraries()
        folder = os.environ.get(RECORD_DIR_ENV)
        if folder:
            from ..cases import hidden_context, record
            from ..record import write_entry

            seeds = json.loads(os.environ.get(SEEDS_ENV, "{}"))
            ctx = hidden_context(seeds.get(name, 0), os.environ.get(DEVICE_ENV) or None)
            record(ex, fn, ctx, sink=lambda i, entry: write_entry(folder, name, i, entry))
            print(f"{name}: recorded; the trusted grader decides this cell outside the notebook")
            return
        print(ex.hidden(fn))


def _quiet_libraries() -> None:
    import logging

    for lib in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(lib).setLevel(logging.ERROR)
