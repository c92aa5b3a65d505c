"""The simulator's state machine on real files in a real home (spec 4.6, 4.8, 5, 9.1.1).

The processor is driven directly: files are placed in the channel directories as the SFTP
server would leave them, then ``on_file_closed`` is awaited, exactly as the server does.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_core import hookimpl
from fla_core.anomalies import ChannelError
from fla_core.plugins import FlaPlugins
from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.signing import TrustStore, encode_fs, sign_file, verify_fs
from fla_sim.config import FaultSpec
from fla_sim.faults import FaultInjector
from fla_sim.processor import Processor
from fla_sim.pytest_plugin import FixedClock
from fla_sim.store import Journal

BRU = ZoneInfo("Europe/Brussels")
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
DAY = "20260316"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 16, 10, 15, tzinfo=BRU))


class Rig:
    """A processor on a home with the example channel; helpers to upload and read answers."""

    def __init__(self, home, channel, clock, *, plugins=None, faults=(), **settings):
        self.home, self.channel, self.clock = home, channel, clock
        self.config = home.load()
        if settings:
            self.config = replace(self.config, settings=replace(self.config.settings,
                                                                **settings))
        self.journal = Journal(home.journal_path)
        self.faults = FaultInjector.of(faults)
        self.processor = Processor(home, self.config, self.journal, clock=clock,
                                   plugins=plugins or FlaPlugins(entry_points=False),
                                   faults=self.faults)
        self.root = home.channel_root(channel.user)

    async def upload(self, directory: str, name: str, data: bytes = b"") -> None:
        path = self.root / directory / name
        path.write_bytes(data)
        await self.processor.on_file_closed(self.channel.user, directory, name, len(data))

    async def triplet(self, directory: str, seq: str, env: str, *, appl: str = "FLAC",
                      fs: bool = True, go: bool = True) -> None:
        """Upload the 7.2 file as FI (+ its FS) (+ GO) with the given SEQ and ENV."""
        data = FIXTURE.read_bytes().replace(b"<Environment>T</Environment>",
                                            f"<Environment>{env}</Environment>".encode())
        tail = f"{appl}.123456.{DAY}.{seq}.{env}"
        await self.upload(directory, f"FI.{tail}.1.1", data)
        if fs:
            der = sign_file(self.root / directory / f"FI.{tail}.1.1", self.channel.signer)
            await self.upload(directory, f"FS.{tail}.1.1", encode_fs(der))
        if go:
            await self.upload(directory, f"GO.{tail}.1")

    def answers(self, directory: str = "OUTTEST") -> list[str]:
        return sorted(p.name for p in (self.root / directory).iterdir())

    def read(self, directory: str, name: str) -> Acrf | Noti:
        return parse_answer((self.root / directory / name).read_bytes())

    def uploads(self, directory: str = "INTEST") -> list[str]:
        return sorted(p.name for p in (self.root / directory).iterdir())


def run(rig_factory, scenario, **kw):
    """Run ``scenario(rig)`` inside a started processor, then stop it."""
    async def main():
        rig = rig_factory(**kw)
        await rig.processor.start()
        try:
            await scenario(rig)
        finally:
            await rig.processor.stop()
            rig.journal.close()
        return rig
    return asyncio.run(main())


@pytest.fixture
def rig(fla_sim_home, fla_channel, fla_clock):
    def make(**kw):
        return Rig(fla_sim_home, fla_channel, fla_clock, **kw)
    return make


def triplet_names(appl: str, seq: str, env: str, day: str = DAY) -> list[str]:
    return [f"{p}.{appl}.999999.{day}.{seq}.{env}" for p in ("FO", "FS", "GO")]


# --- spec 9.1.1, row by row ------------------------------------------------------------------

def test_worked_exchange_of_spec_9_1_1(rig):
    seen = {}

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T")  # 1
        await r.processor.drain(10)
        seen[2] = r.answers()
        await r.upload("INTEST", "GO.FLAC.123456.20260316.00002.T.1")  # 4
        await r.processor.drain(10)
        seen[5] = r.answers()
        await r.triplet("INTEST", "00001", "T")  # 6: the same three names again
        await r.processor.drain(10)
        seen[7] = r.answers()
        await r.triplet("IN", "00001", "R")  # 8
        await r.processor.drain(10)

    r = run(rig, scenario)
    acrf1, noti2 = triplet_names("ACRF", "00001", "T"), triplet_names("NOTI", "00002", "T")
    assert seen[2] == sorted(acrf1 + noti2)
    a1 = r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T")
    n2 = r.read("OUTTEST", "FO.NOTI.999999.20260316.00002.T")
    assert isinstance(a1, Acrf) and a1.accepted and a1.file_name == \
        "GO.FLAC.123456.20260316.00001.T.1"
    assert isinstance(n2, Noti) and n2.result_code == 2 and n2.ticket == a1.ticket
    assert [d.status for d in n2.declarations] == ["ACCEPTED", "REJECTED"]
    # 5: GO without FI
    acrf3 = triplet_names("ACRF", "00003", "T")
    assert seen[5] == sorted(acrf1 + noti2 + acrf3)
    a3 = r.read("OUTTEST", acrf3[0])
    assert not a3.accepted and a3.error_code == "142"
    assert a3.file_name == "GO.FLAC.123456.20260316.00002.T.1"
    # 7: same names re-sent
    acrf4 = triplet_names("ACRF", "00004", "T")
    assert seen[7] == sorted(acrf1 + noti2 + acrf3 + acrf4)
    assert r.read("OUTTEST", acrf4[0]).error_code == "133"
    # 9: production, own counter per ENV, same verdicts (separate registry)
    assert r.answers("OUT") == sorted(triplet_names("ACRF", "00001", "R")
                                      + triplet_names("NOTI", "00002", "R"))
    assert r.read("OUT", "FO.ACRF.999999.20260316.00001.R").accepted
    n_r = r.read("OUT", "FO.NOTI.999999.20260316.00002.R")
    assert [d.status for d in n_r.declarations] == ["ACCEPTED", "REJECTED"]
    # clean-up: processed uploads left the sender's view (spec 5.3)
    assert r.uploads("INTEST") == [] and r.uploads("IN") == []
    # the answers are signed by the simulator (spec 6.7), one line without terminator
    fs = (r.root / "OUTTEST" / "FS.ACRF.999999.20260316.00001.T").read_bytes()
    assert b"\n" not in fs and b"\r" not in fs
    trust = TrustStore(anchors=[r.home.trust_store().anchors[0]])
    verify_fs(r.root / "OUTTEST" / acrf1[0], fs, trust=trust, at=r.clock(), sender_company=None)


def test_registry_is_kept_between_sets(rig):
    """A declaration reference accepted once is 'already used' in a later set (8.4, rule 945)."""
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T")
        await r.processor.drain(10)
        await r.triplet("INTEST", "00002", "T")
        await r.processor.drain(10)

    r = run(rig, scenario)
    second = r.read("OUTTEST", "FO.NOTI.999999.20260316.00004.T")
    assert second.result_code == 0
    first_decl = second.declarations[0]
    assert "00101-945" in [a.error_id for a in first_decl.anomalies]
    assert r.journal is not None


def test_d2_set_key_consumed_across_applications(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)
        await r.upload("INTEST", "GO.DMFA.123456.20260316.00001.T.1")
        await r.processor.drain(10)

    r = run(rig, scenario)
    a = r.read("OUTTEST", "FO.ACRF.999999.20260316.00003.T")
    assert a.error_code == "133" and a.file_name == "GO.DMFA.123456.20260316.00001.T.1"


def test_same_seq_in_another_environment_is_not_a_duplicate(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.triplet("INTEST-S", "00001", "S", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.read("OUTTEST-S", "FO.ACRF.999999.20260316.00001.S").accepted
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").accepted


def test_production_without_fs_is_122(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("IN", "00001", "R", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.answers("OUT") == triplet_names("ACRF", "00001", "R")
    assert r.read("OUT", "FO.ACRF.999999.20260316.00001.R").error_code == "122"


# --- GO in the wrong directory (N9b, spec 5.7) -------------------------------------------------

@pytest.mark.parametrize(("directory", "env", "code", "out", "letter"), [
    ("INTEST", "R", "118", "OUTTEST", "T"),
    ("IN", "T", "119", "OUT", "R"),
    ("INTEST", "S", "257", "OUTTEST", "T"),
])
def test_go_in_wrong_directory(rig, directory, env, code, out, letter):
    go = f"GO.FLAC.123456.20260316.00001.{env}.1"

    async def scenario(r: Rig) -> None:
        await r.upload(directory, go)
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.answers(out) == triplet_names("ACRF", "00001", letter)
    acrf = r.read(out, f"FO.ACRF.999999.20260316.00001.{letter}")
    assert acrf.error_code == code and acrf.file_name == go
    assert go not in r.uploads(directory)  # a GO failing P1 is archived alone


# --- GO / FI ordering and the orphan sweep (5.6, 5.7) ------------------------------------------

def test_go_before_fi_is_142_and_the_late_fi_becomes_an_orphan(rig):
    async def scenario(r: Rig) -> None:
        await r.upload("INTEST", "GO.FLAC.123456.20260316.00001.T.1")
        await r.processor.drain(10)
        await r.triplet("INTEST", "00001", "T", fs=False, go=False)  # FI after its GO
        r.clock.advance(seconds=59)
        assert await r.processor.sweep_orphans() == 0  # not old enough yet
        r.clock.advance(seconds=2)
        assert await r.processor.sweep_orphans() == 1

    r = run(rig, scenario, orphan_timeout_s=60)
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == "142"
    orphan = r.read("OUTTEST", "FO.ACRF.999999.20260316.00002.T")
    assert orphan.error_code == "130"
    assert orphan.file_name == "FI.FLAC.123456.20260316.00001.T.1.1"
    assert r.uploads() == []


def test_files_without_go_are_swept_per_stem_and_bad_names_alone(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00005", "T", go=False)  # FI + FS: one group
        await r.upload("INTEST", "hello.txt", b"x")  # fails N1: its own answer
        r.clock.advance(hours=25)
        await r.processor.sweep_orphans()
        await r.processor.drain(10)

    r = run(rig, scenario)
    # answers carry the processing date (spec 4.8): the sweep ran a day later
    assert r.answers() == sorted(triplet_names("ACRF", "00001", "T", "20260317")
                                 + triplet_names("ACRF", "00002", "T", "20260317"))
    first = r.read("OUTTEST", "FO.ACRF.999999.20260317.00001.T")
    assert (first.error_code, first.file_name) == ("130", "FI.FLAC.123456.20260316.00005.T.1.1")
    second = r.read("OUTTEST", "FO.ACRF.999999.20260317.00002.T")
    assert (second.error_code, second.file_name) == ("129", "hello.txt")
    assert r.uploads() == []
    s = r.journal.get_set("acme-payroll", "INTEST", "FLAC.123456.20260316.00005.T")
    assert s is not None and s.state == "ORPHANED"


def test_files_of_a_queued_set_are_never_swept(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)
        r.clock.advance(days=2)
        assert await r.processor.sweep_orphans() == 0

    r = run(rig, scenario, keep_uploads=True)
    assert "FI.FLAC.123456.20260316.00001.T.1.1" in r.uploads()  # kept visible, not swept


# --- TD (5.5) --------------------------------------------------------------------------------

def test_td_before_go_cancels_without_answer_and_consumes_the_key(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00002", "T", go=False)
        await r.upload("INTEST", "TD.FLAC.123456.20260316.00002.T.1")
        await r.processor.drain(10)
        assert r.answers() == [] and r.uploads() == []
        await r.upload("INTEST", "GO.FLAC.123456.20260316.00002.T.1")
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == "133"
    s = r.journal.get_set("acme-payroll", "INTEST", "FLAC.123456.20260316.00002.T")
    assert s is not None and s.state == "CANCELLED"


def test_td_while_queued_cancels_the_go(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00002", "T")
        await r.upload("INTEST", "TD.FLAC.123456.20260316.00002.T.1")
        await r.processor.drain(10)

    r = run(rig, scenario, answer_delay_ms=300)
    assert r.answers() == [] and r.uploads() == []
    s = r.journal.get_set("acme-payroll", "INTEST", "FLAC.123456.20260316.00002.T")
    assert s is not None and s.state == "CANCELLED"


def test_td_after_processing_is_removed_silently(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)
        await r.upload("INTEST", "TD.FLAC.123456.20260316.00001.T.3")
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.answers() == sorted(triplet_names("ACRF", "00001", "T")
                                 + triplet_names("NOTI", "00002", "T"))
    assert r.uploads() == []
    s = r.journal.get_set("acme-payroll", "INTEST", "FLAC.123456.20260316.00001.T")
    assert s is not None and s.state == "NOTIFIED"


def test_td_with_a_bad_name_gets_a_negative_acrf(rig):
    async def scenario(r: Rig) -> None:
        await r.upload("INTEST", "TD.FLAC.123456.20260316.00001.T.1.1")
        await r.processor.drain(10)

    r = run(rig, scenario)
    acrf = r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T")
    assert (acrf.error_code, acrf.file_name) == ("107", "TD.FLAC.123456.20260316.00001.T.1.1")


# --- plugins and faults --------------------------------------------------------------------

def test_plugin_veto_and_answer_events(rig):
    class Plugin:
        def __init__(self):
            self.answers = []

        @hookimpl
        def fla_sim_file_received(self, event):
            return "184" if event.name.startswith("FI.") else None

        @hookimpl
        def fla_sim_answer(self, event):
            self.answers.append((event.kind, event.name, event.result_code))

    plugin = Plugin()

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario, plugins=FlaPlugins(entry_points=False, extra=[plugin]))
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == "184"
    assert plugin.answers == [("ACRF", "FO.ACRF.999999.20260316.00001.T", "ACRF-184")]


def test_disk_full_while_writing_an_answer_is_retried_not_lost_or_doubled(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    faults = [FaultSpec(when="answer", action="disk-full", match="FS.ACRF.*", times=2)]
    r = run(rig, scenario, faults=faults)
    assert [f[1] for f in r.faults.fired] == ["disk-full", "disk-full"]
    assert r.answers() == sorted(triplet_names("ACRF", "00001", "T")
                                 + triplet_names("NOTI", "00002", "T"))
    assert all(a.written for a in r.journal.answers())


def test_forced_anomaly_fault(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    faults = [FaultSpec(when="process", action="force-anomaly", code="102")]
    r = run(rig, scenario, faults=faults)
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == "102"


def test_a_processing_delay_fault_holds_its_set_not_the_simulator(rig):
    stalls: list[float] = []

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)  # its judging waits 2 s
        for _ in range(5):  # meanwhile the event loop (every SFTP session) keeps running
            start = time.monotonic()
            await asyncio.sleep(0.05)
            stalls.append(time.monotonic() - start)
        await r.processor.drain(10)

    faults = [FaultSpec(when="process", action="delay", delay_ms=2000, match="GO.*")]
    r = run(rig, scenario, faults=faults)
    assert max(stalls) < 1.0  # a blocked loop would have waited the whole 2 s once
    assert "FO.ACRF.999999.20260316.00001.T" in r.answers()


def test_stop_finishes_the_event_under_way_and_leaves_the_queued_one_to_the_next_start(
        rig, fla_sim_home, fla_channel, fla_clock):
    first, second = "FLAC.123456.20260316.00001.T", "FLAC.123456.20260316.00002.T"

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)  # judging it takes 0.5 s
        await r.triplet("INTEST", "00002", "T", fs=False)  # same channel: waits its turn
        while (s := r.journal.get_set("acme-payroll", "INTEST", first)) is None \
                or s.state != "PROCESSING":
            await asyncio.sleep(0.01)  # until the first set is being judged

    faults = [FaultSpec(when="process", action="delay", delay_ms=500, match=f"GO.{first}.1")]
    r = run(rig, scenario, faults=faults)  # run() stops the processor right away
    assert r.answers() == sorted(triplet_names("ACRF", "00001", "T")
                                 + triplet_names("NOTI", "00002", "T")), \
        "the set under way is answered whole, the queued one not at all"
    again = Rig(fla_sim_home, fla_channel, fla_clock)

    async def restart() -> None:
        await again.processor.start()
        try:
            await again.processor.drain(10)
        finally:
            await again.processor.stop()
            again.journal.close()

    asyncio.run(restart())
    acrf = [n for n in again.answers() if n.startswith("FO.ACRF.")]
    assert len(acrf) == 2 and again.journal.get_set("acme-payroll", "INTEST", second) \
        .state == "NOTIFIED"


def test_stop_does_not_wait_out_an_answer_delay(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await asyncio.wait_for(r.processor.stop(), 10)  # the delay is ten minutes

    r = run(rig, scenario, answer_delay_ms=600_000)
    assert r.answers() == []
    assert [e.state for e in r.journal.events(("pending",))] == ["pending"]


def test_compressed_noti(rig):
    import gzip

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario, compress_answers=True)
    assert "CO.NOTI.999999.20260316.00002.T" in r.answers()
    data = (r.root / "OUTTEST" / "CO.NOTI.999999.20260316.00002.T").read_bytes()
    assert isinstance(parse_answer(gzip.decompress(data)), Noti)
    assert io.BytesIO(data).read(2) == b"\x1f\x8b"


def test_noti_follows_its_acrf_after_noti_delay(rig):
    class Timing:
        def __init__(self):
            self.seen = []

        @hookimpl
        def fla_sim_answer(self, event):
            self.seen.append((event.kind, time.monotonic()))

    plugin = Timing()

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    run(rig, scenario, noti_delay_ms=300,
        plugins=FlaPlugins(entry_points=False, extra=[plugin]))
    (first, t1), (second, t2) = plugin.seen
    assert (first, second) == ("ACRF", "NOTI") and t2 - t1 >= 0.3


def test_a_failing_observer_plugin_does_not_stop_answers(rig):
    class Broken:
        @hookimpl
        def fla_sim_answer(self, event):
            raise OSError("observer is broken")

        @hookimpl
        def fla_sim_file_received(self, event):
            raise RuntimeError("so is this")

    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario, plugins=FlaPlugins(entry_points=False, extra=[Broken()]))
    assert r.answers() == sorted(triplet_names("ACRF", "00001", "T")
                                 + triplet_names("NOTI", "00002", "T"))
    assert r.journal.summary()["events_pending"] == 0


def test_corrupt_answer_fault_breaks_the_answer_signature(rig):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T", fs=False)
        await r.processor.drain(10)

    r = run(rig, scenario, faults=[FaultSpec(when="answer", action="corrupt", match="FO.ACRF.*")])
    out = r.root / "OUTTEST"
    trust = TrustStore(anchors=[r.home.trust_store().anchors[0]])
    with pytest.raises(ChannelError) as err:
        verify_fs(out / "FO.ACRF.999999.20260316.00001.T",
                  (out / "FS.ACRF.999999.20260316.00001.T").read_bytes(), trust=trust,
                  at=r.clock(), sender_company=None)
    assert err.value.code == "125"
    verify_fs(out / "FO.NOTI.999999.20260316.00002.T",  # the other answer is intact
              (out / "FS.NOTI.999999.20260316.00002.T").read_bytes(), trust=trust,
              at=r.clock(), sender_company=None)


@pytest.mark.parametrize(("setup", "code"), [("two-parts-one-fi", "120"), ("bad-fs", "125")])
def test_set_level_failures_reach_the_acrf(rig, setup, code):
    async def scenario(r: Rig) -> None:
        if setup == "two-parts-one-fi":
            await r.upload("INTEST", "FI.FLAC.123456.20260316.00001.T.2.1", FIXTURE.read_bytes())
            await r.upload("INTEST", "GO.FLAC.123456.20260316.00001.T.2")
        else:  # an FS over other bytes: rejected in T exactly as in production (5.4)
            await r.triplet("INTEST", "00001", "T", go=False)
            await r.upload("INTEST", "FI.FLAC.123456.20260316.00001.T.1.1",
                           FIXTURE.read_bytes() + b"\n")
            await r.upload("INTEST", "GO.FLAC.123456.20260316.00001.T.1")
        await r.processor.drain(10)

    r = run(rig, scenario)
    assert r.answers() == triplet_names("ACRF", "00001", "T")
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == code


# --- promises: every accepted GO or TD answered exactly once, whatever fails -----------------

BAD_TD = "TD.FLAC.654321.20260316.00001.T.1"  # another channel's sender number: ACRF-108


async def _until(condition, timeout: float = 10.0) -> None:
    """Wait for ``condition()`` (bounded): the processor works in its own tasks and threads."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_an_answer_the_disk_refuses_through_every_retry_is_written_after_a_restart(rig):
    """Disk full for as long as the simulator runs: the refused TD's ACRF stays planned (its
    event is never done) and the next start writes it, exactly once."""
    async def while_full(r: Rig) -> None:
        await r.upload("INTEST", BAD_TD)
        await _until(lambda: len(r.faults.fired) >= 3)  # retried, with back-off, not given up

    forever = [FaultSpec(when="answer", action="disk-full", match="FS.ACRF.*")]
    full = run(rig, while_full, faults=forever)
    assert not [n for n in full.answers() if n.startswith("GO.")]  # no answer complete

    async def with_space(r: Rig) -> None:
        await r.processor.drain(10)

    r = run(rig, with_space)
    assert r.answers() == triplet_names("ACRF", "00001", "T")
    assert r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T").error_code == "108"
    assert all(a.written for a in r.journal.answers())
    assert r.journal.events(("pending", "planned")) == []


