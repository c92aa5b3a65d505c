"""The Belgian Faker provider: valid and deliberately invalid identifiers, valid FLA data."""

from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from faker import Faker
from lxml import etree

from fla_core.checks.context import CheckContext
from fla_core.checks.engine import evaluate
from fla_core.faker_provider import BelgianProvider, register
from fla_core.identifiers import inss_info, inss_problem, kbo_problem, noss_problem
from fla_core.model import Declaration, FileContent, Quality, Sender
from fla_core.plugins import FlaPlugins

TODAY = date(2026, 3, 16)
REF35 = re.compile(r"[A-Za-z0-9._/-]{1,35}")
HOURS = re.compile(r"[0-9]{1,4}\.[0-9]{2}")


@pytest.fixture
def fake() -> Faker:
    f = Faker("nl_BE")
    f.seed_instance(20260316)
    register(f, today=TODAY)
    return f


@pytest.mark.parametrize("locale", ["nl_BE", "fr_BE", "de_DE", "en_US", ["nl_BE", "fr_BE"]])
def test_register_works_on_any_faker(locale: str | list[str]) -> None:
    f = Faker(locale)
    provider = register(f, today=TODAY)
    assert isinstance(provider, BelgianProvider)
    # fr_BE has no Belgian ssn provider of its own: ours must give real INSZ numbers anyway.
    assert all(inss_problem(f.inss()) is None for _ in range(50))
    assert all(kbo_problem(f.kbo()) is None for _ in range(50))


def test_register_on_a_bare_generator() -> None:
    f = Faker("fr_BE")
    register(f.factories[0])
    assert inss_problem(f.inss()) is None


def test_2000_identifiers_are_valid(fake: Faker) -> None:
    for _ in range(2000):
        assert inss_problem(fake.inss()) is None
        assert kbo_problem(fake.kbo()) is None
    for _ in range(200):
        assert inss_problem(fake.inss_bis()) is None
        assert inss_problem(fake.inss_bis(sex_known=False)) is None
        assert kbo_problem(fake.kbo(first_digit=1)) is None
        assert noss_problem(fake.noss_registration_nbr()) is None


def test_inss_honours_birth_date_sex_and_the_2000_rule(fake: Faker) -> None:
    for born in (date(1999, 12, 31), date(2000, 1, 1), date(2007, 2, 28), date(1950, 6, 1)):
        for sex in ("M", "F"):
            info = inss_info(fake.inss(birth_date=born, sex=sex))
            assert info.birth_date == born and info.sex == sex
            assert info.century == (2000 if born.year >= 2000 else 1900)
    bis = inss_info(fake.inss(birth_date=date(2002, 11, 7), sex="F", bis=True))
    assert bis.bis and bis.sex == "F" and bis.birth_date == date(2002, 11, 7)
    unknown = inss_info(fake.inss_bis(sex_known=False))
    assert unknown.bis and unknown.sex is None
    with pytest.raises(ValueError, match="sex"):
        fake.inss(sex="X")


def test_formatted_forms(fake: Faker) -> None:
    assert re.fullmatch(r"[0-9]{2}\.[0-9]{2}\.[0-9]{2}-[0-9]{3}\.[0-9]{2}", fake.inss_formatted())
    assert re.fullmatch(r"[01][0-9]{3}\.[0-9]{3}\.[0-9]{3}", fake.kbo_formatted())


@pytest.mark.parametrize(("kind", "code"), [("check", "004"), ("structure", "901")])
def test_invalid_identifiers_have_the_requested_code(fake: Faker, kind: str, code: str) -> None:
    for _ in range(500):
        inss = fake.invalid_inss(kind)
        kbo = fake.invalid_kbo(kind)
        assert len(inss) == 11 and inss.isdigit() and inss_problem(inss) == code
        assert len(kbo) == 10 and kbo.isdigit() and kbo_problem(kbo) == code
    with pytest.raises(ValueError, match="kind"):
        fake.invalid_inss("length")


def test_seed_makes_data_reproducible() -> None:
    def sample(seed: int) -> list[str]:
        f = Faker("fr_BE")
        register(f, today=TODAY)
        f.seed_instance(seed)
        return [f.inss(), f.kbo(), f.fla_declaration().declaration_ref]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


# ---- FLA model objects ----------------------------------------------------------------------

