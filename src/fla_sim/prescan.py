"""Validating a big FI while it is uploaded: the judge's read overlapped with the upload.

During a big upload the simulator process is busy with SSH (one core, one GIL); at the GO the
judge would then read the FI twice (the digest for P9, the scan for P10-P16). Here a *follower*
process, on the other core, reads the temporary file as it grows and computes both: the SHA-256
digest and :func:`fla_core.judge.scan_outcome` (file reference, declaration verdicts, registry
changes, or the ChannelError of P10-P15). At the GO, :meth:`Prescanner.result_for` hands that to
``judge_set`` as a :class:`fla_core.judge.PrescanResult`, which still runs P4-P9 first.

Pieces:

* the SFTP server (``fla_sim.server``) tracks the contiguous prefix of each FI upload and calls
  :meth:`Prescanner.start` once it reaches ``[server] prescan_min_bytes``, then
  :meth:`Prescanner.confirm` every few MiB, :meth:`Prescanner.closed` at CLOSE or
  :meth:`Prescanner.abort` (disconnect, quota, rewrite of earlier bytes);
* the follower is a process forked from the simulator's fork server (``fla_sim.judging``:
  never from the simulator itself, which holds threads and a SQLite connection; the judge is
  preloaded there, so a follower starts in milliseconds and shares those pages). It is handed
  the upload's file descriptor (the server renames the file at CLOSE, the inode stays) and
  reads only bytes the server confirmed written. ``python -m fla_sim.prescan`` runs the same
  follower on its stdin/stdout;
  registry lookups go through its own read-only connection to the journal (WAL);
* :meth:`Prescanner.result_for` (a judge thread) uses a result only when it is provably about
  the same bytes and context, else returns None and the judge reads the file as before.

Protocol on the follower's pipes: stdin carries one length-prefixed pickled job, then lines
``w <bytes confirmed>`` and ``c <final size>``; its end without ``c`` means the upload was
abandoned. stdout carries length-prefixed pickled frames: ``("progress", bytes read)``, then one
``("result", {...})`` or ``("failed", why)``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import logging
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from fla_core.fi import read_full
from fla_core.names import stem_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fla_core.judge import PrescanResult
    from fla_core.names import FileName
    from fla_sim.processor import Processor

log = logging.getLogger("fla_sim.prescan")

STEP = 4 << 20  # the server confirms progress to a follower every STEP bytes
PROGRESS = 16 << 20  # a follower reports its reading position every PROGRESS bytes
# Followers start this much nicer than the simulator: during the upload they must take only CPU
# the SSH/SFTP work leaves (WRITE throughput comes first); once the set's GO arrives and its
# judge waits for them, they are put back to the simulator's priority where the OS allows it.
NICE = 19
ALGORITHMS = ("sha256",)  # what FSs use in practice; another algorithm makes P9 read the FI
_LEN = struct.Struct("!Q")


def _plugin_names(plugins: Any) -> list[str]:
    """The registered plugins by name: what a follower must find again to judge alike."""
    return sorted(name for name, plugin in plugins.pm.list_name_plugin() if plugin is not None)


def _write_frame(out: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def _read_frame(src: IO[bytes]) -> Any:
    """The next frame, or None at the end of the stream (a cut frame counts as the end)."""
    head = src.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    size = _LEN.unpack(head)[0]
    data = src.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)  # our own child process wrote it


# --- the simulator side --------------------------------------------------------------------------

@dataclass(eq=False)
class _Process:
    """One process of a follower and what it sent back."""

    role: str  # "validate" + "rules" (the built-in FLA application), else "full"
    proc: _Forked
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    failure: str | None = None


@dataclass(eq=False)
class Follower:
    """The follower processes of one upload and what is known of them (the server keeps it on
    the upload). The built-in FLA application is followed by two processes, one validating
    (P10-P15 and the digest), one applying the business rules to the same bytes read without
    the schema: the two halves of the scan on two cores."""

    key: tuple[str, str, str]  # user, directory, FI name
    procs: list[_Process]
    today: date
    config_gen: int
    registry_key: tuple[str, str]  # sender, env
    registry_gen: int
    max_declarations: int  # P15, when the validating half did not count
    outbox: queue.SimpleQueue[bytes | None] = field(default_factory=queue.SimpleQueue)
    progress_at: float = field(default_factory=time.monotonic)
    identity: tuple[int, int, int] | None = None  # inode, size, mtime_ns at CLOSE
    threads: list[threading.Thread] = field(default_factory=list)
    wanted: bool = False  # the set's GO arrived: its judge will ask for the result
    parked: bool = False  # stopped (SIGSTOP) because no GO followed the upload


class Prescanner:
    """Starts, feeds, stops and harvests the followers of one simulator."""

    stall_timeout = 60.0  # a follower silent this long at GO time is given up
    wait_timeout = 1800.0  # and one still busy after this long (a 1 GB FI takes ~30 s)
    # A follower whose upload closed without its GO following this soon is paused until the GO
    # comes: an FI that is never sent a GO must not take a core from everyone else.
    park_after = 1.0
    # Finished uploads whose GO has not come yet keep their (paused) followers, at most this
    # many: the oldest are stopped first (their sets are then judged by reading the file).
    max_waiting = 4
    # ... and for at most this long (None: the orphan timeout, after which the FI is swept):
    # nothing stays paused without a time limit
    max_parked_s: float | None = None

    def __init__(self, processor: Processor, min_bytes: int):
        from fla_sim.leftovers import HelperRecords

        self.processor = processor
        self.min_bytes = min_bytes
        self.records = HelperRecords(processor.home.helpers_dir)
        self.stats: collections.Counter[str] = collections.Counter()
        self._config_gen = 0
        self._lock = threading.Lock()
        self._running: set[Follower] = set()
        self._ready: dict[tuple[str, str, str], Follower] = {}  # closed, waiting for the GO
        self._closed = False

    # -- from the SFTP server (event loop) ------------------------------------------------------

    def start(self, user: str, directory: str, name: str, fd: int) -> Follower | None:
        """Start following the upload on ``fd``; None when this FI will not be pre-scanned."""
        try:
            job, roles, follower_args = self._job(user, directory, name, fd)
        except _NotEligible as exc:
            log.debug("%s/%s: no pre-scan (%s)", directory, name, exc)
            return None
        procs: list[_Process] = []
        try:
            for role in roles:
                procs.append(_Process(role, _Forked(fd)))
                self.records.add(procs[-1].proc.pid)
        except (OSError, ValueError) as exc:
            log.warning("%s/%s: cannot start a pre-scan process (%s)", directory, name, exc)
            for p in procs:
                p.proc.kill()
                p.proc.wait()
                self.records.remove(p.proc.pid)
            return None
        follower = Follower(key=(user, directory, name), procs=procs, **follower_args)
        frames = [pickle.dumps({**job, "role": p.role}, protocol=pickle.HIGHEST_PROTOCOL)
                  for p in procs]
        jobs = [_LEN.pack(len(frame)) + frame for frame in frames]
        follower.threads.append(threading.Thread(target=self._feed, args=(follower, jobs),
                                                 daemon=True, name="fla-prescan-feed"))
        for p in procs:
            follower.threads.append(threading.Thread(target=self._harvest, args=(follower, p),
                                                     daemon=True, name=f"fla-prescan-{p.role}"))
        with self._lock:
            self._running.add(follower)
            # paused followers hold memory (~50 MB each) for sets whose GO may never come: a new
            # big upload is the better use of it (those sets are judged by reading the file)
            parked = [f for f in self._ready.values() if f.parked]
            for f in parked:
                del self._ready[f.key]
        for f in parked:
            self._stop(f, "a new upload is followed")
        for thread in follower.threads:
            thread.start()
        self.stats["started"] += 1
        log.info("%s/%s: pre-scan started (pids %s)", directory, name,
                 ", ".join(str(p.proc.pid) for p in procs))
        return follower

    def confirm(self, follower: Follower, upto: int) -> None:
        """Bytes ``[0, upto)`` of the upload are written and will not change."""
        follower.outbox.put(b"w %d\n" % upto)

    def closed(self, follower: Follower, st: os.stat_result) -> None:
        """The upload is complete (``st``: its fstat at CLOSE) and has its real name."""
        follower.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        follower.outbox.put(b"c %d\n" % st.st_size)
        with self._lock:
            older = self._ready.pop(follower.key, None)
            self._ready[follower.key] = follower
        if older is not None:  # the same name uploaded again before its GO: last write wins
            self._stop(older, "replaced by a new upload")
        self._forget_stale()
        with contextlib.suppress(RuntimeError):  # no running loop: never parked
            asyncio.get_running_loop().call_later(self.park_after, self._park, follower)

    def go_closed(self, user: str, directory: str, name: str) -> None:
        """A GO was uploaded: the follower of its set's single FI is wanted (resumed if parked)."""
        stem = stem_of(name, exact=True)  # a follower's FI passed the name checks: so did its GO
        if stem is None:
            return
        with self._lock:
            follower = self._ready.get((user, directory, f"FI.{stem}.1.1"))
        if follower is not None:
            self._want(follower)

    def _want(self, follower: Follower) -> None:
        """The set's judge will wait for this follower: full speed from now on, and the
        validating process starts."""
        follower.wanted = True
        follower.outbox.put(b"g\n")
        self._resume(follower)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        for p in follower.procs:
            # lowering a nice value needs CAP_SYS_NICE: without it they stay nicer (they still
            # get every idle cycle, and all of them when nothing else runs). On Linux this
            # renices the main thread only: the validating process's digest thread stays nicer,
            # which is what we want (it would otherwise take CPU from the two scans, the rules
            # half being the longest; it catches up when the validation is done)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, p.proc.pid, own)

    def _park(self, follower: Follower) -> None:
        with self._lock:
            if follower.wanted or follower.parked or follower not in self._running:
                return
            follower.parked = True
        self._signal(follower, signal.SIGSTOP)
        # logged once stopped: a reader of the log (tests/sim/test_crash_leftovers.py) may look
        log.info("%s: no GO yet; pre-scan paused", follower.key[2])
        limit = self.max_parked_s
        if limit is None:
            limit = float(self.processor.settings.orphan_timeout_s)
        with contextlib.suppress(RuntimeError):  # no running loop: stopped with the simulator
            asyncio.get_running_loop().call_later(limit, self._expire, follower)

    def _expire(self, follower: Follower) -> None:
        """A follower paused for longer than allowed: stopped (its set is judged by reading
        the file, if its GO ever comes)."""
        with self._lock:
            if not follower.parked or self._ready.get(follower.key) is not follower:
                return
            del self._ready[follower.key]
        self._stop(follower, "paused too long without its GO")

    def _resume(self, follower: Follower) -> None:
        with self._lock:
            if not follower.parked:
                return
            follower.parked = False
        follower.progress_at = time.monotonic()  # the pause is not a stall
        self._signal(follower, signal.SIGCONT)

    @staticmethod
    def _signal(follower: Follower, signum: int) -> None:
        for p in follower.procs:
            if p.proc.poll() is None:
                with contextlib.suppress(OSError):
                    p.proc.send_signal(signum)

    def abort(self, follower: Follower, why: str) -> None:
        """The upload will not complete (or cannot be followed): stop its follower."""
        log.info("%s/%s: pre-scan stopped: %s", follower.key[1], follower.key[2], why)
        self.stats["aborted"] += 1
        self._stop(follower, why)

    # -- from the processor (a judge thread) -----------------------------------------------------

    def bump_config(self) -> None:
        """Channels or mandates changed: pre-scans started before are not used."""
        with self._lock:
            self._config_gen += 1

    def result_for(self, user: str, directory: str, go: FileName, files: Sequence[Path],
                   today: date) -> PrescanResult | None:
        """The pre-scan of the set's FI when it is safe to use, else None (read the file).

        Blocks while the follower is still reading (only this set's judge waits).
        """
        fis = [p for p in files if p.name.startswith(f"FI.{go.stem}.")]
        if go.total != 1 or len(fis) != 1:
            return None  # multi-part sets are one concatenated stream: never pre-scanned
        fi = fis[0]
        with self._lock:
            follower = self._ready.pop((user, directory, fi.name), None)
        self._forget_stale()
        if follower is None:
            return None
        if not follower.wanted:
            self._want(follower)
        try:
            why = self._unsafe(follower, fi, today)
            if why is None:
                why = self._wait(follower)
            if why is None:  # the registry or the configuration may have changed meanwhile
                why = self._unsafe(follower, fi, today)
            if why is not None:
                log.info("%s: pre-scan not used (%s); reading the file", fi.name, why)
                self.stats["fallback"] += 1
                return None
            result = self._decode(fi.name, follower)
            if result is None:
                log.warning("%s: pre-scan halves disagree; reading the file", fi.name)
                self.stats["fallback"] += 1
                return None
            self.stats["used"] += 1
            peak = max(p.result["peak_rss_kb"] for p in follower.procs if p.result)
            self.stats["follower_peak_rss_kb"] = max(self.stats["follower_peak_rss_kb"], peak)
            log.info("%s: pre-scan used (followers' peak RSS %s MB; at the end PSS %s MB)",
                     fi.name, " + ".join(f"{p.result['peak_rss_kb'] / 1024:.0f}"
                                         for p in follower.procs if p.result),
                     " + ".join(f"{p.result['pss_kb'] / 1024:.0f}"
                                for p in follower.procs if p.result))
            return result
        finally:
            self._stop(follower, "result taken")

    def _unsafe(self, follower: Follower, fi: Path, today: date) -> str | None:
        """Why the follower's result cannot stand for reading ``fi`` now; None when it can."""
        try:
            st = os.stat(fi)
        except OSError:
            return "the FI is gone"
        if (st.st_ino, st.st_size, st.st_mtime_ns) != follower.identity:
            return "the FI is not the file that was followed"
        if st.st_size > self.processor.settings.max_file_size:
            return "the FI is over max_file_size: P8 answers it without reading it"
        if today != follower.today:
            return "another processing date"
        if self._config_gen != follower.config_gen:
            return "the configuration changed"
        sender, env = follower.registry_key
        if self.processor.journal.registry_generation(sender, env) != follower.registry_gen:
            return "the registry changed"
        return None

    def _wait(self, follower: Follower) -> str | None:
        """Wait for the follower's results; why there are none (stall, timeout, failure).

        The validating (or full) process first; the rules process only when the document is
        valid (otherwise its verdicts are not needed).
        """
        start = time.monotonic()
        first = follower.procs[0]
        for p in follower.procs:
            if p is not first and first.result is not None \
                    and first.result["outcome"][0] == "error":
                break
            while not p.done.wait(0.5):
                now = time.monotonic()
                if now - follower.progress_at > self.stall_timeout:
                    return f"the pre-scan made no progress for {self.stall_timeout:.0f} s"
                if now - start > self.wait_timeout:
                    return f"the pre-scan took more than {self.wait_timeout:.0f} s"
            if p.result is None:
                return p.failure or f"the pre-scan ({p.role}) ended without a result"
        size = first.result["size"]  # type: ignore[index]
        if follower.identity is None or size != follower.identity[1]:
            return "the pre-scan read another number of bytes than were uploaded"
        return None

    @staticmethod
    def _decode(fi_name: str, follower: Follower) -> PrescanResult | None:
        """The PrescanResult of the follower's results; None if its halves do not fit."""
        from fla_core.judge import PrescanResult, split_outcome

        first = follower.procs[0].result
        assert first is not None
        outcome: Any = first["outcome"][1]  # a ChannelError pickles by its fields
        if follower.procs[0].role == "validate":
            rules = follower.procs[1].result
            outcome = split_outcome(outcome, rules["outcome"][1] if rules else None,
                                    max_declarations=follower.max_declarations)
            if outcome is None:
                return None
        return PrescanResult(fi_name=fi_name, digests=first["digests"], outcome=outcome)

    # -- observing (tests, diagnostics) ------------------------------------------------------------

    def running_pids(self) -> list[int]:
        """Process ids of the followers whose process has not been reaped yet."""
        with self._lock:
            return sorted(p.proc.pid for f in self._running for p in f.procs
                          if not p.done.is_set())

    def wait_finished(self, user: str, directory: str, name: str, timeout: float) -> bool:
        """Wait until the follower of that closed upload ended (before its GO: the processes
        that run before a GO, the validating one waits for it); False on timeout or if none."""
        with self._lock:
            follower = self._ready.get((user, directory, name))
        if follower is None:
            return False
        deadline = time.monotonic() + timeout
        running = [p for p in follower.procs if follower.wanted or p.role != "validate"]
        return all(p.done.wait(max(0.0, deadline - time.monotonic())) for p in running)

    # -- life cycle ------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop every follower and reap it (no process is left behind)."""
        with self._lock:
            self._closed = True
            everyone = [*self._running, *self._ready.values()]
            self._ready.clear()
        for follower in everyone:
            self._stop(follower, "simulator stopping")
        deadline = time.monotonic() + timeout
        for follower in everyone:
            for thread in follower.threads:
                thread.join(max(0.0, deadline - time.monotonic()))

    async def aclose(self) -> None:
        """:meth:`close` off the event loop."""
        await asyncio.to_thread(self.close)

    def _stop(self, follower: Follower, why: str) -> None:
        """End the follower's process now (its harvest thread reaps it)."""
        follower.outbox.put(None)  # closes its stdin: it stops at its next read
        for p in follower.procs:
            if p.proc.poll() is None:
                with contextlib.suppress(OSError):
                    p.proc.kill()  # a result nobody will read must not cost a core

    def _forget_stale(self) -> None:
        """Drop finished uploads whose FI left the upload directory (archived, rejected), and
        the oldest of those still waiting for their GO beyond ``max_waiting``."""
        stale = []
        with self._lock:
            waiting = [f for f in self._ready.values() if not f.wanted]
            for follower in waiting[:max(0, len(waiting) - self.max_waiting)]:
                stale.append(self._ready.pop(follower.key))
            for key, follower in list(self._ready.items()):
                user, directory, name = key
                path = self.processor.root(user) / directory / name
                try:
                    st = os.stat(path)
                except OSError:
                    st = None
                if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != follower.identity:
                    stale.append(self._ready.pop(key))
        for follower in stale:
            self._stop(follower, "its FI left the upload directory")

    # -- the two threads of a follower -----------------------------------------------------------

    def _feed(self, follower: Follower, jobs: list[bytes]) -> None:
        """Write each process its job, then the outbox to every stdin (blocking writes stay off
        the event loop); a process that ended is skipped."""
        pipes = [p.proc.stdin for p in follower.procs]
        open_pipes = []
        for stdin, job in zip(pipes, jobs, strict=True):
            assert stdin is not None
            with contextlib.suppress(OSError, ValueError):
                stdin.write(job)
                stdin.flush()
                open_pipes.append(stdin)
        while (message := follower.outbox.get()) is not None:
            for stdin in list(open_pipes):
                try:
                    stdin.write(message)
                    stdin.flush()
                except (OSError, ValueError):  # it ended: its harvest thread notices
                    open_pipes.remove(stdin)
        for stdin in pipes:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def _harvest(self, follower: Follower, p: _Process) -> None:
        """Read one process's frames, then reap it."""
        stdout = p.proc.stdout
        assert stdout is not None
        try:
            while (frame := _read_frame(stdout)) is not None:
                kind, value = frame
                if kind == "progress":
                    follower.progress_at = time.monotonic()
                elif kind == "result":
                    p.result = value
                elif kind == "failed":
                    p.failure = f"the pre-scan ({p.role}) failed: {value}"
        except Exception as exc:  # a garbled frame: no result, the judge reads the file
            p.failure = f"unreadable pre-scan output ({type(exc).__name__})"
        finally:
            stdout.close()
            p.proc.wait()
            self.records.remove(p.proc.pid)
            p.done.set()
            if all(q.done.is_set() for q in follower.procs):
                follower.outbox.put(None)
                with self._lock:
                    self._running.discard(follower)
            if p.result is None and p.failure is not None:
                log.info("%s: %s", follower.key[2], p.failure)

    # -- what the follower needs -----------------------------------------------------------------

    def _job(self, user: str, directory: str, name: str,
             fd: int) -> tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]:
        from fla_core.anomalies import ChannelError
        from fla_core.names import ChannelNameContext, NameRules, parse_upload
        from fla_core.settings import ChannelProfile
        from fla_sim.processor import _env_of

        processor = self.processor
        if self._closed:
            raise _NotEligible("the simulator is stopping")
        # a follower builds the processor's manager again from its recipe, never its own
        # default: impossible when the caller registered plugin objects
        if processor.plugins.recipe is None:
            raise _NotEligible("the processor's plugins were given as objects")
        channel = processor.config.channel(user)
        if channel is None:
            raise _NotEligible("unknown channel")
        settings = processor.settings
        today = processor.now().date()
        rules = NameRules.of(settings, today)
        context = ChannelNameContext.of(channel, directory)
        try:
            fi = parse_upload(name, rules, context)
        except ChannelError as exc:
            raise _NotEligible(f"name refused ({exc.code})") from None
        if fi.total != 1 or fi.index != 1:
            raise _NotEligible("a part of a multi-part set")
        app = next((a for a in processor.plugins.applications() if a.code == fi.appl), None)
        if app is None:
            raise _NotEligible(f"no plugin for {fi.appl}: nothing to scan")
        from fla_core.applications import fla

        # the built-in FLA reader can be split in two halves (fla_core.judge.rules_outcome)
        roles = ("validate", "rules") if app.scan is fla.scan else ("full",)
        env = _env_of(directory)
        profile = ChannelProfile(user=channel.user, sender=channel.sender,
                                 quality=channel.quality, company_id=channel.company,
                                 applications=frozenset(channel.applications))
        with self._lock:
            config_gen = self._config_gen
        # read under the journal lock: a registry change being committed is waited for
        registry_gen = processor.journal.registry_generation(channel.sender, env)
        job = {
            "fd": fd, "go": fi, "channel": profile, "settings": settings,
            "mandates": list(processor.config.mandates), "today": today,
            "journal": str(processor.journal.path), "registry": (channel.sender, env),
            "plugins": _plugin_names(processor.plugins), "recipe": processor.plugins.recipe,
            "algorithms": ALGORITHMS,
            "memory": processor.config.judge_memory_mb << 20,  # as a judge worker's
        }
        return job, roles, {"today": today, "config_gen": config_gen,
                            "registry_key": (channel.sender, env),
                            "registry_gen": registry_gen,
                            "max_declarations": settings.max_declarations}


