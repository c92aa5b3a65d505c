"""The simulator's state machine (spec 4.6, 4.8, 5, 9; design 6).

Life of an event:

1. ``on_file_closed`` journals the file; a GO becomes an event queued on its channel (sets of a
   channel are processed one at a time, in arrival order, after ``answer_delay_ms``); a TD is
   handled at once (spec 5.5).
2. A GO is judged (P1-P3 here, P4-P16 by ``fla_core.judge.judge_set`` in a thread). The outcome
   -- consumed set key, answer names and bytes, tickets, registry updates -- is committed in ONE
   journal transaction ("planned"). Nothing is on disk yet.
3. The planned answers are written (FO, FS, GO; ACRF before NOTI), each marked written in the
   journal, then the set's files are archived and the event is done.

After a crash, ``start()`` re-runs events not done: a pending one is judged again (nothing of it
was committed), a planned one only writes what is not marked written; ``write_answer`` keeps any
file already complete. So every GO is answered exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fla_core.anomalies import ChannelError
from fla_core.model import Environment
from fla_core.names import prefix_of, stem_of, stem_set_key
from fla_core.plugins import FlaPlugins, get_plugins
from fla_core.responses import render_acrf, render_noti
from fla_sim.answers import write_answer
from fla_sim.config import SimulatorConfig, SimulatorHome
from fla_sim.events import AnswerWritten, FileReceived
from fla_sim.faults import FaultInjector
from fla_sim.hooks import SimHooks
from fla_sim.judging import JudgeBudgetSpent, JudgingStopped
from fla_sim.store import AnswerRow, EventRow, Journal, SetRow

log = logging.getLogger("fla_sim.processor")

Clock = Callable[[], datetime]
# Test hook: called at named points of processing (crash tests kill the process there).
Checkpoint = Callable[[str], None]

POSITIVE = "ACRF-000"
STOP_GRACE_S = 2.0  # how long a stop waits for sets being judged before giving them up
# set states in which an FI or FS arriving is late: its GO was closed already (spec 5.1)
_AFTER_GO = frozenset({"QUEUED", "PROCESSING", "ACCEPTED", "REJECTED", "NOTIFIED"})
_N1_N4_CODES = frozenset({"129", "107", "131", "132"})


@dataclass(frozen=True)
class PlannedAnswer:
    """One answer decided by the state machine, before it gets its number and bytes."""

    kind: str  # ACRF or NOTI
    trigger: str  # the file name the answer ties back to (spec 4.8)
    error: str | None = None  # 3-digit code of a negative ACRF
    detail: str | None = None
    next_state: str | None = None  # set state once this answer is written
    description: str | None = None  # the ACRF's ErrorDescription; None: the catalogue's text


class Processor:
    """Turns closed uploads into answers, exactly once, following spec section 5."""

    def __init__(self, home: SimulatorHome, config: SimulatorConfig, journal: Journal, *,
                 clock: Clock | None = None, plugins: FlaPlugins | None = None,
                 faults: FaultInjector | None = None, checkpoint: Checkpoint | None = None):
        self.home = home
        self.config = config
        self.settings = config.settings
        self.journal = journal
        # the journal is opened before the configuration is read (fla_sim.api): align it here
        journal.set_durability(config.durability)
        self.tz = ZoneInfo(self.settings.timezone)
        self.clock: Clock = clock or (lambda: datetime.now(self.tz))
        self.plugins = plugins if plugins is not None else get_plugins()
        self.hooks = SimHooks(self.plugins)  # declares the simulator's hooks, checks plugins
        self.faults = faults if faults is not None else FaultInjector.of(config.faults)
        self.checkpoint = checkpoint or (lambda point: None)
        self._roots: dict[str, Path] = {}
        # held while files are claimed for a set and while the server puts a closed upload
        # under its name: a claimed file is never replaced (see replacing())
        self._claims = threading.Lock()
        # per channel: events waiting (id, due time) and the task running them, if any
        self._queues: dict[str, collections.deque[tuple[int, float]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._pausing: set[asyncio.Task[Any]] = set()  # workers waiting for an event's due time
        self._stopping = False
        self._busy = 0
        self._idle: asyncio.Condition | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None  # start-up writing of stray answers
        self._started = False
        self._signer: Any = None
        self._trust: Any = None
        self._mandates: Any = None
        # per channel user: the profile with its certificates read once (not per set)
        self._profiles: dict[str, Any] = {}
        self._archive_dirs: set[str] = set()
        # (user, directory, stem) -> names of the FI/FS files a set was judged with, from the
        # moment it is taken (PROCESSING) to its clean-up: tells a late file's fate exactly
        self._taken: dict[tuple[str, str, str], frozenset[str]] = {}
        # fla_sim.prescan.Prescanner when big FIs are validated while uploaded (set by api)
        self.prescanner: Any = None
        # judge worker processes load the entry-point plugins: only when the caller gave none
        # a worker process builds the same manager from its recipe; plugin objects a caller
        # registered cannot travel: then sets are judged in this process
        self._pool_allowed = self.plugins.recipe is not None
        # hooks implemented by plugins might block: their steps stay off the event loop
        self._receive_hooked = self.hooks.watches_uploads()
        self._answer_hooked = self.hooks.watches_answers()
        self._pool: Any = None

    # --- clock and paths ------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator clock in the simulator time zone (spec: every date is its local date)."""
        at = self.clock()
        if at.tzinfo is None:
            raise ValueError("the simulator clock must return an aware datetime")
        return at.astimezone(self.tz)

    def root(self, user: str) -> Path:
        if user not in self._roots:
            self._roots[user] = self.home.channel_root(user)
        return self._roots[user]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover (spec 5.9: re-process what a crash interrupted), then start the sweeper."""
        if self._started:
            return
        self._started = True
        self._idle = asyncio.Condition()
        # every planned answer not on disk is written, whatever its event's state: answers of
        # a sweep (no event), and any whose event was closed without it (never lost)
        events = self.journal.events(("pending", "planned"))
        open_events = {e.id for e in events}
        stray = [a for a in self.journal.answers(written=False)
                 if a.event_id not in open_events]
        if stray:  # in the background: a disk still full must not hold up the start
            await self._begin()
            self._recovery = asyncio.create_task(self._write_then_end(stray))
        await asyncio.to_thread(self._archive_leftovers)
        for event in events:
            if event.kind == "TD" and event.state == "pending":
                await self._take_td(event)
            else:
                self._enqueue(event, delay=0.0)
        self.journal.checkpoint_in_background()
        pool = self._judge_pool()
        if pool is not None:
            pool.warm_up()
        interval = max(0.2, min(30.0, self.settings.orphan_timeout_s / 10))
        self._sweeper = asyncio.create_task(self._sweep_loop(interval))

    async def stop(self) -> None:
        """Stop the workers; work already under way finishes (never half an answer)."""
        self._stopping = True  # workers end after their current event
        sweeper = [t for t in (self._sweeper, self._recovery) if t is not None]
        for task in [*self._pausing, *sweeper]:
            task.cancel()
        running = [*self._workers.values(), *sweeper]
        if running:
            # sets being judged get a moment to finish; one that may run for its whole budget
            # is given up (judged again at the next start: judging decides nothing on its own)
            _done, late = await asyncio.wait(running, timeout=STOP_GRACE_S)
            if late and self._pool is not None:
                given_up = self._pool.interrupt()
                if given_up:
                    log.warning("stopping: %d set(s) still being judged are judged again at "
                                "the next start", given_up)
            await asyncio.gather(*running, return_exceptions=True)
        self._recovery = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        await asyncio.to_thread(self.journal.stop_background_checkpoints)
        self._workers.clear()
        # queued events stay pending in the journal: the next start() runs them
        self._busy -= sum(len(q) for q in self._queues.values())
        self._queues.clear()
        self._sweeper = None
        self._started = self._stopping = False

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued event is processed and its answers written."""
        assert self._idle is not None, "Processor.start() was not awaited"
        idle = self._idle

        async def wait() -> None:
            async with idle:
                await idle.wait_for(lambda: self._busy == 0)

        await asyncio.wait_for(wait(), timeout)

    async def _write_then_end(self, answers: list[AnswerRow]) -> None:
        try:
            await self._write_answers(answers)
        finally:
            await self._end()

    async def _track(self, awaitable: Any) -> Any:
        await self._begin()
        try:
            return await awaitable
        finally:
            await self._end()

    async def _begin(self) -> None:
        self._busy += 1

    async def _end(self) -> None:
        self._busy -= 1
        if self._idle is not None:
            async with self._idle:
                self._idle.notify_all()

    # --- the hand-off from the server ------------------------------------------------------------

    @contextlib.contextmanager
    def replacing(self, user: str, directory: str, name: str) -> Generator[bool, None, None]:
        """Held by the server while a closed upload takes its name; yields False when it is
        an FI or FS of a set whose GO was closed and that is not archived yet: then the file
        must keep its bytes, the ones its signature, size, scan and archive are about. (A GO
        or TD sent again is a new event with its own answer: its bytes mean nothing.)"""
        with self._claims:
            yield not (name.startswith(("FI.", "FS."))
                       and self.journal.is_claimed(user, directory, name))

    async def on_file_closed(self, user: str, directory: str, name: str, size: int) -> None:
        """A complete upload is visible under its real name (called by fla_sim.server)."""
        channel = self.config.channel(user)
        if channel is None:
            log.error("file %s/%s closed by unknown channel %r: ignored", directory, name, user)
            return
        path = self.root(user) / directory / name
        forced = await self._upload_fault(name, path)
        now = self.now()
        event = FileReceived(user=user, directory=directory, name=name, size=size, path=path)
        ev = await self._quick(self._receive, event, now, forced, may_block=self._receive_hooked)
        if ev is None:  # FI, FS or any other file: stored, waits for its GO or the sweep
            return
        self.checkpoint("event-journaled")
        if ev.kind == "TD":
            await self._take_td(ev)
        else:
            self._enqueue(ev, delay=self.settings.answer_delay_ms / 1000)

    async def _upload_fault(self, name: str, path: Path) -> str | None:
        """Apply an injected ``upload`` fault; returns a forced code (``force-anomaly``)."""
        import asyncssh

        fault = self.faults.take("upload", name)
        if fault is None:
            return None
        if fault.action == "delay":
            await asyncio.sleep(fault.delay_ms / 1000)
        elif fault.action in ("drop-connection", "disk-full"):
            path.unlink(missing_ok=True)  # the upload never completed: nothing visible
            if fault.action == "disk-full":
                raise asyncssh.SFTPFailure("No space left on device (injected fault)")
            raise asyncssh.SFTPConnectionLost("connection dropped (injected fault)")
        elif fault.action == "force-anomaly":
            return fault.code or "312"
        return None

    def _receive(self, event: FileReceived, now: datetime, forced: str | None) -> EventRow | None:
        """The plugin hook, then the journal: one worker-thread hop per closed upload."""
        veto = self._received_hook(event) or forced
        return self._journal_close(event.user, event.directory, event.name, event.size, now,
                                   veto)

    def _received_hook(self, event: FileReceived) -> str | None:
        try:
            code = self.hooks.file_received(event)
        except Exception:  # a broken plugin is logged; the upload itself is not at fault
            log.exception("plugin failed in fla_sim_file_received for %s", event.name)
            return None
        if code is not None and not (len(code) == 3 and code.isdigit()):
            log.error("plugin veto %r for %s is not a 3-digit code; ignored", code, event.name)
            return None
        return code

    def _journal_close(self, user: str, directory: str, name: str, size: int, now: datetime,
                       veto: str | None) -> EventRow | None:
        """Journal a closed file in one transaction; a GO/TD also becomes an event and, when
        its name passes P1, claims the files of its stem (spec 5.6: never swept)."""
        kind = prefix_of(name)
        with self._claims, self.journal.transaction():
            self.journal.record_file(user, directory, name, size, now, veto=veto)
            if kind not in ("GO", "TD"):
                stem = _stem_of(name, now.date())
                if kind in ("FI", "FS") and stem is not None:
                    row = self.journal.get_set(user, directory, stem)
                    if row is None:
                        self.journal.touch_set(user, directory, stem, stem_set_key(stem), now)
                    elif row.go_name is not None and row.state in _AFTER_GO:
                        self._late_file(row, name, now)
                return None
            event = self.journal.add_event(user, directory, name, kind, now)
            try:
                fn = self._parse(user, directory, name, now)
            except ChannelError:
                self.journal.claim_files(user, directory, [name])  # answered via its event
                return event
            prefixes = (f"FI.{fn.stem}.", f"FS.{fn.stem}.", f"GO.{fn.stem}.")
            names = {f.name for f in self.journal.files(user, directory)
                     if f.name.startswith(prefixes)}
            self.journal.claim_files(user, directory, sorted(names | {name}))
            if kind == "GO":
                self.journal.update_set(user, directory, fn.stem, fn.set_key, "QUEUED", now,
                                        go_name=name, only_from=("RECEIVING",))
            return event

    def _parse(self, user: str, directory: str, name: str, now: datetime) -> Any:
        """Name checks N1-N9 (spec 4.5) in the channel's context."""
        from fla_core.names import ChannelNameContext, NameRules, parse_upload

        channel = self.config.channel(user)
        if channel is None:  # removed while its set waited: answered 999 (see _plan_go_async)
            raise ChannelRemoved(f"the channel {user!r} was removed from the configuration "
                                 "while this set waited")
        rules = NameRules.of(self.settings, now.date())
        return parse_upload(name, rules, ChannelNameContext.of(channel, directory))

    async def _take_td(self, event: EventRow) -> None:
        """Handle a TD at once (spec 5.5); a refused one's ACRF is written like every answer,
        by its channel's worker."""
        if await self._track(asyncio.to_thread(self._handle_td, event)):
            self._enqueue(event, delay=0.0)

    # --- the per-channel queue -------------------------------------------------------------

    def _enqueue(self, event: EventRow, *, delay: float) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(event.channel, collections.deque())
        self._busy += 1  # released by the worker once the event is done
        queue.append((event.id, loop.time() + delay))
        if event.channel not in self._workers and not self._stopping:
            self._workers[event.channel] = loop.create_task(self._worker(event.channel, queue))

    async def _worker(self, channel: str, queue: collections.deque[tuple[int, float]]) -> None:
        """Run a channel's events one at a time, in arrival order, and end when none is left.

        The worker runs the events itself, without a queue to wait on or a task per event:
        under load each hand-over between tasks waits for a whole turn of the event loop
        (every SFTP session's packets), and a GO crossed two of them before it was judged.
        """
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        try:
            while queue and not self._stopping:
                eid, due = queue[0]
                wait = due - loop.time()
                if wait > 0:  # answer_delay_ms; stop() cancels this wait, never an event
                    self._pausing.add(me)
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        self._pausing.discard(me)
                    continue
                queue.popleft()
                try:
                    await self._run_event(eid)
                except JudgingStopped:
                    log.info("event %d: judging interrupted by the stop; judged again at the "
                             "next start", eid)
                except Exception:
                    log.exception("event %d failed", eid)
                finally:
                    await self._end()
        finally:
            if self._workers.get(channel) is me:
                del self._workers[channel]

    async def _run_event(self, eid: int) -> None:
        event = self.journal.event(eid)
        if event.state == "done":  # cancelled by a TD while queued (P3)
            return
        if event.state == "pending":
            await self._plan_go_async(event)
            self.checkpoint("answers-planned")
        # answers back to back when nothing makes them wait; False: a write failed, retried
        # below with back-off
        if self._nothing_to_wait_for() and await self._quick(
                self._write_all_now, eid, may_block=self._answer_hooked):
            return
        if await self._write_answers(self.journal.answers(written=False, event_id=eid)):
            await asyncio.to_thread(self._finish_event, eid)

    async def _quick(self, fn: Callable[..., Any], *args: Any, may_block: bool = False) -> Any:
        """Run short journal-and-file work: on the event loop when nothing in it can block,
        else in a worker thread. It can block with ``durability = "power"`` (fsync), or when
        the caller says so (``may_block``: a plugin hooks this step, or a fault sleeps in it).

        A worker-thread hop costs more than the work (a few hundred microseconds) and makes the
        SFTP sessions wait for the GIL behind it; with fsync the work may take milliseconds.
        """
        if self.config.durability == "process" and not may_block:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _nothing_to_wait_for(self) -> bool:
        """No NOTI delay and no answer-delay fault: answers can be written back to back."""
        if self.settings.noti_delay_ms > 0:
            return False
        return not any(f.when == "answer" and f.action == "delay" for f in self.faults.faults)

    def _write_all_now(self, eid: int) -> bool:
        """Write the event's planned answers and clean up; False when a write failed (the
        caller retries the answers not yet written)."""
        answers = self.journal.answers(written=False, event_id=eid)
        for n, answer in enumerate(answers, 1):
            try:
                # the last answer's journal entry also closes the event: one commit less
                self._write_one(answer, finish=eid if n == len(answers) else None)
            except OSError as exc:
                log.error("writing answer %s failed (%s); retrying", answer.name, exc)
                return False
        if not answers:
            self._finish_event(eid)
        return True

    # --- GO pipeline ---------------------------------------------------------------------------

    async def _plan_go_async(self, event: EventRow) -> None:
        """Judge a GO and commit its outcome (spec 5.3, 5.9); the judging runs off the event
        loop (a worker process or thread)."""
        # an injected processing delay sleeps in _veto: only this channel may wait
        delayed = any(f.when == "process" and f.action == "delay" for f in self.faults.faults)
        go = None
        try:
            prepared = await self._quick(self._plan_go_start, event, may_block=delayed)
            if prepared is not None:
                go, files, now = prepared
                verdict = await self._judge_async(event.channel, event.directory, go, files,
                                                  now)
                # the answers carry the time of the verdict, not of the start (spec 9)
                await self._quick(self._plan_go_finish, event, go, verdict, self.now())
        except JudgingStopped:
            raise  # nothing decided: the set is judged again at the next start
        except (ChannelRemoved, JudgeBudgetSpent) as exc:
            log.error("%s: %s/%s answered ACRF-999: %s", event.channel, event.directory,
                      event.name, exc)
            await self._quick(self._plan_failure, event, go, exc)
        except Exception as exc:  # a bug, never the sender's fault: answered, not left hanging
            log.exception("%s: %s/%s could not be judged; answered ACRF-999", event.channel,
                          event.directory, event.name)
            await self._quick(self._plan_failure, event, go, exc)

    def _plan_failure(self, event: EventRow, go: Any, exc: Exception) -> None:
        """Commit ACRF-999 for a GO whose judging raised, unless its answers were planned."""
        if self.journal.event(event.id).state != "pending":
            return  # the outcome was committed before the failure: it stands
        detail = (str(exc) if isinstance(exc, (ChannelRemoved, JudgeBudgetSpent)) else
                  f"internal failure ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        # a set over its budget is the sender's content, not our failure: say so in the answer
        description = (f"The channel could not process the set: {exc}"
                       if isinstance(exc, JudgeBudgetSpent) else None)
        self._commit(event, go, [PlannedAnswer("ACRF", event.name, "999", detail, "REJECTED",
                                               description)], self.now())

    def _plan_go_start(self, event: EventRow) -> tuple[Any, list[Path], datetime] | None:
        """P1-P3 and vetoes; commits the answer itself and returns None when they decide,
        else what the judge needs. The set key is consumed (and the set PROCESSING) in one
        transaction first: a crash while judging re-judges the set at start-up."""
        user, directory, name = event.channel, event.directory, event.name
        now = self.now()
        try:
            go = self._parse(user, directory, name, now)
        except ChannelError as exc:  # P1: no set; the GO alone is archived
            self._commit(event, None, [PlannedAnswer("ACRF", name, exc.code, exc.detail)], now)
            return None
        # the claims lock first, then the journal's, in that order everywhere (no deadlock)
        with self._claims, self.journal.transaction():
            if self.journal.event(event.id).state != "pending":
                return None  # P3: a TD cancelled the queued set (and closed this event)
            row = self.journal.get_set(user, directory, go.stem)
            resumed = row is not None and row.state == "PROCESSING" and row.go_name == name
            if not resumed and self.journal.is_consumed(user, go.set_key):  # P2
                state = "REJECTED" if row is None or row.state in ("RECEIVING", "QUEUED") \
                    else None
                if row is None:
                    self.journal.update_set(user, directory, go.stem, go.set_key, "QUEUED", now,
                                            go_name=name)
                self._commit(event, go, [PlannedAnswer("ACRF", name, "133", None, state)], now)
                return None
            self.journal.consume(user, go.set_key, now)
            self.journal.update_set(user, directory, go.stem, go.set_key, "PROCESSING", now,
                                    go_name=name)
            # listed inside the transaction: a file journaled after it was not in the listing
            files = self._set_files(user, directory, go.stem)
            # a file that arrived after the GO is judged too: it is claimed now as well
            self.journal.claim_files(user, directory, [p.name for p in files])
            self._taken[(user, directory, go.stem)] = frozenset(p.name for p in files)
        code = self._veto(user, directory, [name, *(p.name for p in files)])
        if code is not None:
            self._commit(event, go, [PlannedAnswer("ACRF", name, code, None, "REJECTED")], now)
            return None
        return go, files, now

    def _plan_go_finish(self, event: EventRow, go: Any, verdict: Any, now: datetime) -> None:
        """Commit the judge's verdict: a negative ACRF, or a positive ACRF and its NOTI."""
        name = event.name
        if verdict.error is not None:
            err = verdict.error
            self._commit(event, go, [PlannedAnswer("ACRF", name, err.code, err.detail,
                                                   "REJECTED")], now)
            return
        has_noti = bool(getattr(verdict, "has_noti", bool(verdict.declarations)))
        answers = [PlannedAnswer("ACRF", name, None, None, "ACCEPTED")]
        if has_noti:
            answers.append(PlannedAnswer("NOTI", name, None, None, "NOTIFIED"))
        self._commit(event, go, answers, now, verdict=verdict if has_noti else None)

    async def _judge_async(self, user: str, directory: str, go: Any, files: list[Path],
                           now: datetime) -> Any:
        """P4-P16 in the judge pool when there is one, else in a worker thread.

        A set whose big FI was read while it was uploaded (fla_sim.prescan) is judged here with
        that outcome (it lives in this process, and the expensive part is done); when no usable
        outcome exists it goes to the pool like any set: only the pool can stop a set that runs
        over its budget."""
        pool = self._judge_pool()
        prescan = None
        if self._may_be_prescanned(files):
            prescan = await asyncio.to_thread(self._prescan_result, user, directory, go, files,
                                              now)
        if pool is None or prescan is not None:
            return await asyncio.to_thread(self._judge, user, directory, go, files, now, prescan)
        from fla_sim.judging import JudgeJob, JudgeWorkerError

        job = JudgeJob(user=user, directory=directory, env=_env_of(directory), go=go,
                       files=tuple(files), at=now)
        try:
            return await pool.judge(job)
        except JudgeWorkerError as exc:
            if pool.broken is not None:  # workers cannot start here: stop trying them
                self._pool_allowed = False
                self._pool = None
                await pool.aclose()
            log.error("judging %s in a worker failed (%s); judging it in this process",
                      go, str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
            return await asyncio.to_thread(self._judge, user, directory, go, files, now)

    def _may_be_prescanned(self, files: list[Path]) -> bool:
        """A big single FI may have been read while it was uploaded (fla_sim.prescan)."""
        if self.prescanner is None:
            return False
        fis = [p for p in files if p.name.startswith("FI.")]
        if len(fis) != 1:
            return False
        try:
            return fis[0].stat().st_size >= self.config.prescan_min_bytes
        except FileNotFoundError:
            return False

    def _judge_pool(self) -> Any:
        """The pool of judge processes, started on first use; None when sets are judged in
        this process (``judge_workers = 0``, or plugins given by the caller, which a worker
        process could not load)."""
        if self._pool is None and self._pool_allowed and self.config.judge_workers > 0:
            from fla_sim.judging import JudgePool

            self._pool = JudgePool(self.home, self.config, self.config.judge_workers,
                                   recipe=self.plugins.recipe)
        return self._pool

    def _late_file(self, row: SetRow, name: str, now: datetime) -> None:
        """An FI or FS closed after its set's GO (spec 5.1: the GO comes last): the verdict
        rules stay as they are (a GO is judged with the files present when it is taken); the
        sender is told in the log and in the set's events (``fla-sim status``)."""
        judged = row.state == "QUEUED" or (
            row.state == "PROCESSING"
            and name in self._taken.get((row.channel, row.directory, row.stem), ()))
        if judged:
            text = (f"{name} was closed after {row.go_name}, before the set was taken: it is "
                    "judged with the set this time; upload the GO last")
        else:
            text = (f"{name} was closed after {row.go_name} was taken (set {row.state}): the "
                    "set is judged without it, and it is not part of the answer; upload every "
                    "FI and FS first, one file at a time, and the GO last")
        self.journal.add_set_event(row.channel, row.directory, row.stem, now, "late-file",
                                   name, text)
        log.warning("%s: %s/%s", row.channel, row.directory, text)

    def _set_files(self, user: str, directory: str, stem: str) -> list[Path]:
        """FI/FS files of the stem present in the directory (P4), in ASCII order."""
        folder = self.root(user) / directory
        prefixes = (f"FI.{stem}.", f"FS.{stem}.")
        return sorted((p for p in folder.iterdir() if p.name.startswith(prefixes)
                       and p.is_file()), key=lambda p: p.name)

    def _veto(self, user: str, directory: str, names: Sequence[str]) -> str | None:
        """A code forced by a plugin veto or an injected ``force-anomaly`` fault."""
        vetoes = self.journal.vetoes(user, directory, names)
        for n in names:  # the first file's veto wins: the GO's, then FI/FS in name order
            if vetoes.get(n):
                return vetoes[n]
        fault = self.faults.take("process", names[0], ("force-anomaly", "delay"))
        if fault is not None and fault.action == "delay":
            time.sleep(fault.delay_ms / 1000)  # a worker thread: only this channel waits
        elif fault is not None:
            return fault.code or "312"
        return None

    def _judge(self, user: str, directory: str, go: Any, files: list[Path],
               now: datetime, prescan: Any = None) -> Any:
        from fla_core.judge import judge_set

        channel = self.config.channel(user)
        assert channel is not None
        env = _env_of(directory)
        return judge_set(go, files, channel=self._profile(channel), settings=self.settings,
                         trust=self._trust_store(), today=now.date(), at=now,
                         registry=self.journal.registry(channel.sender, env),
                         mandates=self._mandate_book(), plugins=self.plugins,
                         prescan=prescan)

    def _commit(self, event: EventRow | None, go: Any, planned: list[PlannedAnswer],
                now: datetime, *, verdict: Any = None, user: str | None = None,
                directory: str | None = None, stem: str | None = None) -> list[int]:
        """Number, render and journal the answers, registry updates included: one transaction."""
        user = event.channel if event is not None else user
        directory = event.directory if event is not None else directory
        assert user is not None and directory is not None
        env = _env_of(directory)
        out_dir = Environment(env).answer_dir
        stem = go.stem if go is not None else stem
        ids = []
        with self.journal.transaction():
            ticket = self.journal.next_ticket(now)
            for p in planned:
                seq = self.journal.next_answer_seq(user, f"{now:%Y%m%d}", env)
                if p.kind == "ACRF":
                    content = render_acrf(file_name=p.trigger, ticket=ticket,
                                          accepted=p.error is None, error_code=p.error,
                                          description=p.description, at=now)
                    result = POSITIVE if p.error is None else f"ACRF-{p.error}"
                    prefix = "FO"
                else:
                    content, result = self._render_noti(p.trigger, ticket, verdict, now)
                    prefix = "FO"
                    if self.settings.compress_answers:
                        content, prefix = gzip.compress(content, mtime=0), "CO"
                name = _answer_name(prefix, p.kind, f"{now:%Y%m%d}", seq, env)
                ids.append(self.journal.add_answer(
                    user, out_dir, name, p.kind, p.trigger, ticket, result, content, now,
                    event_id=event.id if event is not None else None, stem=stem,
                    next_state=p.next_state, set_directory=directory))
            if verdict is not None:  # registry effects travel with the NOTI (spec 8.4)
                channel = self.config.channel(user)
                assert channel is not None  # a set was judged for it just now
                updates = getattr(verdict, "accepted_registry", None)
                if updates is None:
                    updates = getattr(verdict, "registry_updates", {})
                self.journal.apply_registry(channel.sender, env, dict(updates))
            if event is not None:
                self.journal.set_event_state(event.id, "planned")
        log.info("%s: %s/%s: %s", user, directory, planned[0].trigger,
                 _verdict_text(planned, verdict))
        return ids

    def _render_noti(self, trigger: str, ticket: str, verdict: Any,
                     now: datetime) -> tuple[bytes, str]:
        decls = list(verdict.declarations)
        accepted = sum(1 for d in decls if d.status == "ACCEPTED")
        code = 1 if accepted == len(decls) else (0 if accepted == 0 else 2)
        content = render_noti(application=verdict.application, file_name=trigger,
                              file_reference=verdict.file_reference or "", ticket=ticket,
                              result_code=code, declarations=decls,
                              file_warnings=list(verdict.file_warnings), at=now)
        return content, str(code)

    # --- writing answers -----------------------------------------------------------------------

    async def _write_answers(self, answers: list[AnswerRow]) -> bool:
        """Write planned answers in order (the one retry policy: ``_write_retrying``); False
        when the processor stops first: what is unwritten stays planned for the next start."""
        for n, answer in enumerate(answers):
            if answer.kind == "NOTI" and n > 0 and self.settings.noti_delay_ms > 0:
                await asyncio.sleep(self.settings.noti_delay_ms / 1000)
            fault = self.faults.take("answer", answer.name, ("delay",))
            if fault is not None:
                await asyncio.sleep(fault.delay_ms / 1000)
            if not await self._write_retrying(answer):
                return False
        return True

    async def _write_retrying(self, answer: AnswerRow) -> bool:
        """Write one answer; a failed write (disk full, ...) is retried with back-off, never
        given up: False only when the processor stops meanwhile."""
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._write_one, answer)
                return True
            except OSError as exc:
                attempt += 1
                delay = retry_delay(attempt)
                if attempt & (attempt - 1) == 0:  # 1, 2, 4, 8, ...: the log stays readable
                    log.error("writing answer %s failed (%s); attempt %d, retrying every %.1f s "
                              "at most until it is written", answer.name, exc, attempt, delay)
                if self._stopping:
                    return False
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Sleep in a way stop() may cut short (it cancels the sleeping task)."""
        me = asyncio.current_task()
        assert me is not None
        self._pausing.add(me)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._pausing.discard(me)

    def _write_one(self, answer: AnswerRow, *, finish: int | None = None) -> None:
        """Write one planned answer and journal it; with ``finish`` (the event id, for its last
        answer) the event's clean-up is committed in the same transaction."""
        folder = self.root(answer.channel) / answer.directory
        now = self.now()

        def before(name: str) -> None:
            self.checkpoint(f"before-write:{name}")
            self.faults.before_answer_write(name)

        corrupt = self.faults.take("answer", answer.name, ("corrupt",)) is not None
        write_answer(folder, answer.name, answer.content, self._answer_signer(),
                     signing_time=now, before_write=before, corrupt=corrupt,
                     durable=self.config.durability == "power")
        if finish is None:
            self.journal.answer_written(answer.id, now)
        else:
            uploads = self._clean_up(finish)  # the moves: a crash before the commit redoes them
            self.checkpoint("uploads-archived")
            with self.journal.transaction():
                self.journal.answer_written(answer.id, now)
                self._clean_up_done(finish, *uploads)
        self.checkpoint(f"written:{answer.name}")
        result = answer.result_code if answer.kind == "ACRF" else f"NOTI {answer.result_code}"
        log.info("%s: answer %s/%s written: %s for %s", answer.channel, answer.directory,
                 answer.name, result, answer.trigger)
        event = AnswerWritten(user=answer.channel, directory=answer.directory, name=answer.name,
                              kind=answer.kind, trigger=answer.trigger,
                              result_code=answer.result_code)
        try:
            self.hooks.answer(event)
        except Exception:  # an observer's bug must not stop answers (or repeat this one)
            log.exception("plugin failed in fla_sim_answer for %s", answer.name)

    def _finish_event(self, eid: int) -> None:
        """Clean-up of spec 5.3 (archive the set's files), then the event is done."""
        uploads = self._clean_up(eid)
        self.checkpoint("uploads-archived")
        # one transaction: a crash before it re-runs this clean-up (moves skip missing files)
        with self.journal.transaction():
            self._clean_up_done(eid, *uploads)

    def _clean_up(self, eid: int) -> tuple[str, str, list[str]]:
        """Move the event's set files to the archive; returns what to journal as archived."""
        event = self.journal.event(eid)
        user, directory = event.channel, event.directory
        names = [event.name]
        answers = self.journal.answers(event_id=eid)
        stem = answers[0].stem if answers else None
        if stem is not None:  # passed P1: every file of the stem present now (spec 5.3)
            self._taken.pop((user, directory, stem), None)
            prefixes = (f"FI.{stem}.", f"FS.{stem}.", f"GO.{stem}.")
            names = sorted({f.name for f in self.journal.files(user, directory)
                            if f.name.startswith(prefixes)} | {event.name})
        if not self.settings.keep_uploads:
            self._move_to_archive(user, directory, names)
        return user, directory, names

    def _clean_up_done(self, eid: int, user: str, directory: str, names: list[str]) -> None:
        """Journal the clean-up (call inside a transaction): files archived, event done."""
        unwritten = self.journal.answers(written=False, event_id=eid)
        if unwritten:  # never: an event is done only once every answer of it is on disk
            raise RuntimeError(f"event {eid} cannot be done: {unwritten[0].name} is unwritten")
        if not self.settings.keep_uploads:
            self.journal.set_file_state(user, directory, names, "archived")
        self.journal.set_event_state(eid, "done")

    def _archive(self, user: str, directory: str, names: Sequence[str], state: str) -> None:
        """Move uploads out of the sender's view into the home's archive."""
        self._move_to_archive(user, directory, names)
        self.journal.set_file_state(user, directory, names, state)

    def _move_to_archive(self, user: str, directory: str, names: Sequence[str]) -> None:
        """Move the files still in the upload directory to the archive (never overwriting)."""
        # plain strings: three moves per set on the event loop, where Path objects cost more
        # than the renames themselves
        folder = os.path.join(self.root(user), directory)
        target = os.path.join(self.home.archive_dir, user, directory)
        if target not in self._archive_dirs:  # one mkdir per directory, not per set
            os.makedirs(target, exist_ok=True)
            self._archive_dirs.add(target)
        for name in names:
            src = os.path.join(folder, name)
            if not os.path.exists(src):
                continue
            dest, n = os.path.join(target, name), 1
            while os.path.exists(dest):
                n += 1
                dest = os.path.join(target, f"{name}~{n}")
            try:
                os.replace(src, dest)
            except FileNotFoundError:
                if os.path.isdir(target):
                    raise
                os.makedirs(target, exist_ok=True)  # removed while we ran: again
                os.replace(src, dest)

    # --- TD (spec 5.5) ---------------------------------------------------------------------------

    def _handle_td(self, event: EventRow) -> bool:
        """Cancel a set, or plan the ACRF of a refused TD; True when an answer is planned (its
        event then goes through the channel's queue like a GO's)."""
        user, directory, name = event.channel, event.directory, event.name
        now = self.now()
        try:
            td = self._parse(user, directory, name, now)
        except ChannelError as exc:
            self._commit(event, None, [PlannedAnswer("ACRF", name, exc.code, exc.detail)], now)
            return True
        except ChannelRemoved as exc:  # a TD is never answered when it cancels: nor here
            log.error("%s: %s/%s ignored: %s", user, directory, name, exc)
            self.journal.set_event_state(event.id, "done")
            return False
        cancelled: list[str] = []
        with self.journal.transaction():
            row = self.journal.get_set(user, directory, td.stem)
            open_set = row is None or row.state in ("RECEIVING", "QUEUED")
            if open_set and not self.journal.is_consumed(user, td.set_key):
                self.journal.consume(user, td.set_key, now)
                self.journal.update_set(user, directory, td.stem, td.set_key, "CANCELLED", now)
                prefixes = (f"FI.{td.stem}.", f"FS.{td.stem}.", f"GO.{td.stem}.")
                cancelled = [f.name for f in self.journal.files(user, directory)
                             if f.name.startswith(prefixes)]
                # the queued GO never reaches the pipeline (P3): its event is closed here
                for queued in self.journal.events(("pending",)):
                    if (queued.kind == "GO" and queued.channel == user
                            and queued.directory == directory and queued.name in cancelled):
                        self.journal.set_event_state(queued.id, "done")
            # recorded with the decision, so a crash before the move is finished at start-up
            self.journal.set_file_state(user, directory, cancelled, "cancelled")
            self.journal.set_file_state(user, directory, [name], "archived")
            self.journal.set_event_state(event.id, "done")
        # files go to the archive (never deleted: the archive is the simulator's evidence)
        self._archive(user, directory, cancelled, "cancelled")
        self._archive(user, directory, [name], "archived")
        return False

    # --- orphan sweep (spec 5.6) -----------------------------------------------------------------

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_orphans()
            except Exception:
                log.exception("orphan sweep failed")

    async def sweep_orphans(self) -> int:
        """Sweep files older than ``orphan_timeout_s`` by the clock; returns answers written."""
        await self._begin()
        try:
            planned, swept = await asyncio.to_thread(self._plan_sweep, self.now())
            answers = [a for a in self.journal.answers(written=False) if a.id in set(planned)]
            await self._write_answers(answers)
            for user, directory, names in swept:
                await asyncio.to_thread(self._archive, user, directory, names, "swept")
            return len(answers)
        finally:
            await self._end()

    def _plan_sweep(self, now: datetime) -> tuple[list[int], list[tuple[str, str, list[str]]]]:
        """Plan the sweep's answers; returns their ids and the files to archive."""
        limit = now - timedelta(seconds=self.settings.orphan_timeout_s)
        groups: dict[tuple[str, str, str], list[str]] = {}
        singles: list[tuple[str, str, str, str]] = []
        for f in self.journal.files(state="present"):
            if f.claimed or f.closed_at > limit:
                continue
            code = _n1_n4_code(f.name, now.date())
            if code is not None:
                singles.append((f.channel, f.directory, f.name, code))
            else:
                stem = stem_of(f.name) or f.name  # never None: the name passed N1-N4
                groups.setdefault((f.channel, f.directory, stem), []).append(f.name)
        ids: list[int] = []
        swept: list[tuple[str, str, list[str]]] = []
        for (user, directory, stem), names in sorted(groups.items()):
            if self.config.channel(user) is None:
                continue
            with self.journal.transaction():
                ids += self._commit(None, None, [PlannedAnswer(
                    "ACRF", min(names), "130", None, "ORPHANED")], now, user=user,
                    directory=directory, stem=stem)
                self.journal.set_file_state(user, directory, names, "swept")
            swept.append((user, directory, names))
        for user, directory, name, code in singles:
            if self.config.channel(user) is None:
                continue
            with self.journal.transaction():
                ids += self._commit(None, None, [PlannedAnswer("ACRF", name, code)], now,
                                    user=user, directory=directory, stem=None)
                self.journal.set_file_state(user, directory, [name], "swept")
            swept.append((user, directory, [name]))
        return ids, swept

    def _archive_leftovers(self) -> None:
        """At start-up: move files the journal already archived, swept or cancelled but that a
        crash left in the sender's view (before the server runs, so no upload races this)."""
        by_key: dict[tuple[str, str, str], list[str]] = {}
        for f in self.journal.files(state=None):
            if f.state == "present" or self.config.channel(f.channel) is None:
                continue
            if (self.root(f.channel) / f.directory / f.name).exists():
                by_key.setdefault((f.channel, f.directory, f.state), []).append(f.name)
        for (user, directory, state), names in by_key.items():
            self._archive(user, directory, names, state)

    # --- lazily loaded material ----------------------------------------------------------------

    def reset_material(self) -> None:
        """Forget cached trust, mandates and signer (the configuration changed)."""
        self._signer = self._trust = self._mandates = None
        self._profiles = {}
        if self.prescanner is not None:  # pre-scans under way used the old configuration
            self.prescanner.bump_config()
        if self._pool is not None:  # its workers hold the old configuration
            self._pool.close_later()
            self._pool = None

    def _answer_signer(self) -> Any:
        if self._signer is None:
            self._signer = self.home.answer_signer()
        return self._signer

    def _profile(self, channel: Any) -> Any:
        """The channel's profile; cached while the same configuration object is in use."""
        cached = self._profiles.get(channel.user)
        if cached is None or cached[0] is not channel:
            cached = self._profiles[channel.user] = (channel, channel.profile(self.home))
        return cached[1]

    def _trust_store(self) -> Any:
        if self._trust is None:
            self._trust = self.home.trust_store(self.config)
        return self._trust

    def _mandate_book(self) -> Any:
        if self._mandates is None:
            from fla_core.mandates import MandateBook

            self._mandates = MandateBook(self.config.mandates)
        return self._mandates

    # --- pre-scan (fla_sim.prescan) ------------------------------------------------------------

    def _prescan_result(self, user: str, directory: str, go: Any, files: list[Path],
                        now: datetime) -> Any:
        """The set's FI as read while it was uploaded (a ``PrescanResult``) when that is safe
        to use, else None. May block until the pre-scan ends: call it from a worker thread."""
        if self.prescanner is None:
            return None
        return self.prescanner.result_for(user, directory, go, files, now.date())


class ChannelRemoved(Exception):
    """A queued set's channel left the configuration (fla-sim channel remove, a reload)."""


def retry_delay(attempt: int) -> float:
    """Seconds before retrying a failed answer write: doubling from 40 ms, at most 2 s."""
    return min(2.0, 0.02 * 2 ** attempt)


def _verdict_text(planned: Sequence[PlannedAnswer], verdict: Any) -> str:
    """A set's verdict for the log: the ACRF code, and how many declarations the NOTI accepts."""
    parts = []
    for p in planned:
        if p.kind == "NOTI":
            decls = list(verdict.declarations)
            accepted = sum(1 for d in decls if d.status == "ACCEPTED")
            parts.append(f"NOTI, {accepted} of {len(decls)} declarations accepted")
        elif p.error is None:
            parts.append(f"{POSITIVE} (positive)")
        else:
            detail = f": {' '.join(p.detail.split())[:160]}" if p.detail else ""
            parts.append(f"ACRF-{p.error} (negative{detail})")
    return ", ".join(parts)


def _env_of(directory: str) -> str:
    env = Environment.of_dir(directory)
    if env is None:
        raise ValueError(f"{directory!r} is not a channel directory")
    return env.value


def _n1_n4_code(name: str, today: date) -> str | None:
    """The code when ``name`` fails N1-N4 (prefix, element count, APPL, SENDER), else None."""
    from fla_core.names import NameRules, parse_upload

    try:
        parse_upload(name, NameRules(today=today))
    except ChannelError as exc:
        # N1-N4 run first and only they give these codes: a later failure passed them
        return exc.code if exc.code in _N1_N4_CODES else None
    return None


def _stem_of(name: str, today: date) -> str | None:
    """``APPL.SENDER.DATE.SEQ.ENV`` of a name that passes N1-N4 (spec 5.6 grouping)."""
    if _n1_n4_code(name, today) is not None:
        return None
    return stem_of(name)


def _answer_name(prefix: str, appl: str, day: str, seq: str, env: str) -> str:
    try:
        from fla_core.names import answer_name
    except ImportError:  # names.py not installed: same format (spec 4.2 ANSWER)
        return f"{prefix}.{appl}.999999.{day}.{seq}.{env}"
    return answer_name(prefix, appl, day, seq, env)

