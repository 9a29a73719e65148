"""The trusted side of grading: judge what a grading kernel recorded.

Runs only in a process the student's code never ran in (nbgrader's own, under
TrustedGrade). For each exercise the cases are rebuilt from the seed the grader chose, the
recorded outputs read back (grader.record: no links followed, sizes capped), and the
exercise's judge computes the references and compares.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from .cases import Verdict, hidden_context, judge_record
from .record import read_entries


def judge_job(lesson: str, record_dir: Path | str, seeds: dict[str, int], device: str = "cpu",
              stopped: dict[str, str] | None = None) -> dict[str, Verdict]:
    """{exercise: Verdict} for every exercise of ``lesson``."""
    from .exercises import lesson as lesson_module

    stopped = stopped or {}
    verdicts: dict[str, Verdict] = {}
    for name, ex in lesson_module(lesson).EXERCISES.items():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            ctx = hidden_context(seeds.get(name, 0), device)
            try:
                cases = list(ex.cases(ctx))
            except Exception as err:  # noqa: BLE001: the grader's own failure, said as such
                verdicts[name] = Verdict(False, f"{name}: the grader could not build its inputs "
                                                f"({type(err).__name__}: {err}); ask your instructor.")
                continue
            entries = read_entries(str(record_dir), name, len(cases), ctx.device)
            verdicts[name] = judge_record(ex, entries, ctx, cases=cases, stopped=stopped.get(name, ""))
    return verdicts