def test_an_answer_left_unwritten_under_a_done_event_is_written_at_start(rig):
    """Whatever the state of its event, start-up writes a planned answer that is not on
    disk (a journal left so by an older version, or by a bug)."""
    async def refused(r: Rig) -> None:
        await r.upload("INTEST", BAD_TD)
        await _until(lambda: len(r.faults.fired) >= 1)

    forever = [FaultSpec(when="answer", action="disk-full", match="FS.ACRF.*")]
    left = run(rig, refused, faults=forever)
    journal = Journal(left.home.journal_path)
    for event in journal.events(("pending", "planned")):
        journal.set_event_state(event.id, "done")
    journal.close()

    r = run(rig, lambda r: r.processor.drain(10))
    assert r.answers() == triplet_names("ACRF", "00001", "T")


class Crashing:
    """A business check with a bug: it raises on the declarations of one employer."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def fla_check_declaration(self, declaration, position, context):
        self.calls += 1
        if self.calls == 1:
            raise IndexError("string index out of range")
        return None


def test_a_judge_bug_is_answered_acrf_999_and_the_channel_goes_on(rig, caplog):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T")
        await r.processor.drain(10)
        await r.triplet("INTEST", "00002", "T")  # the same check works this time
        await r.processor.drain(10)

    plugins = FlaPlugins(entry_points=False, extra=[Crashing()])
    r = run(rig, scenario, plugins=plugins)
    first = r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T")
    assert first.error_code == "999"
    second = r.read("OUTTEST", "FO.ACRF.999999.20260316.00002.T")
    assert second.accepted
    assert "IndexError" in caplog.text  # the traceback is logged for the maintainers
    assert r.journal.events(("pending", "planned")) == []
    assert r.uploads() == []  # both sets archived

    again = run(rig, lambda r: r.processor.drain(10), plugins=plugins)  # a restart
    assert len([n for n in again.answers() if n.startswith("FO.ACRF")]) == 2


class SlowJudge:
    """A business check that takes five minutes of the simulator clock."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock

    @hookimpl
    def fla_check_declaration(self, declaration, position, context):
        self.clock.advance(minutes=5)
        return None


def test_answers_carry_the_time_of_the_verdict(rig, fla_clock):
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T")
        await r.processor.drain(10)

    started = fla_clock()
    r = run(rig, scenario, plugins=FlaPlugins(entry_points=False, extra=[SlowJudge(fla_clock)]))
    acrf = r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T")
    assert fla_clock() != started
    assert acrf.created == fla_clock().replace(tzinfo=None)


def test_a_set_whose_channel_was_removed_while_it_waited_is_still_answered(rig):
    """fla-sim channel remove (or an edit of simulator.toml) while a GO waits: the set is
    answered ACRF-999 in the channel's tree, never left without an answer."""
    async def scenario(r: Rig) -> None:
        await r.triplet("INTEST", "00001", "T")
        r.config.channels = [c for c in r.config.channels if c.user != r.channel.user]
        await r.processor.drain(10)

    r = run(rig, scenario, answer_delay_ms=300)
    acrf = r.read("OUTTEST", "FO.ACRF.999999.20260316.00001.T")
    assert acrf.error_code == "999"
    assert r.journal.events(("pending", "planned")) == []
