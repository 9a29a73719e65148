"""The exercise API: what a lesson declares, and how the core runs it on either side.

A lesson declares each exercise as an :class:`Exercise`:

* ``cases(ctx)`` yields :class:`Case` objects: the inputs (and a label), built from
  ``ctx.seed`` alone. This is the only lesson code that runs on the **untrusted** side (the
  grading kernel, next to the student's code), so it must never compute a reference.
* ``judge(case, got)`` computes the reference for one case and compares; it raises
  ``AssertionError`` (usually :class:`grader.compare.ComparisonError`) with a message for
  the student. It runs only where the student's code never ran.

The core does all calling, recording and comparing:

* :meth:`Exercise.public` / :meth:`Exercise.hidden`: in one process (the student's local
  check, the test suite, ``grader.exercises.grade`` outside nbgrader). Reference and
  submission share that process, which is fine there: nothing is graded.
* :func:`record`: untrusted. Calls the student's function on each case and returns what it
  returned, no reference anywhere (grader.record writes it to disk).
* :func:`judge_record`: trusted. Rebuilds the same cases from the same seed and judges the
  recorded outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from .exercise import SubmissionError, call
from .guard import ReferenceCallError


@dataclass
class Case:
    """One input for the student's function.

    ``args``/``kwargs`` are what the function is called with (fresh copies each time).
    ``invoke(fn, *args, **kwargs)``, when given, runs the function inside a harness (e.g. the
    student's block inside a diffusers model) and returns what is recorded; it runs on the
    untrusted side, so it must not compute the reference either. ``extra`` holds whatever
    the judge needs besides the arguments; it is never shown to the student's function.
    """

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    invoke: Callable[..., Any] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """Where cases are built: public or hidden, the seed, the device, the weights used."""

    hidden: bool
    seed: int
    device: torch.device
    sources: list = field(default_factory=list)

    def weights(self, part: str, standin: bool | None = None):
        """A registry part (grader.weights) on this context's device; noted for the banner."""
        from . import weights

        module, source = weights.get(part, self.device, standin=standin)
        if source not in self.sources:
            self.sources.append(source)
        return module

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator("cpu").manual_seed((self.seed + offset) % (2 ** 63))

    def randn(self, *shape: int, offset: int = 0, scale: float = 1.0) -> torch.Tensor:
        """Seeded standard normal ``shape`` (drawn on the CPU, identical everywhere) on the device."""
        x = torch.randn(*shape, generator=self.generator(offset), dtype=torch.float32) * scale
        return x.to(self.device)

    def rand(self, *shape: int, offset: int = 0) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator(offset), dtype=torch.float32).to(self.device)

    def randint(self, low: int, high: int, shape: tuple, offset: int = 0) -> torch.Tensor:
        return torch.randint(low, high, shape, generator=self.generator(offset)).to(self.device)

    def banner(self) -> str:
        return "; ".join(s.banner() for s in self.sources)


def public_context() -> Context:
    """Public checks: fixed inputs (seed 0), on the CPU: instant and the same everywhere."""
    return Context(hidden=False, seed=0, device=torch.device("cpu"))


def hidden_context(seed: int, device: torch.device | str | None = None) -> Context:
    """Hidden tests: the grader's seed, on the GPU when there is one."""
    from .runtime import device as default_device

    return Context(hidden=True, seed=int(seed), device=torch.device(device) if device else default_device())


