"""Send triplets to a BATCH channel over SFTP and fetch its answers (spec 5.1, 5.8, 9).

The client uploads each set in the order the channel expects (every FI part, its FS, then
the GO), remembers on disk what was completely uploaded so that a run interrupted by a dropped
connection resumes without sending a file twice, and polls the answer directories, reading an
answer only once its GO is present (spec 5.8).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from fla_core.files import atomic_write
from fla_core.model import ANSWER_DIRS, Environment
from fla_core.names import (
    UPLOAD_PREFIXES,
    FileName,
    parse_answer,
    prefix_of,
    stem_env,
    stem_of,
    tail_of,
)

STATE_FILE = ".fla-sent.json"
BLOCK_SIZE = 256 * 1024


class TransportError(Exception):
    """The channel could not be reached or refused an operation; the message says which."""


@dataclass(frozen=True)
class ChannelAddress:
    """Where and as whom to connect. ``known_hosts`` None skips host-key checks (local use)."""

    host: str
    port: int
    user: str
    identity: Path
    known_hosts: Path | None = None
    connect_timeout: float = 15.0


@dataclass(frozen=True)
class UploadSet:
    """The files of one set in upload order, and the directory they go to."""

    stem: str
    directory: str
    files: tuple[Path, ...]  # FI/FS parts in upload order, the GO (or TD) last

    @property
    def trigger(self) -> str:
        """The name of the set's trigger file (GO or TD), uploaded last."""
        return self.files[-1].name


@dataclass
class SendReport:
    """What one send did: files uploaded, files skipped, triggers sent."""

    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already sent by an earlier run
    triggers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FetchedAnswer:
    """An answer triplet downloaded from an answer directory."""

    name: FileName  # of the FO/CO file
    directory: str
    path: Path  # local copy of the FO/CO
    signature: Path | None  # local copy of the FS


