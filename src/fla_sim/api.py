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
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fla_core.plugins import FlaPlugins
from fla_core.settings import Settings
from fla_sim.config import ConfigError, FaultSpec, HomeLock, SimulatorConfig, SimulatorHome
from fla_sim.faults import FaultInjector
from fla_sim.leftovers import HelperRecords
from fla_sim.processor import Clock, Processor
from fla_sim.store import Journal

T = TypeVar("T")

log = logging.getLogger("fla_sim.api")


class SimulatorError(RuntimeError):
    """The simulator cannot do what was asked (not started, wrong mode); the message says why."""


class Simulator:
    """A BATCH channel simulator on a simulator home (see ``fla-sim init``)."""

    # how often a running simulator looks whether simulator.toml changed (one stat), besides
    # at each login; 0: only at logins (and ``check_config``)
    config_poll_s: float = 1.0

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
        # (inode, mtime, size) of simulator.toml when last read: a change is reloaded
        self._stamp: tuple[int, int, int] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # --- configuration ---------------------------------------------------------------------

    def _config_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.home.config_path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _load(self) -> SimulatorConfig:
        self._stamp = self._config_stamp()  # before reading: a write meanwhile is seen again
        config = self.home.load()
        if self._settings:
            merged = {**config.settings.to_mapping(), **self._settings}
            try:
                config.settings = Settings.from_mapping(merged, source="Simulator(...)")
            except ValueError as exc:
                raise SimulatorError(str(exc)) from None
        return config

    def check_config(self, *, force: bool = False) -> bool:
        """Reload ``simulator.toml`` when it changed since it was read (cheap: one ``stat``;
        the server calls it at each login, ``fla-sim serve`` also on SIGHUP with ``force``).

        A file that does not load is logged and the configuration in force stays; it is read
        again once it changes. Returns True when a new configuration was taken."""
        if self.config is None:
            return False
        stamp = self._config_stamp()
        if not force and stamp == self._stamp:
            return False
        if stamp is not None and stamp[2] == 0:  # an editor between truncating and writing
            self._stamp = stamp
            log.warning("configuration not reloaded, the one loaded before stays in force: %s "
                        "is empty", self.home.config_path)
            return False
        try:
            self.reload()
        except (ConfigError, SimulatorError) as exc:
            log.error("configuration not reloaded, the one loaded before stays in force: %s",
                      exc)
            return False
        return True

    def reload(self) -> None:
        """Re-read channels, mandates and trust anchors of the home into the running
        simulator; sessions of a channel no longer configured are closed. Other keys
        (``[server]``, faults) need a restart."""
        if self.config is None:
            return
        fresh = self._load()
        before = {c.user: c for c in self.config.channels}
        self.config.channels[:] = fresh.channels
        self.config.mandates[:] = fresh.mandates
        # the trust store is built from the live configuration (here and in judge workers)
        self.config.trust_anchors[:] = fresh.trust_anchors
        self.config.crls[:] = fresh.crls
        if self.processor is not None:
            self.processor.reset_material()
        after = {c.user: c for c in fresh.channels}
        changed = sorted(u for u in before.keys() & after.keys() if before[u] != after[u])
        log.info("configuration reloaded from %s: channels added %s, removed %s, changed %s",
                 self.home.config_path, sorted(after.keys() - before.keys()) or "none",
                 sorted(before.keys() - after.keys()) or "none", changed or "none")
        if before.keys() - after.keys():
            self._close_removed_sessions()

    def _close_removed_sessions(self) -> None:
        from fla_sim.server import close_removed_sessions

        server, loop = self._server, self._loop
        if server is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:  # sync mode, called from another thread
            loop.call_soon_threadsafe(close_removed_sessions, server)
        else:
            close_removed_sessions(server)

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
        # the lock is ours: helpers still recorded belong to a simulator that died
        HelperRecords(self.home.helpers_dir).end_leftovers()
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
                                          replacing=self.processor.replacing,
                                          refresh=self.check_config)
        self.port = self._server.get_port()
        if self.config_poll_s > 0:
            self._watcher = asyncio.create_task(self._watch_config(), name="fla-sim config")

    async def _watch_config(self) -> None:
        """Reload simulator.toml when it changes: a removed channel's sessions are closed
        within ``config_poll_s``, not at the next login."""
        while True:
            await asyncio.sleep(self.config_poll_s)
            try:
                self.check_config()
            except Exception:  # a bug here must not stop the watching
                log.exception("checking %s for changes failed", self.home.config_path)

    async def astop(self) -> None:
        """Stop listening, let work under way finish, close the journal."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
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

    async def aserve_forever(self, *, on_started: Callable[[Simulator], object] | None = None,
                             signals: bool = False) -> None:
        """Start, call ``on_started``, run until :meth:`astop` (or the task is cancelled), stop.

        With ``signals`` (the main thread of a program: ``fla-sim serve``), SIGINT and SIGTERM
        stop it and SIGHUP re-reads ``simulator.toml`` at once (it is also re-read at each login
        when it changed). The handlers are in place before the start, so a supervisor may send
        SIGTERM as soon as ``on_started`` has announced the port.
        """
        self._stop_event = stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signals else ()
        for signum in handled[:2]:
            loop.add_signal_handler(signum, stop.set)
        if signals:
            loop.add_signal_handler(signal.SIGHUP, lambda: self.check_config(force=True))
        try:
            await self.start()
            try:
                if on_started is not None:
                    on_started(self)
                await stop.wait()
            finally:
                await self.astop()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

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

    def serve_forever(self, *, on_started: Callable[[Simulator], object] | None = None) -> None:
        """Serve in the foreground until Ctrl-C or SIGTERM (what ``fla-sim serve`` does): the
        one serve loop, on one event loop, so that stopping happens where the server started."""
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way out
            asyncio.run(self.aserve_forever(on_started=on_started, signals=True))

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

