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

Why not ``concurrent.futures.ProcessPoolExecutor`` (with a forkserver context)? It cannot do
what keeps one sender from hurting the others: stop the one worker whose set ran over its
budget (it offers no way to kill a task's worker, and a worker that dies breaks the whole pool:
``BrokenProcessPool`` for every set in flight), lower the priority of one worker, take waiting
sets round-robin per channel instead of first-come, or start extra workers while some are held
by slow sets. Its hand-offs also go through a feeder thread, which queued behind the SFTP
sessions for the GIL: with 8 senders, p99 GO->ACRF was 128 ms with the executor and 89 ms
with this pool (commit b9ee6ca, bench_channel (c)).
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

from fla_sim.leftovers import HelperRecords

if TYPE_CHECKING:
    from fla_core.judge import SetVerdict
    from fla_core.names import FileName
    from fla_core.plugins import PluginRecipe
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
_SURPLUS_IDLE_S = 5.0  # an extra judge worker idle this long ends


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


class JudgeBudgetSpent(Exception):
    """A set took more than its time or memory budget in a judge worker (``judge_time_budget_s``,
    ``judge_memory_mb``): the worker was stopped and the set is answered ACRF-999, never judged
    again in the simulator process, where nothing could stop it."""


class JudgingStopped(Exception):
    """The simulator is stopping and did not wait for this set's verdict: nothing was decided,
    the set stays PROCESSING and is judged again at the next start (spec 5.9)."""


@dataclass
class _Pending:
    job: JudgeJob
    future: asyncio.Future[Any]
    attempt: int


