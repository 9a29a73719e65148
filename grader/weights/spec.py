"""The two records a lesson's checkpoints are declared with (grader/checkpoints/<lesson>.py).

A :class:`Checkpoint` is one diffusers model repository (real weights, pinned revision,
the real architecture's config and a tiny stand-in config of the same class). A
:class:`Part` is the piece of it a test needs (a tensor-name prefix and how to build the
module for it from the checkpoint's config), so that one DiT block is read without the
other 27.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class Checkpoint:
    name: str
    model_class: str                      # diffusers class the stand-in is built from
    repo_id: str
    revision: str                         # pinned: a commit, or a ref the hub keeps (refs/pr/N)
    subfolder: str
    license: str
    real_config: dict[str, Any]           # the real architecture (random-weight builds at size)
    standin_config: dict[str, Any]        # tiny, same class (diffusers' own test configs)
    weights_name: str = "diffusion_pytorch_model.safetensors"
    notes: str = ""

    @property
    def index_name(self) -> str:
        return self.weights_name + ".index.json"


@dataclass(frozen=True)
class Part:
    name: str
    checkpoint: str
    prefix: str                            # tensor-name prefix in the checkpoint ("" = all)
    build: Callable[[dict[str, Any]], nn.Module] = field(repr=False)
    description: str = ""


def build_diffusers(class_name: str) -> Callable[[dict[str, Any]], nn.Module]:
    def build(cfg: dict[str, Any]) -> nn.Module:
        import diffusers

        cls = getattr(diffusers, class_name)
        keys = inspect.signature(cls.__init__).parameters  # a hub config also carries _class_name, ...
        return cls(**{k: v for k, v in cfg.items() if k in keys})
    return build




def parts(*items: Part) -> dict[str, Part]:
    return {p.name: p for p in items}
