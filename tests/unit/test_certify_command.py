"""``fla certify`` as a user runs it: exit codes, errors before any work, --command, fake data."""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.certify.engine import CertifyOptions, certify

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "certify"
CA = FIXTURES / "ca.pem"
DAY = "2026-12-04"
OFFLINE = ("--trust", CA, "--today", DAY, "--no-round-trip")
PY = sys.executable


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: object):
    return runner.invoke(cli.app, ["certify", *(str(a) for a in args)])


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_good_exits_0_and_writes_the_json(runner, tmp_path):
    out = tmp_path / "r.json"
    res = run(runner, FIXTURES / "good", *OFFLINE, "--json", out, "--supplier", "ACME",
              "--software", "Pay", "--software-version", "7.1")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ready for production")
    data = json.loads(out.read_text())
    assert data["statement"]["ready"] is True
    assert data["statement"]["supplier"] == "ACME"
    assert data["statement"]["software_version"] == "7.1"
    assert data["extra"]["round_trip"] is False


def test_bad_exits_1_naming_the_failed_cases(runner):
    res = run(runner, FIXTURES / "bad", *OFFLINE)
    assert res.exit_code == 1, res.output
    failed = {line.split()[1] for line in res.stdout.splitlines() if line.startswith("FAILED")}
    assert failed == {"SET-001", "SET-004", "SIG-004", "DOC-002", "RUL-004", "RUL-921"}


@pytest.mark.parametrize("args, message", [
    ((), "give DIR or --command"),
    (("--command", "x {out}", "DIR"), "not both"),
    (("missing-folder",), "no such folder"),
    (("DIR", "--json", "nowhere/r.json"), "does not exist"),
    (("DIR", "--report", "nowhere/r.html"), "does not exist"),
    (("DIR", "--junit", "nowhere/r.xml"), "does not exist"),
    (("DIR", "--json", "."), "is a folder"),
    (("DIR", "--trust", "NOTCERT"), "not a certificate"),
    (("--command", "exporter --out here"), "{out}"),
    (("DIR", "--quality", "king"), "--quality"),
    (("DIR", "--company", "0123456700"), "--company"),
])
def test_usage_errors_exit_2_before_any_work(runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "NOTCERT").write_text("-----BEGIN NOTHING-----\n")
    calls: list[object] = []
    monkeypatch.setattr("fla_core.certify.engine.certify", lambda *a, **k: calls.append(a))
    res = run(runner, *args)
    assert res.exit_code == 2, res.output
    assert message in one_line(res)
    assert not calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "NOTCERT"]


def test_unwritable_output_folder_exits_2(runner, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: the folder is refused as to anyone else
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked
                            else real(p, m))
    res = run(runner, FIXTURES / "good", *OFFLINE, "--json", locked / "r.json")
    assert res.exit_code == 2 and "not writable" in one_line(res)
    assert not list(locked.iterdir())


def test_empty_folder_and_non_triplet_files_exit_2(runner, tmp_path):
    res = run(runner, tmp_path, *OFFLINE)
    assert res.exit_code == 2 and "empty folder" in one_line(res)
    (tmp_path / "export.csv").write_text("a\n")
    res = run(runner, tmp_path, *OFFLINE)
    assert res.exit_code == 2 and "no FI/FS/GO/TD" in one_line(res)


# --- --command -----------------------------------------------------------------------------------

def command_case(data: dict, case_id: str) -> dict:
    return next(c for c in data["cases"] if c["id"] == case_id)


