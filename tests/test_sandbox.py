"""grader.sandbox on its own: what a grading kernel's process can and cannot do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from grader import sandbox

pytestmark = pytest.mark.skipif(not sandbox.available(), reason="needs root, unshare, setpriv")

PROBE = r'''
import glob, json, os, socket, subprocess, sys
out = {}
def attempt(key, fn):
    try:
        fn(); out[key] = "allowed"
    except Exception as e:
        out[key] = type(e).__name__
course, record, canary = sys.argv[1:4]
out["uid"] = os.getuid()
out["pid"] = os.getpid()
out["cwd_listing"] = sorted(os.listdir("."))
out["course_listing"] = sorted(os.listdir(course))  # only the path down to its own folder
found = []
for here, dirs, files in os.walk("/"):
    if here in ("/proc", "/sys", "/dev"):
        dirs[:] = []
    for f in files:
        if f.endswith((".ipynb", ".db")):
            try:
                if sys.argv[5].encode() in open(os.path.join(here, f), "rb").read():
                    found.append(os.path.join(here, f))
            except OSError:
                pass
out["secrets_anywhere"] = found[:5]
out["raw_disks"] = sorted(glob.glob("/dev/[vsh]d*") + glob.glob("/dev/nvme*") + glob.glob("/dev/loop*"))
attempt("write_relative", lambda: open("plot.png", "w").write("x"))
attempt("write_record", lambda: open(os.path.join(record, "r.json"), "w").write("x"))
attempt("write_canary", lambda: open(canary, "w").write("pwned"))
attempt("write_etc", lambda: open("/etc/hostname", "w").write("x"))
attempt("write_package", lambda: open(os.path.join(os.path.dirname(sys.argv[4]), "pwn.py"), "w").write("x"))
attempt("remount_rw", lambda: subprocess.run(["mount", "-o", "remount,rw", "/"], check=True, capture_output=True))
attempt("network", lambda: socket.create_connection(("127.0.0.1", 22), timeout=2))
attempt("network_out", lambda: socket.create_connection(("1.1.1.1", 80), timeout=2))
attempt("hardlink_python", lambda: os.link(os.path.realpath(sys.executable), os.path.join(record, "py")))
attempt("big_alloc", lambda: bytearray(12 * 1024**3))
out["home"] = os.environ.get("HOME")
print(json.dumps(out))
'''


SECRET = "course-secret-" + "7f3a"  # written in two halves: this file's own text must not match


def _wrap(tmp_path, code, *args, mem=4 << 30):
    import grader

    course = tmp_path / "course"
    nbdir = course / "autograded" / "student" / "lesson"
    nbdir.mkdir(parents=True)
    (course / "source").mkdir()
    (course / "source" / "secret.ipynb").write_text(SECRET)
    (course / "gradebook.db").write_text(SECRET)
    (nbdir / "data.txt").write_text("the student's own file")
    (nbdir / "lesson.ipynb").write_text("### BEGIN HIDDEN TESTS")   # nbgrader's copy, tests restored
    os.symlink(str(course / "gradebook.db"), nbdir / "link-to-gradebook")
    record = tmp_path / "record"
    record.mkdir()
    os.chown(record, sandbox.NOBODY, sandbox.NOBODY)
    canary = tmp_path / "canary.txt"
    canary.write_text("canary")
    root = tmp_path / "root"
    root.mkdir()
    cmd = sandbox.wrap([sys.executable, "-c", code, str(course), str(record), str(canary), grader.__file__, *args],
                       cwd=str(nbdir), root=str(root), writable=[str(record)], mem=mem)
    return cmd, course, nbdir, record, canary


def test_sandbox_sees_only_the_submission(tmp_path):
    cmd, course, nbdir, record, canary = _wrap(tmp_path, PROBE, SECRET)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["uid"] == sandbox.NOBODY and out["pid"] == 2   # PID 1 is the launcher (root, never exec's)
    assert out["cwd_listing"] == ["data.txt"]   # a copy; the symlink and the notebook stayed behind
    assert out["course_listing"] == ["autograded"] and out["secrets_anywhere"] == []
    assert out["raw_disks"] == []
    assert out["write_relative"] == "allowed" and not (nbdir / "plot.png").exists()  # private scratch
    assert out["write_record"] == "allowed" and (record / "r.json").read_text() == "x"
    for key in ("write_canary", "write_etc", "write_package", "remount_rw", "network", "network_out",
                "hardlink_python"):
        assert out[key] != "allowed", key
    assert canary.read_text() == "canary"
    assert out["big_alloc"] == "MemoryError"
    assert out["home"] == "/tmp/home"
    assert sorted(os.listdir(tmp_path / "root")) == []           # nothing left in the mount point


DAEMON = r'''
import os, sys, time
marker = sys.argv[5]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
    os._exit(0)
print("started", flush=True)
time.sleep(600)
'''


def _alive(marker: str) -> bool:
    ps = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return marker in ps


def test_killing_the_launcher_ends_every_process_it_started(tmp_path):
    marker = f"course-daemon-{os.getpid()}-{time.time_ns()}"
    cmd, *_ = _wrap(tmp_path, DAEMON, marker)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.time() + 10
    while not _alive(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _alive(marker)
    proc.send_signal(signal.SIGKILL)   # as a time-out would
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while _alive(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(marker), "a double-forked daemon outlived its sandbox"


def test_a_daemon_dies_when_the_kernel_exits_normally(tmp_path):
    marker = f"course-daemon-{os.getpid()}-{time.time_ns()}"
    code = DAEMON.replace("time.sleep(600)\n'''", "") .replace('print("started", flush=True)\ntime.sleep(600)', 'time.sleep(1)\nprint("done")')
    cmd, *_ = _wrap(tmp_path, code, marker)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert "done" in done.stdout, done.stderr
    time.sleep(0.5)
    assert not _alive(marker)


def test_off_switch_runs_the_command_unchanged(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_SANDBOX", "off")
    assert sandbox.wrap(["echo", "hi"], cwd=str(tmp_path), root=str(tmp_path)) == ["echo", "hi"]


def test_status_says_what_runs():
    assert sandbox.status().startswith("on")
