"""Evaluation of declarations against the business rules (spec 8.2, 8.4, 9.3).

The rules themselves are ``fla_check_declaration`` plugins (references, years, employer,
workers, trainings); this module collects their anomalies in the order of spec 8.2, decides
the status, and applies an accepted declaration to the file's registry overlay. It also holds
the small helpers the rule modules share: the paths of spec 8.2 and lenient value parsing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Literal

from fla_core.model import Action

if TYPE_CHECKING:
    from fla_core.anomalies import Anomaly
    from fla_core.checks.context import CheckContext
    from fla_core.model import Declaration
    from fla_core.plugins import FlaPlugins

Status = Literal["ACCEPTED", "REJECTED"]

ACCEPTED: Status = "ACCEPTED"
REJECTED: Status = "REJECTED"

# Registry states of spec 8.4.
ACTIVE = "ACTIVE"
REPLACED = "REPLACED"
CANCELLED = "CANCELLED"
CANCEL = "CANCEL"

ROOT = "/FLAFile"

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEAR = re.compile(r"[0-9]{4}")


# --- paths of spec 8.2 ---------------------------------------------------------------------------

def declaration_path(d: int, *steps: str) -> str:
    """``/FLAFile/Declaration[d]`` followed by ``steps`` (element names without predicate)."""
    return "/".join((f"{ROOT}/Declaration[{d}]", *steps))


def worker_path(d: int, w: int, *steps: str) -> str:
    """``/FLAFile/Declaration[d]/Worker[w]`` followed by ``steps``."""
    return declaration_path(d, f"Worker[{w}]", *steps)


def training_path(d: int, w: int, t: int, *steps: str) -> str:
    """``/FLAFile/Declaration[d]/Worker[w]/Training[t]`` followed by ``steps``."""
    return worker_path(d, w, f"Training[{t}]", *steps)


# --- lenient parsing ------------------------------------------------------------------------------
# Data from an export may carry values the schema would refuse; the input-format layer reports
# those, so a rule that cannot be evaluated reports nothing instead of crashing.

def parse_date(text: str | None) -> date | None:
    """A ``YYYY-MM-DD`` date, or None when the text is not exactly such a valid date."""
    if text is None or not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_year(text: str | None) -> int | None:
    """A 4-digit year, or None when the text is not exactly 4 digits."""
    if text is None or not _YEAR.fullmatch(text):
        return None
    return int(text)


# --- evaluation -----------------------------------------------------------------------------------

@dataclass
class DeclarationVerdict:
    """The result of one declaration, as a NOTI ``DeclarationResult`` reports it (spec 9.3)."""

    position: int
    declaration_ref: str
    company_id: str | None
    status: Status
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        """True when the declaration is accepted (possibly with warnings)."""
        return self.status == ACCEPTED


def registry_effect(declaration: Declaration) -> dict[str, str]:
    """The registry changes an accepted declaration makes (spec 8.4)."""
    ref = declaration.declaration_ref
    replaced = declaration.replaced_declaration_ref
    if declaration.action == Action.NEW:
        return {ref: ACTIVE}
    if declaration.action == Action.REPLACE and replaced is not None:
        return {replaced: REPLACED, ref: ACTIVE}
    if declaration.action == Action.CANCEL and replaced is not None:
        return {replaced: CANCELLED, ref: CANCEL}
    # Unreachable for an accepted declaration (rules 940 and the schema); change nothing.
    return {}


def evaluate(declaration: Declaration, position: int, context: CheckContext,
             plugins: FlaPlugins) -> DeclarationVerdict:
    """Run every check plugin on one declaration, order its anomalies and apply it (8.2, 8.4)."""
    anomalies = sorted(plugins.check_declaration(declaration, position, context),
                       key=lambda a: a.sort_key())
    status = REJECTED if any(a.blocking for a in anomalies) else ACCEPTED
    # Rule 931 counts every earlier declaration of the file, rejected or not.
    context.seen_refs.add(declaration.declaration_ref)
    if status == ACCEPTED:
        context.file_registry.update(registry_effect(declaration))
    company = declaration.employer.company_id if declaration.employer is not None else None
    return DeclarationVerdict(position=position, declaration_ref=declaration.declaration_ref,
                              company_id=company, status=status, anomalies=anomalies)


def evaluate_all(declarations: Iterable[Declaration], context: CheckContext,
                 plugins: FlaPlugins) -> Iterator[DeclarationVerdict]:
    """Evaluate declarations in document order, one verdict each (lazy, for streamed files)."""
    for position, declaration in enumerate(declarations, start=1):
        yield evaluate(declaration, position, context, plugins)


def noti_result_code(verdicts: Sequence[DeclarationVerdict]) -> int:
    """NOTI ``HandlingResult/ResultCode`` (spec 9.3): 1 all accepted, 2 some, 0 none."""
    accepted = sum(1 for v in verdicts if v.accepted)
    if accepted and accepted == len(verdicts):
        return 1
    return 2 if accepted else 0
