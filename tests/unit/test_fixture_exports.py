"""The sample exports of fixtures/exports/ give the verdicts docs/input-formats.md states.

The table of the docs is the expectation: a fixture changed without its line in the docs, a
line changed without its fixture, or a fixture the docs do not list fails here.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.checks.context import CheckContext, MemoryRegistry
from fla_core.checks.engine import evaluate
from fla_core.formats import ReadContext
from fla_core.model import Quality, Sender
from fla_core.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "fixtures" / "exports"
DOC = ROOT / "docs" / "input-formats.md"
CHANNEL = ["--quality", "social-secretariat", "--company", "0123456749"]
DOC_TODAY = "2025-12-31"  # the --today of the docs' table
LATE_YEAR = "00104-960"  # spec 8.3 row 7: every 2025 declaration from 2026 on

_ROW = re.compile(r"^\| `([^`]+)` \|.*\| ([^|]+) \|$")
_FINDING = re.compile(r"`([0-9]{5}-[0-9]{3}|input)` at lines? ([0-9]+(?:, [0-9]+)*)")
_LINE = re.compile(r":([0-9]+)(?: field |$)")


def documented() -> dict[str, set[tuple[str, int]]]:
    """File name -> the (code, line) pairs of the docs' "Sample exports" table."""
    section = DOC.read_text("utf-8").split("## Sample exports", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[tuple[str, int]]] = {}
    for line in section.splitlines():
        match = _ROW.match(line.strip())
        if match is None:
            continue
        name, verdict = match.group(1), match.group(2).strip()
        found = {(code, int(n)) for code, lines in _FINDING.findall(verdict)
                 for n in lines.split(", ")}
        assert found or verdict == "no problems", f"unreadable verdict for {name}: {verdict!r}"
        table[name] = found
    return table


DOCUMENTED = documented()


def check(name: str, *today: str) -> tuple[int, list[dict[str, str]]]:
    """Exit code and JSON findings of ``fla check`` on one fixture."""
    args = ["check", str(EXPORTS / name), *CHANNEL, *(["--today", *today] if today else []),
            "--json"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def pairs(findings: list[dict[str, str]]) -> set[tuple[str, int]]:
    """(code, line) of each finding; its line is the number after the file name."""
    out = set()
    for finding in findings:
        match = _LINE.search(finding["where"])
        assert match is not None, finding
        out.add((finding["code"], int(match.group(1))))
    return out


def test_every_fixture_export_is_in_the_docs_table():
    assert sorted(DOCUMENTED) == sorted(p.name for p in EXPORTS.iterdir())


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_fixture_gives_the_documented_verdict(name):
    expected = DOCUMENTED[name]
    exit_code, findings = check(name, DOC_TODAY)
    assert pairs(findings) == expected, findings
    assert exit_code == (1 if expected else 0)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_on_the_real_date_only_the_late_year_warning_is_added(name):
    """The fixtures stay what the docs say whatever the date: from 2026 on, 960 W is added."""
    assert date.today().year > 2025  # the premise: the reporting year 2025 is over
    exit_code, findings = check(name)
    extra = [f for f in findings if f["code"] == LATE_YEAR]
    assert all(f["severity"] == "W" for f in extra), extra
    if not any(code == "input" for code, _ in DOCUMENTED[name]):  # its declaration is read
        assert extra, findings
    assert pairs([f for f in findings if f["code"] != LATE_YEAR]) == DOCUMENTED[name]
    assert exit_code == (1 if DOCUMENTED[name] else 0)


def test_cancel_is_accepted_once_valid_csv_was():
    """The docs' claim: sent after valid.csv was accepted, cancel.csv is accepted."""
    plugins = get_plugins()
    sender = Sender("123456", Quality.SOCIAL_SECRETARIAT, "0123456749")

    def verdicts(name: str, registry: MemoryRegistry) -> tuple[list, CheckContext]:
        read = ReadContext(sender=sender, creation=f"{DOC_TODAY}T00:00:00")
        content = plugins.read_declarations(EXPORTS / name, "csv", read)
        context = CheckContext(sender=sender, environment="T",
                               processing_date=date.fromisoformat(DOC_TODAY),
                               check_mandates=False, registry=registry)
        return [evaluate(d, i, context, plugins) for i, d in enumerate(content, 1)], context

    first, after_first = verdicts("valid.csv", MemoryRegistry())
    assert [v.status for v in first] == ["ACCEPTED"]
    # the channel's registry after valid.csv: what its accepted declarations changed (8.4)
    cancel, _ = verdicts("cancel.csv", MemoryRegistry(after_first.file_registry))
    assert [(v.status, v.anomalies) for v in cancel] == [("ACCEPTED", [])]
