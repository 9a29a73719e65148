"""What a grading kernel hands to the trusted side: one small file pair per case.

Written by the untrusted side (``write_entry``, in the student's kernel), read by the
trusted side (``read_entries``). Everything the reader touches was made by code the
student controlled, so it trusts nothing: the folder and each file are opened without
following links, non-regular files (fifos, devices) are refused before reading, every file
and the total are size-capped, JSON is bounded in depth and node count, tensors are parsed
from bytes by safetensors (no pickle, nothing executable). A damaged or hostile record
reads as "no result", never as a crash or a hang.

Layout: ``<dir>/<exercise>.<i>.json`` (the entry, with tensors replaced by keys) and
``<dir>/<exercise>.<i>.safetensors`` (its tensors).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from .untrusted import read_regular

MAX_JSON_BYTES = 1 << 20
MAX_TENSOR_FILE_BYTES = 256 << 20
MAX_TOTAL_BYTES = 1 << 30
MAX_NODES = 20_000
MAX_DEPTH = 8
MAX_ELEMENTS = 50_000_000       # one tensor; far above any exercise's output


class RecordError(ValueError):
    pass


# ---------------------------------------------------------------- untrusted side
def _encode(value: Any, tensors: dict, depth: int = 0) -> dict:
    if depth > MAX_DEPTH:
        raise RecordError("output nested too deeply")
    if isinstance(value, torch.Tensor):
        if value.numel() > MAX_ELEMENTS:
            raise RecordError(f"output of {value.numel()} elements is larger than any answer")
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"t": "tensor", "key": key, "device": value.device.type}
    if isinstance(value, np.ndarray) and value.dtype != object:
        node = _encode(torch.from_numpy(np.ascontiguousarray(value)), tensors, depth)
        return {**node, "t": "ndarray"}
    if isinstance(value, (bool, np.bool_)):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"t": "int", "v": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"t": "float", "v": repr(float(value))}
    if isinstance(value, str):
        return {"t": "str", "v": value[:10_000]}
    if value is None:
        return {"t": "none"}
    if isinstance(value, (tuple, list)):
        return {"t": type(value).__name__, "items": [_encode(v, tensors, depth + 1) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"t": "dict", "items": {k: _encode(v, tensors, depth + 1) for k, v in value.items()}}
    return {"t": "other", "type": type(value).__name__[:100]}


def write_entry(folder: str, exercise: str, index: int, entry: dict) -> None:
    """Write one recorded case (called in the grading kernel after each case)."""
    from safetensors.torch import save_file

    tensors: dict = {}
    out = dict(entry)
    if "value" in out:
        try:
            out["value"] = _encode(out["value"], tensors)
        except RecordError as exc:
            tensors, out = {}, {"label": entry["label"], "status": "error", "message": f"{exercise}: {exc}",
                                "error_type": "SubmissionError"}
    base = os.path.join(folder, f"{exercise}.{index}")
    save_file(tensors, base + ".safetensors.tmp")
    os.replace(base + ".safetensors.tmp", base + ".safetensors")
    with open(base + ".json.tmp", "w") as f:
        json.dump(out, f)
    os.replace(base + ".json.tmp", base + ".json")


# ---------------------------------------------------------------- trusted side
class _Budget:
    def __init__(self):
        self.bytes = 0
        self.nodes = 0


def _read_capped(dir_fd: int, name: str, cap: int, budget: _Budget) -> bytes | None:
    """The bytes of a regular file in ``dir_fd``, never through a link, never past ``cap`` or the batch's total."""
    data = read_regular(name, min(cap, MAX_TOTAL_BYTES - budget.bytes), dir_fd=dir_fd)
    if data is not None:
        budget.bytes += len(data)
    return data


def _decode(node: Any, tensors: dict, budget: _Budget, depth: int = 0) -> Any:
    budget.nodes += 1
    if depth > MAX_DEPTH or budget.nodes > MAX_NODES or not isinstance(node, dict):
        raise RecordError("malformed record")
    kind = node.get("t")
    if kind in ("tensor", "ndarray"):
        t = tensors.get(node.get("key"))
        if t is None:
            raise RecordError("missing tensor")
        if kind == "ndarray":
            return t.numpy()
        t.course_device = str(node.get("device", "cpu"))  # where the student left it
        return t
    if kind == "bool":
        return bool(node.get("v"))
    if kind == "int":
        v = node.get("v")
        if not isinstance(v, int):
            raise RecordError("malformed int")
        return v
    if kind == "float":
        return float(str(node.get("v")))
    if kind == "str":
        return str(node.get("v"))[:10_000]
    if kind == "none":
        return None
    if kind in ("tuple", "list"):
        items = node.get("items")
        if not isinstance(items, list):
            raise RecordError("malformed list")
        out = [_decode(v, tensors, budget, depth + 1) for v in items]
        return tuple(out) if kind == "tuple" else out
    if kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict):
            raise RecordError("malformed dict")
        return {str(k): _decode(v, tensors, budget, depth + 1) for k, v in items.items()}
    return Opaque(str(node.get("type", "object"))[:100])


class Opaque:
    """Stands in for a recorded value that was neither a tensor nor a plain value."""

    def __init__(self, type_name: str):
        self.course_type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.course_type_name}>"


def _json_loads_bounded(data: bytes) -> Any:
    # Depth is bounded by the size cap and by json's own recursion guard; a deep bomb raises.
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def read_entries(folder: str, exercise: str, count: int, device: torch.device | str = "cpu") -> list:
    """Up to ``count`` recorded entries of ``exercise`` (``None`` where a case has no valid record).

    Only as many files as the trusted side expects cases are ever opened.
    """
    from safetensors.torch import load as load_tensors

    device = torch.device(device)
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return [None] * count
    budget = _Budget()
    out: list = []
    try:
        for i in range(count):
            raw = _read_capped(dir_fd, f"{exercise}.{i}.json", MAX_JSON_BYTES, budget)
            entry = _json_loads_bounded(raw) if raw is not None else None
            if not isinstance(entry, dict):
                out.append(None)
                continue
            entry = {k: entry.get(k) for k in ("label", "status", "message", "error_type", "value")}
            if entry["status"] == "ok":
                blob = _read_capped(dir_fd, f"{exercise}.{i}.safetensors", MAX_TENSOR_FILE_BYTES, budget)
                try:
                    tensors = load_tensors(blob) if blob is not None else {}
                    if any(t.numel() > MAX_ELEMENTS for t in tensors.values()):
                        raise RecordError("tensor too large")
                    value = _decode(entry["value"], tensors, budget)
                except Exception:  # noqa: BLE001: a damaged record is no record
                    out.append(None)
                    continue
                entry["value"] = _to_device(value, device)
            out.append(entry)
    finally:
        os.close(dir_fd)
    return out


def _to_device(value: Any, device: torch.device) -> Any:
    """Recorded tensors go back where the student left them: the judge's device checks still bite."""
    if isinstance(value, torch.Tensor):
        where = getattr(value, "course_device", "cpu")
        if where == device.type and device.type != "cpu":
            return value.to(device)
        return value
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
