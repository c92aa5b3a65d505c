"""``docs/codes.md``: the reference of every answer code, rendered from the anomaly catalogue.

The page is generated so that it cannot drift from ``data/anomalies.toml``::

    python -m fla_core.codes_doc            # (re)write docs/codes.md
    python -m fla_core.codes_doc --check    # exit 1 when docs/codes.md is not current

``tests/unit/test_codes_doc.py`` runs the check. Step labels (``N5c``, ``P8``, ``S1``) link
to the sections of ``docs/rules.md`` that define them.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

from fla_core.anomalies import Catalogue, CodeInfo, RuleInfo, default_catalogue

DEFAULT_PATH = Path("docs/codes.md")
RULES_PAGE = "rules.md"

# Step label family -> (anchor in docs/rules.md, words for one step, words for several).
STEP_SECTIONS: dict[str, tuple[str, str, str]] = {
    "N": ("name-checks", "name check", "name checks"),
    "P": ("processing-steps", "processing step", "processing steps"),
    "S": ("signature-checks", "signature check", "signature checks"),
    "sweep": ("orphan-sweep", "orphan sweep", "orphan sweep"),
}

_HEADER = """\
<!-- Generated from src/fla_core/data/anomalies.toml by `python -m fla_core.codes_doc`.
     Do not edit by hand: change the catalogue and run that command again. -->

# Answer codes

Every code the channel answers with, where it is found and what it means. The rules behind
them are in [rules.md](rules.md); this page is generated from the anomaly catalogue
(`src/fla_core/data/anomalies.toml`), the same data the simulator and `fla check` read their
messages from.

Two answers carry codes:

* an **ACRF** (acknowledgement of receipt) answers every processed GO. A negative ACRF
  (`ResultCode` 0) carries exactly one `ErrorID` `ACRF-nnn`: the first check that failed.
  The whole set is rejected, nothing in it is processed, and no NOTI follows;
* a **NOTI** (notification) follows every positive ACRF of an application with a plugin
  (FLA). It judges each declaration and reports anomalies with an error id `zzzzz-nnn`:
  `zzzzz` is the zone (the element concerned, `00000` for the file as a whole) and `nnn` the
  code.

Severity:

| severity | meaning |
|---|---|
| file | a file-level failure: negative ACRF, the whole set is rejected |
| B | *blocking*: the declaration is `REJECTED` in the NOTI; the file's other declarations go on |
| W | *warning*: reported in the NOTI, nothing is rejected |

A declaration with at least one B anomaly is rejected; warnings alone leave it `ACCEPTED`.
The NOTI `ResultCode` is 1 when every declaration is accepted, 2 when some are, 0 when none is.

