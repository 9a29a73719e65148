"""Batch autograding: a folder of submissions in, per-student JSON, a CSV and feedback HTML out.

Every submission is graded by real ``nbgrader autograde`` in its own throwaway course
directory (its own copy of a gradebook prepared once per batch), so submissions cannot
see each other, a batch can run in parallel, and a crash or hang costs one student a
score of 0 with a reason, never the batch. Finished results are written atomically and
reused on a re-run (resume after an interruption).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

from .spreadsheet import SafeWriter
from . import __version__
from .late import human, read_timestamp
from .submission import InvalidSubmission, normalise, read_notebook

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_TIMEOUT = int(os.environ.get("COURSE_NOTEBOOK_TIMEOUT", "900"))


@dataclass
class Submission:
    student: str
    path: Path
    named_by_student: bool = False   # nbgrader layout: the file name was the student's to keep
    folder: Path | None = None       # nbgrader layout: where timestamp.txt is (nbgrader collect writes it)


@dataclass
class Result:
    student: str
    assignment: str
    file: str
    status: str                      # graded | invalid | timeout | error
    score: float = 0.0
    max_score: float = 0.0
    exercises: dict = field(default_factory=dict)   # name -> {"score", "max_score", "message"}
    notes: list = field(default_factory=list)
    flags: list = field(default_factory=list)        # integrity flags (grader.integrity), for the instructor
    feedback: str | None = None
    seconds: float = 0.0
    digest: str = ""
    timestamp: str = ""              # submission time (UTC, from timestamp.txt); '' when there is none
    late_seconds: float = 0.0        # past the due date, as nbgrader computes it
    late_penalty: float = 0.0        # points taken off by the late policy (grader.late, nbgrader's AssignLatePenalties)

    @property
    def final_score(self) -> float:
        return max(0.0, self.score - self.late_penalty)


def source_notebook(assignment: str, root: Path = REPO) -> Path:
    found = sorted((root / "source" / assignment).glob("*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one notebook in source/{assignment}, found {len(found)}")
    return found[0]


def collect(paths: list[Path], assignment: str) -> list[Submission]:
    """Files, flat folders of notebooks, or nbgrader's submitted/<student>/<assignment>/ layout."""
    subs: list[Submission] = []
    for path in paths:
        if path.is_file():
            subs.append(Submission(path.stem, path))
        elif (path / assignment).is_dir() or any((d / assignment).is_dir() for d in path.iterdir() if d.is_dir()):
            roots = [path] if (path / assignment).is_dir() else [d for d in sorted(path.iterdir()) if d.is_dir()]
            for student_dir in roots:
                nbs = sorted((student_dir / assignment).glob("*.ipynb"))
                if nbs:
                    subs.append(Submission(student_dir.name, nbs[0], named_by_student=True,
                                           folder=student_dir / assignment))
        elif path.is_dir():
            subs.extend(Submission(p.stem, p) for p in sorted(path.glob("*.ipynb")))
        else:
            raise FileNotFoundError(path)
    seen: dict[str, int] = {}
    for s in subs:  # two files with one stem must not overwrite each other's results
        seen[s.student] = seen.get(s.student, 0) + 1
        if seen[s.student] > 1:
            s.student = f"{s.student}-{seen[s.student]}"
    return subs


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader runs alembic from PATH: the interpreter's own bin first.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["COURSE_ROOT"] = str(root)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def _nbgrader(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "nbgrader", *args], cwd=root, env=_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the kernel too: it is in the same session
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def _write_config(root: Path) -> None:
    (root / "nbgrader_config.py").write_text(
        f"exec(open({str(REPO / 'nbgrader_config.py')!r}).read())\n")


