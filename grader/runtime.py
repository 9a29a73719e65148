"""Where and how reference comparisons run: the device and strict fp32 (seeded inputs: grader.cases.Context)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


def device() -> torch.device:
    """CUDA when present (unless COURSE_DEVICE says otherwise), else CPU."""
    wanted = os.environ.get("COURSE_DEVICE")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Switch TF32 off for matmul and cuDNN, restoring the caller's settings on exit.

    With TF32 on, an H200 gives ~4e-4 relative error on a correct ControlNet (DESIGN.md):
    indistinguishable from a small bug. Grading always runs inside this context.
    """
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])
