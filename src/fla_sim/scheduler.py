"""When the processor's work runs: one queue and at most one worker task per channel (sets of a
channel are processed one at a time, in arrival order, after their due time), the count of work
under way that ``drain`` waits for, and a stop that lets the event under way finish.

``Scheduler`` knows event ids and channels, nothing of sets or answers: what an event means is
the ``run`` callable it is given (``Processor._run_event``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fla_sim.config import SimulatorConfig
from fla_sim.store import EventRow

log = logging.getLogger("fla_sim.processor")

STOP_GRACE_S = 2.0  # how long a stop waits for sets being judged before giving them up


class Scheduler:
    """Per-channel queues of event ids, run one at a time by ``run``."""

    def __init__(self, config: SimulatorConfig, run: Callable[[int], Awaitable[None]]):
        self.config = config
        self._run = run
        # per channel: events waiting (id, due time) and the task running them, if any
        self._queues: dict[str, collections.deque[tuple[int, float]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._pausing: set[asyncio.Task[Any]] = set()  # tasks in a wait stop() may cut short
        self.stopping = False
        self._busy = 0
        self._idle: asyncio.Condition | None = None

    def open(self) -> None:
        """Ready to count work (called by ``Processor.start``, on the event loop)."""
        self._idle = asyncio.Condition()

    # --- the per-channel queue -------------------------------------------------------------

    def enqueue(self, event: EventRow, *, delay: float) -> None:
        """Queue the event on its channel, due in ``delay`` seconds."""
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(event.channel, collections.deque())
        self._busy += 1  # released by the worker once the event is done
        queue.append((event.id, loop.time() + delay))
        if event.channel not in self._workers and not self.stopping:
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
            while queue and not self.stopping:
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
                    await self._run(eid)
                except Exception:
                    log.exception("event %d failed", eid)
                finally:
                    await self.end()
        finally:
            if self._workers.get(channel) is me:
                del self._workers[channel]

    async def quick(self, fn: Callable[..., Any], *args: Any, may_block: bool = False) -> Any:
        """Run short journal-and-file work: on the event loop when nothing in it can block,
        else in a worker thread. It can block with ``durability = "power"`` (fsync), or when
        the caller says so (``may_block``: a plugin hooks this step, or a fault sleeps in it).

        A worker-thread hop costs more than the work (a few hundred microseconds) and makes the
        SFTP sessions wait for the GIL behind it; with fsync the work may take milliseconds.
        """
        if self.config.durability == "process" and not may_block:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def pause(self, seconds: float) -> None:
        """Sleep in a way stop() may cut short (it cancels the sleeping task)."""
        me = asyncio.current_task()
        assert me is not None
        self._pausing.add(me)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._pausing.discard(me)

    # --- work under way -----------------------------------------------------------------------

    async def track(self, awaitable: Any) -> Any:
        """Await work outside the queues, counted for ``drain``."""
        await self.begin()
        try:
            return await awaitable
        finally:
            await self.end()

    async def begin(self) -> None:
        self._busy += 1

    async def end(self) -> None:
        self._busy -= 1
        if self._idle is not None:
            async with self._idle:
                self._idle.notify_all()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued event is processed and its answers written."""
        assert self._idle is not None, "Processor.start() was not awaited"
        idle = self._idle

        async def wait() -> None:
            async with idle:
                await idle.wait_for(lambda: self._busy == 0)

        await asyncio.wait_for(wait(), timeout)

    # --- stopping -------------------------------------------------------------------------------

    async def stop(self, others: Sequence[asyncio.Task[Any]],
                   give_up: Callable[[], None]) -> None:
        """Let the workers end after their current event, cancel waits and ``others``; after
        ``STOP_GRACE_S`` call ``give_up`` (work still running is abandoned, never half done)."""
        self.stopping = True  # workers end after their current event
        for task in [*self._pausing, *others]:
            task.cancel()
        running = [*self._workers.values(), *others]
        if running:
            # sets being judged get a moment to finish; one that may run for its whole budget
            # is given up (judged again at the next start: judging decides nothing on its own)
            _done, late = await asyncio.wait(running, timeout=STOP_GRACE_S)
            if late:
                give_up()
            await asyncio.gather(*running, return_exceptions=True)

    def forget_queued(self) -> None:
        """After a stop: queued events stay pending in the journal (the next start runs them)."""
        self._workers.clear()
        self._busy -= sum(len(q) for q in self._queues.values())
        self._queues.clear()
        self.stopping = False
