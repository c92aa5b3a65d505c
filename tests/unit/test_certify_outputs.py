"""The HTML and JUnit forms of a certification report (fla_core.certify.html / .junit).

Reports are built by hand here: the outputs must render whatever the engine fills in,
including hostile strings from file names and answers.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import junitparser
import pytest
from lxml import etree

from fla_core.certify.html import render_html, write_html
from fla_core.certify.junit import render_junit, write_junit, xml_safe
from fla_core.certify.model import (
    AnomalyGroup,
    CaseResult,
    CaseSpec,
    Evidence,
    JudgedFile,
    Outcome,
    Profile,
    Report,
    Statement,
    count_outcomes,
)

XSD = Path(__file__).parents[1] / "data" / "junit-10.xsd"
HOSTILE = "<script>alert('x&y')</script> \"quoted\" é€ 日本"
LONG_PATH = "/srv/exports/" + "very-long-folder-name-" * 12 + "FI.EB.0123456749.20260101.00001.R.1"
CAP = 3


def _statement(results: tuple[CaseResult, ...], *, ready: bool, supplier: str = "Payroll SA",
               sets: int = 3) -> Statement:
    return Statement(
        supplier=supplier, software="PayMaster", software_version="7.2",
        profile=Profile("EB", "0123456749", "0123456749", mandates="mandates.csv"),
        started="2026-12-04T18:00:00+01:00", product_version="0.1.0",
        catalogue_version="1.0", sets_judged=sets, min_sets=3,
        counts=count_outcomes(results), ready=ready)


def passing_report() -> Report:
    """Every applicable case passed."""
    results = (
        CaseResult(CaseSpec("NAM-001", "transport", "every name follows §4.5", "4.5"),
                   Outcome.PASSED),
        CaseResult(CaseSpec("SIG-001", "signature", "an FS is present where required", "6.1"),
                   Outcome.PASSED),
        CaseResult(CaseSpec("CMD-001", "command", "the exporter exits 0", "design 4"),
                   Outcome.NOT_APPLICABLE),
    )
    return Report(_statement(results, ready=True), results,
                  (JudgedFile("FI.EB.0123456749.20260101.00001.R.1", 1234, "ab" * 32),))


def failing_report() -> Report:
    """Failed cases with evidence, an anomaly group above the cap, hostile strings."""
    examples = tuple(
        Evidence(f"INSZ check digit wrong #{i}", file=LONG_PATH, line=100 + i,
                 zone="/FLAFile/Declaration/Worker/INSZ", code="FLA-00042")
        for i in range(CAP))
    results = (
        CaseResult(CaseSpec("NAM-001", "transport", "every name follows §4.5", "4.5"),
                   Outcome.PASSED),
        CaseResult(CaseSpec("NAM-002", "transport", "part sets are complete", "4.5"),
                   Outcome.FAILED,
                   evidence=(Evidence("part 2 of 3 is missing", file=LONG_PATH),)),
        CaseResult(CaseSpec("SIG-004", "signature", "the digest matches the FI", "6.4"),
                   Outcome.FAILED,
                   evidence=(Evidence(f"digest differs {HOSTILE}", file=f"FS.{HOSTILE}",
                                      line=7, zone="<SignedInfo attr=\"&\">", code="ACRF-125",
                                      answer="ACRF.EB.0123456749.20260101.00001.R.1"),)),
        CaseResult(CaseSpec("RUL-008", "rules", "every §8 rule holds", "8"), Outcome.FAILED,
                   groups=(AnomalyGroup("FLA-00042", "INSZ check digit wrong", 250, examples),
                           AnomalyGroup("FLA-00007", f"date out of range {HOSTILE}", 1,
                                        (Evidence("2026-13-01", file="FI.x", line=3),)))),
        CaseResult(CaseSpec("RTR-001", "round trip", "the channel agrees with the judge",
                            "9"), Outcome.NOT_APPLICABLE),
        CaseResult(CaseSpec("CON-001", "consistency", f"references are unique {HOSTILE}",
                            "8.2"), Outcome.PASSED,
                   evidence=(Evidence("checked 12 references"),)),
    )
    files = (JudgedFile(LONG_PATH, 10**9, "0f" * 32), JudgedFile(HOSTILE, 1, "00" * 32))
    return Report(_statement(results, ready=False, supplier=HOSTILE, sets=2), results, files,
                  {"applications": {"FLA": "not ready"}})


# --- HTML -----------------------------------------------------------------------------------

class _Parsed(HTMLParser):
    """What a browser's parser sees: elements with their attributes, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)


