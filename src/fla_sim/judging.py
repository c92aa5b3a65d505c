"""Judging sets in worker processes: the simulator's other cores (design 6).

``fla_core.judge.judge_set`` is pure CPU on files (signature, schema, business rules), while the
simulator process is busy with SSH, SFTP and the journal under one GIL. A pool of worker
processes (forked from a fork server, never from the simulator itself, which holds threads and a
SQLite connection) judges the sets instead. Each worker receives the configuration once, when
the pool starts, and builds what the judge needs from it exactly as the simulator would: channel
profiles, trust store, mandate book, the plugins of the entry points. It reads the declaration
registry through its own read-only connection to the journal
(:class:`fla_sim.store.RegistryReader`).

Only decisions cross the process boundary: a :class:`JudgeJob` (names and paths) goes out, a
``SetVerdict`` comes back; the journal is written by the simulator alone, so the exactly-once
machinery of ``processor.py`` is unchanged. A pool that breaks (a worker killed) is replaced and
the job runs again: judging has no side effects.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fla_core.judge import SetVerdict
    from fla_core.names import FileName
    from fla_sim.config import SimulatorConfig, SimulatorHome

log = logging.getLogger("fla_sim.judging")


@dataclass(frozen=True)
class JudgeJob:
    """One set to judge (P4-P16): what ``Processor._judge`` would pass to ``judge_set``."""

    user: str
    directory: str
    env: str  # environment letter of the directory
    go: FileName
    files: tuple[Path, ...]
    at: datetime  # aware, simulator time zone; the processing date is its date


def _context() -> multiprocessing.context.BaseContext:
    """A fork server with the judge preloaded: one fresh interpreter per simulator process,
    then each worker is a cheap fork of it (a pool per test, or after a reload, costs ~10 ms
    instead of a new interpreter and its imports)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fla_sim.judging", "fla_core.judge", "fla_core.signing",
                                "fla_core.applications.fla", "fla_core.plugins"])
    return ctx


class JudgePool:
    """``judge_set`` in ``workers`` spawned processes, for one configuration."""

    def __init__(self, home: SimulatorHome, config: SimulatorConfig, workers: int):
        self._home_path = str(home.path)
        self._journal_path = str(home.journal_path)
        self._config = config
        self._workers = workers
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers, mp_context=_context(),
            initializer=_init_worker,
            initargs=(self._home_path, self._journal_path, self._config))

    def warm_up(self) -> None:
        """Start the workers now (imports take ~0.5 s), not at the first set."""
        for _ in range(self._workers):
            self._executor.submit(_ready)

    async def judge(self, job: JudgeJob) -> SetVerdict:
        """The verdict of one set; a broken pool is replaced and the job tried once more."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, _judge, job)
            except BrokenProcessPool:
                if attempt == 2:
                    raise
                log.error("a judge worker died while judging %s; starting a new pool", job.go)
                if self._executor is executor:
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._new_executor()
        raise AssertionError("unreachable")

    def pids(self) -> list[int]:
        """Process ids of the running workers (for status output and tests)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return sorted(p.pid for p in processes.values() if p.pid is not None and p.is_alive())

    def close(self) -> None:
        """Stop the workers (jobs under way finish first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def close_later(self) -> None:
        """Let jobs under way finish, then stop the workers, without waiting here."""
        self._executor.shutdown(wait=False)


# --- inside a worker process ---------------------------------------------------------------------

_worker: _Worker | None = None


class _Worker:
    """What judging needs, built once per worker from the configuration it was given."""

    def __init__(self, home_path: str, journal_path: str, config: SimulatorConfig):
        from fla_core.mandates import MandateBook
        from fla_core.plugins import get_plugins
        from fla_sim.config import SimulatorHome
        from fla_sim.store import RegistryReader

        self.home = SimulatorHome(home_path)
        self.config = config
        self.plugins = get_plugins()
        self.trust = self.home.trust_store()
        self.mandates = MandateBook(config.mandates)
        self.registry = RegistryReader(journal_path)
        self.profiles: dict[str, Any] = {}

    def profile(self, user: str) -> Any:
        if user not in self.profiles:
            channel = self.config.channel(user)
            if channel is None:
                raise LookupError(f"channel {user!r} is not in the configuration")
            self.profiles[user] = channel.profile(self.home)
        return self.profiles[user]

    def judge(self, job: JudgeJob) -> SetVerdict:
        from fla_core.judge import judge_set

        channel = self.config.channel(job.user)
        assert channel is not None
        return judge_set(job.go, list(job.files), channel=self.profile(job.user),
                         settings=self.config.settings, trust=self.trust,
                         today=job.at.date(), at=job.at,
                         registry=self.registry.registry(channel.sender, job.env),
                         mandates=self.mandates, plugins=self.plugins)


def _init_worker(home_path: str, journal_path: str, config: SimulatorConfig) -> None:
    global _worker
    _worker = _Worker(home_path, journal_path, config)
    # the first set would otherwise pay these imports
    import fla_core.judge
    import fla_core.signing  # noqa: F401


def _ready() -> bool:
    return _worker is not None


def _judge(job: JudgeJob) -> SetVerdict:
    assert _worker is not None, "judge worker not initialised"
    return _worker.judge(job)
