"""Run a student's function so that calling the reference instead of implementing it fails."""

from __future__ import annotations

import contextlib
import importlib
from typing import Iterable, Iterator


class ReferenceCallError(AssertionError):
    """The submission called the module it was asked to implement."""


def _resolve(target: str) -> tuple[object, str]:
    """'diffusers.models.attention.BasicTransformerBlock.forward' -> (class, 'forward')."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:-1]:
            owner = getattr(owner, attr)
        return owner, parts[-1]
    raise ImportError(target)


@contextlib.contextmanager
def forbid(targets: Iterable[str], exercise: str) -> Iterator[None]:
    """Replace each dotted ``targets`` attribute by one that raises, restoring them on exit."""
    saved: list[tuple[object, str, object]] = []

    def blocker(name: str):
        def blocked(*args, **kwargs):
            raise ReferenceCallError(
                f"{exercise}: your code calls {name}, the reference this exercise asks you to "
                f"write yourself. Use tensors and torch operations (and the module's parameters) instead."
            )
        return blocked

    try:
        for target in targets:
            owner, attr = _resolve(target)
            saved.append((owner, attr, owner.__dict__.get(attr, getattr(owner, attr))))
            setattr(owner, attr, blocker(target.rsplit(".", 2)[-2] + "." + attr))
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
