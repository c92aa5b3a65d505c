"""Big FIs validated while they are uploaded (fla_sim.prescan), through a real SFTP server.

The pre-scan threshold is lowered to 64 KiB so that FIs of 1-2 MB are followed. Every test
checks the answers themselves (and, where it matters, that they are byte for byte those of a
simulator without pre-scan) and, through ``Prescanner.stats``, which path produced them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.signing import encode_fs, sign_file
from fla_sim.api import Simulator
from fla_sim.config import ConfigError, SimulatorHome
from fla_sim.pytest_plugin import ChannelInfo, FixedClock, FlaPki, add_channel

BRU = ZoneInfo("Europe/Brussels")
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
DAY = "20260316"
THRESHOLD = 64 * 1024
TIMEOUT = 60.0


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 16, 10, 15, tzinfo=BRU))


# --- files -------------------------------------------------------------------------------------

def big_fi(declarations: int = 1500, *, env: str = "T", first_ref: str | None = None,
           broken_at: int | None = None) -> bytes:
    """An FI of about 1 KB per declaration (the fixture's first one, under fresh references).

    ``first_ref`` names the first declaration; ``broken_at`` makes that declaration invalid
    against the schema (an unknown element), deep inside the file.
    """
    text = FIXTURE.read_text().replace("<Environment>T</Environment>",
                                       f"<Environment>{env}</Environment>")
    head, rest = text.split("  <Declaration>", 1)
    one = "  <Declaration>" + rest.split("  <Declaration>", 1)[0]
    parts = [head]
    for n in range(1, declarations + 1):
        ref = first_ref if n == 1 and first_ref else f"D-0897223670-2025-{n:05d}"
        decl = one.replace("D-0897223670-2025-01", ref)
        if n == broken_at:
            decl = decl.replace("<Action>", "<Oops>x</Oops><Action>")
        parts.append(decl)
    parts.append("</FLAFile>\n")
    return "".join(parts).encode()


def small_fi(ref: str) -> bytes:
    return big_fi(1, first_ref=ref)


def names(seq: str) -> tuple[str, str, str]:
    tail = f"FLAC.123456.{DAY}.{seq}.T"
    return f"FI.{tail}.1.1", f"FS.{tail}.1.1", f"GO.{tail}.1"


def fs_for(channel: ChannelInfo, data: bytes, tmp: Path) -> bytes:
    path = tmp / "to-sign"
    path.write_bytes(data)
    return encode_fs(sign_file(path, channel.signer))


# --- simulator and client ------------------------------------------------------------------------

def configure(home: SimulatorHome, prescan_min_bytes: int) -> None:
    config = home.load()
    config.prescan_min_bytes = prescan_min_bytes
    home.save(config)


@contextmanager
def simulator(home: SimulatorHome, clock: FixedClock, prescan_min_bytes: int
              ) -> Iterator[Simulator]:
    configure(home, prescan_min_bytes)
    with Simulator(home.path, clock=clock) as sim:
        yield sim


async def connect(sim: Simulator, channel: ChannelInfo) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect("127.0.0.1", sim.port, username=channel.user,
                                  client_keys=[str(channel.ssh_key)], known_hosts=None)


async def put(sftp: asyncssh.SFTPClient, name: str, data: bytes) -> None:
    async with sftp.open(f"/INTEST/{name}", "wb") as f:
        await f.write(data)


def send(sim: Simulator, channel: ChannelInfo, files: list[tuple[str, bytes]]) -> None:
    async def go() -> None:
        async with await connect(sim, channel) as conn, conn.start_sftp_client() as sftp:
            for name, data in files:
                await put(sftp, name, data)
    asyncio.run(go())


def answers(sim: Simulator, channel: ChannelInfo) -> dict[str, bytes]:
    """The ACRF/NOTI answer files (FO.*) of the channel's OUTTEST, by name."""
    folder = sim.home.channel_root(channel.user) / "OUTTEST"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("FO.")}


