"""A kernel manager that starts a grading kernel inside grader.sandbox.

The kernel talks to nbgrader over Unix sockets in a folder made for this kernel alone (it
has no network), works in a private scratch copy of the notebook's folder, and records
what the student's functions return into the job's record folder (grader.record).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from .sandbox import NOBODY, available


@dataclass
class GradingJob:
    """One notebook's grading run: its private folders, the grader's seeds, the device."""

    folder: Path
    seeds: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"

    @classmethod
    def create(cls, seeds: dict[str, int], device: str) -> "GradingJob":
        folder = Path(tempfile.mkdtemp(prefix="cj-"))      # short: Unix socket paths are limited
        job = cls(folder, seeds, device)
        for sub in (job.record, job.ipc):
            sub.mkdir()
            if available():
                os.chown(sub, NOBODY, NOBODY)
            os.chmod(sub, 0o700)
        job.root.mkdir()
        return job

    @property
    def record(self) -> Path:
        return self.folder / "record"

    @property
    def ipc(self) -> Path:
        return self.folder / "ipc"

    @property
    def root(self) -> Path:
        return self.folder / "root"

    def kernel_env(self) -> dict[str, str]:
        from .exercises import DEVICE_ENV, RECORD_DIR_ENV, SEEDS_ENV

        return {RECORD_DIR_ENV: str(self.record), SEEDS_ENV: json.dumps(self.seeds), DEVICE_ENV: self.device,
                "COURSE_TRUSTED_GRADING": "1", "COURSE_AUTOGRADING": "1"}

    def remove(self) -> None:
        # Never follows a link the kernel left (rmtree works on file descriptors).
        shutil.rmtree(self.folder, ignore_errors=True)


class SandboxKernelManager(AsyncKernelManager):
    #: Set by SandboxedExecute before the kernel starts; a standalone manager makes its own.
    course_job: GradingJob | None = None

    async def _async_pre_start_kernel(self, **kw):
        from .sandbox import memory_limit, wrap
        from .weights.resolve import prepare_all

        if self.course_job is None:
            self.course_job = GradingJob.create({}, "cpu")
        job = self.course_job
        self.transport = "ipc"
        self.ip = str(job.ipc / "k")
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        prepare_all()  # stand-ins cannot be built inside the read-only sandbox
        cwd = str(Path(kw.get("cwd") or os.getcwd()).resolve())
        env = dict(kw.get("env") or os.environ)
        env.update(job.kernel_env())
        kw["env"] = env
        cmd = wrap(kernel_cmd, cwd=cwd, root=str(job.root), writable=[str(job.record), str(job.ipc)],
                   copy_in={self.connection_file: "/run/course/kernel.json"}, env=job.kernel_env(),
                   mem=memory_limit())
        return cmd, kw
