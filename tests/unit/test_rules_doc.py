"""The name examples of docs/rules.md are what the name checks answer (the page cannot drift)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from fla_core.anomalies import ChannelError
from fla_core.names import ChannelNameContext, NameRules, parse_upload

RULES = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
# The running example of the page: sender 123456, today 2026-03-16, FLAC, DMFA and DIMN enabled.
TODAY = date(2026, 3, 16)
ENABLED = frozenset({"FLAC", "DMFA", "DIMN"})
_ROW = re.compile(r"\| `([^`]+)`(?: in `([A-Z-]+)`)? \|(?: `([0-9]{3})` \|)?")


def _examples() -> list[tuple[str, str, str | None]]:
    """(name, directory, expected code or None) of the two tables under "### Examples"."""
    text = RULES.read_text("utf-8")
    section = text.split("### Examples", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if match and "..." not in match.group(1):  # abbreviated names are not examples
            name, directory, code = match.groups()
            rows.append((name, directory or "INTEST", code))
    return rows


def test_the_page_has_examples() -> None:
    examples = _examples()
    assert sum(code is None for _, _, code in examples) >= 4
    assert sum(code is not None for _, _, code in examples) >= 15


@pytest.mark.parametrize(("name", "directory", "code"), _examples(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_name_example(name: str, directory: str, code: str | None) -> None:
    channel = ChannelNameContext("123456", directory, ENABLED)
    try:
        parse_upload(name, NameRules(today=TODAY), channel)
    except ChannelError as exc:
        assert exc.code == code, exc.describe()
    else:
        assert code is None, f"{name} in {directory} passes the name checks"
