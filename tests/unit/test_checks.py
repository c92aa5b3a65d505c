"""Business rules of spec 8.3, row by row: each rule raised when it should and only then."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from fla_core.checks.context import CheckContext, Limits, MemoryRegistry
from fla_core.checks.engine import evaluate
from fla_core.mandates import MandateBook, MandateRecord
from fla_core.model import Declaration, Employer, Quality, Sender, Training, Worker
from fla_core.plugins import FlaPlugins

CHECKS = tuple(f"fla_core.checks.{m}"
               for m in ("references", "years", "employer", "workers", "trainings"))

OWN = "0123456749"         # the channel's enterprise number
EMPLOYER = "0897223670"    # mandated (level 1 and 2)
UNMANDATED = "0477472701"  # valid number, no mandate
PROVIDER = "0566988259"
TODAY = date(2026, 3, 16)


@pytest.fixture(scope="module")
def plugins() -> FlaPlugins:
    return FlaPlugins(builtins=CHECKS, entry_points=False)


def mandates(*extra: MandateRecord, level2: bool = True) -> MandateBook:
    records = [MandateRecord(1, EMPLOYER, OWN, "FLAC", start="20241")]
    if level2:
        records.append(MandateRecord(2, EMPLOYER, OWN, "FLAC", sender="123456"))
    return MandateBook([*records, *extra])


def context(quality: Quality = Quality.SOCIAL_SECRETARIAT, company: str = OWN,
            **kw: object) -> CheckContext:
    kw.setdefault("mandates", mandates())
    return CheckContext(sender=Sender("123456", quality, company), environment="T",
                        processing_date=TODAY, **kw)  # type: ignore[arg-type]


def training(ref: str = "TR-1", start: str = "2026-01-12", end: str = "2026-01-14",
             hours: str = "21.00", provider: str | None = PROVIDER) -> Training:
    return Training(training_ref=ref, title="Forklift safety", training_type="FORMAL",
                    start_date=start, end_date=end, hours=hours, during_working_time=True,
                    provider_company_id=provider)


def declaration(**kw: object) -> Declaration:
    """A declaration of the current year that breaks no rule in the default context."""
    base: dict[str, object] = dict(
        declaration_ref="D-1", action="NEW", reporting_year="2026",
        employer=Employer(EMPLOYER, "042979535"),
        workers=[Worker("93051822361", [training()]),
                 Worker("00012556777", [training("TR-2", "2026-02-02", "2026-02-02", "3.50",
                                                 None)])])
    base.update(kw)
    return Declaration(**base)  # type: ignore[arg-type]


def with_training(**kw: object) -> Declaration:
    """The base declaration with worker 1's only training changed."""
    return declaration(workers=[Worker("93051822361", [training(**kw)])])  # type: ignore[arg-type]


def found(plugins: FlaPlugins, decl: Declaration, ctx: CheckContext | None = None,
          position: int = 1) -> list[tuple[str, str | None, str | None]]:
    verdict = evaluate(decl, position, ctx or context(), plugins)
    return [(a.error_id, a.path, a.value) for a in verdict.anomalies]


def ids(plugins: FlaPlugins, decl: Declaration, ctx: CheckContext | None = None) -> list[str]:
    return [e for e, _, _ in found(plugins, decl, ctx)]


D = "/FLAFile/Declaration[1]"
T11 = f"{D}/Worker[1]/Training[1]"


def test_base_declaration_is_clean(plugins):
    verdict = evaluate(declaration(), 1, context(), plugins)
    assert verdict.anomalies == []
    assert verdict.status == "ACCEPTED"


# --- rows 1-5: references ---------------------------------------------------------------------

def test_row1_reference_twice_in_file(plugins):
    ctx = context()
    assert found(plugins, declaration(), ctx) == []
    second = evaluate(declaration(), 2, ctx, plugins)
    assert [(a.error_id, a.path, a.value, a.severity) for a in second.anomalies] == [
        ("00101-931", "/FLAFile/Declaration[2]/DeclarationRef", "D-1", "B")]
    assert evaluate(declaration(declaration_ref="D-2"), 3, ctx, plugins).anomalies == []


