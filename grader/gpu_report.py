"""GPU check for lesson 10: hidden tests on CUDA, and precision/timing at the real DiT-XL/2 size.

    python -m grader.gpu_report OUT.json

Runs where diffusers is importable and CUDA is present. Real weights are used when
COURSE_WEIGHTS_DIR (or the HF cache) has them; otherwise random weights at the real size
measure precision and time (the structure and the arithmetic are the same).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def _time(fn, n: int = 10) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n * 1000


def precision(report: dict) -> None:
    """Relative L2 error of the reference DiT block on CUDA vs float64 on the CPU."""
    from .compare import errors
    from .runtime import strict_fp32
    from .weights import build_random

    block = build_random("dit_block", size="real")
    B, N, D = 2, 256, block.norm1.linear.in_features
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, N, D, generator=g)
    t, y = torch.tensor([10, 900]), torch.tensor([1, 207])
    with torch.no_grad():
        exact = block.double()(x.double(), timestep=t, class_labels=y)
        cpu32 = block.float()(x, timestep=t, class_labels=y)
        gpu = block.float().cuda()
        xs, ts, ys = x.cuda(), t.cuda(), y.cuda()
        rows = {"cpu fp32": errors(cpu32, exact)}
        with strict_fp32():
            out = gpu(xs, timestep=ts, class_labels=ys)
            rows["cuda fp32, TF32 off"] = errors(out, exact)
            ms = _time(lambda: gpu(xs, timestep=ts, class_labels=ys))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        rows["cuda TF32"] = errors(gpu(xs, timestep=ts, class_labels=ys), exact)
        torch.backends.cuda.matmul.allow_tf32 = False
        bf = block.to(torch.bfloat16).cuda()
        rows["cuda bf16"] = errors(bf(xs.bfloat16(), timestep=ts, class_labels=ys).float(), exact)
    report["dit_xl2_block_precision"] = {k: {"rel_l2": v[0], "max_rel": v[1]} for k, v in rows.items()}
    report["dit_xl2_block_fp32_ms"] = round(ms, 3)


def hidden_tests(report: dict) -> None:
    from .exercises import lesson
    from .notebook_code import solution_namespace

    os.environ["COURSE_DEVICE"] = "cuda"
    ns = solution_namespace("10_diffusion_transformers")
    results = {}
    for name, ex in lesson("10_diffusion_transformers").EXERCISES.items():
        start = time.perf_counter()
        try:
            msg, ok = ex.hidden(ns[name]), True
        except AssertionError as err:
            msg, ok = str(err), False
        results[name] = {"passed": ok, "seconds": round(time.perf_counter() - start, 3), "message": msg}
    report["hidden_tests_on_cuda"] = results


def main(argv: list[str]) -> int:
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    import diffusers

    report["diffusers"] = diffusers.__version__
    hidden_tests(report)
    precision(report)
    text = json.dumps(report, indent=2)
    print(text)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    return 0 if all(r["passed"] for r in report["hidden_tests_on_cuda"].values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
