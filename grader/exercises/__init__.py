"""Per-lesson checks: ``public`` (what the student's local check runs) and ``hidden`` (grading).

Each lesson module defines ``EXERCISES``: name -> :class:`Exercise`. Hidden-test cells in
the source notebooks call :func:`grade` in one line, so pytest can run every wrong
implementation through the very same function in milliseconds.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Exercise:
    name: str
    points: int
    public: Callable[[Any], str]
    hidden: Callable[[Any], str]


def seed_for(hidden: bool) -> int:
    """Public checks: fixed inputs (seed 0). Hidden tests: a seed drawn at grading time."""
    from ..runtime import fresh_seed

    return fresh_seed() if hidden else 0


def device_for(hidden: bool):
    """Public checks run on the CPU (instant, same everywhere); hidden tests on the GPU when present."""
    import torch

    from ..runtime import device

    return device() if hidden else torch.device("cpu")


def passed(name: str, n: int, source=None, hidden: bool = False) -> str:
    """The success line, with the banner of the weights used."""
    kind = "hidden tests" if hidden else "public checks"
    banner = f" [{source.banner()}]" if source is not None else ""
    return f"{name}: {n} {kind} passed{banner}"


def build(*entries: tuple[str, int, Callable[[Any, bool], str]]) -> dict[str, Exercise]:
    """EXERCISES from (name, points, check(fn, hidden)) triples, in notebook order."""
    return {name: Exercise(name, points, (lambda fn, c=check: c(fn, False)), (lambda fn, c=check: c(fn, True)))
            for name, points, check in entries}


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
    """Hidden test entry point: raises AssertionError with a message unless ``fn`` is right.

    nbgrader scores a graded cell 0 when it writes anything to stderr, so a correct answer
    that emits a warning (or a library that logs) would lose its points: warnings are
    silenced and stderr is sent to stdout while the test runs.
    """
    if os.environ.get("COURSE_TRUSTED_GRADING"):
        # Inside a grading kernel started by SandboxedExecute: TrustedGrade judges this cell
        # outside the student's process and overwrites its output.
        print(f"{name}: graded outside this notebook by the trusted grader")
        return
    with warnings.catch_warnings(), contextlib.redirect_stderr(sys.stdout):
        warnings.simplefilter("ignore")
        _quiet_libraries()
        print(lesson(assignment).EXERCISES[name].hidden(fn))


def _quiet_libraries() -> None:
    import logging

    for lib in ("diffusers", "transformers", "huggingface_hub"):
        logging.getLogger(lib).setLevel(logging.ERROR)
