"""The shortcuts taken for speed give exactly what the plain way gives.

Rules judged once per (provider, dates, hours) in a declaration, cached identifier checks,
fast date parsing of exports, leaf values of a valid declaration read by position from one
XPath call, and ConcatStream reading a whole chunk from one file.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path

import pytest

from fla_core import fi
from fla_core.applications import fla
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import evaluate
from fla_core.formats.layout import parse_date
from fla_core.identifiers import inss_problem, kbo_problem
from fla_core.model import Declaration, Employer, Quality, Sender, Training, Worker
from fla_core.plugins import FlaPlugins

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fla"
VALID = (FIXTURES / "valid-minimal.xml").read_bytes()
CHECKS = tuple(f"fla_core.checks.{m}"
               for m in ("references", "years", "employer", "workers", "trainings"))
OWN = "0123456749"


def strptime_date(text: str) -> str | None:
    """The export date rule as first written: strptime, two digits for the ISO form."""
    import re

    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            parsed = datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            continue
        return parsed.isoformat()
    return None


@pytest.mark.parametrize("text", [
    "2025-01-03", "2024-02-29", "2023-02-29", "2025-02-30", "2025-13-01", "2025-00-10",
    "2025-01-00", "0000-01-01", "0999-12-31", "9999-12-31", "2025-1-3", "2025-01-3",
    "20250103", "2025-W01-1", " 2025-01-03", "03/01/2025", "29/02/2024", "29/02/2023",
    "31/04/2025", "00/01/2025", "01/13/2025", "01/01/0000", "3/1/2025", "12/1/2025",
    "٢٠٢٥-٠١-٠٣", "٠٣/٠١/٢٠٢٥", "2025/01/03", "01-03-2025", "", "x",
])
def test_export_dates_parse_as_strptime_does(text):
    assert parse_date(text) == strptime_date(text)


def test_identifier_checks_keep_their_answers_with_the_cache():
    for _ in range(2):  # the second round is answered from the cache
        assert kbo_problem("0566988259") is None
        assert kbo_problem("0566988258") == "004"
        assert kbo_problem("2566988259") == "901"
        assert inss_problem("93051822361") is None
        assert inss_problem("93051822362") == "004"
        assert inss_problem("93131822361") == "901"
    # Not text at all: still the structure code, not a TypeError from the cache.
    assert kbo_problem(["0566988259"]) == "901"  # type: ignore[arg-type]
    assert inss_problem(None) == "901"  # type: ignore[arg-type]


def test_repeated_training_values_give_one_anomaly_per_training():
    # Every training shares provider, dates and hours: judged once, reported for each one,
    # with its own path and value, in spec 8.2 order.
    def training(ref: str) -> Training:
        return Training(ref, "Course", "FORMAL", "2026-01-12", "2026-01-12", "0.00", True,
                        "0566988258")

    declaration = Declaration(
        "D-1", "NEW", "2026", employer=Employer(OWN),
        workers=[Worker("93051822361", [training("A"), training("B")]),
                 Worker("00012556777", [training("A")])])
    context = CheckContext(sender=Sender("123456", Quality.EMPLOYER, OWN), environment="T",
                           processing_date=date(2026, 3, 16))
    verdict = evaluate(declaration, 1, context, FlaPlugins(builtins=CHECKS, entry_points=False))
    base = "/FLAFile/Declaration[1]"
    assert [(a.code, a.path, a.value) for a in verdict.anomalies] == [
        ("004", f"{base}/Worker[1]/Training[1]/ProviderCompanyID", "0566988258"),
        ("920", f"{base}/Worker[1]/Training[1]/Hours", "0.00"),
        ("004", f"{base}/Worker[1]/Training[2]/ProviderCompanyID", "0566988258"),
        ("920", f"{base}/Worker[1]/Training[2]/Hours", "0.00"),
        ("004", f"{base}/Worker[2]/Training[1]/ProviderCompanyID", "0566988258"),
        ("920", f"{base}/Worker[2]/Training[1]/Hours", "0.00"),
    ]


def scanned_and_read(data: bytes) -> tuple[list[Declaration], list[Declaration]]:
    scanned: list[Declaration] = []
    fla.scan(io.BytesIO(data), expect=None, max_declarations=10,
             on_declaration=lambda d, p: scanned.append(d))
    return scanned, list(fla.read(io.BytesIO(data)))


@pytest.mark.parametrize("old, new", [
    ("<Worker>", "<Worker>&#32;"),  # a container that keeps a text node
    ("<Training>", "<Training><![CDATA[ ]]>"),
    ("<Title>Forklift safety", "<Title>Forklift <![CDATA[safety]]>"),  # two text nodes
    ("<Title>Shadowing", "<Title>  Shadowing"),
])
def test_scan_models_match_read_when_text_nodes_and_leaves_do_not_pair(old, new):
    data = VALID.replace(old.encode(), new.encode(), 1)
    assert data != VALID
    scanned, read = scanned_and_read(data)
    assert scanned == read
    assert scanned[0].workers[0].trainings[0].title == "Forklift safety refresher"


def test_scan_models_keep_values_and_lines():
    scanned, read = scanned_and_read(VALID)
    assert scanned == read
    first = scanned[0].workers[0].trainings[0]
    assert (first.provider_company_id, first.hours, first.line) == ("0566988259", "21.00", 21)
    second = scanned[0].workers[1].trainings[0]
    assert (second.provider_company_id, second.title, second.line) == (
        None, "Shadowing a senior planner", 34)
    assert scanned[1].replaced_declaration_ref == "D-0897223670-2024-07"
    assert scanned[1].employer == Employer("0897223670", None)


def test_concat_stream_reads_across_parts_of_any_size(tmp_path):
    sizes = [0, 7, 1, 20, 0, 3]
    paths, whole = [], b""
    for i, size in enumerate(sizes):
        part = bytes((i * 31 + k) % 256 for k in range(size))
        path = tmp_path / f"part{i}"
        path.write_bytes(part)
        paths.append(path)
        whole += part
    for chunk in (1, 4, 7, 8, 100):
        stream = fi.ConcatStream(paths)
        got = []
        while data := stream.read(chunk):
            assert len(data) == chunk or len(b"".join(got)) + len(data) == len(whole)
            got.append(data)
        stream.close()
        assert b"".join(got) == whole
