"""Test data for suppliers: the service behind ``fla fake``.

``N`` training records (export rows) made by the Faker provider (:mod:`fla_core.faker_provider`),
grouped as an export groups them: declarations (one employer x one reporting year, the year of
``today``) of workers with one to three trainings each. Valid by default: ``fla build`` then
``fla check`` (same channel options, same ``--today``) find no anomaly. With ``invalid`` a
fraction of the records carries one seeded defect each (:data:`DEFECTS`), each caught by one
business rule of spec 8.3 with one known error id, so the expected ``fla check`` findings are
known exactly (:attr:`FakeResult.expected`).

The same :class:`FakeSpec` gives the same declarations: everything is drawn from generators
seeded with ``seed``; defects come from a second generator, so a run with ``invalid`` is the
valid run of the same seed with the defects applied. Declarations are made one at a time and
written through the format plugins (``fla_write_export``), so memory does not grow with ``N``.
Prints nothing, knows no command line.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Literal

from fla_core.faker_provider import FIRST_FLA_YEAR, BelgianProvider, register
from fla_core.files import path_then_rename
from fla_core.formats import InputFormat
from fla_core.model import Declaration, FileContent, FileHeader, Quality, Sender, Training
from fla_core.plugins import FlaPlugins

Level = Literal["declaration", "worker", "training"]


@dataclass(frozen=True)
class Defect:
    """A defect ``fla fake --invalid`` can seed, and the one anomaly it causes (spec 8.3)."""

    kind: str
    error_id: str
    level: Level  # what it changes: the record's declaration, worker, or training
    description: str


# Each defect raises exactly one anomaly, whatever else the declaration holds: rules it could
# also trip are kept clear (dates stay in the year and by today, hours stay at most 8 a day)
# or guarded by spec 8.3 itself (910 and 920 guard 921; 901/004 guard the employer rules).
DEFECTS: tuple[Defect, ...] = (
    Defect("employer-check-digits", "00112-004", "declaration",
           "employer enterprise number with wrong check digits"),
    Defect("employer-structure", "00112-901", "declaration",
           "employer enterprise number starting with 2-9"),
    Defect("employer-missing", "00111-952", "declaration", "no employer"),
    Defect("replaces-unknown", "00103-944", "declaration",
           "REPLACE of a declaration the channel does not know"),
    Defect("new-replaces", "00103-941", "declaration",
           "NEW declaration naming a replaced declaration"),
    Defect("inss-check-digits", "00122-004", "worker", "INSZ with wrong check digits"),
    Defect("inss-structure", "00122-901", "worker", "INSZ with an impossible month, day or "
           "counter"),
    Defect("provider-check-digits", "00132-004", "training",
           "training provider enterprise number with wrong check digits"),
    Defect("provider-structure", "00132-901", "training",
           "training provider enterprise number starting with 2-9"),
    Defect("end-before-start", "00136-910", "training", "training that ends before it starts"),
    Defect("start-outside-year", "00135-911", "training",
           "training that starts in the year before the reporting year"),
    Defect("not-finished", "00136-912", "training", "training that ends after today"),
    Defect("zero-hours", "00137-920", "training", "training of 0.00 hours"),
    Defect("too-many-hours", "00137-921", "training", "more than 10 hours a day"),
    Defect("duplicate-training", "00131-930", "training",
           "training reference used twice for one worker"),
)
DEFECT_BY_KIND = {d.kind: d for d in DEFECTS}


@dataclass(frozen=True)
class Seeded:
    """How many records carry one kind of defect."""

    defect: Defect
    records: int

    def as_dict(self) -> dict[str, str | int]:
        """JSON-ready fields (``fla fake --json``)."""
        return {"kind": self.defect.kind, "error_id": self.defect.error_id,
                "records": self.records, "description": self.defect.description}


@dataclass(frozen=True)
class FakeSpec:
    """What to generate: ``records`` rows for ``sender``'s channel, ``invalid`` of them bad."""

    records: int
    sender: Sender
    today: date
    seed: int
    invalid: float = 0.0

    def __post_init__(self) -> None:
        if self.records < 1:
            raise ValueError(f"--records {self.records}: give at least 1 record")
        if not 0.0 <= self.invalid <= 1.0:
            raise ValueError(f"--invalid {self.invalid}: give a rate from 0 to 1")
        if self.today.year < FIRST_FLA_YEAR:
            raise ValueError(f"--today {self.today}: the FLA starts in {FIRST_FLA_YEAR} "
                             "(rule 913); give a later date")

    @property
    def defects(self) -> int:
        """How many records carry a defect: ``invalid`` x ``records``, rounded half up."""
        return int(self.invalid * self.records + 0.5)


