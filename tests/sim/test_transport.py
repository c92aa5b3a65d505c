"""The sending side against a real simulator on loopback: upload order, resume, answers (5.1, 5.8).

Everything goes through a real asyncssh client and server; the simulator clock is fixed so that
the names' dates, the FS signing time and the NOTI verdicts do not depend on the day the suite
runs.
"""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.set_results import SetResult, collect_results, complete
from fla_core.transport import (
    STATE_FILE,
    ChannelAddress,
    TransportError,
    fetch_answers,
    plan_sets,
    send_sets,
)
from fla_core.triplet import write_fs
from fla_sim.pytest_plugin import FixedClock

BRU = ZoneInfo("Europe/Brussels")
AT = datetime(2026, 3, 16, 10, 15, tzinfo=BRU)
DAY = "20260316"
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(AT)


def accepted_fi(padding: int = 0) -> bytes:
    """The 7.2 file without its CANCEL declaration: every declaration is accepted (NOTI 1)."""
    data = re.sub(rb"\s*<Declaration>\s*<DeclarationRef>D-0897223670-2025-02.*?</Declaration>",
                  b"", FIXTURE.read_bytes(), flags=re.S)
    if padding:  # a comment keeps the document valid while making a part big
        data = data.replace(b"</FLAFile>", b"<!--" + b"x" * padding + b"-->\n</FLAFile>")
    return data


