"""Build the bundled example submissions from release/ (never edited by hand).

    python -m tests.make_examples          # rewrite tests/submissions/
    python -m tests.make_examples --check  # exit 1 if they differ from what would be written

Each lesson gets ``correct`` (the source answers), ``partly_wrong`` (some answers replaced
by named wrong implementations, one left unanswered) and ``broken`` (not valid JSON).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import nbformat

from tests.notebook_code import REPO, answer_cells, wrong_module


def lessons_with_examples() -> list[str]:
    """Every source lesson whose tests/wrong/<slug>.py says how its partly-wrong example is made."""
    out = []
    for folder in sorted((REPO / "source").iterdir()):
        if folder.is_dir() and hasattr(wrong_module(folder.name), "PARTLY_WRONG"):
            out.append(folder.name)
    return out


def _release_notebook(lesson: str) -> tuple[Path, nbformat.NotebookNode]:
    (path,) = sorted((REPO / "release" / lesson).glob("*.ipynb"))
    return path, nbformat.read(path, as_version=4)


def _wrong_source(lesson: str, name: str, exercise: str) -> str:
    module = wrong_module(lesson)
    helpers = [n for n in dir(module) if n.startswith("_") and not n.startswith("__")
               and inspect.isfunction(getattr(module, n))]
    fn = getattr(module, name)
    src = inspect.getsource(fn).replace(f"def {name}(", f"def {exercise}(", 1)
    used = [h for h in helpers if h + "(" in src]
    return "\n\n".join([inspect.getsource(getattr(module, h)) for h in used] + [src]).strip() + "\n"


def build(lesson: str) -> dict[str, str]:
    """file name -> text of each example submission."""
    path, release = _release_notebook(lesson)
    answers = answer_cells(lesson)

    def filled(replace: dict[str, str], stub: list[str]) -> str:
        nb = nbformat.from_dict(release)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers and gid not in stub:
                if gid in replace:
                    exercise = gid[: -len("_answer")]
                    cell.source = ("import math\nimport torch\nimport torch.nn.functional as F\n\n\n"
                                   + _wrong_source(lesson, replace[gid], exercise))
                else:
                    cell.source = answers[gid]
        return nbformat.writes(nb) + "\n"

    # tests/wrong/<slug>.py: PARTLY_WRONG = ({answer grade_id: wrong function}, [answers left as stubs])
    replace, stub = wrong_module(lesson).PARTLY_WRONG
    correct = filled({}, [])
    return {"correct.ipynb": correct,
            "partly_wrong.ipynb": filled(replace, stub),
            "broken.ipynb": correct[: len(correct) // 3]}  # a submission cut off mid-upload


def main(argv: list[str]) -> int:
    stale = []
    for lesson in lessons_with_examples():
        folder = REPO / "tests" / "submissions" / lesson
        for name, text in build(lesson).items():
            target = folder / name
            if "--check" in argv:
                if not target.is_file() or target.read_text() != text:
                    stale.append(str(target))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    if stale:
        print("stale example submissions (run python -m tests.make_examples):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
