"""The input layout shared by every format: one row per training, mapped to the model.

A *row* is a mapping column -> text plus where it came from: a line, or for JSON the JSON
paths of its fields (:class:`Place`). Rows are checked and normalised field by field
(``parse_row``); every problem is reported to the :class:`~fla_core.formats.ReadContext` so
that all bad rows are listed, not only the first. Identifier check digits are *not* checked
here: a wrong check digit is a business anomaly (901/004, spec 8.3) reported by the checks
with the row's line (``Training.line`` etc.; None for JSON inputs).
See ``docs/input-formats.md`` for the user-facing description.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

from fla_core.formats import ReadContext
from fla_core.identifiers import (
    has_inss_form,
    has_kbo_form,
    normalize_inss,
    normalize_kbo,
    normalize_noss,
    noss_problem,
)
from fla_core.model import (
    Action,
    Declaration,
    Employer,
    FileHeader,
    Training,
    TrainingType,
    Worker,
)

DECLARATION_FIELDS = (
    "declaration_ref", "action", "replaced_declaration_ref", "reporting_year",
    "employer_company_id", "employer_noss_nbr",
)
WORKER_FIELDS = (
    "inss", "training_ref", "provider_company_id", "title", "training_type", "start_date",
    "end_date", "hours", "during_working_time",
)
FIELDS: tuple[str, ...] = DECLARATION_FIELDS + WORKER_FIELDS
REQUIRED_COLUMNS = ("declaration_ref", "reporting_year")
# Required on every row that carries a worker (any worker field filled).
REQUIRED_TRAINING = (
    "inss", "training_ref", "title", "training_type", "start_date", "end_date", "hours",
    "during_working_time",
)

# Spec 7.3 element -> column, to locate a business anomaly in the user's input.
ELEMENT_COLUMNS = {
    "DeclarationRef": "declaration_ref", "Action": "action",
    "ReplacedDeclarationRef": "replaced_declaration_ref", "ReportingYear": "reporting_year",
    "Employer": "employer_company_id", "CompanyID": "employer_company_id",
    "NOSSRegistrationNbr": "employer_noss_nbr", "Worker": "inss", "INSS": "inss",
    "TrainingRef": "training_ref", "ProviderCompanyID": "provider_company_id", "Title": "title",
    "TrainingType": "training_type", "StartDate": "start_date", "EndDate": "end_date",
    "Hours": "hours", "DuringWorkingTime": "during_working_time",
}

_REF35 = re.compile(r"[A-Za-z0-9._/-]{1,35}")
_TRUE = {"true", "yes", "1", "ja", "oui", "y", "j", "o"}
_FALSE = {"false", "no", "0", "nee", "non", "n"}
_MAX_HOURS = Decimal("9999.99")
_CENT = Decimal("0.01")
# Compiled once: parse_row runs for every row of an export. ASCII digits only: the FI schema
# refuses others (identifiers are normalised and judged by fla_core.identifiers).
_DIGITS4 = re.compile(r"[0-9]{4}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ASCII_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ASCII_DMY_DATE = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?|[+-]?\.\d+")
_ROW_POSITION = re.compile(r"(Worker|Training)\[(\d+)\]")
_NOT_DIGIT = re.compile(r"\D")
# Exports repeat the same dates and hours on many rows: their parsing is cached (bounded).
_CACHE_SIZE = 4096
_ACTIONS = frozenset(Action.__members__)
_TRAINING_TYPES = frozenset(TrainingType.__members__)


@dataclass(frozen=True)
class Place:
    """Where the fields of a row of a JSON input are: JSON paths (JSON has no line numbers
    through the public ``json`` API). Nested inputs hold the declaration and worker fields in
    the enclosing objects."""

    row: str  # the row's object: "$[3]", or a training's "$.declarations[0].workers[1]..."
    declaration: str | None = None  # nested: the declaration's object
    worker: str | None = None  # nested: the worker's object

    def of(self, field: str) -> str:
        """The JSON path of ``field`` of this row."""
        if self.declaration is not None and field in DECLARATION_FIELDS:
            return json_child(self.declaration, field)
        if self.worker is not None and field == "inss":
            return json_child(self.worker, field)
        return json_child(self.row, field)


def json_child(parent: str, key: str | int) -> str:
    """The JSON path of ``key`` (an index, or a member name) under ``parent``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if key.isidentifier() else f"{parent}[{json.dumps(key)}]"