def write_set(folder: Path, seq: str, data: bytes, signer: object, *, parts: int = 1,
              env: str = "T", split: int | None = None) -> list[Path]:
    """FI parts (data cut in ``parts`` pieces), an FS per part, then the GO; in upload order."""
    folder.mkdir(parents=True, exist_ok=True)
    tail = f"FLAC.123456.{DAY}.{seq}.{env}"
    step = split or -(-len(data) // parts)
    cuts = [data[i * step:(i + 1) * step] for i in range(parts - 1)]
    pieces = [*cuts, data[(parts - 1) * step:]]
    written = []
    for index, piece in enumerate(pieces, 1):
        fi = folder / f"FI.{tail}.{parts}.{index}"
        fi.write_bytes(piece)
        written += [fi, write_fs(fi, signer, signing_time=AT)]
    go = folder / f"GO.{tail}.{parts}"
    go.write_bytes(b"")
    return [*written, go]


def address_of(sim, channel) -> ChannelAddress:
    return ChannelAddress("127.0.0.1", sim.port, channel.user, channel.ssh_key)


def answers_on_server(sim, channel, prefix: str = "") -> list[str]:
    return [n for n in sim.answers(channel.user, "OUTTEST") if n.startswith(prefix)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. a valid triplet: upload, answers, signatures -----------------------------------------

def test_send_then_fetch_a_valid_triplet(fla_sim, fla_channel, fla_sim_home, tmp_path):
    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    address = address_of(fla_sim, fla_channel)

    report = asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert report.uploaded == [p.name for p in files] and report.skipped == []
    go = files[-1].name
    assert report.triggers == [go]

    # no drain: the client's own polling waits for the ACRF and the NOTI (spec 5.8)
    results: dict[str, SetResult] = {}

    def answered(fetched):
        results.clear()
        collect_results(fetched, results, fla_sim_home.ca_cert_path)
        return complete(results, [go])

    fetched = asyncio.run(fetch_answers(address, tmp_path / "answers", want=answered,
                                        timeout=20, interval=0.05))
    assert sorted(a.path.name for a in fetched) == [
        f"FO.ACRF.999999.{DAY}.00001.T", f"FO.NOTI.999999.{DAY}.00002.T"]
    for answer in fetched:
        assert answer.directory == "OUTTEST"
        assert answer.path.is_file() and answer.signature is not None
        assert answer.signature.name == "FS." + answer.path.name[3:]
    r = results[go]
    assert r.acrf is not None and r.acrf.accepted and r.acrf.file_name == go
    assert r.noti is not None and r.noti.result_code == 1 and r.noti.ticket == r.acrf.ticket
    assert r.signature_problem is None and not r.rejected
    # fetched answers are removed from the channel; a second poll finds nothing
    assert answers_on_server(fla_sim, fla_channel) == []
    assert asyncio.run(fetch_answers(address, tmp_path / "again")) == []


def test_a_tampered_answer_fails_its_signature_check(fla_sim, fla_channel, fla_sim_home,
                                                     tmp_path):
    folder = tmp_path / "outbox"
    write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    address = address_of(fla_sim, fla_channel)
    asyncio.run(send_sets(address, folder, plan_sets(folder)))
    fla_sim.drain()
    fetched = asyncio.run(fetch_answers(address, tmp_path / "answers"))
    acrf = next(a for a in fetched if a.path.name.startswith("FO.ACRF"))
    original = acrf.path.read_bytes()
    acrf.path.write_bytes(acrf.path.read_bytes().replace(b"<ReferenceNbr>", b"<ReferenceNbr>9"))

    results: dict[str, SetResult] = {}
    collect_results(fetched, results, fla_sim_home.ca_cert_path)
    (r,) = results.values()
    assert acrf.path.read_bytes() != original
    assert r.signature_problem is not None
    assert r.signature_problem.startswith(acrf.path.name) and "ACRF-" in r.signature_problem
    assert r.noti is not None  # the untouched NOTI still verifies and is still reported


def test_an_answer_corrupted_by_the_channel_is_flagged(fla_sim, fla_channel, fla_sim_home,
                                                       tmp_path):
    """The simulator's ``corrupt`` fault alters an answer after signing (design 5)."""
    folder = tmp_path / "outbox"
    write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    fla_sim.add_fault(when="answer", action="corrupt", match="FO.NOTI.*", times=1)
    address = address_of(fla_sim, fla_channel)
    asyncio.run(send_sets(address, folder, plan_sets(folder)))
    fla_sim.drain()
    fetched = asyncio.run(fetch_answers(address, tmp_path / "answers"))
    results: dict[str, SetResult] = {}
    collect_results(fetched, results, fla_sim_home.ca_cert_path)
    (r,) = results.values()
    assert r.acrf is not None and r.acrf.accepted and r.noti is not None
    assert r.signature_problem is not None
    assert r.signature_problem.startswith(f"FO.NOTI.999999.{DAY}.00002.T: ACRF-125 ")


def test_answers_from_another_ca_are_not_trusted(fla_sim, fla_channel, fla_pki, tmp_path):
    folder = tmp_path / "outbox"
    write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    address = address_of(fla_sim, fla_channel)
    asyncio.run(send_sets(address, folder, plan_sets(folder)))
    fla_sim.drain()
    fetched = asyncio.run(fetch_answers(address, tmp_path / "answers"))
    results: dict[str, SetResult] = {}
    collect_results(fetched, results, fla_pki.ca_path)  # the senders' CA, not the home CA
    (r,) = results.values()
    assert r.acrf is not None and r.acrf.accepted
    assert r.signature_problem is not None


def test_an_answer_is_read_only_once_its_go_is_present(fla_sim, fla_channel, tmp_path):
    """Spec 5.8: an FO whose GO is not written yet is left alone."""
    outtest = fla_sim.home.channel_root(fla_channel.user) / "OUTTEST"
    fo = outtest / f"FO.ACRF.999999.{DAY}.00042.T"
    fo.write_bytes(b"<ACRF/>")
    address = address_of(fla_sim, fla_channel)
    assert asyncio.run(fetch_answers(address, tmp_path / "answers")) == []
    assert fo.exists() and not (tmp_path / "answers" / fo.name).exists()


def test_keep_leaves_answers_on_the_channel(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    address = address_of(fla_sim, fla_channel)
    asyncio.run(send_sets(address, folder, plan_sets(folder)))
    fla_sim.drain()
    before = answers_on_server(fla_sim, fla_channel)
    fetched = asyncio.run(fetch_answers(address, tmp_path / "answers", remove=False))
    assert len(fetched) == 2 and answers_on_server(fla_sim, fla_channel) == before


# --- 2. resume after a dropped connection ------------------------------------------------------

def _single_acrf(sim, channel, tmp_path, go: str) -> tuple[Acrf, Noti]:
    sim.drain()
    root = sim.home.channel_root(channel.user) / "OUTTEST"
    parsed = [parse_answer((root / n).read_bytes())
              for n in answers_on_server(sim, channel, "FO.")]
    acrfs = [p for p in parsed if isinstance(p, Acrf)]
    notis = [p for p in parsed if isinstance(p, Noti)]
    assert [a.file_name for a in acrfs] == [go], "the set must be answered exactly once"
    assert len(notis) == 1
    return acrfs[0], notis[0]


def test_resume_after_the_channel_drops_an_upload(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", accepted_fi(), fla_channel.signer, parts=2)
    names = [p.name for p in files]
    assert names[2].endswith(".2.2") and names[2].startswith("FI.")
    fla_sim.add_fault(when="upload", action="drop-connection", match="FI.*.2.2", times=1)
    address = address_of(fla_sim, fla_channel)

    with pytest.raises(TransportError, match=re.escape(names[2])):
        asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert (folder / STATE_FILE).is_file()

    report = asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert report.skipped == names[:2]
    assert report.uploaded == names[2:]
    acrf, noti = _single_acrf(fla_sim, fla_channel, tmp_path, names[-1])
    assert acrf.accepted and noti.result_code == 1  # no ACRF-133, no 120 for a lost part


class Interrupted(Exception):
    pass


def test_resume_after_the_client_stops_in_the_middle_of_a_file(fla_sim, fla_channel,
                                                              tmp_path):
    data = accepted_fi(padding=700_000)
    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", data, fla_channel.signer, parts=2,
                      split=data.index(b"<!--") - 10)
    names = [p.name for p in files]
    big = names[2]
    assert (folder / big).stat().st_size > 2 * 256 * 1024  # several blocks

    def stop_mid_file(name: str, done: int, total: int) -> None:
        if name == big and done < total:
            raise Interrupted(f"{name} at {done}/{total}")

    address = address_of(fla_sim, fla_channel)
    with pytest.raises(Interrupted):
        asyncio.run(send_sets(address, folder, plan_sets(folder), progress=stop_mid_file))
    # the half-written part was never closed, so the channel never saw it complete (5.7)
    intest = fla_sim.home.channel_root(fla_channel.user) / "INTEST"
    visible = sorted(p.name for p in intest.iterdir() if not p.name.startswith("."))
    assert visible == names[:2]

    seen: list[tuple[str, int, int]] = []
    report = asyncio.run(send_sets(address, folder, plan_sets(folder),
                                   progress=lambda *a: seen.append(a)))
    assert report.skipped == names[:2] and report.uploaded == names[2:]
    assert (big, len(data) - (data.index(b"<!--") - 10), len(data) - (data.index(b"<!--") - 10)) \
        in seen
    acrf, noti = _single_acrf(fla_sim, fla_channel, tmp_path, names[-1])
    assert acrf.accepted and noti.result_code == 1


def test_a_rerun_of_a_fully_sent_folder_sends_nothing(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    address = address_of(fla_sim, fla_channel)
    asyncio.run(send_sets(address, folder, plan_sets(folder)))
    again = asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert again.uploaded == [] and again.skipped == [p.name for p in files]
    acrf, _ = _single_acrf(fla_sim, fla_channel, tmp_path, files[-1].name)
    assert acrf.accepted


# --- 3. planning a folder ----------------------------------------------------------------------

def test_plan_sets_groups_and_orders_a_folder(tmp_path, fla_pki):
    signer = fla_pki.signer("0123456749").signer()
    folder = tmp_path / "outbox"
    first = write_set(folder, "00001", accepted_fi(), signer, parts=3)
    second = write_set(folder, "00002", accepted_fi(), signer, parts=2, env="R")
    td = folder / f"TD.FLAC.123456.{DAY}.00003.T.1"
    td.write_bytes(b"")
    (folder / "notes.txt").write_text("not a channel file")
    (folder / STATE_FILE).write_text("{}")
    (folder / "answers").mkdir()

    sets = plan_sets(folder)
    assert [(s.stem, s.directory) for s in sets] == [
        (f"FLAC.123456.{DAY}.00001.T", "INTEST"),
        (f"FLAC.123456.{DAY}.00002.R", "IN"),
        (f"FLAC.123456.{DAY}.00003.T", "INTEST"),
    ]
    assert [p.name for p in sets[0].files] == [p.name for p in first]
    assert [p.name[:2] + p.name[-4:] for p in sets[0].files] == [
        "FI.3.1", "FS.3.1", "FI.3.2", "FS.3.2", "FI.3.3", "FS.3.3", "GO.T.3"]
    assert [p.name for p in sets[1].files] == [p.name for p in second]
    assert sets[2].files == (td,) and sets[2].trigger == td.name


def test_a_td_is_sent_and_cancels_its_set_without_answer(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", accepted_fi(), fla_channel.signer)
    files[-1].unlink()  # no GO: the sender gives up on this set
    td = folder / f"TD.FLAC.123456.{DAY}.00001.T.1"
    td.write_bytes(b"")
    address = address_of(fla_sim, fla_channel)
    report = asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert report.uploaded == [files[0].name, files[1].name, td.name]
    assert report.triggers == [td.name]
    fla_sim.drain()
    assert answers_on_server(fla_sim, fla_channel) == []
    assert complete({}, report.triggers)  # nothing to wait for


# --- connection problems -----------------------------------------------------------------------

def test_a_closed_port_is_a_clear_transport_error(fla_channel, tmp_path):
    address = ChannelAddress("127.0.0.1", closed_port(), fla_channel.user, fla_channel.ssh_key,
                             connect_timeout=5)
    with pytest.raises(TransportError, match=r"cannot connect to 127\.0\.0\.1:\d+"):
        asyncio.run(fetch_answers(address, tmp_path / "answers"))


def test_an_unregistered_key_is_refused_clearly(fla_sim, fla_channel, tmp_path):
    import asyncssh

    other = tmp_path / "other-key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    address = ChannelAddress("127.0.0.1", fla_sim.port, fla_channel.user, other)
    with pytest.raises(TransportError, match="refused the key"):
        asyncio.run(fetch_answers(address, tmp_path / "answers"))
    missing = ChannelAddress("127.0.0.1", fla_sim.port, fla_channel.user, tmp_path / "nope")
    with pytest.raises(TransportError, match="nope: no such file"):
        asyncio.run(fetch_answers(address=missing, out=tmp_path / "answers"))


def test_known_hosts_checks_the_channel_host_key(fla_sim, fla_channel, tmp_path):
    import asyncssh

    def known_hosts(public: str) -> Path:
        path = tmp_path / f"known_hosts-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"[127.0.0.1]:{fla_sim.port} {public}\n")
        return path

    real = Path(str(fla_sim.home.host_key_path) + ".pub").read_text().strip()
    good = ChannelAddress("127.0.0.1", fla_sim.port, fla_channel.user, fla_channel.ssh_key,
                          known_hosts=known_hosts(real))
    assert asyncio.run(fetch_answers(good, tmp_path / "answers")) == []

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    bad = ChannelAddress("127.0.0.1", fla_sim.port, fla_channel.user, fla_channel.ssh_key,
                         known_hosts=known_hosts(impostor))
    with pytest.raises(TransportError, match=r"cannot connect to 127\.0\.0\.1"):
        asyncio.run(fetch_answers(bad, tmp_path / "answers"))


def test_a_part_sent_again_because_its_record_was_lost_is_harmless(fla_sim, fla_channel,
                                                                  tmp_path):
    """A run that dies between a file's close and its record sends that file once more."""
    import json

    folder = tmp_path / "outbox"
    files = write_set(folder, "00001", accepted_fi(), fla_channel.signer, parts=2)
    names = [p.name for p in files]
    fla_sim.add_fault(when="upload", action="drop-connection", match="FI.*.2.2", times=1)
    address = address_of(fla_sim, fla_channel)
    with pytest.raises(TransportError):
        asyncio.run(send_sets(address, folder, plan_sets(folder)))
    state = folder / STATE_FILE
    sent = json.loads(state.read_text())
    del sent[names[1]]  # the FS of part 1 reached the channel, but its record did not
    state.write_text(json.dumps(sent))

    report = asyncio.run(send_sets(address, folder, plan_sets(folder)))
    assert report.skipped == names[:1] and report.uploaded == names[1:]
    acrf, noti = _single_acrf(fla_sim, fla_channel, tmp_path, names[-1])
    assert acrf.accepted and noti.result_code == 1


def test_compressed_answers_are_fetched_and_verified(fla_sim_home, fla_channel, fla_clock,
                                                     tmp_path):
    from fla_sim.api import Simulator

    folder = tmp_path / "outbox"
    go = write_set(folder, "00001", accepted_fi(), fla_channel.signer)[-1].name
    with Simulator(fla_sim_home.path, clock=fla_clock, compress_answers=True) as sim:
        address = address_of(sim, fla_channel)
        asyncio.run(send_sets(address, folder, plan_sets(folder)))
        sim.drain()
        fetched = asyncio.run(fetch_answers(address, tmp_path / "answers"))
    assert sorted(a.path.name[:7] for a in fetched) == ["CO.NOTI", "FO.ACRF"]
    results: dict[str, SetResult] = {}
    collect_results(fetched, results, fla_sim_home.ca_cert_path)
    r = results[go]
    assert r.noti is not None and r.noti.result_code == 1 and r.signature_problem is None