class Worker:
    """A warm grading process: nbgrader, torch, diffusers and the lesson's weights loaded once.

    It runs nbgrader's autograde and feedback in-process (NbGraderAPI) for one submission at
    a time; the trusted verification of every submission it grades reuses what it loaded.
    Nothing of the student's runs in it (their code runs in sandboxed kernels it starts).
    A submission that runs past the notebook-wide limit gets the worker killed with every
    kernel it started (its own session), and the next submission a fresh one.
    """

    def __init__(self, assignment: str, log: Path):
        import multiprocessing

        self.assignment, self.log = assignment, log
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, assignment, str(log)), daemon=True)
        self.proc.start()
        child.close()

    def run(self, root: Path, student: str, timeout: float) -> dict:
        self.conn.send((str(root), student))
        if not self.conn.poll(timeout):
            self.kill()
            raise subprocess.TimeoutExpired("nbgrader autograde", timeout)
        try:
            return self.conn.recv()
        except EOFError:
            self.kill()
            raise RuntimeError("the grading worker died (see the batch log)") from None

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: the kernels' launchers too
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.join(5)

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(30)
        except (BrokenPipeError, OSError):
            pass
        if self.proc.is_alive():
            self.kill()


def _worker_main(conn, assignment: str, log: str) -> None:
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    _warm(assignment)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        root, student = job
        conn.send(_autograde_in_process(Path(root), assignment, student))


def _warm(assignment: str) -> None:
    """Import and load what verification needs, once per worker."""
    import warnings

    from .cases import hidden_context
    from .exercises import lesson
    from .weights.resolve import prepare_all

    prepare_all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ex in lesson(assignment).EXERCISES.values():
            try:
                list(ex.cases(hidden_context(0)))
            except Exception:  # noqa: BLE001: warming is best effort; grading reports real failures
                pass


def _autograde_in_process(root: Path, assignment: str, student: str) -> dict:
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    os.environ["COURSE_ROOT"] = str(root)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = "sqlite:///" + str(root / "gradebook.db")
    api = NbGraderAPI(config=config)
    graded = api.autograde(assignment, student, force=True, create=True)
    feedback = api.generate_feedback(assignment, student, force=True) if graded.get("success") else {}
    return {"autograde": graded, "feedback": feedback}