def test_row1_counts_rejected_declarations_too(plugins):
    ctx = context()
    first = evaluate(declaration(reporting_year="2023"), 1, ctx, plugins)
    assert first.status == "REJECTED"
    assert ids(plugins, declaration(), ctx) == ["00101-931"]


@pytest.mark.parametrize("status", ["ACTIVE", "REPLACED", "CANCELLED", "CANCEL"])
def test_row2_reference_already_in_registry(plugins, status):
    ctx = context(registry=MemoryRegistry({"D-1": status}))
    assert found(plugins, declaration(), ctx) == [
        ("00101-945", f"{D}/DeclarationRef", "D-1")]


def test_row2_guarded_by_row1(plugins):
    ctx = context(registry=MemoryRegistry({"D-1": "ACTIVE"}))
    ctx.seen_refs.add("D-1")
    assert ids(plugins, declaration(), ctx) == ["00101-931"]


@pytest.mark.parametrize("action", ["REPLACE", "CANCEL"])
def test_row3_replaced_reference_missing_and_row5_guard(plugins, action):
    workers = [] if action == "CANCEL" else declaration().workers
    decl = declaration(action=action, workers=workers)
    # The element is absent: the path is where it would be, no value, and no 944 (row 5 guard).
    assert found(plugins, decl) == [("00103-940", f"{D}/ReplacedDeclarationRef", None)]


def test_row4_new_cannot_replace(plugins):
    decl = declaration(replaced_declaration_ref="D-0")
    assert found(plugins, decl, context(registry=MemoryRegistry({"D-0": "ACTIVE"}))) == [
        ("00103-941", f"{D}/ReplacedDeclarationRef", "D-0")]


@pytest.mark.parametrize("status", [None, "REPLACED", "CANCELLED", "CANCEL"])
def test_row5_replaced_declaration_not_active(plugins, status):
    registry = MemoryRegistry({} if status is None else {"D-0": status})
    decl = declaration(action="REPLACE", replaced_declaration_ref="D-0")
    assert found(plugins, decl, context(registry=registry)) == [
        ("00103-944", f"{D}/ReplacedDeclarationRef", "D-0")]


@pytest.mark.parametrize("action", ["REPLACE", "CANCEL"])
def test_row5_active_replaced_declaration_is_fine(plugins, action):
    workers = [] if action == "CANCEL" else declaration().workers
    decl = declaration(action=action, replaced_declaration_ref="D-0", workers=workers)
    assert ids(plugins, decl, context(registry=MemoryRegistry({"D-0": "ACTIVE"}))) == []


def test_row5_sees_earlier_declarations_of_the_file(plugins):
    ctx = context()
    ctx.file_registry["D-0"] = "ACTIVE"
    decl = declaration(action="REPLACE", replaced_declaration_ref="D-0")
    assert ids(plugins, decl, ctx) == []


# --- rows 6-7: reporting year ------------------------------------------------------------------

def year_ids(plugins: FlaPlugins, year: str, ctx: CheckContext | None = None) -> list[tuple]:
    decl = declaration(reporting_year=year, workers=[])
    return [(e, p, v) for e, p, v in found(plugins, decl, ctx) if e.startswith("00104")]


@pytest.mark.parametrize("year", ["2023", "2027", "1999"])
def test_row6_year_out_of_range(plugins, year):
    assert year_ids(plugins, year) == [("00104-913", f"{D}/ReportingYear", year)]


@pytest.mark.parametrize("year", ["2024", "2025"])
def test_row7_past_year_warns_and_row6_does_not_fire(plugins, year):
    assert year_ids(plugins, year) == [("00104-960", f"{D}/ReportingYear", year)]


def test_rows6_7_current_year_is_clean(plugins):
    assert year_ids(plugins, "2026") == []


def test_row6_first_year_is_configurable(plugins):
    ctx = context(limits=Limits(first_reporting_year=2025))
    assert year_ids(plugins, "2024", ctx) == [("00104-913", f"{D}/ReportingYear", "2024")]


