"""Trusted verdicts: record what a submission computes in a sandbox, judge it somewhere else.

nbgrader scores a graded cell from what the student's kernel left in its outputs, and
the student's code can change that (swallow the exception, monkeypatch the comparison,
print "All tests passed"). Here the verdict never depends on the student's process:

* ``record`` (untrusted, in the sandbox): run the student's answer cells, then each
  exercise's hidden check with a :class:`Recorder` active. Every call to the student's
  function (``grader.exercise.call``) stores its output; comparisons are switched off.
  Only tensors (safetensors) and a JSON manifest leave the process: nothing executable.
* ``verify`` (trusted, a process the student's code never ran in): run the same hidden
  checks with a :class:`Replayer` that answers each call with the recorded output. The
  inputs are the same because both runs use the seed the grader chose; the references,
  comparisons and messages are computed here.

A tampered recorder can only claim outputs; a claim passes only if it equals the reference
on inputs drawn at grading time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_STATE = threading.local()
MAX_TENSOR_ELEMENTS = 50_000_000      # one recorded output; far above any exercise's size
MAX_RECORD_BYTES = 1 << 30


def active():
    return getattr(_STATE, "mode", None)


def recording() -> bool:
    return isinstance(active(), Recorder)


def seed() -> int | None:
    mode = active()
    return None if mode is None else mode.seed


class _Opaque:
    """Stands in, on replay, for a recorded value that was not a tensor."""

    def __init__(self, type_name: str):
        self.course_type_name = type_name


@dataclass
class Recorder:
    exercise: str
    seed: int
    calls: list = field(default_factory=list)      # manifest entries
    tensors: dict = field(default_factory=dict)

    def add_result(self, name: str, case: str, value: Any) -> None:
        i = len(self.calls)
        entry = {"name": name, "case": case, "status": "ok"}
        items = value if isinstance(value, (tuple, list)) else None
        if isinstance(value, torch.Tensor):
            entry.update(kind="tensor", n=1)
            self._put(f"{self.exercise}/{i}/0", value)
        elif items is not None and all(isinstance(v, torch.Tensor) for v in items):
            entry.update(kind="tuple", n=len(items))
            for j, v in enumerate(items):
                self._put(f"{self.exercise}/{i}/{j}", v)
        else:
            entry.update(kind="other", type=type(value).__name__)
        self.calls.append(entry)

    def add_error(self, name: str, case: str, message: str, error_type: str) -> None:
        self.calls.append({"name": name, "case": case, "status": "error", "message": message[:4000],
                           "error_type": error_type})

    def _put(self, key: str, t: torch.Tensor) -> None:
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise ValueError(f"output of {t.numel()} elements is larger than any answer")
        self.tensors[key] = t.detach().to("cpu").contiguous().clone()


@dataclass
class Replayer:
    exercise: str
    seed: int
    calls: list
    tensors: dict
    device: str = "cpu"
    position: int = 0
    timed_out_after: int | None = None

    def next(self, name: str, case: str) -> Any:
        from .exercise import SubmissionError

        if self.position >= len(self.calls):
            if self.timed_out_after:
                raise SubmissionError(f"{name}: timeout: no result for {case or 'this call'} within "
                                      f"{self.timed_out_after} s (an endless loop?).")
            raise SubmissionError(f"{name}: no recorded result for {case or 'this call'} "
                                  f"(the submission stopped or timed out before computing it).")
        i, entry = self.position, self.calls[self.position]
        self.position += 1
        if entry.get("name") != name or entry.get("case") != case:
            raise SubmissionError(f"{name}: the recorded results do not match the grading inputs "
                                  f"(the submission changed how it was called).")
        if entry["status"] == "error":
            cls = SubmissionError
            if entry.get("error_type") == "ReferenceCallError":
                from .guard import ReferenceCallError as cls  # noqa: N813
            raise cls(entry["message"])
        if entry["kind"] == "other":
            return _Opaque(entry.get("type", "object"))
        dev = self.device if torch.device(self.device).type != "cuda" or torch.cuda.is_available() else "cpu"
        values = [self.tensors[f"{self.exercise}/{i}/{j}"].to(dev) for j in range(entry["n"])]
        return values[0] if entry["kind"] == "tensor" else tuple(values)


class using:
    """``with using(recorder_or_replayer): ...``"""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.previous, _STATE.mode = active(), self.mode
        return self.mode

    def __exit__(self, *exc):
        _STATE.mode = self.previous
        return False


# ---------------------------------------------------------------- the two processes
class _Timeout(BaseException):
    pass


def _alarm(seconds: int):
    def handler(*_):
        raise _Timeout()
    signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)


def _exec_answers(cells: list[str], per_cell_s: int) -> dict:
    """Run the student's code cells in order, as the notebook would; a failing cell is skipped."""
    ns: dict = {"__name__": "__main__"}
    for src in cells:
        try:
            _alarm(per_cell_s)
            exec(compile(src, "<submission>", "exec"), ns)
        except BaseException:  # noqa: BLE001 (SystemExit, KeyboardInterrupt from the student too)
            continue
        finally:
            signal.alarm(0)
    return ns