class Batch:
    """One assignment, one output folder; prepared once, then :meth:`grade` per submission."""

    def __init__(self, assignment: str, out: Path, workdir: Path | None = None, due: datetime | None = None):
        self.assignment = assignment
        self.due = due                 # naive UTC, as nbgrader stores it; None: no due date, nothing is late
        self.out = out
        self.source = source_notebook(assignment)
        self.source_nb = nbformat.read(self.source, as_version=4)
        self.work = Path(workdir or tempfile.mkdtemp(prefix="course-autograde-"))
        self.template = self.work / "_template"
        for sub in ("results", "feedback"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        import threading

        self._local = threading.local()
        self._workers: list[Worker] = []
        self._lock = threading.Lock()

    def _worker(self) -> Worker:
        w = getattr(self._local, "worker", None)
        if w is None or not w.alive():
            w = Worker(self.assignment, self.work / "workers.log")
            self._local.worker = w
            with self._lock:
                self._workers.append(w)
        return w

    def close(self) -> None:
        for w in self._workers:
            w.close()

    def prepare(self) -> None:
        """Register the assignment in a fresh gradebook once; every submission copies it."""
        if (self.template / "gradebook.db").is_file():
            return
        shutil.rmtree(self.template, ignore_errors=True)
        (self.template / "source").mkdir(parents=True)
        shutil.copytree(self.source.parent, self.template / "source" / self.assignment,
                        ignore=shutil.ignore_patterns(".OTTER_LOG", ".ipynb_checkpoints", "__pycache__"))
        _write_config(self.template)
        done = _nbgrader(self.template, "generate_assignment", self.assignment, "--force", timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"nbgrader generate_assignment failed:\n{done.stdout[-3000:]}")
        if self.due is not None:  # nbgrader's own lateness check (and AssignLatePenalties) reads it from here
            from nbgrader.api import Gradebook

            with Gradebook(f"sqlite:///{self.template / 'gradebook.db'}") as gb:
                gb.update_or_create_assignment(self.assignment, duedate=self.due)

    def _digest(self, sub: Submission) -> str:
        h = hashlib.sha256()
        stamp = sub.folder / "timestamp.txt" if sub.folder else None
        policy = REPO / "nbgrader_config.py"  # the late policy lives there
        for part in (sub.path.read_bytes(), self.source.read_bytes(), __version__.encode(), str(self.due).encode(),
                     stamp.read_bytes() if stamp and stamp.is_file() else b"", policy.read_bytes()):
            h.update(part)
        return h.hexdigest()[:16]

    def result_path(self, student: str) -> Path:
        return self.out / "results" / f"{student}.json"

    def cached(self, sub: Submission) -> Result | None:
        path = self.result_path(sub.student)
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("digest") == self._digest(sub):
                    return Result(**data)
            except (ValueError, TypeError):
                return None  # a damaged result file is regraded, not trusted
        return None

    def save(self, result: Result) -> None:
        path = self.result_path(result.student)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2))
        os.replace(tmp, path)

    def grade(self, sub: Submission) -> Result:
        start = time.perf_counter()
        result = Result(sub.student, self.assignment, str(sub.path), "error", digest=self._digest(sub))
        result.max_score = _max_score(self.source_nb)
        result.exercises = {name: {"score": 0.0, "max_score": pts, "message": ""}
                            for name, pts in _graded_cells(self.source_nb).items()}
        for name, pts in _task_cells(self.source_nb).items():  # graded by hand in formgrader: pending here
            result.exercises[name] = {"score": None, "max_score": pts, "manual": True,
                                      "message": "graded by hand (formgrader): pending"}
        stamp = self._timestamp(sub, result)
        try:
            self._grade_into(sub, result, stamp)
        except InvalidSubmission as exc:
            result.status = "invalid"
            result.notes.append(str(exc))
            result.feedback = self._unreadable_feedback(sub)
        except subprocess.TimeoutExpired:
            result.status = "timeout"
            result.notes.append(f"grading stopped after {NOTEBOOK_TIMEOUT} s (the notebook-wide limit): "
                                f"look for an infinite loop or a very slow cell")
        except Exception as exc:  # the machinery failed for this one submission: say so, go on
            result.status = "error"
            result.notes.append(f"grading failed: {type(exc).__name__}: {str(exc)[-1500:]}")
        result.seconds = round(time.perf_counter() - start, 2)
        self.save(result)
        return result

    def _timestamp(self, sub: Submission, result: Result) -> datetime | None:
        """The submission time nbgrader will read, and a note when there is none and a due date is set."""
        stamp, note = read_timestamp(sub.folder) if sub.folder else (None, "no timestamp.txt: lateness not checked "
                                                                     "(treated as on time)")
        if stamp is not None:
            result.timestamp = stamp.isoformat(sep=" ")
            if self.due is not None:  # nbgrader's figure replaces this for graded submissions
                result.late_seconds = max(0.0, (stamp - self.due).total_seconds())
        elif self.due is not None:
            result.notes.append(note)
        return stamp

    def _grade_into(self, sub: Submission, result: Result, stamp: datetime | None = None) -> None:
        submitted = read_notebook(sub.path)
        fixed = normalise(submitted, self.source_nb)
        result.notes.extend(fixed.notes)
        if sub.named_by_student and sub.path.name != self.source.name:
            result.notes.append(f"file was named {sub.path.name}; graded as {self.source.name}")
        root = self.work / f"s-{sub.student}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.template, root)
        target = root / "submitted" / sub.student / self.assignment / self.source.name
        target.parent.mkdir(parents=True)
        nbformat.write(fixed.notebook, target)
        if stamp is not None:  # nbgrader reads it there (CourseDirectory.get_existing_timestamp)
            (target.parent / "timestamp.txt").write_text(stamp.isoformat(sep=" ") + " UTC\n")
        done = self._worker().run(root, sub.student, NOTEBOOK_TIMEOUT)
        autograded = root / "autograded" / sub.student / self.assignment / self.source.name
        if not autograded.is_file():
            log = done["autograde"].get("log", "") + done["autograde"].get("error", "")
            raise RuntimeError(f"nbgrader autograde produced no notebook:\n{log[-2000:]}")
        self._read_scores(root, sub.student, result)
        _messages(nbformat.read(autograded, as_version=4), result)
        result.status = "graded"
        html = root / "feedback" / sub.student / self.assignment / (self.source.stem + ".html")
        if done["feedback"].get("success") and html.is_file() and not html.is_symlink():
            dest = self.out / "feedback" / sub.student / self.assignment
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(html, dest / html.name)
            result.feedback = str(dest / html.name)
        else:
            result.notes.append("feedback HTML could not be generated")
        shutil.rmtree(root, ignore_errors=True)

    def _unreadable_feedback(self, sub: Submission) -> str | None:
        """The student's page for a file that is not a notebook: what is wrong and how to fix it."""
        from .feedback import write_unreadable_page

        dest = self.out / "feedback" / sub.student / self.assignment / (self.source.stem + ".html")
        try:
            return str(write_unreadable_page(sub.path, dest, self.assignment, _max_score(self.source_nb)))
        except OSError:
            return None

    def _read_scores(self, root: Path, student: str, result: Result) -> None:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
            nb = gb.find_submission_notebook(self.source.stem, self.assignment, student)
            total = 0.0
            for grade in nb.grades:
                name = _exercise_name(grade.name)
                if name not in result.exercises:
                    continue
                if result.exercises[name].get("manual") and grade.manual_score is None:
                    continue  # nobody has graded it yet: pending, not 0
                score = float(grade.score or 0.0)
                result.exercises[name]["score"] = score
                total += score
            result.score = total
            # nbgrader's own lateness and penalty (AssignLatePenalties with the course's plugin), not a recomputation
            submission = gb.find_submission(self.assignment, student)
            if submission.timestamp is not None:
                result.timestamp = submission.timestamp.isoformat(sep=" ")
            result.late_seconds = float(submission.total_seconds_late)
            result.late_penalty = float(nb.late_submission_penalty or 0.0)
        pending = {n: e["max_score"] for n, e in result.exercises.items() if e.get("manual") and e["score"] is None}
        if pending:
            result.notes.append(f"{sum(pending.values()):g} point(s) to grade by hand in formgrader: {', '.join(pending)}")


