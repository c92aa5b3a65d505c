"""Sample exports in the CSV layout of ``docs/input-formats.md``, for the demo and benchmarks.

Rows are written one at a time, so an export of a million trainings never sits in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

from fla_core.model import Declaration

COLUMNS = (
    "declaration_ref", "action", "replaced_declaration_ref", "reporting_year",
    "employer_company_id", "employer_noss_nbr", "inss", "training_ref", "provider_company_id",
    "title", "training_type", "start_date", "end_date", "hours", "during_working_time",
)


def declaration_rows(declaration: Declaration) -> Iterator[list[str]]:
    """The CSV rows of one declaration: one per training, one bare row for a CANCEL."""
    employer = declaration.employer
    head = [declaration.declaration_ref, declaration.action,
            declaration.replaced_declaration_ref or "", declaration.reporting_year,
            employer.company_id if employer else "",
            (employer.noss_registration_nbr or "") if employer else ""]
    if not declaration.workers:
        yield [*head, *([""] * 9)]
        return
    for worker in declaration.workers:
        for t in worker.trainings:
            yield [*head, worker.inss, t.training_ref, t.provider_company_id or "", t.title,
                   t.training_type, t.start_date, t.end_date, t.hours,
                   "true" if t.during_working_time else "false"]


def write_csv(declarations: Iterable[Declaration], path: Path) -> int:
    """Write an export; returns the number of training rows."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for declaration in declarations:
            for row in declaration_rows(declaration):
                writer.writerow(row)
                count += 1
    return count


def demo_year(today: date) -> int:
    """A reporting year whose trainings can have ended by ``today`` (this year after mid-Jan)."""
    return today.year if today.timetuple().tm_yday > 14 else today.year - 1


def demo_declarations(today: date, *, employer: str, seed: int = 2026,
                      declarations: int = 2) -> list[Declaration]:
    """Valid declarations (spec 8) for ``employer``, reproducible from ``seed``."""
    from faker import Faker

    from fla_core.faker_provider import register

    fake = Faker("nl_BE")
    fake.seed_instance(seed)
    provider = register(fake, today=today)
    year = demo_year(today)
    return [provider.fla_declaration(year, company_id=employer, workers=3, today=today,
                                     ref=f"D-{employer}-{year}-{n:02d}")
            for n in range(1, declarations + 1)]