def field_at(place: Place | None, field: str) -> str:
    """What names ``field`` in a problem: its JSON path, or the column name for lined inputs."""
    return place.of(field) if place is not None else field


@dataclass(frozen=True)
class Row:
    """One input row: the raw text per column and where it came from."""

    line: int | None
    values: Mapping[str, str]
    declaration_line: int | None = None  # nested inputs: where the declaration itself starts
    at: Place | None = None  # JSON inputs: where instead of a line


@dataclass(frozen=True)
class ParsedRow:
    """A row after normalisation; ``worker`` is None for a declaration-only row (CANCEL)."""

    line: int | None
    declaration_ref: str
    action: str
    replaced_declaration_ref: str | None
    reporting_year: str
    employer_company_id: str | None
    employer_noss_nbr: str | None
    worker: tuple[str, Training] | None  # (inss, training)
    declaration_line: int | None = None
    at: Place | None = None


def unknown_columns(columns: Iterable[str]) -> list[str]:
    """Columns that are not part of the layout, in input order."""
    return [c for c in columns if c not in FIELDS]


def check_columns(columns: list[str], path: object, context: ReadContext,
                  line: int | None = 1) -> bool:
    """Report unknown, duplicate and missing columns; False when rows cannot be read at all."""
    known = ", ".join(FIELDS)
    for col in unknown_columns(columns):
        context.problem(path, line, col, f"unknown column {col!r}; known columns: {known}")
    seen: set[str] = set()
    for col in columns:
        if col in seen:
            context.problem(path, line, col, f"column {col!r} appears twice")
        seen.add(col)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    for col in missing:
        context.problem(path, line, col, f"required column {col!r} is missing")
    return not missing


@lru_cache(maxsize=_CACHE_SIZE)
def parse_date(text: str) -> str | None:
    """``YYYY-MM-DD`` or ``DD/MM/YYYY`` -> ``YYYY-MM-DD``; None when not a real date."""
    # Fast paths for the two-digit ASCII forms (what exports write); they give what strptime
    # gives. Other text (one-digit day, non-ASCII digits, ...) goes through strptime.
    try:
        if _ASCII_ISO_DATE.fullmatch(text):
            return date.fromisoformat(text).isoformat()
        dmy = _ASCII_DMY_DATE.fullmatch(text)
        if dmy:
            return date(int(dmy[3]), int(dmy[2]), int(dmy[1])).isoformat()
    except ValueError:
        return None  # not a real date, whichever format is tried
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            parsed = datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if fmt == "%Y-%m-%d" and not _ISO_DATE.fullmatch(text):
            continue  # strptime accepts 2025-3-3; the layout wants two digits
        return parsed.isoformat()
    return None


@lru_cache(maxsize=_CACHE_SIZE)
def parse_hours(text: str) -> tuple[str | None, str | None]:
    """Hours as written (``21``, ``3,5``, ``3.50``) -> (``"21.00"``, None) or (None, problem)."""
    raw = text.replace(",", ".")
    if not _NUMBER.fullmatch(raw):
        return None, f"hours {text!r} is not a number"
    value = Decimal(raw)
    if value < 0:
        return None, f"hours {text!r} is negative"
    cents = value.quantize(_CENT)
    if value != cents:
        return None, f"hours {text!r} has more than 2 decimals"
    if value > _MAX_HOURS:
        return None, f"hours {text!r} is more than 9999.99"
    return str(cents), None


def parse_bool(text: str) -> bool | None:
    """true/false, yes/no, 1/0, ja/nee, oui/non (case-insensitive); None otherwise."""
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    return None