class _NotEligible(Exception):
    pass


# --- the follower process -------------------------------------------------------------------------

class _Abandoned(Exception):
    """The upload was abandoned (stdin ended without a final size)."""


class _Feed:
    """What the simulator confirmed: bytes written so far, the final size once closed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.confirmed = 0
        self.final: int | None = None
        self.wanted = False  # the set's GO arrived
        self.ended = False

    def listen(self, stdin: IO[bytes]) -> None:
        """Read ``w``/``c``/``g`` lines until stdin ends (thread)."""
        try:
            for line in stdin:
                kind, _, value = line.rstrip(b"\n").partition(b" ")
                with self._cond:
                    if kind == b"w":
                        self.confirmed = max(self.confirmed, int(value))
                    elif kind == b"c":
                        self.final = self.confirmed = int(value)
                    elif kind == b"g":
                        self.wanted = True
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def wait_wanted(self) -> None:
        """Block until the set's GO arrived (raises _Abandoned if the follower is stopped)."""
        with self._cond:
            while not self.wanted:
                if self.ended:
                    raise _Abandoned
                self._cond.wait()

    def available(self, want: int) -> int:
        """Block until ``want`` bytes are confirmed or the file is complete; the bytes usable."""
        with self._cond:
            while self.confirmed < want and self.final is None:
                if self.ended:
                    raise _Abandoned
                self._cond.wait()
            return self.confirmed


