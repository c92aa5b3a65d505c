"""``fla-sim cert issue``: a signing certificate a channel accepts, from the simulator's CA."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from fla_core.responses import parse_answer
from fla_core.signing import encode_fs, load_pkcs12, load_signer, sign_file
from fla_sim.cli import main
from fla_sim.config import SimulatorHome

USER, KBO, SENDER = "acme-payroll", "0123456749", "123456"
OTHER_KBO = "0897223670"
EXPORT = Path(__file__).parents[2] / "fixtures" / "exports" / "valid.csv"


@pytest.fixture
def home(example_home: tuple[SimulatorHome, asyncssh.SSHKey]
         ) -> tuple[SimulatorHome, asyncssh.SSHKey]:
    return example_home


def issue(capsys: pytest.CaptureFixture[str], home: SimulatorHome, *args: str
          ) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["cert", "issue", str(home.path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_issue_writes_key_certificate_and_pkcs12_with_what_a_channel_requires(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim, _ = home
    out_dir = tmp_path / "new" / "signer"
    code, out, err = issue(capsys, sim, "--company", KBO, "--out", str(out_dir))
    assert code == 0, err
    key, cert_pem, p12 = (out_dir / n for n in ("signer-key.pem", "signer-cert.pem",
                                                "signer.p12"))
    assert (mode(key), mode(p12)) == (0o600, 0o600)
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    # spec 6.6: the enterprise number in the subject, as organizationIdentifier NTRBE-<KBO>
    assert [a.value for a in cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATION_IDENTIFIER)] == [f"NTRBE-{KBO}"]
    # spec 6.4 S9: key usage for signatures; S4: RSA of 2048 bits; not a CA
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    # spec 6.4 S6/S7: issued by the home's CA (a trust anchor), valid now and for two years
    ca = sim.ca().cert
    cert.verify_directly_issued_by(ca)
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc < now - timedelta(hours=23)
    assert cert.not_valid_after_utc > now + timedelta(days=729)
    assert "pki/ca.pem" in sim.load().trust_anchors
    # the PEM pair and the PKCS#12 are the same key and certificate, without a password
    pair, bundle = load_signer(key, cert_pem), load_pkcs12(p12, None)
    assert pair.cert == bundle.cert == cert
    assert f"organizationIdentifier=NTRBE-{KBO}" in out
    assert f"accepted by  channel {USER}" in out
    assert sim.load().channels[0].certificates == []  # not registered unless asked


def test_issue_with_channel_registers_the_certificate(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim, _ = home
    code, out, _ = issue(capsys, sim, "--company", KBO, "--channel", USER, "--out",
                         str(tmp_path / "s"))
    assert code == 0
    assert sim.load().channels[0].certificates == ["certs/acme-payroll-1.pem"]
    assert (sim.path / "certs" / "acme-payroll-1.pem").read_bytes() == \
        (tmp_path / "s" / "signer-cert.pem").read_bytes()
    assert "registered   certs/acme-payroll-1.pem" in out
    # a second certificate without --channel: the channel now takes registered ones only
    code, out, _ = issue(capsys, sim, "--company", KBO, "--out", str(tmp_path / "t"))
    assert code == 0 and f"refused by   channel {USER} (153" in out


def test_password_from_the_environment_encrypts_the_key_and_the_pkcs12(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    sim, _ = home
    monkeypatch.setenv("FLA_KEY_PASSWORD", "s3cret")
    assert issue(capsys, sim, "--company", KBO, "--out", str(tmp_path / "s"))[0] == 0
    assert b"ENCRYPTED" in (tmp_path / "s" / "signer-key.pem").read_bytes()
    load_signer(tmp_path / "s" / "signer-key.pem", tmp_path / "s" / "signer-cert.pem",
                b"s3cret")
    load_pkcs12(tmp_path / "s" / "signer.p12", b"s3cret")
    with pytest.raises(Exception, match="password"):
        load_pkcs12(tmp_path / "s" / "signer.p12", None)


def test_issue_says_so_when_the_ca_is_no_longer_trusted(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim, _ = home
    config = sim.load()
    config.trust_anchors = []
    sim.save(config)
    code, out, _ = issue(capsys, sim, "--company", KBO, "--out", str(tmp_path / "s"))
    assert code == 0 and "refused by   every channel (605" in out and "accepted by" not in out


@pytest.mark.parametrize(("args", "message"), [
    (["--company", "0123456748", "--out", "x"], "not a valid enterprise number"),
    (["--company", OTHER_KBO, "--channel", USER, "--out", "x"],
     f"belongs to company {KBO}, not {OTHER_KBO}"),
    (["--company", KBO, "--channel", "nobody", "--out", "x"], "no such channel"),
    (["--company", KBO, "--key-type", "dsa2048", "--out", "x"], "the channel accepts rsa2048"),
    (["--company", KBO, "--days", "0", "--out", "x"], "at least 1"),
])
def test_refusals_are_exit_2_one_line_and_write_nothing(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        args: list[str], message: str) -> None:
    sim, _ = home
    monkeypatch.chdir(tmp_path)
    config = sim.config_path.read_bytes()
    code, _, err = issue(capsys, sim, *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and sim.config_path.read_bytes() == config


def test_existing_files_are_never_overwritten(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim, _ = home
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "signer-key.pem").write_bytes(b"my real key")
    code, _, err = issue(capsys, sim, "--company", KBO, "--out", str(tmp_path / "s"))
    assert code == 2 and "signer-key.pem exists" in err
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["signer-key.pem"]
    assert (tmp_path / "s" / "signer-key.pem").read_bytes() == b"my real key"


def fla(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from fla_core.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("registered_before", "issue_args", "sign_with", "expected"), [
    (False, [], "pem", "ACRF-000"),                 # 6.6 rule 2: the subject names the company
    (False, ["--channel", USER], "p12", "ACRF-000"),  # 6.6 rule 1: registered for the channel
    (True, [], "pem", "ACRF-153"),                  # the channel has others registered
], ids=["company-in-subject", "registered-p12-with-password", "not-the-registered-one"])
def test_the_channel_judges_a_set_signed_with_the_issued_certificate(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        fla_sim_serve: Callable[..., Any], sftp_upload: Callable[..., None],
        registered_before: bool, issue_args: list[str], sign_with: str,
        expected: str) -> None:
    sim, ssh_key = home
    if registered_before:
        assert issue(capsys, sim, "--company", KBO, "--channel", USER, "--out",
                     str(tmp_path / "first"))[0] == 0
    if sign_with == "p12":  # cert issue encrypts with it, fla build reads it: the same variable
        monkeypatch.setenv("FLA_KEY_PASSWORD", "s3cret")
    assert issue(capsys, sim, "--company", KBO, *issue_args, "--out", str(tmp_path / "s"))[0] == 0
    signing = (["--p12", str(tmp_path / "s" / "signer.p12")] if sign_with == "p12" else
               ["--key", str(tmp_path / "s" / "signer-key.pem"),
                "--cert", str(tmp_path / "s" / "signer-cert.pem")])
    built = fla("build", str(EXPORT), "--quality", "social-secretariat", "--sender", SENDER,
                "--company", KBO, "--out", str(tmp_path / "outbox"), "--sign", *signing)
    assert built.returncode == 0, built.stderr
    order = ("FI", "FS", "GO")
    files = sorted((tmp_path / "outbox").glob("[FG]*"), key=lambda p: order.index(p.name[:2]))
    served = fla_sim_serve(sim.path)
    sftp_upload(served.port, USER, ssh_key, files)
    served.wait_for("stderr", "written: ACRF-")
    acrf = next((sim.channel_root(USER) / "OUTTEST").glob("FO.ACRF.*"))
    answer = parse_answer(acrf.read_bytes())
    assert (answer.error_id or "ACRF-000") == expected, answer
    assert served.stop() == 0


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verifies_a_signature_by_the_issued_certificate(
        home: tuple[SimulatorHome, asyncssh.SSHKey], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim, _ = home
    assert issue(capsys, sim, "--company", KBO, "--out", str(tmp_path / "s"))[0] == 0
    fi = tmp_path / "FI"
    fi.write_bytes(EXPORT.read_bytes())
    signer = load_signer(tmp_path / "s" / "signer-key.pem", tmp_path / "s" / "signer-cert.pem")
    der = tmp_path / "fs.der"
    der.write_bytes(base64.b64decode(encode_fs(sign_file(fi, signer))))

    def verify() -> subprocess.CompletedProcess[str]:
        # openssl's default purpose for CMS signatures (smimesign) checks the key usage too
        return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER",
                               "-in", str(der), "-content", str(fi), "-CAfile",
                               str(sim.ca_cert_path), "-out", os.devnull],
                              capture_output=True, text=True, timeout=60)

    done = verify()
    assert done.returncode == 0 and "Verification successful" in done.stderr, done.stderr
    fi.write_bytes(fi.read_bytes() + b"x")  # the oracle is no rubber stamp
    assert verify().returncode != 0
    shown = subprocess.run(["openssl", "pkcs12", "-in", str(tmp_path / "s" / "signer.p12"),
                            "-nokeys", "-passin", "pass:"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"NTRBE-{KBO}", shown.stdout)