def parse_row(row: Row, path: object, context: ReadContext) -> ParsedRow | None:
    """Check and normalise one row; report each problem; None when the row is unusable."""
    get = row.values.get
    v = {k: (get(k) or "").strip() for k in FIELDS}
    bad = 0

    def problem(field: str, message: str) -> None:
        nonlocal bad
        bad += 1
        context.problem(path, row.line, field_at(row.at, field), message)

    # The declaration fields repeat on every row of a declaration: judged once (cached).
    before, after, action, employer, noss = _declaration_fields(
        v["declaration_ref"], v["action"], v["replaced_declaration_ref"], v["reporting_year"],
        v["employer_company_id"], v["employer_noss_nbr"])
    for field, message in before:
        problem(field, message)
    ref = v["training_ref"]
    if ref and not _REF35.fullmatch(ref):
        problem("training_ref", f"{ref!r} is not a reference (1-35 of A-Z a-z 0-9 . _ / -)")
    for field, message in after:
        problem(field, message)
    year = v["reporting_year"]
    worker = None
    if any(v[c] for c in WORKER_FIELDS):
        worker = _parse_worker(v, problem)
    if bad:
        return None
    return ParsedRow(row.line, v["declaration_ref"], action,
                     v["replaced_declaration_ref"] or None, year, employer, noss, worker,
                     row.declaration_line, row.at)


_Problems = tuple[tuple[str, str], ...]


@lru_cache(maxsize=_CACHE_SIZE)
def _declaration_fields(declaration_ref: str, action_text: str, replaced: str, year: str,
                        employer_text: str, noss_text: str
                        ) -> tuple[_Problems, _Problems, str, str | None, str | None]:
    """Problems of a row's declaration fields (those reported before the training reference,
    those after) and the normalised action, employer and NOSS number."""
    before: list[tuple[str, str]] = []
    after: list[tuple[str, str]] = []
    for col, value in (("declaration_ref", declaration_ref), ("reporting_year", year)):
        if not value:
            before.append((col, f"{col} is empty (required)"))
    for col, value in (("declaration_ref", declaration_ref),
                       ("replaced_declaration_ref", replaced)):
        if value and not _REF35.fullmatch(value):
            before.append((col, f"{value!r} is not a reference (1-35 of A-Z a-z 0-9 . _ / -)"))
    action = action_text.upper() or Action.NEW.value
    if action not in _ACTIONS:
        after.append(("action", f"action {action_text!r} is not one of NEW, REPLACE, CANCEL"))
    if year and not _DIGITS4.fullmatch(year):
        after.append(("reporting_year", f"reporting year {year!r} is not 4 digits"))
    employer = normalize_kbo(employer_text) if employer_text else None
    if employer is not None and not has_kbo_form(employer):
        after.append(("employer_company_id",
                      f"{employer_text!r} is not an enterprise number (10 digits)"))
    noss = normalize_noss(noss_text) or None
    if noss is not None and noss_problem(noss) is not None:
        after.append(("employer_noss_nbr", f"{noss_text!r} is not a NOSS number (9 digits)"))
    return tuple(before), tuple(after), action, employer, noss


def _parse_worker(v: dict[str, str], problem: Callable[[str, str], None]
                  ) -> tuple[str, Training]:
    for col in REQUIRED_TRAINING:
        if not v[col]:
            problem(col, f"{col} is empty (required on a row with a worker)")
    inss = normalize_inss(v["inss"])
    if inss and not has_inss_form(inss):
        problem("inss", f"{v['inss']!r} is not an INSZ/NISS number (11 digits)")
    provider = normalize_kbo(v["provider_company_id"]) if v["provider_company_id"] else None
    if provider is not None and not has_kbo_form(provider):
        problem("provider_company_id",
                f"{v['provider_company_id']!r} is not an enterprise number (10 digits)")
    if len(v["title"]) > 200:
        problem("title", f"title is {len(v['title'])} characters long (at most 200)")
    ttype = v["training_type"].upper()
    if v["training_type"] and ttype not in _TRAINING_TYPES:
        problem("training_type", f"training type {v['training_type']!r} is not FORMAL or "
                "INFORMAL")
    dates = {}
    for col in ("start_date", "end_date"):
        dates[col] = parse_date(v[col]) if v[col] else None
        if v[col] and dates[col] is None:
            problem(col, f"{v[col]!r} is not a date (YYYY-MM-DD or DD/MM/YYYY)")
    hours = None
    if v["hours"]:
        hours, why = parse_hours(v["hours"])
        if why:
            problem("hours", why)
    during = parse_bool(v["during_working_time"]) if v["during_working_time"] else None
    if v["during_working_time"] and during is None:
        problem("during_working_time", f"{v['during_working_time']!r} is not a yes/no value "
                "(true/false, yes/no, 1/0, ja/nee, oui/non)")
    training = Training(
        training_ref=v["training_ref"], title=v["title"], training_type=ttype,
        start_date=dates["start_date"] or "", end_date=dates["end_date"] or "",
        hours=hours or "", during_working_time=bool(during), provider_company_id=provider)
    return inss, training