Origin: *public list* is a code of the real channel's public error list (its meaning sometimes
extended here); *modelled* is a code this project invented where the public documentation is
silent (the signature codes 6xx and the FLA codes 9xx). Messages are informative: compare
answers on their codes, never on the text.
"""


def _prose(text: str) -> str:
    """A paragraph wrapped like the hand-written pages (100 columns)."""
    return textwrap.fill(text, width=96, break_long_words=False, break_on_hyphens=False)


def _origin(info: CodeInfo) -> str:
    return "*modelled*" if info.modelled else "public list"


def _cell(text: str) -> str:
    """Table-cell text: a pipe would end the cell."""
    return text.replace("|", "\\|")


def _step_family(step: str) -> str:
    family = step if step in STEP_SECTIONS else step[:1]
    if family not in STEP_SECTIONS:
        raise ValueError(f"unknown step label {step!r} in the catalogue; known families: "
                         f"{', '.join(STEP_SECTIONS)}")
    return family


def _found_by(steps: Iterable[str]) -> str:
    """``[name checks N2, N3, N4](rules.md#name-checks)``, one link per step family."""
    groups: dict[str, list[str]] = {}
    for step in steps:
        groups.setdefault(_step_family(step), []).append(step)
    links = []
    for family, labels in groups.items():
        anchor, one, several = STEP_SECTIONS[family]
        words = one if len(labels) == 1 else several
        text = words if family == "sweep" else f"{words} {', '.join(labels)}"
        links.append(f"[{text}]({RULES_PAGE}#{anchor})")
    return "; ".join(links) or "—"


def _acrf_table(codes: Sequence[CodeInfo]) -> list[str]:
    lines = ["| error id | found by | origin | message |", "|---|---|---|---|"]
    for info in codes:
        lines.append(f"| `ACRF-{info.code}` | {_found_by(info.steps)} | {_origin(info)} "
                     f"| {_cell(info.message)} |")
    return lines


def _noti_code_table(codes: Sequence[CodeInfo], rules: Sequence[RuleInfo]) -> list[str]:
    lines = ["| code | severity | error ids | origin | message |", "|---|---|---|---|---|"]
    for info in codes:
        ids = ", ".join(f"`{r.error_id}`" for r in rules if r.code == info.code) or "—"
        lines.append(f"| `{info.code}` | {info.severity} | {ids} | {_origin(info)} "
                     f"| {_cell(info.message)} |")
    return lines


def _rule_table(rules: Sequence[RuleInfo], catalogue: Catalogue) -> list[str]:
    lines = ["| row | error id | severity | element | raised when | message |",
             "|---|---|---|---|---|---|"]
    for rule in rules:
        rows = ", ".join(map(str, rule.rows)) or "—"
        severity = catalogue.info(rule.code).severity
        message = catalogue.message(rule.code, rule.zone)
        lines.append(f"| {rows} | `{rule.error_id}` | {severity} | `{_cell(rule.path)}` "
                     f"| {_cell(rule.when)} | {_cell(message)} |")
    return lines


def render(catalogue: Catalogue | None = None) -> str:
    """The text of docs/codes.md for ``catalogue`` (the packaged one by default)."""
    cat = catalogue or default_catalogue()
    codes = cat.codes()
    rules = cat.rules()
    acrf = [c for c in codes if c.where == "ACRF"]
    noti = [c for c in codes if c.where == "NOTI"]
    parts = [
        _HEADER,
        "## ACRF codes (file level)",
        "",
        _prose("Found by: the check that gives the code, as defined in [rules.md](rules.md). "
               "The name checks run on the GO (processing step P1), on every FI and FS of its "
               "set (P4), on a TD, and (N1–N4 only) on files swept as orphans."),
        "",
        *_acrf_table(acrf),
        "",
        "## NOTI codes",
        "",
        _prose("The 3-digit codes of NOTI anomalies, with the error ids (zone-code) that use "
               "them. All are found by the [business rules](rules.md#business-rules) "
               "(processing step P16), except `609`, found by [signature check "
               "S11](rules.md#signature-checks)."),
        "",
        *_noti_code_table(noti, rules),
        "",
        "## NOTI error ids (business rules)",
        "",
        _prose("In evaluation order: within a declaration, anomalies are listed by worker, "
               "then training, then row. Elements are under `/FLAFile`; in a NOTI the `Path` "
               "carries positions (`/FLAFile/Declaration[2]/Worker[1]/Training[3]/Hours`). "
               "Limits named in the conditions are `simulator.toml` `[server]` keys, see "
               "[rules.md](rules.md#modelled-values)."),
        "",
        *_rule_table(rules, cat),
        "",
    ]
    return "\n".join(parts)


def check(path: Path, catalogue: Catalogue | None = None) -> list[str]:
    """The differences between ``path`` and the rendered page, as unified-diff lines."""
    want = render(catalogue)
    have = path.read_text("utf-8") if path.exists() else ""
    if have == want:
        return []
    return list(difflib.unified_diff(have.splitlines(), want.splitlines(),
                                     f"{path} (on disk)", f"{path} (from the catalogue)",
                                     lineterm=""))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the page, or with ``--check`` exit 1 when it is not current."""
    parser = argparse.ArgumentParser(prog="python -m fla_core.codes_doc",
                                     description="Generate docs/codes.md from the anomaly "
                                                 "catalogue.")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"the page (default {DEFAULT_PATH})")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when the page differs from the catalogue")
    parser.add_argument("--catalogue", type=Path, default=None,
                        help="a catalogue file instead of the packaged one")
    args = parser.parse_args(argv)
    catalogue = Catalogue.load(args.catalogue) if args.catalogue else None
    if args.check:
        diff = check(args.path, catalogue)
        if diff:
            print("\n".join(diff[:60]), file=sys.stderr)
            print(f"{args.path} is not current: run `python -m fla_core.codes_doc "
                  f"{args.path}`", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(render(catalogue), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
