"""nbgrader preprocessors that keep solutions/ and feedback HTML free of hidden tests.

Imported in-process by nbgrader from nbgrader_config.py: keep imports light (no torch).
"""

from __future__ import annotations

import re

from nbgrader import utils
from nbgrader.preprocessors import NbGraderPreprocessor

_SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


class StripSolutionMarkers(NbGraderPreprocessor):
    """Drop the ``### BEGIN/END SOLUTION`` lines: solutions/ reads as plain, finished code."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and utils.is_solution(cell):
            lines = [line for line in cell.source.split("\n") if not _SOLUTION_MARKER.match(line)]
            cell.source = "\n".join(lines)
        return cell, resources


class ScrubGradedOutputs(NbGraderPreprocessor):
    """Feedback: show a graded test cell's verdict, never the hidden code in its traceback.

    ClearHiddenTests removes the hidden source, but an error output still carries a
    traceback that quotes it. Error outputs of graded test cells are rebuilt from the
    exception's name and message alone (the messages are written for students).
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not utils.is_grade(cell) or utils.is_solution(cell):
            return cell, resources
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources


# ---------------------------------------------------------------- trusted grading (issue 5)
import json as _json  # noqa: E402
import os as _os  # noqa: E402
import subprocess as _subprocess  # noqa: E402
import sys as _sys  # noqa: E402
import tempfile as _tempfile  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

from nbgrader.preprocessors import Execute as _Execute  # noqa: E402
from traitlets import Integer as _Integer  # noqa: E402


def _course_root(pre) -> _Path:
    return _Path(pre.config.CourseDirectory.get("root") or _os.getcwd()).resolve()


def _lesson_of(resources) -> str | None:
    assignment = (resources or {}).get("nbgrader", {}).get("assignment")
    if not assignment:
        return None
    try:
        from grader.exercises import lesson

        lesson(assignment)
        return assignment
    except KeyError:
        return None


class NormaliseSubmission(NbGraderPreprocessor):
    """Rebuild the submission on the source notebook: tests restored, only answers kept.

    Runs among the sanitize preprocessors (before OverwriteCells), so deleted, edited or
    metadata-stripped graded cells cannot change a grade. The repairs are written into a
    markdown cell at the top, which the feedback shows.
    """

    def preprocess(self, nb, resources):
        assignment = _lesson_of(resources)
        if assignment is None:
            return nb, resources
        from grader.submission import normalise

        import nbformat

        source = _course_root(self) / "source" / assignment / (resources["nbgrader"]["notebook"] + ".ipynb")
        if not source.is_file():
            return nb, resources
        fixed = normalise(nb, nbformat.read(source, as_version=4))
        out = fixed.notebook
        if fixed.notes:
            note = nbformat.v4.new_markdown_cell("**Grading notes:** " + "; ".join(fixed.notes) + ".")
            note["id"] = "grading-notes"
            out.cells.insert(0, note)
        return out, resources


