"""What ``simulator.toml`` holds, as values: the configuration dataclasses, their defaults and
ranges, and the checks of a channel's fields (spec 3.1, 5.8; design 5). No file I/O but reading
a channel's registered certificates for its profile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fla_core.applications import KNOWN_UPLOAD_CODES
from fla_core.model import Quality
from fla_core.settings import ChannelProfile, Settings

if TYPE_CHECKING:
    from fla_core.mandates import MandateRecord
    from fla_sim.config.home import SimulatorHome

GiB = 1 << 30

FAULT_WHEN = ("upload", "process", "answer")
FAULT_ACTIONS = ("drop-connection", "delay", "disk-full", "corrupt", "force-anomaly")


class ConfigError(Exception):
    """A simulator home or a configuration change that cannot be used; the message says the fix."""


class HomeInUse(ConfigError):
    """Another process holds the home's lock (it serves the home); the message names it."""


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault (design 5 ``[[fault]]``)."""

    when: str  # upload | process | answer
    action: str  # drop-connection | delay | disk-full | corrupt | force-anomaly
    match: str = "*"  # glob on the file name the fault applies to
    delay_ms: int = 0  # for "delay"
    code: str | None = None  # for "force-anomaly": the code to force
    times: int | None = None  # how many times it fires; None = always

    def __post_init__(self) -> None:
        if self.when not in FAULT_WHEN:
            raise ValueError(f"fault 'when' must be one of {', '.join(FAULT_WHEN)}, "
                             f"not {self.when!r}")
        if self.action not in FAULT_ACTIONS:
            raise ValueError(f"fault 'action' must be one of {', '.join(FAULT_ACTIONS)}, "
                             f"not {self.action!r}")


@dataclass(frozen=True)
class ChannelConfig:
    """One SFTP channel (spec 3.1)."""

    user: str
    quality: Quality
    company: str
    sender: str
    ssh_keys: list[str]  # OpenSSH public key lines (files keys/<user>-N.pub in the home)
    certificates: list[str] = field(default_factory=list)  # PEM paths relative to the home
    applications: frozenset[str] = frozenset({"FLAC"})
    quota_bytes: int = GiB

    def profile(self, home: SimulatorHome | Path | str) -> ChannelProfile:
        """The channel as the checks see it, registered certificates as DER."""
        base = Path(home) if isinstance(home, str | Path) else home.path
        ders = []
        for rel in self.certificates:
            for cert in _load_certs(base / rel):
                ders.append(cert.public_bytes(serialization.Encoding.DER))
        return ChannelProfile(user=self.user, sender=self.sender, quality=self.quality,
                              company_id=self.company, applications=self.applications,
                              certificates=tuple(ders))


DURABILITY_MODES = ("process", "power")
# An FI upload this big is validated while it arrives, by a process following the file
# (fla_sim.prescan); smaller ones are read at their GO as before. 0 turns the pre-scan off.
DEFAULT_PRESCAN_MIN_BYTES = 8 * 1024 * 1024
# SSH ciphers offered by default. The client's order decides among them, so leaving a cipher out
# is the only way to steer: asyncssh builds chacha20-poly1305 from primitives per packet (about 5x
# the cost of AES-GCM measured here), and every SFTP client we know speaks AES-GCM or AES-CTR.
DEFAULT_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
                   "aes192-ctr", "aes256-ctr")
# How long a session's just-closed upload still answers STAT and SETSTAT by name once the
# processor has archived it: rclone and paramiko check a file right after uploading it.
DEFAULT_CLOSE_GRACE_MS = 10_000
# Caps that keep one client from taking the simulator down (fla_sim.limits; docs/simulator.md):
# [server] key -> (default, lowest, highest). Handles are open files and directories; the
# attempts are failed public-key logins, per connection as OpenSSH's MaxAuthTries (6) and per
# source address within a sliding window (0: no per-source limit).
CAPS: dict[str, tuple[int, int, int]] = {
    "max_handles_per_session": (64, 1, 1_000_000),
    "max_handles_per_channel": (256, 1, 1_000_000),
    "max_auth_attempts": (6, 1, 100),
    "max_auth_failures_per_source": (30, 0, 1_000_000),
    "auth_failure_window_s": (60, 1, 86_400),
    # files in IN* at once, uploads in progress included (fla_sim.server, the quota)
    "max_files_per_channel": (10_000, 1, 1_000_000),
    # connections not yet logged in, in all and per source address (OpenSSH's MaxStartups and
    # PerSourceMaxStartups), and how long one may take to log in (LoginGraceTime)
    # Every local client is 127.0.0.1: a test suite or a bench opens tens of connections at
    # once from it (32 senders of bench_channel were refused at a per-source cap of 10)
    "max_startups": (256, 1, 100_000),
    "max_startups_per_source": (128, 1, 100_000),
    "login_timeout_s": (120, 1, 86_400),
    # logged-in SSH connections of one channel at once
    "max_connections_per_channel": (64, 1, 100_000),
}
# What one set may cost a judge worker (fla_sim.judging): CPU seconds of wall time and megabytes
# of address space, beyond which the set is answered ACRF-999 (0: no limit); sets still running
# after judge_slow_ms give way to the others (their worker runs at a lower priority) and extra
# workers, up to judge_burst_workers, start so that another channel's set never waits behind them.
JUDGE_LIMITS: dict[str, tuple[int, int, int]] = {
    "judge_time_budget_s": (120, 0, 86_400),
    "judge_memory_mb": (4096, 0, 1_048_576),
    "judge_slow_ms": (500, 0, 3_600_000),
    "judge_burst_workers": (2, 0, 64),
}
# Every numeric [server] key of the simulator itself: key -> (default, lowest, highest); the
# numeric keys of spec 5.8 are in fla_core.settings.NUMBER_RANGES. Both are checked by
# fla_core.settings.check_number ("[server] port = -1: must be 0-65535").
SERVER_NUMBERS: dict[str, tuple[int, int, int | None]] = {
    "port": (8022, 0, 65535),
    "prescan_min_bytes": (DEFAULT_PRESCAN_MIN_BYTES, 0, None),  # 0: no pre-scan
    "judge_workers": (1, 0, 64),  # 0: judge in the simulator process
    "close_grace_ms": (DEFAULT_CLOSE_GRACE_MS, 0, 3_600_000),  # 0: no grace
    **CAPS,
    **JUDGE_LIMITS,
}


@dataclass
class SimulatorConfig:
    """Everything ``simulator.toml`` holds, keys and certificates still as paths/lines."""

    host: str = "127.0.0.1"
    port: int = 8022
    settings: Settings = field(default_factory=Settings)
    channels: list[ChannelConfig] = field(default_factory=list)
    mandates: list[MandateRecord] = field(default_factory=list)
    trust_anchors: list[str] = field(default_factory=list)  # PEM paths relative to the home
    crls: list[str] = field(default_factory=list)
    faults: list[FaultSpec] = field(default_factory=list)
    legacy_ssh_rsa: bool = False  # spec 3.2 "ssh-rsa only" compatibility mode
    # "process": answers survive a SIGKILL of the simulator; "power": also a power cut (slower)
    durability: str = "process"
    prescan_min_bytes: int = DEFAULT_PRESCAN_MIN_BYTES  # see DEFAULT_PRESCAN_MIN_BYTES
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS  # SSH encryption algorithms offered
    # processes judging sets (signature, schema, rules) beside the SSH/SFTP process; 0: in it
    judge_workers: int = 1
    close_grace_ms: int = DEFAULT_CLOSE_GRACE_MS  # see DEFAULT_CLOSE_GRACE_MS
    # OPEN refuses a name that can never be part of a set (fails N1-N4 and is no GO or TD)
    refuse_unusable_names: bool = True
    max_handles_per_session: int = CAPS["max_handles_per_session"][0]  # see CAPS
    max_handles_per_channel: int = CAPS["max_handles_per_channel"][0]
    max_auth_attempts: int = CAPS["max_auth_attempts"][0]
    max_auth_failures_per_source: int = CAPS["max_auth_failures_per_source"][0]
    auth_failure_window_s: int = CAPS["auth_failure_window_s"][0]
    max_files_per_channel: int = CAPS["max_files_per_channel"][0]
    max_startups: int = CAPS["max_startups"][0]
    max_startups_per_source: int = CAPS["max_startups_per_source"][0]
    login_timeout_s: int = CAPS["login_timeout_s"][0]
    max_connections_per_channel: int = CAPS["max_connections_per_channel"][0]
    judge_time_budget_s: int = JUDGE_LIMITS["judge_time_budget_s"][0]  # see JUDGE_LIMITS
    judge_memory_mb: int = JUDGE_LIMITS["judge_memory_mb"][0]
    judge_slow_ms: int = JUDGE_LIMITS["judge_slow_ms"][0]
    judge_burst_workers: int = JUDGE_LIMITS["judge_burst_workers"][0]

    def channel(self, user: str) -> ChannelConfig | None:
        """The channel of a username, None when unknown."""
        for channel in self.channels:
            if channel.user == user:
                return channel
        return None


def _channel_problem(user: str, company: str, sender: str,
                     apps: frozenset[str]) -> tuple[str, str] | None:
    """The key and the message of the first channel field that cannot be used (spec 3.1), None
    when they all can."""
    from fla_core.identifiers import (
        CHECK_DIGITS,
        RESERVED,
        channel_user_problem,
        kbo_problem,
        sender_problem,
    )

    problem = channel_user_problem(user)
    if problem is not None:
        return "user", f"channel user {user!r}: {problem} (spec 3.1)"
    problem = sender_problem(sender)
    if problem == RESERVED:
        return "sender", (f"sender {sender}: 000000 and 999999 are reserved (spec 3.1); "
                          "choose another sender number")
    if problem is not None:
        return "sender", f"sender {sender!r}: a sender number is 6 digits 0-9 (spec 3.1)"
    problem = kbo_problem(company)
    if problem is not None:
        what = "bad check digits" if problem == CHECK_DIGITS else "not 10 digits"
        return "company", (f"company {company!r}: not a valid enterprise number ({what}, code "
                           f"{problem}); give the 10-digit KBO/BCE number")
    unknown = sorted(apps - KNOWN_UPLOAD_CODES)
    if unknown:
        return "applications", (f"application {', '.join(unknown)}: unknown application code; "
                                f"known: {', '.join(sorted(KNOWN_UPLOAD_CODES))}")
    return None


def _same_root(user: str, channels: Sequence[ChannelConfig]) -> ChannelConfig | None:
    """The channel whose root folder ``user`` would share: the same name, also in another case
    (on a case-insensitive file system, macOS's and Windows' default, channels/Acme and
    channels/acme are one folder, so two channels would see each other's files)."""
    for channel in channels:
        if channel.user.casefold() == user.casefold():
            return channel
    return None


def _as(existing: ChannelConfig, user: str) -> str:
    """`` as 'Acme'`` when a name clashes with an existing one in another case, else empty."""
    return "" if existing.user == user else f" as {existing.user!r}"


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None
