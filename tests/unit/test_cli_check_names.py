"""``fla check FILE``: the set of a file comes from ``fla_core.names``, never from a local split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from fla_core import cli
from fla_core.checking import set_of

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
BUILD = ["--quality", "social-secretariat", "--company", "0123456749", "--sender", "123456"]


def test_set_of_a_name():
    assert set_of("FI.FLAC.123456.20260316.00001.T.1.1") == "FLAC.123456.20260316.00001.T"
    assert set_of("GO.FLAC.123456.20260316.00001.T.1") == "FLAC.123456.20260316.00001.T"
    # six elements: too short to belong to a set, so it stands for itself alone
    assert set_of("FI.FLAC.123456.20260316.00001.T") == "FI.FLAC.123456.20260316.00001.T"


def test_a_six_element_name_is_judged_as_itself_not_as_the_set_it_resembles(tmp_path):
    runner = CliRunner()
    built = runner.invoke(cli.app, ["build", str(EXPORTS / "valid.csv"), *BUILD,
                                    "--out", str(tmp_path), "--json"])
    assert built.exit_code == 0, built.output
    fi = Path(json.loads(built.stdout)["files"][0])
    short = tmp_path / fi.name.rsplit(".", 2)[0]  # FI.FLAC.123456.DATE.SEQ.T: 6 elements
    shutil.copy(fi, short)
    res = runner.invoke(cli.app, ["check", str(short), *BUILD, "--json"])
    findings = json.loads(res.stdout)
    # the channel refuses that name (malformed FI name, 131); the valid set beside it is not
    # what was asked for and must not answer for it
    assert [(f["code"], f["where"]) for f in findings] == [("ACRF-131", short.name)], findings
    assert res.exit_code == 1
    # the set's own file still selects the whole set, and only it
    res = runner.invoke(cli.app, ["check", str(fi), *BUILD, "--json"])
    assert res.exit_code == 0, res.output
    assert [f["code"] for f in json.loads(res.stdout) if f["severity"] != "W"] == ["ACRF"]
