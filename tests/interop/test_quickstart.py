"""The newcomer's path, run as written: docs/simulator.md's quick start and ``fla demo --keep``,
with OpenSSH's ``ssh-keygen``, ``sftp`` and ``ssh`` checking the host key strictly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fla_core.responses import parse_answer
from fla_core.signing import TrustStore, verify_fs
from fla_sim.config import SimulatorHome
from fla_sim.store import Journal

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sftp") is None or shutil.which("ssh-keygen") is None,
                       reason="OpenSSH sftp/ssh-keygen not installed"),
]

REPO = Path(__file__).parents[2]
DOC = REPO / "docs" / "simulator.md"
# What the test adds to each OpenSSH command: its own known_hosts file (OpenSSH reads ~ from the
# password database, not $HOME), checked strictly, and nothing from this machine's ssh config
# or agent. The printed known_hosts line is what lets the client in.
OPENSSH_OPTIONS = ("-F /dev/null -o UserKnownHostsFile=$HOME/.ssh/known_hosts "
                   "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes "
                   "-o IdentitiesOnly=yes -o BatchMode=yes")
FINAL_STATES = {"NOTIFIED", "REJECTED", "CANCELLED", "ORPHANED"}


def quick_start_steps() -> list[str]:
    """The commands of the quick start's shell block: continuations joined, heredocs kept
    with their command, trailing comments dropped."""
    text = DOC.read_text("utf-8")
    section = text[text.index("## Quick start"):]
    block = section[section.index("```sh\n") + 6:]
    lines = iter(block[:block.index("```\n")].splitlines())
    steps = []
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        line = re.sub(r"\s{2,}#.*$", "", line)
        if "<<'EOF'" in line:
            body = []
            for inner in lines:
                body.append(inner)
                if inner == "EOF":
                    break
            line = "\n".join([line, *body])
        steps.append(line)
    return steps


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty folder with the clone's sample export where the quick start expects it."""
    work = tmp_path / "work"
    (work / "fixtures" / "exports").mkdir(parents=True)
    shutil.copy(REPO / "fixtures" / "exports" / "valid.csv", work / "fixtures" / "exports")
    (tmp_path / "user-home").mkdir()
    return work


def shell(step: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def wait_until_answered(home: Path, timeout: float = 30) -> list[str]:
    """What a user does by running ``fla-sim status`` again: wait for final set states."""
    deadline = time.monotonic() + timeout
    while True:
        journal = Journal(home / "journal.sqlite")
        try:
            states = [s.state for s in journal.sets()]
        finally:
            journal.close()
        if states and set(states) <= FINAL_STATES:
            return states
        assert time.monotonic() < deadline, f"sets not answered within {timeout} s: {states}"
        time.sleep(0.05)


@pytest.fixture
def user_env(folder: Path) -> Iterator[dict[str, str]]:
    bin_dir = str(Path(sys.executable).parent)  # fla and fla-sim of this installation
    yield {**os.environ, "HOME": str(folder.parent / "user-home"),
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def test_the_quick_start_runs_as_written(folder: Path, user_env: dict[str, str],
                                         fla_sim_serve: Callable[..., Any]) -> None:
    steps = quick_start_steps()
    assert any(s.startswith("sftp -b") for s in steps), steps
    served = None
    for step in steps:
        if step.startswith("fla-sim serve "):
            served = fla_sim_serve(folder / step.split()[2])  # on a free port, not 8022
            continue
        assert served is not None or ("8022" not in step and "hostkey" not in step), step
        if served is not None:
            step = step.replace("fla-sim hostkey ./sim", f"fla-sim hostkey ./sim --port "
                                                        f"{served.port}")
            step = step.replace("-P 8022", f"-P {served.port}")
            step = re.sub(r"^sftp ", f"sftp {OPENSSH_OPTIONS} ", step)
        done = shell(step, folder, user_env)
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
        if step.startswith("fla-sim status"):
            assert wait_until_answered(folder / "sim") == ["NOTIFIED"]
    assert served is not None
    # the line serve printed is the one hostkey wrote to known_hosts, and sftp accepted it
    known = (folder.parent / "user-home" / ".ssh" / "known_hosts").read_text()
    assert served.wait_for("stdout", "ssh-ed25519") + "\n" == known
    answers = sorted(p.name[:7] for p in (folder / "answers").iterdir())
    assert answers == ["FO.ACRF", "FO.NOTI", "FS.ACRF", "FS.NOTI", "GO.ACRF", "GO.NOTI"]
    acrf_path = next((folder / "answers").glob("FO.ACRF.*"))
    acrf = parse_answer(acrf_path.read_bytes())
    assert acrf.accepted, acrf  # the set was signed with the certificate cert issue made
    home = SimulatorHome(folder / "sim")
    fs = next((folder / "answers").glob("FS.ACRF.*")).read_bytes()
    verify_fs(acrf_path, fs, trust=TrustStore(anchors=[home.ca().cert]),
              at=acrf.created.astimezone(), sender_company=None)
    assert list((home.channel_root("acme-payroll") / "OUTTEST").iterdir()) == []  # rm worked
    assert served.stop() == 0


def test_the_demo_keeps_an_ssh_key_openssh_uses(tmp_path: Path, user_env: dict[str, str],
                                                fla_sim_serve: Callable[..., Any]) -> None:
    keep = tmp_path / "demo"
    demo = subprocess.run([sys.executable, "-c", "from fla_core.cli import main; main()",
                           "demo", "--keep", str(keep), "--json"], capture_output=True,
                          text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    identity = keep / "sender" / "id_ed25519"
    assert identity.stat().st_mode & 0o777 == 0o600
    assert (keep / "sender" / "signer-key.pem").stat().st_mode & 0o777 == 0o600
    served = fla_sim_serve(keep / "sim-home")
    line = served.wait_for("stdout", "ssh-ed25519")
    (tmp_path / "user-home" / ".ssh").mkdir(parents=True)
    (tmp_path / "user-home" / ".ssh" / "known_hosts").write_text(line + "\n")
    env = {**user_env, "HOME": str(tmp_path / "user-home")}
    sftp = shell(f"sftp {OPENSSH_OPTIONS} -b - -P {served.port} -i {identity} "
                 "acme-payroll@127.0.0.1 <<'EOF'\nls -1 OUTTEST\nEOF", tmp_path, env)
    assert sftp.returncode == 0, sftp.stderr
    assert "UNPROTECTED PRIVATE KEY" not in sftp.stderr
    # plain ssh logs in with the same key; the channel then refuses to run a command
    ssh = shell(f"ssh {OPENSSH_OPTIONS} -p {served.port} -i {identity} -T "
                "acme-payroll@127.0.0.1 true", tmp_path, env)
    assert "exec request failed" in ssh.stderr, ssh.stderr
    assert served.stop() == 0


def test_the_readme_sftp_example_is_the_one_the_quick_start_runs():
    """The README's `sftp -b` upload is word for word a step that the quick-start test runs."""
    readme = (REPO / "README.md").read_text("utf-8")
    start = readme.index("sftp -b - ")
    example = readme[start:readme.index("\nEOF\n", start) + 4]
    assert example in quick_start_steps()
