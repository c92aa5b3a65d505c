"""The certification engine offline: fixtures, the bad inputs of issue 13, the JSON schema."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from fla_core.anomalies import default_catalogue
from fla_core.certify import catalogue
from fla_core.certify.engine import CertifyOptions, NothingToCertify, certify
from fla_core.certify.model import Outcome, Report, to_json

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "certify"
CA = FIXTURES / "ca.pem"
DAY = date(2026, 12, 4)
STEM = "FLAC.123456.20261204"
OFFLINE = CertifyOptions(trust=(CA,), today=DAY, round_trip=False)
BAD_IDS = {"SET-001", "SET-004", "SIG-004", "DOC-002", "RUL-004", "RUL-921"}


def failed_ids(report: Report) -> set[str]:
    return {r.case.id for r in report.failed()}


def outcome(report: Report, case_id: str) -> Outcome:
    return next(r.outcome for r in report.results if r.case.id == case_id)


def schema_validate(data: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "docs" / "certify-report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(data)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A copy of the good fixture, GOs written last (as a checkout leaves them)."""
    folder = tmp_path / "good"
    shutil.copytree(FIXTURES / "good", folder)
    for go in folder.glob("GO.*"):
        go.touch()
    return folder


def test_good_fixture_is_ready_and_every_file_digested():
    report = certify(FIXTURES / "good", options=OFFLINE)
    assert failed_ids(report) == set()
    assert report.statement.ready and report.statement.sets_judged == 3
    assert report.statement.profile.sender == "123456"
    assert report.statement.profile.company == "0123456749"
    assert report.statement.profile.quality == "SOCIAL_SECRETARIAT"
    assert outcome(report, "SIG-004") is Outcome.PASSED  # signatures really checked
    assert outcome(report, "TRP-001") is Outcome.NOT_APPLICABLE
    names = sorted(p.name for p in (FIXTURES / "good").iterdir())
    assert [f.name for f in report.files] == names
    for f in report.files:
        assert f.sha256 == hashlib.sha256((FIXTURES / "good" / f.name).read_bytes()).hexdigest()
    schema_validate(to_json(report))


def test_bad_fixture_names_the_failed_cases():
    report = certify(FIXTURES / "bad", options=OFFLINE)
    assert failed_ids(report) == BAD_IDS
    assert not report.statement.ready
    data = to_json(report)
    schema_validate(data)
    rul = next(c for c in data["cases"] if c["id"] == "RUL-004")
    assert {g["error_id"] for g in rul["groups"]} == {"00122-004", "00132-004"}


def test_fewer_sets_than_required_is_not_ready(good: Path):
    report = certify(good, options=CertifyOptions(trust=(CA,), today=DAY, round_trip=False,
                                                  min_sets=4))
    assert failed_ids(report) == {"SET-007"} and not report.statement.ready


def test_without_trust_the_signature_checks_do_not_apply(good: Path):
    report = certify(good, options=CertifyOptions(today=DAY, round_trip=False))
    assert outcome(report, "SIG-004") is Outcome.NOT_APPLICABLE
    assert outcome(report, "SIG-001") is Outcome.PASSED
    assert report.statement.profile.trust is None


def test_progress_reports_files_and_sets(good: Path):
    seen: list[tuple[str, int, int]] = []
    certify(good, options=OFFLINE, progress=lambda *a: seen.append(a))
    assert ("sets", 3, 3) in seen and ("files", 9, 9) in seen
    assert seen[-1][0] == "cases"


# --- the bad inputs of issue 13, one at a time ---------------------------------------------------

def test_empty_folder_is_nothing_to_certify(tmp_path: Path):
    with pytest.raises(NothingToCertify, match="empty"):
        certify(tmp_path, options=OFFLINE)


def test_a_folder_of_non_triplet_files_is_nothing_to_certify(tmp_path: Path):
    (tmp_path / "export.csv").write_text("a,b\n")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(NothingToCertify, match="no FI/FS/GO/TD"):
        certify(tmp_path, options=OFFLINE)


def test_a_stray_file_beside_the_sets_fails_nam_001(good: Path):
    (good / "export.csv").write_text("a,b\n")
    assert failed_ids(certify(good, options=OFFLINE)) == {"NAM-001"}


def test_go_without_fi(good: Path):
    (good / f"GO.{STEM}.00009.T.1").write_bytes(b"")
    report = certify(good, options=OFFLINE)
    assert failed_ids(report) == {"SET-001"}
    evidence = next(r for r in report.failed()).evidence[0]
    assert evidence.code == "ACRF-142" and evidence.file == f"GO.{STEM}.00009.T.1"


def test_two_sets_with_one_sequence(good: Path):
    fi = (good / f"FI.{STEM}.00001.T.1.1").read_bytes()
    (good / f"FI.{STEM}.00001.T.2.1").write_bytes(fi)
    (good / f"FI.{STEM}.00001.T.2.2").write_bytes(fi)
    (good / f"GO.{STEM}.00001.T.2").write_bytes(b"")
    assert "SET-004" in failed_ids(certify(good, options=OFFLINE))


def test_fs_of_another_fi(good: Path):
    shutil.copy(good / f"FS.{STEM}.00002.T.1.1", good / f"FS.{STEM}.00001.T.1.1")
    (good / f"GO.{STEM}.00001.T.1").touch()
    report = certify(good, options=OFFLINE)
    assert failed_ids(report) == {"SIG-004"}


def test_truncated_xml(good: Path):
    fi = good / f"FI.{STEM}.00003.T.1.1"
    fi.write_bytes(fi.read_bytes()[:500])
    (good / f"FS.{STEM}.00003.T.1.1").unlink()  # unsigned in T: only the document is wrong
    (good / f"GO.{STEM}.00003.T.1").touch()
    assert failed_ids(certify(good, options=OFFLINE)) == {"DOC-002"}


def test_fi_without_go_and_go_written_first(good: Path):
    (good / f"GO.{STEM}.00003.T.1").unlink()
    go = good / f"GO.{STEM}.00002.T.1"
    fi = good / f"FI.{STEM}.00002.T.1.1"
    fi.touch()
    stamp = fi.stat().st_mtime_ns
    import os

    os.utime(go, ns=(stamp - 10**9, stamp - 10**9))  # the GO one second before its FI
    assert {"SET-002", "SET-003"} <= failed_ids(certify(good, options=OFFLINE))


def test_td_for_a_set_that_does_not_exist(good: Path):
    (good / f"TD.{STEM}.00042.T.1").write_bytes(b"")
    assert failed_ids(certify(good, options=OFFLINE)) == {"SET-005"}


# --- the catalogue -------------------------------------------------------------------------------

def test_every_channel_code_fails_a_case_of_its_layer():
    ids = catalogue.by_id()
    for info in default_catalogue().codes():
        case_id = catalogue.case_for_code(info.code)
        assert case_id in ids, info.code
        if info.code != "999":
            assert case_id != "SET-008", f"code {info.code} has no case of its own"


def test_ids_are_unique_and_documented():
    all_cases = catalogue.cases()
    assert len({c.id for c in all_cases}) == len(all_cases)
    doc = (ROOT / "docs" / "certify.md").read_text()
    for case in all_cases:
        assert f"| `{case.id}` | {case.layer} | {case.spec} |" in doc, case.id
