"""The channel quota against a hostile sender, through real asyncssh SFTP sessions on loopback
(issue "A hostile sender cannot ... exhaust the server"; docs/simulator.md "Uploads").

The quota counts every upload in progress at write time, shared by all the sessions of the
channel; an existing file is never copied on the event loop; the number of files is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim import sftp_session, uploads
from fla_sim.config import ChannelConfig, SimulatorConfig, SimulatorHome
from fla_sim.server import start_server

USER = "acme-payroll"
KiB, MiB = 1024, 1024 * 1024


def fi(seq: int) -> str:
    return f"FI.FLAC.123456.20260316.{seq:05d}.T.1.1"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quota") / "home"
    SimulatorHome.init(path)
    return path


@pytest.fixture(scope="module")
def key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


class World:
    def __init__(self, template: Path, key: asyncssh.SSHKey, tmp_path: Path):
        shutil.copytree(template, tmp_path / "home")
        self.home = SimulatorHome(tmp_path / "home")
        self.key = key
        self.config: SimulatorConfig = self.home.load()
        self.config.channels = [ChannelConfig(
            user=USER, quality=Quality.SOCIAL_SECRETARIAT, company="0123456749",
            sender="123456", ssh_keys=[key.export_public_key().decode()], quota_bytes=MiB)]
        self.intest = self.home.channel_root(USER) / "INTEST"
        self.closed: list[tuple[str, int]] = []

    def stored(self) -> int:
        """Bytes in the upload folder, the temp files of uploads in progress included."""
        return sum(p.stat().st_size for p in self.intest.iterdir())

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        async def on_closed(user: str, directory: str, name: str, size: int) -> None:
            self.closed.append((name, size))

        acceptor = await start_server(self.home, self.config, on_closed, port=0)
        try:
            yield acceptor.get_port()
        finally:
            acceptor.close()
            await acceptor.wait_closed()

    @contextlib.asynccontextmanager
    async def session(self, port: int) -> AsyncIterator[asyncssh.SFTPClient]:
        async with asyncssh.connect("127.0.0.1", port, username=USER, client_keys=[self.key],
                                    known_hosts=None, agent_path=None) as conn, \
                conn.start_sftp_client() as sftp:
            yield sftp


@pytest.fixture
def world(template: Path, key: asyncssh.SSHKey, tmp_path: Path) -> World:
    return World(template, key, tmp_path)


async def attempt(call: Any) -> Any:
    """The result of an SFTP call, or the SFTP error it raised."""
    try:
        return await call
    except asyncssh.SFTPError as exc:
        return exc


def test_handles_opened_before_writing_share_the_quota(world: World) -> None:
    """20 handles opened before any write once stored 18x the quota: each got all of it."""
    data = b"x" * (900 * KiB)
    peak: list[int] = []

    async def scenario() -> list[Any]:
        async with world.serving() as port, world.session(port) as sftp:
            handles = [await sftp.open(f"INTEST/{fi(n)}", "wb") for n in range(1, 21)]
            outcome = [await attempt(h.write(data)) for h in handles]
            peak.append(world.stored())  # every upload still open
            for h in handles:
                await attempt(h.close())
            return outcome

    outcome = asyncio.run(scenario())
    assert outcome[0] == len(data)
    refused = outcome[1:]
    assert all(isinstance(e, asyncssh.SFTPFailure) and "quota exceeded" in e.reason
               for e in refused), refused
    assert peak[0] <= MiB
    assert world.closed == [(fi(1), len(data))]
    assert world.stored() == len(data)


def test_reopens_without_truncation_never_multiply_a_file(world: World) -> None:
    """20 re-opens of one file without TRUNC once made 20 copies of it without a write."""
    old = b"o" * (600 * KiB)
    tail = b"t" * (300 * KiB)
    peak: list[int] = []

    async def scenario() -> list[Any]:
        async with world.serving() as port, world.session(port) as sftp:
            async with sftp.open(f"INTEST/{fi(1)}", "wb") as f:
                await f.write(old)
            # FXF_WRITE alone: continue the existing file (OpenSSH's reput, scp over a file)
            handles = [await attempt(sftp.open(f"INTEST/{fi(1)}", asyncssh.FXF_WRITE,
                                                 encoding=None))
                       for _ in range(20)]
            peak.append(world.stored())
            first = handles[0]
            assert isinstance(first, asyncssh.SFTPClientFile), first
            await first.write(tail, len(old))  # a resume: the old bytes are there
            await first.close()
            return handles[1:]

    refused = asyncio.run(scenario())
    assert all(isinstance(e, asyncssh.SFTPFailure) and "quota exceeded" in e.reason
               for e in refused), refused
    # the one re-open holds a copy of the file it replaces, on top of the quota at most
    assert peak[0] <= MiB + len(old)
    assert (world.intest / fi(1)).read_bytes() == old + tail
    assert world.stored() == len(old) + len(tail)


def test_the_number_of_files_is_capped(world: World) -> None:
    """Empty files cost no byte of the quota: their number has a cap of its own."""
    world.config.max_files_per_channel = 10

    async def scenario() -> list[Any]:
        outcome = []
        async with world.serving() as port, world.session(port) as sftp:
            for n in range(1, 13):
                outcome.append(await attempt(sftp.open(f"INTEST/{fi(n)}", "wb")))
                if not isinstance(outcome[-1], Exception):
                    await outcome[-1].close()
            # overwriting a file before its GO adds no file
            async with sftp.open(f"INTEST/{fi(1)}", "wb") as f:
                await f.write(b"again")
            # files that leave (the processor archives them) are noticed before a refusal
            for n in range(2, 7):
                (world.intest / fi(n)).unlink()
            # a refusal reads the folders again, at most every RESCAN_S
            await asyncio.sleep(uploads.RESCAN_S)
            outcome.append(await attempt(sftp.open(f"INTEST/{fi(20)}", "wb")))
            if not isinstance(outcome[-1], Exception):
                await outcome[-1].close()
        return outcome

    outcome = asyncio.run(scenario())
    assert not any(isinstance(e, Exception) for e in outcome[:10]), outcome
    assert all(isinstance(e, asyncssh.SFTPFailure) and "too many files" in e.reason
               for e in outcome[10:12]), outcome
    assert not isinstance(outcome[12], Exception), outcome[12]
    assert sorted(p.name for p in world.intest.iterdir()) == sorted(
        [fi(1), *(fi(n) for n in range(7, 11)), fi(20)])


def test_an_open_does_not_read_the_upload_folders(world: World,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The quota is a running count: uploads without a GO never list the folders again."""
    listed: list[str] = []
    real = os.scandir

    def counting(path: Any = ".") -> Any:
        if os.fspath(path).startswith(str(world.intest.parent)):
            listed.append(os.fspath(path))
        return real(path)

    async def scenario() -> None:
        async with world.serving() as port, world.session(port) as sftp:
            async with sftp.open(f"INTEST/{fi(1)}", "wb") as f:
                await f.write(b"first")
            monkeypatch.setattr(os, "scandir", counting)
            for n in range(2, 42):
                async with sftp.open(f"INTEST/{fi(n)}", "wb") as f:
                    await f.write(b"<x/>")
            monkeypatch.undo()

    asyncio.run(scenario())
    assert listed == []
    assert len(world.closed) == 41


