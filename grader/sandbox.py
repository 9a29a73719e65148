"""Run a submission's code where it can hurt nothing but its own result.

``python -m grader.sandbox [options] -- CMD...`` starts CMD
(the student's kernel, or the recording process of grader.replay) with:

* its own mount namespace in which every filesystem is read-only, except the one working
  folder named with ``--rw`` and a private, size-limited scratch tmpfs at /dev/shm
  (HOME, TMPDIR and MPLCONFIGDIR point there);
* the course's secrets hidden behind empty mounts (``--hide``: source/, solutions/,
  submitted/, feedback/, other students' folders, gradebook.db, Jupyter's runtime folder
  with every kernel's connection key);
* its own PID namespace (it cannot see or signal the grader or other kernels);
* no capabilities at all (uid 0 without CAP_SYS_ADMIN cannot undo the mounts; without
  CAP_DAC_OVERRIDE the read-only mounts hold), no_new_privs;
* resource limits: address space (``--mem``, CPU-only runs), largest file (``--fsize``),
  no core dumps.

It needs root (or CAP_SYS_ADMIN) and util-linux's ``unshare`` and ``setpriv``, as in CI
containers run as root. Where they are missing the command runs with the resource limits
only and the launcher says so on stderr; ``COURSE_SANDBOX=require`` makes that an error,
``COURSE_SANDBOX=off`` skips the sandbox. Verdicts stay trustworthy either way
(grader.replay judges outside the student's process); what the sandbox adds is that the
student's code cannot read solutions or damage the course, the gradebook or other students.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shutil
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SENSITIVE = ("source", "solutions", "submitted", "feedback", "autograded", "gradebook.db", "reports")
DEFAULT_MEM = 8 << 30
DEFAULT_FSIZE = 256 << 20


def mode() -> str:
    return os.environ.get("COURSE_SANDBOX", "auto")


def available() -> bool:
    return (os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("setpriv") is not None
            and sys.platform.startswith("linux"))


def hidden_paths(*roots: Path) -> list[str]:
    """The secrets of each course root (and of the package's own checkout)."""
    out: list[str] = []
    for root in roots:
        for name in SENSITIVE:
            p = root / name
            if p.exists():
                out.append(str(p))
    runtime = Path.home() / ".local" / "share" / "jupyter" / "runtime"
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        runtime = Path(jupyter_runtime_dir())
    except Exception:  # noqa: BLE001
        pass
    if runtime.exists():
        out.append(str(runtime))
    return out


def wrap(cmd: list[str], *, rw: list[str], hide: list[str], mem: int | None = None,
         fsize: int = DEFAULT_FSIZE, copy_in: list[str] = ()) -> list[str]:
    """The command line that runs ``cmd`` inside the sandbox (or, if off, as it is)."""
    if mode() == "off":
        return cmd
    launcher = [sys.executable, "-m", "grader.sandbox", "--fsize", str(fsize)]
    for key, value in _pinned_env().items():
        launcher += ["--setenv", f"{key}={value}"]
    if mem:
        launcher += ["--mem", str(mem)]
    for path in rw:
        launcher += ["--rw", path]
    for path in hide:
        launcher += ["--hide", path]
    for path in copy_in:
        launcher += ["--copy-in", path]
    if available():
        return ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private", "--",
                *launcher, "--inside", "--", *cmd]
    if mode() == "require":
        raise RuntimeError("COURSE_SANDBOX=require, but the sandbox needs root with unshare and setpriv")
    return [*launcher, "--", *cmd]


def _pinned_env() -> dict[str, str]:
    """Caches located from HOME must stay where the grader found them (HOME changes inside)."""
    from .weights.resolve import cache_root

    env = {"COURSE_CACHE": str(cache_root())}
    try:
        from huggingface_hub import constants

        env["HF_HUB_CACHE"] = str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        pass
    return env


# ---------------------------------------------------------------- inside the namespaces
_libc = None


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {target}: {os.strerror(err)}")


def _mountpoints() -> list[tuple[str, str]]:
    """(mount point, options) of every mount in this namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        out.append((point, fields[5]))
    return out


def _flags_of(options: str) -> int:
    flags = 0
    for opt, bit in (("nosuid", MS_NOSUID), ("nodev", MS_NODEV), ("noexec", MS_NOEXEC)):
        if opt in options.split(","):
            flags |= bit
    return flags


def _lock_down(rw: list[str], hide: list[str], copy_in: list[str]) -> dict[str, str]:
    # 1. Every mount read-only (bind-remount keeps each mount's own locked flags).
    for point, options in _mountpoints():
        if point.startswith(("/proc", "/sys", "/dev")):
            continue
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _flags_of(options))
        except OSError:
            pass  # a mount we cannot remount (already ro, or special): leave it
    # 2. Secrets behind empty read-only tmpfs / /dev/null.
    for path in hide:
        if os.path.isdir(path):
            _mount("none", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0555")
        elif os.path.exists(path):
            _mount("/dev/null", path, None, MS_BIND)
    # 3. The one writable folder, re-exposed over any hide above it.
    for path in rw:
        _mount(path, path, None, MS_BIND | MS_REC)
        _mount(None, path, None, MS_REMOUNT | MS_BIND)
    # 4. Private scratch space.
    _mount("none", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=512m,mode=1777")
    moved = {}
    for path in copy_in:  # e.g. the kernel's own connection file, whose folder is hidden
        if os.path.isfile(path):
            dest = f"/dev/shm/{os.path.basename(path)}"
            moved[path] = dest
    return moved


def _limits(mem: int | None, fsize: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if mem:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.sandbox")
    parser.add_argument("--rw", action="append", default=[])
    parser.add_argument("--hide", action="append", default=[])
    parser.add_argument("--copy-in", action="append", default=[])
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
        # Read what must survive the hiding before hiding it.
        blobs = {p: Path(p).read_bytes() for p in args.copy_in if os.path.isfile(p)}
        moved = _lock_down(args.rw, args.hide, args.copy_in)
        for src, dest in moved.items():
            Path(dest).write_bytes(blobs[src])
            os.chmod(dest, 0o600)
            cmd = [dest if c == src else c for c in cmd]
        home = "/dev/shm/home"
        os.makedirs(home, exist_ok=True)
        env.update(HOME=home, TMPDIR="/dev/shm", MPLCONFIGDIR=home, COURSE_SANDBOXED="1")
        _limits(args.mem, args.fsize)
        cmd = ["setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--",
               *cmd]
    else:
        print("grader.sandbox: no root/unshare/setpriv here: running with resource limits only "
              "(the student's code can read and write what this user can)", file=sys.stderr)
        _limits(args.mem, args.fsize)
    os.execvpe(cmd[0], cmd, env)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
