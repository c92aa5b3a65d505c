"""Sets judged in worker processes (``[server] judge_workers``): same answers, crash-proof."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_sim.api import Simulator
from fla_sim.config import SimulatorHome
from fla_sim.pytest_plugin import FixedClock

BRU = ZoneInfo("Europe/Brussels")
FIXTURES = Path(__file__).parents[2] / "fixtures" / "fla"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 16, 10, 15, tzinfo=BRU))


def set_files(seq: str, fixture: str) -> list[tuple[str, bytes]]:
    return [(f"FI.FLAC.123456.20260316.{seq}.T.1.1", (FIXTURES / fixture).read_bytes()),
            (f"GO.FLAC.123456.20260316.{seq}.T.1", b"")]


async def send(port: int, channel, files: list[tuple[str, bytes]]) -> None:  # type: ignore[no-untyped-def]
    async with asyncssh.connect("127.0.0.1", port, username=channel.user,
                                client_keys=[str(channel.ssh_key)],
                                known_hosts=None) as conn, conn.start_sftp_client() as sftp:
        for name, data in files:
            async with sftp.open(f"/INTEST/{name}", "wb") as f:
                await f.write(data)


def with_workers(home: SimulatorHome, workers: int) -> SimulatorHome:
    config = home.load()
    config.judge_workers = workers
    home.save(config)
    return home


def answers_of(sim: Simulator, user: str) -> dict[str, bytes]:
    """Answer name -> bytes of the FO files (the FS files embed a signing time)."""
    folder = sim.home.channel_root(user) / "OUTTEST"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("FO.")}


def run_sets(home: SimulatorHome, clock: FixedClock, channel, sets: list[list[tuple[str, bytes]]]  # type: ignore[no-untyped-def]
             ) -> tuple[dict[str, bytes], list[int]]:
    with Simulator(home.path, clock=clock) as sim:
        for files in sets:
            asyncio.run(send(sim.port, channel, files))
            sim.drain(30)
        assert sim.processor is not None
        pool = sim.processor._judge_pool()
        pids = pool.pids() if pool is not None else []
        return answers_of(sim, channel.user), pids


def test_the_pool_judges_in_other_processes_with_the_answers_of_in_process_judging(
        fla_sim_home, fla_channel, fla_clock, tmp_path):
    sets = [set_files("00001", "valid-minimal.xml"), set_files("00002", "valid-minimal.xml"),
            set_files("00003", "schema-invalid-hours.xml")]
    twin = SimulatorHome(tmp_path / "twin")
    shutil.copytree(fla_sim_home.path, twin.path)
    pooled, pids = run_sets(with_workers(fla_sim_home, 1), fla_clock, fla_channel, sets)
    local, no_pids = run_sets(with_workers(twin, 0), fla_clock, fla_channel, sets)
    assert pids and os.getpid() not in pids and no_pids == []
    # the second set repeats the first one's references: judged against the registry the
    # first set's NOTI committed, which the worker reads through its own connection
    assert len(pooled) == 5  # ACRF + NOTI twice, then a negative ACRF
    assert pooled == local


def test_a_killed_judge_worker_is_replaced_and_the_next_set_answered_once(
        fla_sim_home, fla_channel, fla_clock):
    with_workers(fla_sim_home, 1)
    with Simulator(fla_sim_home.path, clock=fla_clock) as sim:
        asyncio.run(send(sim.port, fla_channel, set_files("00001", "valid-minimal.xml")))
        sim.drain(30)
        assert sim.processor is not None
        pool = sim.processor._judge_pool()
        before = pool.pids()
        assert before
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        asyncio.run(send(sim.port, fla_channel, set_files("00002", "valid-minimal.xml")))
        sim.drain(30)
        answers = sim.answers(fla_channel.user)
        after = sim.processor._judge_pool().pids()
    assert after and not set(after) & set(before)
    acrf = [n for n in answers if n.startswith("FO.ACRF.")]
    noti = [n for n in answers if n.startswith("FO.NOTI.")]
    assert len(acrf) == 2 and len(noti) == 2  # both sets, each answered once


EMBEDDING_SCRIPT = r"""
import asyncio, sys
from datetime import datetime
from zoneinfo import ZoneInfo
import asyncssh
from fla_sim.api import Simulator

home, user, key, fixture = sys.argv[1:]
day = datetime.now(ZoneInfo("Europe/Brussels")).strftime("%Y%m%d")

async def main():
    async with Simulator(home) as sim:
        async with asyncssh.connect("127.0.0.1", sim.port, username=user, client_keys=[key],
                                    known_hosts=None) as conn, conn.start_sftp_client() as sftp:
            for name, data in [(f"FI.FLAC.123456.{day}.00001.T.1.1", open(fixture, "rb").read()),
                               (f"GO.FLAC.123456.{day}.00001.T.1", b"")]:
                async with sftp.open(f"/INTEST/{name}", "wb") as f:
                    await f.write(data)
        await sim.adrain(60)
        pool = sim.processor._judge_pool()
        print("WORKERS", len(pool.pids()) if pool is not None else 0)
        print("ANSWERS", len(sim.answers(user)))

asyncio.run(main())
"""


def test_a_script_read_from_stdin_can_embed_the_simulator(fla_sim_home, fla_channel):
    # multiprocessing children re-import the parent's __main__, which a script read from stdin
    # does not have: the workers must not need it (they died at start-up, over and over)
    import subprocess
    import sys

    with_workers(fla_sim_home, 1)
    result = subprocess.run(
        [sys.executable, "-", str(fla_sim_home.path), fla_channel.user,
         str(fla_channel.ssh_key), str(FIXTURES / "valid-minimal.xml")],
        input=EMBEDDING_SCRIPT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WORKERS 1" in result.stdout
    assert "ANSWERS 6" in result.stdout  # ACRF and NOTI, each FO + FS + GO
    assert "Traceback" not in result.stderr


def test_without_a_working_directory_the_simulator_judges_in_process(
        fla_sim_home, fla_channel, fla_clock, tmp_path, monkeypatch, caplog):
    # multiprocessing needs the current directory to start a worker; a simulator whose
    # directory was removed under it (a CI clean-up, a tmp reaper) must still answer
    with_workers(fla_sim_home, 1)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with Simulator(fla_sim_home.path, clock=fla_clock) as sim:
        asyncio.run(send(sim.port, fla_channel, set_files("00001", "valid-minimal.xml")))
        sim.drain(30)
        answers = sim.answers(fla_channel.user)
    assert len([n for n in answers if n.startswith("FO.")]) == 2  # ACRF and NOTI
    assert "cannot be started" in caplog.text
