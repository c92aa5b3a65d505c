"""Helper processes recorded in the home, so that a start ends those a crash left behind.

Judge workers and pre-scan followers die with the simulator on Linux (``judging.die_with_parent``:
the kernel kills them when their parent ends). Where that does not exist, or when a helper was
stopped (SIGSTOP) and its parent's death was missed, a helper could outlive a simulator killed
with SIGKILL and hold memory for ever (8 helpers, ~300 MB, once). So each helper is recorded in
the home while it runs, ``run/helpers/<pid>`` holding the process's start time, and the next
start of a simulator on that home ends every recorded process that is still the same process
(same pid *and* same start time: a pid the system gave to another process since is left alone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("fla_sim.leftovers")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields count from its end
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else None


class HelperRecords:
    """The helper processes of one home (``run/helpers``): add, remove, end leftovers."""

    def __init__(self, directory: Path):
        self.directory = directory

    def add(self, pid: int) -> None:
        """Record a helper that just started."""
        started = _start_time(pid)
        if started is None:
            return  # not Linux, or already gone: nothing a later start could check
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / str(pid)).write_text(started)

    def remove(self, pid: int) -> None:
        """Forget a helper that ended."""
        with contextlib.suppress(OSError):
            (self.directory / str(pid)).unlink()

    def end_leftovers(self) -> list[int]:
        """Kill every recorded helper that is still the process recorded; forget them all.

        Call it before helpers of this home start (the home lock is held, so no live simulator
        owns them). Returns the pids killed.
        """
        killed: list[int] = []
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return killed
        for entry in entries:
            try:
                pid = int(entry.name)
                recorded = entry.read_text().strip()
            except (ValueError, OSError):
                recorded, pid = "", 0
            if pid > 0 and pid != os.getpid() and _start_time(pid) == recorded:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    log.warning("ended helper process %d left behind by an earlier run", pid)
            with contextlib.suppress(OSError):
                entry.unlink()
        return killed
