"""A class through nbgrader's exchange, with two real Unix accounts as students (README
"Distributing and collecting"): the instructor releases a lesson; each student fetches it and
submits as themselves; the instructor collects, autogrades (sandboxed, trusted verdicts),
generates and releases feedback; each student fetches only their own feedback, with their score.

Needs root (to create the accounts with useradd and to sandbox grading, as in CI); skipped
otherwise. The accounts are removed afterwards, whatever happens. Nothing in the repository is
touched: the course is a copy, the exchange and the homes a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.notebook_code import REPO

pytestmark = [pytest.mark.slow, pytest.mark.extended]
LESSON = "05_flow_matching"       # no checkpoints to build: the quickest lesson to grade
COURSE = "series7"
TOOLS = ("useradd", "userdel", "setpriv", "unshare")

#: What a student's ~/.jupyter/nbgrader_config.py says (README "Distributing and collecting").
STUDENT_CONFIG = '''c = get_config()
c.CourseDirectory.course_id = "series7"
c.Exchange.root = "{root}"
'''

#: Run as a student: what the Assignment List in JupyterLab asks the server extension for.
LIST_PROBE = """
import json, sys
from nbgrader.server_extensions.assignment_list.handlers import AssignmentList
manager = AssignmentList()
manager.root_dir = sys.argv[1]
print(json.dumps(manager.list_assignments(course_id="series7")))
"""

#: Run as a student: which exchange folders they can list.
LISTDIR_PROBE = """
import json, os, sys
seen = {}
for path in sys.argv[1:]:
    try:
        seen[path] = sorted(os.listdir(path))
    except PermissionError:
        seen[path] = "denied"
print(json.dumps(seen))
"""


def _why_not() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root to create two student accounts (useradd) and to sandbox grading, as in CI"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"needs {', '.join(missing)}" if missing else None


def _first_closed_ancestor(path: str) -> str | None:
    """The outermost folder on ``path`` that other users cannot enter (e.g. /root, mode 700)."""
    for folder in [*reversed(Path(path).parents), Path(path)]:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return str(folder)
    return None


def _expose_python(cmd: list[str], stash: Path) -> list[str]:
    """``cmd`` in a private mount namespace where other users can reach this Python.

    A pyenv interpreter under /root (mode 700) cannot be run by a student account; a real
    class's students have their own environment. Here the students run this interpreter: the
    closed folder is covered, in that namespace only, by an empty tmpfs holding the
    interpreter's and the environment's prefixes and nothing else.
    """
    hidden: dict[str, list[str]] = {}
    for prefix in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}):
        closed = _first_closed_ancestor(prefix)
        if closed:
            hidden.setdefault(closed, []).append(prefix)
    if not hidden:
        return cmd
    q = shlex.quote
    lines = ["set -e"]
    for i, (closed, prefixes) in enumerate(hidden.items()):
        for j, prefix in enumerate(prefixes):
            keep = stash / f"{i}-{j}"
            keep.mkdir(parents=True, exist_ok=True)
            lines.append(f"mount --rbind {q(prefix)} {q(str(keep))}")
        lines.append(f"mount -t tmpfs -o mode=0755 course-exchange-test {q(closed)}")
        for j, prefix in enumerate(prefixes):
            lines += [f"mkdir -p {q(prefix)}", f"mount --rbind {q(str(stash / f'{i}-{j}'))} {q(prefix)}"]
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines), "sh", *cmd]


class Student:
    """A real Unix account with its own home, running nbgrader as itself."""

    def __init__(self, name: str, base: Path):
        self.name, self.home, self.stash = name, base / "home" / name, base / "stash"

    def create(self) -> None:
        subprocess.run(["useradd", "--create-home", "--home-dir", str(self.home), "--user-group",
                        "--shell", "/bin/sh", self.name], check=True, capture_output=True, text=True)
        self.home.chmod(0o700)  # as a shared server sets up homes: students cannot read each other's

    def remove(self) -> None:
        subprocess.run(["userdel", "--remove", self.name], capture_output=True, text=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def write(self, relative: str, data: bytes) -> Path:
        """A file in the student's home, owned by them (as if they had saved it)."""
        path = self.home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        uid, gid = _ids(self.name)
        for p in [path, *path.parents]:
            if p == self.home:
                break
            os.chown(p, uid, gid)
        return path

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = [f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}", "LANG=C.UTF-8",
               f"PATH={Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "PYTHONWARNINGS=ignore"]
        cmd = ["setpriv", f"--reuid={self.name}", f"--regid={self.name}", "--init-groups",
               "env", "-i", *env, sys.executable, *args]
        return subprocess.run(_expose_python(cmd, self.stash), cwd=self.home, capture_output=True, text=True,
                              timeout=600)

    def nbgrader(self, *args: str) -> str:
        done = self.run("-m", "nbgrader", *args)
        assert done.returncode == 0, f"{self.name}: nbgrader {' '.join(args)}\n{done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def probe(self, code: str, *args: str):
        done = self.run("-c", code, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])


def _ids(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def classroom():
    """A temporary folder (exchange, homes) and two fresh student accounts, removed afterwards."""
    why = _why_not()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="series7-exchange-"))
    base.chmod(0o755)  # students reach their homes and the exchange through it
    tag = os.getpid() % 100000
    students = [Student(f"s7x{tag}{who}", base) for who in "ab"]
    try:
        for s in students:
            s.create()
        yield base, students
    finally:
        for s in students:
            s.remove()
        shutil.rmtree(base, ignore_errors=True)


