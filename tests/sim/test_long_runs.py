"""Exactly-once under random crashes and many senders at once, against a real ``fla-sim serve``.

Small by default (a few crash points, a few channels: the default suite); ``--long`` (or
``FLA_LONG=1``) runs the long versions whose figures are in docs/reliability.md: 100 random
SIGKILLs of the server while a sender keeps sending, and 50 channels sending 10 signed sets
each at the same time. Each test prints its figures (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core.responses import Acrf, parse_answer
from fla_core.signing import encode_fs, sign_stream
from fla_sim.config import SimulatorHome
from fla_sim.pytest_plugin import ChannelInfo, FlaPki, add_channel

LONG = os.environ.get("FLA_LONG", "") not in ("", "0")
CRASH_POINTS = 100 if LONG else 3
CHANNELS, SETS_PER_CHANNEL = (50, 10) if LONG else (4, 3)
SEED = int(os.environ.get("FLA_LONG_SEED", "20261204"))  # a failing run is replayed by its seed
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
ANSWER = re.compile(r"(FO|FS|GO)\.(ACRF|NOTI)\.999999\.\d{8}\.\d{5}\.T")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if LONG else 120)]


def today() -> str:
    """The date ``fla-sim serve`` puts in names: it runs on the real clock (spec 4.5, N6)."""
    return datetime.now(ZoneInfo("Europe/Brussels")).strftime("%Y%m%d")


def signed_set(channel: ChannelInfo, seq: int) -> list[tuple[str, bytes]]:
    """FI, FS and GO of one-part set ``seq`` of the channel, with references of its own."""
    xml = FIXTURE.read_bytes()
    xml = xml.replace(b"<SenderNbr>123456</SenderNbr>",
                      f"<SenderNbr>{channel.sender}</SenderNbr>".encode())
    xml = xml.replace(b"ACME-2026-0001", f"LR-{channel.sender}-{seq:05d}".encode())
    xml = xml.replace(b"D-0897223670-2025-0", f"D-{channel.sender}-{seq:05d}-0".encode())
    fs = encode_fs(sign_stream(io.BytesIO(xml), channel.signer))
    stem = f"FLAC.{channel.sender}.{today()}.{seq:05d}.T"
    return [(f"FI.{stem}.1.1", xml), (f"FS.{stem}.1.1", fs), (f"GO.{stem}.1", b"")]


@dataclass
class Answers:
    """A channel's answer folder, read once: who was answered how often, and what is wrong."""

    acrf: Counter[str] = field(default_factory=Counter)  # GO name -> ACRFs naming it
    noti: Counter[str] = field(default_factory=Counter)
    refused: dict[str, str] = field(default_factory=dict)  # GO name -> code of a negative ACRF
    problems: list[str] = field(default_factory=list)  # half-written answers, stray files


def read_answers(out: Path) -> Answers:
    """Every published answer (its GO written last) must have its FO and FS; any other file
    is a half-written answer or a leftover."""
    seen = Answers()
    names = set(os.listdir(out))
    for name in sorted(names):
        match = ANSWER.fullmatch(name)
        if match is None:
            seen.problems.append(f"stray file {name}")
            continue
        if match.group(1) != "GO":
            if "GO" + name[2:] not in names:
                seen.problems.append(f"{name} without its GO (half-written answer)")
            continue
        if {"FO" + name[2:], "FS" + name[2:]} - names:
            seen.problems.append(f"{name} published without its FO or FS")
            continue
        answer = parse_answer((out / ("FO" + name[2:])).read_bytes())
        if match.group(2) == "ACRF":
            assert isinstance(answer, Acrf)
            seen.acrf[answer.file_name] += 1
            if not answer.accepted:
                seen.refused[answer.file_name] = str(answer.error_code)
        else:
            seen.noti[answer.file_name] += 1
    return seen


