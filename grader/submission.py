"""Turn whatever a student handed in into a notebook nbgrader can grade fairly.

The graded notebook is rebuilt from the *source* notebook: every locked and graded cell
comes from the instructor's version, and only the student's answer cells (and any extra
cells of their own) come from the submission. Deleted or edited test cells, stripped
metadata and renamed files therefore cannot change a grade, and every repair is reported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

_DEF = re.compile(r"^def (\w+)\(", re.M)


class InvalidSubmission(ValueError):
    """The file cannot be read as a notebook at all."""


@dataclass
class Normalised:
    notebook: NotebookNode
    notes: list[str] = field(default_factory=list)
    missing_answers: list[str] = field(default_factory=list)


def _nbgrader(cell) -> dict:
    """A cell's nbgrader metadata, or {} when it is missing or not what nbgrader writes (crafted:
    a list, a number, a non-string grade id): such a cell is treated as having lost its metadata."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("grade_id", ""), str):
        return {}
    return meta


def _source(cell) -> str:
    src = cell.get("source", "") if isinstance(cell, dict) else ""
    if isinstance(src, list) and all(isinstance(s, str) for s in src):
        return "".join(src)
    return src if isinstance(src, str) else ""


def read_notebook(path: Path) -> NotebookNode:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSubmission(f"{path.name} is not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSubmission(f"{path.name} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or "cells" not in data:
        raise InvalidSubmission(f"{path.name} is JSON but not a Jupyter notebook (no 'cells')")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises several types for malformed notebooks
        raise InvalidSubmission(f"{path.name} is not a readable notebook: {exc}") from None


def _answer_key(cell) -> str | None:
    """Identify an answer cell: by nbgrader grade_id, else by the function it defines."""
    gid = _nbgrader(cell).get("grade_id")
    if gid:
        return gid
    if cell.get("cell_type") == "code":
        names = _DEF.findall(_source(cell))
        if names:
            return f"def:{names[-1]}"
    return None


def normalise(submitted: NotebookNode, source: NotebookNode) -> Normalised:
    """Source structure + the student's answers. See the module docstring."""
    answers = [c for c in source.cells if _nbgrader(c).get("solution")]
    by_gid = {_nbgrader(c)["grade_id"]: c for c in answers}
    # An answer cell is also recognised by the last function it defines (stripped metadata).
    by_def = {}
    for c in answers:
        names = _DEF.findall(c.source)
        if names:
            by_def[f"def:{names[-1]}"] = _nbgrader(c)["grade_id"]

    notes: list[str] = []
    student_answer: dict[str, str] = {}
    extras_after: dict[str | None, list] = {}
    last: str | None = None
    stripped = 0
    for cell in submitted.cells:
        meta = _nbgrader(cell)
        key = _answer_key(cell)
        gid = key if key in by_gid else by_def.get(key or "")
        if gid and gid not in student_answer and (meta.get("solution") or not meta):
            if not meta:
                stripped += 1
            student_answer[gid] = _source(cell)
            last = gid
        elif not meta and cell.get("cell_type") == "code" and _source(cell).strip():
            extras_after.setdefault(last, []).append(cell)  # the student's own scratch/helper cell
    if stripped:
        notes.append(f"{stripped} answer cell(s) had lost their nbgrader metadata: matched by the function they define")
    missing = [gid for gid in by_gid if gid not in student_answer]
    if missing:
        notes.append(f"answer cell(s) missing from the submission, graded as unanswered: {', '.join(missing)}")
    source_test_ids = {_nbgrader(c).get("grade_id") for c in source.cells if _nbgrader(c).get("grade")}
    kept_tests = {_nbgrader(c).get("grade_id") for c in submitted.cells if _nbgrader(c).get("grade")}
    deleted = sorted(g for g in source_test_ids - kept_tests if g)
    if deleted:
        notes.append(f"graded test cell(s) deleted in the submission, restored from the source: {', '.join(deleted)}")

    cells = []
    pending_start = extras_after.get(None, [])
    for cell in source.cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            gid = meta["grade_id"]
            cells.extend(_student_cell(c) for c in pending_start)
            pending_start = []
            new = _copy(cell)
            if gid in student_answer:
                new.source = student_answer[gid]
            else:
                new.source = "raise NotImplementedError('this answer cell was missing from the submission')"
            cells.append(new)
            cells.extend(_student_cell(c) for c in extras_after.get(gid, []))
        else:
            cells.append(_copy(cell))
    nb = nbformat.v4.new_notebook(cells=cells, metadata=source.metadata)
    for i, c in enumerate(nb.cells):
        c["id"] = c.get("id") or f"cell-{i}"
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    return Normalised(nb, notes, missing)


def _student_cell(cell) -> NotebookNode:
    """A student's own code cell, rebuilt: only its source survives (no crafted metadata or outputs)."""
    return nbformat.v4.new_code_cell(source=_source(cell))


def _copy(cell) -> NotebookNode:
    new = nbformat.from_dict(json.loads(json.dumps(cell)))
    if new.get("cell_type") == "code":
        new.outputs, new.execution_count = [], None
    return new
