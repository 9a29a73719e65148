"""A kernel manager that starts the student's kernel inside grader.sandbox."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager


class SandboxKernelManager(AsyncKernelManager):
    async def _async_pre_start_kernel(self, **kw):
        kernel_cmd, kw = await super()._async_pre_start_kernel(**kw)
        # TrustedGrade decides the graded cells after this kernel is gone: the kernel's own
        # hidden-test cells would only repeat that work (grader.exercises.grade skips them).
        kw["env"] = dict(kw.get("env") or os.environ, COURSE_TRUSTED_GRADING="1")
        from .nbgrader_plugins import _memory_limit
        from .sandbox import hidden_paths, wrap
        from .weights.resolve import prepare_all

        prepare_all()  # stand-ins cannot be built inside the read-only sandbox

        cwd = Path(kw.get("cwd") or os.getcwd()).resolve()
        # nbgrader runs the kernel in autograded/<student>/<assignment>/: the course root is 3 up.
        root = cwd.parents[2] if len(cwd.parents) > 2 else cwd
        repo = Path(__file__).resolve().parent.parent
        hide = [p for p in hidden_paths(root, repo) if not str(cwd).startswith(p + os.sep) and p != str(cwd)]
        # autograded/ holds every student's results: hide its other entries, keep this one.
        autograded = root / "autograded"
        if autograded.is_dir():
            hide = [p for p in hide if p != str(autograded)]
            hide += [str(d) for d in autograded.iterdir() if d.is_dir() and d != cwd.parents[0]]
        return wrap(kernel_cmd, rw=[str(cwd)], hide=hide, mem=_memory_limit(),
                    copy_in=[self.connection_file]), kw
