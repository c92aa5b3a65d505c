"""Validating a big FI while it is uploaded: the judge's read overlapped with the upload.

During a big upload the simulator process is busy with SSH (one core, one GIL); at the GO the
judge would then read the FI twice (the digest for P9, the scan for P10-P16). Here a *follower*
process, on the other core, reads the temporary file as it grows and computes both: the SHA-256
digest and :func:`fla_core.scanning.scan_outcome` (file reference, declaration verdicts, registry
changes, or the ChannelError of P10-P15). At the GO, :meth:`Prescanner.result_for` hands that to
``judge_set`` as a :class:`fla_sim.prescan_messages.PrescanResult` (the judge's
``Precomputed``), which still runs P4-P9 first.

Pieces:

* the SFTP server (``fla_sim.server``) tracks the contiguous prefix of each FI upload and calls
  :meth:`Prescanner.start` once it reaches ``[server] prescan_min_bytes``, then
  :meth:`Prescanner.confirm` every few MiB, :meth:`Prescanner.closed` at CLOSE or
  :meth:`Prescanner.abort` (disconnect, quota, rewrite of earlier bytes);
* the follower is a process forked from the simulator's fork server (``fla_sim.judging``:
  never from the simulator itself, which holds threads and a SQLite connection; the judge is
  preloaded there, so a follower starts in milliseconds and shares those pages). It is handed
  the upload's file descriptor (the server renames the file at CLOSE, the inode stays) and
  reads only bytes the server confirmed written (:mod:`fla_sim.prescan_process` starts it,
  :mod:`fla_sim.prescan_follower` is what it runs); registry lookups go through its own
  read-only connection to the journal (WAL);
* :meth:`Prescanner.result_for` (a judge thread) uses a result only when it is provably about
  the same bytes and context, else returns None and the judge reads the file as before.

The messages each way are the typed ones of :mod:`fla_sim.prescan_messages`, over one
``multiprocessing.connection`` pipe per direction.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fla_core.names import stem_of
from fla_sim.prescan_follower import plugin_names
from fla_sim.prescan_messages import (
    Closed,
    Confirmed,
    Failed,
    Job,
    PrescanResult,
    Progress,
    Result,
    ToFollower,
    Wanted,
)
from fla_sim.prescan_process import Forked

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fla_core.names import FileName
    from fla_sim.processor import Processor

log = logging.getLogger("fla_sim.prescan")

STEP = 4 << 20  # the server confirms progress to a follower every STEP bytes
ALGORITHMS = ("sha256",)  # what FSs use in practice; another algorithm makes P9 read the FI


@dataclass(eq=False)
class _Process:
    """One process of a follower and what it sent back."""

    role: str  # "validate" + "rules" (the built-in FLA application), else "full"
    proc: Forked
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
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
    outbox: queue.SimpleQueue[ToFollower | None] = field(default_factory=queue.SimpleQueue)
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
                procs.append(_Process(role, Forked(fd)))
                self.records.add(procs[-1].proc.pid)
        except (OSError, ValueError) as exc:
            log.warning("%s/%s: cannot start a pre-scan process (%s)", directory, name, exc)
            for p in procs:
                p.proc.kill()
                p.proc.wait()
                self.records.remove(p.proc.pid)
            return None
        follower = Follower(key=(user, directory, name), procs=procs, **follower_args)
        jobs = [replace(job, role=p.role) for p in procs]
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
        follower.outbox.put(Confirmed(upto))

    def closed(self, follower: Follower, st: os.stat_result) -> None:
        """The upload is complete (``st``: its fstat at CLOSE) and has its real name."""
        follower.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        follower.outbox.put(Closed(st.st_size))
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
        follower.outbox.put(Wanted())
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
            results = [p.result for p in follower.procs if p.result is not None]
            peak = max(r.peak_rss_kb for r in results)
            self.stats["follower_peak_rss_kb"] = max(self.stats["follower_peak_rss_kb"], peak)
            log.info("%s: pre-scan used (followers' peak RSS %s MB; at the end PSS %s MB)",
                     fi.name, " + ".join(f"{r.peak_rss_kb / 1024:.0f}" for r in results),
                     " + ".join(f"{r.pss_kb / 1024:.0f}" for r in results))
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
            if p is not first and first.result is not None and first.result.error:
                break
            while not p.done.wait(0.5):
                now = time.monotonic()
                if now - follower.progress_at > self.stall_timeout:
                    return f"the pre-scan made no progress for {self.stall_timeout:.0f} s"
                if now - start > self.wait_timeout:
                    return f"the pre-scan took more than {self.wait_timeout:.0f} s"
            if p.result is None:
                return p.failure or f"the pre-scan ({p.role}) ended without a result"
        assert first.result is not None
        if follower.identity is None or first.result.size != follower.identity[1]:
            return "the pre-scan read another number of bytes than were uploaded"
        return None

    @staticmethod
    def _decode(fi_name: str, follower: Follower) -> PrescanResult | None:
        """The PrescanResult of the follower's results; None if its halves do not fit."""
        from fla_core.scanning import split_outcome

        first = follower.procs[0].result
        assert first is not None
        outcome: Any = first.outcome  # a ChannelError pickles by its fields
        if follower.procs[0].role == "validate":
            rules = follower.procs[1].result
            outcome = split_outcome(outcome, rules.outcome if rules else None,
                                    max_declarations=follower.max_declarations)
            if outcome is None:
                return None
        return PrescanResult(fi_name=fi_name, digests=first.digests, outcome=outcome)

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
        follower.outbox.put(None)  # ends its inbox: it stops at its next read
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

    def _feed(self, follower: Follower, jobs: list[Job]) -> None:
        """Send each process its job, then the outbox to every process (blocking sends stay
        off the event loop); a process that ended is skipped."""
        conns = [p.proc.to_follower for p in follower.procs]
        open_conns = []
        for conn, job in zip(conns, jobs, strict=True):
            with contextlib.suppress(OSError, ValueError):
                conn.send(job)
                open_conns.append(conn)
        while (message := follower.outbox.get()) is not None:
            for conn in list(open_conns):
                try:
                    conn.send(message)
                except (OSError, ValueError):  # it ended: its harvest thread notices
                    open_conns.remove(conn)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def _harvest(self, follower: Follower, p: _Process) -> None:
        """Take one process's messages until it ends, then reap it."""
        conn = p.proc.from_follower
        try:
            while True:
                try:
                    message = conn.recv()
                except EOFError:
                    break
                if isinstance(message, Progress):
                    follower.progress_at = time.monotonic()
                elif isinstance(message, Result):
                    p.result = message
                elif isinstance(message, Failed):
                    p.failure = f"the pre-scan ({p.role}) failed: {message.why}"
                else:
                    raise TypeError(f"unexpected message {type(message).__name__}")
        except Exception as exc:  # garbled output: no result, the judge reads the file
            p.result = None
            p.failure = f"unreadable pre-scan output ({type(exc).__name__})"
        finally:
            conn.close()
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
             fd: int) -> tuple[Job, tuple[str, ...], dict[str, Any]]:
        """The job of the upload's followers, their roles and what the manager keeps of them;
        raises _NotEligible when this FI is not pre-scanned."""
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

        # the built-in FLA reader can be split in two halves (fla_core.scanning.rules_outcome)
        roles = ("validate", "rules") if app.scan is fla.scan else ("full",)
        env = _env_of(directory)
        profile = ChannelProfile(user=channel.user, sender=channel.sender,
                                 quality=channel.quality, company_id=channel.company,
                                 applications=frozenset(channel.applications))
        with self._lock:
            config_gen = self._config_gen
        # read under the journal lock: a registry change being committed is waited for
        registry_gen = processor.journal.registry_generation(channel.sender, env)
        job = Job(role=roles[0], fd=fd, go=fi, channel=profile, settings=settings,
                  mandates=list(processor.config.mandates), today=today,
                  journal=str(processor.journal.path), registry=(channel.sender, env),
                  plugins=plugin_names(processor.plugins), recipe=processor.plugins.recipe,
                  algorithms=ALGORITHMS,
                  memory=processor.config.judge_memory_mb << 20)  # as a judge worker's
        return job, roles, {"today": today, "config_gen": config_gen,
                            "registry_key": (channel.sender, env),
                            "registry_gen": registry_gen,
                            "max_declarations": settings.max_declarations}


class _NotEligible(Exception):
    """Why an upload is not pre-scanned (logged at DEBUG)."""
