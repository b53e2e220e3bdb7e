"""Reading local files and child processes' answers the way the product must: bounded,
and never hanging."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path


class ChildFailed(RuntimeError):
    """A child process gave no answer: why (the last line it wrote to stderr, or the
    time it was allowed)."""


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


def run_child(module: str, data: bytes, *args: str, timeout: float) -> bytes:
    """What ``python -m module args…`` writes to stdout given ``data`` on stdin, within
    ``timeout`` seconds; ``ChildFailed`` when it fails, is killed or says nothing."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"it took over {timeout:g} s") from exc
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["killed"]
        raise ChildFailed(reason[0])
    return done.stdout
