"""nbgrader's collect, without following what a student planted in the exchange.

A student owns their submission folder in the exchange's inbound/ and can change it after
``submit``. nbgrader 0.9.6's ``ExchangeCollect.do_copy`` copies it as the instructor (often
root) with ``shutil.copytree``, which follows symbolic links: a ``answers.ipynb -> /etc/shadow``
would be read as root into submitted/ and, through an unreadable-notebook feedback page, quoted
back to the student; a fifo would block the copy; a link to a folder would copy that folder.
This collect copies regular files and folders only, each under the same size limits as
nbgrader's, and refuses a submission folder that is itself a link.
"""

from __future__ import annotations

import os
import shutil
import stat

from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.utils import ignore_patterns


class SafeExchangeCollect(ExchangeCollect):
    def do_copy(self, src, dest, log=None):
        st = os.lstat(src)
        if not stat.S_ISDIR(st.st_mode):
            self.log.error("Not collecting %s: it is not a folder (a link or a special file)", src)
            raise RuntimeError(f"{src} is not a plain folder; not collected")
        dir_size = self.get_size(src)
        if dir_size > 1000 * self.coursedir.max_dir_size:
            self.log.error("Directory size is too big")
            raise RuntimeError(f"Directory size is too big. Size is {dir_size}, maximum size is "
                               f"{1000 * self.coursedir.max_dir_size}")
        nbgrader_ignore = ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                          max_file_size=self.coursedir.max_file_size, log=self.log)

        def ignore(directory, names):
            ignored = set(nbgrader_ignore(directory, names))
            for name in names:
                mode = os.lstat(os.path.join(directory, name)).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    self.log.warning("Not collecting %s: not a regular file (a link, fifo or device)",
                                     os.path.join(directory, name))
                    ignored.add(name)
            return ignored

        shutil.copytree(src, dest, symlinks=True, ignore=ignore)  # nothing left to follow, and never followed
        if self.coursedir.groupshared:
            for dirname, _, filenames in os.walk(dest):
                for path, bits, mask in [(dirname, 0o2770, 0o2777)] + [(os.path.join(dirname, f), 0o660, 0o777)
                                                                       for f in filenames]:
                    mode = os.stat(path).st_mode
                    if mode & bits != bits:
                        try:
                            os.chmod(path, (mode | bits) & mask)
                        except PermissionError:
                            self.log.warning("Could not update permissions of %s to make it groupshared", path)
