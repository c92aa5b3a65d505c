"""Interop of FS signatures with OpenSSL (spec 6): each side verifies what the other signed."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fla_core import pki
from fla_core.anomalies import ChannelError
from fla_core.signing import TrustStore, encode_fs, sign_file, verify_fs

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("openssl") is None,
                       reason="openssl is not installed: the independent CMS oracle is missing"),
]

COMPANY = "0123456749"
# OpenSSL stamps signingTime with the real clock, so certificates here are valid around now.
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=2)
FI = b'<?xml version="1.0" encoding="UTF-8"?>\n<FLAFile>' + b"<D>x</D>\n" * 2000 + b"</FLAFile>\n"


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=60)


@pytest.fixture(scope="module")
def hierarchy() -> dict[str, pki.CertifiedKey]:
    issuing = pki.make_ca(not_before=T0, key_type="rsa2048", intermediate=True)
    return {
        "rsa": pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="rsa2048"),
        "ec": pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="ec-p256"),
        "ec384": pki.issue_signer(issuing, company_id=COMPANY, not_before=T0,
                                  key_type="ec-p384", id_style="serialNumber"),
    }


@pytest.fixture
def files(tmp_path, hierarchy):
    fi = tmp_path / "FI.FLAC.123456.20260201.00001.T.1.1"
    fi.write_bytes(FI)
    root = pki.write_pem(tmp_path / "root.pem", hierarchy["rsa"].anchor)
    return fi, root


def openssl_verify(fs_der: Path, fi: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", fs_der, "-content", fi,
                   "-CAfile", root, "-purpose", "any", "-attime", str(int(NOW.timestamp())),
                   "-out", "/dev/null", check=False)


@pytest.mark.parametrize(("kind", "digest", "attrs"), [
    ("rsa", "sha256", True), ("ec", "sha256", True), ("rsa", "sha512", True),
    ("ec384", "sha384", True), ("rsa", "sha256", False), ("ec", "sha256", False),
])
def test_openssl_verifies_our_fs(tmp_path, files, hierarchy, kind, digest, attrs):
    fi, root = files
    fs = tmp_path / "FS"
    fs.write_bytes(encode_fs(sign_file(fi, hierarchy[kind].signer(), digest=digest,
                                       signing_time=NOW - timedelta(hours=1),
                                       signed_attributes=attrs)))
    der = tmp_path / "fs.der"
    der.write_bytes(base64.b64decode(fs.read_bytes(), validate=True))
    done = openssl_verify(der, fi, root)
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    # and the oracle is not a rubber stamp: one changed byte fails
    fi.write_bytes(FI[:-2] + b"?\n")
    assert openssl_verify(der, fi, root).returncode != 0


def openssl_sign(tmp_path: Path, fi: Path, ck: pki.CertifiedKey, *extra: str) -> bytes:
    cert = pki.write_pem(tmp_path / "signer.pem", ck.cert)
    key = pki.write_pem(tmp_path / "signer.key", ck.key)
    chain = pki.write_pem(tmp_path / "chain.pem", list(ck.chain))
    out = tmp_path / "openssl.der"
    openssl("cms", "-sign", "-binary", "-in", fi, "-outform", "DER", "-out", out,
            "-signer", cert, "-inkey", key, "-certfile", chain, *extra)
    return out.read_bytes()


@pytest.mark.parametrize("kind", ["rsa", "ec", "ec384"])
@pytest.mark.parametrize("smimecap", [True, False], ids=["smimecap", "nosmimecap"])
def test_we_verify_openssl_fs(tmp_path, files, hierarchy, kind, smimecap):
    fi, _ = files
    ck = hierarchy[kind]
    extra = ("-md", "sha256") + (() if smimecap else ("-nosmimecap",))
    fs = encode_fs(openssl_sign(tmp_path, fi, ck, *extra))
    trust = TrustStore(anchors=[ck.anchor])
    result = verify_fs(fi, fs, trust=trust, at=NOW + timedelta(minutes=5), sender_company=COMPANY)
    assert result.signer == ck.cert
    assert result.digest_algorithm == "sha256" and result.warnings == ()
    assert result.signing_time is not None and abs(result.signing_time - NOW) < timedelta(hours=1)
    fi.write_bytes(FI + b" ")
    with pytest.raises(ChannelError) as info:
        verify_fs(fi, fs, trust=trust, at=NOW + timedelta(minutes=5), sender_company=COMPANY)
    assert info.value.code == "125"


def test_openssl_sha1_fs_is_accepted_with_609(tmp_path, files, hierarchy):
    fi, _ = files
    ck = hierarchy["rsa"]
    fs = encode_fs(openssl_sign(tmp_path, fi, ck, "-md", "sha1", "-nosmimecap"))
    result = verify_fs(fi, fs, trust=TrustStore(anchors=[ck.anchor]), at=NOW + timedelta(minutes=5),
                       sender_company=COMPANY)
    assert result.warnings == ("609",)


def test_openssl_base64_wrapping_is_accepted(tmp_path, files, hierarchy):
    fi, _ = files
    ck = hierarchy["ec"]
    der = tmp_path / "in.der"
    der.write_bytes(openssl_sign(tmp_path, fi, ck, "-md", "sha256"))
    wrapped = openssl("base64", "-e", "-in", der).stdout.encode()  # 64 columns, LF
    assert b"\n" in wrapped.rstrip(b"\n")
    result = verify_fs(fi, wrapped, trust=TrustStore(anchors=[ck.anchor]),
                       at=NOW + timedelta(minutes=5), sender_company=COMPANY)
    assert result.signer == ck.cert


def test_openssl_accepts_our_certificates_and_pkcs12(tmp_path, hierarchy):
    ck = hierarchy["rsa"]
    root = pki.write_pem(tmp_path / "root.pem", ck.anchor)
    chain = pki.write_pem(tmp_path / "chain.pem", list(ck.chain))
    leaf = pki.write_pem(tmp_path / "leaf.pem", ck.cert)
    done = openssl("verify", "-CAfile", root, "-untrusted", chain, "-attime",
                   str(int(NOW.timestamp())), leaf)
    assert done.stdout.strip().endswith("OK")
    subject = openssl("x509", "-in", leaf, "-noout", "-subject", "-nameopt", "oneline").stdout
    assert "organizationIdentifier = NTRBE-0123456749" in subject
    p12 = pki.write_pkcs12(tmp_path / "s.p12", ck, b"pw")
    ok = openssl("pkcs12", "-in", p12, "-passin", "pass:pw", "-nokeys", "-clcerts")
    assert "BEGIN CERTIFICATE" in ok.stdout
    bad = openssl("pkcs12", "-in", p12, "-passin", "pass:wrong", "-nokeys", check=False)
    assert bad.returncode != 0


def test_openssl_honours_our_crl(tmp_path):
    ca = pki.make_ca(not_before=T0, key_type="ec-p256")
    ck = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    root = pki.write_pem(tmp_path / "root.pem", ca.cert)
    leaf = pki.write_pem(tmp_path / "leaf.pem", ck.cert)
    at = str(int(NOW.timestamp()))
    for revoked, expect_ok in (([], True), ([ck.cert], False)):
        crl = pki.write_pem(tmp_path / "crl.pem", pki.make_crl(ca, revoked=revoked,
                                                               this_update=T0))
        done = openssl("verify", "-crl_check", "-CRLfile", crl, "-CAfile", root,
                       "-attime", at, leaf, check=False)
        assert (done.returncode == 0) is expect_ok, done.stdout + done.stderr
        if not expect_ok:
            assert "revoked" in done.stdout + done.stderr
