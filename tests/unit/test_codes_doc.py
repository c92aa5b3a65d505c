"""docs/codes.md is generated from the anomaly catalogue and must be current; its links resolve.

When ``test_codes_md_is_current`` fails, the catalogue (src/fla_core/data/anomalies.toml) or the
generator changed: run ``python -m fla_core.codes_doc`` and commit docs/codes.md with the change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from fla_core import codes_doc
from fla_core.anomalies import Catalogue, default_catalogue

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CATALOGUE = ROOT / "src" / "fla_core" / "data" / "anomalies.toml"


def test_codes_md_is_current() -> None:
    diff = codes_doc.check(DOCS / "codes.md")
    assert not diff, ("docs/codes.md is not current: run `python -m fla_core.codes_doc`\n"
                      + "\n".join(diff[:40]))


def test_check_mode_fails_on_a_stale_page_and_passes_once_regenerated(tmp_path: Path) -> None:
    page = tmp_path / "codes.md"
    assert codes_doc.main(["--check", str(page)]) == 1  # missing
    assert codes_doc.main([str(page)]) == 0
    assert codes_doc.main(["--check", str(page)]) == 0
    page.write_text(page.read_text("utf-8").replace("Invalid check digit", "Bad digit"), "utf-8")
    assert codes_doc.main(["--check", str(page)]) == 1


def test_a_catalogue_change_makes_the_page_stale(tmp_path: Path) -> None:
    changed = tmp_path / "anomalies.toml"
    changed.write_text(CATALOGUE.read_text("utf-8").replace(
        'message = "Too many hours for the training period"',
        'message = "More hours than the period allows"'), "utf-8")
    assert codes_doc.check(DOCS / "codes.md", Catalogue.load(changed))
    assert codes_doc.main(["--check", "--catalogue", str(changed), str(DOCS / "codes.md")]) == 1


def test_every_code_and_error_id_is_on_the_page() -> None:
    text = codes_doc.render()
    cat = default_catalogue()
    for info in cat.codes():
        shown = f"`ACRF-{info.code}`" if info.where == "ACRF" else f"`{info.code}`"
        assert shown in text, info.code
    for rule in cat.rules():
        assert f"`{rule.error_id}`" in text, rule.error_id


def test_an_unknown_step_label_is_refused() -> None:
    with pytest.raises(ValueError, match="X1"):
        codes_doc._found_by(["X1"])


# --- the catalogue covers what the code raises ---------------------------------------------------

def _string_constants(paths: list[Path], pattern: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.fullmatch(pattern, node.value)):
                found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_code_in_the_source_is_in_the_catalogue() -> None:
    # A 3-digit string in the packages is an answer code (ChannelError("131"), rule_anomaly(
    # "921", ...)); one missing from the catalogue would have no message and no line in codes.md.
    sources = sorted((ROOT / "src").rglob("*.py"))
    codes = {c.code for c in default_catalogue().codes()}
    missing = {code: where for code, where in _string_constants(sources, r"[0-9]{3}").items()
               if code not in codes}
    assert not missing, f"codes used in the source but not in the catalogue: {missing}"


def test_every_zone_of_the_rules_is_in_the_catalogue() -> None:
    checks = sorted((ROOT / "src" / "fla_core" / "checks").glob("*.py"))
    zones = {r.zone for r in default_catalogue().rules()}
    missing = set(_string_constants(checks, r"[0-9]{5}")) - zones
    assert not missing, f"zones used by the checks but without a catalogue rule: {missing}"


def test_catalogue_entries_are_consistent() -> None:
    cat = default_catalogue()
    for info in cat.codes():
        assert info.steps, f"code {info.code} names no step"
    for rule in cat.rules():
        assert cat.info(rule.code).where == "NOTI", rule.error_id
        assert rule.path and rule.when, rule.error_id


# --- links into rules.md and codes.md ----------------------------------------------------------

def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in page.read_text("utf-8").splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
                        .replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: p.name)
def test_links_to_rules_and_codes_resolve(page: Path) -> None:
    targets = {"rules.md": _anchors(DOCS / "rules.md"), "codes.md": _anchors(DOCS / "codes.md")}
    text = page.read_text("utf-8")
    broken = []
    for target, anchor in re.findall(r"\]\((?:docs/)?((?:rules|codes)\.md)?#([^)\s]+)\)", text):
        if not target:  # a link within the page itself
            if page.name not in targets:
                continue
            target = page.name
        if anchor not in targets[target]:
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.name}: links to missing sections: {broken}"
