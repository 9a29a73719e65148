"""nbgrader preprocessors that keep solutions/ and feedback HTML free of hidden tests.

Imported in-process by nbgrader from nbgrader_config.py: keep imports light (no torch).
"""

from __future__ import annotations

import re

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import List

_SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*$")


class StripSolutionMarkers(NbGraderPreprocessor):
    """Drop the ``### BEGIN/END SOLUTION`` lines: solutions/ reads as plain, finished code."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and utils.is_solution(cell):
            lines = [line for line in cell.source.split("\n") if not _SOLUTION_MARKER.match(line)]
            cell.source = "\n".join(lines)
        return cell, resources


class FeedbackPreprocessor(NbGraderPreprocessor):
    """Base of a preprocessor that nbgrader runs inside nbconvert's HTML exporter (feedback).

    The exporter configures ``NbConvertBase.display_data_priority`` for everything it owns;
    nbgrader's base class re-declares that trait without ``config=True``, so traitlets logs
    "Config option `display_data_priority` not recognized" for each such preprocessor.
    nbgrader's own feedback step (GetGrades) declares it configurable again; so does this.
    """

    display_data_priority = List(NbGraderPreprocessor.display_data_priority.default_value).tag(config=True)


class ClearHiddenTestsFromFeedback(FeedbackPreprocessor, ClearHiddenTests):
    """nbgrader's ClearHiddenTests (same config section), run inside the HTML exporter."""


class ScrubGradedOutputs(FeedbackPreprocessor):
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



