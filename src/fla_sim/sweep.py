"""The orphan sweep (spec 5.6): files left in an upload directory longer than
``orphan_timeout_s`` and claimed by no GO or TD are answered (ACRF-130 per set stem, or the
N1-N4 code of a name that has no stem) and moved to the archive.

The answers are planned through ``fla_sim.pipeline`` and written by ``fla_sim.answer_writer``
like every other answer; a sweep's answers belong to no event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from fla_core.names import stem_of
from fla_sim.answer_writer import AnswerWriter
from fla_sim.archive import Archive
from fla_sim.config import SimulatorConfig
from fla_sim.pipeline import Clock, Pipeline, PlannedAnswer, n1_n4_code
from fla_sim.scheduler import Scheduler
from fla_sim.store import Journal

log = logging.getLogger("fla_sim.processor")


class OrphanSweep:
    """Plans, writes and archives a sweep; ``run_every`` is the sweeper task's body."""

    def __init__(self, config: SimulatorConfig, journal: Journal, *, now: Clock,
                 pipeline: Pipeline, writer: AnswerWriter, archive: Archive,
                 scheduler: Scheduler):
        self.config = config
        self.settings = config.settings
        self.journal = journal
        self.now = now
        self.pipeline = pipeline
        self.writer = writer
        self.archive = archive
        self.scheduler = scheduler

    async def run_every(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failed sweep is logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("orphan sweep failed")

    async def sweep(self) -> int:
        """Sweep files older than ``orphan_timeout_s`` by the clock; returns answers written."""
        await self.scheduler.begin()
        try:
            planned, swept = await asyncio.to_thread(self.plan, self.now())
            answers = [a for a in self.journal.answers(written=False) if a.id in set(planned)]
            await self.writer.write_answers(answers)
            for user, directory, names in swept:
                await asyncio.to_thread(self.archive.store, user, directory, names, "swept")
            return len(answers)
        finally:
            await self.scheduler.end()

    def plan(self, now: datetime) -> tuple[list[int], list[tuple[str, str, list[str]]]]:
        """Plan the sweep's answers; returns their ids and the files to archive."""
        limit = now - timedelta(seconds=self.settings.orphan_timeout_s)
        groups: dict[tuple[str, str, str], list[str]] = {}
        singles: list[tuple[str, str, str, str]] = []
        for f in self.journal.files(state="present"):
            if f.claimed or f.closed_at > limit:
                continue
            code = n1_n4_code(f.name, now.date())
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
                ids += self.pipeline.commit(None, None, [PlannedAnswer(
                    "ACRF", min(names), "130", None, "ORPHANED")], now, user=user,
                    directory=directory, stem=stem)
                self.journal.set_file_state(user, directory, names, "swept")
            swept.append((user, directory, names))
        for user, directory, name, code in singles:
            if self.config.channel(user) is None:
                continue
            with self.journal.transaction():
                ids += self.pipeline.commit(None, None, [PlannedAnswer("ACRF", name, code)],
                                            now, user=user, directory=directory, stem=None)
                self.journal.set_file_state(user, directory, [name], "swept")
            swept.append((user, directory, [name]))
        return ids, swept
