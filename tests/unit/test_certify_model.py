"""The certification report's shapes and their versioned JSON form."""

from __future__ import annotations

import json

import pytest

from fla_core.certify.model import (
    REPORT_SCHEMA,
    AnomalyGroup,
    CaseResult,
    CaseSpec,
    Evidence,
    JudgedFile,
    Outcome,
    Profile,
    Report,
    Statement,
    count_outcomes,
    from_json,
    to_json,
)

NAM = CaseSpec("NAM-001", "transport", "every name follows the naming rules", "4.5")
RUL = CaseSpec("RUL-001", "rules", "no business anomaly", "8")


def report() -> Report:
    results = (
        CaseResult(NAM, Outcome.PASSED),
        CaseResult(RUL, Outcome.FAILED, groups=(AnomalyGroup(
            "00122-004", "Invalid INSZ", 7,
            (Evidence("check digits", file="FI.x", line=3, zone="Worker[1]/INSS",
                      code="00122-004"),)),)),
        CaseResult(CaseSpec("TRP-001", "round trip", "answers agree", "9"),
                   Outcome.NOT_APPLICABLE, (Evidence("offline run"),)),
    )
    statement = Statement(
        supplier="ACME", software="PayMaster", software_version="7.1",
        profile=Profile("social-secretariat", "123456", "0123456749"),
        started="2026-12-04T18:00:00+01:00", product_version="0.1", catalogue_version="1",
        sets_judged=3, min_sets=3, counts=count_outcomes(results), ready=False)
    return Report(statement, results, (JudgedFile("FI.x", 10, "ab" * 32),))


def test_the_json_form_survives_a_round_trip_through_text() -> None:
    original = report()
    data = json.loads(json.dumps(to_json(original)))
    assert data["schema"] == REPORT_SCHEMA
    assert data["statement"]["verdict"] == "not ready for production"
    assert from_json(data) == original


def test_counts_list_every_layer_and_outcome() -> None:
    counts = report().statement.counts
    assert counts["transport"] == {"passed": 1, "failed": 0, "not applicable": 0}
    assert counts["rules"]["failed"] == 1 and counts["signature"]["passed"] == 0


def test_a_failed_case_without_evidence_is_refused() -> None:
    with pytest.raises(ValueError, match="NAM-001"):
        CaseResult(NAM, Outcome.FAILED)


def test_a_report_of_another_major_version_is_refused() -> None:
    data = to_json(report())
    data["schema"] = "fla-certify-report/2.0"
    with pytest.raises(ValueError, match="schema"):
        from_json(data)