@dataclass
class FakeResult:
    """What :func:`write_fake` wrote, and what ``fla check`` must find in it."""

    path: Path | None
    format: str
    seed: int
    records: int = 0
    declarations: int = 0
    workers: int = 0
    defects: Counter[str] = field(default_factory=Counter)  # kind -> records

    @property
    def seeded(self) -> list[Seeded]:
        """The defects seeded, by error id."""
        return sorted((Seeded(DEFECT_BY_KIND[kind], count) for kind, count
                       in self.defects.items()), key=lambda s: s.defect.error_id)

    @property
    def expected(self) -> dict[str, int]:
        """Error id -> how many anomalies ``fla check`` reports (one per defect)."""
        found: Counter[str] = Counter()
        for kind, count in self.defects.items():
            found[DEFECT_BY_KIND[kind].error_id] += count
        return dict(sorted(found.items()))


def new_seed() -> int:
    """A seed for a run given none (reported, so that the run can be repeated)."""
    return secrets.randbelow(1 << 32)


def writer_format(fmt: str | None, out: Path | None, plugins: FlaPlugins) -> str:
    """The format to write: ``fmt``, else the one of ``out``'s suffix, else csv; it must be a
    format some plugin writes, and ``out``'s suffix must not be another format's."""
    formats = [f for f in plugins.input_formats() if f.writes]
    names = ", ".join(f"{f.name} ({' '.join(f.suffixes)})" for f in
                      sorted(formats, key=lambda f: f.name)) or "none"
    suffix = out.suffix.lower() if out is not None else ""
    by_suffix = next((f for f in formats if suffix in f.suffixes), None)
    chosen: InputFormat | None
    if fmt is None:
        if out is None:
            fmt = "csv"
        elif by_suffix is None:
            raise ValueError(f"--out {out}: cannot tell the format from {suffix or 'no suffix'!r};"
                             f" give --format, one of: {names}")
        else:
            return by_suffix.name
    chosen = next((f for f in formats if f.name == fmt.lower()), None)
    if chosen is None:
        raise ValueError(f"--format {fmt}: no installed plugin writes it; formats written: "
                         f"{names}")
    if out is not None and by_suffix is not None and by_suffix is not chosen:
        raise ValueError(f"--out {out}: {suffix} is the suffix of format {by_suffix.name}, not "
                         f"{chosen.name}; name the file {out.with_suffix(chosen.suffixes[0])}")
    return chosen.name


def write_fake(spec: FakeSpec, *, fmt: str, out: Path | IO[bytes], plugins: FlaPlugins,
               tick: Callable[[int], None] | None = None) -> FakeResult:
    """Generate ``spec`` and write it as ``fmt`` to a file (whole or not at all: through a
    hidden temporary name) or to a binary stream; ``tick(rows)`` after each declaration."""
    generator = FakeData(spec)
    result = FakeResult(path=out if isinstance(out, Path) else None, format=fmt, seed=spec.seed)

    def counted() -> Iterator[Declaration]:
        for declaration in generator.declarations():
            rows = sum(len(w.trainings) for w in declaration.workers)
            result.declarations += 1
            result.workers += len(declaration.workers)
            result.records += rows
            if tick is not None:
                tick(rows)
            yield declaration

    content = FileContent(generator.header(), counted())
    if isinstance(out, Path):
        with path_then_rename(out) as temp:  # not durable: a test export, not a record
            plugins.write_export(content, fmt, temp)
    else:
        with tempfile.TemporaryDirectory(prefix="fla-fake-") as folder:
            temp = Path(folder) / f"export.{fmt}"
            plugins.write_export(content, fmt, temp)
            _copy(temp, out)
    result.defects = generator.defects
    return result


