"""Starting a pre-scan follower: forked from the fork server, or run on stdin/stdout.

:class:`Forked` forks a follower from the simulator's fork server (``fla_sim.judging``:
never from the simulator itself, which holds threads and a SQLite connection; the judge is
preloaded there, so a follower starts in milliseconds and shares those pages). It is handed
the upload's file descriptor and two one-way connections (``multiprocessing.connection``) for
the messages of :mod:`fla_sim.prescan_messages`. ``python -m fla_sim.prescan_process`` runs
the same follower with stdin and stdout as those connections.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from fla_sim.prescan_messages import Failed, Job

# Followers start this much nicer than the simulator: during the upload they must take only CPU
# the SSH/SFTP work leaves (WRITE throughput comes first); once the set's GO arrives and its
# judge waits for them, they are put back to the simulator's priority where the OS allows it.
NICE = 19


class _PassFd:
    """A file descriptor handed to a process the fork server starts (multiprocessing sends
    it along with the process object)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing import reduction

        return (_received_fd, (reduction.DupFd(self.fd),))


def _received_fd(dup: Any) -> int:
    return int(dup.detach())


class Forked:
    """A follower forked from the simulator's fork server (``fla_sim.judging``), which has
    the judge preloaded: no interpreter start-up and imports per follower (~0.9 s), and the
    preloaded pages shared with the judge workers instead of copied. ``to_follower`` and
    ``from_follower`` are the manager's ends of its connections; ``poll``, ``wait``, ``kill``
    and ``send_signal`` as ``subprocess.Popen``'s."""

    def __init__(self, fd: int):
        from fla_sim.judging import _context, _main_not_reimported

        ctx = _context()
        inbox, self.to_follower = ctx.Pipe(duplex=False)
        self.from_follower, outbox = ctx.Pipe(duplex=False)
        try:
            self._proc = ctx.Process(target=_forked_main, args=(inbox, outbox, _PassFd(fd)),
                                     daemon=True, name="fla-sim prescan")
            with _main_not_reimported():
                self._proc.start()
        except BaseException:
            for end in (inbox, outbox, self.to_follower, self.from_follower):
                end.close()
            raise
        # the follower holds its own copies: its ends here would keep each pipe from ending
        inbox.close()
        outbox.close()
        self.pid: int = self._proc.pid or 0
        # multiprocessing reads the exit status from one pipe: two threads must not race
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """The exit code, None while it runs."""
        with self._lock:
            return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end (bounded by ``timeout``); the exit code or None."""
        from multiprocessing.connection import wait

        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            wait([self._proc.sentinel], 0.5 if left is None else min(0.5, left))
        return code

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` unless it has ended."""
        if self.poll() is None:
            os.kill(self.pid, signum)


def _forked_main(inbox: Connection, outbox: Connection, upload_fd: int) -> None:
    """Entry point of a follower forked from the fork server."""
    from fla_sim.judging import die_with_parent

    die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(NICE)
    # never wait for the inbox listener thread, which may be blocked in a read
    os._exit(_run(inbox, outbox, upload_fd))


def main() -> int:
    """Entry point of a follower process (``python -m fla_sim.prescan_process``)."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    return _run(Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False),
                None)


def _run(inbox: Connection, outbox: Connection, upload_fd: int | None) -> int:
    """Take the job, follow the upload, send the result; the process's exit code."""
    from fla_sim.prescan_follower import follow

    try:
        job = inbox.recv()
    except (EOFError, OSError):
        return 3
    if not isinstance(job, Job):
        with contextlib.suppress(OSError):
            outbox.send(Failed(f"expected a job, got {type(job).__name__}"))
        return 2
    if upload_fd is not None:  # handed over under another number than the simulator's
        job = dataclasses.replace(job, fd=upload_fd)
    try:
        return follow(job, inbox, outbox)
    except BrokenPipeError:
        return 3  # the simulator went away
    except Exception as exc:  # reported, so the simulator logs it and reads the file itself
        with contextlib.suppress(OSError):
            outbox.send(Failed(f"{type(exc).__name__}: {exc}"))
        return 2


if __name__ == "__main__":
    # not sys.exit: the inbox listener thread may be blocked in a read, which would make the
    # interpreter's shutdown wait or abort
    os._exit(main())
