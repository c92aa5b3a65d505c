"""The bench scripts still run: each in its --quick mode with tiny sizes (they cannot rot).

The numbers are not judged here (benchmarks are not timed tests); what is checked is that every
subject and anchor was measured, that the work measured was the real work (all generated
declarations accepted, the simulator answered with ACRF and NOTI) and that the JSON is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the bench anchors need them)")


def _run(script: str, out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--out", str(out),
                           *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((out / script.replace(".py", ".json")).read_text())


@pytest.mark.slow
def test_bench_core_quick_measures_every_subject_against_its_anchor(tmp_path: Path) -> None:
    _need("openssl", "xmllint")
    result = _run("bench_core.py", tmp_path, "--records", "300", "--records", "600")
    rows = {(r["group"], r["subject"]): r for r in result["rows"]}
    for group in ("300 rec", "600 rec"):
        for subject in ("sign", "verify", "schema", "check"):
            row = rows[(group, subject)]
            assert row["anchor"] > 0 and row["ratio"] > 0
            assert row["status"] in ("PASS", "MISS")
        assert rows[(group, "build RSS")]["ours"] > 0
    assert {r["subject"] for r in result["rows"] if r["group"] == "RSS flat"} == {
        "build", "sign", "verify", "check"}
    sizes = result["params"]["sizes"]
    assert [s["records"] for s in sizes] == [300, 600]
    for size in sizes:  # the check really ran the rules on valid data, the build read it cleanly
        assert size["check"]["extra"] == {"declarations": 1, "rejected": 0, "anomalies": 0}
        assert size["build"]["extra"] == {"problems": 0}
    assert result["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_bench_channel_quick_runs_upload_end_to_end_and_small_sets(tmp_path: Path) -> None:
    _need("sftp", "openssl", "xmllint", "ssh-keygen")
    # 24 sets per level: CPU times tick by 10 ms, and 2 sets (~5 ms each) could read as 0
    result = _run("bench_channel.py", tmp_path, "--size", "2M", "--records", "24",
                  "--duration", "1", "--levels", "1,8", "--sustain-senders", "8")
    rows = {r["subject"]: r for r in result["rows"]}
    assert rows["(a) upload MB/s"]["ours"] > 0
    e2e = result["params"]["results"]["e2e_sim"]
    declarations = result["params"]["results"]["declarations"]
    assert e2e["outcome"] == f"ACRF 1, NOTI 1: {declarations}/{declarations} accepted"
    assert rows["(b) simulator RSS"]["ours"] > 0
    if Path("/usr/sbin/sshd").exists():
        assert rows["(a) upload MB/s"]["anchor"] > 0
        assert rows["(b) end to end s"]["anchor"] > 0
    for level in (1, 8):
        latency = result["params"]["results"][f"latency_{level}"]
        assert latency["n"] >= level and latency["errors"] == []
        # every set makes the simulator work: a CPU figure of zero means it measured nothing
        assert latency["cpu_ms_per_set"]["simulator"] > 0
    sustained = result["params"]["results"]["sustained"]
    assert sustained["sets"] > 0 and sustained["errors"] == []
    # counted over answered sets (the bench refuses to report the commits of failed ones)
    assert rows["(c) journal commits per set"]["ours"] > 0
    assert result["params"]["results"]["journal_commits"]["sets"] == 3
