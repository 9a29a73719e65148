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
