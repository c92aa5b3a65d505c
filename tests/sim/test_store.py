"""The journal (fla_sim.store): WAL, counters of spec 4.8 / 9.4, consumed keys, registry."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from fla_sim.store import Journal

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def test_wal_mode_and_reopen_keeps_state(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.consume("acme", "123456.20260316.00001.T", AT)
    j.close()
    mode = sqlite3.connect(tmp_path / "j.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again = Journal(tmp_path / "j.sqlite")
    assert again.is_consumed("acme", "123456.20260316.00001.T")
    again.close()


def test_answer_sequence_per_channel_date_and_environment(journal):
    seq = journal.next_answer_seq
    assert [seq("acme", "20260316", "T") for _ in range(3)] == ["00001", "00002", "00003"]
    assert seq("acme", "20260316", "R") == "00001"  # own counter per ENV
    assert seq("acme", "20260317", "T") == "00001"  # and per answer date
    assert seq("other", "20260316", "T") == "00001"  # and per channel
    assert seq("acme", "20260316", "T") == "00004"


def test_tickets_follow_spec_9_4_and_never_repeat(journal):
    assert journal.next_ticket(AT) == "26075A0000001"
    assert journal.next_ticket(AT) == "26075A0000002"


def test_consumed_keys_are_per_channel(journal):
    assert journal.consume("acme", "123456.20260316.00001.T", AT)
    assert not journal.consume("acme", "123456.20260316.00001.T", AT)  # already consumed
    assert journal.is_consumed("acme", "123456.20260316.00001.T")
    assert not journal.is_consumed("acme", "123456.20260316.00001.R")


def test_a_failed_transaction_changes_nothing(journal):
    with pytest.raises(RuntimeError), journal.transaction():
        journal.consume("acme", "K1", AT)
        journal.add_answer("acme", "OUTTEST", "FO.ACRF.999999.20260316.00001.T", "ACRF",
                           "GO.X", "26075A0000001", "ACRF-000", b"<x/>", AT)
        raise RuntimeError("crash in the middle")
    assert not journal.is_consumed("acme", "K1")
    assert journal.answers() == []


def test_set_states_and_answer_written_moves_the_set(journal):
    stem = "FLAC.123456.20260316.00001.T"
    journal.touch_set("acme", "INTEST", stem, "123456.20260316.00001.T", AT)
    assert journal.get_set("acme", "INTEST", stem).state == "RECEIVING"
    assert journal.update_set("acme", "INTEST", stem, "k", "QUEUED", AT, go_name="GO.x",
                              only_from=("RECEIVING",))
    assert not journal.update_set("acme", "INTEST", stem, "k", "QUEUED", AT,
                                  only_from=("RECEIVING",))
    aid = journal.add_answer("acme", "OUTTEST", "FO.ACRF.999999.20260316.00001.T", "ACRF",
                             "GO.x", "26075A0000001", "ACRF-000", b"<x/>", AT, stem=stem,
                             next_state="ACCEPTED", set_directory="INTEST")
    assert journal.answers(written=False)[0].id == aid
    journal.answer_written(aid, AT)
    assert journal.get_set("acme", "INTEST", stem).state == "ACCEPTED"
    assert journal.answers(written=False) == []
    assert journal.summary()["sets"] == {"ACCEPTED": 1}


def test_answer_names_are_unique_per_directory(journal):
    args = ("acme", "OUTTEST", "FO.ACRF.999999.20260316.00001.T", "ACRF", "GO.x",
            "26075A0000001", "ACRF-000", b"<x/>", AT)
    journal.add_answer(*args)
    with pytest.raises(sqlite3.IntegrityError):
        journal.add_answer(*args)


def test_registry_view_per_sender_and_environment(journal):
    journal.apply_registry("123456", "T", {"D-1": "ACTIVE", "D-0": "REPLACED"})
    view = journal.registry("123456", "T")
    assert callable(getattr(view, "status", None))  # RegistryView protocol
    assert view.status("D-1") == "ACTIVE" and view.status("D-0") == "REPLACED"
    assert journal.registry("123456", "R").status("D-1") is None  # R registry is separate
    journal.apply_registry("123456", "T", {"D-1": "CANCELLED"})
    assert view.status("D-1") == "CANCELLED"


def test_reupload_replaces_the_file_row(journal):
    journal.record_file("acme", "INTEST", "FI.a", 10, AT)
    journal.claim_files("acme", "INTEST", ["FI.a"])
    journal.set_file_state("acme", "INTEST", ["FI.a"], "archived")
    journal.record_file("acme", "INTEST", "FI.a", 12, AT)
    row = journal.file("acme", "INTEST", "FI.a")
    assert (row.size, row.state, row.claimed) == (12, "present", False)


def test_counters_are_safe_across_threads(journal):
    got: list[str] = []
    lock = threading.Lock()

    def work():
        for _ in range(25):
            value = journal.next_answer_seq("acme", "20260316", "T")
            with lock:
                got.append(value)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"{n:05d}" for n in range(1, 101)]


def test_checkpoints_run_beside_the_writer_not_inside_its_commits(tmp_path):
    # SQLite would checkpoint (and fsync the database) inside the commit that crosses 1000
    # WAL pages, stalling the simulator's event loop; a thread copies the pages instead
    path = tmp_path / "journal.db"
    journal = Journal(path)
    journal.checkpoint_in_background(interval=0.02)
    try:
        assert journal._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = path.stat().st_size
        for n in range(300):
            journal.record_file("c", "INTEST", f"FI.FLAC.123456.20260316.{n:05d}.T.1.1",
                                10, AT)
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before:  # the rows reach the database file itself
            assert time.monotonic() < deadline, "no checkpoint copied the WAL"
            time.sleep(0.01)
    finally:
        journal.close()
    assert journal._checkpointer is None
