"""``[server] durability`` (docs/simulator.md "Durability"): "process" never flushes the disk per
set, "power" flushes every journal commit and every answer file. How many commits a set costs is
a budget, measured by bench/bench_channel.py ("journal commits per set"), not pinned here."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_sim.answers import write_answer
from fla_sim.config import ConfigError, SimulatorHome
from fla_sim.store import Journal

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
NAME = "FO.ACRF.999999.20260316.00001.T"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> SimulatorHome:
    return SimulatorHome.init(tmp_path_factory.mktemp("dur") / "home")


def test_durability_defaults_to_process_and_round_trips(home: SimulatorHome) -> None:
    config = home.load()
    assert config.durability == "process"
    config.durability = "power"
    home.save(config)
    assert 'durability = "power"' in (home.path / "simulator.toml").read_text()
    assert home.load().durability == "power"
    config.durability = "process"
    home.save(config)


def test_an_unknown_durability_is_a_config_error_naming_the_key(home: SimulatorHome,
                                                                tmp_path: Path) -> None:
    toml = home.path / "simulator.toml"
    text = toml.read_text()
    toml.write_text(text.replace('durability = "process"', 'durability = "disk"'))
    try:
        with pytest.raises(ConfigError, match=r"\[server\]: key 'durability'.*'process'"):
            home.load()
    finally:
        toml.write_text(text)


@pytest.mark.parametrize(("mode", "synchronous"), [("process", 1), ("power", 2)])
def test_journal_commits_with_the_synchronous_level_of_the_mode(tmp_path: Path, mode: str,
                                                                synchronous: int) -> None:
    journal = Journal(tmp_path / "j.sqlite", durability=mode)
    with journal.transaction() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    journal.set_durability("power" if mode == "process" else "process")
    with journal.transaction() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 3 - synchronous
    with pytest.raises(ValueError, match="durability"):
        journal.set_durability("disk")
    journal.close()


def test_concurrent_writers_queue_on_one_connection_and_lose_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    tickets: list[str] = []

    def work() -> None:
        for _ in range(50):
            tickets.append(journal.next_ticket(AT))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tickets)) == 400  # every ticket unique: no lost update between threads
    assert journal.next_counter("ticket") == 401
    journal.close()


@pytest.mark.parametrize(("durable", "flushes"), [(False, 0), (True, 4)])
def test_answer_files_are_fsynced_only_when_durable(home: SimulatorHome, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    durable: bool, flushes: int) -> None:
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    paths = write_answer(tmp_path, NAME, b"<answer/>", home.answer_signer(), signing_time=AT,
                         durable=durable)
    assert [p.name for p in paths] == [NAME, "FS.ACRF.999999.20260316.00001.T",
                                       "GO.ACRF.999999.20260316.00001.T"]
    assert all(p.exists() for p in paths) and (tmp_path / NAME).read_bytes() == b"<answer/>"
    assert len(synced) == flushes  # FO, FS, GO and the directory, or nothing