def parse(page: str) -> _Parsed:
    parser = _Parsed()
    parser.feed(page)
    parser.close()
    return parser


def test_html_states_the_verdict_and_the_statement() -> None:
    page = render_html(passing_report())
    text = " ".join(parse(page).text)
    assert "READY FOR PRODUCTION" in text
    assert "NOT READY" not in text
    for fact in ("Payroll SA", "PayMaster", "7.2", "quality EB", "0123456749",
                 "2026-12-04T18:00:00+01:00", "Product version", "0.1.0",
                 "Catalogue version", "3 (at least 3 required: enough)", "mandates.csv"):
        assert fact in text, fact
    # the statement comes before the failed cases, which come before the table of all cases
    assert page.index('id="statement"') < page.index('id="failed"') < page.index('id="cases"')


def test_html_counts_every_layer() -> None:
    report = failing_report()
    parsed = parse(render_html(report))
    rows = [t for t in parsed.tags if t[0] == "tr"]
    assert rows
    counts = report.statement.counts
    text = " ".join(parsed.text)
    for layer, by_outcome in counts.items():
        assert layer in text
        assert set(by_outcome) == {o.value for o in Outcome}
    assert "too few" in text  # 2 sets judged, 3 required


def test_html_shows_every_failed_case_with_its_evidence() -> None:
    report = failing_report()
    page = render_html(report)
    text = " ".join(parse(page).text)
    assert "NOT READY FOR PRODUCTION" in text
    for result in report.failed():
        assert f'id="case-{result.case.id}"' in page
        for e in result.evidence:
            for value in (e.message, e.file, e.zone, e.code, e.answer):
                if value is not None:
                    assert value in text, value
            if e.line is not None:
                assert str(e.line) in text
    assert "ACRF-125" in text and "ACRF.EB.0123456749.20260101.00001.R.1" in text


def test_html_anomaly_groups_are_collapsible_with_exact_counts() -> None:
    page = render_html(failing_report())
    parsed = parse(page)
    text = " ".join(parsed.text)
    assert sum(tag == "details" for tag, _ in parsed.tags) == 2
    assert f"250 anomalies (first {CAP} of 250 listed)" in text
    assert "1 anomaly (all 1 listed)" in text
    for i in range(CAP):
        assert f"INSZ check digit wrong #{i}" in text


def test_html_table_lists_every_case_with_filter_data() -> None:
    report = failing_report()
    parsed = parse(render_html(report))
    rows = [a for tag, a in parsed.tags if tag == "tr" and "data-outcome" in a]
    assert [(r["data-layer"], r["data-outcome"]) for r in rows] == [
        (r.case.layer, r.outcome.value) for r in report.results]
    form = next(a for tag, a in parsed.tags if tag == "form")
    assert "hidden" in form  # shown by the script only: without script, the whole table
    assert any(tag == "th" and a.get("scope") == "col" for tag, a in parsed.tags)


def test_html_escapes_everything_from_the_report() -> None:
    page = render_html(failing_report())
    parsed = parse(page)
    # the only script is ours; every hostile string arrives as text, intact
    assert sum(tag == "script" for tag, _ in parsed.tags) == 1
    assert "alert(" not in "".join(parsed.scripts)
    assert page.count("<script") == 1
    assert HOSTILE in " ".join(parsed.text)
    assert "&lt;script&gt;" in page
    for _tag, attrs in parsed.tags:
        assert "<" not in "".join(str(v) for v in attrs.values())


def test_html_control_characters_and_surrogates_are_made_visible() -> None:
    results = (CaseResult(CaseSpec("NAM-001", "transport", "names", "4.5"), Outcome.FAILED,
                          evidence=(Evidence("bad \x1b[31m name", file="FI.\udcff.1"),)),)
    page = render_html(Report(_statement(results, ready=False), results))
    assert "\x1b" not in page and "\\x1b[31m" in page and "FI.\\udcff.1" in page
    page.encode("utf-8")  # a surrogate-escaped file name would make this raise


