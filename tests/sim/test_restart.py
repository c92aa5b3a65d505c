"""Crash recovery (spec 5.9, design 6): a processor killed with SIGKILL at several points of
processing, then restarted on the same home, answers every GO exactly once -- under both
``[server] durability`` modes ("process": no fsync; "power": fsync of journal and answers).

The first run is a real subprocess that kills itself (``os.kill(getpid(), SIGKILL)``) when
processing reaches the named point; the restart runs in this process on the same home.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_core.plugins import FlaPlugins
from fla_core.responses import parse_answer
from fla_sim.processor import Processor
from fla_sim.pytest_plugin import FixedClock
from fla_sim.store import Journal

BRU = ZoneInfo("Europe/Brussels")
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
USER = "acme-payroll"

CRASHING_RUN = r"""
import asyncio, os, signal, sys
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo
from fla_core.plugins import FlaPlugins
from fla_sim.config import SimulatorHome
from fla_sim.processor import Processor
from fla_sim.store import Journal

home_path, kill_at, *names = sys.argv[1:]

def checkpoint(point):
    if point.startswith(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    home = SimulatorHome(home_path)
    journal = Journal(home.journal_path)
    p = Processor(home, home.load(), journal, plugins=FlaPlugins(entry_points=False),
                  clock=lambda: datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels")),
                  checkpoint=checkpoint)
    await p.start()
    folder = home.channel_root("acme-payroll") / "INTEST"
    for name in names:  # the files lie in INTEST: replay their close as the server would
        if name == "--sweep":
            await p.sweep_orphans()
            continue
        await p.on_file_closed("acme-payroll", "INTEST", name, (folder / name).stat().st_size)
    await p.drain(60)
    await p.stop()

asyncio.run(main())
"""


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 16, 10, 15, tzinfo=BRU))


@pytest.fixture(params=["process", "power"])
def durability(request: pytest.FixtureRequest, fla_sim_home, fla_channel) -> str:
    """The home's ``[server] durability``: both modes must keep the exactly-once promise."""
    config = fla_sim_home.load()
    config.durability = request.param
    fla_sim_home.save(config)
    return str(request.param)


def _place_sets(folder: Path) -> list[str]:
    """Two sets (FI + GO each) on disk; returns the names in upload order."""
    names = []
    for seq in ("00001", "00002"):
        fi = f"FI.FLAC.123456.20260316.{seq}.T.1.1"
        (folder / fi).write_bytes(FIXTURE.read_bytes().replace(
            b"ACME-2026-0001", f"ACME-{seq}".encode()).replace(
            b"D-0897223670-2025-0", f"D-{seq}-0".encode()))
        go = f"GO.FLAC.123456.20260316.{seq}.T.1"
        (folder / go).write_bytes(b"")
        names += [fi, go]
    return names


async def _restart(home, clock) -> Journal:
    journal = Journal(home.journal_path)
    processor = Processor(home, home.load(), journal, clock=clock,
                          plugins=FlaPlugins(entry_points=False))
    await processor.start()
    folder = home.channel_root(USER) / "INTEST"
    # uploads the crashed run never saw closing: the client sends them again after the drop
    for name in sorted(p.name for p in folder.iterdir()):
        if journal.file(USER, "INTEST", name) is None:
            await processor.on_file_closed(USER, "INTEST", name, (folder / name).stat().st_size)
    await processor.drain(60)
    await processor.stop()
    assert journal.durability == home.load().durability  # the mode under test was applied
    return journal


@pytest.mark.parametrize("kill_at", [
    "event-journaled",  # GO journaled, nothing processed
    "answers-planned",  # outcome committed, no answer file yet
    "before-write:FS.ACRF",  # ACRF's FO renamed into place, its FS and GO not written
    "before-write:GO.ACRF",  # FO and FS there, GO not
    "written:FO.ACRF",  # ACRF complete and journaled, NOTI not written
    "before-write:GO.NOTI",  # NOTI's FO and FS there, GO not
    # NOTI complete, set files moved to the archive, but neither journaled (one transaction)
    "uploads-archived",
])
def test_killed_processor_answers_every_go_exactly_once(fla_sim_home, fla_channel, fla_clock,
                                                        durability, kill_at):
    home = fla_sim_home
    folder = home.channel_root(USER) / "INTEST"
    names = _place_sets(folder)
    crashed = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(home.path), kill_at,
                              *names], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr  # it died where we said

    journal = asyncio.run(_restart(home, fla_clock))
    out = home.channel_root(USER) / "OUTTEST"
    files = sorted(p.name for p in out.iterdir())
    expected = sorted(f"{p}.{kind}.999999.20260316.{seq}.T" for p in ("FO", "FS", "GO")
                      for kind, seq in (("ACRF", "00001"), ("NOTI", "00002"),
                                        ("ACRF", "00003"), ("NOTI", "00004")))
    assert files == expected  # nothing missing, nothing doubled, no temp file left
    acrf1 = parse_answer((out / "FO.ACRF.999999.20260316.00001.T").read_bytes())
    noti2 = parse_answer((out / "FO.NOTI.999999.20260316.00002.T").read_bytes())
    assert acrf1.accepted and acrf1.file_name == "GO.FLAC.123456.20260316.00001.T.1"
    assert noti2.ticket == acrf1.ticket and noti2.file_name == acrf1.file_name
    acrf3 = parse_answer((out / "FO.ACRF.999999.20260316.00003.T").read_bytes())
    assert acrf3.file_name == "GO.FLAC.123456.20260316.00002.T.1"
    summary = journal.summary()
    assert summary["answers_unwritten"] == 0 and summary["events_pending"] == 0
    assert summary["sets"] == {"NOTIFIED": 2}
    assert sorted(p.name for p in folder.iterdir()) == []  # both sets archived
    journal.close()


@pytest.mark.parametrize("kill_at", ["before-write:FS.ACRF",
                                     "written:FO.ACRF.999999.20260316.00001"])
def test_killed_during_the_orphan_sweep(fla_sim_home, fla_channel, fla_clock, durability,
                                        kill_at):
    home = fla_sim_home
    config = home.load()
    config.settings = replace(config.settings, orphan_timeout_s=0)
    home.save(config)
    folder = home.channel_root(USER) / "INTEST"
    names = ["FI.FLAC.123456.20260316.00001.T.1.1", "FI.FLAC.123456.20260316.00002.T.1.1"]
    for name in names:
        (folder / name).write_bytes(FIXTURE.read_bytes())
    crashed = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(home.path), kill_at,
                              *names, "--sweep"], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    journal = asyncio.run(_restart(home, fla_clock))
    out = home.channel_root(USER) / "OUTTEST"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{p}.ACRF.999999.20260316.{seq}.T" for p in ("FO", "FS", "GO")
        for seq in ("00001", "00002"))
    codes = [parse_answer((out / f"FO.ACRF.999999.20260316.{seq}.T").read_bytes()).error_code
             for seq in ("00001", "00002")]
    assert codes == ["130", "130"]
    assert list(folder.iterdir()) == []  # the swept files left the sender's view
    journal.close()