class _Handle:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, *args), daemon=True,
                                name="fla-sim judge")
        with _main_not_reimported():
            self.proc.start()
        child.close()
        self.job: _Pending | None = None
        self.ready = False  # the worker said it has loaded the configuration
        self.timers: list[asyncio.TimerHandle] = []
        self.slowed = False  # runs at a lower priority since its set passed judge_slow_ms

    def stop_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


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
    """``judge_set`` in worker processes, for one configuration, driven by the event loop.

    Jobs and verdicts travel over one pipe per worker that the event loop writes and watches
    itself: no executor threads, whose hand-offs would queue for the GIL behind the SFTP
    sessions (they added tens of milliseconds to a set under load).

    No channel can make the others wait (issue: a costly set delayed another channel's plain
    set by 24 s): waiting sets are taken round-robin across channels; a set still running after
    ``judge_slow_ms`` has its worker's priority lowered (``nice``) and, while it runs, up to
    ``judge_burst_workers`` extra workers start for the sets that wait; a set running longer than
    ``judge_time_budget_s`` or needing more than ``judge_memory_mb`` is stopped
    (:class:`JudgeBudgetSpent`). A slowed worker and an extra one end after their set.
    """

    def __init__(self, home: SimulatorHome, config: SimulatorConfig, workers: int, *,
                 recipe: PluginRecipe | None = None):
        self._memory = config.judge_memory_mb << 20
        if recipe is None:  # the process-wide manager's, as the simulator would use
            from fla_core.plugins import get_plugins

            recipe = get_plugins().recipe
            assert recipe is not None  # built from the environment, never from objects
        self._args = (str(home.path), str(home.journal_path), config, self._memory, recipe)
        self._size = workers
        self._burst = config.judge_burst_workers
        self._budget = float(config.judge_time_budget_s)
        self._slow = config.judge_slow_ms / 1000
        self._ctx = _context()
        self._records = HelperRecords(home.helpers_dir)
        self._handles: list[_Handle] = []
        self._idle: list[_Handle] = []
        # waiting sets per channel, and the channels with waiting sets in turn order
        self._queues: dict[str, collections.deque[_Pending]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._failed_starts = 0
        self.broken: str | None = None  # why the pool gave up (workers cannot start)

    def _start(self, count: int | None = None) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        target = self._size if count is None else count
        while len(self._handles) < target and self.broken is None:
            try:
                handle = _Handle(self._ctx, self._args)
            except (OSError, ValueError) as exc:
                # e.g. the working directory was removed: multiprocessing needs it to start
                # a child. The simulator must keep running: it judges in-process instead.
                self.broken = f"judge worker processes cannot be started ({exc})"
                log.error("%s: judging in the simulator process instead", self.broken)
                self._fail_queued()
                return
            self._records.add(handle.proc.pid)
            self._handles.append(handle)
            self._idle.append(handle)
            self._loop.add_reader(handle.conn.fileno(), self._on_readable, handle)

    def warm_up(self) -> None:
        """Start the workers now (call on the event loop), not at the first set."""
        self._start()

    async def judge(self, job: JudgeJob) -> SetVerdict:
        """The verdict of one set. A worker that dies is replaced and the job given to
        another, once (judging has no side effects); a set over its budget raises
        :class:`JudgeBudgetSpent`."""
        if self._closing:
            raise RuntimeError("the judge pool is closed")
        if self.broken is not None:
            raise JudgeWorkerError(self.broken)
        self._start()
        if self.broken is not None:
            raise JudgeWorkerError(self.broken)
        assert self._loop is not None
        future: asyncio.Future[Any] = self._loop.create_future()
        self._put(_Pending(job, future, 1))
        self._dispatch()
        verdict: SetVerdict = await future
        return verdict

    def _put(self, pending: _Pending, *, first: bool = False) -> None:
        queue = self._queues.setdefault(pending.job.user, collections.deque())
        if not queue:
            if first:
                self._turns.appendleft(pending.job.user)
            else:
                self._turns.append(pending.job.user)
        if first:
            queue.appendleft(pending)
        else:
            queue.append(pending)

    def _take(self) -> _Pending | None:
        """The next waiting set, one channel after the other."""
        while self._turns:
            user = self._turns.popleft()
            queue = self._queues[user]
            pending = queue.popleft()
            if queue:
                self._turns.append(user)
            else:
                del self._queues[user]
            if not pending.future.done():  # else the waiting set was cancelled (stopping)
                return pending
        return None

    def _waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _dispatch(self) -> None:
        while self._turns:
            if not self._idle:
                # every worker busy: another channel's set must not wait behind them, an extra
                # worker takes it (the kernel favours it over workers slowed by a long set)
                if len(self._handles) < self._size + self._burst:
                    self._start(len(self._handles) + 1)
                if not self._idle:
                    return
            pending = self._take()
            if pending is None:
                return
            handle = self._idle.pop()
            self._send(handle, pending)

    def _send(self, handle: _Handle, pending: _Pending) -> None:
        assert self._loop is not None
        handle.stop_timers()
        handle.job = pending
        try:
            handle.conn.send(pending.job)
        except OSError:
            self._lost(handle)
            return
        if self._slow > 0:
            handle.timers.append(self._loop.call_later(self._slow, self._slowed, handle))
        if self._budget > 0:
            handle.timers.append(self._loop.call_later(self._budget, self._over_budget, handle))

    def _slowed(self, handle: _Handle) -> None:
        """The set passed judge_slow_ms: lower its priority and let others have a worker."""
        if handle.job is None or handle.slowed:
            return
        handle.slowed = True
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, handle.proc.pid, 10)
        self._dispatch()

    def _over_budget(self, handle: _Handle) -> None:
        """The set ran for judge_time_budget_s: stop its worker, fail the set."""
        if handle.job is None:
            return
        pending, handle.job = handle.job, None
        log.error("judging %s took more than judge_time_budget_s = %g s: stopped",
                  pending.job.go, self._budget)
        if not pending.future.done():
            pending.future.set_exception(JudgeBudgetSpent(
                f"judging took more than the channel's budget of {self._budget:g} s "
                "(judge_time_budget_s)"))
        with contextlib.suppress(OSError):
            handle.proc.kill()  # its pipe then ends: _lost replaces it

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
        handle.stop_timers()
        if handle.job is None:  # stopped over budget; the verdict came in first
            self._retire(handle)
            self._start()
            self._dispatch()
            return
        pending, handle.job = handle.job, None
        if not pending.future.done():
            if status == "ok":
                pending.future.set_result(value)
            elif status == "memory":
                pending.future.set_exception(JudgeBudgetSpent(
                    f"judging needed more than the channel's {self._memory >> 20} MB "
                    "(judge_memory_mb)"))
            else:
                pending.future.set_exception(JudgeWorkerError(value))
        # a slowed worker keeps its low priority and an extra one is not needed any more:
        # both end (a new worker is a fork of a ready process, ~10 ms)
        if self._closing or handle.slowed or status == "memory":
            self._retire(handle)
            if not self._closing:
                self._start()
        else:
            self._idle.append(handle)
            if len(self._handles) > self._size and self._loop is not None:
                # an extra worker stays a while for the next burst, then ends
                handle.timers.append(self._loop.call_later(_SURPLUS_IDLE_S, self._surplus,
                                                           handle))
        if not self._closing:
            self._dispatch()

    def _surplus(self, handle: _Handle) -> None:
        if handle in self._idle and len(self._handles) > self._size:
            self._retire(handle)

    def _lost(self, handle: _Handle) -> None:
        """A worker died (killed, out of memory): replace it, give its job another go.

        Workers that die before they are ready (the configuration or an import fails in them)
        are not restarted for ever: after three in a row the pool gives up, and every set is
        answered a JudgeWorkerError (the processor then judges in its own process).
        """
        handle.stop_timers()
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
            pending, handle.job = handle.job, None
            if pending.future.done():
                pass
            elif pending.attempt >= 2:
                pending.future.set_exception(JudgeWorkerError(
                    f"judge workers died twice while judging {pending.job.go}"))
            else:
                log.error("a judge worker died while judging %s; judging it again",
                          pending.job.go)
                pending.attempt += 1
                self._put(pending, first=True)
        if not self._closing:
            self._start()
            self._dispatch()

    def _fail_all(self, handle: _Handle) -> None:
        if handle.job is not None:
            self._put(handle.job, first=True)
            handle.job = None
        self._fail_queued()
        for other in list(self._handles):
            self._retire(other)

    def _fail_queued(self) -> None:
        while (pending := self._take()) is not None:
            pending.future.set_exception(JudgeWorkerError(self.broken or "judge pool broken"))

    def _retire(self, handle: _Handle) -> None:
        handle.stop_timers()
        if handle in self._handles:
            self._handles.remove(handle)
        if handle in self._idle:
            self._idle.remove(handle)
        if self._loop is not None:
            self._loop.remove_reader(handle.conn.fileno())
        handle.conn.close()  # the worker reads EOF and exits
        handle.proc.join(0)  # reap it if it is gone already (no zombie)
        if handle.proc.pid:
            self._records.remove(handle.proc.pid)

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

    def interrupt(self) -> int:
        """Give up every set waiting or being judged (:class:`JudgingStopped`) and stop their
        workers: a stop must not wait for a set that may run for its whole budget. Returns how
        many sets were given up."""
        self._closing = True
        given_up = 0
        while (pending := self._take()) is not None:
            pending.future.set_exception(JudgingStopped("the simulator is stopping"))
            given_up += 1
        for handle in list(self._handles):
            if handle.job is None:
                continue
            pending, handle.job = handle.job, None
            if not pending.future.done():
                pending.future.set_exception(JudgingStopped("the simulator is stopping"))
                given_up += 1
            with contextlib.suppress(OSError):
                handle.proc.kill()
            self._retire(handle)
        return given_up

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

    def __init__(self, home_path: str, journal_path: str, config: SimulatorConfig,
                 recipe: PluginRecipe):
        from fla_core.mandates import MandateBook
        from fla_sim.config import SimulatorHome
        from fla_sim.store import RegistryReader

        self.home = SimulatorHome(home_path)
        self.config = config
        self.plugins = recipe.build()  # the simulator's manager, made the same way
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


def _serve(conn: Any, home_path: str, journal_path: str, config: SimulatorConfig,
           memory: int, recipe: PluginRecipe) -> None:
    """Worker main loop: a job in, ``("ok", verdict)``, ``("memory", text)`` or ``("error",
    traceback)`` out, until the simulator closes the pipe."""
    import traceback

    die_with_parent()
    worker = _Worker(home_path, journal_path, config, recipe)
    limit_memory(memory)
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
        except MemoryError:
            reply = ("memory", traceback.format_exc())
        except Exception:
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def limit_memory(extra: int) -> None:
    """Let this process grow by at most ``extra`` bytes of address space beyond what it holds
    now (0: no limit); past it allocations fail (``MemoryError``) instead of the machine
    swapping or the kernel killing whichever process it picks. Linux only."""
    if extra <= 0 or not sys.platform.startswith("linux"):
        return
    import resource

    size = proc_kb("/proc/self/status", b"VmSize:") << 10
    if size <= 0:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = size + extra
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def proc_kb(path: str, key: bytes) -> int:
    """The KiB figure of the ``key`` line of a /proc file (0 if unknown)."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
