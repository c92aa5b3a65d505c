"""The embeddable Simulator, driven through a real asyncssh SFTP client on loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core.plugins import FlaPlugins
from fla_core.responses import parse_answer
from fla_sim.api import Simulator, SimulatorError
from fla_sim.config import FaultSpec
from fla_sim.pytest_plugin import FixedClock, add_channel

BRU = ZoneInfo("Europe/Brussels")
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 16, 10, 15, tzinfo=BRU))


async def send(port: int, channel, files: list[tuple[str, bytes]], directory="INTEST") -> None:
    async with asyncssh.connect("127.0.0.1", port, username=channel.user,
                                client_keys=[str(channel.ssh_key)],
                                known_hosts=None) as conn, conn.start_sftp_client() as sftp:
        for name, data in files:
            async with sftp.open(f"/{directory}/{name}", "wb") as f:
                await f.write(data)


def set_files(seq: str) -> list[tuple[str, bytes]]:
    return [(f"FI.FLAC.123456.20260316.{seq}.T.1.1", FIXTURE.read_bytes()),
            (f"GO.FLAC.123456.20260316.{seq}.T.1", b"")]


def test_sync_context_manager_round_trip(fla_sim, fla_channel):
    assert fla_sim.port and fla_sim.port != 8022
    asyncio.run(send(fla_sim.port, fla_channel, set_files("00001")))
    fla_sim.drain(20)
    assert fla_sim.answers(fla_channel.user, "OUTTEST") == sorted(
        f"{p}.{k}.999999.20260316.{s}.T" for p in ("FO", "FS", "GO")
        for k, s in (("ACRF", "00001"), ("NOTI", "00002")))
    root = fla_sim.home.channel_root(fla_channel.user)
    noti = parse_answer((root / "OUTTEST" / "FO.NOTI.999999.20260316.00002.T").read_bytes())
    assert noti.result_code == 2
    assert fla_sim.status()["sets"] == {"NOTIFIED": 1}


def test_async_context_manager_and_restart_keeps_numbering(fla_sim_home, fla_channel,
                                                           fla_clock):
    async def session(seq: str) -> list[str]:
        async with Simulator(fla_sim_home, clock=fla_clock,
                             plugins=FlaPlugins(entry_points=False)) as sim:
            await send(sim.port, fla_channel, set_files(seq))
            await sim.adrain(20)
            return sim.answers(fla_channel.user, "OUTTEST")

    first = asyncio.run(session("00001"))
    second = asyncio.run(session("00002"))  # a new simulator on the same home
    assert len(first) == 6
    assert sorted(set(second) - set(first)) == sorted(
        f"{p}.{k}.999999.20260316.{s}.T" for p in ("FO", "FS", "GO")
        for k, s in (("ACRF", "00003"), ("NOTI", "00004")))


def test_channel_added_while_running_can_log_in(fla_sim, fla_sim_home, fla_pki, tmp_path):
    other = add_channel(fla_sim_home, fla_pki, tmp_path / "other", user="beta-hr",
                        company="0566988259", sender="654321", quality="employer",
                        mandates=False)
    fla_sim.reload()  # the home was changed behind its back: re-read it
    files = [("GO.FLAC.654321.20260316.00001.T.1", b"")]
    asyncio.run(send(fla_sim.port, other, files))
    fla_sim.drain(20)
    assert fla_sim.answers("beta-hr", "OUTTEST")[0] == "FO.ACRF.999999.20260316.00001.T"


def test_settings_overrides_and_misuse(fla_sim_home, fla_channel, fla_clock):
    with Simulator(fla_sim_home, clock=fla_clock, keep_uploads=True) as sim:
        assert sim.config is not None and sim.config.settings.keep_uploads is True
        asyncio.run(send(sim.port, fla_channel, set_files("00001")))
        sim.drain(20)
        kept = sorted(p.name for p in (sim.home.channel_root("acme-payroll") / "INTEST")
                      .iterdir())
        assert kept == sorted(n for n, _ in set_files("00001"))
    with pytest.raises(SimulatorError, match="unknown setting"):
        Simulator(fla_sim_home, no_such_setting=1).__enter__()
    with pytest.raises(SimulatorError, match="not started"):
        Simulator(fla_sim_home).drain()


def test_drop_connection_fault_on_upload(fla_sim_home, fla_channel, fla_clock):
    fault = FaultSpec(when="upload", action="drop-connection", match="GO.*", times=1)
    with Simulator(fla_sim_home, clock=fla_clock, faults=[fault]) as sim:
        with pytest.raises(asyncssh.ConnectionLost):  # the client sees its connection drop
            asyncio.run(send(sim.port, fla_channel, set_files("00001")))
        folder = sim.home.channel_root(fla_channel.user) / "INTEST"
        assert not (folder / "GO.FLAC.123456.20260316.00001.T.1").exists()
        sim.drain(20)
        assert sim.answers(fla_channel.user, "OUTTEST") == []  # the GO never arrived
        asyncio.run(send(sim.port, fla_channel, set_files("00001")[1:]))  # the sender retries
        sim.drain(20)
        assert sim.answers(fla_channel.user, "OUTTEST")[0] == "FO.ACRF.999999.20260316.00001.T"


def test_disk_full_and_forced_anomaly_on_upload(fla_sim_home, fla_channel, fla_clock):
    faults = [FaultSpec(when="upload", action="disk-full", match="FI.*.00001.*", times=1),
              FaultSpec(when="upload", action="force-anomaly", match="FI.*.00002.*", code="184")]
    with Simulator(fla_sim_home, clock=fla_clock, faults=faults) as sim:
        with pytest.raises(asyncssh.SFTPFailure, match="No space left"):
            asyncio.run(send(sim.port, fla_channel, set_files("00001")[:1]))
        asyncio.run(send(sim.port, fla_channel, set_files("00002")))
        sim.drain(20)
        root = sim.home.channel_root(fla_channel.user)
        assert not (root / "INTEST" / "FI.FLAC.123456.20260316.00001.T.1.1").exists()
        acrf = parse_answer((root / "OUTTEST" / "FO.ACRF.999999.20260316.00001.T").read_bytes())
        assert (acrf.error_code, acrf.file_name) == ("184", "GO.FLAC.123456.20260316.00002.T.1")


def test_periodic_orphan_sweep_follows_the_clock(fla_sim_home, fla_channel, fla_clock):
    with Simulator(fla_sim_home, clock=fla_clock, orphan_timeout_s=5) as sim:
        asyncio.run(send(sim.port, fla_channel, set_files("00001")[:1]))
        out = sim.home.channel_root(fla_channel.user) / "OUTTEST"
        fla_clock.advance(seconds=6)
        deadline = time.monotonic() + 20  # the sweeper runs every 0.5 s of real time here
        while not (out / "GO.ACRF.999999.20260316.00001.T").exists():
            assert time.monotonic() < deadline, "the periodic sweep never ran"
            time.sleep(0.05)
        acrf = parse_answer((out / "FO.ACRF.999999.20260316.00001.T").read_bytes())
        assert acrf.error_code == "130"
