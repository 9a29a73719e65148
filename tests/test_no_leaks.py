"""No solution code in release/, no hidden tests in release/ or solutions/."""

from __future__ import annotations

import nbformat
import pytest

from tests.notebook_code import REPO, answer_cells

LESSONS = sorted(p.name for p in (REPO / "source").iterdir() if p.is_dir())


def _code(folder: str, lesson: str, cell_type: str | None = None) -> str:
    (path,) = sorted((REPO / folder / lesson).glob("*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if cell_type in (None, c.cell_type))


def _solution_lines(lesson: str) -> set[str]:
    """Every substantive line that exists only inside a solution region."""
    (src,) = sorted((REPO / "source" / lesson).glob("*.ipynb"))
    lines = set()
    for cell in nbformat.read(src, as_version=4).cells:
        inside = False
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and len(line.strip()) > 12:
                lines.add(line.strip())
    return lines


@pytest.mark.parametrize("lesson", LESSONS)
def test_release_has_no_solution_code(lesson):
    released = _code("release", lesson)
    assert "BEGIN SOLUTION" not in released and "END SOLUTION" not in released
    leaked = [l for l in _solution_lines(lesson) if l in released]
    assert not leaked, f"solution lines in release/: {leaked[:3]}"
    assert answer_cells(lesson)  # the check above is not vacuous


@pytest.mark.parametrize("lesson", LESSONS)
@pytest.mark.parametrize("folder", ["release", "solutions"])
def test_no_hidden_tests(folder, lesson):
    text = _code(folder, lesson)
    assert "HIDDEN TESTS" not in text and "from grader.exercises import grade" not in text


@pytest.mark.parametrize("lesson", LESSONS)
def test_solutions_read_as_plain_code(lesson):
    assert "SOLUTION" not in _code("solutions", lesson)
    assert "NotImplementedError()" not in _code("solutions", lesson, "code")