def test_a_big_reopen_never_freezes_other_sessions(world: World,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Continuing an existing file copies it into the upload's temp file: a GiB took ~0.8 s
    on the event loop, during which no session was answered. The copy is held here until
    another session was answered: on the loop, that never happens (the hold times out)."""
    old = os.urandom(2 * MiB)
    tail = b"tail"
    world.config.channels = [dataclasses.replace(world.config.channels[0], quota_bytes=64 * MiB)]
    started, release = threading.Event(), threading.Event()
    held: list[bool] = []
    real = uploads.copy_prefix

    def gated(src: int, dst: int, size: int) -> int:
        started.set()
        held.append(release.wait(timeout=5))
        return real(src, dst, size)

    async def scenario() -> tuple[Any, bool]:
        async with world.serving() as port, world.session(port) as a, world.session(port) as b:
            async with a.open(f"INTEST/{fi(1)}", "wb") as f:
                await f.write(old)
            monkeypatch.setattr(sftp_session, "copy_prefix", gated)
            reopen = asyncio.ensure_future(a.open(f"INTEST/{fi(1)}", asyncssh.FXF_WRITE,
                                                  encoding=None))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not started.is_set() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            # another session is answered while the copy is in progress
            attrs = await asyncio.wait_for(b.stat(f"INTEST/{fi(1)}"), 10)
            answered_during_copy = not release.is_set()
            release.set()
            f = await reopen
            await f.write(tail, len(old))
            await f.close()
            return attrs, answered_during_copy

    attrs, answered_during_copy = asyncio.run(scenario())
    assert started.is_set()
    assert held == [True], "the copy blocked the event loop"
    assert answered_during_copy and attrs.size == len(old)
    assert (world.intest / fi(1)).read_bytes() == old + tail


def test_a_session_dropped_during_the_copy_leaves_nothing(world: World,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy's thread outlives the session: the upload is discarded, its bytes released."""
    old = b"o" * (600 * KiB)
    started, release = threading.Event(), threading.Event()
    real = uploads.copy_prefix

    def gated(src: int, dst: int, size: int) -> int:
        started.set()
        release.wait(timeout=5)
        return real(src, dst, size)

    async def scenario() -> None:
        async with world.serving() as port:
            async with world.session(port) as first, first.open(f"INTEST/{fi(1)}", "wb") as f:
                await f.write(old)
            monkeypatch.setattr(sftp_session, "copy_prefix", gated)
            key = world.key
            conn = await asyncssh.connect("127.0.0.1", port, username=USER, client_keys=[key],
                                          known_hosts=None, agent_path=None)
            sftp = await conn.start_sftp_client()
            reopen = asyncio.ensure_future(sftp.open(f"INTEST/{fi(1)}", asyncssh.FXF_WRITE,
                                                     encoding=None))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not started.is_set() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            conn.abort()
            release.set()
            with contextlib.suppress(Exception):
                await reopen
            while len(list(world.intest.iterdir())) > 1 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            # its reservation was released: the file can be continued up to the quota again
            async with world.session(port) as again, again.open(
                    f"INTEST/{fi(1)}", asyncssh.FXF_WRITE, encoding=None) as f:
                await f.write(b"t" * (400 * KiB), len(old))

    asyncio.run(scenario())
    assert started.is_set()
    assert [p.name for p in world.intest.iterdir()] == [fi(1)]
    assert (world.intest / fi(1)).read_bytes() == old + b"t" * (400 * KiB)
