"""Writing planned answers to the channel's OUT folder, with the one retry policy for every
answer (a GO's, a refused TD's, the orphan sweep's): back-off doubling from 40 ms up to 2 s,
never given up (docs/simulator.md "Durability").

Each answer is marked written in the journal once its FO/CO, FS and GO are in place; an event
is done (its clean-up committed) only when every answer of it is written. ``AnswerWriter``
plans nothing: the answers and their bytes come from the journal (``fla_sim.pipeline``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fla_sim.answers import write_answer
from fla_sim.archive import Archive
from fla_sim.config import SimulatorConfig
from fla_sim.events import AnswerWritten
from fla_sim.faults import FaultInjector
from fla_sim.hooks import SimHooks
from fla_sim.scheduler import Scheduler
from fla_sim.store import AnswerRow, Journal

log = logging.getLogger("fla_sim.processor")

# Test hook: called at named points of processing (crash tests kill the process there).
Checkpoint = Callable[[str], None]


def retry_delay(attempt: int) -> float:
    """Seconds before retrying a failed answer write: doubling from 40 ms, at most 2 s."""
    return min(2.0, 0.02 * 2.0 ** attempt)


class AnswerWriter:
    """Writes the journal's planned answers, then has the event's uploads archived."""

    def __init__(self, config: SimulatorConfig, journal: Journal, *,
                 now: Callable[[], datetime], root: Callable[[str], Path],
                 faults: FaultInjector, hooks: SimHooks, signer: Callable[[], Any],
                 archive: Archive, scheduler: Scheduler, checkpoint: Checkpoint):
        self.config = config
        self.settings = config.settings
        self.journal = journal
        self.now = now
        self.root = root
        self.faults = faults
        self.hooks = hooks
        self.signer = signer  # the answer signer, loaded lazily by the processor
        self.archive = archive
        self.scheduler = scheduler
        self.checkpoint = checkpoint

    def nothing_to_wait_for(self) -> bool:
        """No NOTI delay and no answer-delay fault: answers can be written back to back."""
        if self.settings.noti_delay_ms > 0:
            return False
        return not any(f.when == "answer" and f.action == "delay" for f in self.faults.faults)

    def write_all_now(self, eid: int) -> bool:
        """Write the event's planned answers and clean up; False when a write failed (the
        caller retries the answers not yet written)."""
        answers = self.journal.answers(written=False, event_id=eid)
        for n, answer in enumerate(answers, 1):
            try:
                # the last answer's journal entry also closes the event: one commit less
                self.write_one(answer, finish=eid if n == len(answers) else None)
            except OSError as exc:
                log.error("writing answer %s failed (%s); retrying", answer.name, exc)
                return False
        if not answers:
            self.finish_event(eid)
        return True

    async def write_answers(self, answers: list[AnswerRow]) -> bool:
        """Write planned answers in order (the one retry policy: ``write_retrying``); False
        when the processor stops first: what is unwritten stays planned for the next start."""
        for n, answer in enumerate(answers):
            if answer.kind == "NOTI" and n > 0 and self.settings.noti_delay_ms > 0:
                await asyncio.sleep(self.settings.noti_delay_ms / 1000)
            fault = self.faults.take("answer", answer.name, ("delay",))
            if fault is not None:
                await asyncio.sleep(fault.delay_ms / 1000)
            if not await self.write_retrying(answer):
                return False
        return True

    async def write_retrying(self, answer: AnswerRow) -> bool:
        """Write one answer; a failed write (disk full, ...) is retried with back-off, never
        given up: False only when the processor stops meanwhile."""
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self.write_one, answer)
                return True
            except OSError as exc:
                attempt += 1
                delay = retry_delay(attempt)
                if attempt & (attempt - 1) == 0:  # 1, 2, 4, 8, ...: the log stays readable
                    log.error("writing answer %s failed (%s); attempt %d, retrying every %.1f s "
                              "at most until it is written", answer.name, exc, attempt, delay)
                if self.scheduler.stopping:
                    return False
                await self.scheduler.pause(delay)

    def write_one(self, answer: AnswerRow, *, finish: int | None = None) -> None:
        """Write one planned answer and journal it; with ``finish`` (the event id, for its last
        answer) the event's clean-up is committed in the same transaction."""
        folder = self.root(answer.channel) / answer.directory
        now = self.now()

        def before(name: str) -> None:
            self.checkpoint(f"before-write:{name}")
            self.faults.before_answer_write(name)

        corrupt = self.faults.take("answer", answer.name, ("corrupt",)) is not None
        write_answer(folder, answer.name, answer.content, self.signer(),
                     signing_time=now, before_write=before, corrupt=corrupt,
                     durable=self.config.durability == "power")
        if finish is None:
            self.journal.answer_written(answer.id, now)
        else:
            # the moves: a crash before the commit redoes them
            uploads = self.archive.clean_up(finish)
            self.checkpoint("uploads-archived")
            with self.journal.transaction():
                self.journal.answer_written(answer.id, now)
                self.archive.clean_up_done(finish, *uploads)
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

    def finish_event(self, eid: int) -> None:
        """Clean-up of spec 5.3 (archive the set's files), then the event is done."""
        uploads = self.archive.clean_up(eid)
        self.checkpoint("uploads-archived")
        # one transaction: a crash before it re-runs this clean-up (moves skip missing files)
        with self.journal.transaction():
            self.archive.clean_up_done(eid, *uploads)
