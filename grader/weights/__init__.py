"""Weights: real first, stand-in always. See registry (what), resolve (where), load (how)."""

from .load import CheckpointMismatch, build_random, get, load_part
from .registry import CHECKPOINTS, PARTS
from .resolve import Source, resolve

__all__ = ["CHECKPOINTS", "PARTS", "CheckpointMismatch", "Source", "build_random", "get", "load_part", "resolve"]
