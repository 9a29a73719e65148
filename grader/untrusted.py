"""Reading a file the student could have planted: never through a link, never a fifo or device
(which could block), never past a size cap. One reader for records, timestamps and feedback."""

from __future__ import annotations

import os
import stat


def read_regular(name: str | os.PathLike, cap: int, dir_fd: int | None = None) -> bytes | None:
    """The bytes of the regular file ``name`` (relative to ``dir_fd`` when given), or None when it
    is missing, a link, not a regular file, or larger than ``cap`` bytes."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        chunks, left = [], st.st_size + 1   # +1 notices a file that grew after fstat
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > st.st_size else data
    finally:
        os.close(fd)
