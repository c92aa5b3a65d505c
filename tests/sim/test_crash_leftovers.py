"""A crash leaves nothing behind: the judge workers and pre-scan followers of a simulator
killed with SIGKILL (paused ones included) end with it, instead of living on for ever."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil

from fla_sim.config import SimulatorHome

FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


def big_fi(declarations: int) -> bytes:
    """About 1 KB per declaration: enough for a pre-scan follower to start."""
    text = FIXTURE.read_text()
    head, rest = text.split("  <Declaration>", 1)
    one = "  <Declaration>" + rest.split("  <Declaration>", 1)[0]
    body = "".join(one.replace("D-0897223670-2025-01", f"D-0897223670-2025-{n:05d}")
                   for n in range(1, declarations + 1))
    return (head + body + "</FLAFile>\n").encode()


def lives(proc: psutil.Process) -> bool:
    """True while ``proc`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_helpers_of_a_killed_simulator_do_not_outlive_it(fla_sim_home: SimulatorHome,
                                                         fla_channel, fla_sim_serve,
                                                         sftp_upload, tmp_path: Path) -> None:
    config = fla_sim_home.load()
    config.prescan_min_bytes = 64 * 1024
    config.judge_workers = 1
    fla_sim_home.save(config)
    served = fla_sim_serve(fla_sim_home.path)
    day = datetime.now(ZoneInfo("Europe/Brussels")).strftime("%Y%m%d")  # serve's real clock
    # a big FI without its GO: its follower is started, then paused (SIGSTOP) waiting for it
    fi = tmp_path / f"FI.FLAC.123456.{day}.00001.T.1.1"
    fi.write_bytes(big_fi(800))
    # a small set: a judge worker is started for it
    small = tmp_path / f"FI.FLAC.123456.{day}.00002.T.1.1"
    small.write_bytes(FIXTURE.read_bytes())
    sftp_upload(served.port, fla_channel.user, fla_channel.ssh_key,
                [fi, small, f"GO.FLAC.123456.{day}.00002.T.1"])
    served.wait_for("stderr", "pre-scan paused")
    served.wait_for("stderr", "answer OUTTEST/FO.ACRF")
    simulator = psutil.Process(served.proc.pid)
    helpers = simulator.children(recursive=True)
    assert len(helpers) >= 3, helpers  # the fork server, a judge worker, the followers
    paused = time.monotonic() + 15  # SIGSTOP was sent; the kernel stops it in a moment
    while not any(lives(h) and h.status() == psutil.STATUS_STOPPED for h in helpers):
        assert time.monotonic() < paused, "no paused follower"
        time.sleep(0.02)

    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(10)
    deadline = time.monotonic() + 15
    alive = helpers
    while alive and time.monotonic() < deadline:  # the kernel ends them: wait, bounded
        alive = [h for h in alive if lives(h)]
        time.sleep(0.05)
    assert alive == [], [(h.pid, " ".join(h.cmdline())[:100]) for h in alive]


def test_a_start_ends_the_helpers_an_earlier_run_recorded(fla_sim_home: SimulatorHome,
                                                          fla_channel, tmp_path: Path) -> None:
    """Where helpers cannot die with their parent (no PR_SET_PDEATHSIG), the next start ends
    them: every helper is recorded in the home while it runs."""
    import subprocess
    import sys

    from fla_sim.api import Simulator
    from fla_sim.leftovers import HelperRecords

    records = HelperRecords(fla_sim_home.helpers_dir)
    # a real process standing for a helper a killed simulator left, and one that is not ours
    # although it has a recorded pid: its start time differs (the pid was given again)
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        records.add(leftover.pid)
        records.add(stranger.pid)
        (fla_sim_home.helpers_dir / str(stranger.pid)).write_text("1")
        with Simulator(fla_sim_home.path) as sim:
            assert leftover.wait(10) == -signal.SIGKILL
            assert stranger.poll() is None
            # the helpers of this run are recorded while they run, and only they
            assert sim.processor is not None
            pool = sim.processor._judge_pool()
            assert pool is not None
            recorded = {int(p.name) for p in fla_sim_home.helpers_dir.iterdir()}
            assert recorded == set(pool.pids()) and recorded
        assert list(fla_sim_home.helpers_dir.iterdir()) == []  # a clean stop forgets them
    finally:
        for proc in (leftover, stranger):
            proc.kill()
            proc.wait()
