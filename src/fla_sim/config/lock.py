"""The lock of the process serving a simulator home (one ``fla-sim serve`` per home)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from fla_sim.config.model import HomeInUse


class HomeLock:
    """An exclusive ``flock`` on a home's lock file, held from :meth:`acquire` to
    :meth:`release`. The kernel drops it when the holder ends, however it ends (SIGKILL
    included), so a crash never leaves a stale lock; the file itself stays."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> HomeLock:
        """Take the lock now or raise ``HomeInUse`` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeInUse(f"{self.path.parent}: in use by {self._holder()}; stop that "
                            "process first, or use another home") from None
        # who holds it, for the message of the next process that tries
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": _command_line(),
                                  "since": datetime.now(UTC).isoformat(timespec="seconds")
                                  }).encode() + b"\n", 0)
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text("utf-8"))
            return f"process {info['pid']} ({info['command']}, since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):  # written a moment from now
            return "another process"

    def release(self) -> None:
        """Give the lock up (closing the file releases it); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command_line() -> str:
    argv = sys.argv or ["python"]
    return " ".join([Path(argv[0]).name, *argv[1:]])