def _graded_cells(nb) -> dict[str, float]:
    out = {}
    for c in nb.cells:
        meta = c.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            out[_exercise_name(meta["grade_id"])] = float(meta.get("points", 0))
    return out


def _task_cells(nb) -> dict[str, float]:
    """nbgrader task cells (graded by hand, e.g. lesson 8's written comparison): name -> points."""
    return {meta["grade_id"]: float(meta.get("points", 0)) for c in nb.cells
            if (meta := c.get("metadata", {}).get("nbgrader", {})).get("task")}


def _max_score(nb) -> float:
    """nbgrader's max score: autograded and hand-graded points."""
    return sum(_graded_cells(nb).values()) + sum(_task_cells(nb).values())


def _exercise_name(grade_id: str) -> str:
    return grade_id[: -len("_hidden")] if grade_id.endswith("_hidden") else grade_id


def _messages(nb, result: Result) -> None:
    from .nbgrader_plugins import FLAGS_PREFIX

    for c in nb.cells:
        if c.get("id") == "grading-notes":
            for line in c.get("source", "").splitlines():
                if line.startswith(FLAGS_PREFIX):
                    result.flags = [f.strip() for f in line[len(FLAGS_PREFIX):].strip().rstrip(".").split(";") if f.strip()]
                elif line.startswith("**Sandbox:**"):
                    result.notes.append(line.replace("**", "").strip())
        meta = c.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade"):
            continue
        name = _exercise_name(meta["grade_id"])
        for out in c.get("outputs", []):
            if out.get("output_type") == "error":
                result.exercises[name]["message"] = f"{out.get('ename')}: {out.get('evalue', '')}"[:2000]


