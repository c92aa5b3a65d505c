"""pytest fixtures for testing a sender against the BATCH simulator (entry point ``pytest11``).

* ``fla_clock``   -- a controllable clock; ``--fla-clock=2026-03-16T10:15:00`` (or the ini key
                     ``fla_clock``) fixes it, otherwise it starts at the current time. It does not
                     move by itself: ``fla_clock.advance(seconds=...)``.
* ``fla_pki``     -- a test CA and signer certificates made with ``fla_core.pki``.
* ``fla_sim_home``-- a fresh simulator home in ``tmp_path``, trusting ``fla_pki``'s CA.
* ``fla_channel`` -- a registered channel (spec example context by default): SSH key pair,
                     signer certificate, level-1 and level-2 FLAC mandates for ``0897223670``.
* ``fla_plugins`` -- the simulator's plugin manager, built here: the built-in plugins and the
                     simulator's hooks, never what happens to be installed (no entry points,
                     ``FLA_PLUGINS`` or ``FLA_DISABLED_PLUGINS``). Override the fixture to test
                     with plugins of your own.
* ``fla_sim``     -- a running :class:`fla_sim.api.Simulator` on a free loopback port, with
                     ``fla_plugins``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fla_core.pki import CertifiedKey
    from fla_core.plugins import FlaPlugins
    from fla_core.signing import Signer
    from fla_core.transport import ChannelAddress
    from fla_sim.api import Simulator
    from fla_sim.config import SimulatorHome

DEFAULT_TZ = "Europe/Brussels"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--fla-clock`` and its ini default ``fla_clock``."""
    group = parser.getgroup("fla_sim", "BATCH channel simulator")
    group.addoption("--fla-clock", dest="fla_clock", default=None,
                    help="fix the simulator clock (ISO date-time, local to Europe/Brussels "
                         "unless it carries an offset), e.g. 2026-03-16T10:15:00")
    parser.addini("fla_clock", "default for --fla-clock", default="")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a malformed ``--fla-clock`` before any test runs."""
    # a bad clock is a usage error of the whole run, reported once, not an error per test
    text = _clock_text(config)
    if text:
        parse_clock(text)


def _clock_text(config: pytest.Config) -> str:
    return str(config.getoption("fla_clock", None) or config.getini("fla_clock") or "")


class FixedClock:
    """A clock that only moves when told to; call it to read the time (aware datetime)."""

    def __init__(self, at: datetime):
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (aware)."""
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        with self._lock:
            self._at = at

    def advance(self, **delta: float) -> datetime:
        """Move forward by a ``timedelta(**delta)``; returns the new time."""
        with self._lock:
            self._at = self._at + timedelta(**delta)
            return self._at


def parse_clock(text: str, tz: str = DEFAULT_TZ) -> datetime:
    """An ISO date-time; a naive one is read in ``tz``."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise pytest.UsageError(f"--fla-clock {text!r}: not an ISO date-time such as "
                                "2026-03-16T10:15:00") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo(tz))


@pytest.fixture
def fla_clock(request: pytest.FixtureRequest) -> FixedClock:
    """The simulator clock: fixed by --fla-clock / ini fla_clock, else the current time."""
    text = _clock_text(request.config)
    if text:
        return FixedClock(parse_clock(text))
    return FixedClock(datetime.now(ZoneInfo(DEFAULT_TZ)).replace(microsecond=0))


@dataclass
class FlaPki:
    """A test CA (PEM in ``directory``) that issues signer certificates for senders."""

    ca: CertifiedKey
    directory: Path
    ca_path: Path
    at: datetime
    issued: list[CertifiedKey] = field(default_factory=list)

    def signer(self, company_id: str | None, **kw: Any) -> CertifiedKey:
        """A signer certificate (spec 6.6) for an enterprise number, valid around the clock."""
        from fla_core import pki

        kw.setdefault("not_before", self.at - timedelta(days=1))
        ck = pki.issue_signer(self.ca, company_id=company_id, **kw)
        self.issued.append(ck)
        return ck

    def write(self, ck: CertifiedKey, stem: str) -> tuple[Path, Path]:
        """Write key and certificate PEM files; returns (key path, cert path)."""
        from fla_core import pki

        key_path, cert_path = self.directory / f"{stem}-key.pem", self.directory / f"{stem}.pem"
        pki.write_pem(key_path, ck.key)
        pki.write_pem(cert_path, [ck.cert, *ck.chain])
        return key_path, cert_path


@pytest.fixture
def fla_pki(tmp_path: Path, fla_clock: FixedClock) -> FlaPki:
    """A fresh test CA written under ``tmp_path/pki``."""
    from fla_core import pki

    at = fla_clock()
    directory = tmp_path / "fla-pki"
    directory.mkdir()
    ca = pki.make_ca("fla pytest CA", not_before=at - timedelta(days=1))
    ca_path = directory / "ca.pem"
    pki.write_pem(ca_path, ca.cert)
    return FlaPki(ca=ca, directory=directory, ca_path=ca_path, at=at)


@pytest.fixture
def fla_sim_home(tmp_path: Path, fla_clock: FixedClock, fla_pki: FlaPki) -> SimulatorHome:
    """An initialised simulator home that trusts ``fla_pki``'s CA."""
    from fla_sim.config import SimulatorHome

    home = SimulatorHome.init(tmp_path / "sim-home", at=fla_clock())
    home.add_trust(fla_pki.ca_path)
    return home


