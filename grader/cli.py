"""The ``course`` command: release, autograde, merge, roster, export, check, doctor, weights, bench, demo."""

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
    due, roster = _due_and_roster(args)
    results = run([Path(p) for p in args.submissions], args.assignment, out, jobs=args.jobs, shard=shard,
                  force=args.force, progress=not args.no_progress, due=due, roster=roster)
    if due is not None:
        print(f"due {due:%Y-%m-%d %H:%M} UTC; late policy: nbgrader_config.py (grader.late)")
    print(table(results))
    print(f"\nresults: {out / 'results'}  gradebook: {out / 'grades.csv'}  feedback: {out / 'feedback'}")
    return 0


def _due_and_roster(args):
    """--due / --roster, else the course gradebook's due date for the assignment and its students."""
    from .late import assignment_due, parse_when
    from .roster import course_db_url, read_roster, students

    db = getattr(args, "db", None) or course_db_url()
    due = None
    if getattr(args, "due", None):
        try:
            due = parse_when(args.due)
        except ValueError as exc:
            raise SystemExit(f"--due: {exc}") from None
    elif getattr(args, "assignment", None):
        due = assignment_due(db, args.assignment)
    if getattr(args, "roster", None):
        roster = {p.id: p for p in read_roster(Path(args.roster))}
    else:
        roster = students(db)
    return due, roster


def merge(args) -> int:
    """Merge the results of several autograde output folders (CI shards) into one gradebook."""
    from .autograde import load_results, table, write_csv

    results = load_results([Path(f) for f in args.folders])
    if not results:
        raise SystemExit("no results/*.json found in " + ", ".join(args.folders))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, out / "grades.csv", _due_and_roster(args)[1])
    print(table(results))
    print(f"\n{len(results)} results -> {out / 'grades.csv'}")
    return 0


# ---------------------------------------------------------------- roster and export
def roster_cmd(args) -> int:
    """Import a class list into nbgrader's gradebook (students' names and e-mails), or list it."""
    from .roster import course_db_url, import_roster, read_roster, students

    db = args.db or course_db_url()
    if args.action == "import":
        if not args.file:
            raise SystemExit("course roster import ROSTER.csv")
        try:
            people = read_roster(Path(args.file), args.id_column)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        added, updated = import_roster(people, db)
        print(f"{len(people)} students from {args.file}: {added} added, {updated} updated ({db})")
        return 0
    roster = students(db)
    for p in roster.values():
        print(f"{p.id:<20} {p.sortable_name:<32} {p.email:<32} {p.lms_user_id}")
    print(f"{len(roster)} students ({db})")
    return 0


def export(args) -> int:
    """Grades for an LMS: Canvas's gradebook CSV or a long per-exercise CSV."""
    from .export import from_gradebook, from_results, write_canvas, write_long
    from .roster import course_db_url, read_roster, students

    db = args.db or course_db_url()
    roster = {p.id: p for p in read_roster(Path(args.roster))} if args.roster else students(db)
    if args.results:
        rows, maxima = from_results([Path(r) for r in args.results], roster, args.assignment or None)
    else:
        from nbgrader.api import Gradebook

        if db.startswith("sqlite:///") and not Path(db[len("sqlite:///"):]).is_file():
            raise SystemExit(f"no gradebook at {db}: run nbgrader, or export `course autograde` output with --results")
        with Gradebook(db) as gb:
            rows, maxima, gb_roster = from_gradebook(gb, args.assignment or None)
        roster = roster if args.roster else gb_roster
    if not maxima:
        raise SystemExit("nothing to export: no assignment with grades")
    ids = dict(pair.split("=", 1) for pair in args.canvas_id)
    out = Path(args.out or f"reports/export/{'canvas' if args.format == 'canvas' else 'scores'}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "canvas":
        write_canvas(rows, maxima, roster, out, per_exercise=args.per_exercise, missing=args.missing,
                     canvas_ids=ids, id_as=args.id_as)
    else:
        write_long(rows, maxima, roster, out)
    pending = sorted({(r.assignment, r.student) for r in rows if r.status == "pending"})
    late = [r for r in rows if r.late_penalty > 0]
    missing = sum(r.status == "missing" for r in rows)
    print(f"{out}: {len({r.student for r in rows} | set(roster))} students, {len(maxima)} assignment(s); "
          f"{len(late)} late (penalty applied), {missing} without a submission"
          + (f" ({'0' if args.missing == 'zero' else 'empty'} in Canvas)" if args.format == "canvas" else ""))
    if pending:
        print(f"{len(pending)} submission(s) with hand-graded points still pending (not in the totals yet): "
              + ", ".join(f"{s}/{a}" for a, s in pending[:10]) + (" ..." if len(pending) > 10 else ""))
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
    p.add_argument("--due", help="due date, e.g. '2026-12-11 23:59 Europe/Berlin' (default: the course gradebook's "
                                 "for the assignment); late submissions (timestamp.txt) lose what nbgrader_config.py says")
    p.add_argument("--roster", help="roster CSV for names and e-mails in grades.csv (default: the course gradebook's)")
    p.add_argument("--db", help="course gradebook URL (default: nbgrader_config.py's)")

    p = sub.add_parser("merge", help="merge autograde output folders (CI shards) into one grades.csv")
    p.add_argument("folders", nargs="+")
    p.add_argument("-o", "--out", default="reports/merged")
    p.add_argument("--roster", help="roster CSV for names and e-mails (default: the course gradebook's)")
    p.add_argument("--db", help="course gradebook URL (default: nbgrader_config.py's)")

    p = sub.add_parser("roster", help="import a class list (id, names, e-mails) into nbgrader's gradebook, or list it")
    p.add_argument("action", choices=["import", "list"])
    p.add_argument("file", nargs="?", help="CSV: id,first_name,last_name,email[,lms_user_id], or a Canvas/Moodle export")
    p.add_argument("--id-column", help="the column holding the student id (default: id, or Canvas's SIS Login ID)")
    p.add_argument("--db", help="course gradebook URL (default: nbgrader_config.py's)")

    p = sub.add_parser("export", help="grades for an LMS: Canvas's gradebook CSV, or a long per-exercise CSV")
    p.add_argument("--format", choices=["canvas", "long"], default="canvas")
    p.add_argument("-a", "--assignment", action="append", default=[], help="only these lessons (repeatable)")
    p.add_argument("-o", "--out", help="CSV to write (default: reports/export/canvas.csv or scores.csv)")
    p.add_argument("--results", nargs="+", help="`course autograde` output folders instead of the gradebook")
    p.add_argument("--roster", help="roster CSV (default: the gradebook's students)")
    p.add_argument("--db", help="course gradebook URL (default: nbgrader_config.py's)")
    p.add_argument("--per-exercise", action="store_true",
                   help="canvas: also a column per exercise (raw points; give them a zero-weight Canvas group)")
    p.add_argument("--missing", choices=["blank", "zero"], default="blank",
                   help="no submission: empty cell (Canvas keeps its grade) or 0")
    p.add_argument("--canvas-id", action="append", default=[], metavar="LESSON=ID",
                   help="update existing Canvas assignment ID instead of creating one")
    p.add_argument("--id-as", choices=["sis_login_id", "sis_user_id"], default="sis_login_id",
                   help="the Canvas column that gets the nbgrader student id")

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
    return {"autograde": autograde, "merge": merge, "roster": roster_cmd, "export": export, "check": check, "doctor": doctor, "weights": weights_cmd,
            "bench": bench, "demo": demo}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
