"""An answer file is never overwritten with other bytes (fla_sim.answers, docs/simulator.md).

After a crash the simulator writes a planned answer again and keeps what is already there; if a
file under the answer's name holds other bytes, something else wrote it, and it must neither be
replaced nor be completed with an FS and a GO that would make a client take it for the answer.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.triplet import write_fs
from fla_sim.answers import AnswerConflict, write_answer

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
DAY = "20260316"
FO = f"FO.ACRF.999999.{DAY}.00001.T"
FS, GO = f"FS.ACRF.999999.{DAY}.00001.T", f"GO.ACRF.999999.{DAY}.00001.T"
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
FOREIGN = b"<ACRF>written by something else</ACRF>\n"

cli.load_command_modules()


@pytest.fixture
def answers(tmp_path: Path) -> Path:
    folder = tmp_path / "OUTTEST"
    folder.mkdir()
    return folder


def test_an_answer_written_again_keeps_its_files(fla_sim_home, answers: Path) -> None:
    signer = fla_sim_home.answer_signer()
    first = write_answer(answers, FO, b"<ACRF/>", signer, signing_time=AT, durable=False)
    before = {p.name: p.read_bytes() for p in first}
    assert sorted(before) == sorted([FO, FS, GO])
    again = write_answer(answers, FO, b"<ACRF/>", signer, signing_time=AT, durable=False)
    assert {p.name: p.read_bytes() for p in again} == before  # same bytes: nothing rewritten


def test_an_answer_name_holding_other_bytes_is_never_overwritten(fla_sim_home,
                                                                 answers: Path) -> None:
    (answers / FO).write_bytes(FOREIGN)
    with pytest.raises(AnswerConflict, match=re.escape(FO) + ".*refusing to overwrite"):
        write_answer(answers, FO, b"<ACRF/>", fla_sim_home.answer_signer(), signing_time=AT,
                     durable=False)
    assert (answers / FO).read_bytes() == FOREIGN
    # no FS or GO either (nor a temporary file): with them a client would take the foreign
    # bytes for the answer
    assert [p.name for p in answers.iterdir()] == [FO]


@pytest.fixture
def fla_clock():  # type: ignore[no-untyped-def]
    from fla_sim.pytest_plugin import FixedClock

    return FixedClock(AT)


def test_the_simulator_keeps_a_foreign_file_under_its_answer_name(
        fla_sim, fla_channel, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = fla_sim.home.channel_root(fla_channel.user) / "OUTTEST"
    (out / FO).write_bytes(FOREIGN)  # where the first answer of the day will be planned
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    fi = outbox / f"FI.FLAC.123456.{DAY}.00001.T.1.1"
    fi.write_bytes(FIXTURE.read_bytes())
    write_fs(fi, fla_channel.signer, signing_time=AT)
    (outbox / f"GO.FLAC.123456.{DAY}.00001.T.1").write_bytes(b"")
    caplog.set_level(logging.ERROR, logger="fla_sim")
    res = CliRunner().invoke(cli.app, [
        "send", str(outbox), "--host", "127.0.0.1", "--port", str(fla_sim.port),
        "--user", fla_channel.user, "--identity", str(fla_channel.ssh_key)])
    assert res.exit_code == 0, res.output
    fla_sim.drain()
    assert (out / FO).read_bytes() == FOREIGN
    assert not (out / FS).exists() and not (out / GO).exists()
    assert any(isinstance(r.exc_info[1] if r.exc_info else None, AnswerConflict)
               or "refusing to overwrite" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
