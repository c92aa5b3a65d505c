"""Mandates of spec 2.2: records, quarters ``YYYYQ``, lookups for the checks, rule M4.

A level-1 record says an employer mandated a representative for an application from a start
quarter to an optional end quarter; a level-2 record says the representative assigned that
employer's file to one of its sender numbers. :class:`MandateBook` answers the two questions
of :class:`fla_core.checks.context.MandateView`; :func:`add_mandate` refuses a record that
breaks M4 (one active representative per employer and application).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from fla_core.identifiers import RESERVED, kbo_problem, sender_problem

_QUARTER = re.compile(r"([0-9]{4})([1-4])")


class MandateError(ValueError):
    """A mandate record is malformed (bad quarter, missing field, end before start)."""


class MandateConflict(MandateError):
    """Rule M4: a second level-1 mandate overlaps an existing one for the same employer."""


# --- quarters -------------------------------------------------------------------------------------

def quarter_of(day: date) -> str:
    """The quarter ``YYYYQ`` that contains ``day``."""
    return f"{day.year:04d}{(day.month - 1) // 3 + 1}"


def is_quarter(text: str) -> bool:
    """True when ``text`` is ``YYYYQ`` with Q in 1..4."""
    return _QUARTER.fullmatch(text) is not None


def parse_quarter(text: str) -> tuple[int, int]:
    """``"20241"`` -> ``(2024, 1)``; MandateError with a clear message otherwise."""
    match = _QUARTER.fullmatch(text)
    if match is None:
        raise MandateError(f"invalid quarter {text!r}: expected YYYYQ with Q 1-4, "
                           f"e.g. 20241 for the first quarter of 2024")
    return int(match.group(1)), int(match.group(2))


# --- records --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MandateRecord:
    """One mandate: level 1 (``start``/``end`` quarters) or level 2 (``sender`` number)."""

    level: Literal[1, 2]
    employer: str
    representative: str
    application: str = "FLAC"
    start: str | None = None
    end: str | None = None
    sender: str | None = None

    def __post_init__(self) -> None:
        for name in ("employer", "representative"):
            value = getattr(self, name)
            problem = kbo_problem(value)
            if problem is not None:
                what = "wrong check digits" if problem == "004" else "not 10 digits"
                raise MandateError(f"{name} must be a valid 10-digit enterprise number, got "
                                   f"{value!r} ({what})")
        if not self.application:
            raise MandateError("application code missing")
        if self.level == 1:
            self._check_level1()
        elif self.level == 2:
            problem = sender_problem(self.sender) if self.sender is not None else "901"
            if problem is not None:
                why = ("000000 and 999999 are reserved" if problem == RESERVED
                       else "digits 0-9 only")
                raise MandateError(f"a level-2 mandate needs the 6-digit sender number of a "
                                   f"channel ({why}), got {self.sender!r}")
            if self.start is not None or self.end is not None:
                raise MandateError("a level-2 mandate has no start or end quarter")
        else:
            raise MandateError(f"mandate level must be 1 or 2, got {self.level!r}")

    def _check_level1(self) -> None:
        if self.start is None:
            raise MandateError("a level-1 mandate needs a start quarter (YYYYQ)")
        start = parse_quarter(self.start)
        if self.end is not None and parse_quarter(self.end) < start:
            raise MandateError(f"end quarter {self.end} is before start quarter {self.start}")
        if self.sender is not None:
            raise MandateError("a level-1 mandate has no sender number (that is level 2)")

    def active_on(self, day: date) -> bool:
        """Level 1: start quarter <= quarter of ``day`` <= end quarter (no end = open)."""
        if self.level != 1 or self.start is None:
            return False
        quarter = parse_quarter(quarter_of(day))
        if quarter < parse_quarter(self.start):
            return False
        return self.end is None or quarter <= parse_quarter(self.end)

    def overlaps(self, other: MandateRecord) -> bool:
        """Two level-1 periods share at least one quarter."""
        if self.level != 1 or other.level != 1 or self.start is None or other.start is None:
            return False
        far = (10_000, 4)
        a0, a1 = parse_quarter(self.start), parse_quarter(self.end) if self.end else far
        b0, b1 = parse_quarter(other.start), parse_quarter(other.end) if other.end else far
        return a0 <= b1 and b0 <= a1

    def describe(self) -> str:
        """One line for messages and listings."""
        head = f"{self.employer} -> {self.representative} {self.application}"
        if self.level == 1:
            return f"level 1 {head} from {self.start} to {self.end or 'open end'}"
        return f"level 2 {head} sender {self.sender}"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> MandateRecord:
        """Build from a ``[[mandate]]`` table of ``simulator.toml`` (keys as the fields)."""
        unknown = set(data) - {"level", "employer", "representative", "application", "start",
                               "end", "sender"}
        if unknown:
            raise MandateError(f"unknown mandate key(s): {', '.join(sorted(unknown))}")
        try:
            level = int(data["level"])
            employer, representative = str(data["employer"]), str(data["representative"])
        except KeyError as exc:
            raise MandateError(f"mandate key {exc.args[0]!r} missing") from None
        except (TypeError, ValueError):
            raise MandateError(f"mandate level must be 1 or 2, got {data['level']!r}") from None

        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(level=level, employer=employer, representative=representative,  # type: ignore[arg-type]
                   application=str(data.get("application", "FLAC")), start=text("start"),
                   end=text("end"), sender=text("sender"))

    def to_mapping(self) -> dict[str, Any]:
        """The ``[[mandate]]`` table of this record (None fields left out)."""
        keys = ("level", "employer", "representative", "application", "start", "end", "sender")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def add_mandate(book_records: Iterable[MandateRecord],
                record: MandateRecord) -> list[MandateRecord]:
    """A new list with ``record`` added; MandateConflict on rule M4 (nothing changed)."""
    records = list(book_records)
    if record.level == 1:
        for existing in records:
            if (existing.level == 1 and existing.employer == record.employer
                    and existing.application == record.application
                    and existing.overlaps(record)):
                raise MandateConflict(
                    f"employer {record.employer} already has an {record.application} "
                    f"representative for an overlapping period ({existing.describe()}); "
                    f"an employer may have only one active representative at a time "
                    f"(spec 2.2 M4): end the existing mandate first")
    elif record in records:
        return records  # the same level-2 assignment twice changes nothing
    records.append(record)
    return records


class MandateBook:
    """Mandate records as the checks see them (implements ``MandateView``)."""

    def __init__(self, records: Iterable[MandateRecord] = ()):
        self.records: tuple[MandateRecord, ...] = tuple(records)

    def has_level1(self, employer: str, representative: str, application: str,
                   on: date) -> bool:
        """An active level-1 mandate employer -> representative on the quarter of ``on``."""
        return any(r.level == 1 and r.employer == employer
                   and r.representative == representative and r.application == application
                   and r.active_on(on) for r in self.records)

    def has_level2(self, employer: str, representative: str, application: str,
                   sender: str) -> bool:
        """A level-2 record for this employer, representative, application and sender number."""
        return any(r.level == 2 and r.employer == employer
                   and r.representative == representative and r.application == application
                   and r.sender == sender for r in self.records)
