"""Rules 6-7 of spec 8.3: the reporting year (codes 913, 960)."""

from __future__ import annotations

from fla_core import hookimpl
from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import declaration_path, parse_year
from fla_core.model import Declaration


@hookimpl
def fla_check_declaration(declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
    """Row 6: year before the first FLA year or after the processing year; row 7: past year."""
    text = declaration.reporting_year
    year = parse_year(text)
    if year is None:
        return []  # malformed: reported by the schema or the input format, not here
    path = declaration_path(position, "ReportingYear")
    current = context.processing_date.year
    if year < context.limits.first_reporting_year or year > current:
        return [rule_anomaly("913", "00104", path, text, row=6, declaration=position,
                             catalogue=context.catalogue)]
    if year < current:
        return [rule_anomaly("960", "00104", path, text, row=7, declaration=position,
                             catalogue=context.catalogue)]
    return []