def _copy(path: Path, out: IO[bytes]) -> None:
    with path.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
    out.flush()


class FakeData:
    """The declarations of one :class:`FakeSpec`, made lazily, one declaration at a time."""

    def __init__(self, spec: FakeSpec):
        self.spec = spec
        self.year = spec.today.year
        self.data = self._provider(spec.seed)
        # A generator of its own for the defects: the valid records are the same with or
        # without --invalid, and which records get a defect does not shift the others.
        self.bad = self._provider(f"fla-fake-defects:{spec.seed}")
        self.random = self.bad.generator.random
        self.defects: Counter[str] = Counter()
        self._left_records = spec.records  # to generate
        self._unvisited = spec.records  # to decide on, for the defects
        self._left_defects = spec.defects
        quality = spec.sender.quality
        self.provider_id = (spec.sender.company_id if quality is Quality.TRAINING_PROVIDER
                            else None)
        self.employer_id = spec.sender.company_id if quality is Quality.EMPLOYER else None
        # Per-run: declaration references differ between seeds even for one employer, so
        # a second fake export is new to a channel's registry (rule 945).
        self.tag = self.data.hexify("^^^^", upper=True)

    def _provider(self, seed: int | str) -> BelgianProvider:
        from faker import Faker

        fake = Faker("nl_BE")
        fake.seed_instance(seed)
        return register(fake, today=self.spec.today)

    def header(self) -> FileHeader:
        """The file header (JSON keeps its reference; XLSX its creation time)."""
        sender = self.spec.sender
        return FileHeader(sender_nbr=sender.sender_nbr, quality=sender.quality.value,
                          company_id=sender.company_id, environment="T",
                          creation=f"{self.spec.today.isoformat()}T09:00:00",
                          file_reference=f"FAKE-{sender.sender_nbr}-{self.tag}"
                                         f"{self.spec.seed % 100000:05d}")

    def declarations(self) -> Iterator[Declaration]:
        """Declarations until ``records`` rows are made, the defects seeded as they go."""
        number = 0
        while self._left_records > 0:
            number += 1
            declaration = self._declaration(number)
            self._trim(declaration)
            self._seed_defects(declaration)
            self._left_records -= sum(len(w.trainings) for w in declaration.workers)
            yield declaration

    def _declaration(self, number: int) -> Declaration:
        data = self.data
        # Mostly small employers, some medium, a few large (workers per declaration).
        band = data.random_int(1, 10)
        workers = (data.random_int(1, 4) if band <= 6 else data.random_int(5, 20) if band <= 9
                   else data.random_int(21, 60))
        employer = self.employer_id or (None if self.provider_id else data.kbo())
        owner = employer or self.spec.sender.company_id
        return data.fla_declaration(
            self.year, company_id=employer, workers=workers, quality=self.spec.sender.quality,
            provider_company_id=self.provider_id, today=self.spec.today,
            ref=f"D-{owner}-{self.year}-{self.tag}{number:06d}")

    def _trim(self, declaration: Declaration) -> None:
        """Drop the trainings past the records still to make (the last declaration)."""
        left = self._left_records
        kept = []
        for worker in declaration.workers:
            if left <= 0:
                break
            del worker.trainings[left:]
            left -= len(worker.trainings)
            kept.append(worker)
        declaration.workers[:] = kept

    # --- defects -------------------------------------------------------------------------------

    def _picked(self) -> bool:
        """Selection sampling (Knuth's algorithm S): exactly ``spec.defects`` records of all,
        each equally likely, decided record by record without knowing the ones to come."""
        picked = (self._left_defects > 0
                  and self.random.random() * self._unvisited < self._left_defects)
        self._unvisited -= 1
        if picked:
            self._left_defects -= 1
        return picked

    def _seed_defects(self, declaration: Declaration) -> None:
        inss = {w.inss for w in declaration.workers}
        for w, worker in enumerate(declaration.workers):
            for t, training in enumerate(worker.trainings):
                if self._picked():
                    defect = self.bad.random_element(self._possible(declaration, w, t))
                    self._apply(defect, declaration, w, t, training, inss)
                    self.defects[defect.kind] += 1

    def _possible(self, declaration: Declaration, w: int, t: int) -> list[Defect]:
        """The defects this record can carry and cause exactly their own anomaly."""
        year_days = (self.spec.today - date(self.year, 1, 1)).days + 1
        with_employer = declaration.employer is not None
        provider = self.provider_id is not None
        allowed = {
            "employer-check-digits": with_employer, "employer-structure": with_employer,
            "employer-missing": with_employer and not provider,
            "inss-check-digits": t == 0, "inss-structure": t == 0,
            # a training provider's own number must be on every training (rule 951)
            "provider-check-digits": not provider, "provider-structure": not provider,
            "end-before-start": year_days >= 2,
            "not-finished": self.spec.today < date(self.year, 12, 31),
            "duplicate-training": t > 0,
        }
        first = w == 0 and t == 0
        return [d for d in DEFECTS if allowed.get(d.kind, True)
                and (d.level != "declaration" or first)]

    def _apply(self, defect: Defect, declaration: Declaration, w: int, t: int,
               training: Training, inss: set[str]) -> None:
        bad = self.bad
        worker = declaration.workers[w]
        kind = defect.kind
        if kind in ("employer-check-digits", "employer-structure"):
            assert declaration.employer is not None
            declaration.employer.company_id = bad.invalid_kbo(
                "check" if kind == "employer-check-digits" else "structure")
        elif kind == "employer-missing":
            declaration.employer = None
        elif kind == "replaces-unknown":
            # a previous year's reference: never one of this file, never active anywhere
            declaration.action = "REPLACE"
            declaration.replaced_declaration_ref = (
                f"D-{self.year - 1}-{bad.hexify('^^^^^^^^^^', upper=True)}")
        elif kind == "new-replaces":
            declaration.replaced_declaration_ref = (
                f"D-{self.year - 1}-{bad.hexify('^^^^^^^^^^', upper=True)}")
        elif kind in ("inss-check-digits", "inss-structure"):
            # a number another worker of the declaration has would merge the two (rule 930)
            number = worker.inss
            while number in inss:
                number = bad.invalid_inss("check" if kind == "inss-check-digits"
                                          else "structure")
            inss.add(number)
            worker.inss = number
        elif kind in ("provider-check-digits", "provider-structure"):
            training.provider_company_id = bad.invalid_kbo(
                "check" if kind == "provider-check-digits" else "structure")
        else:
            self._apply_to_training(kind, worker.trainings, t)

    def _apply_to_training(self, kind: str, trainings: list[Training], t: int) -> None:
        bad, training, today = self.bad, trainings[t], self.spec.today
        start, end = date.fromisoformat(training.start_date), date.fromisoformat(
            training.end_date)
        if kind == "end-before-start":
            first = date(self.year, 1, 1)
            end = first + timedelta(days=bad.random_int(0, (today - first).days - 1))
            start = end + timedelta(days=bad.random_int(1, (today - end).days))
        elif kind == "start-outside-year":
            start = date(self.year - 1, 12, bad.random_int(20, 31))
        elif kind == "not-finished":
            end = today + timedelta(days=bad.random_int(
                1, (date(self.year, 12, 31) - today).days))
        elif kind == "zero-hours":
            training.hours = "0.00"
        elif kind == "too-many-hours":
            days = (end - start).days + 1
            training.hours = f"{Decimal(10 * days) + Decimal(bad.random_int(1, 40)) / 4:.2f}"
        elif kind == "duplicate-training":
            training.training_ref = trainings[t - 1].training_ref
        else:
            raise AssertionError(f"unknown defect {kind}")
        training.start_date, training.end_date = start.isoformat(), end.isoformat()
