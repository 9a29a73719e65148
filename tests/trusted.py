"""Helpers for the per-lesson diagnosis tests: record then judge apart (as trusted grading does:
tests.notebook_code.trusted_verdicts), and the CPU time a failing public check takes."""

from __future__ import annotations

import time
import torch

from grader.exercises import lesson
from tests.notebook_code import public_diagnosis, trusted_verdicts  # noqa: F401 (re-exported)


def timed_public_diagnosis(assignment: str, mistake: str, limit_s: float = 2.0) -> str:
    """The public diagnosis of ``mistake`` and the CPU time it took against ``limit_s`` (one thread,
    so that other processes on a shared machine do not count; caches warm, as in the student's
    kernel after the lesson's setup cell)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        message = public_diagnosis(assignment, mistake)
        spent = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    # Reported, not asserted (no timed assertions in the suite): `pytest -s` shows it, and the
    # README's "Measured here" records it. The search a diagnosis may do is bounded by count in
    # tests/test_compare.py.
    print(f"{mistake}: failing public check {spent:.2f} s of CPU (target {limit_s} s)")
    return message


def warm(assignment: str) -> None:
    """Run every public check once with the solution (builds the stand-ins and caches)."""
    from tests.notebook_code import solution_namespace

    ns = solution_namespace(assignment)
    for name, ex in lesson(assignment).EXERCISES.items():
        ex.public(ns[name])
