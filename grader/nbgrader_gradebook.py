"""nbgrader's gradebook adding a submission without flushing it half-built (SQLAlchemy 2).

``Gradebook.add_submission`` (nbgrader 0.9.6, unchanged on nbgrader's main) builds the new
``SubmittedAssignment`` with its notebooks, grades and comments, and only then adds it to the
session. Building it reads ``submission.assignment.notebooks`` and ``notebook.grade_cells``:
lazy loads, which autoflush the session while the new objects are attached to persistent ones
(the assignment, the student, the notebooks) but not yet in the session. SQLAlchemy 1.4 used to
cascade them in along the backrefs; SQLAlchemy 2 does not, and warns for each relationship
("Object of type <SubmittedAssignment> not in session, add operation along
'Assignment.submissions' will not proceed"). Nothing is lost (``db.add(submission)`` cascades
the whole graph in and commits), but every autograde logs three SAWarnings.

The honest pin is not available: nbgrader requires ``sqlalchemy>=1.4,<3`` and moved to the
2.x API itself (jupyter/nbgrader#1788, ``future=True``), SQLAlchemy 2.0 warns the same, and the
alembic nbgrader installs requires SQLAlchemy 2. So the object graph is built the way
SQLAlchemy's message asks: under ``no_autoflush``; the explicit ``commit`` at the end still
flushes everything, in one go. Applied from nbgrader_config.py, so plain nbgrader, formgrader
and ``course autograde`` all get it.
"""

from __future__ import annotations

import functools


def build_submissions_before_flushing() -> None:
    """Wrap ``Gradebook.add_submission`` in ``no_autoflush`` (idempotent)."""
    from nbgrader.api import Gradebook

    original = Gradebook.add_submission
    if getattr(original, "_builds_before_flushing", False):
        return

    @functools.wraps(original)
    def add_submission(self, *args, **kwargs):
        with self.db.no_autoflush:
            return original(self, *args, **kwargs)

    add_submission._builds_before_flushing = True
    Gradebook.add_submission = add_submission