def test_row7_warning_alone_keeps_declaration_accepted(plugins):
    decl = declaration(reporting_year="2025", workers=[
        Worker("93051822361", [training(start="2025-03-03", end="2025-03-05")])])
    verdict = evaluate(decl, 1, context(), plugins)
    assert [a.error_id for a in verdict.anomalies] == ["00104-960"]
    assert verdict.anomalies[0].severity == "W"
    assert verdict.status == "ACCEPTED"


def test_malformed_year_reports_nothing_instead_of_crashing(plugins):
    assert year_ids(plugins, "20x6") == []


# --- rows 8-13: employer and mandates ---------------------------------------------------------

def test_row8_employer_missing(plugins):
    assert found(plugins, declaration(employer=None)) == [("00111-952", f"{D}/Employer", None)]


def test_row8_training_provider_may_omit_employer(plugins):
    ctx = context(Quality.TRAINING_PROVIDER, company=PROVIDER)
    decl = declaration(employer=None, workers=[Worker("93051822361", [training()])])
    assert ids(plugins, decl, ctx) == []


def test_row9_enterprise_number_structure_guards_later_rows(plugins):
    decl = declaration(employer=Employer("2897223670"))
    # No 155 / 101 for a number that is not an enterprise number.
    assert found(plugins, decl, context(mandates=MandateBook())) == [
        ("00112-901", f"{D}/Employer/CompanyID", "2897223670")]


def test_row10_check_digits_guard_later_rows(plugins):
    decl = declaration(employer=Employer("0897223607"))
    assert found(plugins, decl, context(mandates=MandateBook())) == [
        ("00112-004", f"{D}/Employer/CompanyID", "0897223607")]


def test_row11_employer_sends_only_for_itself(plugins):
    ctx = context(Quality.EMPLOYER, mandates=MandateBook())
    assert found(plugins, declaration(), ctx) == [
        ("00112-101", f"{D}/Employer/CompanyID", EMPLOYER)]
    ctx = context(Quality.EMPLOYER, mandates=MandateBook())
    assert ids(plugins, declaration(employer=Employer(OWN)), ctx) == []


def test_row11_applies_without_mandate_file(plugins):
    ctx = context(Quality.EMPLOYER, check_mandates=False)
    assert ids(plugins, declaration(), ctx) == ["00112-101"]


@pytest.mark.parametrize("quality", [Quality.SOCIAL_SECRETARIAT, Quality.SERVICE_PROVIDER])
def test_row12_no_level1_mandate(plugins, quality):
    decl = declaration(employer=Employer(UNMANDATED))
    # Row 13 is guarded by row 12: one anomaly, not two.
    assert found(plugins, decl, context(quality)) == [
        ("00112-155", f"{D}/Employer/CompanyID", UNMANDATED)]


def test_row12_mandate_is_per_application(plugins):
    book = MandateBook([MandateRecord(1, EMPLOYER, OWN, "DMFA", start="20241"),
                        MandateRecord(2, EMPLOYER, OWN, "FLAC", sender="123456")])
    assert ids(plugins, declaration(), context(mandates=book)) == ["00112-155"]


def test_row12_mandate_of_another_representative_does_not_count(plugins):
    book = MandateBook([MandateRecord(1, EMPLOYER, "0477472701", "FLAC", start="20241")])
    assert ids(plugins, declaration(), context(Quality.SERVICE_PROVIDER, mandates=book)) == [
        "00112-155"]


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("20241", "20254", ["00112-155"]),   # ended the quarter before the processing date
    ("20262", None, ["00112-155"]),      # starts the quarter after
    ("20261", "20261", []),              # the processing date's own quarter
])
def test_row12_mandate_period(plugins, start, end, expected):
    book = MandateBook([MandateRecord(1, EMPLOYER, OWN, "FLAC", start=start, end=end),
                        MandateRecord(2, EMPLOYER, OWN, "FLAC", sender="123456")])
    assert ids(plugins, declaration(), context(mandates=book)) == expected


def test_rows12_13_skipped_when_mandates_unknown(plugins):
    decl = declaration(employer=Employer(UNMANDATED))
    assert ids(plugins, decl, context(check_mandates=False, mandates=MandateBook())) == []


