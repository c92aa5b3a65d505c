"""One simulator per home: a second one would share the journal and answer sets again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fla_sim.api import Simulator
from fla_sim.config import HomeInUse, SimulatorHome


def fla_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fla_sim.cli", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> SimulatorHome:
    return SimulatorHome.init(tmp_path / "sim")


def test_a_second_serve_on_the_same_home_is_exit_2_naming_the_first(
        home: SimulatorHome, fla_sim_serve: Callable[..., Any]) -> None:
    first = fla_sim_serve(home.path)
    second = fla_sim("serve", str(home.path), "--port", "0")
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert f"in use by process {first.proc.pid} (cli.py serve {home.path} --port 0" in \
        second.stderr
    assert "serving" not in second.stdout
    assert first.proc.poll() is None  # the first one serves on
    assert first.stop() == 0


def test_read_only_commands_work_while_the_home_is_served(
        home: SimulatorHome, fla_sim_serve: Callable[..., Any]) -> None:
    fla_sim_serve(home.path)
    for args in (["status"], ["channel", "list"], ["mandate", "list"], ["hostkey"]):
        done = fla_sim(*args[:1], *args[1:], str(home.path))
        assert done.returncode == 0, (args, done.stderr)


def test_init_force_is_refused_while_the_home_is_served(
        home: SimulatorHome, fla_sim_serve: Callable[..., Any]) -> None:
    served = fla_sim_serve(home.path)
    keys = [p.read_bytes() for p in home.private_key_paths]
    done = fla_sim("init", "--force", str(home.path))
    assert done.returncode == 2 and f"in use by process {served.proc.pid}" in done.stderr
    assert [p.read_bytes() for p in home.private_key_paths] == keys


def test_the_lock_ends_with_its_process_even_a_killed_one(
        home: SimulatorHome, fla_sim_serve: Callable[..., Any]) -> None:
    killed = fla_sim_serve(home.path)
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait(30)
    assert str(killed.proc.pid) in home.lock_path.read_text()  # what it wrote stays...
    again = fla_sim_serve(home.path)  # ...and does not stand in the way
    assert again.stop() == 0


def test_a_second_simulator_object_is_refused_until_the_first_stops(
        home: SimulatorHome) -> None:
    with Simulator(home), pytest.raises(HomeInUse, match=rf"in use by process {os.getpid()} "):
        Simulator(home).__enter__()
    with Simulator(home) as sim:  # stopped: the home is free again
        assert sim.port
