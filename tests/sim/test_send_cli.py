"""``fla send`` and ``fla poll`` against a real simulator on loopback (exit codes, JSON, errors)."""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.triplet import write_fs
from fla_sim.pytest_plugin import FixedClock

cli.load_command_modules()

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
DAY = "20260316"
TAIL = f"FLAC.123456.{DAY}"
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(AT)


def accepted_triplet(folder: Path, seq: str, signer: object) -> Path:
    """The 7.2 file without its CANCEL declaration (all accepted), signed, with its GO."""
    folder.mkdir(parents=True, exist_ok=True)
    data = re.sub(rb"\s*<Declaration>\s*<DeclarationRef>D-0897223670-2025-02.*?</Declaration>",
                  b"", FIXTURE.read_bytes(), flags=re.S)
    fi = folder / f"FI.{TAIL}.{seq}.T.1.1"
    fi.write_bytes(data)
    write_fs(fi, signer, signing_time=AT)
    go = folder / f"GO.{TAIL}.{seq}.T.1"
    go.write_bytes(b"")
    return go


def channel_args(sim, channel, port: int | None = None) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port or sim.port), "--user", channel.user,
            "--identity", str(channel.ssh_key)]


def run(*args: str):
    return CliRunner().invoke(cli.app, list(args))


def one_line_error(res) -> str:
    """The stderr of a failed command: exactly one ``fla: error:`` line, no traceback."""
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fla: error: "), res.stderr
    return lines[0]


def test_send_wait_json_reports_an_accepted_set(fla_sim, fla_channel, fla_sim_home, tmp_path):
    folder = tmp_path / "outbox"
    go = accepted_triplet(folder, "00001", fla_channel.signer)
    res = run("send", str(folder), *channel_args(fla_sim, fla_channel), "--wait", "--json",
              "--timeout", "20", "--trust", str(fla_sim_home.ca_cert_path))
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)
    assert result["trigger"] == go.name
    assert result["acrf"]["result_code"] == 1 and result["acrf"]["error_id"] is None
    assert result["noti"]["result_code"] == 1
    assert [d["status"] for d in result["noti"]["declarations"]] == ["ACCEPTED"]
    assert "signature_problem" not in result
    saved = sorted(p.name for p in (folder / "answers").iterdir())
    assert saved == sorted(f"{p}.{kind}.999999.{DAY}.{seq}.T" for p, kind, seq in [
        ("FO", "ACRF", "00001"), ("FS", "ACRF", "00001"),
        ("FO", "NOTI", "00002"), ("FS", "NOTI", "00002")])