def test_row13_level2_missing_for_social_secretariat(plugins):
    assert found(plugins, declaration(), context(mandates=mandates(level2=False))) == [
        ("00112-101", f"{D}/Employer/CompanyID", EMPLOYER)]


def test_row13_level2_for_another_sender_does_not_count(plugins):
    book = mandates(MandateRecord(2, EMPLOYER, OWN, "FLAC", sender="654321"), level2=False)
    assert ids(plugins, declaration(), context(mandates=book)) == ["00112-101"]


def test_row13_service_provider_needs_no_level2_by_default(plugins):
    ctx = context(Quality.SERVICE_PROVIDER, mandates=mandates(level2=False))
    assert ids(plugins, declaration(), ctx) == []


def test_row13_two_level_qualities_configurable(plugins):
    limits = Limits(two_level_qualities=frozenset({"SERVICE_PROVIDER"}))
    ctx = context(Quality.SERVICE_PROVIDER, mandates=mandates(level2=False), limits=limits)
    assert ids(plugins, declaration(), ctx) == ["00112-101"]
    ctx = context(mandates=mandates(level2=False), limits=limits)  # SOCIAL_SECRETARIAT now 1 level
    assert ids(plugins, declaration(), ctx) == []


def test_training_provider_needs_no_mandate(plugins):
    ctx = context(Quality.TRAINING_PROVIDER, company=PROVIDER, mandates=MandateBook())
    decl = declaration(workers=[Worker("93051822361", [training()])])
    assert ids(plugins, decl, ctx) == []


# --- rows 14-18: workers ------------------------------------------------------------------------

def test_row14_cancel_carries_no_workers(plugins):
    decl = declaration(action="CANCEL", replaced_declaration_ref="D-0")
    ctx = context(registry=MemoryRegistry({"D-0": "ACTIVE"}))
    assert found(plugins, decl, ctx) == [("00121-942", f"{D}/Worker[1]", None)]
    ctx = context(registry=MemoryRegistry({"D-0": "ACTIVE"}))
    assert ids(plugins, declaration(action="CANCEL", replaced_declaration_ref="D-0",
                                    workers=[]), ctx) == []


@pytest.mark.parametrize("action", ["NEW", "REPLACE"])
def test_row15_declaration_without_workers(plugins, action):
    replaced = "D-0" if action == "REPLACE" else None
    decl = declaration(action=action, replaced_declaration_ref=replaced, workers=[])
    ctx = context(registry=MemoryRegistry({"D-0": "ACTIVE"}))
    assert found(plugins, decl, ctx) == [("00121-943", f"{D}/Worker[1]", None)]


@pytest.mark.parametrize("inss", ["93131822361", "93053222361", "93051800061", "93051899961"])
def test_row16_inss_structure(plugins, inss):
    decl = declaration(workers=[Worker(inss, [training()])])
    assert found(plugins, decl) == [("00122-901", f"{D}/Worker[1]/INSS", inss)]


def test_row17_inss_check_digits(plugins):
    decl = declaration(workers=[Worker("93051822362", [training()])])
    assert found(plugins, decl) == [("00122-004", f"{D}/Worker[1]/INSS", "93051822362")]


def test_rows16_17_bis_numbers_are_valid(plugins):
    from fla_core.identifiers import is_valid_inss, make_inss
    bis = make_inss(date(1993, 5, 18), 223, bis="sex-known")
    assert is_valid_inss(bis)
    assert ids(plugins, declaration(workers=[Worker(bis, [training()])])) == []


def test_row18_worker_twice(plugins):
    decl = declaration(workers=[Worker("93051822361", [training()]),
                                Worker("00012556777", [training()]),
                                Worker("93051822361", [training()])])
    assert found(plugins, decl) == [("00122-932", f"{D}/Worker[3]/INSS", "93051822361")]


def test_row18_is_not_guarded_by_rows16_17(plugins):
    decl = declaration(workers=[Worker("93051822362", [training()]),
                                Worker("93051822362", [training()])])
    assert ids(plugins, decl) == ["00122-004", "00122-004", "00122-932"]


# --- rows 19-29: trainings ----------------------------------------------------------------------

