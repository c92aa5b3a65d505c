"""The `fla` command line: build, sign, verify, check, plugins; exit codes and error lines."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
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


def one_line(res) -> str:
    """The stderr of a failed command: exactly one line, no traceback."""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


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
    res = run(runner, "check", EXPORTS / "valid.csv", "--company", "0123456749")
    assert res.exit_code == 2
    assert one_line(res) == ("fla: error: Missing option '--quality'; see 'fla check --help'")


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
        "fla_input_formats", "fla_read_declarations", "fla_write_export"]
    assert by_name["fla_core.qualities.builtin"]["builtin"] is True
    table = run(runner, "plugins")
    assert "fla_core.formats.json_format" in table.stdout


def test_commands_from_other_modules_are_loaded(tmp_path, monkeypatch):
    mod = tmp_path / "fla_extra_cmd.py"
    mod.write_text("from fla_core.cli import app\n\n@app.command('hello')\n"
                   "def hello() -> None:\n    print('hello from a module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cli.load_command_modules(["fla_extra_cmd"])
    res = CliRunner().invoke(cli.app, ["hello"])
    assert res.exit_code == 0 and res.stdout.strip() == "hello from a module"
    broken = tmp_path / "fla_broken_cmd.py"
    broken.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz") as raised:
        cli.load_command_modules(["fla_broken_cmd"])
    assert not isinstance(raised.value, cli.MissingCommandModule)  # the dependency is named


def test_every_listed_command_module_exists():
    cli.load_command_modules()  # raises MissingCommandModule for a listed module that is not there
    assert "fla_core.cli_certify" not in cli.COMMAND_MODULES.values()  # comes with certify
    # demo comes from the simulator package through an entry point (pip install -e . registers it)
    assert cli.command_entry_points()["demo"] == "fla_sim.demo"


SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_core_never_imports_the_simulator():
    """No module of fla_core names fla_sim in an import (also not inside a function)."""
    import ast

    offenders = []
    for path in sorted((SRC / "fla_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(SRC)}:{node.lineno}: {n}" for n in names
                          if n == "fla_sim" or n.startswith("fla_sim.")]
    assert offenders == []


def imported_by_fla(*args: str) -> set[str]:
    """The top-level fla_sim/asyncssh modules a fresh ``fla ARGS`` process has imported."""
    code = ("import sys\nfrom fla_core import cli\nsys.argv = ['fla', *sys.argv[1:]]\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules\n"
            "              if m.startswith(('fla_sim', 'asyncssh'))}), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)
    return set(json.loads(done.stderr.strip().splitlines()[-1].replace("'", '"')))


def test_core_commands_import_neither_the_simulator_nor_asyncssh(tmp_path):
    assert imported_by_fla("build", "--help") == set()
    assert imported_by_fla("build", str(EXPORTS / "valid.csv"), *BUILD,
                           "--out", str(tmp_path)) == set()
    assert list(tmp_path.glob("FI.*"))  # the build did run
    assert imported_by_fla("check", "--help") == set()
    # send needs the SFTP client (asyncssh), never the simulator
    assert imported_by_fla("send", "--help") == {"asyncssh"}
    # the help lists every command, demo too, without importing their modules
    assert imported_by_fla("--help") == set()
    assert imported_by_fla() == set()  # "fla" alone shows the help
    # the simulator is loaded when demo itself is asked for
    assert imported_by_fla("demo", "--help") == {"fla_sim", "asyncssh"}


@pytest.mark.parametrize("name", ["fla_core.no_such_module", "no_such_package.cli"])
def test_a_listed_command_module_that_is_missing_is_an_error(name):
    with pytest.raises(cli.MissingCommandModule, match=re.escape(repr(name))):
        cli.load_command_modules(["fla_core.cli_channel", name])


def test_fla_does_not_start_with_a_listed_module_missing(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES",
                        {**cli.COMMAND_MODULES, "ghost": "fla_core.cli_ghost"})
    monkeypatch.setattr(sys, "argv", ["fla", "--help"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the help: a command of the list would be missing
    assert captured.err.strip().splitlines() == [
        "fla: error: command module 'fla_core.cli_ghost' is listed in "
        "fla_core.cli.COMMAND_MODULES but is not installed; reinstall fla-batch (pip install -e "
        ".) or remove it from the list"]


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


# --- signer files: each mistake is reported as itself, not as a missing password -------------

Mistake = tuple[list[str], str | None, str]
SIGNER_MISTAKES: list[Mistake] = [
    # (signer options, FLA_KEY_PASSWORD, the cause the one error line must name)
    (["--key", "plain-key.pem", "--cert", "missing.pem"], None,
     "missing.pem: no such file; give the path of the certificate file"),
    (["--key", "plain-key.pem", "--cert", "."], None,
     "is a folder; give the certificate file itself"),
    (["--key", "plain-key.pem", "--cert", "plain-key.pem"], None,
     "plain-key.pem: holds a private key, not a certificate"),
    (["--key", "other-key.pem", "--cert", "cert.pem"], None,
     "other-key.pem: this private key does not match the certificate"),
    (["--key", "missing.pem", "--cert", "cert.pem"], None,
     "missing.pem: no such file; give the path of the private key file"),
    (["--key", "cert.pem", "--cert", "cert.pem"], None,
     "cert.pem: holds a certificate, not a private key"),
    # an encrypted key with a wrong certificate path: the path is the problem, not the password
    (["--key", "key.pem", "--cert", "missing.pem"], None, "missing.pem: no such file"),
    (["--p12", "missing.p12"], None,
     "missing.p12: no such file; give the path of the PKCS#12 file"),
    (["--p12", "."], None, "is a folder; give the PKCS#12 file itself"),
    (["--p12", "cert.pem"], None, "cert.pem: holds a certificate, not a PKCS#12 file"),
]
PASSWORD_MISTAKES: list[Mistake] = [
    (["--key", "key.pem", "--cert", "cert.pem"], None,
     "key.pem: the private key is encrypted and needs its password: set FLA_KEY_PASSWORD"),
    (["--p12", "signer.p12"], None,
     "signer.p12: the PKCS#12 file is protected and needs its password: set FLA_KEY_PASSWORD"),
    (["--key", "key.pem", "--cert", "cert.pem"], "nope",
     "key.pem: wrong password for the private key; correct or unset FLA_KEY_PASSWORD"),
    (["--p12", "signer.p12"], "nope",
     "signer.p12: wrong password for the PKCS#12 file"),
    (["--key", "plain-key.pem", "--cert", "cert.pem"], "s3cret",
     "plain-key.pem: the private key is not encrypted, but a password was given"),
]


def signer_args(keys: Path, options: list[str]) -> list[str]:
    return [o if o.startswith("--") else str(keys / o) for o in options]


@pytest.mark.parametrize("command", ["sign", "build"])
@pytest.mark.parametrize(("options", "password", "cause"), SIGNER_MISTAKES + PASSWORD_MISTAKES)
def test_signer_errors_name_the_real_cause(runner, tmp_path, keys, command, options, password,
                                           cause):
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    fi.write_bytes(b"<x/>")
    target = (["sign", fi] if command == "sign" else
              ["build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path / "out", "--sign"])
    env = {cli.PASSWORD_ENV: password} if password is not None else None
    res = run(runner, *target, *signer_args(keys, options), env=env)
    assert res.exit_code == 2
    line = one_line(res)
    assert cause in line
    if (options, password, cause) in SIGNER_MISTAKES:
        # the old trap answered every mistake "needs a password; set FLA_KEY_PASSWORD"
        assert "password" not in line.lower()
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("FS.*"))


# --- fla check: nothing to check is an error, not "no problems found" -------------------------

def test_check_refuses_what_holds_nothing_to_check(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").mkdir()
    td_only = tmp_path / "td-only"
    td_only.mkdir()
    (td_only / "TD.FLAC.123456.20260316.00001.T.1").write_bytes(b"")
    (td_only / "notes.txt").write_text("not a channel file\n")
    cases = [
        (tmp_path / "empty", "no FI/FS/GO files in this folder, nothing to check"),
        (tmp_path / "x.csv", "x.csv: is a folder, not a CSV export; give the export file"),
        (tmp_path / "missing", "missing: no such file or folder"),
        (td_only, "no FI/FS/GO files in this folder"),
        (td_only / "TD.FLAC.123456.20260316.00001.T.1", "no FI/FS/GO files to judge for the set"),
    ]
    for path, message in cases:
        res = run(runner, "check", path, *BUILD)
        assert res.exit_code == 2, (path, res.output)
        assert message in one_line(res) and res.stdout == "", path
    # every path is looked at first: a bad last path stops the run before any report
    res = run(runner, "check", EXPORTS / "valid.csv", tmp_path / "empty", *BUILD)
    assert res.exit_code == 2 and res.stdout == ""


@pytest.mark.parametrize(("name", "text"), [
    ("header-only.csv", (EXPORTS / "valid.csv").read_text().splitlines()[0] + "\n"),
    ("empty-list.json", "[]\n"),
])
def test_an_export_without_rows_is_a_problem(runner, tmp_path, name, text):
    export = tmp_path / name
    export.write_text(text)
    res = run(runner, "check", export, *CHANNEL, "--json")
    assert res.exit_code == 1, res.output
    (finding,) = json.loads(res.stdout)
    assert finding["code"] == "input" and "no declarations" in finding["message"]
    res = run(runner, "build", export, *BUILD, "--out", tmp_path / "out")
    assert res.exit_code == 1 and "no declarations" in res.stderr
    assert not (tmp_path / "out").exists()


# --- fla build: identifiers checked, nothing left behind on failure ---------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--company", "0123456700"],
     "--company '0123456700': wrong check digits (the last two digits are 97 - the first "
     "eight mod 97); check the enterprise number"),
    (["--company", "2000000042"], "--company '2000000042' is not an enterprise number"),
    (["--company", "BE 0123.456.7"], "--company 'BE 0123.456.7' is not an enterprise number"),
    (["--sender", "000000"], "--sender 000000: 000000 and 999999 are reserved"),
    (["--sender", "999999"], "--sender 999999: 000000 and 999999 are reserved"),
    # digits, but no file name can carry them (names take 0-9 only)
    (["--sender", "\u0661\u0662\u0663\u0664\u0665\u0666"],
     "--sender '\u0661\u0662\u0663\u0664\u0665\u0666' must be the 6-digit sender number"),
])
def test_build_checks_company_and_sender_numbers(runner, tmp_path, args, message):
    values = {"--quality": "employer", "--sender": "123456", "--company": "0123456749"}
    values.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in values.items() for x in kv]
    res = run(runner, "build", EXPORTS / "valid.csv", *flat, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert message in one_line(res)
    assert not (tmp_path / "out").exists()


def test_build_accepts_the_written_forms_of_a_good_company_number(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "valid.csv", "--quality", "employer", "--sender",
              "123456", "--company", "BE 0123.456.749", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    fi = Path(json.loads(res.stdout)["files"][0]).read_text()
    assert "<SenderCompanyID>0123456749</SenderCompanyID>" in fi


def test_verify_checks_the_company_number(runner, tmp_path, keys):
    fi = tmp_path / "FI.FLAC.123456.20260316.00001.T.1.1"
    fi.write_bytes(b"<x/>")
    res = run(runner, "verify", fi, "--trust", keys / "ca.pem", "--company", "0123456700")
    assert res.exit_code == 2 and "--company '0123456700': wrong check digits" in one_line(res)


def test_failed_build_removes_the_folders_it_created(runner, tmp_path):
    out = tmp_path / "new" / "nested"
    res = run(runner, "build", EXPORTS / "malformed-row.csv", *BUILD, "--out", out)
    assert res.exit_code == 1
    assert list(tmp_path.iterdir()) == []  # not even the sequence state in a hidden file


def test_failed_build_keeps_a_folder_that_was_there(runner, tmp_path):
    res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    (tmp_path / "notes.txt").write_text("mine\n")
    before = sorted(p.name for p in tmp_path.iterdir())  # FI, GO, notes, sequence state
    assert ".fla-sequences" in before
    res = run(runner, "build", EXPORTS / "malformed-row.csv", *BUILD, "--out", tmp_path)
    assert res.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_build_out_must_be_a_folder(runner, tmp_path):
    (tmp_path / "taken").write_text("a file\n")
    res = run(runner, "build", EXPORTS / "valid.csv", *BUILD, "--out", tmp_path / "taken")
    assert res.exit_code == 2 and "--out" in one_line(res) and "is a file" in one_line(res)


# --- usage errors and help ----------------------------------------------------------------------

def test_usage_errors_are_one_line(runner):
    res = run(runner, "build", EXPORTS / "valid.csv", "--company", "0123456749")
    assert res.exit_code == 2
    assert one_line(res) == "fla: error: Missing option '--sender'; see 'fla build --help'"
    res = run(runner, "biuld")
    assert res.exit_code == 2 and "No such command 'biuld'" in one_line(res)


# command -> option -> (placeholder, required); flags have none and say nothing of their type
HELP = {
    "build": {"--sender": ("NNNNNN", True), "--company": ("KBO", True), "--out": ("DIR", True),
              "--quality": ("QUALITY", True), "--key": ("FILE", False),
              "--cert": ("FILE", False), "--p12": ("FILE", False),
              "--date": ("YYYY-MM-DD", False), "--format": ("NAME", False),
              "--env": ("R|T|S", False)},
    "sign": {"--key": ("FILE", False), "--p12": ("FILE", False)},
    "verify": {"--trust": ("FILE", True), "--company": ("KBO", False), "--at": ("TIME", False)},
    "check": {"--quality": ("QUALITY", True), "--company": ("KBO", True),
              "--sender": ("NNNNNN", False), "--trust": ("FILE", False),
              "--today": ("YYYY-MM-DD", False)},
    "send": {"--user": ("USER", True), "--host": ("HOST", False), "--port": ("PORT", False),
             "--identity": ("KEY", False), "--known-hosts": ("FILE", False),
             "--answers": ("DIR", False), "--timeout": ("SECONDS", False)},
    "poll": {"--user": ("USER", True), "--identity": ("KEY", False), "--out": ("DIR", False)},
}
USAGE = {"build": "build [OPTIONS] {FILE}", "sign": "sign [OPTIONS] {FI}",
         "verify": "verify [OPTIONS] {FI} [FS]", "check": "check [OPTIONS] {PATH}",
         "send": "send [OPTIONS] {DIR}", "poll": "poll [OPTIONS]"}


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_shows_placeholders_and_marks_required_options(command):
    cli.load_command_modules()
    res = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"Usage: fla {USAGE[command]}" in res.stdout
    # no option shows a type instead of a placeholder, no switch shows one at all
    assert not re.search(r"<(str|bool|int|float)>", res.stdout), res.stdout
    rows = {m.group(2): m for m in re.finditer(
        r"│ (\*)?\s*(--[\w-]+)(?:\s+-\w)?\s+(\S+)", res.stdout)}
    for option, (placeholder, required) in HELP[command].items():
        row = rows[option]
        assert row.group(3) == placeholder, (option, row.group(0))
        assert (row.group(1) == "*") == required, (option, row.group(0))


@pytest.mark.parametrize(("field", "value", "code", "where"), [
    ("inss", "93051822362", "00122-004", "field $.declarations[0].workers[0].inss"),
    ("end_date", "2025-03-01", "00136-910",
     "field $.declarations[0].workers[0].trainings[0].end_date"),
    ("employer_company_id", "0897223671", "00112-004",
     "field $.declarations[0].employer_company_id"),
])
def test_check_locates_a_json_exports_anomaly_by_json_path(runner, tmp_path, field, value, code,
                                                           where):
    """JSON has no lines through the public json API: the value's JSON path says where."""
    doc = json.loads((EXPORTS / "valid.json").read_text())
    declaration = doc["declarations"][0]
    worker = declaration["workers"][0]
    holder = (declaration if field == "employer_company_id"
              else worker if field == "inss" else worker["trainings"][0])
    holder[field] = value
    export = tmp_path / "broken.json"
    export.write_text(json.dumps(doc))
    res = run(runner, "check", export, *CHANNEL, "--today", "2025-12-31", "--json")
    assert res.exit_code == 1, res.output
    findings = json.loads(res.stdout)
    assert any(f["code"] == code and f["where"] == f"{export} {where}" for f in findings), \
        findings