def record(lesson: str, cells: list[str], seeds: dict[str, int], out: Path, per_exercise_s: int = 120) -> None:
    from safetensors.torch import save_file

    from .exercises import lesson as lesson_module

    exercises = lesson_module(lesson).EXERCISES
    ns = _exec_answers(cells, per_exercise_s)
    manifest: dict[str, list] = {}
    tensors: dict[str, torch.Tensor] = {}
    timed_out: dict[str, int] = {}
    for name, ex in exercises.items():
        rec = Recorder(name, seeds[name])
        try:
            _alarm(per_exercise_s)
            with using(rec):
                ex.hidden(ns.get(name))
        except _Timeout:
            timed_out[name] = per_exercise_s
        except BaseException:  # noqa: BLE001: whatever happened, what was recorded stands
            pass
        finally:
            signal.alarm(0)
        manifest[name] = rec.calls
        manifest["__timed_out__"] = timed_out
        tensors.update(rec.tensors)
        # Written after every exercise: a later crash or kill keeps the earlier results.
        _write(out, manifest, tensors, save_file)


def _write(out: Path, manifest: dict, tensors: dict, save_file) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "outputs.safetensors.tmp"))
    os.replace(out / "outputs.safetensors.tmp", out / "outputs.safetensors")
    (out / "manifest.json.tmp").write_text(json.dumps(manifest))
    os.replace(out / "manifest.json.tmp", out / "manifest.json")


def verify(lesson: str, seeds: dict[str, int], recorded: Path, device: str = "cpu") -> dict[str, dict]:
    """Trusted: {exercise: {"passed": bool, "message": str}} from the recorded outputs."""
    import contextlib
    import io
    import warnings

    from safetensors import safe_open

    from .exercises import lesson as lesson_module

    manifest, tensors = {}, {}
    mpath, tpath = recorded / "manifest.json", recorded / "outputs.safetensors"
    if mpath.is_file() and tpath.is_file() and tpath.stat().st_size <= MAX_RECORD_BYTES:
        try:
            manifest = json.loads(mpath.read_text())
            with safe_open(str(tpath), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # noqa: BLE001: a damaged record is an empty one
            manifest, tensors = {}, {}
    verdicts = {}
    for name, ex in lesson_module(lesson).EXERCISES.items():
        calls = manifest.get(name) if isinstance(manifest, dict) else None
        rep = Replayer(name, seeds[name], calls if isinstance(calls, list) else [], tensors, device)
        timeouts = manifest.get("__timed_out__", {}) if isinstance(manifest, dict) else {}
        if isinstance(timeouts, dict) and isinstance(timeouts.get(name), int):
            rep.timed_out_after = timeouts[name]
        try:
            with using(rep), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                message = ex.hidden(object())  # the function itself stays in the sandbox
            verdicts[name] = {"passed": True, "message": message}
        except AssertionError as err:
            verdicts[name] = {"passed": False, "message": f"{type(err).__name__}: {err}"}
        except Exception as err:  # noqa: BLE001: a recorded value the check could not handle
            verdicts[name] = {"passed": False, "message": f"{type(err).__name__}: {err}"}
    return verdicts


def main(argv: list[str]) -> int:
    """python -m grader.replay record|verify LESSON JOB_DIR  (JOB_DIR holds job.json)."""
    action, lesson, job_dir = argv[0], argv[1], Path(argv[2])
    job = json.loads((job_dir / "job.json").read_text())
    if action == "record":
        record(lesson, job["cells"], job["seeds"], Path(job["record_dir"]), job.get("per_exercise_s", 60))
        return 0
    verdicts = verify(lesson, job["seeds"], Path(job["record_dir"]), job.get("device", "cpu"))
    (job_dir / "verdicts.json").write_text(json.dumps(verdicts))
    return 0


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: the replay state must be the one
    # grader.exercise and grader.compare see.
    from grader.replay import main as _main

    sys.exit(_main(sys.argv[1:]))
