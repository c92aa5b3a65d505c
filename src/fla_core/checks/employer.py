"""Rules 8-13 of spec 8.3: the employer and the mandate rules M1-M3 of spec 2.2.

Which quality needs what comes from ``context.quality_info()``: the table of the
``fla_qualities`` plugins (spec 2.2). The level-2 list is configurable through
``context.limits.two_level_qualities``.
"""

from __future__ import annotations

from fla_core import hookimpl
from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import declaration_path
from fla_core.identifiers import kbo_problem
from fla_core.model import Declaration


@hookimpl
def fla_check_declaration(declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
    """Row 8 employer missing; 9-10 enterprise number; 11 M1; 12 M2 (155); 13 M3 (101)."""
    d = position
    quality = context.sender.quality
    may = context.quality_info()
    if declaration.employer is None:
        if may.employer_optional:  # M5
            return []
        return [rule_anomaly("952", "00111", declaration_path(d, "Employer"), None, row=8,
                             declaration=d, catalogue=context.catalogue)]
    company = declaration.employer.company_id
    path = declaration_path(d, "Employer", "CompanyID")

    def anomaly(code: str, row: int) -> Anomaly:
        return rule_anomaly(code, "00112", path, company, row=row, declaration=d,
                            catalogue=context.catalogue)

    problem = kbo_problem(company)
    if problem is not None:
        # Rows 9 and 10 guard every later employer rule.
        return [anomaly(problem, 9 if problem == "901" else 10)]
    found: list[Anomaly] = []
    if may.own_company_only and company != context.sender.company_id:
        found.append(anomaly("101", 11))
    if not context.check_mandates:
        return found
    representative = context.sender.company_id
    if may.needs_mandate and not context.mandates.has_level1(
            company, representative=representative, application=context.application,
            on=context.processing_date):
        found.append(anomaly("155", 12))
        return found  # row 13 is guarded by row 12
    if quality in context.limits.two_level_qualities and not context.mandates.has_level2(
            company, representative=representative, application=context.application,
            sender=context.sender.sender_nbr):
        found.append(anomaly("101", 13))
    return found