def wait_answered(out: Path, gos: set[str], timeout: float) -> Answers:
    """Read the answers until every GO of ``gos`` has its ACRF (and its NOTI when accepted)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = read_answers(out)
        done = all(seen.acrf[go] and (go in seen.refused or seen.noti[go]) for go in gos)
        if done or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


async def _connect(port: int, channel: ChannelInfo) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect("127.0.0.1", port, username=channel.user,
                                  client_keys=[str(channel.ssh_key)], known_hosts=None,
                                  agent_path=None)


async def _put(sftp: asyncssh.SFTPClient, name: str, data: bytes) -> None:
    async with sftp.open(f"INTEST/{name}", "wb") as f:
        await f.write(data)


# --- random crash points --------------------------------------------------------------------------

async def send_until_dropped(port: int, channel: ChannelInfo, first_seq: int,
                             confirmed: list[str], attempted: list[str]) -> int:
    """Send sets back to back (not waiting for answers) until the connection drops; a GO
    whose close the server acknowledged is confirmed. Returns the next sequence number."""
    seq = first_seq
    deadline = time.monotonic() + 30  # the kill comes within a second: this only bounds a bug
    with contextlib.suppress(OSError, asyncssh.Error):
        async with await _connect(port, channel) as conn, conn.start_sftp_client() as sftp:
            while time.monotonic() < deadline:
                files = signed_set(channel, seq)
                seq += 1
                for name, data in files:
                    if name.startswith("GO."):
                        attempted.append(name)
                    await _put(sftp, name, data)
                confirmed.append(files[-1][0])
    return seq


def test_sigkilled_server_answers_every_accepted_go_exactly_once(
        fla_sim_home: SimulatorHome, fla_channel: ChannelInfo,
        fla_sim_serve: Callable[..., object]) -> None:
    rng = random.Random(SEED)
    confirmed: list[str] = []
    attempted: list[str] = []
    seq = 1
    for _ in range(CRASH_POINTS):
        served = fla_sim_serve(fla_sim_home.path)
        proc = served.proc  # type: ignore[attr-defined]
        # anywhere in the first 0.6 s: during start-up recovery, uploads, judging, answering
        killer = threading.Timer(rng.uniform(0.0, 0.6), os.kill, (proc.pid, signal.SIGKILL))
        killer.start()
        seq = asyncio.run(send_until_dropped(served.port, fla_channel, seq,  # type: ignore[attr-defined]
                                             confirmed, attempted))
        killer.join()
        assert proc.wait(30) == -signal.SIGKILL
    last = fla_sim_serve(fla_sim_home.path)  # recovers what the last kill left
    out = fla_sim_home.channel_root(fla_channel.user) / "OUTTEST"
    seen = wait_answered(out, set(confirmed), 60 + CRASH_POINTS)
    assert last.stop() == 0  # type: ignore[attr-defined]
    seen = read_answers(out)  # after the stop: nothing more will be written
    print(f"\n[crash] seed {SEED}: {CRASH_POINTS} SIGKILLs; GO sent {len(attempted)}, "
          f"acknowledged {len(confirmed)}; ACRF {sum(seen.acrf.values())} "
          f"(negative {len(seen.refused)}), NOTI {sum(seen.noti.values())}; "
          f"problems {len(seen.problems)}")
    assert seen.problems == []  # no half-written answer, no temporary file left
    assert [go for go in confirmed if seen.acrf[go] != 1] == []  # each answered exactly once
    assert [go for go, n in seen.acrf.items() if n > 1 or go not in attempted] == []
    assert [go for go, n in seen.noti.items() if n != 1 or go in seen.refused] == []
    assert [go for go in seen.acrf if go not in seen.refused and not seen.noti[go]] == []
    assert seen.refused == {}  # every set was complete and signed: none refused
    assert len(confirmed) >= CRASH_POINTS // 2  # the kills did not all land before any upload


# --- many senders at once -------------------------------------------------------------------------

def test_many_channels_sending_signed_sets_at_once_lose_and_double_nothing(
        fla_sim_home: SimulatorHome, fla_pki: FlaPki, fla_sim_serve: Callable[..., object],
        tmp_path: Path) -> None:
    channels = [add_channel(fla_sim_home, fla_pki, tmp_path / f"ch{i}", user=f"long-{i:02d}",
                            sender=f"{310000 + i}", mandates=False) for i in range(CHANNELS)]
    sets = {ch.user: [signed_set(ch, seq) for seq in range(1, SETS_PER_CHANNEL + 1)]
            for ch in channels}
    served = fla_sim_serve(fla_sim_home.path)
    # logins a few at a time, as clients that retry would: the simulator admits 10 unfinished
    # logins per source address (max_startups_per_source)
    logins = asyncio.Semaphore(5)

    async def sender(channel: ChannelInfo) -> None:
        async with logins:
            conn = await _connect(served.port, channel)  # type: ignore[attr-defined]
        async with conn, conn.start_sftp_client() as sftp:
            for files in sets[channel.user]:
                for name, data in files:
                    await _put(sftp, name, data)

    async def everyone() -> None:
        await asyncio.gather(*(sender(ch) for ch in channels))

    start = time.monotonic()
    asyncio.run(everyone())
    results = {}
    for ch in channels:
        gos = {files[-1][0] for files in sets[ch.user]}
        results[ch.user] = (gos, wait_answered(fla_sim_home.channel_root(ch.user) / "OUTTEST",
                                               gos, 60 + CHANNELS * SETS_PER_CHANNEL / 5))
    elapsed = time.monotonic() - start
    assert served.stop() == 0  # type: ignore[attr-defined]
    results = {user: (gos, read_answers(fla_sim_home.channel_root(user) / "OUTTEST"))
               for user, (gos, _) in results.items()}  # after the stop: the final state
    acrfs = sum(sum(seen.acrf.values()) for _, seen in results.values())
    notis = sum(sum(seen.noti.values()) for _, seen in results.values())
    print(f"\n[senders] {CHANNELS} channels x {SETS_PER_CHANNEL} signed sets at once: ACRF "
          f"{acrfs}, NOTI {notis} in {elapsed:.1f} s")
    for user, (gos, seen) in results.items():
        assert seen.problems == [], user
        assert seen.acrf == Counter(dict.fromkeys(gos, 1)), user  # none lost, none doubled
        assert seen.noti == Counter(dict.fromkeys(gos, 1)), user
        assert seen.refused == {}, user
    assert acrfs == notis == CHANNELS * SETS_PER_CHANNEL
