"""The simulator home on disk: its layout, creation and key renewal, the configuration changes
(channels, keys, certificates, mandates, trust) and the lock of the process serving it. Layout::

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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fla_core.files import atomic_write, make_private, write_private
from fla_core.model import CHANNEL_DIRS, Quality
from fla_sim.config.lock import HomeLock
from fla_sim.config.model import (
    ChannelConfig,
    ConfigError,
    GiB,
    SimulatorConfig,
    _as,
    _channel_problem,
    _load_certs,
    _same_root,
)
from fla_sim.config.ssh_keys import (
    _fingerprint,
    _key_data,
    _key_matches,
    _shown,
    remove_stale_key_files,
    write_key_files,
)
from fla_sim.config.toml_io import _render_config, read_config

if TYPE_CHECKING:
    from fla_core.mandates import MandateRecord
    from fla_core.pki import CertifiedKey, KeyType, PrivateKey
    from fla_core.signing import Signer, TrustStore

CONFIG_NAME = "simulator.toml"
LOCK_NAME = "simulator.lock"
# Certificates the home makes start this long before "now": a client clock a little behind the
# simulator's must still find them valid.
CLOCK_SLACK = timedelta(days=1)


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
    def helpers_dir(self) -> Path:
        """Records of the helper processes running for this home (fla_sim.leftovers)."""
        return self.path / "run" / "helpers"

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
        return read_config(self.config_path, self.path)

    def save(self, config: SimulatorConfig) -> None:
        """Write ``simulator.toml`` atomically and durably.

        The file names key files, not keys. The operations that add or revoke keys write theirs
        first (:meth:`write_key_files`); for a configuration built by hand the files it lacks
        are written here, so a saved home always loads. A key file that already holds its key
        is never rewritten."""
        self.write_key_files(config)
        atomic_write(self.config_path, _render_config(config).encode(), durable=True)

    def write_key_files(self, config: SimulatorConfig) -> list[Path]:
        """Write the ``keys/<user>-N.pub`` of ``config``'s channels that are missing or hold
        another key; returns the files written."""
        return [path for channel in config.channels
                for path in write_key_files(self.path, channel)]

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
        write_key_files(self.path, channel)
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
        at = config.channels.index(channel)
        channel = config.channels[at] = dataclasses.replace(
            channel, ssh_keys=[*channel.ssh_keys, *added])
        write_key_files(self.path, channel)
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
        at = config.channels.index(channel)
        channel = config.channels[at] = dataclasses.replace(channel, ssh_keys=keep)
        # keys/USER-N.pub follow the order of the keys: those after a revoked one move down
        write_key_files(self.path, channel)
        self.save(config)
        remove_stale_key_files(self.path, channel)  # a revoked key's file must not linger
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


# listen-on-everything addresses; a client reaches them through the loopback address
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def _first_cert(path: Path) -> x509.Certificate | None:
    certs = _try_load_certs(path)
    return certs[0] if certs else None


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


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


