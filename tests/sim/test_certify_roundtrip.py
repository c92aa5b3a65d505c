"""The round trip layer of ``fla certify``: real SFTP to an embedded simulator, compared with
the offline judge."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

from typer.testing import CliRunner

from fla_core import cli
from fla_core.anomalies import ChannelError
from fla_core.judge import FolderEntry, SetVerdict
from fla_core.names import NameRules, parse_upload
from fla_core.responses import Acrf
from fla_core.set_results import SetResult
from fla_sim.certify_roundtrip import _compare

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "certify"
ARGS = ("--trust", str(FIXTURES / "ca.pem"), "--today", "2026-12-04")


def cases_of(path: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(path.read_text())["cases"]}


def test_good_and_bad_fixtures_round_trip_agree_with_the_judge(tmp_path: Path):
    runner = CliRunner()
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    res = runner.invoke(cli.app, ["certify", str(FIXTURES / "good"), *ARGS, "--json", str(good)])
    assert res.exit_code == 0, res.output
    cases = cases_of(good)
    assert [cases[i]["outcome"] for i in ("TRP-001", "TRP-002", "TRP-003")] == ["passed"] * 3
    res = runner.invoke(cli.app, ["certify", str(FIXTURES / "bad"), *ARGS, "--json", str(bad)])
    assert res.exit_code == 1, res.output
    cases = cases_of(bad)
    # every refusal of the bad folder is the judge's own: the channel agrees set by set
    assert [cases[i]["outcome"] for i in ("TRP-001", "TRP-002", "TRP-003")] == ["passed"] * 3
    assert not list((FIXTURES / "good").glob(".*")), "the supplier's folder was written to"


def _entry(error: str | None) -> FolderEntry:
    go = parse_upload("GO.FLAC.123456.20261204.00001.T.1", NameRules(today=date(2026, 12, 4)))
    verdict = SetVerdict(error=ChannelError(error) if error else None, application="FLAC")
    return FolderEntry(str(go), go, verdict)


def _acrf(error_id: str | None) -> Acrf:
    return Acrf(file_name="GO.FLAC.123456.20261204.00001.T.1", ticket="T",
                result_code=0 if error_id else 1, error_id=error_id, description="",
                created=datetime(2026, 12, 4, 12, 0))


def test_a_channel_answer_other_than_the_judge_fails_trp_003():
    entry = _entry(None)
    answered = SetResult(entry.label, acrf=_acrf("ACRF-125"), answers=["FO.ACRF"])
    results = _compare([entry], {entry.label: answered}, 1.0, check_mandates=False)
    trp3 = results[2]
    assert trp3.case.id == "TRP-003" and trp3.outcome.value == "failed"
    assert "offline: positive ACRF; channel: ACRF-125" in trp3.evidence[0].message
    same = SetResult(entry.label, acrf=_acrf("ACRF-125"), answers=["FO.ACRF"])
    agreed = _compare([replace(entry, verdict=SetVerdict(error=ChannelError("125")))],
                      {entry.label: same}, 1.0, check_mandates=False)
    assert [r.outcome.value for r in agreed] == ["passed"] * 3
    unanswered = _compare([entry], {}, 1.0, check_mandates=False)
    assert unanswered[0].outcome.value == "failed"
