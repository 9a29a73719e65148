"""The course's late policy, and the timestamps and due dates it is applied to.

nbgrader decides lateness itself: ``Autograde`` reads ``timestamp.txt`` in a submission's folder,
``SubmittedAssignment.total_seconds_late`` compares it with the assignment's due date (plus any
extension), and ``AssignLatePenalties`` asks the configured plugin for the penalty. This module
is that plugin (``CourseLatePenalty``, configured in ``nbgrader_config.py``), so plain
``nbgrader autograde``, formgrader and ``course autograde`` (which runs nbgrader's autograde
in-process) all apply one policy with one piece of code.

A submission without ``timestamp.txt`` is not late: nbgrader leaves its timestamp empty and
``total_seconds_late`` is 0. That is what an instructor expects of a file collected by hand
(e-mailed, copied from a laptop) — there is nothing to measure — and ``course autograde`` says so
in the submission's notes whenever a due date is set, so it is never silently waived.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

from nbgrader.plugins import LateSubmissionPlugin
from traitlets import Enum, Float

from .untrusted import read_regular

DAY = 86400.0


def late_penalty(score: float, seconds_late: float, *, method: str = "per_day", percent_per_day: float = 10.0,
                 max_percent: float = 50.0, grace_minutes: float = 0.0) -> float:
    """Points taken off ``score`` for a submission ``seconds_late`` past its due date.

    ``per_day``: ``percent_per_day`` of the score for every started day late (1 s late is one day),
    capped at ``max_percent``; nothing within ``grace_minutes`` (clock skew, a slow upload).
    ``zero``: the whole score (nbgrader's built-in). ``none``: nothing (nbgrader's default).
    """
    if seconds_late <= grace_minutes * 60 or score <= 0 or method == "none":
        return 0.0
    if method == "zero":
        return float(score)
    days = math.ceil(seconds_late / DAY)
    return round(score * min(max_percent, days * percent_per_day) / 100.0, 4)


class CourseLatePenalty(LateSubmissionPlugin):
    """nbgrader's late-submission plugin with a per-day percentage (``c.AssignLatePenalties.plugin_class``)."""

    penalty_method = Enum(("none", "zero", "per_day"), default_value="per_day",
                          help="'none' and 'zero' as in nbgrader; 'per_day': percent_per_day of the score "
                               "per started day late, capped at max_percent").tag(config=True)
    percent_per_day = Float(10.0, help="per_day: percent of the score lost per started day late").tag(config=True)
    max_percent = Float(50.0, help="per_day: the most a late submission can lose, in percent").tag(config=True)
    grace_minutes = Float(0.0, help="no penalty this many minutes past the due date").tag(config=True)

    def late_submission_penalty(self, student_id: str, score: float, total_seconds_late: float) -> float:
        return late_penalty(score, total_seconds_late, method=self.penalty_method,
                            percent_per_day=self.percent_per_day, max_percent=self.max_percent,
                            grace_minutes=self.grace_minutes)


def configured_plugin(config) -> LateSubmissionPlugin:
    """The plugin ``AssignLatePenalties`` would use under this nbgrader config (for re-scoring on export)."""
    from nbgrader.preprocessors import AssignLatePenalties

    return AssignLatePenalties(config=config).plugin_class(config=config)


def penalty_for(plugin: LateSubmissionPlugin, student: str, score: float, seconds_late: float) -> float:
    """What ``AssignLatePenalties`` stores: the plugin's penalty clamped to [0, score]; 0 when on time."""
    if seconds_late <= 0:
        return 0.0
    penalty = plugin.late_submission_penalty(student, score, seconds_late)
    return 0.0 if penalty is None else min(max(0.0, float(penalty)), float(score))


def parse_when(text: str) -> datetime:
    """A timestamp or due date as nbgrader reads it (``2026-12-01 23:59:00 Europe/Berlin``, ISO 8601, ...),
    as a naive UTC datetime. Raises ValueError when it cannot be read."""
    from nbgrader.utils import parse_utc

    try:
        when = parse_utc(text.strip())
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"cannot read {text.strip()!r} as a date and time: {exc}") from None
    if when is None:
        raise ValueError("empty date")
    return when


def read_timestamp(folder: Path) -> tuple[datetime | None, str]:
    """The submission time in ``folder/timestamp.txt`` (what ``nbgrader collect`` writes), and a note
    when there is none or it cannot be read (then the submission is treated as on time)."""
    # The file sits in a folder the student wrote (the exchange): a link to a secret, a fifo or a
    # gigabyte must neither be followed, block, nor be quoted back into a note the student reads.
    path = folder / "timestamp.txt"
    if not os.path.lexists(path):
        return None, "no timestamp.txt: lateness not checked (treated as on time)"
    data = read_regular(path, _MAX_TIMESTAMP)
    if data is None:
        return None, f"timestamp.txt {_UNREADABLE}"
    text = data.decode("utf-8", errors="replace")
    try:
        return parse_when(text), ""
    except ValueError:
        return None, f"timestamp.txt {_UNREADABLE}"


#: What nbgrader writes is ~30 characters ("2026-12-01 10:00:00.000000 UTC").
_MAX_TIMESTAMP = 200
_UNREADABLE = ("is not a plain file holding one date and time: lateness not checked (treated as on time; "
               "the instructor can set the time by hand)")


def human(seconds: float) -> str:
    """``1d 02:03`` style, for a CSV an instructor reads; '' when on time."""
    if seconds <= 0:
        return ""
    minutes = int(math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{mins:02d}"


def assignment_due(db_url: str, assignment: str) -> datetime | None:
    """The assignment's due date in the course gradebook (``nbgrader db assignment add --duedate``), if any."""
    from nbgrader.api import Gradebook, MissingEntry

    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).is_file():
        return None
    with Gradebook(db_url) as gb:
        try:
            return gb.find_assignment(assignment).duedate
        except MissingEntry:
            return None