def _instructor(course: Path, exchange: Path, *args: str) -> str:
    env = dict(os.environ, COURSE_ROOT=str(course), COURSE_EXCHANGE=str(exchange), PYTHONWARNINGS="ignore",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env.pop("COURSE_DB_URL", None)
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"nbgrader {' '.join(args)}\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def _feedback_scores(student: Student) -> list[tuple[float, float]]:
    """(score, max) from the heading of every feedback file the student fetched."""
    found = sorted((student.home / LESSON / "feedback").glob("*/*.html"))
    return [tuple(float(v) for v in re.search(r"\(Score: ([\d.]+) / ([\d.]+)\)</h4>", p.read_text()).groups())
            for p in found]


def test_students_fetch_submit_and_get_their_own_feedback_through_the_exchange(classroom, tmp_path):
    base, (alice, bob) = classroom
    exchange = base / "exchange"
    course = tmp_path / "course"
    for folder in ("source", "release"):
        shutil.copytree(REPO / folder / LESSON, course / folder / LESSON)
    shutil.copy(REPO / "nbgrader_config.py", course)
    config = STUDENT_CONFIG.format(root=exchange)
    for s in (alice, bob):
        s.write(".jupyter/nbgrader_config.py", config.encode())
    readme = (REPO / "README.md").read_text()
    assert STUDENT_CONFIG.format(root="/srv/nbgrader/exchange") in readme, "README's student config changed"

    # JupyterLab's Assignment List (labextension + server extension) is on for a student...
    for args, pattern in ((("server", "extension", "list"), r"nbgrader\.server_extensions\.assignment_list\s+enabled"),
                          (("labextension", "list"), r"@jupyter/nbgrader v\S+\s+enabled\s+OK")):
        done = alice.run("-m", "jupyter", *args)
        assert re.search(pattern, re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)), done.stdout + done.stderr
    # ...and, with no exchange yet, shows nbgrader's warning (what the issue saw).
    listed = alice.probe(LIST_PROBE, str(alice.home))
    assert not listed["success"] and "exchange directory does not exist" in listed["value"]

    # The README's set-up, then the instructor's commands as documented (a fresh copy: release/ exists).
    exchange.mkdir()
    exchange.chmod(0o1777)
    _instructor(course, exchange, "generate_assignment", LESSON)
    _instructor(course, exchange, "release_assignment", LESSON)
    (notebook,) = sorted((REPO / "release" / LESSON).glob("*.ipynb"))
    released = exchange / COURSE / "outbound" / LESSON / notebook.name
    assert released.read_bytes() == notebook.read_bytes(), "release_assignment must ship the committed release/"
    assert stat.S_IMODE((exchange / COURSE / "inbound").stat().st_mode) == 0o2733

    listed = alice.probe(LIST_PROBE, str(alice.home))
    assert listed["success"], listed
    assert [(a["assignment_id"], a["status"]) for a in listed["value"]] == [(LESSON, "released")]

    # Each student fetches and submits as themselves: alice the correct answers, bob the stub as fetched.
    for s in (alice, bob):
        s.nbgrader("fetch_assignment", LESSON)
        assert (s.home / LESSON / notebook.name).read_bytes() == notebook.read_bytes()
    correct = (REPO / "tests" / "submissions" / LESSON / "correct.ipynb").read_bytes()
    alice.write(f"{LESSON}/{notebook.name}", correct)
    for s in (alice, bob):
        s.nbgrader("submit", LESSON)

    inbound = exchange / COURSE / "inbound"
    owners = sorted((p.name.split("+")[0], p.stat().st_uid) for p in inbound.iterdir())
    assert owners == sorted((s.name, _ids(s.name)[0]) for s in (alice, bob)), "one submission each, by its author"
    # alice cannot find bob's submission: inbound lists for nobody but the instructor.
    seen = alice.probe(LISTDIR_PROBE, str(inbound), str(exchange / COURSE / "outbound"))
    assert seen[str(inbound)] == "denied" and seen[str(exchange / COURSE / "outbound")] == [LESSON]

    # The instructor collects, grades (sandboxed, config as shipped), and hands feedback back.
    _instructor(course, exchange, "collect", LESSON)
    for s, answers in ((alice, correct), (bob, notebook.read_bytes())):
        assert (course / "submitted" / s.name / LESSON / notebook.name).read_bytes() == answers
    _instructor(course, exchange, "autograde", LESSON)
    _instructor(course, exchange, "generate_feedback", LESSON)
    _instructor(course, exchange, "release_feedback", LESSON)
    seen = bob.probe(LISTDIR_PROBE, str(exchange / COURSE / "feedback"))
    assert seen[str(exchange / COURSE / "feedback")] == "denied", "feedback is found only by its secret name"

    from grader.exercises import lesson
    from nbgrader.api import Gradebook

    full = float(sum(e.points for e in lesson(LESSON).EXERCISES.values()))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE) as gb:
        assert gb.find_submission(LESSON, alice.name).score == full
        assert gb.find_submission(LESSON, bob.name).score == 0
    for s, score in ((alice, full), (bob, 0.0)):
        s.nbgrader("fetch_feedback", LESSON)
        assert _feedback_scores(s) == [(score, full)], f"{s.name} sees exactly their own feedback"
    (html,) = (alice.home / LESSON / "feedback").glob("*/*.html")
    assert "BEGIN HIDDEN TESTS" not in html.read_text()

    listed = bob.probe(LIST_PROBE, str(bob.home))
    assert listed["success"], listed
    (submitted,) = [a for a in listed["value"] if a["status"] == "submitted"]
    assert [sub["has_local_feedback"] for sub in submitted["submissions"]] == [True]
