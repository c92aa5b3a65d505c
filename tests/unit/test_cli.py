"""The `fla` command line: build, sign, verify, check, plugins; exit codes and error lines."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fla_core import cli, pki

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
CHANNEL = ["--quality", "social-secretariat", "--company", "0123456749"]
BUILD = [*CHANNEL, "--sender", "123456"]
TODAY = date.today()


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.delenv(cli.PASSWORD_ENV, raising=False)
    return CliRunner()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A CA, a signer for 0123456749 as key+cert (encrypted key) and as PKCS#12."""
    d = tmp_path_factory.mktemp("pki")
    start = datetime.now(UTC) - timedelta(days=1)
    ca = pki.make_ca(not_before=start, key_type="ec-p256")
    signer = pki.issue_signer(ca, company_id="0123456749", key_type="ec-p256",
                              not_before=start)
    other = pki.issue_signer(ca, company_id="0897223670", key_type="ec-p256", not_before=start)
    pki.write_pem(d / "ca.pem", ca.cert)
    pki.write_pem(d / "key.pem", signer.key, password=b"s3cret")
    pki.write_pem(d / "plain-key.pem", signer.key)
    pki.write_pem(d / "cert.pem", signer.cert)
    pki.write_pem(d / "other-key.pem", other.key)
    pki.write_pem(d / "other-cert.pem", other.cert)
    pki.write_pkcs12(d / "signer.p12", signer, b"p12pass")
    return d


def run(runner, *args, env=None):
    return runner.invoke(cli.app, [str(a) for a in args], env=env)


def test_build_writes_an_unsigned_triplet(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path,
              "--date", TODAY.isoformat(), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    stamp = TODAY.strftime("%Y%m%d")
    assert [Path(f).name for f in data["files"]] == [
        f"FI.FLAC.123456.{stamp}.00001.T.1.1", f"GO.FLAC.123456.{stamp}.00001.T.1"]
    assert data["declarations"] == 1
    fi = Path(data["files"][0]).read_text()
    assert "<SenderQuality>SOCIAL_SECRETARIAT</SenderQuality>" in fi
    assert "<Hours>3.50</Hours>" in fi


def test_build_signed_with_encrypted_key_then_check_and_verify(runner, tmp_path, keys):
    env = {cli.PASSWORD_ENV: "s3cret"}
    res = run(runner, "build", EXPORTS / "valid.json", *BUILD, "--out", tmp_path, "--env", "R",
              "--sign", "--key", keys / "key.pem", "--cert", keys / "cert.pem", env=env)
    assert res.exit_code == 0, res.output
    fi, fs, go = (Path(line) for line in res.stdout.split())
    assert fs.name.startswith("FS.") and go.name.startswith("GO.")
    res = run(runner, "verify", fi, "--trust", keys / "ca.pem", "--company", "0123456749")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"valid: {fs.name} signed by ")
    res = run(runner, "check", tmp_path, *BUILD, "--trust", keys / "ca.pem", "--json")
    data = json.loads(res.stdout)
    assert data[0]["code"] == "ACRF" and data[0]["severity"] == "ok"
    assert "signatures not checked" not in data[0]["message"]
    assert res.exit_code == 0, res.output


def test_build_r_without_signature_is_refused(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path, "--env", "R")
    assert res.exit_code == 1
    assert "ACRF-122" in res.stderr and "requires a signature" in res.stderr
    assert not list(tmp_path.glob("FI.*"))


