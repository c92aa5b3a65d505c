"""The simulator's state machine (spec 4.6, 4.8, 5, 9; design 6): the facade the API, the
server, the pre-scan and the tests use, wiring its parts and running the judge.

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

The parts, one job each: ``fla_sim.scheduler`` (per-channel queues and workers, drain, stop),
``fla_sim.pipeline`` (event and journal state -> committed planned answers),
``fla_sim.answer_writer`` (planned answers -> files, the one retry policy), ``fla_sim.sweep``
(the orphan sweep) and ``fla_sim.archive`` (processed uploads -> the archive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fla_core.plugins import FlaPlugins, get_plugins
from fla_sim.answer_writer import AnswerWriter, Checkpoint, retry_delay
from fla_sim.archive import Archive
from fla_sim.config import SimulatorConfig, SimulatorHome
from fla_sim.events import FileReceived
from fla_sim.faults import FaultInjector
from fla_sim.hooks import SimHooks
from fla_sim.judging import JudgeBudgetSpent, JudgingStopped
from fla_sim.pipeline import POSITIVE, ChannelRemoved, Clock, Pipeline, PlannedAnswer
from fla_sim.pipeline import env_of as _env_of
from fla_sim.scheduler import STOP_GRACE_S, Scheduler
from fla_sim.store import AnswerRow, EventRow, Journal
from fla_sim.sweep import OrphanSweep

# names other modules and tests import from here
__all__ = ["POSITIVE", "STOP_GRACE_S", "ChannelRemoved", "Checkpoint", "Clock", "PlannedAnswer",
           "Processor", "_env_of", "retry_delay"]

log = logging.getLogger("fla_sim.processor")


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
        self._sweeper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None  # start-up writing of stray answers
        self._started = False
        self._signer: Any = None
        self._trust: Any = None
        self._mandates: Any = None
        # per channel user: the profile with its certificates read once (not per set)
        self._profiles: dict[str, Any] = {}
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

        # the parts; checkpoint through self, so a checkpoint set later is seen
        def point(name: str) -> None:
            self.checkpoint(name)

        self.scheduler = Scheduler(config, self._run_event)
        # held while files are claimed for a set and while the server puts a closed upload
        # under its name: a claimed file is never replaced (see replacing())
        self._claims = threading.Lock()
        self.pipeline = Pipeline(config, journal, now=self.now, root=self.root,
                                 faults=self.faults, claims=self._claims)
        self.archive = Archive(home, config, journal, root=self.root,
                               release=self.pipeline.release)
        self.writer = AnswerWriter(config, journal, now=self.now, root=self.root,
                                   faults=self.faults, hooks=self.hooks,
                                   signer=self._answer_signer, archive=self.archive,
                                   scheduler=self.scheduler, checkpoint=point)
        self.sweep = OrphanSweep(config, journal, now=self.now, pipeline=self.pipeline,
                                 writer=self.writer, archive=self.archive,
                                 scheduler=self.scheduler)

    # --- clock and paths ------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator clock in the simulator time zone (spec: every date is its local date)."""
        at = self.clock()
        if at.tzinfo is None:
            raise ValueError("the simulator clock must return an aware datetime")
        return at.astimezone(self.tz)

    def root(self, user: str) -> Path:
        """The channel's chroot folder (cached)."""
        if user not in self._roots:
            self._roots[user] = self.home.channel_root(user)
        return self._roots[user]

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover (spec 5.9: re-process what a crash interrupted), then start the sweeper."""
        if self._started:
            return
        self._started = True
        self.scheduler.open()
        # every planned answer not on disk is written, whatever its event's state: answers of
        # a sweep (no event), and any whose event was closed without it (never lost)
        events = self.journal.events(("pending", "planned"))
        open_events = {e.id for e in events}
        stray = [a for a in self.journal.answers(written=False)
                 if a.event_id not in open_events]
        if stray:  # in the background: a disk still full must not hold up the start
            await self.scheduler.begin()
            self._recovery = asyncio.create_task(self._write_then_end(stray))
        await asyncio.to_thread(self.archive.leftovers)
        for event in events:
            if event.kind == "TD" and event.state == "pending":
                await self._take_td(event)
            else:
                self.scheduler.enqueue(event, delay=0.0)
        self.journal.checkpoint_in_background()
        pool = self._judge_pool()
        if pool is not None:
            pool.warm_up()
        interval = max(0.2, min(30.0, self.settings.orphan_timeout_s / 10))
        self._sweeper = asyncio.create_task(self.sweep.run_every(interval))

    async def stop(self) -> None:
        """Stop the workers; work already under way finishes (never half an answer)."""
        others = [t for t in (self._sweeper, self._recovery) if t is not None]
        await self.scheduler.stop(others, self._give_up_judging)
        self._recovery = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        await asyncio.to_thread(self.journal.stop_background_checkpoints)
        self.scheduler.forget_queued()
        self._sweeper = None
        self._started = False

    def _give_up_judging(self) -> None:
        """The stop's grace is over: sets still being judged are judged again at next start."""
        if self._pool is None:
            return
        given_up = self._pool.interrupt()
        if given_up:
            log.warning("stopping: %d set(s) still being judged are judged again at "
                        "the next start", given_up)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued event is processed and its answers written."""
        await self.scheduler.drain(timeout)

    async def sweep_orphans(self) -> int:
        """Sweep files older than ``orphan_timeout_s`` by the clock; returns answers written."""
        return await self.sweep.sweep()

    async def _write_then_end(self, answers: list[AnswerRow]) -> None:
        try:
            await self.writer.write_answers(answers)
        finally:
            await self.scheduler.end()

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
        ev = await self.scheduler.quick(self._receive, event, now, forced,
                                        may_block=self._receive_hooked)
        if ev is None:  # FI, FS or any other file: stored, waits for its GO or the sweep
            return
        self.checkpoint("event-journaled")
        if ev.kind == "TD":
            await self._take_td(ev)
        else:
            self.scheduler.enqueue(ev, delay=self.settings.answer_delay_ms / 1000)

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
        return self.pipeline.journal_close(event.user, event.directory, event.name, event.size,
                                           now, veto)

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

    async def _take_td(self, event: EventRow) -> None:
        """Handle a TD at once (spec 5.5); a refused one's ACRF is written like every answer,
        by its channel's worker."""
        if await self.scheduler.track(asyncio.to_thread(self._handle_td, event)):
            self.scheduler.enqueue(event, delay=0.0)

    def _handle_td(self, event: EventRow) -> bool:
        """Cancel a set, or plan the ACRF of a refused TD; True when an answer is planned (its
        event then goes through the channel's queue like a GO's)."""
        outcome = self.pipeline.handle_td(event)
        if outcome.cancelled is not None:
            # files go to the archive (never deleted: the archive is the simulator's evidence)
            user, directory = event.channel, event.directory
            self.archive.store(user, directory, outcome.cancelled, "cancelled")
            self.archive.store(user, directory, [event.name], "archived")
        return outcome.answered

    # --- one event, run by its channel's worker ---------------------------------------------

    async def _run_event(self, eid: int) -> None:
        try:
            await self._run_event_steps(eid)
        except JudgingStopped:
            log.info("event %d: judging interrupted by the stop; judged again at the next "
                     "start", eid)

    async def _run_event_steps(self, eid: int) -> None:
        event = self.journal.event(eid)
        if event.state == "done":  # cancelled by a TD while queued (P3)
            return
        if event.state == "pending":
            await self._plan_go_async(event)
            self.checkpoint("answers-planned")
        # answers back to back when nothing makes them wait; False: a write failed, retried
        # below with back-off
        writer = self.writer
        if writer.nothing_to_wait_for() and await self.scheduler.quick(
                writer.write_all_now, eid, may_block=self._answer_hooked):
            return
        if await writer.write_answers(self.journal.answers(written=False, event_id=eid)):
            await asyncio.to_thread(writer.finish_event, eid)

    async def _plan_go_async(self, event: EventRow) -> None:
        """Judge a GO and commit its outcome (spec 5.3, 5.9); the judging runs off the event
        loop (a worker process or thread)."""
        # an injected processing delay sleeps in Pipeline.veto: only this channel may wait
        delayed = any(f.when == "process" and f.action == "delay" for f in self.faults.faults)
        pipeline, quick = self.pipeline, self.scheduler.quick
        go = None
        try:
            prepared = await quick(pipeline.plan_go_start, event, may_block=delayed)
            if prepared is not None:
                go, files, now = prepared
                verdict = await self._judge_async(event.channel, event.directory, go, files,
                                                  now)
                # the answers carry the time of the verdict, not of the start (spec 9)
                await quick(pipeline.plan_go_finish, event, go, verdict, self.now())
        except JudgingStopped:
            raise  # nothing decided: the set is judged again at the next start
        except (ChannelRemoved, JudgeBudgetSpent) as exc:
            log.error("%s: %s/%s answered ACRF-999: %s", event.channel, event.directory,
                      event.name, exc)
            await quick(pipeline.plan_failure, event, go, exc)
        except Exception as exc:  # a bug, never the sender's fault: answered, not left hanging
            log.exception("%s: %s/%s could not be judged; answered ACRF-999", event.channel,
                          event.directory, event.name)
            await quick(pipeline.plan_failure, event, go, exc)

    # --- judging (P4-P16) ----------------------------------------------------------------------

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
