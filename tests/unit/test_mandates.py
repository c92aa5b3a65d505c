"""Mandates of spec 2.2: quarters, active periods, lookups, and rule M4."""

from __future__ import annotations

from datetime import date

import pytest

from fla_core.checks.context import MandateView
from fla_core.mandates import (
    MandateBook,
    MandateConflict,
    MandateError,
    MandateRecord,
    add_mandate,
    is_quarter,
    parse_quarter,
    quarter_of,
)

EMP = "0897223670"
REP = "0123456749"
OTHER_REP = "0477472701"


def level1(start: str, end: str | None = None, *, rep: str = REP, appl: str = "FLAC",
           employer: str = EMP) -> MandateRecord:
    return MandateRecord(1, employer, rep, appl, start=start, end=end)


@pytest.mark.parametrize(("day", "quarter"), [
    (date(2024, 1, 1), "20241"), (date(2024, 3, 31), "20241"), (date(2024, 4, 1), "20242"),
    (date(2024, 9, 30), "20243"), (date(2024, 10, 1), "20244"), (date(2026, 12, 31), "20264"),
])
def test_quarter_of(day, quarter):
    assert quarter_of(day) == quarter


@pytest.mark.parametrize("text", ["20245", "20240", "2024", "2024Q1", "202411", " 20241", ""])
def test_invalid_quarters_are_refused_clearly(text):
    assert not is_quarter(text)
    with pytest.raises(MandateError, match="YYYYQ"):
        parse_quarter(text)


def test_parse_quarter():
    assert parse_quarter("20264") == (2026, 4)


def test_level1_record_validation():
    with pytest.raises(MandateError, match="start quarter"):
        MandateRecord(1, EMP, REP, "FLAC")
    with pytest.raises(MandateError, match="before start"):
        level1("20252", "20251")
    with pytest.raises(MandateError, match="YYYYQ"):
        level1("2025-1")
    with pytest.raises(MandateError, match="10-digit"):
        MandateRecord(1, "897223670", REP, "FLAC", start="20241")


def test_level2_record_validation():
    with pytest.raises(MandateError, match="6-digit sender"):
        MandateRecord(2, EMP, REP, "FLAC")
    with pytest.raises(MandateError, match="no start"):
        MandateRecord(2, EMP, REP, "FLAC", start="20241", sender="123456")
    with pytest.raises(MandateError, match="level must be 1 or 2"):
        MandateRecord(3, EMP, REP, "FLAC", sender="123456")  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "end", "day", "active"), [
    ("20241", None, date(2026, 3, 16), True),        # open end
    ("20261", None, date(2026, 1, 1), True),         # first day of the start quarter
    ("20262", None, date(2026, 3, 31), False),       # day before the start quarter
    ("20241", "20261", date(2026, 3, 31), True),     # last day of the end quarter
    ("20241", "20261", date(2026, 4, 1), False),     # day after
])
def test_level1_active_period(start, end, day, active):
    assert level1(start, end).active_on(day) is active


def test_book_answers_level1_per_employer_representative_and_application():
    book = MandateBook([level1("20241")])
    on = date(2026, 3, 16)
    assert book.has_level1(EMP, representative=REP, application="FLAC", on=on)
    assert not book.has_level1(EMP, representative=REP, application="DMFA", on=on)
    assert not book.has_level1(EMP, representative=OTHER_REP, application="FLAC", on=on)
    assert not book.has_level1("0477472701", representative=REP, application="FLAC", on=on)
    assert not book.has_level1(EMP, representative=REP, application="FLAC", on=date(2023, 12, 31))


def test_book_answers_level2_per_sender():
    book = MandateBook([MandateRecord(2, EMP, REP, "FLAC", sender="123456")])
    assert book.has_level2(EMP, representative=REP, application="FLAC", sender="123456")
    assert not book.has_level2(EMP, representative=REP, application="FLAC", sender="654321")
    assert not book.has_level2(EMP, representative=REP, application="DMFA", sender="123456")
    # A level-2 record is not a level-1 mandate.
    assert not book.has_level1(EMP, representative=REP, application="FLAC", on=date(2026, 1, 1))


def test_book_is_a_mandate_view():
    view: MandateView = MandateBook()
    assert not view.has_level1(EMP, REP, "FLAC", date(2026, 1, 1))


@pytest.mark.parametrize(("existing", "new"), [
    (level1("20241"), level1("20261", rep=OTHER_REP)),            # open end covers the new one
    (level1("20241", "20254"), level1("20254", rep=OTHER_REP)),   # share one quarter
    (level1("20251", "20252"), level1("20241")),                  # new open period covers it
    (level1("20241"), level1("20241")),                           # the same mandate again
])
def test_m4_refuses_overlapping_level1(existing, new):
    records = [existing]
    with pytest.raises(MandateConflict, match=r"M4") as info:
        add_mandate(records, new)
    assert EMP in str(info.value)
    assert existing.describe() in str(info.value)
    assert records == [existing]  # nothing stored


@pytest.mark.parametrize("new", [
    level1("20251", rep=OTHER_REP),                    # after the end quarter
    level1("20241", rep=OTHER_REP, appl="DMFA"),       # another application
    level1("20241", rep=OTHER_REP, employer="0477472701"),  # another employer
])
def test_m4_allows_non_overlapping_level1(new):
    existing = level1("20241", "20244")
    records = add_mandate([existing], new)
    assert records == [existing, new]


def test_m4_ignores_level2_records():
    l2 = MandateRecord(2, EMP, REP, "FLAC", sender="123456")
    records = add_mandate(add_mandate([level1("20241")], l2),
                          MandateRecord(2, EMP, REP, "FLAC", sender="654321"))
    assert len(records) == 3
    assert add_mandate(records, l2) == records  # the same level-2 record twice adds nothing


def test_add_mandate_returns_a_new_list():
    records: list[MandateRecord] = []
    out = add_mandate(records, level1("20241"))
    assert records == [] and out == [level1("20241")]


def test_mapping_round_trip_of_simulator_toml_tables():
    table = {"level": 1, "employer": EMP, "representative": REP, "application": "FLAC",
             "start": "20241"}
    record = MandateRecord.from_mapping(table)
    assert record == level1("20241")
    assert record.to_mapping() == table
    with pytest.raises(MandateError, match="unknown mandate key"):
        MandateRecord.from_mapping({**table, "stat": "20241"})
    with pytest.raises(MandateError, match="'representative' missing"):
        MandateRecord.from_mapping({"level": 1, "employer": EMP, "start": "20241"})
