"""The embeddable simulator: one object any Python code (or a test) can start and stop.

Sync use runs the simulator's own event loop in a background thread::

    with Simulator("sim-home") as sim:      # free loopback port: sim.port
        ...upload with any SFTP client...
        sim.drain()                          # every queued set processed, answers written
        print(sim.answers("acme-payroll", "OUTTEST"))

Async use shares the caller's loop: ``async with Simulator(home) as sim: await sim.adrain()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fla_core.plugins import FlaPlugins
from fla_core.settings import Settings
from fla_sim.config import FaultSpec, HomeLock, SimulatorConfig, SimulatorHome
from fla_sim.faults import FaultInjector
from fla_sim.processor import Clock, Processor
from fla_sim.store import Journal

T = TypeVar("T")

log = logging.getLogger("fla_sim.api")


class SimulatorError(RuntimeError):
    """The simulator cannot do what was asked (not started, wrong mode); the message says why."""


class Simulator:
    """A BATCH channel simulator on a simulator home (see ``fla-sim init``)."""

    def __init__(self, home: str | Path | SimulatorHome, *, host: str = "127.0.0.1",
                 port: int = 0, clock: Clock | None = None, plugins: FlaPlugins | None = None,
                 faults: Sequence[FaultSpec] = (), **settings: Any):
        self.home = home if isinstance(home, SimulatorHome) else SimulatorHome(home)
        self.host = host
        self._want_port = port
        self.clock = clock
        self.plugins = plugins
        self._settings = dict(settings)
        self._extra_faults = list(faults)
        self.config: SimulatorConfig | None = None
        self.journal: Journal | None = None
        self.processor: Processor | None = None
        self.faults: FaultInjector | None = None
        self.prescanner: Any = None  # fla_sim.prescan.Prescanner while running
        self._server: Any = None
        self._lock: HomeLock | None = None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None

    # --- configuration ---------------------------------------------------------------------

    def _load(self) -> SimulatorConfig:
        config = self.home.load()
        if self._settings:
            merged = {**config.settings.to_mapping(), **self._settings}
            try:
                config.settings = Settings.from_mapping(merged, source="Simulator(...)")
            except ValueError as exc:
                raise SimulatorError(str(exc)) from None
        return config

    def reload(self) -> None:
        """Re-read channels, mandates and trust anchors of the home into the running
        simulator."""
        if self.config is None:
            return
        fresh = self._load()
        self.config.channels[:] = fresh.channels
        self.config.mandates[:] = fresh.mandates
        # the trust store is built from the live configuration (here and in judge workers)
        self.config.trust_anchors[:] = fresh.trust_anchors
        self.config.crls[:] = fresh.crls
        if self.processor is not None:
            self.processor.reset_material()

    def add_channel(self, user: str, quality: str, company: str, sender: str,
                    ssh_keys: Sequence[str], **kw: Any) -> Any:
        """Register a channel (``SimulatorHome.add_channel``); a running simulator sees it."""
        channel = self.home.add_channel(user, quality, company, sender, ssh_keys, **kw)
        self.reload()
        return channel

    def add_mandate(self, record: Any = None, **fields: Any) -> None:
        """Store a mandate (a ``MandateRecord`` or its fields, spec 2.2)."""
        from fla_core.mandates import MandateRecord

        if record is None:
            record = MandateRecord.from_mapping(fields)
        self.home.add_mandate(record)
        self.reload()

    def add_fault(self, fault: FaultSpec | None = None, **fields: Any) -> None:
        """Inject a fault (design 5) into the running simulator."""
        fault = fault or FaultSpec(**fields)
        if self.faults is None:
            self._extra_faults.append(fault)
        else:
            self.faults.add(fault)

    # --- async lifecycle ---------------------------------------------------------------------

    async def start(self) -> Simulator:
        """Lock the home, open the journal, recover, and listen (``port=0``: a free port, see
        ``.port``). Another simulator on the same home: ``fla_sim.config.HomeInUse``."""
        if self.processor is not None:
            return self
        # one simulator per home: a second one would answer the first one's sets again
        self._lock = self.home.lock()
        try:
            await self._start_locked()
        except BaseException:
            await self.astop()  # releases what was started, the lock last
            raise
        return self

    async def _start_locked(self) -> None:
        from fla_sim.server import start_server

        for key in self.home.secure_private_keys():
            log.warning("%s was readable by other users; it is 0600 now", key)
        self.config = self._load()
        self.faults = FaultInjector.of([*self.config.faults, *self._extra_faults])
        self.journal = Journal(self.home.journal_path)
        self.processor = Processor(self.home, self.config, self.journal, clock=self.clock,
                                   plugins=self.plugins, faults=self.faults)
        await self.processor.start()
        if self.config.prescan_min_bytes > 0:
            from fla_sim.prescan import Prescanner

            self.prescanner = Prescanner(self.processor, self.config.prescan_min_bytes)
            self.processor.prescanner = self.prescanner
        self._server = await start_server(self.home, self.config, self.processor.on_file_closed,
                                          host=self.host, port=self._want_port,
                                          prescan=self.prescanner,
                                          replacing=self.processor.replacing)
        self.port = self._server.get_port()

    async def astop(self) -> None:
        """Stop listening, let work under way finish, close the journal."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.processor is not None:
            await self.processor.stop()
            self.processor = None
        if self.prescanner is not None:  # after the judges: one may still wait for a result
            await self.prescanner.aclose()
            self.prescanner = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._stop_event is not None:
            self._stop_event.set()

    async def adrain(self, timeout: float | None = 30) -> None:
        """Wait until every queued set is processed and its answers are written."""
        await self._running().drain(timeout)

    async def asweep_orphans(self) -> int:
        """Run the orphan sweep now (spec 5.6); the clock decides what is old enough."""
        return await self._running().sweep_orphans()

    async def aserve_forever(self) -> None:
        """Run until :meth:`astop` (or the task is cancelled)."""
        await self.start()
        self._stop_event = asyncio.Event()
        try:
            await self._stop_event.wait()
        finally:
            await self.astop()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def _running(self) -> Processor:
        if self.processor is None:
            raise SimulatorError("the simulator is not running; use it as a context manager "
                                 "or call start() first")
        return self.processor

    # --- sync facade (own loop in a background thread) ----------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise SimulatorError("not started in sync mode: use 'with Simulator(...)'; in "
                                 "async code use 'async with' and the a-prefixed methods")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> Simulator:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fla-sim", daemon=True)
        self._thread.start()
        try:
            self._call(self.start())
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the simulator (sync mode); safe to call twice."""
        if self._loop is None:
            return
        try:
            self._call(self.astop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()

    def drain(self, timeout: float | None = 30) -> None:
        """Wait until every queued set is processed and its answers are written (sync mode)."""
        self._call(self.adrain(timeout))

    def sweep_orphans(self) -> int:
        """Run the orphan sweep now (sync mode); returns the number of answers written."""
        return self._call(self.asweep_orphans())

    def serve_forever(self) -> None:
        """Serve in the foreground until Ctrl-C (what ``fla-sim serve`` does)."""
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way out
            asyncio.run(self.aserve_forever())

    # --- looking at the channel ---------------------------------------------------------------

    def answers(self, user: str, directory: str = "OUTTEST") -> list[str]:
        """Names of the answer files currently in a channel's answer directory, sorted."""
        folder = self.home.channel_root(user) / directory
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def status(self) -> dict[str, object]:
        """The journal summary (what ``fla-sim status`` prints)."""
        if self.journal is not None:
            return self.journal.summary()
        journal = Journal(self.home.journal_path)
        try:
            return journal.summary()
        finally:
            journal.close()

