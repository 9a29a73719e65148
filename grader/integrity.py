"""Integrity flags: where a submission reaches for what it is asked to implement.

Read from the submitted source (trusted side, no execution), so a submission cannot switch
them off the way it can switch off the in-process guard (grader.guard). They cost no points:
an instructor sees them in the CSV and the feedback and decides. Flagged:

* importing or naming the grader's own code (``grader``, its references and checks);
* the diffusers functions and classes an exercise of this lesson forbids (its ``forbidden``
  list), by name, however imported;
* ``torch.ops.aten`` (the operator-level twin of a forbidden call);
* reaching into the caller's frames or the heap (``sys._getframe``, ``inspect.stack`` /
  ``currentframe``, ``gc.get_objects`` / ``get_referrers``), the way to find a checker's values.
"""

from __future__ import annotations

import ast

_INTROSPECTION = {("sys", "_getframe"): "sys._getframe", ("inspect", "stack"): "inspect.stack",
                  ("inspect", "currentframe"): "inspect.currentframe", ("inspect", "getouterframes"):
                  "inspect.getouterframes", ("gc", "get_objects"): "gc.get_objects",
                  ("gc", "get_referrers"): "gc.get_referrers", ("sys", "settrace"): "sys.settrace",
                  ("sys", "setprofile"): "sys.setprofile"}
# Generic torch building blocks forbidden in one exercise are legitimate tools elsewhere.
_GENERIC = {"forward", "__call__", "Conv2d", "conv2d", "MultiheadAttention", "Linear", "linear",
            "scaled_dot_product_attention", "functional", "nn", "torch"}


def _forbidden_names(lesson: str) -> dict[str, str]:
    from .exercises import lesson as lesson_module

    names: dict[str, str] = {}
    for ex in lesson_module(lesson).EXERCISES.values():
        for target in ex.forbidden:
            if not target.startswith("diffusers."):
                continue
            for part in target.split(".")[-2:]:
                if part not in _GENERIC and not part.startswith("_"):
                    names.setdefault(part, ex.name)
    return names


def student_sources(nb) -> list[str]:
    """The code the student wrote: answer cells and their own extra cells."""
    out = []
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") or not meta:
            out.append(cell.get("source", ""))
    return out


def scan_source(sources: list[str], lesson: str) -> list[str]:
    forbidden = _forbidden_names(lesson)
    found: list[str] = []

    def flag(text: str) -> None:
        if text not in found:
            found.append(text)

    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            # IPython magics or broken code: fall back to plain text for the strongest signals.
            for needle, text in (("import grader", "imports the grader's own code"),
                                 ("from grader", "imports the grader's own code"),
                                 ("torch.ops.aten", "calls torch.ops.aten operators"),
                                 ("_getframe", "reads the caller's stack frames (sys._getframe)")):
                if needle in src:
                    flag(text)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "grader":
                        flag("imports the grader's own code")
                    for part in alias.name.split("."):
                        if part in forbidden:
                            flag(f"imports {part}, which exercise {forbidden[part]} asks you to write yourself")
            elif isinstance(node, ast.ImportFrom):
                if (node.module or "").split(".")[0] == "grader":
                    flag("imports the grader's own code")
                for alias in node.names:
                    if alias.name in forbidden:
                        flag(f"imports {alias.name}, which exercise {forbidden[alias.name]} asks you to write yourself")
            elif isinstance(node, ast.Attribute):
                chain = _chain(node)
                if chain[:3] == ["torch", "ops", "aten"]:
                    flag("calls torch.ops.aten operators")
                if len(chain) >= 2 and (chain[-2], chain[-1]) in _INTROSPECTION:
                    flag(f"inspects the grader's frames or heap ({_INTROSPECTION[(chain[-2], chain[-1])]})")
                if node.attr in forbidden and chain[0] != "self":
                    flag(f"uses {node.attr}, which exercise {forbidden[node.attr]} asks you to write yourself")
            elif isinstance(node, ast.Name) and node.id == "grader":
                flag("imports the grader's own code")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
                flag("imports modules dynamically (__import__)")
    return found


def _chain(node: ast.AST) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return list(reversed(parts))


def scan(nb, lesson: str) -> list[str]:
    return scan_source(student_sources(nb), lesson)
