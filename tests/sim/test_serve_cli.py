"""``fla-sim serve`` and ``hostkey`` as a user sees them: log lines, known_hosts line, help."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fla_core import pki
from fla_core.files import write_private
from fla_sim.config import SimulatorHome

USER, KBO, SENDER = "acme-payroll", "0123456749", "123456"
EXPORT = Path(__file__).parents[2] / "fixtures" / "exports" / "valid.csv"


def fla_sim(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fla_sim.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


@pytest.fixture
def channel(tmp_path: Path, example_home: tuple[SimulatorHome, asyncssh.SSHKey]
            ) -> tuple[SimulatorHome, asyncssh.SSHKey, list[Path]]:
    """A home with the example channel, and a set signed by a certificate of the home's CA
    (real clock: ``fla-sim serve`` judges with it)."""
    home, key = example_home
    signer = home.issue_signer(KBO)
    pki.write_pem(tmp_path / "signer-cert.pem", signer.cert)
    write_private(tmp_path / "signer-key.pem", pki.to_pem(signer.key))
    built = subprocess.run(
        [sys.executable, "-c", "from fla_core.cli import main; main()", "build", str(EXPORT),
         "--quality", "social-secretariat", "--sender", SENDER, "--company", KBO,
         "--out", str(tmp_path / "outbox"), "--sign", "--key", str(tmp_path / "signer-key.pem"),
         "--cert", str(tmp_path / "signer-cert.pem")], capture_output=True, text=True,
        timeout=120)
    assert built.returncode == 0, built.stderr
    order = ("FI", "FS", "GO")  # the upload order the channel expects
    files = sorted((tmp_path / "outbox").glob("[FG]*"), key=lambda p: order.index(p.name[:2]))
    return home, key, files


def test_serve_logs_each_file_each_verdict_and_each_answer(
        channel: tuple[SimulatorHome, asyncssh.SSHKey, list[Path]],
        fla_sim_serve: Callable[..., Any], sftp_upload: Callable[..., None]) -> None:
    home, key, files = channel
    served = fla_sim_serve(home.path)
    stranger = f"GO.FLAC.654321.{date.today():%Y%m%d}.00009.T.1"  # another sender: refused
    sftp_upload(served.port, USER, key, [*files, stranger])
    served.wait_for("stderr", "answer OUTTEST/FO.NOTI.")
    served.wait_for("stderr", f" for {stranger}")
    lines = "\n".join(served.lines())
    for path in files:
        assert re.search(rf" INFO {USER}: received INTEST/{re.escape(path.name)} "
                         rf"\({path.stat().st_size} bytes\)$", lines, re.M), lines
    go = files[-1].name
    assert re.search(rf" INFO {USER}: INTEST/{re.escape(go)}: ACRF-000 \(positive\), NOTI, "
                     r"\d+ of \d+ declarations accepted$", lines, re.M), lines
    assert re.search(rf" INFO {USER}: INTEST/{re.escape(stranger)}: ACRF-\d{{3}} "
                     r"\(negative: .+\)$", lines, re.M), lines
    for kind, result in (("ACRF", "ACRF-000"), ("NOTI", r"NOTI \d")):
        assert re.search(rf" INFO {USER}: answer OUTTEST/FO\.{kind}\.999999\.\S+ written: "
                         rf"{result} for {re.escape(go)}$", lines, re.M), lines
    assert served.stop() == 0


def test_serve_quiet_logs_no_info_line(
        channel: tuple[SimulatorHome, asyncssh.SSHKey, list[Path]],
        fla_sim_serve: Callable[..., Any], sftp_upload: Callable[..., None]) -> None:
    home, key, files = channel
    served = fla_sim_serve(home.path, "-q")
    sftp_upload(served.port, USER, key, files)
    outtest = home.channel_root(USER) / "OUTTEST"
    deadline = time.monotonic() + 30
    while not list(outtest.glob("GO.NOTI.*")):  # the last file of the last answer
        assert time.monotonic() < deadline, "no answer within 30 s"
        time.sleep(0.05)
    assert served.stop() == 0
    assert served.lines("stderr") == []
    assert "serving" in served.lines("stdout")[0]


def test_serve_prints_the_known_hosts_line_hostkey_prints_again(
        tmp_path: Path, fla_sim_serve: Callable[..., Any]) -> None:
    home = SimulatorHome.init(tmp_path / "sim")
    served = fla_sim_serve(home.path)
    served.wait_for("stdout", "ssh-ed25519")
    stdout = served.lines("stdout")
    assert stdout[1] == (f"known_hosts line for SSH clients (again: fla-sim hostkey "
                         f"{home.path} --port {served.port}):")
    public = home.host_key_path.with_name("host_key.pub").read_text().split()
    assert stdout[2] == f"[127.0.0.1]:{served.port} {public[0]} {public[1]}"
    again = fla_sim("hostkey", str(home.path), "--port", str(served.port))
    assert again.returncode == 0 and again.stdout == stdout[2] + "\n"
    assert fla_sim("hostkey", str(home.path), "--port", "22", "--host", "localhost"
                   ).stdout == f"localhost {public[0]} {public[1]}\n"
    assert fla_sim("hostkey", str(home.path)).stdout.startswith("[127.0.0.1]:8022 ")


COMMANDS = [["init"], ["serve"], ["status"], ["hostkey"], ["channel", "add"],
            ["channel", "list"], ["mandate", "add"], ["mandate", "list"], ["trust", "add"],
            ["cert", "issue"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_placeholders_not_python_types(command: list[str]) -> None:
    done = fla_sim(*command, "--help", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    options = [ln for ln in done.stdout.splitlines() if "--" in ln and "--help" not in ln]
    assert not re.search(r"<(str|int|bool|path|list\[.*?\])>", "\n".join(options)), done.stdout
    assert "HOME" in done.stdout


def test_help_marks_required_options_and_names_their_values() -> None:
    done = fla_sim("cert", "issue", "--help", COLUMNS="200")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"(--[a-z-]+)\s.*", done.stdout)}
    assert "KBO" in rows["--company"] and "[required]" in rows["--company"]
    assert "DIR" in rows["--out"] and "[required]" in rows["--out"]
    assert "USER" in rows["--channel"] and "[required]" not in rows["--channel"]
    done = fla_sim("channel", "add", "--help", COLUMNS="200")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"(--[a-z-]+)\s.*", done.stdout)}
    assert "FILE.pub" in rows["--ssh-key"] and "[required]" in rows["--ssh-key"]
    assert "NNNNNN" in rows["--sender"] and "USER" in rows["--user"]


def test_a_port_in_use_is_exit_2_with_the_fix(tmp_path: Path) -> None:
    home = SimulatorHome.init(tmp_path / "sim")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = fla_sim("serve", str(home.path), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr == (f"fla-sim: error: 127.0.0.1:{port} is in use by another program; "
                           "stop it, or give --port PORT (0: any free port)\n")
