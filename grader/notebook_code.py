"""A source notebook's answers as a Python namespace (for benchmarks and in-process tests).

The source notebook is the single source of truth: answers are read from its cells with
the solution markers dropped, never copied into a .py file.
"""

from __future__ import annotations

from pathlib import Path

import json

REPO = Path(__file__).resolve().parent.parent
_PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\n"


def source_path(assignment: str, root: Path = REPO) -> Path:
    (path,) = sorted((root / "source" / assignment).glob("*.ipynb"))
    return path


def answer_cells(assignment: str, root: Path = REPO) -> dict[str, str]:
    """grade_id -> answer source without the ### BEGIN/END SOLUTION lines."""
    # Plain json, not nbformat: this also runs on the GPU machine, which has no Jupyter.
    nb = json.loads(source_path(assignment, root).read_text())
    out = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            lines = [l for l in source.splitlines() if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def solution_namespace(assignment: str, root: Path = REPO) -> dict:
    """A fresh namespace holding every answer of the source notebook (plus its imports)."""
    ns: dict = {}
    exec(_PRELUDE, ns)
    code = "\n\n".join(answer_cells(assignment, root).values())
    exec(compile(code, f"<{assignment} solutions>", "exec"), ns)
    return ns