def test_command_that_writes_the_good_sets_is_ready(runner, tmp_path):
    script = tmp_path / "exporter.py"
    script.write_text("import shutil, sys, os\n"
                      f"src = {str(FIXTURES / 'good')!r}\n"
                      "for n in sorted(os.listdir(src)):\n"
                      "    shutil.copy(os.path.join(src, n), sys.argv[1])\n")
    out = tmp_path / "r.json"
    res = run(runner, "--command", f"{PY} {script} {{out}}", *OFFLINE, "--json", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert command_case(data, "CMD-001")["outcome"] == "passed"
    assert command_case(data, "CMD-002")["outcome"] == "passed"


@pytest.mark.parametrize("code, timeout, failed, evidence", [
    ("import sys; sys.stderr.write('no database\\n'); sys.exit(3)", 30, {"CMD-001", "CMD-002"},
     "exit status 3"),
    ("import time; time.sleep(60)", 0.5, {"CMD-001", "CMD-002"}, "killed"),
    ("pass", 30, {"CMD-002"}, "wrote no"),
])
def test_command_failures_are_cases(runner, tmp_path, code, timeout, failed, evidence):
    script = tmp_path / "exporter.py"
    script.write_text(code + "\n")
    out = tmp_path / "r.json"
    res = run(runner, "--command", f"{PY} {script} {{out}}", "--timeout", timeout, *OFFLINE,
              "--json", out)
    assert res.exit_code == 1, res.output
    data = json.loads(out.read_text())
    assert {c["id"] for c in data["cases"] if c["outcome"] == "failed"} == failed
    messages = " ".join(e["message"] for c in data["cases"] if c["id"] in failed
                        for e in c["evidence"])
    assert evidence in messages
    if "exit status 3" in evidence:
        assert "no database" in messages  # stderr captured


# --- fla fake -> fla build -> fla certify --------------------------------------------------------

def fake_sets(runner, tmp_path: Path, invalid: float) -> tuple[Path, dict]:
    folder = tmp_path / "sets"
    expected: dict[str, int] = {}
    for seed in (1, 2, 3):
        export = tmp_path / f"export-{seed}.csv"
        res = runner.invoke(cli.app, ["fake", "--records", "12", "--seed", str(seed),
                                      "--invalid", str(invalid), "--today", DAY, "--out",
                                      str(export), "--json"])
        assert res.exit_code == 0, res.output
        for eid, n in json.loads(res.stdout).get("expected", {}).items():
            expected[eid] = expected.get(eid, 0) + n
        res = runner.invoke(cli.app, ["build", str(export), "--sender", "123456", "--company",
                                      "0123456749", "--quality", "social-secretariat", "--out",
                                      str(folder), "--date", DAY])
        assert res.exit_code == 0, res.output
    return folder, expected


def test_fake_valid_data_builds_and_certifies(runner, tmp_path):
    folder, expected = fake_sets(runner, tmp_path, 0.0)
    assert not expected
    res = run(runner, folder, "--today", DAY, "--no-round-trip")
    assert res.exit_code == 0, res.output


def test_fake_invalid_data_fails_the_expected_rule_cases(runner, tmp_path):
    folder, expected = fake_sets(runner, tmp_path, 0.3)
    out = tmp_path / "r.json"
    res = run(runner, folder, "--today", DAY, "--no-round-trip", "--json", out)
    assert res.exit_code == 1, res.output
    data = json.loads(out.read_text())
    groups = {g["error_id"]: g["count"] for c in data["cases"] for g in c["groups"]}
    assert groups == expected
    assert {c["id"] for c in data["cases"] if c["outcome"] == "failed"} == {
        f"RUL-{eid[-3:]}" for eid in expected}
    assert max(expected.values()) > 1  # so that the cap below is exercised
    capped = certify(folder, options=CertifyOptions(today=date(2026, 12, 4), round_trip=False,
                                                    example_cap=1))
    groups_capped = [g for r in capped.results for g in r.groups]
    assert {g.error_id: g.count for g in groups_capped} == expected  # counts stay exact
    assert all(len(g.examples) == 1 for g in groups_capped)


def test_all_three_reports_of_one_run(runner, tmp_path):
    junitparser = pytest.importorskip("junitparser")
    paths = {opt: tmp_path / f"r.{ext}" for opt, ext in (("--json", "json"),
                                                         ("--report", "html"),
                                                         ("--junit", "xml"))}
    args = [a for opt, path in paths.items() for a in (opt, path)]
    res = run(runner, FIXTURES / "bad", *OFFLINE, *args)
    assert res.exit_code == 1, res.output
    html = paths["--report"].read_text()
    assert "not ready for production" in html and "SIG-004" in html
    failures = {case.name.split()[0] for suite in junitparser.JUnitXml.fromfile(
        str(paths["--junit"])) for case in suite if not case.is_passed and not case.is_skipped}
    assert failures == {"SET-001", "SET-004", "SIG-004", "DOC-002", "RUL-004", "RUL-921"}
