"""The HTML certification report in a real headless Chromium (Debian's ``chromium``).

The page is opened from disk as a reader would open it: the screenshot at 1280x900 is what a
person sees first, the dumped DOM is what the browser made of the page (after its script ran),
and a probe copy of the page reports the layout widths, so "no horizontal scrolling at 1280 px"
is measured by the browser, not assumed.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fla_core.certify.html import render_html, write_html
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

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: "
                       "the browser that shows the HTML report is missing"),
]

WIDTH, HEIGHT = 1280, 900
LONG_PATH = "/srv/exports/" + "a-very-long-folder-name-without-spaces-" * 10 + "FI.EB.1"
ANSWER = "ACRF.EB.0123456749.20261204.00001.R.1"


def report() -> Report:
    """A not-ready report: one failed case with full evidence, one with anomaly groups."""
    results = (
        CaseResult(CaseSpec("NAM-001", "transport", "every name follows §4.5", "4.5"),
                   Outcome.PASSED),
        CaseResult(CaseSpec("SIG-004", "signature", "the FS digest matches the FI", "6.4"),
                   Outcome.FAILED,
                   evidence=(Evidence("the digest in the FS is not the FI's", file=LONG_PATH,
                                      line=12, zone="/Signature/SignedInfo/DigestValue",
                                      code="ACRF-125", answer=ANSWER),)),
        CaseResult(CaseSpec("RUL-008", "rules", "every §8 rule holds", "8"), Outcome.FAILED,
                   groups=(AnomalyGroup("FLA-00042", "INSZ check digit wrong", 250, tuple(
                       Evidence("check digit", file="FI.EB.1", line=i) for i in range(5))),)),
        CaseResult(CaseSpec("RTR-001", "round trip", "the channel agrees with the judge",
                            "9"), Outcome.NOT_APPLICABLE),
    )
    statement = Statement(
        supplier="Payroll SA", software="PayMaster", software_version="7.2",
        profile=Profile("EB", "0123456749", "0123456749"),
        started="2026-12-04T18:00:00+01:00", product_version="0.1.0", catalogue_version="1.0",
        sets_judged=3, min_sets=3, counts=count_outcomes(results), ready=False)
    return Report(statement, results, (JudgedFile(LONG_PATH, 2048, "ab" * 32),))


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with its own profile folder (parallel runs share nothing)."""
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={cwd / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *args],
        capture_output=True, text=True, timeout=90, check=True, cwd=cwd)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# Appended to a copy of the page: writes what the browser measured into the DOM, then shows
# the failed cases only through the page's own filter, and counts the rows left visible;
# then tells the page it is about to be printed, and counts the anomaly groups left closed.
PROBE = """<script>
var root = document.documentElement, form = document.getElementById('filters');
form.elements.outcome.value = 'failed';
form.dispatchEvent(new Event('change'));
var visible = document.querySelectorAll('#all-cases tbody tr:not([hidden])').length;
var groupsClosed = document.querySelectorAll('details:not([open])').length;
window.dispatchEvent(new Event('beforeprint'));
var groupsClosedInPrint = document.querySelectorAll('details:not([open])').length;
document.body.insertAdjacentHTML('beforeend', '<pre id="probe">scrollWidth=' +
  root.scrollWidth + ' clientWidth=' + root.clientWidth + ' visible=' + visible +
  ' formHidden=' + form.hidden + ' closed=' + groupsClosed + ',' + groupsClosedInPrint +
  ' shown=' + document.getElementById('shown').textContent + '</pre>');
</script>"""


def test_screenshot_is_the_first_screen_of_the_report(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(report(), page)
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", page.as_uri(), cwd=tmp_path)
    assert png_size(shot.read_bytes()) == (WIDTH, HEIGHT)


def test_the_browser_shows_the_verdict_and_the_failed_cases(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(report(), page)
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path).stdout
    assert "NOT READY FOR PRODUCTION" in dom
    for text in ("SIG-004", "the FS digest matches the FI", LONG_PATH, "ACRF-125", ANSWER,
                 "/Signature/SignedInfo/DigestValue", "RUL-008", "FLA-00042",
                 "first 5 of 250 listed"):
        assert text in dom, text
    # the filter's script ran: its form is shown and counts every case
    assert re.search(r'<form id="filters" role="search"', dom), "the filter form stayed hidden"
    assert "4 of 4 cases shown" in dom


def test_no_horizontal_scrolling_the_filter_and_print_groups(tmp_path: Path) -> None:
    page = tmp_path / "probe.html"
    page.write_text(render_html(report()).replace("</body>", PROBE + "</body>"),
                    encoding="utf-8")
    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path).stdout
    found = re.search(r'<pre id="probe">scrollWidth=(\d+) clientWidth=(\d+) visible=(\d+) '
                      r"formHidden=(\w+) closed=(\d+),(\d+) shown=([^<]*)</pre>", dom)
    assert found, dom[-2000:]
    scroll_width, client_width = int(found[1]), int(found[2])
    assert 0 < client_width <= WIDTH
    assert scroll_width <= client_width, f"scrolls sideways: {scroll_width} > {client_width}"
    assert found[3] == "2" and found[4] == "false" and found[7] == "2 of 4 cases shown"
    assert (found[5], found[6]) == ("1", "0"), "anomaly groups stay closed in print"


def test_prints_to_pdf(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(report(), page)
    pdf = tmp_path / "report.pdf"
    chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri(), cwd=tmp_path)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 1000
