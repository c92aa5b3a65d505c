"""The simulator home: ``simulator.toml``, keys, PKI and channel trees (spec 2, 3, 5.8; design 5).

Layout of a home::

    simulator.toml          [server] (host, port, every key of spec 5.8), [[channel]],
                            [[mandate]], [trust], [[fault]]
    host_key, host_key.pub  the SSH host key (ed25519)
    simulator.lock          held by the process serving the home (HomeLock)
    pki/                    the simulator test CA and the answer-signing certificate
    keys/<user>-N.pub       registered SSH public keys
    certs/<user>-N.pem      registered signing certificates (spec 6.6)
    trust/                  trust anchors and CRLs added with ``add_trust``
    channels/<user>/        IN, OUT, INTEST, OUTTEST, INTEST-S, OUTTEST-S
    archive/                processed uploads (spec 5.3 clean-up)
    journal.sqlite          the journal (fla_sim.store)
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import tomli_w
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fla_core.applications import KNOWN_UPLOAD_CODES
from fla_core.files import atomic_write, make_private, write_private
from fla_core.model import CHANNEL_DIRS, Quality
from fla_core.settings import ChannelProfile, Settings, check_number

if TYPE_CHECKING:
    from fla_core.mandates import MandateRecord
    from fla_core.pki import CertifiedKey, KeyType, PrivateKey
    from fla_core.signing import Signer, TrustStore

CONFIG_NAME = "simulator.toml"
LOCK_NAME = "simulator.lock"
# Certificates the home makes start this long before "now": a client clock a little behind the
# simulator's must still find them valid.
CLOCK_SLACK = timedelta(days=1)
GiB = 1 << 30

FAULT_WHEN = ("upload", "process", "answer")
FAULT_ACTIONS = ("drop-connection", "delay", "disk-full", "corrupt", "force-anomaly")
_SERVER_ONLY = ("host", "port", "legacy_ssh_rsa")


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
        base = home.path if isinstance(home, SimulatorHome) else Path(home)
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

    def channel(self, user: str) -> ChannelConfig | None:
        """The channel of a username, None when unknown."""
        for channel in self.channels:
            if channel.user == user:
                return channel
        return None


class SimulatorHome:
    """A simulator home directory (see the module docstring for its layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).absolute()

    # -- paths --------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """The ``simulator.toml`` of this home."""
        return self.path / CONFIG_NAME

    @property
    def journal_path(self) -> Path:
        """The SQLite journal of uploads, sets and answers."""
        return self.path / "journal.sqlite"

    @property
    def archive_dir(self) -> Path:
        """Where processed uploads go (spec 5.3 clean-up)."""
        return self.path / "archive"

    @property
    def host_key_path(self) -> Path:
        """The SSH host key of the simulator."""
        return self.path / "host_key"

    @property
    def ca_cert_path(self) -> Path:
        """The simulator test CA certificate (trusted for senders' signatures)."""
        return self.path / "pki" / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        """The private key of the simulator CA."""
        return self.path / "pki" / "ca-key.pem"

    @property
    def answer_cert_path(self) -> Path:
        """The certificate that signs the answers (FS of ACRF/NOTI)."""
        return self.path / "pki" / "answer.pem"

    @property
    def answer_key_path(self) -> Path:
        """The private key that signs the answers."""
        return self.path / "pki" / "answer-key.pem"

    # -- creation, loading, saving -------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The file whose lock a serving process holds (``HomeLock``)."""
        return self.path / LOCK_NAME

    @property
    def private_key_paths(self) -> tuple[Path, ...]:
        """Every private key of the home: host key, CA key, answer-signing key."""
        return (self.host_key_path, self.ca_key_path, self.answer_key_path)

    # -- creation, loading, saving -------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, *, force: bool = False,
             at: datetime | None = None) -> SimulatorHome:
        """Create a home: host key, simulator PKI, default ``simulator.toml`` and directories.

        On an existing home ``force`` renews the keys only (:meth:`renew_keys`): channels,
        mandates, trust anchors and the journal stay.
        """
        home = cls(path)
        if home.config_path.exists():
            if not force:
                raise ConfigError(f"{home.config_path}: already a simulator home; use --force "
                                  "to renew its host key and CA (channels, mandates, trust "
                                  "anchors and the journal are kept)")
            home.renew_keys(at)
            return home
        home._make_keys(at or datetime.now(UTC))
        home.save(SimulatorConfig(trust_anchors=[_rel(home.ca_cert_path, home.path)]))
        return home

    def renew_keys(self, at: datetime | None = None) -> Renewal:
        """New host key, CA and answer signer; the configuration and the journal are kept.

        Refused while a simulator serves the home (``HomeInUse``) or when ``simulator.toml``
        does not load (nothing would say what was kept).
        """
        try:
            config = self.load()
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the keys are renewed only in a home whose configuration "
                              "loads; fix it, or remove the home to start over)") from None
        with self.lock():
            old_ca = _first_cert(self.ca_cert_path)
            self._make_keys(at or datetime.now(UTC))
        return Renewal(config=config, old_ca_issued=self._issued_by(old_ca, config))

    def _make_keys(self, at: datetime) -> None:
        for sub in ("pki", "keys", "certs", "trust", "channels", "archive"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        import asyncssh  # here, not at the top: judge workers load this module, not asyncssh

        key = asyncssh.generate_private_key("ssh-ed25519", comment="fla-sim host key")
        write_private(self.host_key_path, key.export_private_key())
        key.write_public_key(str(self.host_key_path) + ".pub")
        self._make_pki(at)

    def _issued_by(self, ca: x509.Certificate | None,
                   config: SimulatorConfig) -> list[tuple[str, str]]:
        """(channel user, certificate path) of registered certificates ``ca`` signed."""
        if ca is None:
            return []
        found = []
        for channel in config.channels:
            for rel in channel.certificates:
                certs = _try_load_certs(self.path / rel)
                if any(_issued(cert, ca) for cert in certs):
                    found.append((channel.user, rel))
        return found

    def _make_pki(self, at: datetime) -> None:
        from fla_core import pki

        start = at - CLOCK_SLACK
        ca = pki.make_ca("fla-sim test CA", not_before=start, not_after=at + timedelta(days=3650))
        # EC P-256: two answers per set are signed, ECDSA costs a fraction of RSA-2048 (6.7
        # asks for SHA-256 detached CMS only; openssl and our clients verify both)
        answer = pki.issue_simulator_signer(ca, not_before=start,
                                            not_after=at + timedelta(days=3650),
                                            key_type="ec-p256")
        for ck, cert_path, key_path in ((ca, self.ca_cert_path, self.ca_key_path),
                                        (answer, self.answer_cert_path, self.answer_key_path)):
            pki.write_pem(cert_path, ck.cert)
            pki.write_pem(key_path, ck.key)

    def load(self) -> SimulatorConfig:
        """Read ``simulator.toml``; a ConfigError names the file, the key and the fix."""
        where = self.config_path
        try:
            raw = tomllib.loads(where.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: not found; create the home with "
                              f"'fla-sim init {self.path}'") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML ({exc}); fix the file") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None
        return _parse_config(raw, self.path, str(where))

    def save(self, config: SimulatorConfig) -> None:
        """Write ``simulator.toml`` (and the channels' key files) atomically."""
        keys_dir = self.path / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_path, _render_config(config, self.path).encode(),
                     durable=True)

    # -- configuration changes ----------------------------------------------------------------

    def add_channel(self, user: str, quality: Quality | str, company: str, sender: str,
                    ssh_keys: Sequence[str], *, certificates: Sequence[str | Path] = (),
                    applications: Sequence[str] = ("FLAC",),
                    quota_bytes: int = GiB) -> ChannelConfig:
        """Register a channel (spec 3.1); refused changes raise ConfigError, nothing stored."""

        config = self.load()
        taken = _same_root(user, config.channels)
        if taken is not None:
            raise ConfigError(f"channel user {user!r} already exists in {self.config_path}"
                              f"{_as(taken, user)}; choose another name")
        try:
            quality = Quality.parse(quality) if isinstance(quality, str) else quality
        except ValueError as exc:
            raise ConfigError(f"quality: {exc}") from None
        apps = frozenset(a.upper() for a in applications) or frozenset({"FLAC"})
        problem = _channel_problem(user, company, sender, apps)
        if problem:
            raise ConfigError(problem[1])
        if not ssh_keys:
            raise ConfigError(f"channel {user!r}: at least one SSH public key is needed "
                              "(spec 3.2: public-key login only)")
        import asyncssh

        for n, line in enumerate(ssh_keys, 1):
            try:
                asyncssh.import_public_key(line)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigError(f"SSH key {n} of {user!r}: not an OpenSSH public key "
                                  f"({exc}); give the .pub file") from None
        certs = [self._store_cert(Path(p), user, n) for n, p in enumerate(certificates, 1)]
        channel = ChannelConfig(user=user, quality=quality, company=company, sender=sender,
                                ssh_keys=[k.strip() for k in ssh_keys], certificates=certs,
                                applications=apps, quota_bytes=quota_bytes)
        config.channels.append(channel)
        self.save(config)
        self.channel_root(user)
        return channel

    def _store_cert(self, source: Path, user: str, n: int) -> str:
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the certificate ({exc.strerror})") from None
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ConfigError(f"{source}: not a PEM certificate") from None
        target = self.path / "certs" / f"{user}-{n}.pem"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return _rel(target, self.path)

    def register_certificate(self, user: str, pem: str | Path) -> str:
        """Register a signing certificate for an existing channel (spec 6.6 rule 1).

        From then on the channel accepts signatures by its registered certificates only.
        Returns the certificate's path in the home.
        """
        config = self.load()
        channel = config.channel(user)
        if channel is None:
            raise ConfigError(f"channel {user!r} is not in {self.config_path}; "
                              "see 'fla-sim channel list'")
        n = len(channel.certificates) + 1
        while (self.path / "certs" / f"{user}-{n}.pem").exists():  # never overwrite one
            n += 1
        rel = self._store_cert(Path(pem), user, n)
        config.channels[config.channels.index(channel)] = dataclasses.replace(
            channel, certificates=[*channel.certificates, rel])
        self.save(config)
        return rel

    def remove_channel(self, user: str) -> ChannelConfig:
        """Take a channel out of ``simulator.toml``: it can no longer log in. Its tree
        ``channels/USER``, key and certificate files and its journal records stay (a channel
        added again under the name finds them). Refused while one of its sets is being judged
        or answered (the processor needs the channel to answer it)."""
        config = self.load()
        channel = self._registered(config, user)
        busy = self._unanswered_sets(user)
        if busy:
            raise ConfigError(f"channel {user!r}: {len(busy)} set(s) or file(s) still being "
                              f"judged or answered ({', '.join(busy[:3])}); wait for their "
                              f"answers ('fla-sim status {self.path}') and remove it then")
        config.channels.remove(channel)
        self.save(config)
        return channel

    def _unanswered_sets(self, user: str) -> list[str]:
        """What the processor still has to answer for the channel: ``DIR/STEM`` of its sets
        queued, being judged or waiting for a NOTI, ``DIR/NAME`` of its GO/TD events not done
        and of its answers not written yet."""
        if not self.journal_path.exists():
            return []
        from fla_sim.store import Journal

        journal = Journal(self.journal_path)
        try:
            busy = [f"{s.directory}/{s.stem}" for s in journal.sets(
                ("QUEUED", "PROCESSING", "ACCEPTED")) if s.channel == user]
            busy += [f"{e.directory}/{e.name}" for e in journal.events(("pending", "planned"))
                     if e.channel == user]
            busy += [f"{a.directory}/{a.name}"
                     for a in journal.answers(user, written=False)]
            return list(dict.fromkeys(busy))
        finally:
            journal.close()

    def add_key(self, user: str, lines: Sequence[str]) -> list[str]:
        """Register more SSH public keys for a channel; a key it has already is refused."""
        import asyncssh

        config = self.load()
        channel = self._registered(config, user)
        have = {_key_data(line) for line in channel.ssh_keys}
        added: list[str] = []
        for n, line in enumerate(lines, 1):
            try:
                key = asyncssh.import_public_key(line)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigError(f"SSH key {n}: not an OpenSSH public key ({exc}); give the "
                                  ".pub file") from None
            if key.public_data in have:
                raise ConfigError(f"SSH key {key.get_fingerprint()} is already registered for "
                                  f"channel {user!r}")
            have.add(key.public_data)
            added.append(line.strip())
        if not added:
            raise ConfigError("no SSH public key given; give the .pub file of the key pair")
        config.channels[config.channels.index(channel)] = dataclasses.replace(
            channel, ssh_keys=[*channel.ssh_keys, *added])
        self.save(config)
        return added

    def revoke_key(self, user: str, keys: Sequence[str]) -> list[str]:
        """Unregister SSH keys of a channel, each given as an OpenSSH public key line or a
        fingerprint (``SHA256:...``, ``MD5:...``); returns the fingerprints revoked.

        Refused, nothing stored, when one of them is not a key of the channel, and for its
        last key (remove the channel instead, or add its new key first)."""
        config = self.load()
        channel = self._registered(config, user)
        for key in keys:
            if not any(_key_matches(line, key) for line in channel.ssh_keys):
                known = ", ".join(_fingerprint(line) for line in channel.ssh_keys) or "none"
                raise ConfigError(f"SSH key {_shown(key)} is not registered for channel "
                                  f"{user!r} (its keys: {known})")
        keep = [line for line in channel.ssh_keys
                if not any(_key_matches(line, key) for key in keys)]
        gone = [_fingerprint(line) for line in channel.ssh_keys if line not in keep]
        if not gone:
            raise ConfigError("no SSH key given; give the .pub file or the fingerprint")
        if not keep:
            raise ConfigError(f"SSH key {gone[0]} is the last key of channel {user!r}: add "
                              "its new key first ('fla-sim channel key add'), or remove the "
                              "channel ('fla-sim channel remove')")
        config.channels[config.channels.index(channel)] = dataclasses.replace(
            channel, ssh_keys=keep)
        self.save(config)
        # keys/USER-N.pub are written for the keys kept; a revoked key's file must not linger
        n = len(keep) + 1
        while (stale := self.path / "keys" / f"{user}-{n}.pub").exists():
            stale.unlink()
            n += 1
        return gone

    def _registered(self, config: SimulatorConfig, user: str) -> ChannelConfig:
        channel = config.channel(user)
        if channel is None:
            raise ConfigError(f"channel {user!r} is not in {self.config_path}; "
                              "see 'fla-sim channel list'")
        return channel

    def add_mandate(self, record: MandateRecord) -> None:
        """Store a mandate; an overlapping level-1 mandate (spec 2.2 M4) is refused."""
        from fla_core import mandates

        config = self.load()
        try:
            config.mandates = mandates.add_mandate(config.mandates, record)
        except mandates.MandateError as exc:  # M4 conflict or a malformed record
            raise ConfigError(f"mandate refused: {exc}") from None
        self.save(config)

    def add_trust(self, pem: str | Path) -> str:
        """Add a trust anchor (or a CRL) PEM for senders' signatures; returns its home path."""
        source = Path(pem)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
        is_crl = b"-----BEGIN X509 CRL-----" in data
        try:
            if is_crl:
                x509.load_pem_x509_crl(data)
            else:
                x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ConfigError(f"{source}: not a PEM certificate or CRL") from None
        config = self.load()
        bucket = config.crls if is_crl else config.trust_anchors
        for rel in bucket:  # the same file twice would only slow every verification down
            if (self.path / rel).is_file() and (self.path / rel).read_bytes() == data:
                return rel
        target = self.path / "trust" / source.name
        n = 1
        while target.exists() and target.read_bytes() != data:
            n += 1
            target = self.path / "trust" / f"{source.stem}-{n}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        rel = _rel(target, self.path)
        if rel not in bucket:
            bucket.append(rel)
        self.save(config)
        return rel

    # -- runtime helpers ----------------------------------------------------------------------

    def lock(self) -> HomeLock:
        """Take the home's lock (one serving process per home); ``HomeInUse`` names the holder."""
        return HomeLock(self.lock_path).acquire()

    def secure_private_keys(self) -> list[Path]:
        """Make the home's private keys 0600 (homes made before keys were written so); returns
        the keys that were readable by others."""
        return [p for p in self.private_key_paths if p.exists() and make_private(p)]

    def known_hosts_line(self, host: str, port: int) -> str:
        """The OpenSSH ``known_hosts`` line of the home's host key as served at host:port."""
        import asyncssh

        try:
            key = asyncssh.read_private_key(self.host_key_path)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ConfigError(f"{self.host_key_path}: no usable host key ({exc}); "
                              f"renew it with 'fla-sim init --force {self.path}'") from None
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        host = _WILDCARDS.get(host, host)
        # OpenSSH looks a host up as "[host]:port" unless the port is the default 22
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {algorithm} {blob}"

    def ca(self) -> CertifiedKey:
        """The simulator test CA with its private key (it issues senders' test certificates)."""
        from fla_core.pki import CertifiedKey
        from fla_core.signing import SigningError, load_signer

        try:
            signer = load_signer(self.ca_key_path, self.ca_cert_path)
        except SigningError as exc:
            raise ConfigError(f"simulator CA: {exc}; renew it with "
                              f"'fla-sim init --force {self.path}'") from None
        # a key pki.make_ca wrote, so one of the types CertifiedKey holds
        return CertifiedKey(key=cast("PrivateKey", signer.key), cert=signer.cert)

    def issue_signer(self, company: str, *, at: datetime | None = None, days: int = 730,
                     key_type: KeyType = "rsa2048",
                     common_name: str | None = None) -> CertifiedKey:
        """A sender signing certificate from the simulator CA for enterprise ``company``: what
        a channel of that company accepts (spec 6.3-6.6), valid from a day before ``at``."""
        from fla_core import pki
        from fla_core.identifiers import kbo_problem

        if kbo_problem(company) is not None:
            raise ConfigError(f"company {company!r}: not a valid enterprise number; give the "
                              "10-digit KBO/BCE number")
        if days < 1:
            raise ConfigError(f"validity of {days} days: give at least 1")
        ca = self.ca()
        at = at or datetime.now(UTC)
        # never beyond the CA: a certificate outliving its issuer fails path validation
        not_after = min(at + timedelta(days=days), ca.cert.not_valid_after_utc)
        return pki.issue_signer(ca, company_id=company, not_before=at - CLOCK_SLACK,
                                not_after=not_after, key_type=key_type,
                                common_name=common_name)

    def channel_root(self, user: str) -> Path:
        """The chroot of a channel, its six directories created; a symlink anywhere is refused."""
        from fla_core.identifiers import channel_user_problem

        problem = channel_user_problem(user)
        if problem is not None:  # "." or ".." would make the root the channels folder or home
            raise ConfigError(f"channel user {user!r}: {problem}")
        base = self.path / "channels"
        root = base / user
        for d in (base, root):
            if d.is_symlink():
                raise ConfigError(f"{d}: is a symbolic link; a channel tree must hold none")
        for name in CHANNEL_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                if os.path.islink(os.path.join(dirpath, name)):
                    raise ConfigError(f"{os.path.join(dirpath, name)}: is a symbolic link; "
                                      "remove it (a link could lead a client out of its root)")
        return root

    def trust_store(self, config: SimulatorConfig | None = None) -> TrustStore:
        """Trust anchors and CRLs for senders' signatures (of ``config``, default: as saved)."""
        from fla_core.signing import TrustStore

        if config is None:
            config = self.load()
        anchors = [c for rel in config.trust_anchors for c in _load_certs(self.path / rel)]
        crls = []
        for rel in config.crls:
            try:
                crls.append(x509.load_pem_x509_crl((self.path / rel).read_bytes()))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.path / rel}: unusable CRL ({exc}); "
                                  "fix or remove it from [trust] crls") from None
        return TrustStore(anchors=anchors, crls=crls)

    def answer_signer(self) -> Signer:
        """The key and certificate the simulator signs its answers with (spec 6.7)."""
        from fla_core.signing import load_signer

        return load_signer(self.answer_key_path, self.answer_cert_path)


