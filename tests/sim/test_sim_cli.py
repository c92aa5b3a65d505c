"""``fla-sim``: exit codes, one-line errors, nothing stored on refusal (design 4)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest

from fla_core import pki
from fla_sim.cli import main
from fla_sim.config import SimulatorHome
from fla_sim.store import Journal

FI = "FI.FLAC.123456.20260316.00001.T.1.1"
CHANNEL = ["--user", "acme-payroll", "--quality", "social-secretariat",
           "--company", "0123456749", "--sender", "123456"]
MANDATE = ["--employer", "0897223670", "--application", "FLAC", "--level", "1"]


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[asyncssh.SSHKey, Path]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = tmp_path_factory.mktemp("keys") / "acme.pub"
    key.write_public_key(str(pub))
    return key, pub


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory,
             ssh_key: tuple[asyncssh.SSHKey, Path]) -> Path:
    path = tmp_path_factory.mktemp("cli") / "home"
    assert main(["init", str(path)]) == 0
    assert main(["channel", "add", str(path), *CHANNEL, "--ssh-key", str(ssh_key[1]),
                 "--application", "FLAC", "--application", "dmfa"]) == 0
    return path


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "home")
    return tmp_path / "home"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_then_channel_list_shows_the_channel(home: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "channel", "list", str(home), "--json")
    assert code == 0
    assert json.loads(out) == [{
        "user": "acme-payroll", "quality": "SOCIAL_SECRETARIAT", "company": "0123456749",
        "sender": "123456", "applications": ["DMFA", "FLAC"], "ssh_keys": 1,
        "certificates": [], "quota_bytes": 1 << 30}]
    code, out, _ = run_cli(capsys, "channel", "list", str(home))
    assert code == 0 and "acme-payroll" in out and "SOCIAL_SECRETARIAT" in out


def test_init_on_an_existing_home_is_exit_2(home: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "init", str(home))
    assert code == 2
    assert err.count("\n") == 1 and "already a simulator home" in err and "--force" in err


@pytest.mark.parametrize("sender", ["000000", "999999"])
def test_reserved_sender_is_refused_with_exit_2_and_nothing_stored(
        home: Path, sender: str, ssh_key: tuple[asyncssh.SSHKey, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    before = (home / "simulator.toml").read_bytes()
    code, _, err = run_cli(capsys, "channel", "add", str(home), "--user", "second",
                           "--quality", "employer", "--company", "0897223670",
                           "--sender", sender, "--ssh-key", str(ssh_key[1]))
    assert code == 2
    assert err.startswith("fla-sim: error: ") and "reserved" in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert (home / "simulator.toml").read_bytes() == before
    assert not (home / "channels" / "second").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--user", "..", "channel user '..': not a plain name"),  # its root: the home itself
    ("--user", ".", "channel user '.': not a plain name"),
    ("--user", "-x", "starting with a letter or a digit"),
    ("--user", "Acme-Payroll", "already exists in"),
    # digits, but not the 0-9 of every file name: the channel could never send a file
    ("--sender", "\u0661\u0662\u0663\u0664\u0665\u0666", "a sender number is 6 digits 0-9"),
    ("--company", "0897223607", "bad check digits"),
])
def test_refused_channel_is_exit_2_and_nothing_stored(
        home: Path, option: str, value: str, message: str,
        ssh_key: tuple[asyncssh.SSHKey, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = (home / "simulator.toml").read_bytes()
    listing = sorted(os.listdir(home))
    args = {"--user": "second", "--quality": "employer", "--company": "0897223670",
            "--sender": "654321", option: value}
    code, _, err = run_cli(capsys, "channel", "add", str(home),
                           *[x for kv in args.items() for x in kv], "--ssh-key", str(ssh_key[1]))
    assert code == 2
    assert err.startswith("fla-sim: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert (home / "simulator.toml").read_bytes() == before
    assert sorted(os.listdir(home)) == listing  # no IN, OUT, ... in the home
    assert sorted(os.listdir(home / "channels")) == ["acme-payroll"]


def test_enterprise_numbers_are_read_as_fla_reads_them(
        home: Path, ssh_key: tuple[asyncssh.SSHKey, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "channel", "add", str(home), "--user", "second",
                             "--quality", "employer", "--company", "BE 0897.223.670",
                             "--sender", "654321", "--ssh-key", str(ssh_key[1]))
    assert code == 0, err
    assert "company 0897223670" in out
    code, _, err = run_cli(capsys, "mandate", "add", str(home), "--employer", "897.223.670",
                           "--representative", "BE0123456749", "--level", "1", "--start", "20241")
    assert code == 0, err
    config = SimulatorHome(home).load()
    assert [c.company for c in config.channels] == ["0123456749", "0897223670"]
    assert [(m.employer, m.representative) for m in config.mandates] == [
        ("0897223670", "0123456749")]


def test_a_mandate_with_a_wrong_check_digit_is_exit_2(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (home / "simulator.toml").read_bytes()
    code, _, err = run_cli(capsys, "mandate", "add", str(home), *MANDATE,
                           "--representative", "0123456700", "--start", "20241")
    assert code == 2 and err.count("\n") == 1
    assert "representative must be a valid 10-digit enterprise number" in err
    assert (home / "simulator.toml").read_bytes() == before


def test_overlapping_level1_mandate_is_exit_2_and_nothing_stored(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "mandate", "add", str(home), *MANDATE,
                   "--representative", "0123456749", "--start", "20241")[0] == 0
    assert run_cli(capsys, "mandate", "add", str(home), "--employer", "0897223670",
                   "--representative", "0123456749", "--application", "FLAC",
                   "--level", "2", "--sender", "123456")[0] == 0
    before = (home / "simulator.toml").read_bytes()
    code, _, err = run_cli(capsys, "mandate", "add", str(home), *MANDATE,
                           "--representative", "0477472701", "--start", "20252")
    assert code == 2 and "M4" in err and err.count("\n") == 1
    assert (home / "simulator.toml").read_bytes() == before
    code, out, _ = run_cli(capsys, "mandate", "list", str(home), "--json")
    assert code == 0 and [m["level"] for m in json.loads(out)] == [1, 2]


def test_malformed_mandate_is_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "mandate", "add", str(home), *MANDATE,
                           "--representative", "0123456749", "--start", "2024Q1")
    assert code == 2 and "quarter" in err


def test_trust_add_registers_the_ca(home: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    ca = pki.make_ca("Sender CA", not_before=datetime(2026, 1, 1, tzinfo=UTC))
    pem = pki.write_pem(tmp_path / "sender-ca.pem", ca.cert)
    code, out, _ = run_cli(capsys, "trust", "add", str(home), str(pem))
    assert code == 0 and "trust/sender-ca.pem" in out
    assert "trust/sender-ca.pem" in SimulatorHome(home).load().trust_anchors


def test_usage_errors_and_missing_files_are_exit_2(home: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "channel", "add", str(home), "--user")[0] == 2
    assert run_cli(capsys, "frobnicate")[0] == 2
    code, _, err = run_cli(capsys, "status", str(tmp_path / "nowhere"))
    assert code == 2 and "fla-sim init" in err
    code, _, err = run_cli(capsys, "channel", "add", str(home), *CHANNEL[:1], "other",
                           *CHANNEL[2:], "--ssh-key", str(tmp_path / "missing.pub"))
    assert code == 2 and "missing.pub" in err


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "-v", "status", str(tmp_path / "nowhere"))
    assert code == 2 and "Traceback" in err


def test_status_lists_the_journal(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "status", str(home), "--json")
    assert code == 0 and json.loads(out) == {"sets": [], "files": [], "answers": [],
                                             "set_events": []}
    journal = Journal(SimulatorHome(home).journal_path)
    journal.record_file("acme-payroll", "INTEST", FI, 42,
                        datetime(2026, 3, 16, 9, 15, tzinfo=UTC))
    journal.close()
    code, out, _ = run_cli(capsys, "status", str(home), "--json")
    assert code == 0
    files = json.loads(out)["files"]
    assert [(f["channel"], f["directory"], f["name"], f["size"]) for f in files] == \
        [("acme-payroll", "INTEST", FI, 42)]
    code, out, _ = run_cli(capsys, "status", str(home))
    assert code == 0 and FI in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_accepts_uploads_and_stops_cleanly_on_a_signal(
        home: Path, ssh_key: tuple[asyncssh.SSHKey, Path], signum: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "fla_sim.cli", "serve", str(home),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        port = int(line.split("127.0.0.1:")[1].split(";")[0])

        async def upload() -> None:
            async with asyncssh.connect("127.0.0.1", port, username="acme-payroll",
                                        client_keys=[ssh_key[0]], known_hosts=None,
                                        agent_path=None) as conn, \
                    conn.start_sftp_client() as sftp, sftp.open("INTEST/" + FI, "wb") as f:
                await f.write(b"<FLAFile/>")
        asyncio.run(upload())
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert os.listdir(home / "channels" / "acme-payroll" / "INTEST") == [FI]