@dataclass(frozen=True)
class Exercise:
    name: str
    points: int
    cases: Callable[[Context], Iterable[Case]] = field(repr=False)
    judge: Callable[[Case, Any], None] = field(repr=False)
    forbidden: tuple[str, ...] = ()

    # ------------------------------------------------ in one process (never used for grades)
    def public(self, fn: Any) -> str:
        """The student's local check: raises AssertionError with a diagnosis, or returns a pass line."""
        return self._run(fn, public_context())

    def hidden(self, fn: Any, seed: int | None = None, device: torch.device | str | None = None) -> str:
        """The hidden tests in-process (test suite, tools): a fresh seed unless one is given."""
        return self._run(fn, hidden_context(_fresh_seed() if seed is None else seed, device))

    def _run(self, fn: Any, ctx: Context) -> str:
        n = 0
        for case in self.cases(ctx):
            self.judge(case, self.call(fn, case))
            n += 1
        return passed(self.name, n, ctx)

    # ------------------------------------------------ the student's function on one case
    def call(self, fn: Any, case: Case) -> Any:
        if case.invoke is None:
            return call(fn, self.name, *case.args, forbidden=self.forbidden, case=case.label, **case.kwargs)
        return call(lambda *a, **k: case.invoke(fn, *a, **k), self.name, *case.args,
                    forbidden=self.forbidden, case=case.label, user_fn=fn, **case.kwargs)


def passed(name: str, n: int, ctx: Context) -> str:
    kind = "hidden tests" if ctx.hidden else "public checks"
    banner = ctx.banner()
    return f"{name}: {n} {kind} passed" + (f" [{banner}]" if banner else "")


def _fresh_seed() -> int:
    import os

    return int.from_bytes(os.urandom(4), "little")


# ---------------------------------------------------------------- the two sides of grading
def record(ex: Exercise, fn: Any, ctx: Context, sink: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Untrusted side: call ``fn`` on every case; return (and hand to ``sink``) what happened.

    Entries are ``{"label", "status": "ok", "value"}`` or ``{"label", "status": "error",
    "message", "error_type"}``. No reference is computed here.
    """
    entries = []
    for i, case in enumerate(ex.cases(ctx)):
        try:
            entry = {"label": case.label, "status": "ok", "value": ex.call(fn, case)}
        except AssertionError as exc:
            entry = {"label": case.label, "status": "error", "message": str(exc)[:4000],
                     "error_type": type(exc).__name__}
        entries.append(entry)
        if sink is not None:
            sink(i, entry)
    return entries


@dataclass
class Verdict:
    passed: bool
    message: str
    flags: list = field(default_factory=list)   # integrity flags, e.g. "called the reference"


def judge_record(ex: Exercise, entries: list, ctx: Context, *, cases: list[Case] | None = None,
                 stopped: str = "") -> Verdict:
    """Trusted side: rebuild the cases from ``ctx`` (or take ``cases`` built from it) and judge
    the recorded ``entries``. ``stopped`` explains a missing result (e.g. a time-out).
    """
    flags: list[str] = []
    if any(e.get("error_type") == "ReferenceCallError" for e in entries if isinstance(e, dict)):
        flags.append(f"{ex.name}: called the reference it is asked to implement")
    n = 0
    try:
        for i, case in enumerate(ex.cases(ctx) if cases is None else cases):
            entry = entries[i] if i < len(entries) else None
            if not isinstance(entry, dict):
                why = stopped or "the function raised outside the grader, or the cell was stopped"
                raise SubmissionError(f"{ex.name}: no result for {case.label} ({why}).")
            if entry.get("label") != case.label:
                raise SubmissionError(f"{ex.name}: the recorded results do not match the grading inputs.")
            if entry.get("status") == "error":
                cls = ReferenceCallError if entry.get("error_type") == "ReferenceCallError" else SubmissionError
                raise cls(str(entry.get("message", ""))[:4000])
            if entry.get("status") != "ok":
                raise SubmissionError(f"{ex.name}: the record for {case.label} is damaged.")
            ex.judge(case, entry.get("value"))
            n += 1
    except AssertionError as err:
        return Verdict(False, f"{type(err).__name__}: {err}", flags)
    except Exception as err:  # noqa: BLE001: a recorded value the judge could not handle
        return Verdict(False, f"{ex.name}: the recorded output could not be checked "
                              f"({type(err).__name__}: {str(err)[:500]}).", flags)
    return Verdict(True, passed(ex.name, n, ctx), flags)
