"""The evaluation engine: worked verdicts of spec 8.5, registry effects of 8.4, result codes 9.3."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date

import pytest

from fla_core.checks.context import CheckContext, MemoryRegistry
from fla_core.checks.engine import (
    DeclarationVerdict,
    evaluate,
    evaluate_all,
    noti_result_code,
    registry_effect,
)
from fla_core.mandates import MandateBook, MandateRecord
from fla_core.model import Declaration, Employer, Quality, Sender, Training, Worker
from fla_core.plugins import FlaPlugins

CHECKS = tuple(f"fla_core.checks.{m}"
               for m in ("references", "years", "employer", "workers", "trainings"))


@pytest.fixture(scope="module")
def plugins() -> FlaPlugins:
    return FlaPlugins(builtins=CHECKS, entry_points=False)


def example_context(registry: dict[str, str] | None = None) -> CheckContext:
    """The example context of spec 8.5 / 1: social secretariat 0123456749, sender 123456."""
    book = MandateBook([
        MandateRecord(1, "0897223670", "0123456749", "FLAC", start="20241"),
        MandateRecord(2, "0897223670", "0123456749", "FLAC", sender="123456"),
    ])
    return CheckContext(sender=Sender("123456", Quality.SOCIAL_SECRETARIAT, "0123456749"),
                        environment="T", processing_date=date(2026, 3, 16), mandates=book,
                        registry=MemoryRegistry(registry))


def example_declarations() -> list[Declaration]:
    """The two declarations of the FI of spec 7.2, as model objects."""
    first = Declaration(
        declaration_ref="D-0897223670-2025-01", action="NEW", reporting_year="2025",
        employer=Employer("0897223670", "042979535"),
        workers=[
            Worker("93051822361", [Training(
                training_ref="TR-2025-001", provider_company_id="0566988259",
                title="Forklift safety refresher", training_type="FORMAL",
                start_date="2025-03-03", end_date="2025-03-05", hours="21.00",
                during_working_time=True)]),
            Worker("00012556777", [Training(
                training_ref="TR-2025-002", title="Shadowing a senior planner",
                training_type="INFORMAL", start_date="2025-06-10", end_date="2025-06-10",
                hours="3.50", during_working_time=True)]),
        ])
    second = Declaration(
        declaration_ref="D-0897223670-2025-02", action="CANCEL",
        replaced_declaration_ref="D-0897223670-2024-07", reporting_year="2024",
        employer=Employer("0897223670"))
    return [first, second]


def summary(verdict: DeclarationVerdict) -> tuple[list[tuple[str, str]], str]:
    return [(a.error_id, a.severity) for a in verdict.anomalies], verdict.status


def test_worked_verdict_example_file_empty_registry(plugins):
    verdicts = list(evaluate_all(example_declarations(), example_context(), plugins))
    assert [summary(v) for v in verdicts] == [
        ([("00104-960", "W")], "ACCEPTED"),
        ([("00103-944", "B"), ("00104-960", "W")], "REJECTED"),
    ]
    assert noti_result_code(verdicts) == 2
    # What the NOTI of spec 9.3 reports, path and value included.
    assert [(a.path, a.value) for a in verdicts[1].anomalies] == [
        ("/FLAFile/Declaration[2]/ReplacedDeclarationRef", "D-0897223670-2024-07"),
        ("/FLAFile/Declaration[2]/ReportingYear", "2024"),
    ]
    assert [(v.position, v.declaration_ref, v.company_id) for v in verdicts] == [
        (1, "D-0897223670-2025-01", "0897223670"),
        (2, "D-0897223670-2025-02", "0897223670"),
    ]


def set_company(value: str) -> Callable[[Declaration], None]:
    def change(d: Declaration) -> None:
        assert d.employer is not None
        d.employer.company_id = value
    return change


def set_training(**fields: str) -> Callable[[Declaration], None]:
    def change(d: Declaration) -> None:
        t = d.workers[0].trainings[0]
        for key, value in fields.items():
            setattr(t, key, value)
    return change


@pytest.mark.parametrize(("change", "expected", "status"), [
    (set_company("0477472701"), [("00104-960", "W"), ("00112-155", "B")], "REJECTED"),
    (set_company("0897223607"), [("00104-960", "W"), ("00112-004", "B")], "REJECTED"),
    (set_training(hours="35.00"), [("00104-960", "W"), ("00137-921", "B")], "REJECTED"),
    (set_training(hours="27.00"), [("00104-960", "W"), ("00137-922", "W")], "ACCEPTED"),
    (set_training(start_date="2025-12-30", end_date="2026-01-02", hours="21.00"),
     [("00104-960", "W"), ("00136-911", "B")], "REJECTED"),
], ids=["no-mandate", "check-digit", "35h-in-3-days", "27h-in-3-days", "across-new-year"])
def test_worked_verdicts_one_changed_value(plugins, change, expected, status):
    declaration = copy.deepcopy(example_declarations()[0])
    change(declaration)
    assert summary(evaluate(declaration, 1, example_context(), plugins)) == (expected, status)


def test_example_file_with_seeded_registry_is_all_accepted(plugins):
    context = example_context({"D-0897223670-2024-07": "ACTIVE"})
    verdicts = list(evaluate_all(example_declarations(), context, plugins))
    assert [v.status for v in verdicts] == ["ACCEPTED", "ACCEPTED"]
    assert noti_result_code(verdicts) == 1
    assert context.file_registry == {
        "D-0897223670-2025-01": "ACTIVE",
        "D-0897223670-2024-07": "CANCELLED",
        "D-0897223670-2025-02": "CANCEL",
    }
    # The registry before the file is a view: the engine never writes to it.
    assert context.registry.status("D-0897223670-2025-01") is None


def new(ref: str, replaced: str | None = None, action: str = "NEW") -> Declaration:
    decl = copy.deepcopy(example_declarations()[0])
    decl.declaration_ref = ref
    decl.action = action
    decl.replaced_declaration_ref = replaced
    return decl


def test_new_then_replace_in_the_same_file_is_accepted(plugins):
    context = example_context()
    verdicts = list(evaluate_all([new("A"), new("B", "A", "REPLACE")], context, plugins))
    assert [v.status for v in verdicts] == ["ACCEPTED", "ACCEPTED"]
    assert context.file_registry == {"A": "REPLACED", "B": "ACTIVE"}


def test_replacing_a_replaced_declaration_is_rejected(plugins):
    context = example_context()
    decls = [new("A"), new("B", "A", "REPLACE"), new("C", "A", "REPLACE")]
    verdicts = list(evaluate_all(decls, context, plugins))
    assert [v.status for v in verdicts] == ["ACCEPTED", "ACCEPTED", "REJECTED"]
    assert [a.error_id for a in verdicts[2].anomalies] == ["00103-944", "00104-960"]
    assert context.file_registry == {"A": "REPLACED", "B": "ACTIVE"}


def test_cancel_in_the_same_file(plugins):
    context = example_context()
    cancel = Declaration(declaration_ref="X", action="CANCEL", replaced_declaration_ref="A",
                         reporting_year="2025", employer=Employer("0897223670"))
    verdicts = list(evaluate_all([new("A"), cancel], context, plugins))
    assert [v.status for v in verdicts] == ["ACCEPTED", "ACCEPTED"]
    assert context.file_registry == {"A": "CANCELLED", "X": "CANCEL"}


def test_rejected_declaration_does_not_touch_the_registry(plugins):
    context = example_context()
    bad = new("A")
    bad.reporting_year = "2023"
    verdicts = list(evaluate_all([bad, new("B", "A", "REPLACE")], context, plugins))
    assert [v.status for v in verdicts] == ["REJECTED", "REJECTED"]
    assert context.file_registry == {}
    # The rejected reference still counts for rule 931 (used twice in the file).
    assert context.seen_refs == {"A", "B"}
    again = evaluate(new("A"), 3, context, plugins)
    assert [a.error_id for a in again.anomalies][:1] == ["00101-931"]


def test_reference_known_before_the_file_is_rejected_with_945(plugins):
    context = example_context({"OLD": "ACTIVE"})
    verdicts = list(evaluate_all([new("OLD"), new("N1")], context, plugins))
    assert [a.error_id for a in verdicts[0].anomalies] == ["00101-945", "00104-960"]
    assert verdicts[1].status == "ACCEPTED"


def test_evaluate_all_is_lazy(plugins):
    seen: list[str] = []

    def stream():
        for ref in ("A", "B"):
            seen.append(ref)
            yield new(ref)

    verdicts = evaluate_all(stream(), example_context(), plugins)
    assert seen == []
    assert next(verdicts).declaration_ref == "A"
    assert seen == ["A"]


def test_verdict_without_employer_has_no_company(plugins):
    context = example_context()
    decl = new("A")
    decl.employer = None
    verdict = evaluate(decl, 1, context, plugins)
    assert verdict.company_id is None
    assert [a.error_id for a in verdict.anomalies] == ["00104-960", "00111-952"]


@pytest.mark.parametrize(("statuses", "code"), [
    (["ACCEPTED"], 1), (["ACCEPTED", "ACCEPTED"], 1), (["ACCEPTED", "REJECTED"], 2),
    (["REJECTED", "ACCEPTED"], 2), (["REJECTED"], 0), (["REJECTED", "REJECTED"], 0),
])
def test_noti_result_code(statuses, code):
    verdicts = [DeclarationVerdict(i, f"D{i}", None, s) for i, s in enumerate(statuses, 1)]
    assert noti_result_code(verdicts) == code


def test_registry_effect_table():
    assert registry_effect(new("A")) == {"A": "ACTIVE"}
    assert registry_effect(new("B", "A", "REPLACE")) == {"A": "REPLACED", "B": "ACTIVE"}
    assert registry_effect(new("C", "A", "CANCEL")) == {"A": "CANCELLED", "C": "CANCEL"}
