"""Helpers for the per-lesson diagnosis tests: record then judge apart (as trusted grading does),
and the time a failing public check takes."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from grader.cases import hidden_context, judge_record, record
from grader.exercises import lesson
from grader.record import read_entries, write_entry
from tests.notebook_code import public_diagnosis


def trusted_verdicts(assignment: str, cells: list[str], folder: Path, *, seed_base: int) -> dict:
    """Run ``cells``, record every exercise's hidden cases to files (untrusted side: grader.cases.record,
    grader.record.write_entry), then read the files back and judge them against cases rebuilt from
    the same seeds (trusted side: grader.record.read_entries, grader.cases.judge_record)."""
    ns: dict = {}
    for cell in cells:
        exec(compile(cell, "<cell>", "exec"), ns)
    folder.mkdir(parents=True, exist_ok=True)
    verdicts = {}
    for i, (name, ex) in enumerate(lesson(assignment).EXERCISES.items()):
        entries = record(ex, ns.get(name), hidden_context(seed_base + i),
                         sink=lambda k, entry, name=name: write_entry(str(folder), name, k, entry))
        back = read_entries(str(folder), name, len(entries))
        verdict = judge_record(ex, back, hidden_context(seed_base + i))
        verdicts[name] = {"passed": verdict.passed, "message": verdict.message}
    return verdicts


def timed_public_diagnosis(assignment: str, mistake: str, limit_s: float = 2.0) -> str:
    """The public diagnosis of ``mistake``; it must come within ``limit_s`` of CPU time (one thread,
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
    assert spent < limit_s, f"{mistake}: the failing public check took {spent:.2f} s of CPU"
    return message


def warm(assignment: str) -> None:
    """Run every public check once with the solution (builds the stand-ins and caches)."""
    from tests.notebook_code import solution_namespace

    ns = solution_namespace(assignment)
    for name, ex in lesson(assignment).EXERCISES.items():
        ex.public(ns[name])
