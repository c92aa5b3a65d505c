"""A Faker provider for Belgian identifiers and FLA declarations (spec 7, 8, 10).

Faker's own ``nl_BE`` provider has valid INSZ and VAT numbers but no birth-date, sex or BIS
arguments, ``fr_BE`` silently returns US numbers and ``de_BE`` does not exist. This provider is
locale-independent: ``register(Faker("fr_BE"))`` (or any locale, or a multi-locale Faker) adds
the methods below, all built on :mod:`fla_core.identifiers`, so what they generate is valid by the
same rules the checks apply. Generation is reproducible with ``Faker.seed``.

Dates: methods that must stay in the past (trainings may not end after the processing date,
rule 912) take ``today``; without it they use the provider's ``today`` (set by ``register``),
falling back to the machine date -- this module is a test-data edge, like the CLI.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from faker.providers import BaseProvider

from fla_core import identifiers as ids
from fla_core.model import (
    Action,
    Declaration,
    Employer,
    FileContent,
    FileHeader,
    Quality,
    Training,
    TrainingType,
    Worker,
)

FIRST_FLA_YEAR = 2024  # rule 913 (modelled): reporting years before 2024 are out of range
MAX_HOURS_PER_DAY = 8  # rule 922 warns above 8.00 hours a day: stay at or below it

_TITLES = (
    "Forklift safety refresher", "First aid at work", "Excel for planners", "Dutch for beginners",
    "Français professionnel", "Deutsch im Beruf", "Leadership basics", "Fire warden training",
    "GDPR awareness", "Customer conversations", "Shadowing a senior planner", "Welding level 2",
    "Time management", "Lean in the warehouse", "Working at height", "Cyber hygiene",
    "Project management fundamentals", "Onboarding mentoring", "Electrical safety BA4",
)

InvalidKind = Literal["check", "structure"]


class BelgianProvider(BaseProvider):
    """Belgian INSZ/BIS/KBO numbers and FLA model objects valid per spec 8 by default."""

    today: date | None = None

    # ---- identifiers ------------------------------------------------------------------------

    def _birth_date(self) -> date:
        start, end = date(1950, 1, 1), date(2008, 12, 31)
        return start + timedelta(days=self.random_int(0, (end - start).days))

    def _counter(self, sex: str | None) -> int:
        if sex is None:
            return self.random_int(1, 998)
        if sex not in ("M", "F"):
            raise ValueError(f"sex must be 'M', 'F' or None, got {sex!r}")
        # Odd counters are men, even counters women (spec 10.1).
        return self.random_int(0, 498) * 2 + (1 if sex == "M" else 2)

    def inss(self, birth_date: date | None = None, sex: str | None = None,
             bis: bool = False) -> str:
        """A valid INSZ (or BIS number with ``bis=True``); rule 2000 for births from 2000 on."""
        if bis:
            return self.inss_bis(birth_date, sex)
        return ids.make_inss(birth_date or self._birth_date(), self._counter(sex))

    def inss_bis(self, birth_date: date | None = None, sex: str | None = None,
                 sex_known: bool = True) -> str:
        """A valid BIS number: month + 40 (sex known) or month + 20 (``sex_known=False``)."""
        kind: Literal["sex-known", "sex-unknown"] = "sex-known" if sex_known else "sex-unknown"
        return ids.make_inss(birth_date or self._birth_date(), self._counter(sex), bis=kind)

    def invalid_inss(self, kind: InvalidKind = "check") -> str:
        """An 11-digit INSZ that fails with ``004`` (``kind="check"``) or ``901`` (structure)."""
        if kind == "check":
            valid = self.inss()
            good = {ids.inss_check_digits(valid[:9]),
                    ids.inss_check_digits(valid[:9], born_2000=True)}
            # Any value outside both rules' results: 00 and 98/99 are never valid, others may be.
            wrong = self.random_element([f"{cc:02d}" for cc in range(100)
                                         if f"{cc:02d}" not in good])
            return valid[:9] + wrong
        if kind == "structure":
            yy = self.random_int(0, 99)
            defect = self.random_element(("month", "day", "counter"))
            month = self.random_element((13, 14, 19, 33, 39, 53, 99)) if defect == "month" \
                else self.random_int(1, 12)
            day = self.random_int(32, 99) if defect == "day" else self.random_int(1, 28)
            counter = self.random_element((0, 999)) if defect == "counter" \
                else self.random_int(1, 998)
            body = f"{yy:02d}{month:02d}{day:02d}{counter:03d}"
            # Check digits that rule 1900 accepts: only the structure rule can catch it.
            return body + ids.inss_check_digits(body)
        raise ValueError(f"kind must be 'check' or 'structure', got {kind!r}")

    def kbo(self, first_digit: int | None = None) -> str:
        """A valid 10-digit enterprise number (first digit 0 unless ``first_digit=1``)."""
        first = 0 if first_digit is None else first_digit
        if first not in (0, 1):
            raise ValueError(f"an enterprise number starts with 0 or 1, got {first_digit}")
        # Real 0-series numbers start 02..09 after the 0; keep clear of 00 for realism.
        low = 2_000_000 if first == 0 else 10_000_000
        high = 9_999_999 if first == 0 else 19_999_999
        return ids.make_kbo(self.random_int(low, high))

    def invalid_kbo(self, kind: InvalidKind = "check") -> str:
        """A 10-digit enterprise number that fails with ``004`` or ``901`` (first digit 2-9)."""
        if kind == "check":
            valid = self.kbo()
            wrong = self.random_element([f"{cc:02d}" for cc in range(100)
                                         if f"{cc:02d}" != valid[8:]])
            return valid[:8] + wrong
        if kind == "structure":
            first8 = f"{self.random_int(2, 9)}{self.random_int(0, 9_999_999):07d}"
            return first8 + ids.kbo_check_digits(first8)
        raise ValueError(f"kind must be 'check' or 'structure', got {kind!r}")

    def kbo_formatted(self) -> str:
        """A valid enterprise number in its written form ``0123.456.749``."""
        return ids.format_kbo(self.kbo())

    def inss_formatted(self, **kwargs: Any) -> str:
        """A valid INSZ in its written form ``93.05.18-223.61``."""
        return ids.format_inss(self.inss(**kwargs))

    def noss_registration_nbr(self) -> str:
        """A 9-digit NOSS registration number (format only: no public check rule)."""
        return self.numerify("0########")

    def sender_nbr(self) -> str:
        """A 6-digit channel sender number."""
        return f"{self.random_int(100_000, 999_998):06d}"

    # ---- FLA model --------------------------------------------------------------------------

    def _today(self, today: date | None) -> date:
        return today or self.today or date.today()

    def fla_reporting_year(self, today: date | None = None) -> int:
        """The year of ``today``: accepted by rule 913 and, unlike a past year, no warning 960."""
        return max(FIRST_FLA_YEAR, self._today(today).year)

    def fla_training(self, year: int | None = None, *, ref: str | None = None,
                     provider_company_id: str | None = None, with_provider: bool | None = None,
                     today: date | None = None) -> Training:
        """A training inside ``year``, ended by ``today``, at most 8 hours a day (no anomaly)."""
        day_limit = self._today(today)
        year = year or self.fla_reporting_year(day_limit)
        first, last = date(year, 1, 1), min(date(year, 12, 31), day_limit)
        if last < first:
            raise ValueError(f"no training can have ended in {year} by {day_limit}")
        start = first + timedelta(days=self.random_int(0, (last - first).days))
        days = self.random_int(1, min(5, (last - start).days + 1))
        end = start + timedelta(days=days - 1)
        quarters = self.random_int(1, MAX_HOURS_PER_DAY * 4 * days)
        hours = Decimal(quarters) / 4
        if with_provider is None:
            with_provider = provider_company_id is not None or self.random_int(0, 1) == 1
        provider = (provider_company_id or self.kbo()) if with_provider else None
        return Training(
            training_ref=ref or f"TR-{year}-{self.random_int(1, 999_999):06d}",
            title=self.random_element(_TITLES),
            training_type=self.random_element(tuple(TrainingType)).value,
            start_date=start.isoformat(),
            end_date=end.isoformat(),
            hours=f"{hours:.2f}",
            during_working_time=self.random_int(0, 3) > 0,
            provider_company_id=provider,
        )

    def fla_worker(self, year: int | None = None, *, inss: str | None = None,
                   trainings: int | None = None, provider_company_id: str | None = None,
                   today: date | None = None) -> Worker:
        """A worker with 1-3 (or ``trainings``) trainings whose references are distinct."""
        year = year or self.fla_reporting_year(today)
        count = trainings if trainings is not None else self.random_int(1, 3)
        items = [
            self.fla_training(year, ref=f"TR-{year}-{n:03d}",
                              provider_company_id=provider_company_id,
                              with_provider=True if provider_company_id else None, today=today)
            for n in range(1, count + 1)
        ]
        return Worker(inss=inss or self.inss(), trainings=items)

    def fla_declaration(self, year: int | None = None, *, action: str = "NEW",
                        company_id: str | None = None, workers: int | None = None,
                        quality: Quality | str | None = None,
                        provider_company_id: str | None = None, ref: str | None = None,
                        replaced_ref: str | None = None, today: date | None = None
                        ) -> Declaration:
        """A declaration valid per spec 8 on its own (registry-dependent rules aside).

        ``quality=TRAINING_PROVIDER`` needs ``provider_company_id`` (the channel's enterprise
        number, rule 951) and leaves the employer out when ``company_id`` is not given.
        REPLACE and CANCEL get a ``replaced_ref`` (given or invented; rule 944 depends on the
        registry). CANCEL carries no workers (rule 942).
        """
        act = Action(action)
        year = year or self.fla_reporting_year(today)
        is_provider = (quality is not None
                       and Quality.parse(str(quality)) is Quality.TRAINING_PROVIDER)
        if is_provider and provider_company_id is None:
            raise ValueError("a TRAINING_PROVIDER declaration needs provider_company_id "
                             "(the channel's enterprise number, rule 951)")
        employer = None
        if company_id is not None or not is_provider:
            employer = Employer(
                company_id=company_id or self.kbo(),
                noss_registration_nbr=self.noss_registration_nbr() if self.random_int(0, 1)
                else None,
            )
        owner = employer.company_id if employer else provider_company_id
        declaration_ref = ref or f"D-{owner}-{year}-{self.hexify('^^^^^^^^', upper=True)}"
        if act is not Action.NEW and replaced_ref is None:
            replaced_ref = f"D-{owner}-{year}-{self.hexify('^^^^^^^^', upper=True)}"
        people: list[Worker] = []
        if act is not Action.CANCEL:
            count = workers if workers is not None else self.random_int(1, 5)
            seen: set[str] = set()
            while len(people) < count:
                worker = self.fla_worker(year, provider_company_id=provider_company_id,
                                         today=today)
                if worker.inss not in seen:  # rule 932: a worker once per declaration
                    seen.add(worker.inss)
                    people.append(worker)
        return Declaration(
            declaration_ref=declaration_ref,
            action=act.value,
            reporting_year=str(year),
            employer=employer,
            replaced_declaration_ref=None if act is Action.NEW else replaced_ref,
            workers=people,
        )

    def fla_header(self, *, sender_nbr: str | None = None,
                   quality: Quality | str = Quality.SOCIAL_SECRETARIAT,
                   company_id: str | None = None, environment: str = "T",
                   creation: datetime | None = None, file_reference: str | None = None,
                   today: date | None = None) -> FileHeader:
        """A file header; pass the channel's values to match the name and channel (P14)."""
        at = creation or datetime.combine(self._today(today), datetime.min.time()).replace(
            hour=self.random_int(7, 17), minute=self.random_int(0, 59))
        return FileHeader(
            sender_nbr=sender_nbr or self.sender_nbr(),
            quality=Quality.parse(str(quality)).value,
            company_id=company_id or self.kbo(),
            environment=environment,
            creation=at.strftime("%Y-%m-%dT%H:%M:%S"),
            file_reference=file_reference or f"F-{self.hexify('^^^^^^^^^^^^', upper=True)}",
        )

    def fla_file(self, declarations: int = 3, **header: Any) -> FileContent:
        """A header and ``declarations`` NEW declarations with distinct references.

        An ``EMPLOYER`` declares for itself (rule 101) and a ``TRAINING_PROVIDER`` only its own
        trainings (rule 951); other qualities get random employers, which need mandates.
        """
        head = self.fla_header(**header)
        today = header.get("today")
        quality = Quality.parse(head.quality)
        provider = head.company_id if quality is Quality.TRAINING_PROVIDER else None
        employer = head.company_id if quality is Quality.EMPLOYER else None
        batch = self.hexify("^^^^^^^^^^", upper=True)  # random: refs stay new in the registry
        items = [self.fla_declaration(quality=quality, provider_company_id=provider, today=today,
                                      company_id=employer,
                                      ref=f"D-{batch}-{n:04d}")
                 for n in range(1, declarations + 1)]
        return FileContent(header=head, declarations=items)


def register(faker: Any, today: date | None = None) -> BelgianProvider:
    """Add :class:`BelgianProvider` to a Faker (any locale, single or multi-locale)."""
    # A multi-locale Faker refuses add_provider: add to each of its single-locale factories.
    targets = list(getattr(faker, "factories", None) or [faker])
    provider = None
    for target in targets:
        instance = BelgianProvider(target)
        instance.today = today
        target.add_provider(instance)
        provider = provider or instance
    assert provider is not None
    return provider