@dataclass(frozen=True)
class Renewal:
    """What :meth:`SimulatorHome.renew_keys` kept, and what the new CA leaves behind."""

    config: SimulatorConfig  # the configuration, kept as it was
    # (channel user, certificate path) of registered certificates the replaced CA issued:
    # signatures made with them no longer chain to a trust anchor
    old_ca_issued: list[tuple[str, str]]


class HomeLock:
    """An exclusive ``flock`` on a home's lock file, held from :meth:`acquire` to
    :meth:`release`. The kernel drops it when the holder ends, however it ends (SIGKILL
    included), so a crash never leaves a stale lock; the file itself stays."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> HomeLock:
        """Take the lock now or raise ``HomeInUse`` naming the process that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HomeInUse(f"{self.path.parent}: in use by {self._holder()}; stop that "
                            "process first, or use another home") from None
        # who holds it, for the message of the next process that tries
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": _command_line(),
                                  "since": datetime.now(UTC).isoformat(timespec="seconds")
                                  }).encode() + b"\n", 0)
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text("utf-8"))
            return f"process {info['pid']} ({info['command']}, since {info['since']})"
        except (OSError, ValueError, KeyError, TypeError):  # written a moment from now
            return "another process"

    def release(self) -> None:
        """Give the lock up (closing the file releases it); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _command_line() -> str:
    argv = sys.argv or ["python"]
    return " ".join([Path(argv[0]).name, *argv[1:]])


# listen-on-everything addresses; a client reaches them through the loopback address
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def _first_cert(path: Path) -> x509.Certificate | None:
    certs = _try_load_certs(path)
    return certs[0] if certs else None


def _key_data(line: str) -> bytes | None:
    """The public data of an OpenSSH public key line, None when it is not one."""
    import asyncssh

    try:
        return asyncssh.import_public_key(line).public_data
    except (asyncssh.KeyImportError, ValueError):
        return None


def _fingerprint(line: str) -> str:
    """``SHA256:...`` of a registered key line (as ``ssh-keygen -l`` and the server log show)."""
    import asyncssh

    try:
        return asyncssh.import_public_key(line).get_fingerprint("sha256")
    except (asyncssh.KeyImportError, ValueError):
        return f"unreadable key {line[:20]}..."


def _key_matches(line: str, wanted: str) -> bool:
    """A registered key line is ``wanted``: the same key, or its SHA256 or MD5 fingerprint."""
    import asyncssh

    wanted = wanted.strip()
    data = _key_data(line)
    if data is None:
        return False
    if wanted.upper().startswith(("SHA256:", "MD5:")):
        key = asyncssh.import_public_key(line)
        return (wanted == key.get_fingerprint("sha256")
                or wanted.lower() == key.get_fingerprint("md5").lower())
    return _key_data(wanted) == data


def _shown(key: str) -> str:
    """A key argument as an error message names it: its fingerprint, or the text given."""
    return _fingerprint(key) if _key_data(key) is not None else repr(key.strip()[:60])


def _try_load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []


def _issued(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


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


# -- simulator.toml reading -------------------------------------------------------------------


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None


def _need(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}; add it")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: key {key!r} must be a {kind.__name__}, "
                          f"not {type(value).__name__}")
    return value


def _parse_config(raw: dict[str, Any], base: Path, source: str) -> SimulatorConfig:
    known = {"server", "channel", "mandate", "trust", "fault"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: unknown table [{key}]; known: "
                              f"{', '.join(sorted(known))}")
    server = dict(raw.get("server", {}))
    host = server.pop("host", "127.0.0.1")
    legacy = server.pop("legacy_ssh_rsa", False)
    durability = server.pop("durability", "process")
    ciphers = _ciphers(server.pop("ciphers", list(DEFAULT_CIPHERS)), source)
    refuse_unusable = server.pop("refuse_unusable_names", True)
    numbers: dict[str, Any] = {}
    for key, (default, low, high) in SERVER_NUMBERS.items():
        try:
            numbers[key] = check_number(f"{source} [server]", key, server.pop(key, default),
                                        low, high)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not isinstance(refuse_unusable, bool):
        raise ConfigError(f"{source} [server]: key 'refuse_unusable_names' must be true or "
                          "false")
    if not isinstance(host, str):
        raise ConfigError(f"{source} [server]: key 'host' must be a string")
    if not isinstance(legacy, bool):
        raise ConfigError(f"{source} [server]: key 'legacy_ssh_rsa' must be true or false")
    if durability not in DURABILITY_MODES:
        raise ConfigError(f"{source} [server]: key 'durability' must be "
                          f"{' or '.join(repr(m) for m in DURABILITY_MODES)}, not {durability!r}")
    try:
        settings = Settings.from_mapping(server, source=f"{source} [server]")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    channels: list[ChannelConfig] = []
    for n, table in enumerate(raw.get("channel", []), 1):
        channel = _parse_channel(table, base, f"{source} [[channel]] #{n}")
        taken = _same_root(channel.user, channels)
        if taken is not None:
            raise ConfigError(f"{source} [[channel]] #{n}: key 'user': channel user "
                              f"{channel.user!r} is defined twice{_as(taken, channel.user)}; "
                              "give each channel its own user")
        channels.append(channel)
    mandates = [_parse_mandate(t, f"{source} [[mandate]] #{n}")
                for n, t in enumerate(raw.get("mandate", []), 1)]
    trust = raw.get("trust", {})
    anchors = list(trust.get("anchors", []))
    crls = list(trust.get("crls", []))
    faults = []
    for n, table in enumerate(raw.get("fault", []), 1):
        try:
            faults.append(FaultSpec(**table))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source} [[fault]] #{n}: {exc}") from None
    return SimulatorConfig(host=host, settings=settings, channels=channels,
                           mandates=mandates, trust_anchors=anchors, crls=crls, faults=faults,
                           legacy_ssh_rsa=legacy, durability=durability, ciphers=ciphers,
                           refuse_unusable_names=refuse_unusable, **numbers)


def _ciphers(value: Any, source: str) -> tuple[str, ...]:
    """``[server] ciphers``: a non-empty list of encryption algorithms asyncssh knows."""
    from asyncssh.encryption import get_encryption_algs

    known = [a.decode() for a in get_encryption_algs()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source} [server]: key 'ciphers' must be a non-empty list of "
                          f"cipher names, e.g. {list(DEFAULT_CIPHERS)!r}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{source} [server]: key 'ciphers': unknown {unknown!r}; "
                          f"known: {', '.join(known)}")
    return tuple(value)


def _parse_channel(table: dict[str, Any], base: Path, where: str) -> ChannelConfig:
    user = _need(table, "user", str, where)
    where = f"{where} (user {user!r})"
    try:
        quality = Quality.parse(_need(table, "quality", str, where))
    except ValueError as exc:
        raise ConfigError(f"{where}: key 'quality': {exc}") from None
    keys: list[str] = []
    for rel in _need(table, "ssh_keys", list, where):
        path = base / rel
        try:
            keys.extend(line.strip() for line in path.read_text("utf-8").splitlines()
                        if line.strip() and not line.startswith("#"))
        except OSError as exc:
            raise ConfigError(f"{where}: key 'ssh_keys': cannot read {path} ({exc.strerror}); "
                              "fix the path or add the key again") from None
    company = _need(table, "company", str, where)
    sender = _need(table, "sender", str, where)
    apps = frozenset(str(a).upper() for a in table.get("applications", ["FLAC"]))
    problem = _channel_problem(user, company, sender, apps)
    if problem:
        key, message = problem
        raise ConfigError(f"{where}: key {key!r}: {message}")
    try:
        quota = check_number(where, "quota_bytes", table.get("quota_bytes", GiB), 0)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ChannelConfig(user=user, quality=quality, company=company, sender=sender,
                         ssh_keys=keys, certificates=list(table.get("certificates", [])),
                         applications=apps, quota_bytes=quota)


def _parse_mandate(table: dict[str, Any], where: str) -> MandateRecord:
    from fla_core.mandates import MandateError, MandateRecord

    try:
        return MandateRecord.from_mapping(table)
    except MandateError as exc:
        raise ConfigError(f"{where}: {exc}; fix the record") from None


# -- simulator.toml writing -------------------------------------------------------------------

# tomli-w writes no comments: the file starts with this one.
CONFIG_HEADER = (
    "# fla-sim simulator home (design 5); a running 'fla-sim serve' re-reads channels,\n"
    "# mandates and trust when this file changes ([server] and faults: restart it).\n")


def _render_config(config: SimulatorConfig, base: Path) -> str:
    """The text of ``simulator.toml``: every value written by tomli-w, the arrays of tables as
    ``[[channel]]`` blocks (tomli-w would write a short one as an inline table)."""
    server: dict[str, Any] = {
        "host": config.host, "port": config.port, "legacy_ssh_rsa": config.legacy_ssh_rsa,
        "durability": config.durability, "ciphers": list(config.ciphers),
        "refuse_unusable_names": config.refuse_unusable_names,
        **{key: getattr(config, key) for key in SERVER_NUMBERS},
        **config.settings.to_mapping()}
    blocks = [CONFIG_HEADER, tomli_w.dumps({"server": server})]
    for channel in config.channels:
        key_paths = []
        for n, line in enumerate(channel.ssh_keys, 1):
            path = base / "keys" / f"{channel.user}-{n}.pub"
            atomic_write(path, (line + "\n").encode(), durable=True)
            key_paths.append(_rel(path, base))
        blocks.append(_table_of_array("channel", {
            "user": channel.user, "quality": channel.quality.alias, "company": channel.company,
            "sender": channel.sender, "ssh_keys": key_paths, "certificates": channel.certificates,
            "applications": sorted(channel.applications), "quota_bytes": channel.quota_bytes}))
    blocks += [_table_of_array("mandate", m.to_mapping()) for m in config.mandates]
    blocks.append(tomli_w.dumps({"trust": {"anchors": config.trust_anchors,
                                           "crls": config.crls}}))
    for fault in config.faults:
        blocks.append(_table_of_array("fault", {
            f.name: getattr(fault, f.name) for f in fields(fault)  # when/action: no default
            if getattr(fault, f.name) is not None and getattr(fault, f.name) != f.default}))
    return "\n".join(blocks)


def _table_of_array(name: str, table: dict[str, Any]) -> str:
    """One ``[[name]]`` table (of plain values: a nested table would land outside it)."""
    assert not any(isinstance(v, dict) for v in table.values()), table
    return f"[[{name}]]\n" + tomli_w.dumps(table)
