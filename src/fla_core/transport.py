"""Send triplets to a BATCH channel over SFTP and fetch its answers (spec 5.1, 5.8, 9).

The client uploads each set in the order the channel expects (every FI part, its FS, then
the GO), remembers on disk what was completely uploaded so that a run interrupted by a dropped
connection resumes without sending a file twice, and polls the answer directories, reading an
answer only once its GO is present (spec 5.8).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from fla_core.model import Environment
from fla_core.names import FileName, parse_answer

ANSWER_DIRS = ("OUT", "OUTTEST", "OUTTEST-S")
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
        return self.files[-1].name


@dataclass
class SendReport:
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
        parts = path.name.split(".")
        if len(parts) < 7 or parts[0] not in ("FI", "FS", "GO", "TD"):
            continue
        groups.setdefault(".".join(parts[1:6]), []).append(path)
    sets = []
    for stem, paths in sorted(groups.items()):
        env = Environment(stem.rsplit(".", 1)[1]) if stem[-1] in "RTS" else Environment.T
        data = sorted((p for p in paths if p.name[:2] in ("FI", "FS")), key=_part_order)
        triggers = [p for p in paths if p.name[:2] in ("GO", "TD")]
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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.sent, indent=0), "utf-8")
        os.replace(tmp, self.path)


async def _connect(address: ChannelAddress) -> asyncssh.SSHClientConnection:
    if not address.identity.is_file():
        raise TransportError(f"identity file {address.identity} does not exist")
    try:
        return await asyncio.wait_for(asyncssh.connect(
            address.host, address.port, username=address.user,
            client_keys=[str(address.identity)],
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
    async with await _connect(address) as conn, conn.start_sftp_client() as sftp:
        for upload in sets:
            for local in upload.files:
                if state.done(local):
                    report.skipped.append(local.name)
                    continue
                remote = f"{upload.directory}/{local.name}"

                def handler(_src: bytes, _dst: bytes, done: int, total: int,
                            name: str = local.name) -> None:
                    if progress:
                        progress(name, done, total)

                try:
                    await sftp.put(str(local), remote, sparse=False, block_size=BLOCK_SIZE,
                                   progress_handler=handler)
                except asyncssh.SFTPError as exc:
                    raise TransportError(f"upload of {local.name} to {remote} refused: "
                                         f"{exc.reason}") from exc
                state.mark(local)
                report.uploaded.append(local.name)
            report.triggers.append(upload.trigger)
    return report


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
    async with await _connect(address) as conn, conn.start_sftp_client() as sftp:
        while True:
            for directory in directories:
                fetched.extend(await _fetch_dir(sftp, directory, out, remove))
            if want is None or want(fetched) or time.monotonic() >= deadline:
                return fetched
            await asyncio.sleep(interval)


async def _fetch_dir(sftp: asyncssh.SFTPClient, directory: str, out: Path,
                     remove: bool) -> list[FetchedAnswer]:
    try:
        names = set(await sftp.listdir(directory))
    except asyncssh.SFTPError:
        return []
    got = []
    for go in sorted(n for n in names if n.startswith("GO.")):
        tail = go[3:]
        body = next((f"{p}.{tail}" for p in ("FO", "CO") if f"{p}.{tail}" in names), None)
        if body is None:
            continue
        parsed = parse_answer(body)
        local = out / body
        await sftp.get(f"{directory}/{body}", str(local))
        signature = None
        if f"FS.{tail}" in names:
            signature = out / f"FS.{tail}"
            await sftp.get(f"{directory}/FS.{tail}", str(signature))
        if remove:
            # the GO goes first so that a concurrent poller never reads a half-removed answer
            for name in (go, f"FS.{tail}", body):
                if name in names:
                    await sftp.remove(f"{directory}/{name}")
        got.append(FetchedAnswer(parsed, directory, local, signature))
    return got
