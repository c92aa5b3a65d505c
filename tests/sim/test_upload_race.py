"""Uploads racing the processor's clean-up (spec 3.3, 5.3): a file archived while a session
computes its channel quota must not break the session's next upload."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim.config import ChannelConfig, SimulatorHome
from fla_sim.server import start_server

USER = "acme-payroll"
FI1 = "FI.FLAC.123456.20260316.00001.T.1.1"
GO1 = "GO.FLAC.123456.20260316.00001.T.1"
FI2 = "FI.FLAC.123456.20260316.00002.T.1.1"


class ArchivedMidListing:
    """``os.scandir`` that lets the processor archive ``victim`` right after the upload folder
    was listed and before its entries are stat'ed: the interleaving seen under load."""

    def __init__(self, folder: Path, victim: str, archive: Path):
        self.folder, self.victim, self.archive = str(folder), victim, archive
        self.real = os.scandir
        self.fired = 0

    def __call__(self, path: object = ".") -> contextlib.AbstractContextManager[Iterator[object]]:
        listing = self.real(path)  # type: ignore[arg-type]
        if os.fsdecode(path) != self.folder:  # type: ignore[arg-type]
            return listing
        with listing:
            entries = list(listing)
        if any(e.name == self.victim for e in entries):
            os.replace(os.path.join(self.folder, self.victim), self.archive / self.victim)
            self.fired += 1
        return contextlib.nullcontext(iter(entries))


def test_a_file_archived_during_the_quota_listing_does_not_fail_the_next_upload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = SimulatorHome.init(tmp_path / "home")
    key = asyncssh.generate_private_key("ssh-ed25519")
    config = home.load()
    config.channels = [ChannelConfig(
        user=USER, quality=Quality.SOCIAL_SECRETARIAT, company="0123456749", sender="123456",
        ssh_keys=[key.export_public_key().decode()], quota_bytes=10_000)]
    home.save(config)
    folder = home.channel_root(USER) / "INTEST"
    archive = tmp_path / "archive"
    archive.mkdir()
    closed: list[str] = []

    async def on_closed(user: str, directory: str, name: str, size: int) -> None:
        closed.append(name)

    race = ArchivedMidListing(folder, FI1, archive)

    async def scenario() -> None:
        acceptor = await start_server(home, config, on_closed, port=0)
        try:
            async with asyncssh.connect(
                    "127.0.0.1", acceptor.get_port(), username=USER, client_keys=[key],
                    known_hosts=None, agent_path=None) as conn, \
                    conn.start_sftp_client() as sftp:
                for name, data in ((FI1, b"x" * 4000), (GO1, b"")):
                    async with sftp.open(f"INTEST/{name}", "wb") as f:
                        await f.write(data)
                monkeypatch.setattr(os, "scandir", race)
                # the next set's FI: its quota listing sees FI1, which is gone when stat'ed
                async with sftp.open(f"INTEST/{FI2}", "wb") as f:
                    await f.write(b"y" * 5000)
                monkeypatch.undo()
        finally:
            acceptor.close()
            await acceptor.wait_closed()

    asyncio.run(scenario())
    assert race.fired == 1  # the race really happened
    assert closed == [FI1, GO1, FI2]
    assert (folder / FI2).read_bytes() == b"y" * 5000