def test_row19_training_twice_for_one_worker(plugins):
    decl = declaration(workers=[Worker("93051822361", [training(), training()]),
                                Worker("00012556777", [training()])])
    # The same TrainingRef for another worker is fine.
    assert found(plugins, decl) == [
        ("00131-930", f"{D}/Worker[1]/Training[2]/TrainingRef", "TR-1")]


def test_row20_provider_structure(plugins):
    assert found(plugins, with_training(provider="2566988259")) == [
        ("00132-901", f"{T11}/ProviderCompanyID", "2566988259")]


def test_row21_provider_check_digits(plugins):
    assert found(plugins, with_training(provider="0566988295")) == [
        ("00132-004", f"{T11}/ProviderCompanyID", "0566988295")]


def test_rows20_21_absent_provider_is_fine(plugins):
    assert ids(plugins, with_training(provider=None)) == []


@pytest.mark.parametrize(("provider", "value"), [(None, None), (EMPLOYER, EMPLOYER)])
def test_row22_training_provider_declares_only_own_trainings(plugins, provider, value):
    ctx = context(Quality.TRAINING_PROVIDER, company=PROVIDER)
    assert found(plugins, with_training(provider=provider), ctx) == [
        ("00132-951", f"{T11}/ProviderCompanyID", value)]
    ctx = context(Quality.TRAINING_PROVIDER, company=PROVIDER)
    assert ids(plugins, with_training(provider=PROVIDER), ctx) == []


def test_row22_only_for_training_providers(plugins):
    assert ids(plugins, with_training(provider=EMPLOYER)) == []


def test_row23_end_before_start_guards_hours(plugins):
    # 999.00 hours would break rows 28 and 29 if the period were evaluated.
    decl = with_training(start="2026-01-14", end="2026-01-12", hours="999.00")
    assert found(plugins, decl) == [("00136-910", f"{T11}/EndDate", "2026-01-12")]


def test_row23_one_day_training_is_fine(plugins):
    assert ids(plugins, with_training(start="2026-01-14", end="2026-01-14", hours="8.00")) == []


def test_row24_start_outside_reporting_year(plugins):
    decl = with_training(start="2025-12-31", end="2026-01-02")
    assert found(plugins, decl) == [("00135-911", f"{T11}/StartDate", "2025-12-31")]


def test_row25_end_outside_reporting_year(plugins):
    decl = declaration(reporting_year="2025", workers=[
        Worker("93051822361", [training(start="2025-12-30", end="2026-01-02")])])
    assert found(plugins, decl) == [
        ("00104-960", f"{D}/ReportingYear", "2025"),
        ("00136-911", f"{T11}/EndDate", "2026-01-02")]


def test_row26_training_not_finished(plugins):
    assert found(plugins, with_training(start="2026-03-16", end="2026-03-17", hours="8.00")) == [
        ("00136-912", f"{T11}/EndDate", "2026-03-17")]
    assert ids(plugins, with_training(start="2026-03-16", end="2026-03-16", hours="8.00")) == []


def test_row27_zero_hours_guards_rows28_29(plugins):
    assert found(plugins, with_training(hours="0.00")) == [("00137-920", f"{T11}/Hours", "0.00")]
    assert ids(plugins, with_training(hours="0.01")) == []


@pytest.mark.parametrize(("hours", "expected"), [
    ("35.00", ["00137-921"]),   # 35.00 > 10.00 x 3
    ("30.01", ["00137-921"]),
    ("30.00", ["00137-922"]),   # not > 30.00, but > 8.00 x 3
    ("27.00", ["00137-922"]),
    ("24.01", ["00137-922"]),
    ("24.00", []),
])
def test_rows28_29_hours_per_day_exact_decimals(plugins, hours, expected):
    decl = with_training(start="2026-01-12", end="2026-01-14", hours=hours)
    assert ids(plugins, decl) == expected


def test_rows28_29_severity(plugins):
    blocking = evaluate(with_training(hours="35.00"), 1, context(), plugins)
    warning = evaluate(with_training(hours="27.00"), 1, context(), plugins)
    assert (blocking.status, blocking.anomalies[0].severity) == ("REJECTED", "B")
    assert (warning.status, warning.anomalies[0].severity) == ("ACCEPTED", "W")


