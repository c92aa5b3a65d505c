"""``fla demo``: the whole round trip in a fresh process, as a new user would first run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXPECTED_STEPS = ["A valid export, signed, into INTEST",
                  "An export with business errors: bad INSZ, end before start, no mandate",
                  "A signed FI changed after signing"]


def fla(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``fla`` console script (or its entry point when the script is not on PATH)."""
    script = shutil.which("fla")
    command = [script] if script else [sys.executable, "-c",
                                       "from fla_core.cli import main; main()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def steps_of(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def test_demo_json_round_trip(tmp_path: Path):
    work = tmp_path / "demo"
    results = steps_of(fla("demo", "--json", "--keep", str(work)))
    assert [r["step"] for r in results] == EXPECTED_STEPS
    assert all(r["as_expected"] for r in results)
    valid, broken, tampered = results
    assert valid["acrf"]["result_code"] == 1 and valid["noti"]["result_code"] == 1
    assert {d["status"] for d in broken["noti"]["declarations"]} == {"REJECTED"}
    codes = {a["error_id"].split("-")[-1] for d in broken["noti"]["declarations"]
             for a in d["anomalies"]}
    assert {"910", "155"} <= codes  # end before start, no mandate
    assert tampered["acrf"]["error_id"] == "ACRF-125" and "noti" not in tampered
    # --keep leaves everything needed to look again: the home, keys and verified answers
    assert (work / "sim-home").is_dir() and (work / "sender" / "id_ed25519").is_file()
    saved = sorted(p.name for p in (work / "send-valid" / "answers").iterdir())
    assert [n[:7] for n in saved] == ["FO.ACRF", "FO.NOTI", "FS.ACRF", "FS.NOTI"]


def test_demo_uses_the_channel_date_not_the_machine_date(tmp_path: Path):
    """A machine whose local date is already tomorrow in Brussels still gets a clean demo.

    UTC+14 is a day ahead of Brussels from 10:00 to 23:00 UTC; at other hours the two dates
    agree and this test only checks that the demo works under a foreign TZ.
    """
    results = steps_of(fla("demo", "--json", env={"TZ": "Pacific/Kiritimati"}))
    assert [r["as_expected"] for r in results] == [True, True, True]


@pytest.mark.parametrize("prepare", ["file", "dir"])
def test_demo_refuses_a_keep_folder_with_content(tmp_path: Path, prepare: str):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "old").mkdir() if prepare == "dir" else (keep / "old.txt").write_text("x")
    proc = fla("demo", "--keep", str(keep))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"fla: error: --keep {keep}: folder exists and is not empty"]
    assert sorted(p.name for p in keep.iterdir()) == ["old" if prepare == "dir" else "old.txt"]


def _without_lines(declaration):
    """A declaration as comparable data: the input line numbers are where, not what."""
    from dataclasses import asdict

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "line"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(asdict(declaration))


def test_sample_export_reads_back_as_the_same_declarations(tmp_path: Path):
    """The demo's CSV writer and the CSV reader agree on every column (docs/input-formats)."""
    from datetime import date

    from fla_core.formats import ReadContext
    from fla_core.model import Declaration, Quality, Sender
    from fla_core.plugins import get_plugins
    from fla_core.sample import demo_declarations, demo_year, write_csv

    today = date(2026, 3, 16)
    assert (demo_year(date(2026, 1, 14)), demo_year(today)) == (2025, 2026)  # trainings ended
    declarations = demo_declarations(today, employer="0897223670", declarations=3)
    declarations.append(Declaration(declaration_ref="D-0897223670-2026-09", action="CANCEL",
                                    reporting_year=str(demo_year(today)),
                                    replaced_declaration_ref="D-0897223670-2026-01"))
    path = tmp_path / "export.csv"
    rows = write_csv(declarations, path)
    assert rows == sum(len(w.trainings) for d in declarations[:3] for w in d.workers) + 1
    context = ReadContext(sender=Sender("123456", Quality.SOCIAL_SECRETARIAT, "0123456749"))
    back = list(get_plugins().read_declarations(path, "csv", context).declarations)
    assert context.problems == []
    assert [_without_lines(d) for d in back] == [_without_lines(d) for d in declarations]
