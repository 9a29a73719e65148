"""The class list: read from a CSV (ours, nbgrader's, a Canvas or Moodle export), kept in nbgrader's gradebook.

nbgrader's gradebook is where the roster lives (``Gradebook.update_or_create_student``), so
formgrader, ``nbgrader export`` and ``course`` all see the same names. Accepted columns
(case and spacing ignored):

- ours / nbgrader's ``nbgrader db student import``: ``id, first_name, last_name, email[, lms_user_id]``
- a Canvas gradebook export: ``Student`` ("Last, First"), ``ID`` (Canvas's user id, kept as
  ``lms_user_id`` so the Canvas export matches on it), ``SIS User ID``, ``SIS Login ID``, ``Section``;
  the student id is ``SIS Login ID`` (the login name a JupyterHub usually sees), else ``SIS User ID``,
  else ``ID``; the ``Points Possible`` row and Canvas's "Test Student" are skipped
- a Moodle participants/grades export: ``First name``, ``Last name`` / ``Surname``, ``Email address``,
  ``ID number`` or ``Username``
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Header aliases, normalised (lower case, no spaces/underscores): the first present wins.
_ID = ("id", "studentid", "username", "sisloginid", "sisuserid", "idnumber", "userid")
_FIRST = ("firstname", "givenname", "first")
_LAST = ("lastname", "surname", "familyname", "last")
_EMAIL = ("email", "emailaddress", "mail")
_LMS = ("lmsuserid",)


@dataclass
class Person:
    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""

    @property
    def sortable_name(self) -> str:
        """Canvas's "Student" column: "Last, First" (the id when there is no name)."""
        if self.last_name or self.first_name:
            return ", ".join(p for p in (self.last_name, self.first_name) if p)
        return self.id


def _key(header: str) -> str:
    return "".join(ch for ch in header.lower() if ch.isalnum())


def course_db_url(root: Path | None = None) -> str:
    """The course gradebook, as nbgrader_config.py names it (COURSE_DB_URL, else gradebook.db in the root)."""
    root = Path(os.environ.get("COURSE_ROOT", root or REPO))
    return os.environ.get("COURSE_DB_URL", "sqlite:///" + str(root / "gradebook.db"))


def read_roster(path: Path, id_column: str | None = None) -> list[Person]:
    """Every student row of a roster CSV (see the module docstring for the formats)."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte-order mark
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    headers = {_key(h): h for h in rows[0] if h}
    canvas = "student" in headers and "id" in headers and "sisuserid" in headers
    if id_column:
        id_keys = (_key(id_column),)
    elif canvas:
        id_keys = ("sisloginid", "sisuserid", "id")
    else:
        id_keys = _ID
    if not any(k in headers for k in id_keys):
        raise ValueError(f"{path}: no student id column (looked for {', '.join(id_keys)}; found {', '.join(rows[0])})")

    def pick(row: dict, keys: tuple[str, ...]) -> str:
        for k in keys:
            value = (row.get(headers[k]) or "").strip() if k in headers else ""
            if value:
                return value
        return ""

    people: dict[str, Person] = {}
    for row in rows:
        sid = pick(row, id_keys)
        name = (row.get(headers.get("student", ""), "") or "").strip() if canvas else ""
        if not sid or name.lower().startswith("points possible") or name == "Student, Test":
            continue
        if canvas:
            last, _, first = name.partition(",")
            login = pick(row, ("sisloginid",))
            p = Person(sid, first.strip(), last.strip(), pick(row, _EMAIL) or (login if "@" in login else ""),
                       pick(row, ("id",)))
        else:
            p = Person(sid, pick(row, _FIRST), pick(row, _LAST), pick(row, _EMAIL), pick(row, _LMS))
        people[sid] = p  # a repeated id: the later row wins, as an update would
    return list(people.values())


def import_roster(people: list[Person], db_url: str) -> tuple[int, int]:
    """Add or update each student in nbgrader's gradebook; returns (added, updated)."""
    from nbgrader.api import Gradebook, MissingEntry

    added = updated = 0
    with Gradebook(db_url) as gb:
        for p in people:
            try:
                gb.find_student(p.id)
                updated += 1
            except MissingEntry:
                added += 1
            fields = {"first_name": p.first_name or None, "last_name": p.last_name or None,
                      "email": p.email or None, "lms_user_id": p.lms_user_id or None}
            gb.update_or_create_student(p.id, **{k: v for k, v in fields.items() if v is not None})
    return added, updated


def students(db_url: str) -> dict[str, Person]:
    """The roster in the gradebook ({} when there is no gradebook yet)."""
    from nbgrader.api import Gradebook

    if db_url.startswith("sqlite:///") and not Path(db_url[len("sqlite:///"):]).is_file():
        return {}
    with Gradebook(db_url) as gb:
        return {s.id: Person(s.id, s.first_name or "", s.last_name or "", s.email or "", s.lms_user_id or "")
                for s in gb.students}
