"""Answer signatures (spec 6.7) made by the simulator's cached SignedData template.

The template is a speed shortcut (bench/bench_core.py, row "answer sign"): it earns its place
only while it gives what the plain asn1crypto builder (``sign_answer_plain``) gives, which the
differential tests below hold it to.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from asn1crypto import cms

from fla_core import pki
from fla_core.anomalies import ChannelError
from fla_core.signing import Signer, TrustStore, decode_fs, encode_fs, sign_stream, verify_fs
from fla_sim import answers
from fla_sim.answers import _make_template, sign_answer, sign_answer_plain, write_answer

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


# --- differential: the hand-built template against the plain asn1crypto builder ---------------

PAYLOADS = {
    "empty": b"",
    "small": b'<?xml version="1.0" encoding="UTF-8"?>\n<ACRF><Result>ok</Result></ACRF>\n',
    "1MiB": bytes(range(256)) * 4096,
    "non-ascii": "<NOTI>Zoë Ñandú — Łódź, 日本語 ✓ €</NOTI>\n".encode(),
}


def _hand_built(signer: Signer, data: bytes) -> bytes:
    # the template itself, not sign_answer: that would fall back to the plain way unseen
    template = _make_template(signer)
    assert template is not None
    return template.sign_bytes(data, NOW)


def _openssl_accepts(tmp_path: Path, ca: pki.CertifiedKey, der: bytes, data: bytes) -> bool:
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "content").write_bytes(data)
    pki.write_pem(tmp_path / "ca.pem", ca.cert)
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
         "-content", str(tmp_path / "content"), "-CAfile", str(tmp_path / "ca.pem"),
         "-purpose", "any", "-attime", str(int(NOW.timestamp()) + 60), "-out", "/dev/null"],
        capture_output=True, text=True, timeout=60)
    return done.returncode == 0


def _without_signature_value(der: bytes) -> dict:
    """The decoded SignedData with the signature value left out (ECDSA's differs per call)."""
    ci = cms.ContentInfo.load(der, strict=True)
    native = ci.native
    (info,) = native["content"]["signer_infos"]
    assert info.pop("signature")
    return native


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("key_type", ["ec-p256", "rsa2048"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_hand_built_and_plain_answer_signatures_agree(ca: pki.CertifiedKey, tmp_path: Path,
                                                     key_type: str, payload: str) -> None:
    signer = _signer(ca, key_type)
    data = PAYLOADS[payload]
    fast, plain = _hand_built(signer, data), sign_answer_plain(data, signer, NOW)
    assert _openssl_accepts(tmp_path, ca, fast, data)
    assert _openssl_accepts(tmp_path, ca, plain, data)
    assert not _openssl_accepts(tmp_path, ca, fast, data + b"\n")  # the oracle can say no
    # same signed attributes, certificates, signer, algorithms; only the signature may differ
    assert _without_signature_value(fast) == _without_signature_value(plain)
    fast_si, plain_si = (cms.ContentInfo.load(d)["content"]["signer_infos"][0]
                         for d in (fast, plain))
    assert fast_si["signed_attrs"].dump() == plain_si["signed_attrs"].dump()
    assert (cms.ContentInfo.load(fast)["content"]["certificates"].dump()
            == cms.ContentInfo.load(plain)["content"]["certificates"].dump())
    attrs = {a["type"].native: a["values"][0].native for a in fast_si["signed_attrs"]}
    assert attrs == {"content_type": "data", "message_digest": hashlib.sha256(data).digest(),
                     "signing_time": NOW.astimezone(UTC).replace(microsecond=0)}
    if key_type == "rsa2048":  # PKCS#1 v1.5 is deterministic: the very same bytes
        assert fast == plain


def test_sign_answer_takes_the_template_when_it_can(ca: pki.CertifiedKey,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the bench measures the template: sign_answer must really use it, not the plain way
    signer = _signer(ca, "ec-p256")

    def no_plain(*args: object) -> bytes:
        raise AssertionError("the plain builder was used")

    monkeypatch.setattr(answers, "sign_answer_plain", no_plain)
    assert cms.ContentInfo.load(sign_answer(b"<ACRF/>", signer, NOW))["content_type"].native \
        == "signed_data"
    with pytest.raises(AssertionError, match="plain builder"):  # GeneralizedTime: plain way
        sign_answer(b"<ACRF/>", signer, datetime(2051, 1, 1, tzinfo=UTC))
