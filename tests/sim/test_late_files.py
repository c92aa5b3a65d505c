"""An FI or FS closed after its set's GO (spec 5.1: the GO comes last; 5.3: a GO is judged with
the files present when it is taken): the verdict follows the spec, and the sender is told in the
simulator log and the set's events, which ``fla-sim status`` shows. The rclone case, through the
real client, is in tests/interop/test_clients.py."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core import hookimpl
from fla_core.plugins import FlaPlugins
from fla_core.responses import Acrf, parse_answer
from fla_core.signing import encode_fs, sign_file
from fla_sim.api import Simulator
from fla_sim.pytest_plugin import FixedClock

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
STEM = "FLAC.123456.20260316.00001.T"
FI, FS, GO = f"FI.{STEM}.1.1", f"FS.{STEM}.1.1", f"GO.{STEM}.1"
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(AT)


def wrong_fs(channel, tmp_path: Path) -> bytes:
    """A well-formed FS that signs other bytes: judged, it rejects the set (spec 6.4)."""
    other = tmp_path / "other"
    other.write_bytes(FIXTURE.read_bytes() + b"<!-- other -->")
    return encode_fs(sign_file(other, channel.signer, signing_time=AT))


def the_acrf(sim: Simulator, user: str) -> Acrf:
    root = sim.home.channel_root(user) / "OUTTEST"
    (acrf,) = [a for a in (parse_answer(p.read_bytes()) for p in root.glob("FO.*"))
               if isinstance(a, Acrf)]
    return acrf


async def upload(channel, port: int, name: str, data: bytes) -> None:
    """One upload through a real asyncssh SFTP session."""
    async with (asyncssh.connect("127.0.0.1", port, username=channel.user,
                                 client_keys=[str(channel.ssh_key)], known_hosts=None,
                                 agent_path=None) as conn,
                conn.start_sftp_client() as sftp,
                sftp.open(f"INTEST/{name}", "wb") as f):
        await f.write(data)


class HoldTheJudge:
    """Business rules that wait until the test lets them go: the set stays PROCESSING."""

    def __init__(self) -> None:
        self.judging = threading.Event()
        self.go_on = threading.Event()

    @hookimpl
    def fla_check_declaration(self, declaration, position, context):  # type: ignore[no-untyped-def]
        self.judging.set()
        assert self.go_on.wait(30), "the test never let the judge go on"


def test_an_fs_closed_while_its_set_is_judged_is_left_out_and_reported(
        fla_sim_home, fla_channel, fla_clock, tmp_path, caplog):
    hold = HoldTheJudge()
    plugins = FlaPlugins(entry_points=False, extra=[hold])
    with Simulator(fla_sim_home.path, clock=fla_clock, plugins=plugins) as sim:
        assert sim.port is not None and sim.journal is not None
        asyncio.run(upload(fla_channel, sim.port, FI, FIXTURE.read_bytes()))
        asyncio.run(upload(fla_channel, sim.port, GO, b""))
        try:
            assert hold.judging.wait(30)  # the set was taken: PROCESSING
            with caplog.at_level(logging.WARNING, "fla_sim.processor"):
                asyncio.run(upload(fla_channel, sim.port, FS, wrong_fs(fla_channel, tmp_path)))
            events = sim.journal.set_events(stem=STEM)
        finally:
            hold.go_on.set()
        sim.drain()
        acrf = the_acrf(sim, fla_channel.user)
        files = {f.name: f.state for f in sim.journal.files(state=None)}
    assert acrf.accepted  # judged without the FS: a judged wrong FS would have rejected it
    (event,) = events
    assert (event.kind, event.name) == ("late-file", FS)
    assert "was taken (set PROCESSING)" in event.text and "judged without it" in event.text
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"{fla_channel.user}: INTEST/{event.text}"]
    assert files == {FI: "archived", FS: "archived", GO: "archived"}  # spec 5.3 clean-up


def test_an_fs_closed_while_its_go_is_queued_is_judged_with_the_set(
        fla_sim_home, fla_channel, fla_clock, tmp_path):
    folder = fla_sim_home.channel_root(fla_channel.user) / "INTEST"

    async def scenario() -> tuple[Acrf, list]:
        async with Simulator(fla_sim_home.path, clock=fla_clock) as sim:
            assert sim.processor is not None and sim.journal is not None
            closed = sim.processor.on_file_closed  # what the SFTP server awaits at CLOSE
            for name, data in ((FI, FIXTURE.read_bytes()), (GO, b""),
                               (FS, wrong_fs(fla_channel, tmp_path))):
                (folder / name).write_bytes(data)
                # no await yields in between: the GO's event cannot have started
                await closed(fla_channel.user, "INTEST", name, len(data))
            await sim.adrain()
            return the_acrf(sim, fla_channel.user), sim.journal.set_events(stem=STEM)

    acrf, events = asyncio.run(scenario())
    assert acrf.error_id == "ACRF-125"  # the FS was judged: its digest is not the FI's
    (event,) = events
    assert "before the set was taken" in event.text and "judged with the set" in event.text


def test_an_fs_listed_when_the_set_was_taken_but_announced_later_counts_as_judged(
        fla_sim_home, fla_channel, fla_clock, tmp_path):
    """The race of a worker-thread journal: the FS was renamed into place before the set was
    taken (so the judge saw it) and journaled after. The event says what really happened."""
    folder = fla_sim_home.channel_root(fla_channel.user) / "INTEST"
    judging, go_on = threading.Event(), threading.Event()

    async def scenario() -> tuple[Acrf, list]:
        # judge_workers = 0: the set is judged in a thread of this process, held here before
        # P4 (a wrong FS stops the judge at P9, before any rule hook could hold it)
        config = fla_sim_home.load()
        config.judge_workers = 0
        fla_sim_home.save(config)
        plugins = FlaPlugins(entry_points=False)
        async with Simulator(fla_sim_home.path, clock=fla_clock, plugins=plugins) as sim:
            assert sim.processor is not None and sim.journal is not None
            judge = sim.processor._judge

            def held(*args):  # type: ignore[no-untyped-def]
                judging.set()
                assert go_on.wait(30), "the test never let the judge go on"
                return judge(*args)

            sim.processor._judge = held  # type: ignore[method-assign]
            closed = sim.processor.on_file_closed
            (folder / FI).write_bytes(FIXTURE.read_bytes())
            await closed(fla_channel.user, "INTEST", FI, (folder / FI).stat().st_size)
            (folder / FS).write_bytes(wrong_fs(fla_channel, tmp_path))  # renamed, not yet told
            (folder / GO).write_bytes(b"")
            await closed(fla_channel.user, "INTEST", GO, 0)
            try:
                assert await asyncio.to_thread(judging.wait, 30)  # taken, with the FS
                await closed(fla_channel.user, "INTEST", FS, (folder / FS).stat().st_size)
            finally:
                go_on.set()
            await sim.adrain()
            return the_acrf(sim, fla_channel.user), sim.journal.set_events(stem=STEM)

    acrf, events = asyncio.run(scenario())
    assert acrf.error_id == "ACRF-125"  # judged with the (wrong) FS
    (event,) = events
    assert "judged with the set" in event.text
