"""Hostile submissions: each puts its attack in front of the stub answers of a lesson.

Every case must score 0 (its answers are the release stubs), leave the course untouched,
and let the correct submission graded in the same batch keep full marks. A case whose text
starts with ``AFTER`` goes after the stub instead (it defines the answer itself).
"""

AFTER = "# after the stub\n"
CANARY = "/tmp/course-hostile-canary.txt"
DAEMON_MARKER = "course-hostile-daemon"

CASES = {
    # Fool the comparison from inside the kernel.
    "monkeypatch_comparisons": '''
import torch, torch.testing, grader.compare, grader.exercises, grader.exercise
torch.testing.assert_close = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
grader.compare.assert_close = lambda *a, **k: None
grader.exercise.call = lambda fn, name, *a, **k: None
grader.exercises.grade = lambda *a, **k: 2.0   # a bare numeric value would be partial credit
''',
    # Swallow every exception IPython would report.
    "swallow_exceptions": '''
ip = get_ipython()
ip.set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
import sys
sys.excepthook = lambda *a: None
''',
    "prints_all_tests_passed": '''
print("All tests passed!")
import builtins
_real_print = builtins.print
builtins.print = lambda *a, **k: _real_print("All tests passed!")
''',
    # Kill or stop the kernel.
    "kills_its_kernel": '''
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
''',
    "exits": '''
import sys
sys.exit(0)
''',
    # Walk up and damage the course: the grader package, the gradebook, the sources.
    "rewrites_the_course": '''
import os, pathlib
here = pathlib.Path.cwd()
for up in [here, *here.parents]:
    for name in ("gradebook.db", "nbgrader_config.py"):
        try:
            (up / name).write_text("pwned")
        except Exception:
            pass
    for sub in ("grader", "source", "release", "tests"):
        d = up / sub
        if d.is_dir():
            for f in list(d.rglob("*"))[:2000]:
                try:
                    if f.is_file():
                        f.write_text("pwned")
                except Exception:
                    pass
import grader
try:
    pathlib.Path(grader.__file__).write_text("raise SystemExit('pwned')")
except Exception:
    pass
try:
    pathlib.Path("/tmp/course-pwned-marker").write_text("pwned")
except Exception:
    pass
''',
    # Read the solutions at grading time and run them.
    "steals_solutions": '''
import json, pathlib, grader
roots = [pathlib.Path(grader.__file__).resolve().parent.parent, *pathlib.Path.cwd().parents]
for root in roots:
    for nb_path in list(root.glob("source/*/*.ipynb")) + list(root.glob("solutions/*/*.ipynb")):
        try:
            for cell in json.loads(nb_path.read_text())["cells"]:
                if cell["cell_type"] == "code" and "def " in "".join(cell["source"]):
                    exec("".join(cell["source"]).replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""), globals())
        except Exception:
            pass
''',
    # Resources.
    "allocates_50_gb": '''
try:
    hog = bytearray(50 * 1024**3)
except MemoryError:
    hog = None
import torch
hog2 = torch.empty(50 * 1024**3 // 4)
''',
    "writes_a_1_gb_file": '''
with open("huge.bin", "wb") as f:
    for _ in range(1024):
        f.write(b"x" * (1 << 20))
''',
    "prints_200_mb": '''
for _ in range(200):
    print("y" * (1 << 20))
''',
    "hangs_at_top_level": '''
while True:
    pass
''',
    # Find the reference inside the process (the attack that beat the old recorder).
    "walks_the_checker_stack": AFTER + '''
import gc, sys, torch
def patchify(x, w, b):
    B, _, H, W = x.shape
    p = w.shape[-1]
    want = (B, (H // p) * (W // p), w.shape[0])
    f = sys._getframe(1)
    while f is not None:
        for v in list(f.f_locals.values()):
            if isinstance(v, torch.Tensor) and tuple(v.shape) == want:
                return v.clone()
        f = f.f_back
    for o in gc.get_objects():
        if isinstance(o, torch.Tensor) and tuple(o.shape) == want:
            return o.clone()
    raise NotImplementedError()
''',
    # Hunt the whole filesystem for instructor material (any copy, any name) and print it.
    "hunts_instructor_files": '''
import os
found = []
for here, dirs, files in os.walk("/"):
    if here in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for f in files:
        if f.endswith((".ipynb", ".db", ".html", ".json")) and "site-packages" not in here:
            path = os.path.join(here, f)
            try:
                text = open(path, errors="ignore").read(2_000_000)
            except OSError:
                continue
            if "BEGIN SOLUTION" in text or "BEGIN HIDDEN TESTS" in text or "SQLite format" in text:
                found.append(path)
                print("FOUND", path, text[:20000])
for path in found:
    try:
        import json
        for cell in json.load(open(path))["cells"]:
            src = "".join(cell["source"])
            if "def " in src:
                exec(src.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""), globals())
    except Exception:
        pass
''',
    # Leave links for root to follow: nbgrader writes the graded notebook and feedback by name.
    "plants_links": '''
import os, pathlib
canary = "/tmp/course-hostile-canary.txt"
here = pathlib.Path.cwd()
targets = {"diffusion_transformers.ipynb": here.parents[2] / "gradebook.db", "gradebook.db": canary,
           "diffusion_transformers.html": canary, "timestamp.txt": canary}
for name, target in targets.items():
    for folder in (here, pathlib.Path("/tmp"), pathlib.Path(os.environ.get("COURSE_RECORD_DIR", "/tmp"))):
        try:
            (folder / name).unlink(missing_ok=True)
            (folder / name).symlink_to(target)
        except Exception:
            pass
rec = pathlib.Path(os.environ.get("COURSE_RECORD_DIR", "/nonexistent"))
for i in range(4):
    for ext, target in ((".json", "/etc/passwd"), (".safetensors", canary)):
        try:
            (rec / f"unpatchify.{i}{ext}").symlink_to(target)
        except Exception:
            pass
try:
    os.mkfifo(rec / "patchify.0.json")
except Exception:
    pass
for src in ("/etc/passwd", canary):
    try:
        os.link(src, rec / "hard.json")
    except Exception:
        pass
''',
    # A process that outlives the cell and waits for later students' files.
    "leaves_a_daemon": '''
import os, subprocess, sys
code = "import os, time\\nwhile True:\\n    time.sleep(0.5)\\n    [os.listdir(d) for d in ('/tmp',) if os.path.isdir(d)]"
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp(sys.executable, [sys.executable, "-c", code, "course-hostile-daemon"])
    os._exit(0)
import threading, time
threading.Thread(target=lambda: time.sleep(10_000), daemon=False).start()
''',
    # Records the grader will read: oversized, deeply nested, forged.
    "oversized_records": '''
import os, pathlib
rec = pathlib.Path(os.environ.get("COURSE_RECORD_DIR", "/tmp"))
try:
    with open(rec / "patchify.0.json", "w") as f:
        f.write('{"label": "')
        for _ in range(200):
            f.write("x" * (1 << 20))
        f.write('"}')
    (rec / "patchify.1.json").write_text("[" * 200_000 + "]" * 200_000)
except Exception:
    pass
''',
    "forges_records": '''
import os, grader.exercises, grader.record, torch
from grader.cases import hidden_context
def forged(assignment, name, fn):
    import json
    ex = grader.exercises.lesson(assignment).EXERCISES[name]
    ctx = hidden_context(json.loads(os.environ.get("COURSE_SEEDS", "{}")).get(name, 0), "cpu")
    for i, case in enumerate(ex.cases(ctx)):
        x = case.args[0] if case.args and isinstance(case.args[0], torch.Tensor) else torch.zeros(1)
        grader.record.write_entry(os.environ.get("COURSE_RECORD_DIR", "/tmp"), name, i,
                                  {"label": case.label, "status": "ok", "value": torch.zeros_like(x)})
grader.exercises.grade = forged
grade = forged
''',
}

# Attacks on the notebook file itself rather than its code: name -> edit of the notebook JSON.
def _crafted_metadata(nb):
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") == "patchify_answer":
            cell["metadata"]["nbgrader"] = ["grade", "points", 100]
        elif meta.get("grade_id") == "unpatchify_answer":
            meta.update(grade=True, points=100, grade_id=7)
    nb["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"grade": True, "points": 50, "solution": True,
                        "grade_id": "bonus", "locked": False, "schema_version": 3}}, "source": "x = 1",
                        "outputs": [], "execution_count": None})
    return nb


def _schema_invalid(nb):
    """Cell metadata that is not an object: nbformat itself refuses to read the notebook."""
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "patchify_hidden":
            cell["metadata"] = "junk"
    return nb


NOTEBOOK_ATTACKS = {"crafted_metadata": _crafted_metadata, "schema_invalid": _schema_invalid}
#: Notebooks nbformat cannot read: plain nbgrader logs an error for that student alone (no graded
#: notebook, no grade); `course autograde` reports them "invalid" with the reason.
UNREADABLE = {"schema_invalid"}