def write_csv(results: list[Result], path: Path, roster: dict | None = None) -> None:
    """One row per submission. ``score`` is what grading earned, ``final_score`` that less the late
    penalty; a hand-graded exercise nobody has graded yet is empty (pending), not 0. Names and
    e-mails come from ``roster`` (grader.roster.students: the course gradebook's)."""
    roster = roster or {}
    names = sorted({n for r in results for n in r.exercises}, key=lambda n: list(results[0].exercises).index(n)
                   if n in results[0].exercises else 99)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = SafeWriter(f)
        w.writerow(["student", "assignment", "status", "score", "max_score", "late_penalty", "final_score",
                    "timestamp", "late_by", "late_seconds", "first_name", "last_name", "email",
                    *names, "flags", "notes"])
        for r in sorted(results, key=lambda r: r.student):
            who = roster.get(r.student)
            scores = [r.exercises.get(n, {}).get("score", 0.0) for n in names]
            w.writerow([r.student, r.assignment, r.status, r.score, r.max_score, r.late_penalty, r.final_score,
                        r.timestamp, human(r.late_seconds), round(r.late_seconds),
                        *((who.first_name, who.last_name, who.email) if who else ("", "", "")),
                        *["" if s is None else s for s in scores], " | ".join(r.flags), " | ".join(r.notes)])
    os.replace(tmp, path)


def table(results: list[Result]) -> str:
    rows = [f"{'student':<24} {'status':<8} {'score':>11}  notes"]
    for r in sorted(results, key=lambda r: r.student):
        late = [f"late {human(r.late_seconds)}: -{r.late_penalty:g} -> {r.final_score:g}"] if r.late_seconds > 0 else []
        note = ("; ".join(late + r.notes))[:90]
        rows.append(f"{r.student:<24} {r.status:<8} {r.score:>5g} / {r.max_score:<4g} {note}")
    return "\n".join(rows)


def load_results(folders: list[Path]) -> list[Result]:
    """Every results/*.json under the given output folders (e.g. one per CI shard)."""
    results: dict[tuple[str, str], Result] = {}
    for folder in folders:
        for path in sorted((folder / "results").glob("*.json")):
            r = Result(**json.loads(path.read_text()))
            results[(r.assignment, r.student)] = r
    return list(results.values())


def run(paths: list[Path], assignment: str, out: Path, *, jobs: int = 1, shard: tuple[int, int] | None = None,
        force: bool = False, progress: bool = True, due: datetime | None = None,
        roster: dict | None = None) -> list[Result]:
    """Grade a batch. ``due`` (naive UTC) makes nbgrader check each submission's timestamp.txt and
    apply the course's late policy; ``roster`` (id -> grader.roster.Person) names students in grades.csv."""
    subs = collect(paths, assignment)
    if shard:
        i, n = shard
        subs = [s for k, s in enumerate(sorted(subs, key=lambda s: s.student)) if k % n == i - 1]
    batch = Batch(assignment, out, due=due)
    results: list[Result] = []
    todo = []
    for s in subs:
        hit = None if force else batch.cached(s)
        (results.append(hit) if hit else todo.append(s))
    if todo:
        batch.prepare()
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"autograde {assignment}", unit="nb", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for fut in as_completed([pool.submit(batch.grade, s) for s in todo]):
            results.append(fut.result())
            bar.update(1)
    bar.close()
    batch.close()
    write_csv(results, out / "grades.csv", roster)
    shutil.rmtree(batch.work, ignore_errors=True)
    return results
