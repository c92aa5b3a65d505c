"""Fault injection (design 5 ``[[fault]]``): faults that cannot be produced for real on demand.

A fault fires at one moment (``when``: upload, process, answer) for files whose name matches a
glob, at most ``times`` times. What it does:

* ``delay`` (any moment): wait ``delay_ms`` before going on;
* ``drop-connection`` (upload): the file is discarded and the client's connection is lost;
* ``disk-full`` (upload): the file is discarded, the client's close fails "No space left";
  (answer): writing an answer file fails with ``ENOSPC``; the processor retries, nothing is lost
  or written twice;
* ``force-anomaly`` (upload or process): the set is rejected with ``code`` (default 312);
* ``corrupt`` (answer): the FO bytes are altered after signing (its FS no longer verifies).
"""

from __future__ import annotations

import errno
import fnmatch
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from fla_sim.config import FaultSpec


@dataclass
class FaultInjector:
    """The faults of a simulator; thread-safe counting of how often each fired."""

    faults: list[FaultSpec] = field(default_factory=list)
    fired: list[tuple[str, str, str]] = field(default_factory=list)  # (when, action, name)
    _counts: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, faults: Iterable[FaultSpec]) -> FaultInjector:
        return cls(list(faults))

    def add(self, fault: FaultSpec) -> None:
        """Add a fault at run time (tests, the pytest fixture)."""
        with self._lock:
            self.faults.append(fault)

    def take(self, when: str, name: str, actions: Iterable[str] | None = None) -> FaultSpec | None:
        """The first fault for this moment and file name that still may fire; counts it."""
        wanted = set(actions) if actions is not None else None
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.when != when or (wanted is not None and fault.action not in wanted):
                    continue
                if not fnmatch.fnmatchcase(name, fault.match):
                    continue
                if fault.times is not None and self._counts.get(i, 0) >= fault.times:
                    continue
                self._counts[i] = self._counts.get(i, 0) + 1
                self.fired.append((when, fault.action, name))
                return fault
        return None

    def before_answer_write(self, path_name: str) -> None:
        """Raise ENOSPC when a ``disk-full`` answer fault fires for this file."""
        if self.take("answer", path_name, ("disk-full",)) is not None:
            raise OSError(errno.ENOSPC, "No space left on device (injected fault)", path_name)