def test_html_fetches_nothing() -> None:
    page = render_html(failing_report())
    parsed = parse(page)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
        assert not (tag == "link" or tag in ("img", "iframe", "object", "embed")), tag
    assert "@import" not in page
    assert not re.search(r"url\s*\(", page)
    assert not re.search(r"https?://(?!www\.w3\.org)", page)


def test_html_prints_and_wraps() -> None:
    page = render_html(failing_report())
    assert "@media print" in page
    assert "overflow-wrap: anywhere" in page
    assert '<meta charset="utf-8">' in page and '<html lang="en">' in page


def test_write_html_is_atomic_utf8(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_html(failing_report(), target)
    assert target.read_text(encoding="utf-8") == render_html(failing_report())
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# --- JUnit ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def junit_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


@pytest.mark.parametrize("make", [passing_report, failing_report])
def test_junit_validates_against_the_published_xsd(make: object,
                                                    junit_schema: etree.XMLSchema) -> None:
    assert callable(make)
    document = etree.fromstring(render_junit(make()))
    assert junit_schema.validate(document), junit_schema.error_log


def test_junit_reads_back_with_junitparser(tmp_path: Path) -> None:
    report = failing_report()
    target = tmp_path / "junit.xml"
    write_junit(report, target)
    xml = junitparser.JUnitXml.fromfile(str(target))
    suites = {suite.name: suite for suite in xml}
    layers = [layer for layer, counts in report.statement.counts.items() if sum(counts.values())]
    assert list(suites) == layers
    for layer, suite in suites.items():
        counts = report.statement.counts[layer]
        assert suite.tests == sum(counts.values())
        assert suite.failures == counts["failed"]
        assert suite.skipped == counts["not applicable"]
        assert suite.errors == 0
    cases = {case.name: case for suite in xml for case in suite}
    assert len(cases) == len(report.results)
    for result in report.results:
        case = cases[f"{result.case.id} {result.case.title}"]
        assert case.classname == result.case.layer
        kinds = [type(r) for r in case.result]
        if result.outcome is Outcome.FAILED:
            assert kinds == [junitparser.Failure]
        elif result.outcome is Outcome.NOT_APPLICABLE:
            assert kinds == [junitparser.Skipped]
        else:
            assert kinds == []


def test_junit_failure_carries_the_evidence() -> None:
    report = failing_report()
    root = etree.fromstring(render_junit(report))
    failures = {f.getparent().get("name").split(" ")[0]: f for f in root.iter("failure")}
    assert sorted(failures) == sorted(r.case.id for r in report.failed())
    sig = failures["SIG-004"]
    assert sig.get("message").startswith(f"FS.{HOSTILE}:7 zone <SignedInfo")
    for value in ("ACRF-125", "ACRF.EB.0123456749.20260101.00001.R.1", HOSTILE):
        assert value in sig.text
    rules = failures["RUL-008"].text
    assert f"FLA-00042 x250, {CAP} shown: INSZ check digit wrong" in rules
    assert rules.count("INSZ check digit wrong #") == CAP
    assert f"{LONG_PATH}:100 zone /FLAFile/Declaration/Worker/INSZ FLA-00042" in rules
    assert failures["RUL-008"].get("message") == "251 anomalies: FLA-00042, FLA-00007"


def test_junit_totals_and_statement_properties() -> None:
    report = failing_report()
    root = etree.fromstring(render_junit(report))
    assert root.tag == "testsuites"
    assert root.get("tests") == str(len(report.results))
    assert root.get("failures") == str(len(report.failed()))
    props = {p.get("name"): p.get("value") for p in root.find("testsuite").iter("property")}
    assert props["verdict"] == "not ready for production"
    assert props["supplier"] == HOSTILE
    assert props["sets_judged"] == "2" and props["min_sets"] == "3"


def test_junit_carries_no_character_xml_refuses() -> None:
    results = (CaseResult(CaseSpec("NAM-001", "transport", "names \x00", "4.5"), Outcome.FAILED,
                          evidence=(Evidence("bad \x1b name", file="FI.\udcff.1"),)),)
    data = render_junit(Report(_statement(results, ready=False), results))
    root = etree.fromstring(data)
    assert "\\x1b" in root.find(".//failure").text
    assert root.find(".//testcase").get("name") == "NAM-001 names \\x00"
    assert xml_safe("tab\tnewline\n é") == "tab\tnewline\n é"
