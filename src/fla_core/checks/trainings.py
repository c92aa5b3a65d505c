"""Rules 19-29 of spec 8.3: trainings (codes 930, 901, 004, 951, 910, 911, 912, 920-922).

Hours are exact decimals (spec 8.2). A date or an hours value that does not parse (possible
when the data comes from an export rather than a schema-valid FI) makes the rules that need it
report nothing: the input format layer reports the malformed value itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from fla_core import hookimpl
from fla_core.anomalies import Anomaly, rule_anomaly
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import parse_date, parse_year, training_path
from fla_core.identifiers import kbo_problem
from fla_core.model import Declaration, Training

ZERO = Decimal("0")


@dataclass(frozen=True)
class _Where:
    """Position of one training, and the context it is checked in."""

    d: int
    w: int
    t: int
    context: CheckContext

    def anomaly(self, code: str, zone: str, element: str, value: str | None,
                row: int) -> Anomaly:
        return rule_anomaly(code, zone, training_path(self.d, self.w, self.t, element), value,
                            row=row, declaration=self.d, worker=self.w, training=self.t,
                            catalogue=self.context.catalogue)


@hookimpl
def fla_check_declaration(declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
    """Rows 19-29 for every training of every worker."""
    year = parse_year(declaration.reporting_year)
    found: list[Anomaly] = []
    # Rows 20-29 depend on the training's provider, dates and hours only (the year, sender,
    # clock and limits are those of the whole declaration), and a declaration repeats few such
    # combinations: each is judged once per declaration, then only its anomalies are made.
    judged: dict[tuple[str | None, str, str, str], tuple[_Finding, ...]] = {}
    for w, worker in enumerate(declaration.workers, start=1):
        seen: set[str] = set()
        for t, training in enumerate(worker.trainings, start=1):
            ref = training.training_ref
            if ref in seen:
                found.append(_Where(position, w, t, context).anomaly(
                    "930", "00131", "TrainingRef", ref, 19))
            else:
                seen.add(ref)
            key = (training.provider_company_id, training.start_date, training.end_date,
                   training.hours)
            findings = judged.get(key)
            if findings is None:
                findings = judged[key] = _findings(training, year, context)
            if findings:
                where = _Where(position, w, t, context)
                found += [where.anomaly(code, zone, element, getattr(training, attr), row)
                          for code, zone, element, attr, row in findings]
    return found


# (code, zone, element, Training attribute holding the value, rule row)
_Finding = tuple[str, str, str, str, int]


def _findings(training: Training, year: int | None,
              context: CheckContext) -> tuple[_Finding, ...]:
    """Rows 20-29 for one training, as anomaly templates in the order they are reported."""
    return (*_provider(training, context), *_dates_and_hours(training, year, context))


def days_of(start: date, end: date) -> int:
    """Calendar days of a training, both ends included (spec 8.2)."""
    return (end - start).days + 1


def _provider(training: Training, context: CheckContext) -> list[_Finding]:
    provider = training.provider_company_id
    found: list[_Finding] = []
    if provider is not None:
        problem = kbo_problem(provider)
        if problem is not None:
            found.append((problem, "00132", "ProviderCompanyID", "provider_company_id",
                          20 if problem == "901" else 21))
    sender = context.sender
    if context.quality_info().own_trainings_only and provider != sender.company_id:
        found.append(("951", "00132", "ProviderCompanyID", "provider_company_id", 22))
    return found


def _dates_and_hours(training: Training, year: int | None,
                     context: CheckContext) -> list[_Finding]:
    start = parse_date(training.start_date)
    end = parse_date(training.end_date)
    found: list[_Finding] = []
    reversed_period = start is not None and end is not None and end < start
    if reversed_period:
        found.append(("910", "00136", "EndDate", "end_date", 23))
    if year is not None and start is not None and start.year != year:
        found.append(("911", "00135", "StartDate", "start_date", 24))
    if year is not None and end is not None and end.year != year:
        found.append(("911", "00136", "EndDate", "end_date", 25))
    if end is not None and end > context.processing_date:
        found.append(("912", "00136", "EndDate", "end_date", 26))
    hours = training.hours_decimal
    if hours is None or not hours.is_finite():
        return found
    if hours == ZERO:
        found.append(("920", "00137", "Hours", "hours", 27))
        return found
    if start is None or end is None or reversed_period:
        return found
    days = days_of(start, end)
    limits = context.limits
    if hours > limits.daily_max_hours * days:
        found.append(("921", "00137", "Hours", "hours", 28))
    elif hours > limits.daily_warn_hours * days:
        found.append(("922", "00137", "Hours", "hours", 29))
    return found
