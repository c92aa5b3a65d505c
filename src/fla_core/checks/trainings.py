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
from fla_core.model import Declaration, Quality, Training

ZERO = Decimal("0")
# M5 of spec 2.2 (mirrors QualityInfo.own_trainings_only of the built-in qualities).
OWN_TRAININGS_ONLY = frozenset({Quality.TRAINING_PROVIDER})


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
    for w, worker in enumerate(declaration.workers, start=1):
        seen: set[str] = set()
        for t, training in enumerate(worker.trainings, start=1):
            where = _Where(position, w, t, context)
            if training.training_ref in seen:
                found.append(where.anomaly("930", "00131", "TrainingRef",
                                           training.training_ref, 19))
            seen.add(training.training_ref)
            found += _provider(training, where)
            found += _dates_and_hours(training, year, where)
    return found


def days_of(start: date, end: date) -> int:
    """Calendar days of a training, both ends included (spec 8.2)."""
    return (end - start).days + 1


def _provider(training: Training, where: _Where) -> list[Anomaly]:
    provider = training.provider_company_id
    found: list[Anomaly] = []
    if provider is not None:
        problem = kbo_problem(provider)
        if problem is not None:
            found.append(where.anomaly(problem, "00132", "ProviderCompanyID", provider,
                                       20 if problem == "901" else 21))
    sender = where.context.sender
    if sender.quality in OWN_TRAININGS_ONLY and provider != sender.company_id:
        found.append(where.anomaly("951", "00132", "ProviderCompanyID", provider, 22))
    return found


def _dates_and_hours(training: Training, year: int | None, where: _Where) -> list[Anomaly]:
    start = parse_date(training.start_date)
    end = parse_date(training.end_date)
    found: list[Anomaly] = []
    reversed_period = start is not None and end is not None and end < start
    if reversed_period:
        found.append(where.anomaly("910", "00136", "EndDate", training.end_date, 23))
    if year is not None and start is not None and start.year != year:
        found.append(where.anomaly("911", "00135", "StartDate", training.start_date, 24))
    if year is not None and end is not None and end.year != year:
        found.append(where.anomaly("911", "00136", "EndDate", training.end_date, 25))
    if end is not None and end > where.context.processing_date:
        found.append(where.anomaly("912", "00136", "EndDate", training.end_date, 26))
    hours = training.hours_decimal
    if hours is None or not hours.is_finite():
        return found
    if hours == ZERO:
        found.append(where.anomaly("920", "00137", "Hours", training.hours, 27))
        return found
    if start is None or end is None or reversed_period:
        return found
    days = days_of(start, end)
    limits = where.context.limits
    if hours > limits.daily_max_hours * days:
        found.append(where.anomaly("921", "00137", "Hours", training.hours, 28))
    elif hours > limits.daily_warn_hours * days:
        found.append(where.anomaly("922", "00137", "Hours", training.hours, 29))
    return found