# Declaration-level fields that every row of one declaration must repeat identically.
_CONSISTENT = ("action", "replaced_declaration_ref", "reporting_year", "employer_company_id",
               "employer_noss_nbr")


def _consistent_values(row: ParsedRow) -> tuple[str | None, ...]:
    """The ``_CONSISTENT`` fields of a row, in that order."""
    return (row.action, row.replaced_declaration_ref, row.reporting_year,
            row.employer_company_id, row.employer_noss_nbr)


class DeclarationBuilder:
    """Accumulates the parsed rows of one declaration; workers are grouped by INSS."""

    def __init__(self, first: ParsedRow):
        self.first = first
        employer = (Employer(first.employer_company_id, first.employer_noss_nbr)
                    if first.employer_company_id else None)
        self.declaration = Declaration(
            declaration_ref=first.declaration_ref, action=first.action,
            reporting_year=first.reporting_year, employer=employer,
            replaced_declaration_ref=first.replaced_declaration_ref,
            line=first.declaration_line or first.line,
            place=(first.at.declaration or first.at.row) if first.at is not None else None)
        self._workers: dict[str, Worker] = {}
        self._same = _consistent_values(first)
        self._add_worker(first)

    def add(self, row: ParsedRow, path: object, context: ReadContext) -> None:
        """Add a row; a declaration field that differs from the first row is a problem."""
        if _consistent_values(row) == self._same:
            self._add_worker(row)  # the usual case: one comparison instead of five look-ups
            return
        for name in _CONSISTENT:
            mine, theirs = getattr(self.first, name), getattr(row, name)
            if mine != theirs:
                first = (f"at {self.first.at.of(name)}" if self.first.at is not None
                         else f"on line {self.first.line}")
                context.problem(path, row.line, field_at(row.at, name),
                                f"{name} {theirs or ''!r} differs from {mine or ''!r} {first} "
                                f"for declaration {row.declaration_ref!r}")
                return
        self._add_worker(row)

    def _add_worker(self, row: ParsedRow) -> None:
        if row.worker is None:
            return
        inss, training = row.worker
        # What dataclasses.replace does, without its per-call field introspection.
        place = row.at.row if row.at is not None else None
        training = (Training(training.training_ref, training.title, training.training_type,
                             training.start_date, training.end_date, training.hours,
                             training.during_working_time, training.provider_company_id,
                             row.line, place)
                    if type(training) is Training
                    else replace(training, line=row.line, place=place))
        worker = self._workers.get(inss)
        if worker is None:
            worker = Worker(inss=inss, line=row.line,
                            place=(row.at.worker or row.at.row) if row.at is not None else None)
            self._workers[inss] = worker
            self.declaration.workers.append(worker)
        worker.trainings.append(training)


def refs_adjacent(refs: Iterable[str]) -> bool:
    """True when equal declaration references come in one run (the rows can be streamed).

    ``refs`` is the ``declaration_ref`` column in row order; empty values are skipped.
    """
    done: set[str] = set()
    current = None
    for ref in refs:
        if not ref or ref == current:
            continue
        if ref in done:
            return False
        if current is not None:
            done.add(current)
        current = ref
    return True