def test_build_with_input_problems_writes_nothing(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "malformed-row.csv", *BUILD, "--out", tmp_path)
    assert res.exit_code == 1
    assert "malformed-row.csv:3: 12 fields, the header has 15" in res.stderr
    assert "5 problem(s) in the input; nothing written" in res.stderr
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--quality", "boss"], "--quality: unknown quality 'boss'"),
    (["--sender", "12345"], "--sender '12345' must be the 6-digit sender number"),
    (["--env", "X"], "--env 'X' must be R, T or S"),
    (["--format", "yaml"], "no installed plugin reads format 'yaml'; installed formats: csv"),
])
def test_build_usage_errors_exit_2_with_one_line(runner, tmp_path, args, message):
    base = {"--quality": "employer", "--sender": "123456", "--env": "T"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    res = run(runner, "build", EXPORTS / "valid.csv", *flat, "--company", "0123456749",
              "--out", tmp_path, *(args if args[0] == "--format" else []))
    assert res.exit_code == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_build_unknown_suffix_lists_formats(runner, tmp_path):
    src = tmp_path / "export.txt"
    shutil.copy(EXPORTS / "valid.csv", src)
    res = run(runner, "build", src, *BUILD, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "cannot guess the format from '.txt'; give --format, one of: csv (.csv)" in res.stderr


def test_sign_with_p12_then_openssl_verifies(runner, tmp_path, keys):
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    shutil.copy(EXPORTS / "valid.csv", fi)  # any bytes: the signature covers them exactly
    res = run(runner, "sign", fi, "--p12", keys / "signer.p12",
              env={cli.PASSWORD_ENV: "p12pass"})
    assert res.exit_code == 0, res.output
    fs = tmp_path / "FS.FLAC.123456.20260316.00001.T.1.1"
    assert res.stdout.strip() == str(fs)
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: the oracle part of this test needs it")
    der = tmp_path / "fs.der"
    subprocess.run(["openssl", "base64", "-d", "-A", "-in", fs, "-out", der], check=True)
    done = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", der,
                           "-content", fi, "-CAfile", keys / "ca.pem", "-purpose", "any",
                           "-out", "/dev/null"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_sign_wrong_password_and_missing_password(runner, tmp_path, keys):
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    fi.write_bytes(b"<x/>")
    res = run(runner, "sign", fi, "--p12", keys / "signer.p12", env={cli.PASSWORD_ENV: "nope"})
    assert res.exit_code == 2 and "wrong password for the PKCS#12 file" in res.stderr
    res = run(runner, "sign", fi, "--key", keys / "key.pem", "--cert", keys / "cert.pem")
    assert res.exit_code == 2 and f"set {cli.PASSWORD_ENV}" in res.stderr
    res = run(runner, "sign", tmp_path / "data.xml", "--p12", keys / "signer.p12")
    assert res.exit_code == 2 and "not an FI name" in res.stderr


def test_verify_reports_the_spec_code(runner, tmp_path, keys):
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    fi.write_bytes(b"<FLAFile/>")
    res = run(runner, "sign", fi, "--key", keys / "other-key.pem", "--cert",
              keys / "other-cert.pem")
    assert res.exit_code == 0, res.output
    ok = run(runner, "verify", fi, "--trust", keys / "ca.pem")
    assert ok.exit_code == 0, ok.output  # without --company S10 is skipped
    wrong_company = run(runner, "verify", fi, "--trust", keys / "ca.pem", "--company",
                        "0123456749", "--json")
    assert wrong_company.exit_code == 1
    assert json.loads(wrong_company.stdout)["code"] == "153"
    fi.write_bytes(b"<FLAFile/> ")
    tampered = run(runner, "verify", fi, "--trust", keys / "ca.pem")
    assert tampered.exit_code == 1
    assert tampered.stderr.startswith("invalid: FS.FLAC.123456.20260316.00001.T.1.1: ACRF-125 ")
    missing = run(runner, "verify", fi)
    assert missing.exit_code == 2 and "--trust" in missing.stderr


@pytest.mark.parametrize(("name", "code", "where"), [
    ("bad-inss.csv", "00122-004", "bad-inss.csv:3 field inss"),
    ("bad-kbo.csv", "00112-004", "bad-kbo.csv:2 field employer_company_id"),
    ("end-before-start.csv", "00136-910", "end-before-start.csv:2 field end_date"),
    ("duplicate-training.csv", "00131-930", "duplicate-training.csv:3 field training_ref"),
    ("negative-hours.csv", "input", "negative-hours.csv:2 field hours"),
    ("unknown-column.csv", "input", "unknown-column.csv:1 field cost_centre"),
    ("malformed-row.csv", "input", "malformed-row.csv:3"),
])
def test_check_broken_exports(runner, name, code, where):
    res = run(runner, "check", EXPORTS / name, *CHANNEL, "--today", "2025-12-31", "--json")
    assert res.exit_code == 1, res.output
    findings = json.loads(res.stdout)
    assert any(f["code"] == code and f["where"].endswith(where) and f["severity"] != "W"
               for f in findings), findings


def test_check_valid_exports_pass(runner):
    res = run(runner, "check", EXPORTS / "valid.csv", EXPORTS / "valid.json",
              EXPORTS / "valid-rows.json", *CHANNEL, "--today", "2025-12-31")
    assert res.exit_code == 0, res.output
    assert "no problems found" in res.stdout


def test_check_needs_the_channel_profile(runner):
    res = run(runner, "check", EXPORTS / "valid.csv")
    assert res.exit_code == 2 and "--quality and --company" in res.stderr


def test_check_folder_reports_acrf_code(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    fi = next(tmp_path.glob("FI.*"))
    fi.write_bytes(fi.read_bytes().replace(b"<SenderNbr>123456</SenderNbr>",
                                           b"<SenderNbr>654321</SenderNbr>"))
    res = run(runner, "check", tmp_path, *BUILD, "--json")
    assert res.exit_code == 1
    (finding,) = json.loads(res.stdout)
    assert finding["code"] == "ACRF-158" and finding["severity"] == "error"


def test_plugins_lists_builtins_with_hooks(runner, monkeypatch):
    monkeypatch.setattr(cli, "out", Console(width=300))
    res = run(runner, "plugins", "--json")
    assert res.exit_code == 0, res.output
    by_name = {p["name"]: p for p in json.loads(res.stdout)}
    assert by_name["fla_core.formats.csv_format"]["hooks"] == [
        "fla_input_formats", "fla_read_declarations"]
    assert by_name["fla_core.qualities.builtin"]["builtin"] is True
    table = run(runner, "plugins")
    assert "fla_core.formats.json_format" in table.stdout


def test_commands_from_other_modules_are_loaded(tmp_path, monkeypatch):
    mod = tmp_path / "fla_extra_cmd.py"
    mod.write_text("from fla_core.cli import app\n\n@app.command('hello')\n"
                   "def hello() -> None:\n    print('hello from a module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cli.load_command_modules(["fla_extra_cmd", "fla_core.no_such_module"])
    res = CliRunner().invoke(cli.app, ["hello"])
    assert res.exit_code == 0 and res.stdout.strip() == "hello from a module"
    broken = tmp_path / "fla_broken_cmd.py"
    broken.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.load_command_modules(["fla_broken_cmd"])


def test_console_script_traceback_only_with_verbose(tmp_path):
    missing = tmp_path / "missing.csv"
    cmd = [sys.executable, "-c", "from fla_core.cli import main; main()"]
    args = ["build", str(missing), *BUILD, "--out", str(tmp_path)]
    quiet = subprocess.run([*cmd, *args], capture_output=True, text=True)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"fla: error: {missing}: cannot read: No such file or directory"]
    loud = subprocess.run([*cmd, "-v", *args], capture_output=True, text=True)
    assert loud.returncode == 2 and "Traceback" in loud.stderr


def test_check_one_file_judges_only_its_set(runner, tmp_path):
    for _ in range(2):
        res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path)
        assert res.exit_code == 0, res.output
    good, bad = sorted(tmp_path.glob("FI.*"))
    bad.write_bytes(b"<not-xml")
    res = run(runner, "check", good, *BUILD, "--json")
    assert res.exit_code == 0, res.output
    assert [f["code"] for f in json.loads(res.stdout) if f["severity"] != "W"] == ["ACRF"]
    res = run(runner, "check", tmp_path / bad.name.replace("FI.", "GO.", 1)[:-2], *BUILD,
              "--json")
    assert res.exit_code == 1
    assert [f["code"] for f in json.loads(res.stdout)] == ["ACRF-102"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal (POSIX)")
def test_password_prompt_on_a_terminal(tmp_path, keys):
    """Without FLA_KEY_PASSWORD, a terminal user is asked for the key password (hidden)."""
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    fi.write_bytes(b"<x/>")
    argv = [sys.executable, "-c", "from fla_core.cli import main; main()", "sign", str(fi),
            "--key", str(keys / "key.pem"), "--cert", str(keys / "cert.pem")]
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal
        os.environ.pop(cli.PASSWORD_ENV, None)
        os.execv(sys.executable, argv)
    seen, sent, status = b"", False, None
    deadline = time.monotonic() + 60
    try:
        while status is None and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):  # EIO once the child has exited
                    seen += os.read(fd, 4096)
            # click prints "Password for ...:" then getpass turns echo off and prints " ":
            # typing before that space would race the terminal mode change.
            if not sent and b"Password for" in seen and seen.endswith(b": "):
                os.write(fd, b"s3cret\n")
                sent = True
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status == 0, seen
    assert b"s3cret" not in seen  # hidden input
    assert (tmp_path / "FS.FLAC.123456.20260316.00001.T.1.1").stat().st_size > 0
