"""What a pre-scan follower process does: read the growing upload, hash and judge it.

The follower reads only bytes its manager (``fla_sim.prescan``) confirmed written, through
:class:`_FollowStream`, a file-like view whose reads block until the bytes are there, so the
scans of :mod:`fla_core.judge` see the same chunks as when they read the finished file. The
validating (or full) process also hashes the file in a thread (:func:`_digest`). Messages:
:mod:`fla_sim.prescan_messages`; how the process is started: :mod:`fla_sim.prescan_process`.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

from fla_core.fi import read_full
from fla_sim.judging import limit_memory, proc_kb
from fla_sim.prescan_messages import Closed, Confirmed, Failed, Progress, Result, Wanted

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

    from fla_sim.prescan_messages import Job

PROGRESS = 16 << 20  # a follower reports its reading position every PROGRESS bytes


def plugin_names(plugins: Any) -> list[str]:
    """The registered plugins by name: what a follower must find again to judge alike."""
    return sorted(name for name, plugin in plugins.pm.list_name_plugin() if plugin is not None)


class Abandoned(Exception):
    """The upload was abandoned (the manager's connection ended without :class:`Closed`)."""


class Feed:
    """What the manager confirmed: bytes written so far, the final size once closed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.confirmed = 0
        self.final: int | None = None
        self.wanted = False  # the set's GO arrived
        self.ended = False

    def listen(self, inbox: Connection) -> None:
        """Take Confirmed/Closed/Wanted messages until the connection ends (thread)."""
        try:
            while True:
                try:
                    message = inbox.recv()
                except (EOFError, OSError):
                    return
                with self._cond:
                    if isinstance(message, Confirmed):
                        self.confirmed = max(self.confirmed, message.upto)
                    elif isinstance(message, Closed):
                        self.final = self.confirmed = message.size
                    elif isinstance(message, Wanted):
                        self.wanted = True
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_wanted(self) -> None:
        """Block until the set's GO arrived (raises Abandoned if the follower is stopped)."""
        with self._cond:
            while not self.wanted:
                if self.ended:
                    raise Abandoned
                self._cond.wait()

    def available(self, want: int) -> int:
        """Block until ``want`` bytes are confirmed or the file is complete; the bytes usable."""
        with self._cond:
            while self.confirmed < want and self.final is None:
                if self.ended:
                    raise Abandoned
                self._cond.wait()
            return self.confirmed


class FollowStream(io.RawIOBase):
    """The growing file as a seekable binary stream: reads block until the bytes are confirmed
    and are full (short only at the end), as a regular file's are, so the scan sees the same
    chunks as when it reads the finished file."""

    def __init__(self, fd: int, feed: Feed, report: Callable[[int], None]):
        super().__init__()
        self._fd, self._feed, self._report = fd, feed, report
        self._pos = 0
        self._next_report = PROGRESS

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset < 0:
            raise io.UnsupportedOperation("only absolute seeks")
        self._pos = offset
        return offset

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        available = self._feed.available(self._pos + len(view))
        want = min(len(view), available - self._pos)
        got = 0
        while got < want:
            n = os.preadv(self._fd, [view[got:want]], self._pos + got)
            if n == 0:  # cannot happen below the confirmed size; do not loop forever
                break
            got += n
        self._pos += got
        if self._pos >= self._next_report:
            self._next_report = self._pos + PROGRESS
            self._report(self._pos)
        return got

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        return read_full(self.readinto, size)


@dataclass
class _Hashed:
    """What the digest thread reached: the bytes hashed, once it read to the end."""

    size: int | None = None
    hashers: list[Any] = field(default_factory=list)


def _digest(fd: int, feed: Feed, hashed: _Hashed) -> None:
    """Hash the file as it grows (a thread: hashlib releases the GIL, so this runs on the
    core the scan leaves idle once the upload is over)."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    pos = 0
    try:
        while True:
            available = feed.available(pos + len(buffer))
            n = os.preadv(fd, [view[:min(len(buffer), available - pos)]], pos)
            if n == 0:
                break  # the end: the final size is reached (or the file is shorter)
            for h in hashed.hashers:
                h.update(view[:n])
            pos += n
    except Abandoned:
        return
    hashed.size = pos


def _peak_rss_kb() -> int:
    """This process's peak resident memory in KiB (0 if unknown)."""
    # VmHWM, not ru_maxrss: Linux carries the spawning process's peak over exec into the latter
    return proc_kb("/proc/self/status", b"VmHWM:")


def _pss_kb() -> int:
    """This process's proportional set size in KiB (shared pages split among their users)."""
    return proc_kb("/proc/self/smaps_rollup", b"Pss:")


def follow(job: Job, inbox: Connection, outbox: Connection) -> int:
    """Follow the upload of ``job``: messages in from ``inbox``, out to ``outbox``; the exit
    code (0 result sent, 1 failure sent, 3 abandoned)."""
    import hashlib

    from fla_core.anomalies import ChannelError
    from fla_core.mandates import MandateBook
    from fla_core.scanning import rules_outcome, scan_outcome, validate_outcome
    from fla_sim.store import RegistryReader

    def report(position: int) -> None:
        outbox.send(Progress(position))

    report(0)  # started: the imports are done
    plugins = job.recipe.build()  # the simulator's manager, as it was built there
    if plugin_names(plugins) != job.plugins:
        outbox.send(Failed("this process loads other plugins than the simulator"))
        return 1
    # as a judge worker: a set that needs more fails here (its outcome unusable), then in a
    # judge worker, which answers it ACRF-999
    limit_memory(job.memory)
    feed = Feed()
    threading.Thread(target=feed.listen, args=(inbox,), daemon=True).start()
    hashed = _Hashed(hashers=[hashlib.new(name) for name in job.algorithms])
    digest = None
    if job.role == "validate":
        # Only the rules half runs during the upload: it is the longer one (the validation
        # keeps up with xmllint since it builds no tree), and every process reading along
        # slows the upload itself (1 GB here: 2.3-3.3 s with no follower, ~4.8 s with two).
        try:
            feed.wait_wanted()
        except Abandoned:
            return 3
    if job.role != "rules":  # the validating process also computes the digests
        digest = threading.Thread(target=_digest, args=(job.fd, feed, hashed), daemon=True)
        digest.start()
    # typeshed does not see a RawIOBase as an IO[bytes]; the scans use it as one.
    stream = cast(IO[bytes], FollowStream(job.fd, feed, report))
    try:
        if job.role == "validate":
            outcome: Any = validate_outcome(job.go, stream, channel=job.channel,
                                            settings=job.settings, plugins=plugins)
        else:
            run = rules_outcome if job.role == "rules" else scan_outcome
            outcome = run(job.go, stream, channel=job.channel, settings=job.settings,
                          plugins=plugins, today=job.today,
                          registry=RegistryReader(job.journal).registry(*job.registry),
                          mandates=MandateBook(job.mandates))
    except Abandoned:
        return 3
    if digest is not None:
        digest.join()
        if hashed.size != feed.final:
            return 3  # abandoned while hashing
    if outcome is None:
        outbox.send(Failed("no plugin for the application"))
        return 1
    digests = {} if digest is None else {
        name: h.digest() for name, h in zip(job.algorithms, hashed.hashers, strict=True)}
    outbox.send(Result(outcome=outcome, error=isinstance(outcome, ChannelError),
                       digests=digests, size=hashed.size, peak_rss_kb=_peak_rss_kb(),
                       pss_kb=_pss_kb()))
    return 0