class TrimTracebacks(FeedbackPreprocessor):
    """Feedback: a demo or answer cell's error shows the student's frames, not the server's.

    Error outputs of cells that are not hidden-test cells keep the exception and the frames of
    notebook cells; library frames are counted on one line and paths shortened
    (grader.feedback.trim_traceback), and stderr streams lose their paths too (a warning names
    the library file it came from). Hidden-test cells are ScrubGradedOutputs' (their diagnosis
    messages stay whole).
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or _graded_exercise(cell) is not None:
            return cell, resources
        from grader.feedback import scrub_paths, trim_traceback

        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = trim_traceback(list(out.get("traceback", [])))
                out["evalue"] = scrub_paths(str(out.get("evalue", "")))
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["text"] = scrub_paths(out.get("text", ""))
        return cell, resources


class InlineMathJax(FeedbackPreprocessor):
    """Feedback: hand the page template a MathJax build to inline (grader.feedback.mathjax_script):
    the page renders formulas offline, and it is the only file release_feedback copies."""

    def preprocess(self, nb, resources):
        from grader.feedback import MATHJAX_CONFIG, mathjax_script

        resources["course_mathjax"] = mathjax_script()
        resources["course_mathjax_config"] = MATHJAX_CONFIG
        return nb, resources


# ---------------------------------------------------------------- trusted grading (issue 5)
import json as _json  # noqa: E402
import os as _os  # noqa: E402
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
    """nbgrader's Execute with the kernel inside grader.sandbox and a cap on output size.

    For a lesson notebook it also prepares the grading job: the seeds the hidden tests draw
    their inputs from (chosen here, at grading time) and the private folder into which the
    kernel's hidden-test cells record what the student's functions return (grader.record).
    TrustedGrade, next, judges that record and removes the job.
    """

    max_output_bytes = _Integer(8 << 20, help="Output kept per notebook; the rest is dropped").tag(config=True)
    max_message_bytes = _Integer(64 << 20, help="Largest single kernel message accepted").tag(config=True)

    def __init__(self, *args, **kwargs):
        from grader.sandbox_kernel import SandboxKernelManager

        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)
        self._output_bytes = 0
        self._truncated = False
        self._job = None

    def preprocess(self, nb, resources=None, km=None):
        from grader.runtime import device
        from grader.sandbox_kernel import GradingJob

        lesson = _lesson_of(resources)
        seeds = {}
        if lesson is not None:
            from grader.exercises import lesson as lesson_module

            seeds = {name: int.from_bytes(_os.urandom(4), "little") for name in lesson_module(lesson).EXERCISES}
        self._job = GradingJob.create(seeds, str(device()))
        self._output_bytes, self._truncated = 0, False
        from nbclient.exceptions import DeadKernelError

        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        except DeadKernelError:
            # The student's code killed its kernel (or it crashed): grade what was recorded
            # before that, say why the rest is missing; never drop the whole notebook.
            nb = self.nb
            resources["course_kernel_died"] = ("the notebook's kernel died (killed or crashed) before this "
                                               "exercise's hidden tests ran")
        except BaseException:
            self._job.remove()
            raise
        resources["course_job"] = self._job
        return nb, resources

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        km.course_job = self._job
        return km

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
    """Decide each graded cell from the kernel's record, in nbgrader's own process.

    After Execute: the kernel (untrusted) only recorded what the student's functions returned
    on the grader's inputs; here the same inputs are rebuilt from the same seeds, the
    references computed and compared (grader.verify), and each graded cell's outputs are
    replaced by that verdict, so SaveAutoGrades scores what this side decided, not what the
    student's kernel printed or swallowed. Integrity flags (grader.integrity) are listed in
    the grading notes cell that the feedback shows.
    """

    def preprocess(self, nb, resources):
        job = (resources or {}).pop("course_job", None)
        lesson = _lesson_of(resources)
        try:
            if job is None or lesson is None:
                return nb, resources
            from grader.integrity import scan
            from grader.sandbox import status
            from grader.verify import judge_job

            stopped = _stopped_cells(nb)
            died = (resources or {}).pop("course_kernel_died", None)
            if died:
                from grader.exercises import lesson as lesson_module

                stopped = {name: stopped.get(name, died) for name in lesson_module(lesson).EXERCISES}
            verdicts = judge_job(lesson, job.record, job.seeds, job.device, stopped)
        finally:
            if job is not None:
                job.remove()
        flags = scan(nb, lesson)
        for v in verdicts.values():
            flags += [f for f in v.flags if f not in flags]
        from nbformat.v4 import new_output

        for cell in nb.cells:
            name = _graded_exercise(cell)
            if name not in verdicts:
                continue
            v = verdicts[name]
            if v.passed:
                cell.outputs = [new_output("stream", name="stdout", text=v.message + "\n")]
            else:
                ename, _, evalue = v.message.partition(": ")
                cell.outputs = [new_output("error", ename=ename or "AssertionError", evalue=evalue,
                                           traceback=[f"{ename}: {evalue}"])]
        notes = []
        if flags:
            notes.append(FLAGS_PREFIX + " " + "; ".join(flags) + ".")
        sandbox = status()
        if not sandbox.startswith("on"):
            notes.append(f"**Sandbox:** {sandbox}.")
        if notes:
            _add_notes(nb, notes)
        return nb, resources


FLAGS_PREFIX = "**Integrity flags (for the instructor):**"


def _graded_exercise(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
        gid = meta.get("grade_id", "")
        return gid[: -len("_hidden")] if gid.endswith("_hidden") else gid
    return None


def _stopped_cells(nb) -> dict[str, str]:
    """Why a graded cell has no complete record, as far as the execution shows (a time-out)."""
    out = {}
    for cell in nb.cells:
        name = _graded_exercise(cell)
        if name is None:
            continue
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error" and "Timeout" in str(o.get("ename", "")):
                out[name] = "timeout: the cell ran past its time limit (an endless loop?)"
    return out


def _add_notes(nb, lines: list[str]) -> None:
    import nbformat

    for cell in nb.cells:
        if cell.get("id") == "grading-notes":
            cell.source = cell.source + "\n\n" + "\n\n".join(lines)
            return
    note = nbformat.v4.new_markdown_cell("\n\n".join(lines))
    note["id"] = "grading-notes"
    nb.cells.insert(0, note)