class _FollowStream(io.RawIOBase):
    """The growing file as a seekable binary stream: reads block until the bytes are confirmed
    and are full (short only at the end), as a regular file's are, so the scan sees the same
    chunks as when it reads the finished file."""

    def __init__(self, fd: int, feed: _Feed, report: Any):
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

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        return read_full(self.readinto, size)



def _digest(fd: int, feed: _Feed, hashers: list[Any], done: dict[str, int]) -> None:
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
            for h in hashers:
                h.update(view[:n])
            pos += n
    except _Abandoned:
        return
    done["size"] = pos


def _peak_rss_kb() -> int:
    """This process's peak resident memory in KiB (0 if unknown)."""
    # VmHWM, not ru_maxrss: Linux carries the spawning process's peak over exec into the latter
    return _proc_kb("/proc/self/status", b"VmHWM:")


def _pss_kb() -> int:
    """This process's proportional set size in KiB (shared pages split among their users)."""
    return _proc_kb("/proc/self/smaps_rollup", b"Pss:")


def _proc_kb(path: str, key: bytes) -> int:
    """The KiB figure of the ``key`` line of a /proc file (0 if unknown)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _follow(job: dict[str, Any], stdin: IO[bytes], stdout: IO[bytes]) -> int:
    import hashlib

    from fla_core.anomalies import ChannelError
    from fla_core.judge import rules_outcome, scan_outcome, validate_outcome
    from fla_core.mandates import MandateBook
    from fla_sim.judging import limit_memory
    from fla_sim.store import RegistryReader

    def report(position: int) -> None:
        _write_frame(stdout, ("progress", position))

    report(0)  # started: the imports are done
    plugins = job["recipe"].build()  # the simulator's manager, as it was built there
    if _plugin_names(plugins) != job["plugins"]:
        _write_frame(stdout, ("failed", "this process loads other plugins than the simulator"))
        return 1
    # as a judge worker: a set that needs more fails here (its outcome unusable), then in a
    # judge worker, which answers it ACRF-999
    limit_memory(job.get("memory", 0))
    role = job["role"]
    feed = _Feed()
    threading.Thread(target=feed.listen, args=(stdin,), daemon=True).start()
    hashers = [hashlib.new(name) for name in job["algorithms"]]
    hashed: dict[str, int] = {}
    digest = None
    if role == "validate":
        # Only the rules half runs during the upload: it is the longer one (the validation
        # keeps up with xmllint since it builds no tree), and every process reading along
        # slows the upload itself (1 GB here: 2.3-3.3 s with no follower, ~4.8 s with two).
        try:
            feed.wait_wanted()
        except _Abandoned:
            return 3
    if role != "rules":  # the validating process also computes the digests
        digest = threading.Thread(target=_digest, args=(job["fd"], feed, hashers, hashed),
                                  daemon=True)
        digest.start()
    # typeshed does not see a RawIOBase as an IO[bytes]; the scans use it as one.
    stream = cast(IO[bytes], _FollowStream(job["fd"], feed, report))
    common = {"channel": job["channel"], "settings": job["settings"], "plugins": plugins}
    try:
        if role == "validate":
            outcome: Any = validate_outcome(job["go"], stream, **common)
        else:
            context = {"today": job["today"],
                       "registry": RegistryReader(job["journal"]).registry(*job["registry"]),
                       "mandates": MandateBook(job["mandates"])}
            run = rules_outcome if role == "rules" else scan_outcome
            outcome = run(job["go"], stream, **common, **context)
    except _Abandoned:
        return 3
    if digest is not None:
        digest.join()
        if hashed.get("size") != feed.final:
            return 3  # abandoned while hashing
    if outcome is None:
        _write_frame(stdout, ("failed", "no plugin for the application"))
        return 1
    encoded = ("error" if isinstance(outcome, ChannelError) else "ok", outcome)
    digests = {name: h.digest() for name, h in zip(job["algorithms"], hashers, strict=True)}
    _write_frame(stdout, ("result", {"outcome": encoded, "digests": digests,
                                     "size": hashed.get("size"), "peak_rss_kb": _peak_rss_kb(),
                                     "pss_kb": _pss_kb()}))
    return 0


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


class _Forked:
    """A follower forked from the simulator's fork server (``fla_sim.judging``), which has
    the judge preloaded: no interpreter start-up and imports per follower (~0.9 s), and the
    preloaded pages shared with the judge workers instead of copied. The subset of
    ``subprocess.Popen`` the Prescanner uses: ``stdin``, ``stdout``, ``pid``, ``poll``,
    ``wait``, ``kill``, ``send_signal``."""

    def __init__(self, fd: int):
        from fla_sim.judging import _context, _main_not_reimported

        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._proc = _context().Process(
                target=_forked_main, args=(_PassFd(in_r), _PassFd(out_w), _PassFd(fd)),
                daemon=True, name="fla-sim prescan")
            with _main_not_reimported():
                self._proc.start()
        except BaseException:
            for end in (in_r, in_w, out_r, out_w):
                os.close(end)
            raise
        os.close(in_r)
        os.close(out_w)
        self.stdin = os.fdopen(in_w, "wb")
        self.stdout = os.fdopen(out_r, "rb")
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


def _forked_main(stdin_fd: int, stdout_fd: int, upload_fd: int) -> None:
    """Entry point of a follower forked from the fork server."""
    from fla_sim.judging import die_with_parent

    die_with_parent()
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stdout = os.fdopen(stdout_fd, "wb")
    code = _run(os.fdopen(stdin_fd, "rb"), stdout, upload_fd)
    with contextlib.suppress(OSError):
        stdout.flush()
    os._exit(code)  # as main(): never wait for the stdin listener thread


def main() -> int:
    """Entry point of a follower process (``python -m fla_sim.prescan``)."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    return _run(sys.stdin.buffer, sys.stdout.buffer, None)


def _run(stdin: IO[bytes], stdout: IO[bytes], upload_fd: int | None) -> int:
    """Read the job, follow the upload, write the result; the process's exit code."""
    job = _read_frame(stdin)
    if job is None:
        return 3
    if upload_fd is not None:  # handed over under another number than the simulator's
        job["fd"] = upload_fd
    try:
        return _follow(job, stdin, stdout)
    except BrokenPipeError:
        return 3  # the simulator went away
    except Exception as exc:  # reported, so the simulator logs it and reads the file itself
        with contextlib.suppress(OSError):
            _write_frame(stdout, ("failed", f"{type(exc).__name__}: {exc}"))
        return 2


if __name__ == "__main__":
    code = main()
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    # not sys.exit: the stdin listener thread may be blocked in a read, which would make the
    # interpreter's shutdown abort on the stdin buffer's lock
    os._exit(code)
