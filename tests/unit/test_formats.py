"""Input formats: the CSV/JSON layout, normalisation, grouping and problem reporting."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fla_core.formats import InputError, ReadContext, csv_format, json_format
from fla_core.formats.layout import FIELDS, locate, parse_bool, parse_date, parse_hours
from fla_core.model import FileContent, Quality, Sender

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
SENDER = Sender("123456", Quality.SOCIAL_SECRETARIAT, "0123456749")
HEADER = ",".join(FIELDS)


def read(path: Path, fmt: str | None = None, **kw):
    """Read with the built-in reader of the suffix; return (content, declarations, problems)."""
    fmt = fmt or path.suffix[1:]
    module = csv_format if fmt == "csv" else json_format
    ctx = ReadContext(sender=SENDER, creation="2026-03-16T09:30:00", **kw)
    content = module.fla_read_declarations(path, fmt, ctx)
    declarations = list(content)
    return content, declarations, [str(p) for p in ctx.problems]


def test_valid_csv_is_grouped_and_normalised():
    content, decls, problems = read(EXPORTS / "valid.csv")
    assert problems == []
    assert [d.declaration_ref for d in decls] == ["D-0897223670-2025-01"]
    first = decls[0]
    assert first.employer.company_id == "0897223670"  # "BE 0897.223.670"
    assert first.line == 2
    # rows 2 and 4 share an INSS: one worker with two trainings, in row order
    assert [w.inss for w in first.workers] == ["93051822361", "00012556777"]
    trainings = first.workers[0].trainings
    assert [(t.training_ref, t.line) for t in trainings] == [("TR-2025-001", 2), ("TR-2025-003", 4)]
    assert trainings[0].training_type == "FORMAL" and trainings[0].hours == "21.00"
    assert trainings[0].provider_company_id == "0566988259"
    second = first.workers[1].trainings[0]
    assert (second.start_date, second.hours, second.during_working_time) == (
        "2025-06-10", "3.50", True)
    assert trainings[1].title == "First aid, level 1"  # quoted comma
    assert content.header.sender_nbr == "123456"
    assert content.header.quality == "SOCIAL_SECRETARIAT"
    assert content.header.file_reference == "FLA-123456-20260316093000"


def test_cancel_row_has_no_worker():
    _, decls, problems = read(EXPORTS / "cancel.csv")
    assert problems == []
    (cancel,) = decls
    assert cancel.action == "CANCEL" and cancel.workers == []
    assert cancel.replaced_declaration_ref == "D-0897223670-2025-01"


def test_valid_json_nested_matches_csv():
    content, decls, problems = read(EXPORTS / "valid.json")
    assert problems == []
    assert content.header.file_reference == "ACME-2026-0001"
    assert [d.action for d in decls] == ["NEW"]
    w1, w2 = decls[0].workers
    assert w2.trainings[0].hours == "3.50"  # JSON number 3.5
    assert w1.trainings[0].line is None  # JSON is located by JSON paths, not lines
    assert decls[0].line is None
    assert w1.trainings[0].during_working_time is True


def test_json_rows_and_context_reference_wins():
    content, decls, problems = read(EXPORTS / "valid-rows.json", file_reference="MINE-1")
    assert problems == []
    assert content.header.file_reference == "MINE-1"
    t = decls[0].workers[0].trainings[0]
    assert (t.hours, t.training_type, t.during_working_time) == ("21.00", "FORMAL", True)


def test_malformed_rows_are_all_listed_and_good_rows_kept():
    _, decls, problems = read(EXPORTS / "malformed-row.csv")
    path = str(EXPORTS / "malformed-row.csv")
    assert problems == [
        f"{path}:3: 12 fields, the header has 15",
        f"{path}:4 field 'start_date': '2025-02-30' is not a date (YYYY-MM-DD or DD/MM/YYYY)",
        f"{path}:5 field 'title': title is empty (required on a row with a worker)",
        f"{path}:5 field 'hours': hours 'twelve' is not a number",
        f"{path}:5 field 'during_working_time': 'maybe' is not a yes/no value "
        "(true/false, yes/no, 1/0, ja/nee, oui/non)",
    ]
    assert [t.training_ref for t in decls[0].workers[0].trainings] == ["TR-1"]


def test_unknown_column_names_it_and_the_known_ones():
    _, decls, problems = read(EXPORTS / "unknown-column.csv")
    assert len(problems) == 1
    assert ":1 field 'cost_centre': unknown column 'cost_centre'; known columns: " in problems[0]
    assert "during_working_time" in problems[0]
    assert len(decls) == 1  # the other columns are still read


def test_negative_hours_is_an_input_problem():
    _, decls, problems = read(EXPORTS / "negative-hours.csv")
    assert decls == []
    assert problems == [f"{EXPORTS / 'negative-hours.csv'}:2 field 'hours': "
                        "hours '-4.00' is negative"]


@pytest.mark.parametrize("name", ["bad-inss.csv", "bad-kbo.csv", "end-before-start.csv",
                                  "duplicate-training.csv"])
def test_business_errors_are_not_input_problems(name):
    # check digits, date order and duplicates are business anomalies found by the checks
    _, decls, problems = read(EXPORTS / name)
    assert problems == []
    assert decls and decls[0].workers


def test_bad_inss_keeps_the_written_number_and_its_line():
    _, decls, _ = read(EXPORTS / "bad-inss.csv")
    worker = decls[0].workers[1]
    assert (worker.inss, worker.line) == ("93051822362", 3)


def test_non_consecutive_declarations_are_merged(tmp_path):
    row = "{ref},NEW,,2025,0897223670,,93051822361,{tr},,T,FORMAL,2025-03-03,2025-03-03,1,0"
    path = tmp_path / "x.csv"
    path.write_text("\n".join([HEADER, row.format(ref="A", tr="1"), row.format(ref="B", tr="2"),
                               row.format(ref="A", tr="3")]) + "\n")
    _, decls, problems = read(path)
    assert problems == []
    assert [(d.declaration_ref, len(d.workers[0].trainings)) for d in decls] == [("A", 2),
                                                                                 ("B", 1)]


def test_csv_declarations_are_lazy_when_consecutive(tmp_path):
    row = "{ref},NEW,,2025,0897223670,,93051822361,T1,,T,FORMAL,2025-03-03,2025-03-03,1,0"
    path = tmp_path / "x.csv"
    path.write_text("\n".join([HEADER, row.format(ref="A"), row.format(ref="B"), "garbage"])
                    + "\n")
    ctx = ReadContext(sender=SENDER, creation="2026-03-16T09:30:00")
    it = iter(csv_format.fla_read_declarations(path, "csv", ctx))
    assert next(it).declaration_ref == "A"
    assert ctx.problems == []  # line 4 not read yet: streaming
    assert next(it).declaration_ref == "B"
    assert list(it) == []
    assert [p.line for p in ctx.problems] == [4]


def test_semicolon_delimiter_and_bom(tmp_path):
    path = tmp_path / "excel.csv"
    row = "D-1;NEW;;2025;0897223670;;93051822361;T1;;T;FORMAL;03/03/2025;03/03/2025;7,5;nee"
    path.write_bytes(("\ufeff" + HEADER.replace(",", ";") + "\r\n" + row + "\r\n").encode())
    _, decls, problems = read(path)
    assert problems == []
    t = decls[0].workers[0].trainings[0]
    assert (t.start_date, t.hours, t.during_working_time) == ("2025-03-03", "7.50", False)


def test_inconsistent_declaration_field_is_reported(tmp_path):
    row = "D-1,NEW,,{year},0897223670,,93051822361,{tr},,T,FORMAL,2025-03-03,2025-03-03,1,0"
    path = tmp_path / "x.csv"
    path.write_text("\n".join([HEADER, row.format(year=2025, tr=1), row.format(year=2024, tr=2)]))
    _, _, problems = read(path)
    assert len(problems) == 1
    assert ":3 field 'reporting_year': reporting_year '2024' differs from '2025' on line 2" \
        in problems[0]


def test_empty_required_field_and_missing_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("declaration_ref,inss\n,93051822361\n")
    _, decls, problems = read(path)
    assert decls == []
    assert any("required column 'reporting_year' is missing" in p for p in problems)


def test_unreadable_inputs_raise_input_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty file"):
        read(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("d\xe9claration\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read(latin)
    broken = tmp_path / "broken.json"
    broken.write_text('{"declarations": [}')
    with pytest.raises(InputError, match=r"broken.json:1: invalid JSON"):
        read(broken)


def test_json_identifier_as_number_and_unknown_key(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"declarations": [{
        "declaration_ref": "D-1", "reporting_year": "2025", "colour": "red",
        "workers": [{"inss": 93051822361, "trainings": [{"training_ref": "T"}]}]}]}, indent=1))
    _, _, problems = read(path)
    assert problems[:2] == [
        f"{path} field '$.declarations[0].colour': unknown key 'colour' in a declaration; "
        "known keys: declaration_ref, action, replaced_declaration_ref, reporting_year, "
        "employer_company_id, employer_noss_nbr, workers",
        f"{path} field '$.declarations[0].workers[0].inss': inss must be text, not a number "
        "(identifiers keep their leading zeros only as text)",
    ]
    # the rest: the training's empty required fields, each at its path
    assert f"{path} field '$.declarations[0].workers[0].trainings[0].title': title is empty " \
        "(required on a row with a worker)" in problems


def _nested(*trainings: dict, inss: object = "93051822361", **declaration: object) -> dict:
    return {"declaration_ref": "D-1", "action": "NEW", "reporting_year": "2025",
            "employer_company_id": "0897223670", **declaration,
            "workers": [{"inss": inss, "trainings": list(trainings)}]}


_TRAINING = {"training_ref": "T-1", "title": "Forklift", "training_type": "FORMAL",
             "start_date": "2025-03-03", "end_date": "2025-03-05", "hours": "21.00",
             "during_working_time": True}


def test_json_problems_name_the_json_path_of_the_value(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"declarations": [
        _nested(_TRAINING),
        _nested(_TRAINING, {**_TRAINING, "training_ref": "T-2", "hours": "twelve"},
                inss="9305182236", declaration_ref="D-2", reporting_year="25"),
        "not an object",
    ], "odd key": 1}))  # one line: a line number could not tell the values apart
    _, decls, problems = read(path)
    assert problems == [
        f"{path} field '$[\"odd key\"]': unknown key 'odd key' in document; "
        "known keys: file_reference, declarations",
        f"{path} field '$.declarations[2]': a declaration is not an object",
        # one row per training: the declaration and worker fields are reported for each, at
        # the path of the object that holds them
        f"{path} field '$.declarations[1].reporting_year': reporting year '25' is not 4 digits",
        f"{path} field '$.declarations[1].workers[0].inss': '9305182236' is not an INSZ/NISS "
        "number (11 digits)",
        f"{path} field '$.declarations[1].reporting_year': reporting year '25' is not 4 digits",
        f"{path} field '$.declarations[1].workers[0].inss': '9305182236' is not an INSZ/NISS "
        "number (11 digits)",
        f"{path} field '$.declarations[1].workers[0].trainings[1].hours': hours 'twelve' is "
        "not a number",
    ]
    assert [d.declaration_ref for d in decls] == ["D-1"]


def test_json_rows_problems_name_the_row_and_the_first_row(tmp_path):
    path = tmp_path / "rows.json"
    row = {"declaration_ref": "D-1", "reporting_year": "2025",
           "employer_company_id": "0897223670", "inss": "93051822361", **_TRAINING}
    path.write_text(json.dumps([row, {**row, "training_ref": "T-2", "reporting_year": "2024",
                                      "colour": "red"}, 7]))
    _, _, problems = read(path)
    assert problems == [
        f"{path} field '$[1].colour': unknown key 'colour' in a row; known keys: "
        + ", ".join(FIELDS),
        f"{path} field '$[1].reporting_year': reporting_year '2024' differs from '2025' at "
        "$[0].reporting_year for declaration 'D-1'",
        f"{path} field '$[2]': a row is not an object",
    ]


def test_the_json_reader_uses_only_the_public_json_api():
    """Line numbers came from the json module's undeclared internals (its pure-Python scanner
    and ``parse_object`` hook); JSON paths need none of them."""
    source = Path(json_format.__file__).read_text("utf-8")
    for private in ("json.scanner", "py_make_scanner", "make_scanner", "scan_once",
                    "parse_object", "py_scanstring", "_json", "c_scanstring"):
        assert private not in source, private


def test_other_formats_are_declined():
    ctx = ReadContext(sender=SENDER)
    assert csv_format.fla_read_declarations(EXPORTS / "valid.csv", "json", ctx) is None
    assert json_format.fla_read_declarations(EXPORTS / "valid.json", "csv", ctx) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-03-03", "2025-03-03"), ("03/03/2025", "2025-03-03"), ("2025-3-3", None),
    ("2025-02-29", None), ("29/02/2024", "2024-02-29"), ("tomorrow", None)])
def test_parse_date(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("21", "21.00"), ("3,5", "3.50"), ("0", "0.00"), ("9999.99", "9999.99"), ("1.234", None),
    ("-1", None), ("1e3", None), ("10000", None)])
def test_parse_hours(text, expected):
    assert parse_hours(text)[0] == expected


def test_parse_bool_languages():
    assert [parse_bool(t) for t in ("JA", "oui", "1", "Nee", "non", "0", "perhaps")] == [
        True, True, True, False, False, False, None]


def test_locate_maps_spec_paths_to_lines_and_columns():
    _, decls, _ = read(EXPORTS / "valid.csv")
    path = "/FLAFile/Declaration[1]/Worker[1]/Training[2]/Hours"
    assert locate(path, decls[0]) == (4, "hours")
    assert locate("/FLAFile/Declaration[1]/Employer/CompanyID", decls[0]) == (
        2, "employer_company_id")


@pytest.mark.parametrize("name", ["valid.csv", "valid.json", "valid-rows.json", "cancel.csv"])
def test_export_renders_to_a_schema_valid_fi_that_reads_back_the_same(tmp_path, name):
    from lxml import etree

    from fla_core.applications import fla

    content, decls, problems = read(EXPORTS / name)
    assert problems == []
    fi = tmp_path / "fi.xml"
    with fi.open("wb") as out:
        fla.render(FileContent(content.header, decls), out)
    fla.schema().assertValid(etree.parse(str(fi)))
    back = list(fla.read(fi))

    def strip(declarations):  # the FI carries no input line numbers
        return [dataclasses.replace(
            d, line=None, workers=[dataclasses.replace(
                w, line=None, trainings=[dataclasses.replace(t, line=None) for t in w.trainings])
                for w in d.workers]) for d in declarations]

    assert strip(back) == strip(decls)


@given(st.decimals(min_value=0, max_value=Decimal("9999.99"), places=2),
       st.sampled_from([".", ","]))
def test_hours_written_either_way_normalise_to_two_decimals(value, separator):
    text = f"{value:f}".replace(".", separator)
    normalised, why = parse_hours(text)
    assert why is None
    assert Decimal(normalised) == value and len(normalised.split(".")[1]) == 2


@pytest.mark.parametrize(("refs", "adjacent"), [
    ([], True),
    (["A", "A", "B", "B"], True),
    (["A", "", "A", "B"], True),  # rows without a reference do not break a run
    (["A", "B", "A"], False),
    (["A", "B", "B", "C", "B"], False),
])
def test_refs_adjacent_decides_whether_an_export_can_be_streamed(refs, adjacent):
    from fla_core.formats.layout import refs_adjacent

    assert refs_adjacent(iter(refs)) is adjacent


# --- identifiers: the spellings fla_core.identifiers accepts, and only those -----------------

ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667"
                                           "\u0668\u0669")


def _row(**values: str) -> str:
    row = {"declaration_ref": "D-1", "action": "NEW", "reporting_year": "2025",
           "employer_company_id": "0897223670", "inss": "93051822361", "training_ref": "T1",
           "title": "T", "training_type": "FORMAL", "start_date": "2025-03-03",
           "end_date": "2025-03-03", "hours": "1", "during_working_time": "0"} | values
    return ",".join(row.get(f, "") for f in FIELDS)


@pytest.mark.parametrize(("column", "written", "stored"), [
    ("inss", "93/05/18-223.61", "93051822361"),  # what identifiers.normalize_inss accepts
    ("inss", "93.05.18-223.61", "93051822361"),
    ("inss", "93 05 18\u00a0223 61", "93051822361"),
    ("employer_noss_nbr", "042/9795/35", "042979535"),
    ("employer_company_id", "BE 0897.223.670", "0897223670"),
])
def test_written_identifiers_are_normalised_like_the_identifiers_module(
        tmp_path, column, written, stored):
    path = tmp_path / "x.csv"
    path.write_text(HEADER + "\n" + _row(**{column: written}) + "\n", "utf-8")
    _, decls, problems = read(path)
    assert problems == []
    worker = decls[0].workers[0]
    employer = decls[0].employer
    assert employer is not None
    assert {"inss": worker.inss, "employer_noss_nbr": employer.noss_registration_nbr,
            "employer_company_id": employer.company_id}[column] == stored


@pytest.mark.parametrize(("column", "written", "message"), [
    # digits, but not 0-9: no FI may carry them (its schema wants [0-9])
    ("inss", "93051822361".translate(ARABIC_INDIC), "is not an INSZ/NISS number (11 digits)"),
    ("employer_company_id", "897223670".translate(ARABIC_INDIC),
     "is not an enterprise number (10 digits)"),
    ("provider_company_id", "0566988259".translate(ARABIC_INDIC),
     "is not an enterprise number (10 digits)"),
    ("employer_noss_nbr", "042979535".translate(ARABIC_INDIC), "is not a NOSS number (9 digits)"),
    ("reporting_year", "2025".translate(ARABIC_INDIC), "is not 4 digits"),
])
def test_non_ascii_digits_are_an_input_problem(tmp_path, column, written, message):
    path = tmp_path / "x.csv"
    path.write_text(HEADER + "\n" + _row(**{column: written}) + "\n", "utf-8")
    _, decls, problems = read(path)
    assert decls == []
    assert len(problems) == 1 and f"field '{column}'" in problems[0] and message in problems[0]
