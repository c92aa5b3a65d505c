"""Answer files (spec 9): spec examples parse to their values; render -> parse round trips."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.responses import (
    Acrf,
    AnswerError,
    Noti,
    NotiAnomaly,
    NotiDeclaration,
    make_ticket,
    parse_answer,
    render_acrf,
    render_noti,
    render_noti_to,
)

ANSWERS = Path(__file__).resolve().parents[2] / "fixtures" / "answers"
BRUSSELS = timezone(timedelta(hours=1))
HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass
class Verdict:
    """Shape of checks.engine.DeclarationVerdict as render_noti reads it."""

    declaration_ref: str
    company_id: str | None
    status: str
    anomalies: list[Anomaly] = field(default_factory=list)


def spec_verdicts() -> list[Verdict]:
    """The verdicts of spec 8.5 row 1 (7.2 example, empty registry)."""
    late1 = rule_anomaly("960", "00104", "/FLAFile/Declaration[1]/ReportingYear", "2025",
                         row=7, declaration=1)
    unknown = rule_anomaly("944", "00103", "/FLAFile/Declaration[2]/ReplacedDeclarationRef",
                           "D-0897223670-2024-07", row=5, declaration=2)
    late2 = rule_anomaly("960", "00104", "/FLAFile/Declaration[2]/ReportingYear", "2024",
                         row=7, declaration=2)
    return [Verdict("D-0897223670-2025-01", "0897223670", "ACCEPTED", [late1]),
            Verdict("D-0897223670-2025-02", "0897223670", "REJECTED", [unknown, late2])]


SPEC_NOTI = Noti(
    application="FLAC",
    file_name="GO.FLAC.123456.20260316.00001.T.1",
    file_reference="ACME-2026-0001",
    ticket="26075A0000001",
    result_code=2,
    file_warnings=[],
    declarations=[
        NotiDeclaration("D-0897223670-2025-01", "0897223670", "ACCEPTED", [
            NotiAnomaly("00104-960", "W", "/FLAFile/Declaration[1]/ReportingYear", "2025",
                        "Late declaration for a past year")]),
        NotiDeclaration("D-0897223670-2025-02", "0897223670", "REJECTED", [
            NotiAnomaly("00103-944", "B", "/FLAFile/Declaration[2]/ReplacedDeclarationRef",
                        "D-0897223670-2024-07",
                        "Replaced declaration unknown or no longer active"),
            NotiAnomaly("00104-960", "W", "/FLAFile/Declaration[2]/ReportingYear", "2024",
                        "Late declaration for a past year")]),
    ],
    created=datetime(2026, 3, 16, 10, 15, 0, 530000),
)


def test_spec_acrf_example_parses_to_its_values():
    acrf = parse_answer((ANSWERS / "spec-9.2-acrf-118.xml").read_bytes())
    assert acrf == Acrf(file_name="GO.FLAC.123456.20260316.00001.R.1", ticket="26075A0000001",
                        result_code=0, error_id="ACRF-118",
                        description="Production file not uploaded in IN",
                        created=datetime(2026, 3, 16, 10, 15, 0, 412000))
    assert not acrf.accepted
    assert acrf.error_code == "118"


def test_spec_noti_example_parses_to_its_values():
    assert parse_answer((ANSWERS / "spec-9.3-noti-valid-minimal.xml").read_bytes()) == SPEC_NOTI


def test_render_acrf_negative_equals_spec_example_on_parsed_values():
    at = datetime(2026, 3, 16, 10, 15, 0, 412345, tzinfo=BRUSSELS)
    data = render_acrf(file_name="GO.FLAC.123456.20260316.00001.R.1", ticket="26075A0000001",
                       accepted=False, error_code="118", description=None, at=at)
    assert data.startswith(HEADER)
    assert b"\r" not in data
    assert b"<FormCreationHour>10:15:00.412</FormCreationHour>" in data
    assert b"xmlns" not in data
    assert parse_answer(data) == parse_answer((ANSWERS / "spec-9.2-acrf-118.xml").read_bytes())


def test_render_acrf_positive_has_no_error():
    at = datetime(2026, 3, 16, 10, 15, 0, 7000, tzinfo=BRUSSELS)
    data = render_acrf(file_name="GO.FLAC.123456.20260316.00001.T.1", ticket="26075A0000001",
                       accepted=True, error_code=None, description=None, at=at)
    acrf = parse_answer(data)
    assert isinstance(acrf, Acrf)
    assert (acrf.result_code, acrf.error_id, acrf.description) == (1, None, None)
    assert b"ErrorID" not in data and b"ErrorDescription" not in data
    assert b"<FormCreationHour>10:15:00.007</FormCreationHour>" in data


def test_render_acrf_refuses_inconsistent_arguments():
    at = datetime(2026, 3, 16, 10, 15, tzinfo=BRUSSELS)
    with pytest.raises(ValueError, match="positive"):
        render_acrf(file_name="GO.X", ticket="26075A0000001", accepted=True,
                    error_code="118", description=None, at=at)
    with pytest.raises(ValueError, match="negative"):
        render_acrf(file_name="GO.X", ticket="26075A0000001", accepted=False,
                    error_code=None, description=None, at=at)
    with pytest.raises(ValueError, match="13 characters"):
        render_acrf(file_name="GO.X", ticket="26075a0000001", accepted=True,
                    error_code=None, description=None, at=at)


def test_render_noti_equals_spec_example_on_parsed_values():
    data = render_noti(application="FLAC", file_name="GO.FLAC.123456.20260316.00001.T.1",
                       file_reference="ACME-2026-0001", ticket="26075A0000001", result_code=2,
                       declarations=spec_verdicts(), file_warnings=[],
                       at=datetime(2026, 3, 16, 10, 15, 0, 530999, tzinfo=BRUSSELS))
    assert data.startswith(HEADER)
    assert b"\r" not in data and b"xmlns" not in data
    assert parse_answer(data) == SPEC_NOTI


def test_noti_file_warning_609_round_trips_without_value():
    warning = Anomaly(code="609", severity="W", message="SHA-1 signature digest is deprecated",
                      zone="00000", path="/")
    data = render_noti(application="FLAC", file_name="GO.FLAC.123456.20260316.00001.T.1",
                       file_reference="R1", ticket="26075A0000002", result_code=1,
                       declarations=[Verdict("D1", None, "ACCEPTED")], file_warnings=[warning],
                       at=datetime(2026, 3, 16, 9, 0, tzinfo=BRUSSELS))
    noti = parse_answer(data)
    assert isinstance(noti, Noti)
    assert noti.file_warnings == [NotiAnomaly("00000-609", "W", "/", None,
                                              "SHA-1 signature digest is deprecated")]
    assert noti.declarations == [NotiDeclaration("D1", None, "ACCEPTED", [])]


def test_noti_streams_a_generator_of_many_declarations():
    count = 10_000

    def verdicts():
        for i in range(1, count + 1):
            yield Verdict(f"D-{i}", "0897223670", "ACCEPTED")

    out = io.BytesIO()
    render_noti_to(out, application="FLAC", file_name="GO.FLAC.123456.20260316.00001.T.1",
                   file_reference="BIG", ticket="26075A0000003", result_code=1,
                   declarations=verdicts(), file_warnings=[],
                   at=datetime(2026, 3, 16, 9, 0, tzinfo=BRUSSELS))
    noti = parse_answer(out.getvalue())
    assert isinstance(noti, Noti)
    assert len(noti.declarations) == count
    assert noti.declarations[-1].declaration_ref == f"D-{count}"


def test_noti_without_declarations_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        render_noti(application="FLAC", file_name="GO.X", file_reference="R",
                    ticket="26075A0000001", result_code=1, declarations=[], file_warnings=[],
                    at=datetime(2026, 3, 16, tzinfo=BRUSSELS))


def test_values_with_markup_characters_round_trip():
    odd = rule_anomaly("931", "00101", "/FLAFile/Declaration[1]/DeclarationRef", "a<&>\"'é",
                       row=1, declaration=1)
    data = render_noti(application="FLAC", file_name="GO.X", file_reference="R&D",
                       ticket="26075A0000001", result_code=0,
                       declarations=[Verdict("a<&>", None, "REJECTED", [odd])],
                       file_warnings=[], at=datetime(2026, 3, 16, tzinfo=BRUSSELS))
    noti = parse_answer(data)
    assert isinstance(noti, Noti)
    assert noti.file_reference == "R&D"
    assert noti.declarations[0].anomalies[0].value == "a<&>\"'é"


def test_compressed_answer_is_parsed():
    data = (ANSWERS / "spec-9.3-noti-valid-minimal.xml").read_bytes()
    assert parse_answer(gzip.compress(data)) == SPEC_NOTI


@pytest.mark.parametrize("data, message", [
    (b"", "well-formed"),
    (b"<ACRF><Form>", "well-formed"),
    (b"<OTHER><Form/></OTHER>", "neither ACRF nor NOTIFICATION"),
    (b"<ACRF/>", "no Form"),
    (b'<!DOCTYPE ACRF [<!ENTITY x "boom">]><ACRF><Form>&x;</Form></ACRF>', "DOCTYPE"),
    (b"<ACRF><Form><FileReference><FileName>GO</FileName></FileReference></Form></ACRF>",
     "missing element"),
    (b"\x1f\x8bnot gzip", "gzip"),
])
def test_bad_answers_give_a_clear_error(data, message):
    with pytest.raises(AnswerError, match=message):
        parse_answer(data)


@pytest.mark.parametrize("code", ["²", "01", " 1", "3"])
def test_a_result_code_that_is_not_one_of_the_codes_is_a_clear_error(code):
    data = (ANSWERS / "spec-9.2-acrf-118.xml").read_bytes()
    data = data.replace(b"<ResultCode>0</ResultCode>", f"<ResultCode>{code}</ResultCode>".encode())
    with pytest.raises(AnswerError, match="ResultCode"):
        parse_answer(data)


def test_external_entity_is_not_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    data = (f'<!DOCTYPE ACRF [<!ENTITY x SYSTEM "file://{secret}">]>'
            "<ACRF><Form><Identification>&x;</Identification></Form></ACRF>").encode()
    with pytest.raises(AnswerError) as info:
        parse_answer(data)
    assert "TOPSECRET" not in str(info.value)


@pytest.mark.parametrize("when, counter, ticket", [
    (date(2026, 3, 16), 1, "26075A0000001"),
    (date(2026, 1, 1), 42, "26001A0000042"),
    (date(2024, 12, 31), 9_999_999, "24366A9999999"),
])
def test_make_ticket(when, counter, ticket):
    assert make_ticket(when, counter) == ticket


@pytest.mark.parametrize("counter", [0, 10_000_000])
def test_make_ticket_refuses_counter_out_of_range(counter):
    with pytest.raises(ValueError):
        make_ticket(date(2026, 3, 16), counter)


XML_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00",
                                 max_codepoint=0x10FFFF).filter(
    lambda c: c in "\t\n\r" or (c >= " " and c not in "\ufffe\uffff")), max_size=40)


@settings(max_examples=60, deadline=None)
@given(ref=XML_TEXT, company=st.none() | XML_TEXT, value=st.none() | XML_TEXT,
       path=XML_TEXT, reference=XML_TEXT)
def test_noti_round_trips_any_xml_text(ref, company, value, path, reference):
    anomaly = Anomaly(code="931", severity="B", message="Declaration reference used twice "
                      "in the file", zone="00101", path=path or "/", value=value)
    data = render_noti(application="FLAC", file_name="GO.FLAC.123456.20260316.00001.T.1",
                       file_reference=reference, ticket="26075A0000001", result_code=0,
                       declarations=[Verdict(ref, company, "REJECTED", [anomaly])],
                       file_warnings=[], at=datetime(2026, 3, 16, tzinfo=BRUSSELS))
    noti = parse_answer(data)
    assert isinstance(noti, Noti)
    assert noti.file_reference == reference
    assert noti.declarations == [NotiDeclaration(ref, company, "REJECTED", [NotiAnomaly(
        "00101-931", "B", path or "/", value, anomaly.message)])]