def plan_sets(folder: Path) -> list[UploadSet]:
    """Group the FI/FS/GO/TD files of a folder into sets in the channel's upload order."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        stem = stem_of(path.name)
        if stem is None or prefix_of(path.name) not in UPLOAD_PREFIXES:
            continue
        groups.setdefault(stem, []).append(path)
    sets = []
    for stem, paths in sorted(groups.items()):
        env = Environment(stem_env(stem)) if stem[-1] in "RTS" else Environment.T
        data = sorted((p for p in paths if prefix_of(p.name) in ("FI", "FS")), key=_part_order)
        triggers = [p for p in paths if prefix_of(p.name) in ("GO", "TD")]
        sets.append(UploadSet(stem, env.upload_dir, tuple(data + triggers)))
    return sets


def _part_order(path: Path) -> tuple[str, str]:
    # FI part n, then its FS, then part n+1: the order the channel expects (spec 5.1).
    parts = path.name.split(".")
    return (parts[-1], parts[0])


class _SentState:
    """Which files a folder already delivered completely, kept beside the files."""

    def __init__(self, folder: Path):
        self.path = folder / STATE_FILE
        try:
            self.sent: dict[str, int] = json.loads(self.path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            self.sent = {}

    def done(self, local: Path) -> bool:
        return self.sent.get(local.name) == local.stat().st_size

    def mark(self, local: Path) -> None:
        self.sent[local.name] = local.stat().st_size
        # not durable (no fsync per uploaded file), as it always was: it survives a killed
        # `fla send`, which is what the resume is for
        atomic_write(self.path, json.dumps(self.sent, indent=0).encode(), durable=False)


def read_identity(path: Path) -> asyncssh.SSHKey:
    """The SSH private key that logs in to the channel; TransportError names the file and why."""
    where = f"identity file {path}"
    if path.is_dir():
        raise TransportError(f"{where}: is a folder; give the SSH private key file itself")
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        raise TransportError(f"{where}: no such file; give the SSH private key registered for "
                             "the channel") from None
    except OSError as exc:
        raise TransportError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise TransportError(f"{where}: {_identity_problem(path, exc)}") from exc


def _identity_problem(path: Path, exc: Exception) -> str:
    """Why a readable file is not a usable private key: public key, passphrase, or other."""
    try:
        asyncssh.read_private_key(str(path), passphrase="-")
        encrypted = False
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as again:
        # Only an encrypted key fails differently once a (wrong) passphrase is given.
        encrypted = str(again) != str(exc)
    if encrypted:
        return ("the key is protected by a passphrase, which fla send and poll do not ask for; "
                "give a key without passphrase (ssh-keygen -t ed25519 -N '' -f KEY)")
    try:
        asyncssh.import_public_key(path.read_bytes())
        return "is a public key; give the private key (the file without .pub)"
    except (asyncssh.KeyImportError, ValueError):
        pass
    return f"not a usable SSH private key ({exc})"


async def _connect(address: ChannelAddress) -> asyncssh.SSHClientConnection:
    key = read_identity(address.identity)
    try:
        return await asyncio.wait_for(asyncssh.connect(
            address.host, address.port, username=address.user,
            client_keys=[key],
            known_hosts=str(address.known_hosts) if address.known_hosts else None,
            password=None, kbdint_auth=False, agent_path=None,
        ), address.connect_timeout)
    except asyncssh.PermissionDenied as exc:
        raise TransportError(f"{address.user}@{address.host}:{address.port} refused the key "
                             f"{address.identity}: {exc.reason}") from exc
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise TransportError(f"cannot connect to {address.host}:{address.port}: {exc}") from exc


async def send_sets(address: ChannelAddress, folder: Path, sets: Sequence[UploadSet], *,
                    progress: Callable[[str, int, int], None] | None = None) -> SendReport:
    """Upload the sets; files recorded as sent by an earlier run are skipped (resume)."""
    state = _SentState(folder)
    report = SendReport()
    async with await _connect(address) as conn:
        try:
            sftp = await conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            raise TransportError(f"{address.host}:{address.port}: no SFTP session: {exc}") from exc
        for upload in sets:
            for local in upload.files:
                if state.done(local):
                    report.skipped.append(local.name)
                    continue
                await _upload(conn, sftp, local, f"{upload.directory}/{local.name}", progress)
                state.mark(local)
                report.uploaded.append(local.name)
            report.triggers.extend(p.name for p in upload.files
                                   if prefix_of(p.name) in ("GO", "TD"))
    return report


async def _upload(conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, local: Path,
                  remote: str, progress: Callable[[str, int, int], None] | None) -> None:
    """Write one file; an upload that does not finish is never closed, only abandoned.

    The server takes a CLOSE as "upload complete" (spec 5.2), so a half-written file must not
    be closed: on any failure the connection is aborted and the server discards it (spec 5.7).
    """
    total = local.stat().st_size
    try:
        remote_file = await sftp.open(remote, "wb")
        with open(local, "rb") as src:
            done = 0
            while chunk := src.read(BLOCK_SIZE):
                await remote_file.write(chunk, done)
                done += len(chunk)
                if progress:
                    progress(local.name, done, total)
            if progress and total == 0:
                progress(local.name, 0, 0)
        await remote_file.close()
    except BaseException as exc:
        conn.abort()
        if isinstance(exc, asyncssh.SFTPError):
            raise TransportError(f"upload of {local.name} to {remote} refused: "
                                 f"{exc.reason}") from exc
        if isinstance(exc, asyncssh.Error | OSError) and not isinstance(exc, FileNotFoundError):
            raise TransportError(f"upload of {local.name} to {remote} failed: {exc}") from exc
        raise


async def fetch_answers(address: ChannelAddress, out: Path, *,
                        directories: Iterable[str] = ANSWER_DIRS, remove: bool = True,
                        want: Callable[[list[FetchedAnswer]], bool] | None = None,
                        timeout: float = 0.0, interval: float = 0.2) -> list[FetchedAnswer]:
    """Download every complete answer (its GO present); poll until ``want`` is satisfied.

    With ``timeout`` 0 the answer directories are read once. ``remove`` deletes each answer
    triplet from the channel once it is safely on disk, so a later poll never sees it again.
    """
    out.mkdir(parents=True, exist_ok=True)
    fetched: list[FetchedAnswer] = []
    deadline = time.monotonic() + timeout
    async with await _connect(address) as conn:
        try:
            sftp = await conn.start_sftp_client()
            while True:
                for directory in directories:
                    fetched.extend(await _fetch_dir(sftp, directory, out, remove))
                if want is None or want(fetched) or time.monotonic() >= deadline:
                    return fetched
                await asyncio.sleep(interval)
        except asyncssh.Error as exc:
            raise TransportError(f"{address.host}:{address.port}: fetching answers failed: "
                                 f"{exc}") from exc
    return fetched  # for the type checker: a connection's __aexit__ is typed as able to swallow


async def _fetch_dir(sftp: asyncssh.SFTPClient, directory: str, out: Path,
                     remove: bool) -> list[FetchedAnswer]:
    try:
        names = set(await sftp.listdir(directory))
    except asyncssh.SFTPError:
        return []  # a channel without this answer directory (not enabled)
    got = []
    for go in sorted(n for n in names if n.startswith("GO.")):
        tail = tail_of(go)
        body = next((f"{p}.{tail}" for p in ("FO", "CO") if f"{p}.{tail}" in names), None)
        if body is None:
            continue
        try:
            parsed = parse_answer(body)
        except ValueError:
            continue  # not an answer of this channel's grammar: leave it alone
        local = out / body
        signature = out / f"FS.{tail}" if f"FS.{tail}" in names else None
        try:
            await sftp.get(f"{directory}/{body}", str(local))
            if signature is not None:
                await sftp.get(f"{directory}/{signature.name}", str(signature))
        except asyncssh.SFTPNoSuchFile:
            continue  # another poller took it between the listing and the download
        if remove:
            # the GO goes first so that a concurrent poller never reads a half-removed answer
            for name in (go, f"FS.{tail}", body):
                if name in names:
                    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                        await sftp.remove(f"{directory}/{name}")
        got.append(FetchedAnswer(parsed, directory, local, signature))
    return got