def parsed(sim: Simulator, channel: ChannelInfo) -> list[Acrf | Noti]:
    return [parse_answer(data) for data in answers(sim, channel).values()]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie (it was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def second_home(tmp_path: Path, fla_clock: FixedClock, fla_pki: FlaPki
                ) -> tuple[SimulatorHome, ChannelInfo]:
    """Another home with the same channel: the reference run without pre-scan."""
    home = SimulatorHome.init(tmp_path / "sim-home-2", at=fla_clock())
    home.add_trust(fla_pki.ca_path)
    return home, add_channel(home, fla_pki, tmp_path / "channel-2")


def run_both(fla_sim_home, fla_channel, second_home, fla_clock, tmp_path,
             make_files: Callable[[ChannelInfo], list[tuple[str, bytes]]]
             ) -> tuple[dict[str, bytes], dict[str, bytes], Counter[str]]:
    """The same files through a simulator with pre-scan and one without; answers and stats."""
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        send(sim, fla_channel, make_files(fla_channel))
        sim.drain(TIMEOUT)
        with_prescan, stats = answers(sim, fla_channel), Counter(sim.prescanner.stats)
    home, channel = second_home
    with simulator(home, fla_clock, 0) as sim:
        assert sim.prescanner is None
        send(sim, channel, make_files(channel))
        sim.drain(TIMEOUT)
        without = answers(sim, channel)
    return with_prescan, without, stats


# --- the tests ---------------------------------------------------------------------------------

def test_a_valid_big_fi_is_judged_from_its_prescan_with_the_same_answers(
        fla_sim_home, fla_channel, second_home, fla_clock, tmp_path):
    data = big_fi(1500)
    fi, fs, go = names("00001")

    def files(channel: ChannelInfo) -> list[tuple[str, bytes]]:
        return [(fi, data), (fs, fs_for(channel, data, tmp_path)), (go, b"")]

    with_prescan, without, stats = run_both(fla_sim_home, fla_channel, second_home, fla_clock,
                                            tmp_path, files)
    assert stats["started"] == 1 and stats["used"] == 1 and stats["fallback"] == 0
    assert 0 < stats["follower_peak_rss_kb"] < 100 * 1024
    assert with_prescan == without  # ACRF and NOTI byte for byte
    acrf, noti = (parse_answer(b) for b in with_prescan.values())
    assert isinstance(acrf, Acrf) and acrf.accepted
    assert isinstance(noti, Noti) and noti.result_code == 1 and len(noti.declarations) == 1500


def test_a_bad_signature_outranks_the_schema_error_the_prescan_found(
        fla_sim_home, fla_channel, second_home, fla_clock, tmp_path):
    broken = big_fi(1500, broken_at=1400)
    fi, fs, go = names("00001")

    def files(channel: ChannelInfo) -> list[tuple[str, bytes]]:
        # signed over other bytes: S5 fails (125) before P13 could report the schema error
        return [(fi, broken), (fs, fs_for(channel, big_fi(3), tmp_path)), (go, b"")]

    with_prescan, without, stats = run_both(fla_sim_home, fla_channel, second_home, fla_clock,
                                            tmp_path, files)
    assert stats["used"] == 1
    assert with_prescan == without
    (acrf,) = (parse_answer(b) for b in with_prescan.values())
    assert isinstance(acrf, Acrf) and acrf.error_code == "125"


def test_the_schema_error_found_by_the_prescan_is_the_verdict_when_the_signature_is_good(
        fla_sim_home, fla_channel, second_home, fla_clock, tmp_path):
    broken = big_fi(1500, broken_at=1400)
    fi, fs, go = names("00001")

    def files(channel: ChannelInfo) -> list[tuple[str, bytes]]:
        return [(fi, broken), (fs, fs_for(channel, broken, tmp_path)), (go, b"")]

    with_prescan, without, stats = run_both(fla_sim_home, fla_channel, second_home, fla_clock,
                                            tmp_path, files)
    assert stats["used"] == 1
    assert with_prescan == without
    (acrf,) = (parse_answer(b) for b in with_prescan.values())
    assert isinstance(acrf, Acrf) and acrf.error_code == "312"


def test_a_reupload_of_the_fi_before_its_go_is_judged_on_the_new_bytes(
        fla_sim_home, fla_channel, fla_clock):
    fi, _fs, go = names("00001")
    first, second = big_fi(1500), big_fi(1500, broken_at=700)
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        sim.prescanner.park_after = TIMEOUT  # no GO yet, and no pause either
        send(sim, fla_channel, [(fi, first)])
        # the first upload's pre-scan completes (a valid file) before the name is reused
        assert sim.prescanner.wait_finished(fla_channel.user, "INTEST", fi, TIMEOUT)
        send(sim, fla_channel, [(fi, second), (go, b"")])
        sim.drain(TIMEOUT)
        stats = Counter(sim.prescanner.stats)
        (acrf,) = parsed(sim, fla_channel)
    assert isinstance(acrf, Acrf) and acrf.error_code == "312"
    assert stats["started"] == 2 and stats["used"] == 1


def test_a_registry_change_after_the_prescan_makes_the_judge_read_the_file(
        fla_sim_home, fla_channel, fla_clock):
    shared = "D-0897223670-2025-SHARED"
    big, _fs, big_go = names("00002")
    small, _fs1, small_go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        sim.prescanner.park_after = TIMEOUT  # no GO yet, and no pause either
        send(sim, fla_channel, [(big, big_fi(1500, first_ref=shared))])
        # scanned while the registry did not know the reference yet
        assert sim.prescanner.wait_finished(fla_channel.user, "INTEST", big, TIMEOUT)
        send(sim, fla_channel, [(small, small_fi(shared)), (small_go, b"")])
        sim.drain(TIMEOUT)  # the small set's NOTI makes the reference ACTIVE
        send(sim, fla_channel, [(big_go, b"")])
        sim.drain(TIMEOUT)
        stats = Counter(sim.prescanner.stats)
        found = parsed(sim, fla_channel)
    notis = [a for a in found if isinstance(a, Noti)]
    assert [n.declarations[0].status for n in notis] == ["ACCEPTED", "REJECTED"]
    assert stats["used"] == 0 and stats["fallback"] == 1


@pytest.mark.parametrize("victim", [0, 1], ids=["validating", "rules"])
def test_a_follower_killed_mid_upload_costs_nothing_but_the_prescan(
        fla_sim_home, fla_channel, fla_clock, tmp_path, victim):
    data = big_fi(1500)
    fi, fs, go = names("00001")
    half = len(data) // 2
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner

        async def scenario() -> int:
            async with await connect(sim, fla_channel) as conn, \
                    conn.start_sftp_client() as sftp:
                async with sftp.open(f"/INTEST/{fi}", "wb") as f:
                    await f.write(data[:half])
                    pids = prescanner.running_pids()  # validating and rules processes
                    assert len(pids) == 2
                    pid = pids[victim]
                    os.kill(pid, signal.SIGKILL)
                    await f.write(data[half:], half)
                await put(sftp, fs, fs_for(fla_channel, data, tmp_path))
                await put(sftp, go, b"")
                return pid

        pid = asyncio.run(scenario())
        sim.drain(TIMEOUT)
        stats = Counter(sim.prescanner.stats)
        found = parsed(sim, fla_channel)
        wait_for(lambda: gone(pid), "the killed follower to be reaped")
    assert stats["started"] == 1 and stats["used"] == 0 and stats["fallback"] == 1
    assert [type(a) for a in found] == [Acrf, Noti]  # answered once, completely
    assert found[0].accepted and found[1].result_code == 1


def test_a_client_that_disconnects_mid_upload_leaves_no_follower(
        fla_sim_home, fla_channel, fla_clock):
    data = big_fi(1500)
    fi, _fs, _go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner

        async def scenario() -> list[int]:
            conn = await connect(sim, fla_channel)
            sftp = await conn.start_sftp_client()
            f = await sftp.open(f"/INTEST/{fi}", "wb")
            await f.write(data[:len(data) // 2])
            pids = prescanner.running_pids()
            conn.abort()  # no CLOSE: the upload never completes
            await conn.wait_closed()
            return pids

        pids = asyncio.run(scenario())
        assert len(pids) == 2
        wait_for(lambda: all(gone(pid) for pid in pids),
                 "the followers of the dropped upload to end")
        # reaped just before its harvest thread marks it done: the list empties an instant later
        wait_for(lambda: prescanner.running_pids() == [], "the followers to be forgotten")
        assert prescanner.stats["aborted"] == 1
        assert sim.answers(fla_channel.user, "OUTTEST") == []
        assert list((sim.home.channel_root(fla_channel.user) / "INTEST").iterdir()) == []


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat (``T``: stopped)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


@pytest.mark.parametrize("change", ["configuration", "date"])
def test_a_prescan_made_in_another_context_is_not_used(
        fla_sim_home, fla_channel, fla_clock, tmp_path, change):
    data = big_fi(1500)
    fi, fs, go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        sim.prescanner.park_after = TIMEOUT
        send(sim, fla_channel, [(fi, data), (fs, fs_for(fla_channel, data, tmp_path))])
        assert sim.prescanner.wait_finished(fla_channel.user, "INTEST", fi, TIMEOUT)
        if change == "configuration":
            sim.reload()  # channels and mandates read again: Processor.reset_material()
        else:
            fla_clock.advance(days=1)  # the GO is processed the next day
        send(sim, fla_channel, [(go, b"")])
        sim.drain(TIMEOUT)
        stats = Counter(sim.prescanner.stats)
        found = parsed(sim, fla_channel)
    assert stats["used"] == 0 and stats["fallback"] == 1
    assert [type(a) for a in found] == [Acrf, Noti] and found[0].accepted


def assert_answered_from_the_prescan(sim: Simulator, channel: ChannelInfo, go: str) -> None:
    """Send the GO: the set is answered (ACRF + NOTI, all accepted) from its pre-scan."""
    send(sim, channel, [(go, b"")])
    sim.drain(TIMEOUT)
    assert Counter(sim.prescanner.stats)["used"] == 1
    found = parsed(sim, channel)
    assert [type(a) for a in found] == [Acrf, Noti] and found[1].result_code == 1


def test_a_follower_without_go_is_paused_and_resumed_by_the_go(
        fla_sim_home, fla_channel, fla_clock, tmp_path):
    data = big_fi(1500)
    fi, fs, go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner
        prescanner.park_after = 0.0  # paused as soon as the FI is closed
        send(sim, fla_channel, [(fi, data), (fs, fs_for(fla_channel, data, tmp_path))])
        pids = prescanner.running_pids()
        assert len(pids) == 2
        wait_for(lambda: all(process_state(pid) == "T" for pid in pids),
                 "the followers to be paused")
        assert_answered_from_the_prescan(sim, fla_channel, go)


def test_a_paused_follower_does_not_wait_for_ever(fla_sim_home, fla_channel, fla_clock):
    fi, _fs, _go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner
        prescanner.park_after = 0.0
        prescanner.max_parked_s = 0.2
        send(sim, fla_channel, [(fi, big_fi(1500))])
        assert len(prescanner.running_pids()) == 2
        wait_for(lambda: prescanner.running_pids() == [], "the paused followers to be stopped")


def test_only_the_rules_half_reads_along_until_the_go(fla_sim_home, fla_channel, fla_clock,
                                                      tmp_path):
    # a process reading along slows the upload: the validating one waits for the GO
    data = big_fi(1500)
    fi, fs, go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner
        prescanner.park_after = TIMEOUT
        send(sim, fla_channel, [(fi, data), (fs, fs_for(fla_channel, data, tmp_path))])
        assert prescanner.wait_finished(fla_channel.user, "INTEST", fi, TIMEOUT)  # rules done
        (waiting,) = prescanner.running_pids()
        with open(f"/proc/{waiting}/io") as f:
            read = int(next(line for line in f if line.startswith("rchar:")).split()[1])
        assert read < len(data) // 10, "the validating process read the FI before the GO"
        assert_answered_from_the_prescan(sim, fla_channel, go)


def test_followers_of_fis_waiting_for_their_go_are_capped(
        fla_sim_home, fla_channel, fla_clock, tmp_path):
    first, _fs1, go1 = names("00001")
    second, _fs2, go2 = names("00002")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        prescanner = sim.prescanner
        prescanner.max_waiting = 1
        send(sim, fla_channel, [(first, big_fi(1500))])
        old = prescanner.running_pids()
        send(sim, fla_channel, [(second, big_fi(1500))])  # the first one's followers go
        wait_for(lambda: all(gone(pid) for pid in old), "the oldest followers to be stopped")
        # the second set first: the first one's NOTI would change the registry (same refs)
        send(sim, fla_channel, [(go2, b""), (go1, b"")])
        sim.drain(TIMEOUT)
        stats = Counter(prescanner.stats)
        found = parsed(sim, fla_channel)
    assert stats["started"] == 2 and stats["used"] == 1 and stats["fallback"] == 0
    acrfs = [a for a in found if isinstance(a, Acrf)]
    notis = [a for a in found if isinstance(a, Noti)]
    assert len(acrfs) == len(notis) == 2 and all(a.accepted for a in acrfs)
    assert notis[0].result_code == 1  # the second set, judged first, from its pre-scan


def test_stopping_the_simulator_reaps_every_follower(fla_sim_home, fla_channel, fla_clock):
    first, _fs, _go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        sim.prescanner.park_after = 0.0
        send(sim, fla_channel, [(first, big_fi(1500))])  # finished, paused, waiting for a GO
        pids = sim.prescanner.running_pids()
        wait_for(lambda: all(process_state(pid) == "T" for pid in pids), "a paused follower")
    assert len(pids) == 2 and all(gone(pid) for pid in pids)  # reaped by astop, no zombie


def test_small_uploads_start_no_follower(fla_sim_home, fla_channel, fla_clock):
    fi, _fs, go = names("00001")
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        send(sim, fla_channel, [(fi, small_fi("D-0897223670-2025-01")), (go, b"")])
        sim.drain(TIMEOUT)
        assert sim.prescanner.stats["started"] == 0
        assert [type(a) for a in parsed(sim, fla_channel)] == [Acrf, Noti]


def test_out_of_order_writes_are_followed_by_their_contiguous_prefix(
        fla_sim_home, fla_channel, second_home, fla_clock, tmp_path):
    data = big_fi(1500)
    fi, fs, go = names("00001")
    block = 32 * 1024
    blocks = [(o, data[o:o + block]) for o in range(0, len(data), block)]
    # pairs swapped: every odd block arrives before the even one before it
    shuffled = [b for i in range(0, len(blocks), 2) for b in reversed(blocks[i:i + 2])]

    async def upload(sim: Simulator, channel: ChannelInfo) -> None:
        async with await connect(sim, channel) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open(f"/INTEST/{fi}", "wb") as f:
                for offset, piece in shuffled:
                    await f.write(piece, offset)
            await put(sftp, fs, fs_for(channel, data, tmp_path))
            await put(sftp, go, b"")

    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        asyncio.run(upload(sim, fla_channel))
        sim.drain(TIMEOUT)
        stats, with_prescan = Counter(sim.prescanner.stats), answers(sim, fla_channel)
    home, channel = second_home
    with simulator(home, fla_clock, 0) as sim:
        asyncio.run(upload(sim, channel))
        sim.drain(TIMEOUT)
        without = answers(sim, channel)
    assert stats["used"] == 1 and with_prescan == without


def test_prescan_min_bytes_is_a_server_key(fla_sim_home):
    assert fla_sim_home.load().prescan_min_bytes == 8 * 1024 * 1024
    configure(fla_sim_home, 12345)
    assert fla_sim_home.load().prescan_min_bytes == 12345
    text = fla_sim_home.config_path.read_text()
    for bad in ("-1", "true", "'8M'"):
        fla_sim_home.config_path.write_text(
            text.replace("prescan_min_bytes = 12345", f"prescan_min_bytes = {bad}"))
        with pytest.raises(ConfigError, match="prescan_min_bytes"):
            fla_sim_home.load()


def test_an_fi_over_max_file_size_is_answered_184_without_being_followed_to_its_end(
        fla_sim_home, fla_channel, fla_clock):
    """Size limits come before work: past max_file_size the follower is stopped, and the set
    is answered by P8 at once, never after a pre-scan of the whole file."""
    from dataclasses import replace

    config = fla_sim_home.load()
    config.settings = replace(config.settings, max_file_size=4 * THRESHOLD)
    fla_sim_home.save(config)
    fi, _fs, go = names("00001")
    data = big_fi(1500)  # ~1.5 MB: well past the limit
    assert len(data) > 8 * THRESHOLD
    with simulator(fla_sim_home, fla_clock, THRESHOLD) as sim:
        send(sim, fla_channel, [(fi, data), (go, b"")])
        sim.drain(TIMEOUT)
        stats = Counter(sim.prescanner.stats)
        (acrf,) = parsed(sim, fla_channel)
        assert sim.prescanner.running_pids() == []
    assert isinstance(acrf, Acrf) and acrf.error_code == "184"
    assert stats["used"] == 0


def test_a_follower_builds_the_manager_the_caller_gave(fla_sim_home, fla_channel, fla_clock,
                                                       tmp_path):
    """A manager given by the caller reaches the follower as its recipe (here with a built-in
    blocked): the set is answered from the pre-scan, never with the process-wide plugins."""
    from fla_core.plugins import FlaPlugins

    data = big_fi(1500)
    fi, fs, go = names("00001")
    configure(fla_sim_home, THRESHOLD)
    plugins = FlaPlugins(entry_points=False, modules=(), blocked=("fla_core.checks.years",))
    with Simulator(fla_sim_home.path, clock=fla_clock, plugins=plugins) as sim:
        send(sim, fla_channel, [(fi, data), (fs, fs_for(fla_channel, data, tmp_path))])
        assert_answered_from_the_prescan(sim, fla_channel, go)
        assert Counter(sim.prescanner.stats)["fallback"] == 0


# --- the pre-scan against the plain way --------------------------------------------------------

DIFF_MAX_DECLARATIONS = 1000  # P15 (172) for the "many declarations" FI, the others are below


def varied_sets(channel: ChannelInfo, tmp: Path) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """Single-FI sets of every kind of verdict, each FI big enough to be pre-scanned: the case
    name, then the files in upload order (the GO last)."""
    valid = big_fi(900)
    # an invalid UTF-8 byte deep in the file (P10, 138)
    badly_encoded = valid.replace(b"D-0897223670-2025-00800", b"D-0897223670-\xff-00800")
    cases = {
        "valid": (valid, valid),
        # the same references again: the registry now knows them, the rules reject them
        "rejected by the rules": (valid, valid),
        "schema-invalid": (big_fi(900, broken_at=800),) * 2,
        "bad encoding": (badly_encoded, badly_encoded),
        # signed over other bytes: S5 (125) before the schema error the scan finds
        "wrong signature": (big_fi(900, broken_at=800), big_fi(3)),
        "many declarations": (big_fi(DIFF_MAX_DECLARATIONS + 100),) * 2,
        # production environment in a test folder (P11)
        "wrong environment": (big_fi(900, env="R"),) * 2,
    }
    sets = []
    for n, (case, (data, signed)) in enumerate(cases.items(), start=1):
        fi, fs, go = names(f"{n:05d}")
        assert len(data) > THRESHOLD
        sets.append((case, [(fi, data), (fs, fs_for(channel, signed, tmp)), (go, b"")]))
    return sets


def set_max_declarations(home: SimulatorHome, limit: int) -> None:
    from dataclasses import replace

    config = home.load()
    config.settings = replace(config.settings, max_declarations=limit)
    home.save(config)


def test_the_prescan_gives_the_answers_of_reading_the_file_for_varied_fis(
        fla_sim_home, fla_channel, second_home, fla_clock, tmp_path):
    """The differential test of the pre-scan against the plain way (``prescan_min_bytes = 0``:
    the judge reads the FI after its GO): every answer byte for byte, every set of the
    pre-scanned run judged from its pre-scan."""
    home, channel = second_home
    runs: list[dict[str, bytes]] = []
    for sim_home, sim_channel, threshold in ((fla_sim_home, fla_channel, THRESHOLD),
                                             (home, channel, 0)):
        set_max_declarations(sim_home, DIFF_MAX_DECLARATIONS)
        sets = varied_sets(sim_channel, tmp_path)
        with simulator(sim_home, fla_clock, threshold) as sim:
            for _case, files in sets:
                send(sim, sim_channel, files)
                sim.drain(TIMEOUT)  # one set at a time: each one's registry is the last's
            if threshold:
                stats = Counter(sim.prescanner.stats)
            runs.append(answers(sim, sim_channel))
    with_prescan, without = runs
    assert stats["started"] == stats["used"] == len(sets) and stats["fallback"] == 0
    assert with_prescan == without  # ACRF and NOTI byte for byte
    # each case reached the verdict it was made for
    codes: dict[str, list[object]] = {}
    for data in with_prescan.values():  # in the order they were written
        answer = parse_answer(data)
        seq = answer.file_name.split(".")[4]  # the set's, not the answer's sequence number
        codes.setdefault(seq, []).append(
            answer.error_code if isinstance(answer, Acrf) else
            sorted({d.status for d in answer.declarations}))
    assert [codes[f"{n:05d}"] for n in range(1, len(sets) + 1)] == [
        [None, ["ACCEPTED"]], [None, ["REJECTED"]], ["312"], ["138"], ["125"], ["172"],
        ["158"]]
