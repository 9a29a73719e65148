"""Read only the tensors one part needs, check them, and build the module around them."""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache

import torch
from safetensors import safe_open

from .registry import PARTS, part
from .resolve import Source, reinitialise_, resolve


class CheckpointMismatch(ValueError):
    """The checkpoint's tensors do not fit the architecture built from its config."""


def _keys_by_file(source: Source, wanted: set[str]) -> dict[str, list[str]]:
    if source.index_path is None:
        return {str(source.weight_files[0]): sorted(wanted)}
    weight_map = json.loads(source.index_path.read_text())["weight_map"]
    folder = source.index_path.parent
    by_file: dict[str, list[str]] = {}
    for key in sorted(wanted):
        if key in weight_map:
            by_file.setdefault(str(folder / weight_map[key]), []).append(key)
    return by_file


def read_tensors(source: Source, prefix: str, expected: dict[str, torch.Size], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors named ``prefix + key`` for each expected key, checked by count and shape."""
    wanted = {prefix + k for k in expected}
    tensors: dict[str, torch.Tensor] = {}
    present: set[str] = set()
    for path, keys in _keys_by_file(source, wanted).items():
        with safe_open(path, framework="pt", device=str(device)) as f:
            names = set(f.keys())
            present |= {n for n in names if prefix and n.startswith(prefix)}
            for key in keys:
                if key in names:
                    tensors[key[len(prefix):]] = f.get_tensor(key)
    if source.index_path is not None and prefix:
        weight_map = json.loads(source.index_path.read_text())["weight_map"]
        present |= {n for n in weight_map if n.startswith(prefix)}
    where = f"{source.checkpoint.repo_id} ({source.kind}, {source.config_path.parent})"
    missing = sorted(k for k in expected if k not in tensors)
    if missing:
        raise CheckpointMismatch(f"{where}: {len(missing)} tensors missing under {prefix!r}, e.g. {prefix + missing[0]!r}")
    extra = sorted(n[len(prefix):] for n in present if n[len(prefix):] not in expected)
    if extra:
        raise CheckpointMismatch(f"{where}: unexpected tensors under {prefix!r}, e.g. {prefix + extra[0]!r}: "
                                 f"the config does not describe these weights")
    for key, shape in expected.items():
        if tensors[key].shape != shape:
            raise CheckpointMismatch(f"{where}: tensor {prefix + key!r} has shape {tuple(tensors[key].shape)}, "
                                     f"the architecture needs {tuple(shape)}")
    return tensors


def load_part(name: str, device: torch.device | str = "cpu", *, source: Source | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, Source]:
    """Build part ``name`` from its checkpoint's config and load exactly its tensors."""
    p = part(name)
    source = source or resolve(p.checkpoint)
    device = torch.device(device)
    with torch.device("meta"):
        module = p.build(source.config)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    tensors = read_tensors(source, p.prefix, expected, device)
    module = module.to_empty(device=device)
    # Buffers that are not saved (DiT's sin-cos pos_embed) must be recomputed, not left empty.
    fresh = p.build(source.config)
    for bname, buf in fresh.named_buffers():
        module.get_buffer(bname).copy_(buf)
    module.load_state_dict(tensors, strict=True, assign=False)
    if dtype != torch.float32:
        module = module.to(dtype)
    return module.eval(), source


@lru_cache(maxsize=16)
def _cached(name: str, device: str, weights_dir: str | None, standin: bool | None) -> tuple[torch.nn.Module, Source]:
    p = part(name)
    return load_part(name, device, source=resolve(p.checkpoint, weights_dir, standin_only=standin or None))


def get(name: str, device: torch.device | str = "cpu", *, standin: bool = False) -> tuple[torch.nn.Module, Source]:
    """Cached :func:`load_part` for the grading process (a fresh copy of the weights each call).

    ``standin=True`` forces the stand-in (for checks that must stay instant on a CPU).
    """
    module, source = _cached(name, str(device), os.environ.get("COURSE_WEIGHTS_DIR"), standin)
    return copy.deepcopy(module), source


def build_random(name: str, *, size: str = "real", device: torch.device | str = "cpu", seed: int = 0) -> torch.nn.Module:
    """Part ``name`` at the real (or stand-in) architecture's size with seeded non-trivial weights.

    For timing, memory and precision measurements where the real file is absent.
    """
    from .registry import CHECKPOINTS

    ck = CHECKPOINTS[PARTS[name].checkpoint]
    module = PARTS[name].build(ck.real_config if size == "real" else ck.standin_config)
    reinitialise_(module, seed)
    return module.to(device).eval()
