"""Settings for the whole test suite."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--long``: the long versions of tests/sim/test_long_runs.py (as ``FLA_LONG=1``)."""
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long versions of the scaled tests (100 crash points, "
                          "50 senders); the same as FLA_LONG=1")


def pytest_configure(config: pytest.Config) -> None:
    """``--long`` is passed on as ``FLA_LONG=1``, which the scaled tests read at import."""
    if config.getoption("long"):
        os.environ["FLA_LONG"] = "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """In CI, a test skipped because an oracle tool is missing fails instead.

    On a developer's machine a missing openssl, OpenSSH or xmllint skips the tests that need
    it. CI installs them through ./dev, so there a skip would hide a broken set-up and
    untested interop: every skip whose reason says "not installed" is turned into a failure.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and os.environ.get("CI")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if "not installed" in reason:
        report.outcome = "failed"
        report.longrepr = f"CI must have every oracle tool, but: {reason}"


class Served:
    """A real ``fla-sim serve`` process on a free loopback port, its output read as it comes."""

    def __init__(self, home: Path, *args: str):
        self.home = home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fla_sim.cli", "serve", str(home), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("stdout", self.proc.stdout),
                                              ("stderr", self.proc.stderr))]
        for reader in self._readers:
            reader.start()
        first = self.wait_for("stdout", "serving ")
        match = re.search(r"127\.0\.0\.1:(\d+);", first)
        assert match, first
        self.port = int(match.group(1))

    def _read(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self._lines[name].append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:  # end of output: wake waiters so they fail at once, not at timeout
            self._lines[name].append("")
            self._changed.notify_all()

    def lines(self, name: str = "stderr") -> list[str]:
        """Every line of ``stdout`` or ``stderr`` so far."""
        with self._changed:
            return [line for line in self._lines[name] if line]

    def wait_for(self, name: str, text: str, timeout: float = 30) -> str:
        """The first line of ``name`` containing ``text``, waiting for it to be printed."""
        def found() -> str | None:
            return next((ln for ln in self._lines[name] if text in ln), None)

        with self._changed:
            ended = self._changed.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout)
            line = found()
        if line is None:
            raise AssertionError(f"no {text!r} on fla-sim's {name} (ended: {ended}); "
                                 f"stdout {self.lines('stdout')}, stderr {self.lines('stderr')}")
        return line

    def stop(self) -> int:
        """SIGTERM, then the exit code (a process that does not stop is killed and fails)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("fla-sim serve did not stop on SIGTERM") from None
        for reader in self._readers:
            reader.join(10)
        return code


@pytest.fixture
def fla_sim_serve() -> Iterator[Callable[..., Served]]:
    """Start ``fla-sim serve HOME --port 0 [args]`` processes; each is stopped after the test."""
    started: list[Served] = []

    def start(home: Path, *args: str) -> Served:
        served = Served(home, *args)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


def _upload(port: int, user: str, key: Any, files: list[Path | str],
            directory: str = "INTEST") -> None:
    """Upload files in order with asyncssh (a str is the name of an empty file)."""
    import asyncio

    import asyncssh

    async def run() -> None:
        async with asyncssh.connect("127.0.0.1", port, username=user, client_keys=[key],
                                    known_hosts=None, agent_path=None) as conn, \
                conn.start_sftp_client() as sftp:
            for item in files:
                name = item if isinstance(item, str) else item.name
                data = b"" if isinstance(item, str) else item.read_bytes()
                async with sftp.open(f"{directory}/{name}", "wb") as f:
                    await f.write(data)

    asyncio.run(run())


@pytest.fixture
def sftp_upload() -> Callable[..., None]:
    """``sftp_upload(port, user, ssh_key, files, directory="INTEST")``: one SFTP session."""
    return _upload


@pytest.fixture
def example_home(tmp_path: Path) -> tuple[Any, Any]:
    """A new home with the example channel (acme-payroll, social secretariat 0123456749,
    sender 123456) and its mandates, and the channel's SSH key: ``(home, key)``."""
    import asyncssh

    from fla_core.mandates import MandateRecord
    from fla_sim.config import SimulatorHome
    from fla_sim.pytest_plugin import example_mandates

    home = SimulatorHome.init(tmp_path / "sim")
    key = asyncssh.generate_private_key("ssh-ed25519")
    home.add_channel("acme-payroll", "social-secretariat", "0123456749", "123456",
                     [key.export_public_key().decode()])
    for record in example_mandates("0123456749", "123456"):
        home.add_mandate(MandateRecord.from_mapping(record))
    return home, key
