"""Every lesson's checkpoints, gathered from grader/checkpoints/<lesson>.py (one file per lesson).

Each of those modules defines ``CHECKPOINTS`` (name -> :class:`Checkpoint`) and ``PARTS``
(name -> :class:`Part`); a new lesson adds its own file and edits nothing here.
"""

from __future__ import annotations

import importlib
import pkgutil

from .spec import Checkpoint, Part, build_diffusers  # noqa: F401  (re-exported)


def _gather() -> tuple[dict[str, Checkpoint], dict[str, Part]]:
    from .. import checkpoints as package

    ckpts: dict[str, Checkpoint] = {}
    parts: dict[str, Part] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for kind, target, new in (("checkpoint", ckpts, getattr(module, "CHECKPOINTS", {})),
                                  ("part", parts, getattr(module, "PARTS", {}))):
            clash = set(target) & set(new)
            if clash:
                raise ValueError(f"{kind} names declared twice (again in {module.__name__}): {sorted(clash)}")
            target.update(new)
    return ckpts, parts


CHECKPOINTS, PARTS = _gather()


def part(name: str) -> Part:
    try:
        return PARTS[name]
    except KeyError:
        raise KeyError(f"no weights entry {name!r}; known: {sorted(PARTS)}") from None


def checkpoint_of(name: str) -> Checkpoint:
    return CHECKPOINTS[part(name).checkpoint]