class SandboxedExecute(_Execute):
    """nbgrader's Execute with the kernel inside grader.sandbox and a cap on output size."""

    max_output_bytes = _Integer(8 << 20, help="Output kept per notebook; the rest is dropped").tag(config=True)
    max_message_bytes = _Integer(64 << 20, help="Largest single kernel message accepted").tag(config=True)

    def __init__(self, *args, **kwargs):
        from grader.sandbox_kernel import SandboxKernelManager

        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)
        self._output_bytes = 0
        self._truncated = False

    async def async_start_new_kernel_client(self):
        client = await super().async_start_new_kernel_client()
        import zmq

        for channel in (client.iopub_channel, client.shell_channel):
            try:
                channel.socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
            except Exception:  # noqa: BLE001: an older pyzmq without the option
                pass
        return client

    def output(self, outs, msg, display_id, cell_index):
        size = len(_json.dumps(msg.get("content", {})))
        self._output_bytes += size
        if self._output_bytes > self.max_output_bytes:
            if not self._truncated:
                self._truncated = True
                from nbformat.v4 import new_output

                outs.append(new_output("stream", name="stdout", text=(
                    f"[output beyond {self.max_output_bytes >> 20} MB dropped by the grader]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)


class TrustedGrade(NbGraderPreprocessor):
    """Decide each graded cell outside the student's kernel (grader.replay), then write the verdict.

    After Execute: the student's code cells run again in a sandboxed process that records
    what their functions return on inputs from seeds chosen here; a trusted process
    compares those outputs with the references. Each graded test cell's outputs are
    replaced by that verdict, so SaveAutoGrades scores what the trusted side decided, not
    what the student's kernel printed or swallowed.
    """

    timeout = _Integer(900, help="Seconds for the sandboxed recording of one notebook").tag(config=True)

    def preprocess(self, nb, resources):
        lesson = _lesson_of(resources)
        if lesson is None:
            return nb, resources
        from grader.exercises import lesson as lesson_module
        from grader.sandbox import hidden_paths, wrap
        from grader.weights.resolve import prepare_all

        prepare_all()  # stand-ins cannot be built inside the read-only sandbox
        exercises = lesson_module(lesson).EXERCISES
        seeds = {name: int.from_bytes(_os.urandom(4), "little") for name in exercises}
        with _tempfile.TemporaryDirectory(prefix="course-trusted-") as tmp:
            job = _Path(tmp)
            record_dir = job / "record"
            record_dir.mkdir()
            inbox = job / "in"
            inbox.mkdir()
            (inbox / "job.json").write_text(_json.dumps({
                "cells": _student_code(nb), "seeds": seeds, "record_dir": str(record_dir),
                "per_exercise_s": int(_os.environ.get("COURSE_CELL_TIMEOUT", "60"))}))
            repo = _Path(__file__).resolve().parent.parent
            cmd = wrap([_sys.executable, "-m", "grader.replay", "record", lesson, str(inbox)],
                       rw=[str(record_dir)], hide=hidden_paths(_course_root(self), repo),
                       mem=_memory_limit())
            status = ""
            try:
                done = _subprocess.run(cmd, stdin=_subprocess.DEVNULL, stdout=_subprocess.DEVNULL,
                                       stderr=_subprocess.PIPE, timeout=self.timeout, start_new_session=True)
                if done.returncode != 0:
                    status = f"the recording process ended with status {done.returncode}"
            except _subprocess.TimeoutExpired:
                status = f"the recording process was stopped after {self.timeout} s"
            # The trusted side runs here, in nbgrader's own process: the student's code never ran
            # in it, and the lesson's weights stay loaded from one student to the next.
            from grader.replay import verify
            from grader.runtime import device

            verdicts = verify(lesson, seeds, record_dir, str(device()))
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if not (meta.get("grade") and not meta.get("solution") and cell.cell_type == "code"):
                continue
            name = meta.get("grade_id", "")[: -len("_hidden")]
            if name not in verdicts:
                continue
            v = verdicts[name]
            from nbformat.v4 import new_output

            if v["passed"]:
                cell.outputs = [new_output("stream", name="stdout", text=v["message"] + "\n")]
            else:
                ename, _, evalue = v["message"].partition(": ")
                if status:
                    evalue += f"\n  ({status})"
                cell.outputs = [new_output("error", ename=ename or "AssertionError", evalue=evalue,
                                           traceback=[f"{ename}: {evalue}"])]
        return nb, resources


def _student_code(nb) -> list[str]:
    """Setup cells before the first answer, then every answer and every unmarked code cell."""
    cells, seen_answer = [], False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            seen_answer = True
            cells.append(cell.source)
        elif not meta:
            cells.append(cell.source)  # the student's own cells
        elif not seen_answer and meta.get("locked") and not meta.get("grade"):
            cells.append(cell.source)  # the lesson's setup (imports, LESSON, weights)
    return cells


def _memory_limit() -> int | None:
    # An address-space limit breaks CUDA's large virtual reservations: CPU runs only.
    if _os.environ.get("COURSE_DEVICE", "").startswith("cuda"):
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except Exception:  # noqa: BLE001
        pass
    return int(_os.environ.get("COURSE_MEMORY_LIMIT", str(8 << 30)))
