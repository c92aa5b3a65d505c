"""What keeps one client from taking the simulator down (docs/simulator.md, [server] caps).

One misbehaving session once opened ~20,000 handles, exhausted the process's file descriptors
and locked every channel out while the logs filled up. The per-session and per-channel handle
caps live in :mod:`fla_sim.sftp_session`, the login and connection caps in
:mod:`fla_sim.ssh_login`; here are the pieces they share: the file limit raised at start-up, the
sliding window of failed logins per source address, and the filter that keeps a flood of
identical warnings from filling the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

Clock = Callable[[], float]


def raise_file_limit(log: logging.Logger) -> int:
    """Raise this process's soft limit of open files to its hard limit; return the soft limit."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # "unlimited" cannot be a soft limit on every system (macOS refuses it): a million files is
    # more than the handle caps ever let the channels open
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d (%s): the handle caps of "
                    "[server] are all that protects the simulator", soft, target, exc)
        return soft
    return target


class FailureWindow:
    """Failed login attempts per source address over a sliding window (``[server]`` caps).

    A login that succeeds in the end takes its earlier failures back (:meth:`forgive`): a client
    whose agent offers a few other keys first is not a source of failed logins.
    """

    def __init__(self, clock: Clock = time.monotonic):
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def add(self, source: str) -> float:
        """Count one failed attempt from ``source``; returns its time stamp for :meth:`forgive`."""
        now = self._clock()
        self._failures.setdefault(source, deque()).append(now)
        return now

    def forgive(self, source: str, stamps: Iterable[float]) -> None:
        """Take back the failures of a connection that then logged in."""
        failures = self._failures.get(source)
        if failures is None:
            return
        for stamp in stamps:
            with contextlib.suppress(ValueError):  # already aged out of the window
                failures.remove(stamp)
        if not failures:
            del self._failures[source]

    def blocked_for(self, source: str, limit: int, window: float) -> float:
        """Seconds until ``source`` may try again: 0 below ``limit`` failures in ``window``."""
        if limit <= 0:
            return 0.0
        now = self._clock()
        self._prune(now - window)
        failures = self._failures.get(source)
        if failures is None or len(failures) < limit:
            return 0.0
        # allowed again once enough of the failures in the window have aged out of it
        return max(failures[len(failures) - limit] + window - now, 0.001)

    def _prune(self, before: float) -> None:
        for source in list(self._failures):
            failures = self._failures[source]
            while failures and failures[0] <= before:
                failures.popleft()
            if not failures:
                del self._failures[source]


class RepeatFilter(logging.Filter):
    """Let through at most ``burst`` warnings of one kind per ``window`` seconds.

    A kind is the logger, the level and the message template (not its arguments), so a flood
    of "refused" lines for ever-new names or keys counts as one. The first record let through
    after a window in which some were dropped says how many: "(N similar messages suppressed)".
    Records below WARNING pass untouched: they are the normal traffic of a busy sender.
    """

    _MAX_KINDS = 1000  # templates remembered before windows that ended are forgotten

    def __init__(self, burst: int = 50, window: float = 10.0, clock: Clock = time.monotonic):
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()  # records come from the event loop and worker threads
        self._kinds: dict[tuple[object, ...], list[float]] = {}  # kind -> [start, passed, dropped]

    def reset(self) -> None:
        """Forget every count (a new listener starts with a clean slate)."""
        with self._lock:
            self._kinds.clear()

    def install(self, loggers: Iterable[logging.Logger]) -> None:
        """Add this filter to each logger that does not have it yet."""
        for logger in loggers:
            if self not in logger.filters:
                logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep or drop ``record``; the first kept after a drop names the number dropped."""
        if record.levelno < logging.WARNING:
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        kind = (record.name, record.levelno, template,
                record.exc_info[0] if record.exc_info else None)
        now = self._clock()
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is not None and now - entry[0] < self.window:
                if entry[1] < self.burst:
                    entry[1] += 1
                    return True
                entry[2] += 1
                return False
            dropped = int(entry[2]) if entry is not None else 0
            if len(self._kinds) >= self._MAX_KINDS:
                self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self.window}
            self._kinds[kind] = [now, 1, 0]
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar messages suppressed)"
            record.args = None
        return True
