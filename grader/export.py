"""Grades out: a CSV Canvas's gradebook import accepts (Moodle and others read it too), and a long
per-exercise CSV, from nbgrader's gradebook (formgrader's manual grades included) or from
``course autograde`` result folders.

Canvas's format (its gradebook export, which its import reads back), per Instructure's guide
"How do I import grades in the Gradebook?"
(https://community.canvaslms.com/t5/Instructor-Guide/How-do-I-import-grades-in-the-Gradebook/ta-p/807)
and Ohio State's CarmenCanvas guide
(https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades):
columns ``Student`` ("Last, First"), ``ID`` (Canvas's user id), ``SIS User ID``, ``SIS Login ID``,
``Section``, then one column per assignment with points; a column named ``Name (12345)`` updates
Canvas assignment 12345, a new name creates an assignment. The second row of Canvas's own export is
``Points Possible`` (each assignment's maximum), which its import reads as such.
Canvas identifies a student by ``ID``, or the SIS ids, or the name: we fill ``ID`` from the roster's
``lms_user_id`` (kept from a Canvas roster export) and put the nbgrader student id in one SIS column.

A student on the roster without a submission gets an empty cell by default: Canvas leaves that
grade untouched (an excused student, a grade entered in Canvas by hand) and its own missing-submission
policy applies; ``missing="zero"`` writes 0 instead. Manually graded points nobody has graded yet
(lesson 8's written task before formgrader) are left out of the total, shown empty in their own
column and as ``pending`` in the long CSV.

The late penalty is re-asked of the configured plugin (grader.late) on the current score, so manual
points given after autograding lose the same percentage; with no manual points it equals what
nbgrader's ``AssignLatePenalties`` stored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.plugins import ExportPlugin

from .spreadsheet import SafeWriter
from .late import configured_plugin, human, penalty_for
from .roster import Person

CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


@dataclass
class Row:
    """One student's grade for one assignment."""

    student: str
    assignment: str
    status: str                                   # graded | pending (manual) | missing | invalid | timeout | error
    exercises: dict = field(default_factory=dict)  # name -> (score or None when pending, max_score)
    timestamp: str = ""
    late_seconds: float = 0.0
    late_penalty: float = 0.0

    @property
    def score(self) -> float:
        return sum(s for s, _ in self.exercises.values() if s is not None)

    @property
    def final_score(self) -> float:
        return max(0.0, self.score - self.late_penalty)

    @property
    def pending(self) -> float:
        return sum(m for s, m in self.exercises.values() if s is None)


def course_config():
    """The course's nbgrader config (nbgrader_config.py in the repository root)."""
    from traitlets.config.loader import PyFileConfigLoader

    from .roster import REPO

    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()


def from_gradebook(gb, assignments: list[str] | None = None, config=None) -> tuple[list[Row], dict, dict[str, Person]]:
    """Rows for every student x assignment in an open nbgrader ``Gradebook``; (rows, maxima, roster)."""
    from nbgrader.api import MissingEntry

    from .autograde import _exercise_name  # "heun_step_hidden" -> "heun_step", as in grades.csv

    plugin = configured_plugin(config if config is not None else course_config())
    roster = {s.id: Person(s.id, s.first_name or "", s.last_name or "", s.email or "", s.lms_user_id or "")
              for s in gb.students}
    rows, maxima = [], {}
    for a in gb.assignments:
        if assignments and a.name not in assignments:
            continue
        maxima[a.name] = {_exercise_name(c.name): float(c.max_score or 0) for nb in a.notebooks
                          for c in list(nb.grade_cells) + list(nb.task_cells)}
        for sid in roster:
            try:
                sub = gb.find_submission(a.name, sid)
            except MissingEntry:
                rows.append(Row(sid, a.name, "missing"))
                continue
            ex = {}
            for nb in sub.notebooks:
                for g in nb.grades:
                    ex[_exercise_name(g.name)] = (None if g.needs_manual_grade else float(g.score or 0.0), float(g.max_score or 0))
            row = Row(sid, a.name, "graded", ex, sub.timestamp.isoformat(sep=" ") if sub.timestamp else "",
                      float(sub.total_seconds_late))
            row.status = "pending" if row.pending else "graded"
            row.late_penalty = penalty_for(plugin, sid, row.score, row.late_seconds)
            rows.append(row)
    return rows, maxima, roster


def from_results(folders: list[Path], roster: dict[str, Person], assignments: list[str] | None = None,
                 config=None) -> tuple[list[Row], dict]:
    """Rows from ``course autograde`` output folders (results/*.json), with a ``missing`` row for each
    roster student without a result. The penalty is the one nbgrader applied while grading, re-asked
    of the plugin only where hand-graded points were added since (never, for these results)."""
    from .autograde import _exercise_name, load_results

    rows, maxima = [], {}
    for r in load_results(folders):
        if assignments and r.assignment not in assignments:
            continue
        ex = {_exercise_name(n): (e.get("score"), float(e.get("max_score", 0))) for n, e in r.exercises.items()}
        status = r.status if r.status != "graded" else ("pending" if any(s is None for s, _ in ex.values()) else "graded")
        rows.append(Row(r.student, r.assignment, status, ex, r.timestamp, r.late_seconds, r.late_penalty))
        maxima.setdefault(r.assignment, {}).update({n: m for n, (_, m) in ex.items()})
    for a in maxima:
        have = {row.student for row in rows if row.assignment == a}
        rows.extend(Row(sid, a, "missing") for sid in roster if sid not in have)
    return rows, maxima


