"""grader.sandbox on its own: what the student's process can and cannot do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from grader import sandbox

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="needs root, unshare, setpriv")

PROBE = r'''
import json, os, subprocess, sys
out = {}
def attempt(key, fn):
    try:
        fn(); out[key] = "allowed"
    except Exception as e:
        out[key] = type(e).__name__
secret_dir, own, course_file = sys.argv[1:4]
out["secret_listing"] = os.listdir(secret_dir)
attempt("write_own", lambda: open(os.path.join(own, "f"), "w").write("x"))
attempt("write_course", lambda: open(course_file, "w").write("pwned"))
attempt("write_tmp", lambda: open("/tmp/sandbox-escape", "w").write("x"))
attempt("remount_rw", lambda: subprocess.run(["mount", "-o", "remount,rw", "/"], check=True, capture_output=True))
attempt("unmount_hide", lambda: subprocess.run(["umount", secret_dir], check=True, capture_output=True))
attempt("signal_parent", lambda: os.kill(os.getppid() if os.getppid() > 1 else 999999, 0))
out["pid"] = os.getpid()
attempt("big_alloc", lambda: bytearray(12 * 1024**3))
out["home"] = os.environ.get("HOME")
print(json.dumps(out))
'''


def test_sandbox_confines_the_process(tmp_path):
    secret = tmp_path / "course" / "source"
    secret.mkdir(parents=True)
    (secret / "solution.ipynb").write_text("the answers")
    own = tmp_path / "own"
    own.mkdir()
    course_file = tmp_path / "course" / "nbgrader_config.py"
    course_file.write_text("c = 1")
    cmd = sandbox.wrap([sys.executable, "-c", PROBE, str(secret), str(own), str(course_file)],
                       rw=[str(own)], hide=[str(secret)], mem=4 << 30)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["secret_listing"] == []
    assert out["write_own"] == "allowed"
    assert out["write_course"] != "allowed" and course_file.read_text() == "c = 1"
    assert out["write_tmp"] != "allowed" and not os.path.exists("/tmp/sandbox-escape")
    assert out["remount_rw"] != "allowed" and out["unmount_hide"] != "allowed"
    assert out["pid"] < 10  # its own PID namespace: the grader's processes are invisible
    assert out["big_alloc"] == "MemoryError"
    assert out["home"] == "/dev/shm/home"
    assert (own / "f").read_text() == "x"


def test_off_switch_runs_the_command_unchanged(monkeypatch):
    monkeypatch.setenv("COURSE_SANDBOX", "off")
    assert sandbox.wrap(["echo", "hi"], rw=[], hide=[]) == ["echo", "hi"]
