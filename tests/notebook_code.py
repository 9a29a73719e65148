"""The source notebooks' answers as Python namespaces, so hidden tests run in-process.

The source notebook is the single source of truth: answers are read from its cells
(solution markers dropped), never copied into a .py file.
"""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def source_path(assignment: str) -> Path:
    (path,) = sorted((REPO / "source" / assignment).glob("*.ipynb"))
    return path


def answer_cells(assignment: str) -> dict[str, str]:
    """grade_id -> answer source without the ### BEGIN/END SOLUTION lines."""
    nb = nbformat.read(source_path(assignment), as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = [l for l in cell.source.splitlines() if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


@lru_cache(maxsize=None)
def _solution_code(assignment: str) -> str:
    return "\n\n".join(answer_cells(assignment).values())


def solution_namespace(assignment: str) -> dict:
    """A fresh namespace holding every answer of the source notebook (plus its imports)."""
    ns: dict = {}
    exec("import math\nimport torch\nimport torch.nn.functional as F\n", ns)
    exec(compile(_solution_code(assignment), f"<{assignment} solutions>", "exec"), ns)
    return ns


def wrong_module(assignment: str):
    slug = assignment.split("_", 1)[1]
    return importlib.import_module(f"tests.wrong.{slug}")


def wrong_implementations(assignment: str) -> list[tuple[str, str, str]]:
    """(exercise, mistake, source) for every function named <exercise>__<mistake>."""
    module = wrong_module(assignment)
    out = []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if "__" in name and not name.startswith("_") and fn.__module__ == module.__name__:
            exercise, mistake = name.split("__", 1)
            out.append((exercise, mistake, name))
    return out


def namespace_with_wrong(assignment: str, exercise: str, name: str) -> dict:
    """The solution namespace with ``exercise`` replaced by the wrong function ``name``.

    The wrong module's source runs inside the namespace, so its helpers resolve to the
    correct answers of the other exercises.
    """
    ns = solution_namespace(assignment)
    module = wrong_module(assignment)
    exec(compile(Path(module.__file__).read_text(), module.__file__, "exec"), ns)
    ns[exercise] = ns[name]
    return ns
