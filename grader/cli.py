"""The ``course`` command: release, autograde, merge, check, doctor, weights, bench, demo."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import LESSONS

REPO = Path(__file__).resolve().parent.parent


def _lessons(names: list[str]) -> list[str]:
    available = [l for l in LESSONS if (REPO / "source" / l).is_dir()]
    if not names or names == ["all"]:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"unknown or not yet written lesson(s): {unknown}; available: {available}")
    return names


# ---------------------------------------------------------------- release
def release(lessons: list[str], root: Path = REPO) -> None:
    """Regenerate release/ and solutions/ from source/ with nbgrader, in a throwaway gradebook."""
    from .autograde import _nbgrader, _write_config

    for lesson in lessons:
        with tempfile.TemporaryDirectory(prefix="course-release-") as tmp:
            work = Path(tmp)
            # Per-run leftovers in a local source folder (otter logs, checkpoints) are not the lesson.
            shutil.copytree(root / "source" / lesson, work / "source" / lesson,
                            ignore=shutil.ignore_patterns(".OTTER_LOG", ".ipynb_checkpoints", "__pycache__"))
            _write_config(work)
            for cmd in ("generate_assignment", "generate_solution"):
                done = _nbgrader(work, cmd, lesson, "--force", timeout=600)
                if done.returncode != 0:
                    raise SystemExit(f"nbgrader {cmd} {lesson} failed:\n{done.stdout[-4000:]}")
            for produced, dest in (("release", "release"), ("solutions", "solutions")):
                target = root / dest / lesson
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(work / produced / lesson, target)
        print(f"released {lesson}: release/{lesson}, solutions/{lesson}")


# ---------------------------------------------------------------- autograde
def autograde(args) -> int:
    from .autograde import run, table

    shard = None
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        if not 1 <= i <= n:
            raise SystemExit("--shard takes i/n with 1 <= i <= n")
        shard = (i, n)
    if args.weights_dir:
        os.environ["COURSE_WEIGHTS_DIR"] = str(Path(args.weights_dir).resolve())
    out = Path(args.out)
    results = run([Path(p) for p in args.submissions], args.assignment, out, jobs=args.jobs, shard=shard,
                  force=args.force, progress=not args.no_progress)
    print(table(results))
    print(f"\nresults: {out / 'results'}  gradebook: {out / 'grades.csv'}  feedback: {out / 'feedback'}")
    return 0


def merge(args) -> int:
    """Merge the results of several autograde output folders (CI shards) into one gradebook."""
    from .autograde import load_results, table, write_csv

    results = load_results([Path(f) for f in args.folders])
    if not results:
        raise SystemExit("no results/*.json found in " + ", ".join(args.folders))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, out / "grades.csv")
    print(table(results))
    print(f"\n{len(results)} results -> {out / 'grades.csv'}")
    return 0


# ---------------------------------------------------------------- check
def check(args) -> int:
    """Run a student notebook from a fresh kernel and report every public check."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(args.notebook).resolve()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    verdicts = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "checks.run(" not in cell.source:
            continue
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        name = cell.source.split('"')[1] if '"' in cell.source else cell.source
        if args.exercise and name != args.exercise:
            continue
        ok = "PASS" in text and not errors
        verdicts.append((name, ok))
        print(f"--- {name}")
        print(text.strip() or "\n".join(errors) or "(no output: did an earlier cell fail?)")
    passed = sum(ok for _, ok in verdicts)
    print(f"\n{passed} of {len(verdicts)} public checks pass")
    return 0 if verdicts and passed == len(verdicts) else 1


# ---------------------------------------------------------------- doctor and weights
def doctor(args) -> int:
    import importlib.metadata as md
    import platform

    import torch

    from .weights import CHECKPOINTS, PARTS, resolve

    print(f"python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs)")
    for pkg in ("torch", "diffusers", "transformers", "huggingface_hub", "safetensors", "nbgrader", "otter-grader",
                "jupyterlab", "series7-course"):
        try:
            print(f"  {pkg:<16} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"  {pkg:<16} NOT INSTALLED")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}); hidden tests run there in strict fp32")
    else:
        print("GPU: none; everything runs on the CPU")
    from .sandbox import status

    print(f"sandbox for grading kernels: {status()}")
    wdir = os.environ.get("COURSE_WEIGHTS_DIR")
    print(f"weights: {'COURSE_WEIGHTS_DIR=' + wdir if wdir else 'no local weights folder (COURSE_WEIGHTS_DIR not set)'}; "
          f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE') or '(unset)'}")
    print(f"exchange (release/collect): {_exchange_status()}")
    for name, ck in CHECKPOINTS.items():
        src = resolve(name)
        parts = ", ".join(p for p, v in PARTS.items() if v.checkpoint == name)
        print(f"  [{src.kind.upper():>8}] {ck.repo_id}@{ck.revision} ({parts})")
        print(f"             {src.banner()}")
    return 0


def _exchange_status() -> str:
    """What nbgrader_config.py sets as the exchange root, and whether students could use it."""
    from traitlets.config.loader import PyFileConfigLoader

    try:
        config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
        root = Path(config.Exchange.root)
    except Exception as exc:  # a broken config is what doctor is for
        return f"nbgrader_config.py could not be read ({exc})"
    if not root.is_dir():
        return (f"{root} does not exist: create it before release_assignment "
                f"(mkdir -p {root} && chmod 1777 {root}; README 'Distributing and collecting')")
    mode = root.stat().st_mode & 0o7777
    if mode & 0o1777 != 0o1777:
        return f"{root} has mode {mode:o}, students need 1777 (world-writable, sticky)"
    return f"{root} (mode {mode:o}; COURSE_EXCHANGE overrides it)"


def weights_cmd(args) -> int:
    from .weights import CHECKPOINTS, PARTS, load_part, resolve
    from .weights.resolve import download

    if args.action == "list":
        for name, ck in CHECKPOINTS.items():
            print(f"{name}: {ck.repo_id}@{ck.revision}/{ck.subfolder} [{ck.license}] {ck.notes}")
            for p in PARTS.values():
                if p.checkpoint == name:
                    print(f"    {p.name:<18} prefix {p.prefix or '(all)':<24} {p.description}")
        return 0
    if args.action == "download":
        failed = 0
        for name in args.names or list(CHECKPOINTS):
            try:
                print(download(name).banner())
            except Exception as exc:  # no network here is the normal case: say so, keep going
                failed += 1
                print(f"{name}: download failed ({type(exc).__name__}: {str(exc)[:300]})")
        return 1 if failed else 0
    status = 0
    for p in PARTS.values():
        try:
            module, src = load_part(p.name, source=resolve(p.checkpoint))
            n = sum(t.numel() for t in module.state_dict().values())
            print(f"ok   {p.name:<18} {n:>12,d} values  {src.banner()}")
        except Exception as exc:
            status = 1
            print(f"FAIL {p.name:<18} {type(exc).__name__}: {exc}")
    return status


# ---------------------------------------------------------------- bench and demo
def bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def demo(args) -> int:
    """Release, then autograde the bundled example submissions and print the table."""
    lessons = _lessons(args.lessons)
    release(lessons)
    status = 0
    for lesson in lessons:
        examples = REPO / "tests" / "submissions" / lesson
        if not examples.is_dir():
            print(f"{lesson}: no bundled examples")
            continue
        ns = argparse.Namespace(submissions=[str(examples)], assignment=lesson, out=str(Path(args.out) / lesson),
                                jobs=args.jobs, shard=None, force=True, no_progress=False, weights_dir=None)
        status |= autograde(ns)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="course", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("release", help="regenerate release/ and solutions/ from source/")
    p.add_argument("lessons", nargs="*", help="e.g. 10_diffusion_transformers (default: all)")

    p = sub.add_parser("autograde", help="grade a batch of submissions")
    p.add_argument("submissions", nargs="+", help="notebooks, folders of notebooks, or nbgrader submitted/")
    p.add_argument("-a", "--assignment", required=True)
    p.add_argument("-o", "--out", default="reports/autograde")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--shard", help="i/n: grade every n-th submission starting at i (CI matrices)")
    p.add_argument("--force", action="store_true", help="regrade even where a result exists")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--weights-dir", help="folder with real checkpoints (ORG/NAME/subfolder/...)")

    p = sub.add_parser("merge", help="merge autograde output folders (CI shards) into one grades.csv")
    p.add_argument("folders", nargs="+")
    p.add_argument("-o", "--out", default="reports/merged")

    p = sub.add_parser("check", help="run a notebook and report its public checks")
    p.add_argument("notebook")
    p.add_argument("--exercise")
    p.add_argument("--timeout", type=int, default=120)

    sub.add_parser("doctor", help="versions, devices, and which weights each reference will use")

    p = sub.add_parser("weights", help="list / verify / download checkpoints")
    p.add_argument("action", choices=["list", "verify", "download"])
    p.add_argument("names", nargs="*")

    p = sub.add_parser("bench", help="measure check latency, notebook time and autograde time")
    p.add_argument("lessons", nargs="*")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--ratio", action="store_true",
                   help="trusted autograde vs the notebook's own run, and a batch (--batch, -j); lesson 10 by default")
    p.add_argument("--batch", type=int, default=30)
    p.add_argument("-j", "--jobs", type=int, default=2)

    p = sub.add_parser("demo", help="release + autograde the bundled example submissions")
    p.add_argument("lessons", nargs="*")
    p.add_argument("-o", "--out", default="reports/demo")
    p.add_argument("-j", "--jobs", type=int, default=2)

    args = parser.parse_args(argv)
    if args.cmd == "release":
        release(_lessons(args.lessons))
        return 0
    return {"autograde": autograde, "merge": merge, "check": check, "doctor": doctor, "weights": weights_cmd,
            "bench": bench, "demo": demo}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
