"""Hostile submissions: each puts its attack in front of the stub answers of a lesson.

Every case must score 0 (its answers are the release stubs), leave the course untouched,
and let the correct submission graded in the same batch keep full marks.
"""

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
}
