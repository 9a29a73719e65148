"""Every lesson's checkpoints, gathered from grader/checkpoints/<lesson>.py (one file per lesson).

Each of those modules defines ``CHECKPOINTS`` (name -> :class:`Checkpoint`) and ``PARTS``
(name -> :class:`Part`); a new lesson adds its own file and edits nothing here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from .spec import Checkpoint, Part, build_diffusers  # noqa: F401  (re-exported)


@functools.lru_cache(maxsize=1)
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


class _Gathered(dict):
    """Filled on first use, not at import: a lesson's checkpoints module imports grader.weights
    itself, and gathering then would meet it half-initialised and silently leave it out."""

    def __init__(self, index: int):
        super().__init__()
        self._index, self._loaded = index, False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            dict.update(self, _gather()[self._index])

    def __getitem__(self, key):
        self._load()
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._load()
        return dict.__iter__(self)

    def __len__(self):
        self._load()
        return dict.__len__(self)

    def __repr__(self):
        self._load()
        return dict.__repr__(self)

    def get(self, key, default=None):
        self._load()
        return dict.get(self, key, default)

    def keys(self):
        self._load()
        return dict.keys(self)

    def values(self):
        self._load()
        return dict.values(self)

    def items(self):
        self._load()
        return dict.items(self)


CHECKPOINTS: dict[str, Checkpoint] = _Gathered(0)
PARTS: dict[str, Part] = _Gathered(1)


def part(name: str) -> Part:
    try:
        return PARTS[name]
    except KeyError:
        raise KeyError(f"no weights entry {name!r}; known: {sorted(PARTS)}") from None


def checkpoint_of(name: str) -> Checkpoint:
    return CHECKPOINTS[part(name).checkpoint]


