"""Measure, don't time-test: check latency, notebook run time, autograde time per submission."""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

from . import LESSONS
from .notebook_code import REPO, solution_namespace, source_path


def check_latency(lesson: str, repeat: int) -> tuple[float, dict[str, dict[str, float]]]:
    """(seconds of the warm-up in LessonChecks (the setup cell), seconds per `checks.run(name)`: first call and p50 of the warm ones)."""
    import contextlib
    import io

    from .checks import LessonChecks
    from .exercises import lesson as lesson_module

    ns = solution_namespace(lesson)
    start = time.perf_counter()
    checks = LessonChecks(lesson)
    # LessonChecks imports otter and the lesson's modules in the setup cell (reported on its own).
    import_s = round(time.perf_counter() - start, 3)
    out = {}
    for name in lesson_module(lesson).EXERCISES:
        times = []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                ok, _ = checks.verdict(name, ns)
            times.append(time.perf_counter() - start)
            assert ok, f"the solution fails its own public check {name}"
        out[name] = {"first_s": round(times[0], 3), "p50_s": round(statistics.median(times[1:]), 4),
                     "max_s": round(max(times[1:]), 4)}
    return import_s, out


def first_check_in_kernel(lesson: str, reading_s: float = 3.0) -> float:
    """Seconds of the first `checks.run` cell as a student meets it: a fresh kernel runs the setup
    cell, the student reads for ``reading_s``, fills in the first answer and runs its check."""
    from nbclient import NotebookClient

    nb = nbformat.read(source_path(lesson), as_version=4)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    setup = next(i for i, c in code if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    answer = next(i for i, c in code if c.metadata.get("nbgrader", {}).get("solution"))
    check = next(i for i, c in code if i > answer and "checks.run(" in c.source)
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp}})
        with client.setup_kernel():
            client.execute_cell(nb.cells[setup], setup)
            time.sleep(reading_s)
            client.execute_cell(nb.cells[answer], answer)
            start = time.perf_counter()
            client.execute_cell(nb.cells[check], check)
            return round(time.perf_counter() - start, 3)


def notebook_seconds(lesson: str) -> float:
    from nbclient import NotebookClient

    nb = nbformat.read(source_path(lesson), as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        return round(time.perf_counter() - start, 2)


def autograde_seconds(lesson: str, isolation: bool = True) -> dict[str, float]:
    """One correct submission through `course autograde`; isolation off = plain nbgrader."""
    import os

    from .autograde import run

    example = REPO / "tests" / "submissions" / lesson / "correct.ipynb"
    saved = os.environ.get("COURSE_ISOLATION")
    os.environ["COURSE_ISOLATION"] = "on" if isolation else "off"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            (r,) = run([example], lesson, Path(tmp), force=True, progress=False)
            total = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("COURSE_ISOLATION", None)
        else:
            os.environ["COURSE_ISOLATION"] = saved
    assert r.score == r.max_score, r
    return {"one_submission_s": round(r.seconds, 2), "with_batch_setup_s": round(total, 2)}


def grading_ratio(lesson: str, batch: int = 30, jobs: int = 2) -> dict:
    """Trusted grading against the notebook's own execution, side by side on this machine.

    * ``notebook_s``: the correct example executed top to bottom in a fresh kernel
      (what ``jupyter nbconvert --execute`` does), no grading;
    * ``one_submission_s``: the same notebook through ``course autograde`` (sandboxed kernel,
      trusted verification, feedback), wall time including the batch set-up and a cold worker;
    * ``batch_s``: ``batch`` copies with ``-j jobs`` (warm workers, weights shared).
    """
    import shutil

    from nbclient import NotebookClient

    from .autograde import run

    example = REPO / "tests" / "submissions" / lesson / "correct.ipynb"
    nb = nbformat.read(example, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        notebook = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        (r,) = run([example], lesson, Path(tmp) / "out", force=True, progress=False)
        one = time.perf_counter() - start
        assert r.score == r.max_score, r
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "subs"
        folder.mkdir()
        for i in range(batch):
            shutil.copy(example, folder / f"student{i:02d}.ipynb")
        start = time.perf_counter()
        results = run([folder], lesson, Path(tmp) / "out", jobs=jobs, force=True, progress=False)
        many = time.perf_counter() - start
        assert all(r.score == r.max_score for r in results)
    warm = statistics.median(r.seconds for r in results)   # one submission in a warm worker
    return {"notebook_s": round(notebook, 1), "one_submission_s": round(one, 1),
            "ratio": round(one / notebook, 2), "warm_submission_s": round(warm, 1),
            "warm_ratio": round(warm / notebook, 2), "batch": batch, "jobs": jobs, "batch_s": round(many, 1),
            "batch_per_submission_s": round(many / batch, 1)}


def main(args) -> int:
    if getattr(args, "ratio", False):
        lessons = args.lessons or ["10_diffusion_transformers"]
        report = {}
        for lesson in lessons:
            r = grading_ratio(lesson, batch=args.batch, jobs=args.jobs)
            report[lesson] = r
            print(f"{lesson}: notebook {r['notebook_s']} s; trusted autograde of one submission "
                  f"{r['one_submission_s']} s with the batch set-up ({r['ratio']}x), {r['warm_submission_s']} s "
                  f"in a warm worker ({r['warm_ratio']}x, median of the batch); {r['batch']} submissions with "
                  f"-j {r['jobs']}: {r['batch_s']} s ({r['batch_per_submission_s']} s each)")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    lessons = args.lessons or [l for l in LESSONS if (REPO / "source" / l).is_dir()]
    report = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs, "
                         f"{platform.system()}", "lessons": {}}
    for lesson in lessons:
        import_s, lat = check_latency(lesson, args.repeat)
        entry = {"checks": lat, "warm_up_in_setup_s": import_s,
                 "first_check_in_kernel_s": first_check_in_kernel(lesson), "notebook_s": notebook_seconds(lesson), "autograde": autograde_seconds(lesson),
                 "autograde_without_isolation": autograde_seconds(lesson, isolation=False)}
        report["lessons"][lesson] = entry
        p50 = statistics.median(v["p50_s"] for v in lat.values())
        print(f"{lesson}: public check p50 {p50 * 1000:.1f} ms (slowest p50 "
              f"{max(v['p50_s'] for v in lat.values()) * 1000:.1f} ms, first call up to "
              f"{max(v['first_s'] for v in lat.values()):.2f} s, after a {import_s:.2f} s warm-up in the setup cell; in a kernel after the setup cell: {entry['first_check_in_kernel_s']:.2f} s); notebook {entry['notebook_s']} s; "
              f"autograde {entry['autograde']['one_submission_s']} s per submission "
              f"({entry['autograde']['with_batch_setup_s']} s with batch setup); without isolation "
              f"{entry['autograde_without_isolation']['one_submission_s']} s")
        for name, v in lat.items():
            print(f"    {name:<22} first {v['first_s']:.3f} s  p50 {v['p50_s'] * 1000:7.2f} ms  max {v['max_s'] * 1000:7.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
