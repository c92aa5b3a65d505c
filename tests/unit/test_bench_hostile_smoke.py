"""bench/bench_hostile.py still runs: its --quick mode with tiny sizes (it cannot rot).

The numbers are not judged here (benchmarks are not timed tests); what is checked is that the
work measured was the real work: every shape was checked by ``fla check`` and answered by the
simulator, the normal sender's sets were all answered, and the attacker's sets were answered
exactly once each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.slow
def test_bench_hostile_quick_measures_shapes_and_latency_under_attack(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "bench_hostile.py"), "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "bench_hostile.json").read_text())
    rows = {(r["group"], r["subject"]): r for r in result["rows"]}
    shapes = result["params"]["results"]["shapes"]
    assert set(shapes) == {"attrs-over-cap", "declarations"}
    for shape, points in shapes.items():
        assert len(points) == 2 and points[0]["bytes"] < points[1]["bytes"]
        for point in points:  # each size really went through fla check and the simulator
            assert point["check_rss_mb"] > 0 and point["sim_sum_mb"] > point["sim_own_mb"] > 0
            assert point["check"].startswith(("exit 0", "exit 1"))
            assert point["sim"].startswith("ACRF")
        for subject in (f"fla check: {shape}", f"simulator+helpers: {shape}"):
            assert rows[("(a) RSS flat", subject)]["status"] in ("PASS", "MISS")
    # the refused shape is refused with the spec's code, the legal one accepted
    assert all(p["sim"] == "ACRF 102" for p in shapes["attrs-over-cap"])
    assert all(p["sim"] == "ACRF 1 + NOTI" for p in shapes["declarations"])
    latency = result["params"]["results"]["latency"]
    assert latency["alone"]["errors"] == [] and latency["attacked"]["errors"] == []
    assert latency["alone"]["n"] == latency["attacked"]["n"] == 8
    attacker = latency["attacker"]
    assert attacker["sets_sent"] >= 1
    assert attacker["lost"] == [] and attacker["duplicated"] == []
    assert sum(attacker["codes"].values()) == attacker["sets_sent"]
    assert rows[("(b) p99 under attack", "normal sender p99 GO->ACRF")]["ratio"] > 0
