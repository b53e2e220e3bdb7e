"""Reading local files the way the product must: bounded, and never hanging."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_at_most(path: Path, max_bytes: int | None) -> bytes:
    """A regular file's bytes, at most ``max_bytes + 1`` of them when ``max_bytes`` is
    given. A FIFO, a device or a folder raises ``OSError`` instead of hanging or
    reading for ever (``/dev/zero``)."""
    # O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return handle.read() if max_bytes is None else handle.read(max_bytes + 1)