def group_consecutive(rows: Iterable[ParsedRow], path: object,
                      context: ReadContext) -> Iterator[Declaration]:
    """Yield each declaration as soon as its rows end; rows of one declaration are adjacent."""
    current: DeclarationBuilder | None = None
    for row in rows:
        if current is not None and row.declaration_ref == current.first.declaration_ref:
            current.add(row, path, context)
            continue
        if current is not None:
            yield current.declaration
        current = DeclarationBuilder(row)
    if current is not None:
        yield current.declaration


def group_all(rows: Iterable[ParsedRow], path: object,
              context: ReadContext) -> Iterator[Declaration]:
    """Group rows in memory, declarations in order of first appearance (any row order)."""
    builders: dict[str, DeclarationBuilder] = {}
    for row in rows:
        builder = builders.get(row.declaration_ref)
        if builder is None:
            builders[row.declaration_ref] = DeclarationBuilder(row)
        else:
            builder.add(row, path, context)
    for builder in builders.values():
        yield builder.declaration


def parsed_rows(rows: Iterable[Row], path: object, context: ReadContext) -> Iterator[ParsedRow]:
    """Parse rows, reporting problems; unusable rows are left out."""
    for row in rows:
        parsed = parse_row(row, path, context)
        if parsed is not None:
            yield parsed


def make_header(context: ReadContext, file_reference: str | None = None) -> FileHeader:
    """The FI header from who sends (context) and the reference (context wins over the file)."""
    creation = context.creation or datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    reference = context.file_reference or file_reference
    if not reference:
        stamp = _NOT_DIGIT.sub("", creation)[:14]
        reference = f"FLA-{context.sender.sender_nbr}-{stamp}"
    return FileHeader(
        sender_nbr=context.sender.sender_nbr, quality=context.sender.quality.value,
        company_id=context.sender.company_id, environment=context.environment,
        creation=creation, file_reference=reference)


def locate(anomaly_path: str | None, declaration: Declaration) -> tuple[int | None, str | None]:
    """Input line and column of a business anomaly's spec 8.2 path within ``declaration``; for
    a JSON input no line, and the JSON path of the value instead of the column."""
    if not anomaly_path:
        return declaration.line, declaration.place
    worker = training = None
    for name, index in _ROW_POSITION.findall(anomaly_path):
        if name == "Worker":
            worker = int(index)
        else:
            training = int(index)
    line, place = declaration.line, declaration.place
    column = ELEMENT_COLUMNS.get(anomaly_path.rsplit("/", 1)[-1].split("[")[0])
    holder = declaration.place  # the JSON object that holds the column's value
    if worker is not None and 0 < worker <= len(declaration.workers):
        w = declaration.workers[worker - 1]
        line, place = w.line or line, w.place or place
        if column == "inss":
            holder = w.place
        if training is not None and 0 < training <= len(w.trainings):
            t = w.trainings[training - 1]
            line, place = t.line or line, t.place or place
            if column not in DECLARATION_FIELDS and column != "inss":
                holder = t.place
    if declaration.place is None:  # a lined input (CSV, XLSX)
        return line, column
    if column is None:
        return None, place
    return None, json_child(holder or place or "$", column)



def declaration_rows(declaration: Declaration) -> Iterator[tuple[str, ...]]:
    """The rows of one declaration as text in :data:`FIELDS` order, as the readers read them
    back: one per training, one row without worker columns for a declaration without workers
    (a CANCEL). What the format writers (``fla_write_export``) share."""
    employer = declaration.employer
    head = (declaration.declaration_ref, declaration.action,
            declaration.replaced_declaration_ref or "", declaration.reporting_year,
            employer.company_id if employer else "",
            (employer.noss_registration_nbr or "") if employer else "")
    if not declaration.workers:
        yield (*head, *("",) * len(WORKER_FIELDS))
        return
    for worker in declaration.workers:
        for t in worker.trainings:
            yield (*head, worker.inss, t.training_ref, t.provider_company_id or "", t.title,
                   t.training_type, t.start_date, t.end_date, t.hours,
                   "true" if t.during_working_time else "false")