def test_send_wait_human_output(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    accepted_triplet(folder, "00001", fla_channel.signer)
    res = run("send", str(folder), *channel_args(fla_sim, fla_channel), "--wait",
              "--timeout", "20", "--answers", str(tmp_path / "got"))
    assert res.exit_code == 0, res.output
    assert "uploaded 3 file(s)" in res.stdout and "accepted" in res.stdout
    assert len(list((tmp_path / "got").iterdir())) == 4
    # a second run resumes: nothing left to upload
    again = run("send", str(folder), *channel_args(fla_sim, fla_channel))
    assert again.exit_code == 0 and "uploaded 0 file(s), 3 already sent" in again.stdout


def test_a_rejected_set_exits_1(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    go = folder / f"GO.{TAIL}.00001.T.1"  # GO without FI: partial upload (spec 5.7)
    go.write_bytes(b"")
    res = run("send", str(folder), *channel_args(fla_sim, fla_channel), "--wait", "--json",
              "--timeout", "20")
    assert res.exit_code == 1, res.output
    (result,) = json.loads(res.stdout)
    assert result["trigger"] == go.name
    assert result["acrf"]["result_code"] == 0 and result["acrf"]["error_id"] == "ACRF-142"
    assert "noti" not in result


def test_poll_with_nothing_waiting(fla_sim, fla_channel, tmp_path):
    res = run("poll", *channel_args(fla_sim, fla_channel), "--out", str(tmp_path / "in"))
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "no answers waiting"


def test_poll_fetches_what_send_left(fla_sim, fla_channel, fla_sim_home, tmp_path):
    folder = tmp_path / "outbox"
    go = accepted_triplet(folder, "00001", fla_channel.signer)
    assert run("send", str(folder), *channel_args(fla_sim, fla_channel)).exit_code == 0
    fla_sim.drain()
    res = run("poll", *channel_args(fla_sim, fla_channel), "--out", str(tmp_path / "in"),
              "--json", "--trust", str(fla_sim_home.ca_cert_path), "--keep")
    assert res.exit_code == 0, res.output
    (result,) = json.loads(res.stdout)
    assert result["trigger"] == go.name and result["acrf"]["result_code"] == 1
    assert len(fla_sim.answers(fla_channel.user, "OUTTEST")) == 6  # --keep: still there
    res = run("poll", *channel_args(fla_sim, fla_channel), "--out", str(tmp_path / "in2"))
    assert res.exit_code == 0 and "ACRF accepted" in res.stdout
    assert fla_sim.answers(fla_channel.user, "OUTTEST") == []


def test_poll_flags_answers_signed_by_an_untrusted_ca(fla_sim, fla_channel, fla_pki, tmp_path):
    folder = tmp_path / "outbox"
    accepted_triplet(folder, "00001", fla_channel.signer)
    assert run("send", str(folder), *channel_args(fla_sim, fla_channel)).exit_code == 0
    fla_sim.drain()
    # fla_pki's CA issued the channel's signer, not the simulator's answer certificate
    res = run("poll", *channel_args(fla_sim, fla_channel), "--out", str(tmp_path / "in"),
              "--json", "--trust", str(fla_pki.ca_path))
    assert res.exit_code == 1
    (result,) = json.loads(res.stdout)
    assert sorted(result["answers"]) == [f"FO.ACRF.999999.{DAY}.00001.T",
                                         f"FO.NOTI.999999.{DAY}.00002.T"]
    assert result["acrf"]["result_code"] == 1 and result["noti"]["result_code"] == 1
    # the answers are fine: only their chain fails, S6 (605), not any other check
    assert re.fullmatch(rf"FO\.(ACRF|NOTI)\.999999\.{DAY}\.0000[12]\.T: ACRF-605 .*",
                        result["signature_problem"]), result["signature_problem"]


@pytest.mark.parametrize("command", ["send", "poll"])
def test_missing_user_is_a_usage_error(command, tmp_path):
    folder = tmp_path / "outbox"
    folder.mkdir()
    args = [str(folder)] if command == "send" else []
    res = run(command, *args, "--port", "1", "--identity", str(tmp_path / "key"))
    assert res.exit_code == 2
    assert one_line_error(res) == (f"fla: error: Missing option '--user'; see 'fla {command} "
                                   "--help'")


def test_a_closed_port_is_a_clear_error(fla_channel, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "outbox"
    accepted_triplet(folder, "00001", fla_channel.signer)
    res = run("send", str(folder), "--host", "127.0.0.1", "--port", str(port),
              "--user", fla_channel.user, "--identity", str(fla_channel.ssh_key))
    assert res.exit_code == 2
    line = one_line_error(res)
    assert f"cannot connect to 127.0.0.1:{port}" in line and "unexpected" not in line


def test_send_of_a_folder_without_triplets(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("send", str(tmp_path / "empty"), "--user", "u")
    assert res.exit_code == 2 and "no FI/FS/GO/TD files" in one_line_error(res)
    res = run("send", str(tmp_path / "missing"), "--user", "u")
    assert res.exit_code == 2 and "not a folder" in one_line_error(res)


def test_a_refused_key_is_a_clear_error(fla_sim, fla_channel, tmp_path):
    import asyncssh

    other = tmp_path / "other-key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(other))
    res = run("poll", "--port", str(fla_sim.port), "--user", fla_channel.user,
              "--identity", str(other), "--out", str(tmp_path / "in"))
    assert res.exit_code == 2 and "refused the key" in one_line_error(res)


def test_send_json_without_wait_reports_the_upload(fla_sim, fla_channel, tmp_path):
    folder = tmp_path / "outbox"
    go = accepted_triplet(folder, "00001", fla_channel.signer)
    res = run("send", str(folder), *channel_args(fla_sim, fla_channel), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["uploaded"][-1] == go.name and report["skipped"] == []
    assert report["triggers"] == [go.name]


def test_rerun_of_send_wait_shows_the_answers_saved_by_the_first_run(fla_sim, fla_channel,
                                                                     tmp_path):
    folder = tmp_path / "outbox"
    go = accepted_triplet(folder, "00001", fla_channel.signer)
    args = ["send", str(folder), *channel_args(fla_sim, fla_channel), "--wait", "--json",
            "--timeout", "20"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    # nothing is left on the channel, yet the rerun is complete from the saved answers
    assert fla_sim.answers(fla_channel.user, "OUTTEST") == []
    again = run(*args[:-1], "0")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(first.stdout)
    assert json.loads(again.stdout)[0]["trigger"] == go.name


@pytest.mark.parametrize(("make", "cause"), [
    (lambda p: None, "no such file; give the SSH private key registered for the channel"),
    (lambda p: p.mkdir(), "is a folder; give the SSH private key file itself"),
    (lambda p: asyncssh_key().write_public_key(str(p)),
     "is a public key; give the private key (the file without .pub)"),
    (lambda p: asyncssh_key().write_private_key(str(p), "pkcs8-pem", passphrase="pw"),
     "the key is protected by a passphrase"),
], ids=["missing", "folder", "public-key", "passphrase"])
@pytest.mark.parametrize("command", ["send", "poll"])
def test_identity_errors_name_the_real_cause(tmp_path, command, make, cause):
    """Each -i KEY mistake says what is wrong, before any connection is tried."""
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / f"FI.{TAIL}.00001.T.1.1").write_bytes(b"<x/>")
    (folder / f"GO.{TAIL}.00001.T.1").write_bytes(b"")
    identity = tmp_path / "id_ed25519"
    make(identity)
    args = [str(folder)] if command == "send" else []
    res = run(command, *args, "--port", "1", "--user", "u", "--identity", str(identity))
    assert res.exit_code == 2
    assert one_line_error(res).startswith(f"fla: error: identity file {identity}: {cause}")


def asyncssh_key():
    import asyncssh

    return asyncssh.generate_private_key("ssh-ed25519")


def test_an_identity_that_is_not_a_key_is_named(tmp_path):
    bad = tmp_path / "id_ed25519"
    bad.write_text("not a key\n")
    res = run("poll", "--port", "1", "--user", "u", "--identity", str(bad))
    assert res.exit_code == 2
    assert f"identity file {bad}: not a usable SSH private key" in one_line_error(res)