def sanity_problems(decl: Declaration, today: date) -> list[str]:
    """Structural check of spec 7.3 types and the registry-free rules of 8.3."""
    out = []
    year = int(decl.reporting_year)
    if not REF35.fullmatch(decl.declaration_ref):
        out.append("DeclarationRef")
    if not 2024 <= year <= today.year:
        out.append("913")
    if decl.employer is not None:
        if kbo_problem(decl.employer.company_id):
            out.append("employer KBO")
        nbr = decl.employer.noss_registration_nbr
        if nbr is not None and noss_problem(nbr):
            out.append("NOSS")
    if (decl.action == "NEW") != (decl.replaced_declaration_ref is None):
        out.append("940/941")
    if (decl.action == "CANCEL") == bool(decl.workers):
        out.append("942/943")
    inss = [w.inss for w in decl.workers]
    if len(set(inss)) != len(inss):
        out.append("932")
    for worker in decl.workers:
        if inss_problem(worker.inss):
            out.append("INSS")
        refs = [t.training_ref for t in worker.trainings]
        if not refs or len(set(refs)) != len(refs) or not all(map(REF35.fullmatch, refs)):
            out.append("930/TrainingRef")
        for t in worker.trainings:
            start, end = date.fromisoformat(t.start_date), date.fromisoformat(t.end_date)
            days = (end - start).days + 1
            if not (start <= end <= today and start.year == end.year == year):
                out.append(f"dates {start} {end}")
            if not HOURS.fullmatch(t.hours) or not 0 < Decimal(t.hours) <= 8 * days:
                out.append(f"hours {t.hours}")
            if not 1 <= len(t.title) <= 200 or t.training_type not in ("FORMAL", "INFORMAL"):
                out.append("title/type")
            if t.provider_company_id is not None and kbo_problem(t.provider_company_id):
                out.append("provider KBO")
    return out


def test_generated_declarations_are_structurally_sound(fake: Faker) -> None:
    for action in ("NEW", "REPLACE", "CANCEL"):
        for _ in range(60):
            decl = fake.fla_declaration(action=action)
            assert sanity_problems(decl, TODAY) == [], decl


def test_trainings_end_by_today_even_early_in_the_year(fake: Faker) -> None:
    early = date(2026, 1, 2)
    for _ in range(50):
        t = fake.fla_training(today=early)
        assert "2026-01-01" <= t.start_date <= t.end_date <= "2026-01-02"
    with pytest.raises(ValueError, match="no training"):
        fake.fla_training(2027, today=early)


def test_declaration_options(fake: Faker) -> None:
    decl = fake.fla_declaration(2025, action="REPLACE", company_id="0897223670", workers=4,
                                ref="MY-REF", replaced_ref="OLD-REF")
    assert (decl.reporting_year, decl.declaration_ref, decl.replaced_declaration_ref) == (
        "2025", "MY-REF", "OLD-REF")
    assert decl.employer is not None and decl.employer.company_id == "0897223670"
    assert len(decl.workers) == 4
    own = "0566988259"
    prov = fake.fla_declaration(quality="training-provider", provider_company_id=own)
    assert prov.employer is None
    assert all(t.provider_company_id == own for w in prov.workers for t in w.trainings)
    with pytest.raises(ValueError, match="provider_company_id"):
        fake.fla_declaration(quality=Quality.TRAINING_PROVIDER)


PLUGINS = FlaPlugins(builtins=tuple(f"fla_core.checks.{m}" for m in (
    "references", "years", "employer", "workers", "trainings")), entry_points=False)


@pytest.mark.parametrize("quality", list(Quality))
def test_generated_files_pass_the_business_rules(fake: Faker, quality: Quality) -> None:
    content = fake.fla_file(declarations=15, quality=quality, sender_nbr="123456",
                            company_id="0123456749", today=TODAY)
    ctx = CheckContext(sender=Sender("123456", quality, "0123456749"), environment="T",
                       processing_date=TODAY, check_mandates=False)
    for position, decl in enumerate(content, start=1):
        verdict = evaluate(decl, position, ctx, PLUGINS)
        # check_mandates=False skips 155/101-level-2; a random employer of a service provider
        # is still a matter of mandates, nothing else may be raised.
        assert verdict.anomalies == [], [a.error_id for a in verdict.anomalies]


def test_generated_file_is_schema_valid(fake: Faker) -> None:
    fla = pytest.importorskip("fla_core.applications.fla")
    content = fake.fla_file(declarations=5, sender_nbr="123456", today=TODAY,
                            creation=datetime(2026, 3, 16, 9, 30))
    cancel = fake.fla_declaration(action="CANCEL", today=TODAY)
    content = FileContent(content.header, [*content.declarations, cancel])
    out = io.BytesIO()
    fla.render(content, out)
    doc = etree.fromstring(out.getvalue())
    fla.schema().assertValid(doc)
    assert content.header.creation == "2026-03-16T09:30:00"


def test_header_defaults(fake: Faker) -> None:
    head = fake.fla_header(quality="employer", environment="R")
    assert head.quality == "EMPLOYER" and head.environment == "R"
    assert re.fullmatch(r"[0-9]{6}", head.sender_nbr) and kbo_problem(head.company_id) is None
    created = datetime.strptime(head.creation, "%Y-%m-%dT%H:%M:%S")
    assert created.date() == TODAY and REF35.fullmatch(head.file_reference)
    assert created - datetime(2026, 3, 16) < timedelta(days=1)
