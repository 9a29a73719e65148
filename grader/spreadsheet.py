"""CSV that a spreadsheet or an LMS opens safely.

Student ids, names and notes (an exception message from the student's own code) reach the
grade CSVs. A cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab/CR) is a formula to
Excel, LibreOffice and Google Sheets (OWASP "CSV injection"): it is written with a leading
apostrophe, which those programs display as text. Numbers are written as they are.
"""

from __future__ import annotations

import csv
from typing import Any, Iterable, TextIO

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)  # "-3.5" is a number, not a formula
            return value
        except ValueError:
            return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every text cell goes through :func:`cell`."""

    def __init__(self, f: TextIO, **kwargs: Any):
        self._w = csv.writer(f, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._w.writerow([cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
