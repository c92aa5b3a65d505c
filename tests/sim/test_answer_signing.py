"""Answer signatures (spec 6.7) made by the simulator's cached SignedData template."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_core import pki
from fla_core.anomalies import ChannelError
from fla_core.signing import Signer, TrustStore, decode_fs, encode_fs, sign_stream, verify_fs
from fla_sim.answers import _make_template, sign_answer, write_answer

NOW = datetime(2026, 11, 23, 14, 5, 6, 123456, tzinfo=ZoneInfo("Europe/Brussels"))


@pytest.fixture(scope="module")
def ca() -> pki.CertifiedKey:
    return pki.make_ca("answers test CA", not_before=NOW - timedelta(days=1))


def _signer(ca: pki.CertifiedKey, key_type: str) -> Signer:
    ck = pki.issue_simulator_signer(ca, not_before=NOW - timedelta(days=1),
                                    key_type=key_type)  # type: ignore[arg-type]
    return Signer(ck.key, ck.cert, (ca.cert,))


def test_rsa_answer_signature_is_byte_identical_to_the_general_signer(
        ca: pki.CertifiedKey) -> None:
    # PKCS#1 v1.5 is deterministic: the template must give exactly what fla_core.signing gives
    signer = _signer(ca, "rsa2048")
    data = b"<ACRF>answer</ACRF>" * 50
    for at in (NOW, NOW.astimezone(UTC).replace(microsecond=0), datetime(2049, 12, 31, 23,
                                                                          tzinfo=UTC)):
        assert sign_answer(data, signer, at) == sign_stream(io.BytesIO(data), signer,
                                                            signing_time=at)


def test_ec_answer_signature_verifies_with_our_verifier(ca: pki.CertifiedKey) -> None:
    signer = _signer(ca, "ec-p256")
    data = b"<NOTI>ok</NOTI>"
    fs = encode_fs(sign_answer(data, signer, NOW))
    result = verify_fs(io.BytesIO(data), fs, trust=TrustStore(anchors=[ca.cert], crls=[]),
                       at=NOW + timedelta(minutes=1), sender_company=None)
    assert not result.warnings
    with pytest.raises(ChannelError, match="ACRF-125"):  # other bytes: digest differs
        verify_fs(io.BytesIO(data + b" "), fs, trust=TrustStore(anchors=[ca.cert], crls=[]),
                  at=NOW + timedelta(minutes=1), sender_company=None)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("key_type", ["ec-p256", "rsa2048"])
def test_openssl_verifies_a_written_answer(ca: pki.CertifiedKey, tmp_path: Path,
                                           key_type: str) -> None:
    signer = _signer(ca, key_type)
    fo, fs, _go = write_answer(tmp_path, "FO.FLA.999999.20261123.00001.T", b"<ACRF/>",
                               signer, signing_time=NOW, durable=False)
    (tmp_path / "s.der").write_bytes(decode_fs(fs.read_bytes()))
    pki.write_pem(tmp_path / "ca.pem", ca.cert)
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "s.der"),
         "-content", str(fo), "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "any",
         "-out", "/dev/null"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa2048"])
def test_the_template_passes_its_self_check_for_the_answer_key_types(
        ca: pki.CertifiedKey, key_type: str) -> None:
    # None would mean every answer silently takes the slow general path
    assert _make_template(_signer(ca, key_type)) is not None
