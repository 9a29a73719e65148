"""Run a student's kernel where it sees only the submission and can hurt nothing but its own result.

``wrap(cmd, ...)`` returns the command line that starts ``cmd`` inside the sandbox:

* **A whitelisted root.** The process pivots into a fresh tmpfs that holds, read-only, only
  what Python needs: ``/usr``, ``/etc``, the interpreter and its environment, the ``grader``
  package's own folder (not the checkout around it) and the weight caches. Nothing else exists
  there: no course folder, ``source/``, ``solutions/``, gradebook, batch work folder, output
  folder, other students, job files, Jupyter runtime files or raw disks, wherever they lie
  and whatever copies of them a tool made. ``/dev`` holds only harmless nodes (and the GPU's).
* **Its own scratch.** The working folder is a private tmpfs at the notebook's path, filled
  with copies of the submission's regular files (links are not followed); everything the
  student's code writes there vanishes with the namespace. The only folders shared with the
  outside are ``writable`` ones the caller creates for this one run (the record folder, the
  kernel's socket folder), which the trusted side reads without following links.
* **Its own namespaces**: mount, PID (the kernel is PID 1: when it ends, or when the
  launcher is killed, every process it started dies with it, daemons included), network (no
  network at all; the kernel talks to nbgrader over Unix sockets), IPC and UTS.
* **No privileges**: uid/gid ``nobody``, no capabilities, ``no_new_privs``; resource limits on
  address space (CPU runs), file size, processes, core dumps.

It needs root (or CAP_SYS_ADMIN) and util-linux's ``unshare`` and ``setpriv``, as in CI
containers and grading servers run as root. Where they are missing the command runs with
the resource limits only and says so (``COURSE_SANDBOX=require`` makes that an error,
``COURSE_SANDBOX=off`` skips the sandbox): verdicts stay trustworthy either way (references
are only ever computed in the trusted process), but the student's code can then read and
write what the grading user can.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import resource
import shutil
import stat
import sys
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MNT_DETACH = 2
NOBODY = 65534
DEFAULT_MEM = 8 << 30
DEFAULT_FSIZE = 256 << 20
DEFAULT_NPROC = 4096
SCRATCH_BYTES = 512 << 20
#: What a submission's folder may bring into the scratch (files, bytes): more is left behind.
MAX_COPY_FILES, MAX_COPY_BYTES = 2000, 256 << 20
INSIDE_RUN = "/run/course"


def mode() -> str:
    return os.environ.get("COURSE_SANDBOX", "auto")


def available() -> bool:
    return (sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("unshare") is not None
            and shutil.which("setpriv") is not None)


def status() -> str:
    """One line for ``course doctor`` and for every result graded without the sandbox."""
    if mode() == "off":
        return "off (COURSE_SANDBOX=off): the student's code runs with this user's rights"
    if available():
        return "on: whitelisted root, own PID/network/mount namespaces, uid nobody, no capabilities"
    return ("unavailable (needs root with util-linux unshare and setpriv): kernels run with resource "
            "limits only and can read and write what this user can; verdicts are still decided outside them")


def readonly_paths() -> list[str]:
    """Everything a grading kernel may read: the OS, Python, the grader package, weight caches."""
    import grader

    from .weights.resolve import cache_root

    paths = ["/usr", "/etc", "/sys", "/opt"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.isdir(top) and not os.path.islink(top):
            paths.append(top)
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths += [os.path.realpath(p) for p in prefixes]
    paths += [p for p in prefixes]
    # Site folders outside the prefixes (user site, --target installs): packages only, never a
    # checkout's root (a PYTHONPATH pointing at a course would expose its source/).
    for entry in sys.path:
        if entry and os.path.isdir(entry) and os.path.basename(entry.rstrip("/")) in ("site-packages", "dist-packages"):
            paths.append(entry)
    paths.append(os.path.dirname(os.path.realpath(grader.__file__)))
    caches = [str(cache_root()), os.environ.get("COURSE_WEIGHTS_DIR", "")]
    try:
        from huggingface_hub import constants

        caches.append(str(constants.HF_HUB_CACHE))
    except Exception:  # noqa: BLE001
        pass
    paths += [c for c in caches if c and os.path.isdir(c)]
    out: list[str] = []
    for p in paths:
        if os.path.exists(p) and p not in out:
            out.append(p)
    return out


def wrap(cmd: list[str], *, cwd: str, root: str, writable: list[str] = (), copy_in: dict[str, str] | None = None,
         env: dict[str, str] | None = None, mem: int | None = DEFAULT_MEM, fsize: int = DEFAULT_FSIZE) -> list[str]:
    """The command line that runs ``cmd`` inside the sandbox (or, where it cannot be had, as it is).

    ``cwd``: the notebook's folder; the process works in a private copy of it. ``root``: an
    empty folder the caller owns and removes afterwards (the mount point of the new root).
    ``writable``: folders the caller made for this run alone, shared at the same path.
    ``copy_in``: host file -> path inside (read before the root is built, e.g. the kernel's
    connection file); occurrences of the host path in ``cmd`` are replaced.
    """
    if mode() == "off":
        return cmd
    launcher = [sys.executable, "-m", "grader.sandbox", "--fsize", str(fsize), "--cwd", cwd, "--root", root]
    for key, value in (env or {}).items():
        launcher += ["--setenv", f"{key}={value}"]
    if mem:
        launcher += ["--mem", str(mem)]
    for path in writable:
        launcher += ["--writable", path]
    for host, inside in (copy_in or {}).items():
        launcher += ["--copy-in", f"{host}={inside}"]
    if available():
        for path in readonly_paths():
            launcher += ["--ro", path]
        return ["unshare", "--mount", "--pid", "--net", "--ipc", "--uts", "--kill-child", "--propagation", "private",
                "--", *launcher, "--inside", "--", *cmd]
    if mode() == "require":
        raise RuntimeError("COURSE_SANDBOX=require, but the sandbox needs root with unshare and setpriv")
    return [*launcher, "--", *cmd]


# ---------------------------------------------------------------- inside the namespaces
_libc = None


def _call(name: str, *args) -> None:
    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    enc = [a.encode() if isinstance(a, str) else a for a in args]
    enc = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in enc]
    if getattr(_libc, name)(*enc) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None) -> None:
    _call("mount", src, target, fstype, flags, data)


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _bind(root: str, src: str, *, readonly: bool, dev: bool = False) -> None:
    dst = _under(root, src)
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            open(dst, "w").close()
    _mount(src, dst, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if readonly else 0) | (0 if dev else MS_NODEV)
    _mount(None, dst, None, flags)


def _copy_tree(src: str, dst: str) -> None:
    """Regular files and folders of ``src`` into ``dst``, never through a link, within bounds."""
    files, size = 0, 0
    for here, dirs, names in os.walk(src, followlinks=False):
        rel = os.path.relpath(here, src)
        target = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(target, exist_ok=True)
        os.chown(target, NOBODY, NOBODY)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]
        for name in names:
            path = os.path.join(here, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or files >= MAX_COPY_FILES or size + st.st_size > MAX_COPY_BYTES:
                    continue
                if name.endswith(".ipynb"):
                    # nbgrader writes the notebook it is about to run here with the hidden tests
                    # restored; the kernel needs none of it (it is sent cell by cell).
                    continue
                files, size = files + 1, size + st.st_size
                with os.fdopen(os.dup(fd), "rb") as f, open(os.path.join(target, name), "wb") as out:
                    shutil.copyfileobj(f, out)
                os.chown(os.path.join(target, name), NOBODY, NOBODY)
            finally:
                os.close(fd)


def _build_root(args) -> dict[str, str]:
    root = args.root
    os.makedirs(root, exist_ok=True)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0755")
    # /tmp first: the binds below may lie under it (a checkout or venv in /tmp) and must stay visible.
    os.makedirs(_under(root, "/tmp"), exist_ok=True)
    _mount("tmpfs", _under(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "size=512m,mode=1777")
    for path in args.ro:
        _bind(root, path, readonly=True)
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top) and not os.path.lexists(_under(root, top)):
            os.symlink(os.readlink(top), _under(root, top))
    # /proc of this PID namespace; a minimal /dev.
    os.makedirs(_under(root, "/proc"), exist_ok=True)
    _mount("proc", _under(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = _under(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "size=64k,mode=0755")
    for node in ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
                 *sorted(glob.glob("/dev/nvidia*"))]:
        if os.path.exists(node) and not os.path.isdir(node):
            _bind(root, node, readonly=False, dev=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    os.makedirs(_under(root, "/dev/shm"), exist_ok=True)
    _mount("tmpfs", _under(root, "/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, "size=256m,mode=1777")
    # The caller's per-run folders, shared at the same path.
    for path in args.writable:
        _bind(root, path, readonly=False)
    # Files read now, before the host is out of sight.
    run = _under(root, INSIDE_RUN)
    os.makedirs(run, exist_ok=True)
    moved = {}
    for item in args.copy_in:
        host, inside = item.split("=", 1)
        dest = _under(root, inside)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(host, "rb") as f, open(dest, "wb") as out:
            out.write(f.read())
        os.chown(dest, NOBODY, NOBODY)
        os.chmod(dest, 0o600)
        moved[host] = inside
    # The working folder: a private scratch at the notebook's path, with copies of its files.
    cwd = _under(root, args.cwd)
    os.makedirs(cwd, exist_ok=True)
    _mount("tmpfs", cwd, "tmpfs", MS_NOSUID | MS_NODEV, f"size={SCRATCH_BYTES},mode=0700,uid={NOBODY},gid={NOBODY}")
    _copy_tree(args.cwd, cwd)
    # Enter it; the old root is detached and gone.
    old = os.path.join(root, ".old-root")
    os.makedirs(old, exist_ok=True)
    _call("syscall", _pivot_root_syscall(), root, old)  # pivot_root(2)
    os.chdir("/")
    _call("umount2", "/.old-root", MNT_DETACH)
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(args.cwd)
    return moved


def _pivot_root_syscall() -> int:
    import platform

    return {"x86_64": 155, "aarch64": 41}.get(platform.machine(), 155)


def _init(cmd: list[str], env: dict[str, str]) -> int:
    """Stay as PID 1 of the namespace (root, credentials never changed) and run ``cmd`` as a child.

    unshare's --kill-child death signal would be cleared by the uid change if the kernel were
    PID 1 itself; this process keeps it, so killing the launcher (a time-out) kills PID 1, and
    the kernel ending ends PID 1: either way the kernel tears down every process in the
    namespace, double-forked daemons included. Orphans are reaped here.
    """
    import signal

    # Jupyter interrupts a cell (time-out) with SIGINT to the whole process group: that is for
    # the kernel; PID 1 must live on. A handler (not SIG_IGN) is reset to default by exec, so
    # the kernel still gets its KeyboardInterrupt.
    signal.signal(signal.SIGINT, lambda *_: None)
    child = os.fork()
    if child == 0:
        try:
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _limits(mem: int | None, fsize: int, nproc: int | None) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if mem:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.sandbox")
    parser.add_argument("--ro", action="append", default=[])
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("--copy-in", action="append", default=[])
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--mem", type=int)
    parser.add_argument("--fsize", type=int, default=DEFAULT_FSIZE)
    parser.add_argument("--setenv", action="append", default=[])
    parser.add_argument("--inside", action="store_true")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in args.setenv)
    if args.inside:
        moved = _build_root(args)
        cmd = [moved.get(c, c) for c in cmd]
        home = "/tmp/home"
        os.makedirs(home, exist_ok=True)
        os.chown(home, NOBODY, NOBODY)
        env.update(HOME=home, TMPDIR="/tmp", MPLCONFIGDIR=home, COURSE_SANDBOXED="1", USER="nobody")
        # ipykernel exits when its parent is not JPY_PARENT_PID; here its parent is PID 1 below,
        # which already ends the kernel when nbgrader's launcher goes. "1" is ipykernel's own
        # word for that (no parent poller); unset, it would think it runs as `ipython kernel`
        # and print its Ctrl-C note and connection file into nbgrader's log.
        env["JPY_PARENT_PID"] = "1"
        _limits(args.mem, args.fsize, DEFAULT_NPROC)
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
               "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--", *cmd]
        return _init(cmd, env)
    else:
        print("grader.sandbox: " + status(), file=sys.stderr)
        os.chdir(args.cwd)
        _limits(args.mem, args.fsize, None)
    os.execvpe(cmd[0], cmd, env)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def memory_limit() -> int | None:
    """Address-space limit for a kernel: CPU runs only (CUDA reserves huge virtual ranges)."""
    if os.environ.get("COURSE_DEVICE", "").startswith("cuda"):
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return None
    except Exception:  # noqa: BLE001
        pass
    return int(os.environ.get("COURSE_MEMORY_LIMIT", str(DEFAULT_MEM)))