def title(assignment: str) -> str:
    """``08_the_speed_landscape`` -> ``Lesson 8: the speed landscape`` (other names unchanged)."""
    m = re.fullmatch(r"(\d+)_(.+)", assignment)
    return f"Lesson {int(m.group(1))}: {m.group(2).replace('_', ' ')}" if m else assignment


def write_canvas(rows: list[Row], maxima: dict, roster: dict[str, Person], path: Path, *, per_exercise: bool = False,
                 missing: str = "blank", canvas_ids: dict[str, str] | None = None, id_as: str = "sis_login_id") -> None:
    """Canvas's gradebook CSV: one total column per assignment (late penalty applied), optionally
    each exercise's points (before the penalty: give them a zero-weight Canvas group, or they count twice)."""
    canvas_ids = canvas_ids or {}
    assignments = sorted(maxima)
    columns, points = [], []
    for a in assignments:
        name = title(a) + (f" ({canvas_ids[a]})" if a in canvas_ids else "")
        columns.append((a, None, name))
        points.append(sum(maxima[a].values()))
        if per_exercise:
            for ex, m in maxima[a].items():
                columns.append((a, ex, f"{title(a)}: {ex}"))
                points.append(m)
    by = {(r.student, r.assignment): r for r in rows}
    students = sorted(set(roster) | {r.student for r in rows},
                      key=lambda s: ((roster.get(s) or Person(s)).sortable_name.lower(), s))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = SafeWriter(f)
        w.writerow(CANVAS_HEADER + [name for _, _, name in columns])
        w.writerow(["Points Possible", "", "", "", ""] + [_num(p) for p in points])
        for s in students:
            p = roster.get(s) or Person(s)
            cells = []
            for a, ex, _ in columns:
                r = by.get((s, a))
                if r is None or r.status == "missing":
                    cells.append("0" if missing == "zero" else "")
                elif ex is None:
                    cells.append(_num(r.final_score))
                else:
                    score = r.exercises.get(ex, (0.0, 0.0))[0]
                    cells.append("" if score is None else _num(score))
            sis_user, sis_login = (s, "") if id_as == "sis_user_id" else ("", s)
            w.writerow([p.sortable_name, p.lms_user_id, sis_user, sis_login, ""] + cells)
    os.replace(tmp, path)


def write_long(rows: list[Row], maxima: dict, roster: dict[str, Person], path: Path) -> None:
    """One row per student x assignment x exercise, then the assignment's total with lateness."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = SafeWriter(f)
        w.writerow(["student", "first_name", "last_name", "email", "assignment", "item", "score", "max_score",
                    "status", "timestamp", "late_by", "late_seconds", "late_penalty", "final_score"])
        for r in sorted(rows, key=lambda r: (r.assignment, r.student)):
            p = roster.get(r.student) or Person(r.student)
            who = [r.student, p.first_name, p.last_name, p.email, r.assignment]
            for ex, m in maxima.get(r.assignment, {}).items():
                score = r.exercises.get(ex, (None if r.status == "missing" else 0.0, m))[0]
                status = "missing" if r.status == "missing" else ("pending" if score is None else "graded")
                w.writerow(who + [ex, "" if score is None else _num(score), _num(m), status, "", "", "", "", ""])
            missing = r.status == "missing"
            w.writerow(who + ["(total)", "" if missing else _num(r.score), _num(sum(maxima.get(r.assignment, {}).values())),
                              r.status, r.timestamp, human(r.late_seconds), "" if missing else round(r.late_seconds),
                              "" if missing else _num(r.late_penalty), "" if missing else _num(r.final_score)])
    os.replace(tmp, path)


def _num(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


class CanvasExportPlugin(ExportPlugin):
    """``nbgrader export --exporter=grader.export.CanvasExportPlugin --to canvas.csv``: the same CSV
    as ``course export --format canvas``, from the gradebook nbgrader was pointed at."""

    def export(self, gradebook) -> None:
        rows, maxima, roster = from_gradebook(gradebook, [str(a) for a in self.assignment] or None, self.config)
        if self.student:
            keep = {str(s) for s in self.student}
            rows = [r for r in rows if r.student in keep]
            roster = {k: v for k, v in roster.items() if k in keep}
        dest = Path(self.to or "canvas.csv")
        write_canvas(rows, maxima, roster, dest)
        self.log.info("Canvas gradebook CSV written to %s", dest)