def test_rows28_29_never_binary_floating_point(plugins):
    # As floats 0.7 * 3 = 2.0999999999999996 < 2.1: a float implementation raises 921 here.
    limits = Limits(daily_max_hours=Decimal("0.70"), daily_warn_hours=Decimal("0.70"))
    assert ids(plugins, with_training(hours="2.10"), context(limits=limits)) == []
    assert ids(plugins, with_training(hours="2.11"), context(limits=limits)) == ["00137-921"]


def test_rows28_29_days_include_both_ends(plugins):
    # 2026-01-31 .. 2026-02-02 is 3 days across a month end: 30.00 h is not too many.
    decl = with_training(start="2026-01-31", end="2026-02-02", hours="30.00")
    assert ids(plugins, decl) == ["00137-922"]


def test_unparsable_dates_and_hours_report_nothing(plugins):
    decl = with_training(start="2026-02-30", end="14/01/2026", hours="lots")
    assert ids(plugins, decl) == []
    # A valid start with a broken end: start-year rule still runs, period rules do not.
    decl = with_training(start="2025-06-01", end="2026-13-01", hours="999.00")
    assert ids(plugins, decl) == ["00135-911"]


@pytest.mark.parametrize("hours", ["NaN", "sNaN", "Infinity", ""])
def test_non_numeric_hours_report_nothing(plugins, hours):
    assert ids(plugins, with_training(hours=hours)) == []


def test_quality_table_agrees_with_the_builtin_quality_plugin():
    # A context built by hand holds the built-in table; M3's default list comes from it too.
    from fla_core.qualities.builtin import QUALITIES

    context = CheckContext(sender=Sender("123456", Quality.EMPLOYER, OWN), environment="T",
                           processing_date=date(2026, 3, 16))
    assert list(context.qualities.values()) == list(QUALITIES)
    assert frozenset(q.quality for q in QUALITIES if q.two_level) == \
        Limits().two_level_qualities


# --- ordering of spec 8.2 -----------------------------------------------------------------------

def messy() -> Declaration:
    return declaration(
        reporting_year="2025", employer=Employer("0897223607"),
        workers=[Worker("93051822361", [training(start="2025-03-03", end="2025-03-05"),
                                        training("TR-2", "2025-04-02", "2025-03-31", "0.00")]),
                 Worker("93051822362", [training(start="2025-05-05", end="2025-05-05",
                                                 hours="9.00")])])


EXPECTED_ORDER = [
    ("00104-960", f"{D}/ReportingYear"),                      # worker 0, row 7
    ("00112-004", f"{D}/Employer/CompanyID"),                 # worker 0, row 10
    ("00136-910", f"{D}/Worker[1]/Training[2]/EndDate"),      # worker 1, training 2, row 23
    ("00137-920", f"{D}/Worker[1]/Training[2]/Hours"),        # row 27
    ("00122-004", f"{D}/Worker[2]/INSS"),                     # worker 2, training 0, row 17
    ("00137-922", f"{D}/Worker[2]/Training[1]/Hours"),        # worker 2, training 1, row 29
]


def test_order_worker_training_row(plugins):
    assert [(e, p) for e, p, _ in found(plugins, messy())] == EXPECTED_ORDER


def test_order_does_not_depend_on_plugin_registration_order():
    reversed_plugins = FlaPlugins(builtins=CHECKS[::-1], entry_points=False)
    assert [(e, p) for e, p, _ in found(reversed_plugins, messy())] == EXPECTED_ORDER


def test_paths_carry_the_declaration_position(plugins):
    verdict = evaluate(with_training(hours="0.00"), 7, context(), plugins)
    assert [(a.path, a.declaration, a.worker, a.training, a.row)
            for a in verdict.anomalies] == [
        ("/FLAFile/Declaration[7]/Worker[1]/Training[1]/Hours", 7, 1, 1, 27)]


def test_messages_are_those_of_the_catalogue(plugins):
    verdict = evaluate(replace(with_training(start="2025-12-31")), 1, context(), plugins)
    assert [a.message for a in verdict.anomalies] == ["Start date outside the reporting year"]
