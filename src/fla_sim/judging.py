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
machinery of ``processor.py`` is unchanged. A worker that dies (killed) is replaced and its
job given to another: judging has no side effects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import types
from collections.abc import Iterator
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


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux; elsewhere nothing).

    Called first by every judge worker and pre-scan follower. Their parent is the fork
    server, which exits once nothing holds the write end of its "alive" pipe: the simulator
    and, as CPython hands it to every child, each child. A child lets go of it here, so a
    simulator killed with SIGKILL takes the fork server with it, and the fork server its
    children: before, they lived on for ever, paused followers included.
    """
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # CPython's ForkServer of this process (private)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:  # these children never start processes of their own
        with contextlib.suppress(OSError):
            os.close(alive)
        server._forkserver_alive_fd = None
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _context() -> multiprocessing.context.ForkServerContext:
    """A fork server with the judge preloaded: one fresh interpreter per simulator process,
    then each judge worker or pre-scan follower is a cheap fork of it (a pool per test, or
    after a reload, costs ~10 ms instead of a new interpreter and its imports)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fla_sim.preload"])
    return ctx


class JudgeWorkerError(RuntimeError):
    """judge_set raised something other than a ChannelError in a worker (a bug): its
    traceback, as the worker printed it."""


class _Handle:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, *args), daemon=True,
                                name="fla-sim judge")
        with _main_not_reimported():
            self.proc.start()
        child.close()
        self.job: tuple[JudgeJob, asyncio.Future[Any], int] | None = None
        self.ready = False  # the worker said it has loaded the configuration


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start a process without multiprocessing re-importing the parent's ``__main__``.

    multiprocessing makes every child import the parent's main script (so that functions
    defined there can be targets). Our target lives in this module; re-importing an embedding
    script would run its unguarded top-level code again, and a main read from stdin cannot be
    imported at all (the worker then dies at start-up, forever).
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class JudgePool:
    """``judge_set`` in ``workers`` processes, for one configuration, driven by the event loop.

    Jobs and verdicts travel over one pipe per worker that the event loop writes and watches
    itself: no executor threads, whose hand-offs would queue for the GIL behind the SFTP
    sessions (they added tens of milliseconds to a set under load).
    """

    def __init__(self, home: SimulatorHome, config: SimulatorConfig, workers: int):
        self._args = (str(home.path), str(home.journal_path), config)
        self._size = workers
        self._ctx = _context()
        self._handles: list[_Handle] = []
        self._idle: list[_Handle] = []
        self._queue: collections.deque[tuple[JudgeJob, asyncio.Future[Any], int]] = \
            collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._failed_starts = 0
        self.broken: str | None = None  # why the pool gave up (workers cannot start)

    def _start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while len(self._handles) < self._size and self.broken is None:
            try:
                handle = _Handle(self._ctx, self._args)
            except (OSError, ValueError) as exc:
                # e.g. the working directory was removed: multiprocessing needs it to start
                # a child. The simulator must keep running: it judges in-process instead.
                self.broken = f"judge worker processes cannot be started ({exc})"
                log.error("%s: judging in the simulator process instead", self.broken)
                self._fail_queued()
                return
            self._handles.append(handle)
            self._idle.append(handle)
            self._loop.add_reader(handle.conn.fileno(), self._on_readable, handle)

    def warm_up(self) -> None:
        """Start the workers now (call on the event loop), not at the first set."""
        self._start()

    async def judge(self, job: JudgeJob) -> SetVerdict:
        """The verdict of one set. A worker that dies is replaced and the job given to
        another, once (judging has no side effects)."""
        if self._closing:
            raise RuntimeError("the judge pool is closed")
        if self.broken is not None:
            raise JudgeWorkerError(self.broken)
        self._start()
        if self.broken is not None:
            raise JudgeWorkerError(self.broken)
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append((job, future, 1))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            handle = self._idle.pop()
            job, future, attempt = self._queue.popleft()
            if future.done():  # the waiting set was cancelled (simulator stopping)
                self._idle.append(handle)
                continue
            handle.job = (job, future, attempt)
            try:
                handle.conn.send(job)
            except OSError:
                self._lost(handle)

    def _on_readable(self, handle: _Handle) -> None:
        try:
            status, value = handle.conn.recv()
        except (EOFError, OSError):
            self._lost(handle)
            return
        if status == "ready":
            handle.ready = True
            self._failed_starts = 0
            return
        assert handle.job is not None
        _job, future, _attempt = handle.job
        handle.job = None
        if not future.done():
            if status == "ok":
                future.set_result(value)
            else:
                future.set_exception(JudgeWorkerError(value))
        if self._closing:
            self._retire(handle)
        else:
            self._idle.append(handle)
            self._dispatch()

    def _lost(self, handle: _Handle) -> None:
        """A worker died (killed, out of memory): replace it, give its job another go.

        Workers that die before they are ready (the configuration or an import fails in them)
        are not restarted for ever: after three in a row the pool gives up, and every set is
        answered a JudgeWorkerError (the processor then judges in its own process).
        """
        self._retire(handle)
        if not handle.ready:
            self._failed_starts += 1
            if self._failed_starts >= 3 and self.broken is None:
                self.broken = ("judge worker processes exit before they are ready; their "
                               "error is in the simulator's log (stderr)")
                log.error("%s: judging in the simulator process instead", self.broken)
        if self.broken is not None:
            self._fail_all(handle)
            return
        if handle.job is not None:
            job, future, attempt = handle.job
            handle.job = None
            if future.done():
                pass
            elif attempt >= 2:
                future.set_exception(JudgeWorkerError(
                    f"judge workers died twice while judging {job.go}"))
            else:
                log.error("a judge worker died while judging %s; judging it again", job.go)
                self._queue.appendleft((job, future, attempt + 1))
        if not self._closing:
            self._start()
            self._dispatch()

    def _fail_all(self, handle: _Handle) -> None:
        if handle.job is not None:
            self._queue.appendleft(handle.job)
            handle.job = None
        self._fail_queued()
        for other in list(self._handles):
            self._retire(other)

    def _fail_queued(self) -> None:
        pending = list(self._queue)
        self._queue.clear()
        for _job, future, _attempt in pending:
            if not future.done():
                future.set_exception(JudgeWorkerError(self.broken or "judge pool broken"))

    def _retire(self, handle: _Handle) -> None:
        if handle in self._handles:
            self._handles.remove(handle)
        if handle in self._idle:
            self._idle.remove(handle)
        if self._loop is not None:
            self._loop.remove_reader(handle.conn.fileno())
        handle.conn.close()  # the worker reads EOF and exits
        handle.proc.join(0)  # reap it if it is gone already (no zombie)

    def pids(self) -> list[int]:
        """Process ids of the running workers (for status output and tests)."""
        return sorted(h.proc.pid for h in self._handles if h.proc.pid and h.proc.is_alive())

    def close_later(self) -> None:
        """Stop idle workers now, busy ones once their verdict is in (any thread)."""
        self._closing = True
        if self._loop is None:
            return  # never started
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self._retire_idle()
        else:  # e.g. Simulator.reload() from the caller's thread
            self._loop.call_soon_threadsafe(self._retire_idle)

    def _retire_idle(self) -> None:
        for handle in list(self._idle):
            self._retire(handle)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the workers, waiting (bounded) for verdicts under way."""
        self._closing = True
        procs = [h.proc for h in self._handles]
        self._retire_idle()
        deadline = asyncio.get_running_loop().time() + timeout
        while self._handles and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for handle in list(self._handles):
            self._retire(handle)
        await asyncio.to_thread(_join_all, procs, timeout)


def _join_all(procs: list[Any], timeout: float) -> None:
    for proc in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()


# --- inside a worker process ---------------------------------------------------------------------

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
        # the configuration it was given: loading it again would also import asyncssh (for
        # the cipher names), 9 MB of private pages in every worker
        self.trust = self.home.trust_store(config)
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


def _serve(conn: Any, home_path: str, journal_path: str, config: SimulatorConfig) -> None:
    """Worker main loop: a job in, ``("ok", verdict)`` or ``("error", traceback)`` out, until
    the simulator closes the pipe."""
    import traceback

    die_with_parent()
    worker = _Worker(home_path, journal_path, config)
    try:
        conn.send(("ready", None))
    except (OSError, ValueError):  # the simulator stopped meanwhile
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("ok", worker.judge(job))
        except Exception:
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