@dataclass(frozen=True)
class ChannelInfo:
    """A registered channel and what a sender needs to use it."""

    user: str
    sender: str
    company: str
    quality: str
    applications: frozenset[str]
    ssh_key: Path  # private key (OpenSSH format) for the SFTP login
    ssh_public: str
    signer_key: Path  # PEM private key of the signer certificate
    signer_cert: Path  # PEM certificate (+ chain)
    certified: CertifiedKey

    @property
    def signer(self) -> Signer:
        """The channel's signing key and certificate, ready for ``sign_file``."""
        return self.certified.signer()

    def address(self, sim: Simulator | int, host: str = "127.0.0.1") -> ChannelAddress:
        """Where ``fla_core.transport`` reaches this channel on a running simulator (or port)."""
        from fla_core.transport import ChannelAddress

        port = sim if isinstance(sim, int) else sim.port
        if port is None:
            raise ValueError("the simulator is not running: it has no port yet")
        return ChannelAddress(host=host, port=port, user=self.user, identity=self.ssh_key)


def add_channel(home: SimulatorHome, pki_: FlaPki, directory: Path, *,
                user: str = "acme-payroll", quality: str = "social-secretariat",
                company: str = "0123456749", sender: str = "123456",
                applications: tuple[str, ...] = ("FLAC", "DMFA", "DIMN"),
                mandates: bool = True) -> ChannelInfo:
    """Register a channel with a fresh SSH key pair and signer certificate."""
    import asyncssh

    from fla_core.files import write_private
    from fla_core.mandates import MandateRecord

    directory.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = write_private(directory / f"{user}-ssh", key.export_private_key())
    public = key.export_public_key().decode().strip()
    ck = pki_.signer(company)
    signer_key, signer_cert = pki_.write(ck, f"{user}-signer")
    home.add_channel(user, quality, company, sender, [public], applications=applications)
    if mandates:
        for record in example_mandates(company, sender):
            home.add_mandate(MandateRecord.from_mapping(record))
    return ChannelInfo(user=user, sender=sender, company=company, quality=quality,
                       applications=frozenset(applications), ssh_key=key_path,
                       ssh_public=public, signer_key=signer_key, signer_cert=signer_cert,
                       certified=ck)


def example_mandates(representative: str, sender: str) -> list[dict[str, Any]]:
    """The level-1 and level-2 FLAC mandates of the spec's example context."""
    return [
        {"level": 1, "employer": "0897223670", "representative": representative,
         "application": "FLAC", "start": "20241"},
        {"level": 2, "employer": "0897223670", "representative": representative,
         "application": "FLAC", "sender": sender},
    ]


@pytest.fixture
def fla_channel(fla_sim_home: SimulatorHome, fla_pki: FlaPki, tmp_path: Path) -> ChannelInfo:
    """The spec's example channel ``acme-payroll`` (sender 123456, KBO 0123456749)."""
    return add_channel(fla_sim_home, fla_pki, tmp_path / "fla-channel")


@pytest.fixture
def fla_plugins() -> FlaPlugins:
    """A fresh manager with the built-in plugins and the simulator's hooks, nothing else."""
    from fla_core.plugins import FlaPlugins
    from fla_sim import hookspecs

    return FlaPlugins(entry_points=False, modules=(), blocked=(), specs=[hookspecs])


@pytest.fixture
def fla_sim(fla_sim_home: SimulatorHome, fla_channel: ChannelInfo, fla_clock: FixedClock,
            fla_plugins: FlaPlugins) -> Iterator[Simulator]:
    """A running simulator on a free loopback port, driven by ``fla_clock``."""
    from fla_sim.api import Simulator

    with Simulator(fla_sim_home.path, clock=fla_clock, plugins=fla_plugins) as sim:
        yield sim
