"""Signatures of FI parts (spec 6): FS layout table, S1..S11 on real crafted cases, key loading."""

from __future__ import annotations

import asyncio
import binascii
import io
import os
import subprocess
import sys
import textwrap
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import algos, cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fla_core import pki, signing
from fla_core.anomalies import ChannelError
from fla_core.signing import (
    PasswordRequired,
    Signer,
    SigningError,
    TrustStore,
    build_signed_data,
    decode_fs,
    digest_stream,
    encode_fs,
    load_pkcs12,
    load_signer,
    sign_file,
    sign_stream,
    verification,
    verify_fs,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
AT = T0 + timedelta(days=30)
COMPANY = "0123456749"
FI = b'<?xml version="1.0" encoding="UTF-8"?>\n<FLAFile>' + b"<D/>" * 500 + b"</FLAFile>\n"


@pytest.fixture(scope="module")
def ca() -> pki.CertifiedKey:
    return pki.make_ca(not_before=T0 - timedelta(days=1), key_type="ec-p256")


@pytest.fixture(scope="module")
def signer(ca) -> pki.CertifiedKey:
    return pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="rsa2048")


@pytest.fixture(scope="module")
def trust(ca) -> TrustStore:
    return TrustStore(anchors=[ca.cert])


def sign(ck: pki.CertifiedKey | Signer, data: bytes = FI, **kw) -> bytes:
    s = ck.signer() if isinstance(ck, pki.CertifiedKey) else ck
    kw.setdefault("signing_time", AT - timedelta(hours=1))
    return sign_stream(io.BytesIO(data), s, **kw)


def verify(fs_der: bytes, trust: TrustStore, data: bytes = FI, *, encode: bool = True, **kw):
    kw.setdefault("at", AT)
    kw.setdefault("sender_company", COMPANY)
    fs = encode_fs(fs_der) if encode else fs_der
    return verify_fs(io.BytesIO(data), fs, trust=trust, **kw)


def code_of(fs_der: bytes, trust: TrustStore, data: bytes = FI, **kw) -> str:
    with pytest.raises(ChannelError) as info:
        verify(fs_der, trust, data, **kw)
    return info.value.code


def rebuild(der: bytes, **changes) -> bytes:
    """The same SignedData with some top-level fields replaced."""
    sd = cms.ContentInfo.load(der)["content"]
    fields = {k: sd[k] for k in ("version", "digest_algorithms", "encap_content_info",
                                 "certificates", "signer_infos")}
    fields.update(changes)
    ci = cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(fields)})
    return ci.dump()


def with_signer_info(der: bytes, **changes) -> bytes:
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    fields = {k: si[k] for k in ("version", "sid", "digest_algorithm", "signed_attrs",
                                 "signature_algorithm", "signature")}
    fields.update(changes)
    return rebuild(der, signer_infos=[cms.SignerInfo(fields)])


def attrs_of(der: bytes) -> list[cms.CMSAttribute]:
    return list(cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"])


# --------------------------------------------------------------------------- S1: FS layout (6.1)

DER_1400 = bytes(range(256)) * 5 + bytes(120)  # the 6.1 table's 1 400-byte DER
B = encode_fs(DER_1400)


def lines(text: bytes, width: int) -> list[bytes]:
    return [text[i:i + width] for i in range(0, len(text), width)]


def test_table_text_has_the_spec_length():
    assert len(DER_1400) == 1400 and len(B) == 1868


LAYOUT_TABLE = [  # spec 6.1, one row each
    ("one line, no terminator", B, True),
    ("one line + CRLF", B + b"\r\n", True),
    ("64-lines + LF between and after", b"\n".join(lines(B, 64)) + b"\n", True),
    ("76-lines + CR, no final terminator", b"\r".join(lines(B, 76)), True),
    ("64-lines + CRLF", b"\r\n".join(lines(B, 64)) + b"\r\n", True),
    ("72-lines + LF", b"\n".join(lines(B, 72)) + b"\n", False),
    ("64-lines, CRLF then LF", b"\r\n".join(lines(B, 64)[:3]) + b"\r\n"
     + b"\n".join(lines(B, 64)[3:]), False),
    ("B + LF + LF", B + b"\n\n", False),
    ("PEM armour", b"-----BEGIN PKCS7-----\n" + b"\n".join(lines(B, 64))
     + b"\n-----END PKCS7-----", False),
    ("last = padding removed", B[:-1], False),
    ("empty file", b"", False),
]


@pytest.mark.parametrize(("text", "ok"), [(t, ok) for _, t, ok in LAYOUT_TABLE],
                         ids=[name for name, _, _ in LAYOUT_TABLE])
def test_fs_layout_table_of_spec_6_1(text, ok):
    if ok:
        assert decode_fs(text) == DER_1400
    else:
        with pytest.raises(ChannelError) as info:
            decode_fs(text)
        assert info.value.code == "601"


@pytest.mark.parametrize(("name", "text"), [
    ("space inside", B[:100] + b" " + B[100:]),
    ("BOM", b"\xef\xbb\xbf" + B),
    ("trailing space", B + b" "),
    ("url-safe alphabet", B[:10] + b"-_" + B[12:]),
    ("padding in the middle", B[:8] + b"====" + B[8:]),
    ("leading separator", b"\n" + B),
    ("last line longer than the others", b"\n".join(lines(B, 64)[:-2])
     + b"\n" + b"".join(lines(B, 64)[-2:])),
    ("short line in the middle", b"\n".join([B[:64], B[64:100], B[100:]])),
    ("CR LF reversed", b"\n\r".join(lines(B, 64))),
    ("76 + CRLF then CR", b"\r\n".join(lines(B, 76)[:2]) + b"\r" + b"\r".join(lines(B, 76)[2:])),
])
def test_other_layouts_are_601(name, text):
    with pytest.raises(ChannelError) as info:
        decode_fs(text)
    assert info.value.code == "601"
    assert info.value.detail  # says what is wrong


@pytest.mark.parametrize(("text", "ok"), [
    (B, True),
    (B + b"\r", True),
    (b"\r".join(lines(B, 76)), True),
    (b"\r".join(lines(B, 76)) + b"\r", True),
    (B + b"\r\n", False),
    (B + b"\n", False),
    (b"\r\n".join(lines(B, 64)) + b"\r\n", False),
    (b"\r".join(lines(B, 64)), False),
    (b"\n".join(lines(B, 76)), False),
])
def test_strict_layout(text, ok):
    if ok:
        assert decode_fs(text, layout="strict") == DER_1400
    else:
        with pytest.raises(ChannelError, match="601"):
            decode_fs(text, layout="strict")


def test_encode_fs_is_one_line_without_terminator():
    fs = encode_fs(DER_1400)
    assert b"\n" not in fs and b"\r" not in fs
    assert fs == binascii.b2a_base64(DER_1400, newline=False)


@given(st.binary(min_size=1, max_size=600), st.sampled_from([64, 76]),
       st.sampled_from([b"\n", b"\r", b"\r\n"]), st.booleans())
def test_wrapped_layouts_round_trip(der, width, sep, final):
    text = sep.join(lines(encode_fs(der), width)) + (sep if final else b"")
    assert decode_fs(text) == der


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_sign_and_verify_rsa(signer, trust, digest):
    result = verify(sign(signer, digest=digest), trust)
    assert result.digest_algorithm == digest
    assert result.warnings == ()
    assert result.signer == signer.cert
    assert result.signing_time == AT - timedelta(hours=1)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384"])
def test_sign_and_verify_ec(ca, trust, key_type):
    ck = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type=key_type)
    assert verify(sign(ck), trust).signer == ck.cert


@pytest.mark.parametrize(("when", "kind"), [
    (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), "utc_time"),
    (datetime(2050, 1, 1, tzinfo=UTC), "generalized_time"),
    (datetime(1949, 12, 31, tzinfo=UTC), "generalized_time"),
])
def test_signing_time_encoding_follows_rfc_5652(signer, when, kind):
    """UTCTime for 1950-2049, GeneralizedTime outside (RFC 5652 11.3)."""
    der = sign(signer, signing_time=when)
    (attr,) = [a for a in attrs_of(der) if a["type"].native == "signing_time"]
    assert attr["values"][0].name == kind
    assert attr["values"][0].native == when


def test_signed_attributes_content(signer):
    der = sign(signer, signing_time=datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))
    values = {a["type"].native: a["values"][0].native for a in attrs_of(der)}
    assert values["content_type"] == "data"
    assert values["message_digest"] == digest_stream(io.BytesIO(FI))
    assert values["signing_time"] == datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    sd = cms.ContentInfo.load(der)["content"]
    assert sd["encap_content_info"]["content"].native is None  # detached
    assert [c.chosen.dump() for c in sd["certificates"]] == [
        cms.Certificate.load(signer.cert.public_bytes(pki.serialization.Encoding.DER)).dump()
    ]


def test_sign_file_equals_sign_stream_and_verify_takes_a_path(tmp_path, signer, trust):
    fi = tmp_path / "FI.FLAC.123456.20260201.00001.T.1.1"
    fi.write_bytes(FI)
    der = sign_file(fi, signer.signer(), signing_time=AT)
    assert verify_fs(fi, encode_fs(der), trust=trust, at=AT, sender_company=COMPANY).signer
    assert verify_fs(str(fi), encode_fs(der), trust=trust, at=AT, sender_company=None)


def test_without_signing_time_and_without_signed_attributes(signer, trust):
    der = sign(signer, signing_time=None)
    assert "signing_time" not in {a["type"].native for a in attrs_of(der)}
    assert verify(der, trust).signing_time is None
    bare = sign(signer, signed_attributes=False)
    assert verify(bare, trust).digest_algorithm == "sha256"
    assert code_of(bare, trust, FI + b" ") == "125"


def test_rsa_pss_signature_is_accepted(signer, trust):
    der = sign(signer)
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    to_sign = b"\x31" + si["signed_attrs"].dump()[1:]
    sig = signer.key.sign(to_sign, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    pss = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": {
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
        "salt_length": 32,
    }})
    assert verify(with_signer_info(der, signature_algorithm=pss, signature=sig), trust)
    # flip a bit: PSS signatures are random, and one in 256 already ends in a zero byte
    tampered = with_signer_info(der, signature_algorithm=pss,
                                signature=sig[:-1] + bytes([sig[-1] ^ 1]))
    assert code_of(tampered, trust) == "125"


def test_wrapped_fs_as_integrators_write_it_is_accepted(signer, trust):
    text = encode_fs(sign(signer))
    crlf = b"\r\n".join(lines(text, 64)) + b"\r\n"
    assert verify(crlf, trust, encode=False).signer == signer.cert


# --------------------------------------------------------------------------- S1..S11 failures


def test_s1_not_base64(trust):
    assert code_of(b"this is not base64!", trust, encode=False) == "601"


@pytest.mark.parametrize("der", [b"hello world", b"\x30\x03\x02\x01\x01", bytes(64)],
                         ids=["text", "other DER", "zeros"])
def test_s2_not_cms(trust, der):
    assert code_of(der, trust) == "602"


def test_s2_content_info_of_another_type(trust):
    der = cms.ContentInfo({"content_type": "data", "content": b"x"}).dump()
    assert code_of(der, trust) == "602"


def test_s2_two_signers(signer, trust):
    der = sign(signer)
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    assert code_of(rebuild(der, signer_infos=[si, si]), trust) == "602"


def test_s2_attached_content(signer, trust):
    der = rebuild(sign(signer), encap_content_info={"content_type": "data", "content": FI})
    with pytest.raises(ChannelError) as info:
        verify(der, trust)
    assert info.value.code == "602" and "attached" in info.value.detail


def test_s2_econtent_type_not_data(signer, trust):
    der = rebuild(sign(signer), encap_content_info={"content_type": "signed_data"})
    assert code_of(der, trust) == "602"


def test_s2_signer_certificate_missing(ca, signer, trust):
    der = sign(signer)
    assert code_of(rebuild(der, certificates=[]), trust) == "602"
    sd = cms.ContentInfo.load(der)["content"]
    fields = {k: sd[k] for k in ("version", "digest_algorithms", "encap_content_info",
                                 "signer_infos")}  # no certificates field at all
    no_field = cms.ContentInfo({"content_type": "signed_data",
                                "content": cms.SignedData(fields)}).dump()
    assert code_of(no_field, trust) == "602"
    only_ca = [cms.CertificateChoices({"certificate": cms.Certificate.load(
        ca.cert.public_bytes(pki.serialization.Encoding.DER))})]
    assert code_of(rebuild(der, certificates=only_ca), trust) == "602"


def test_s2_same_certificates_other_signer_after_a_good_fs(signer, trust):
    """The signer found among an FS's certificates is remembered by their bytes and by the
    signer identifier: the same certificates naming a signer they do not hold stay a 602."""
    der = sign(signer)
    assert verify(der, trust)  # remembered now
    si = cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    wanted = si["sid"].chosen
    other = cms.SignerIdentifier({"issuer_and_serial_number": {
        "issuer": wanted["issuer"], "serial_number": wanted["serial_number"].native + 1}})
    assert code_of(with_signer_info(der, sid=other), trust) == "602"
    assert verify(der, trust)


@pytest.mark.parametrize("dropped", ["content_type", "message_digest"])
def test_s2_mandatory_signed_attribute_missing(signer, trust, dropped):
    der = sign(signer)
    kept = [a for a in attrs_of(der) if a["type"].native != dropped]
    assert code_of(with_signer_info(der, signed_attrs=kept), trust) == "602"


def test_s2_content_type_attribute_not_data(signer, trust):
    der = sign(signer)
    attrs = [a if a["type"].native != "content_type"
             else cms.CMSAttribute({"type": "content_type", "values": ["signed_data"]})
             for a in attrs_of(der)]
    assert code_of(with_signer_info(der, signed_attrs=attrs), trust) == "602"


@pytest.mark.parametrize("digest", ["md5", "sha224"])
def test_s3_digest_not_accepted(signer, trust, digest):
    assert code_of(sign(signer, digest=digest), trust) == "603"


def test_s3_comes_before_s4(ca, trust):
    weak = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="rsa1024")
    assert code_of(sign(weak, digest="md5"), trust) == "603"


@pytest.mark.parametrize("key_type", ["rsa1024", "ec-p521", "ed25519", "dsa2048"])
def test_s4_key_not_accepted(ca, trust, key_type):
    ck = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type=key_type)
    with pytest.raises(ChannelError) as info:
        verify(sign(ck), trust)
    assert info.value.code == "604"


def test_s4_names_a_key_algorithm_by_its_oid_with_every_allowed_cryptography(signer, ca):
    """The OID that a 604 for a key cryptography cannot load names (found by a corrupted FS
    under cryptography 42, whose Certificate lacks public_key_algorithm_oid)."""
    assert signing.key_algorithm_oid(signer.cert) == "1.2.840.113549.1.1.1"  # rsaEncryption
    assert signing.key_algorithm_oid(ca.cert) == "1.2.840.10045.2.1"  # id-ecPublicKey


def test_s5_tampered_fi(signer, trust):
    assert code_of(sign(signer), trust, FI.replace(b"<D/>", b"<E/>", 1)) == "125"
    assert code_of(sign(signer), trust, FI + b"\n") == "125"


def test_s5_signature_value_altered(signer, trust):
    der = sign(signer)
    sig = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert code_of(with_signer_info(der, signature=bad), trust) == "125"


def test_s5_signed_by_another_key_than_the_certificate(ca, signer, trust):
    other = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="rsa2048")
    forged = Signer(key=other.key, cert=signer.cert)
    assert code_of(sign(forged), trust) == "125"


def test_s5_comes_before_s6(ca):
    stranger = pki.make_ca("Stranger CA", not_before=T0, key_type="ec-p256")
    ck = pki.issue_signer(stranger, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    trust = TrustStore(anchors=[ca.cert])
    assert code_of(sign(ck), trust, FI + b"x") == "125"
    assert code_of(sign(ck), trust) == "605"


def test_s6_untrusted_ca_and_no_anchor(signer, trust):
    stranger = pki.make_ca("FLA Test Root CA", not_before=T0, key_type="ec-p256")  # same name
    assert code_of(sign(signer), TrustStore(anchors=[stranger.cert])) == "605"
    assert code_of(sign(signer), TrustStore(anchors=[])) == "605"


def test_s6_intermediate_from_cms_or_from_the_trust_pool():
    issuing = pki.make_ca(not_before=T0, key_type="ec-p256", intermediate=True)
    ck = pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    anchor_only = TrustStore(anchors=[ck.anchor])
    assert ck.chain == (issuing.cert,)
    assert verify(sign(ck), anchor_only).signer == ck.cert
    bare = Signer(key=ck.key, cert=ck.cert)  # intermediate not in the CMS
    assert code_of(sign(bare), anchor_only) == "605"
    pool = TrustStore(anchors=[ck.anchor], intermediates=[issuing.cert])
    assert verify(sign(bare), pool).signer == ck.cert


def test_s6_leaf_used_as_ca_is_refused(ca, signer, trust):
    # a signer certificate (cA=false) cannot issue another one
    fake = pki.issue_signer(signer, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    assert code_of(sign(fake), trust) == "605"


def test_s7_expired_and_not_yet_valid(ca, trust):
    old = pki.issue_signer(ca, company_id=COMPANY, not_before=T0 - timedelta(days=400),
                           not_after=T0, key_type="ec-p256")
    assert code_of(sign(old, signing_time=T0 - timedelta(days=1)), trust) == "606"
    future = pki.issue_signer(ca, company_id=COMPANY, not_before=AT + timedelta(days=1),
                              key_type="ec-p256")
    with pytest.raises(ChannelError) as info:
        verify(sign(future, signing_time=None), trust)
    assert info.value.code == "606" and "not yet valid" in info.value.detail


def test_s7_signing_time_outside_validity(ca, trust):
    ck = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    assert verify(sign(ck, signing_time=T0 + timedelta(days=1)), trust)
    with pytest.raises(ChannelError) as info:
        verify(sign(ck, signing_time=T0 - timedelta(days=5)), trust)
    assert info.value.code == "606" and "signingTime" in info.value.detail


def test_s7_expired_intermediate():
    root = pki.make_ca(not_before=T0 - timedelta(days=100), key_type="ec-p256")
    issuing = pki.issue_ca(root, "Short CA", not_before=T0 - timedelta(days=100),
                           not_after=T0 + timedelta(days=10), key_type="ec-p256")
    ck = pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    assert code_of(sign(ck), TrustStore(anchors=[root.cert])) == "606"


def test_s6_comes_before_s7(ca):
    stranger = pki.make_ca("Stranger CA", not_before=T0, key_type="ec-p256")
    old = pki.issue_signer(stranger, company_id=COMPANY, not_before=T0 - timedelta(days=400),
                           not_after=T0, key_type="ec-p256")
    assert code_of(sign(old), TrustStore(anchors=[ca.cert])) == "605"


def test_s8_revoked_by_crl(ca, signer, trust):
    crl = pki.make_crl(ca, revoked=[signer.cert], this_update=T0 + timedelta(days=2))
    with_crl = TrustStore(anchors=[ca.cert], crls=[crl])
    assert code_of(sign(signer), with_crl) == "607"
    other = pki.make_crl(ca, revoked=[12345], this_update=T0)
    assert verify(sign(signer), TrustStore(anchors=[ca.cert], crls=[other]))


def test_s8_revoked_intermediate():
    root = pki.make_ca(not_before=T0, key_type="ec-p256")
    issuing = pki.issue_ca(root, "Issuing CA", not_before=T0, key_type="ec-p256")
    ck = pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    crl = pki.make_crl(root, revoked=[issuing.cert], this_update=T0)
    assert verify(sign(ck), TrustStore(anchors=[root.cert])).signer == ck.cert
    assert code_of(sign(ck), TrustStore(anchors=[root.cert], crls=[crl])) == "607"


def test_s8_crl_not_signed_by_the_issuer_is_ignored(ca, signer):
    impostor = pki.make_ca("FLA Test Root CA", not_before=T0, key_type="ec-p256")
    forged = pki.make_crl(impostor, revoked=[signer.cert], this_update=T0)
    assert verify(sign(signer), TrustStore(anchors=[ca.cert], crls=[forged]))


def test_s7_comes_before_s8(ca):
    old = pki.issue_signer(ca, company_id=COMPANY, not_before=T0 - timedelta(days=400),
                           not_after=T0, key_type="ec-p256")
    crl = pki.make_crl(ca, revoked=[old.cert], this_update=T0)
    assert code_of(sign(old), TrustStore(anchors=[ca.cert], crls=[crl])) == "606"


def test_s9_key_usage(ca, trust):
    enc = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256",
                           key_usage=["key_encipherment"])
    assert code_of(sign(enc), trust) == "608"
    for usage in (["content_commitment"], ["digital_signature"], None):
        ok = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256",
                              key_usage=usage)
        assert verify(sign(ok), trust).signer == ok.cert


def test_s8_comes_before_s9(ca):
    enc = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256",
                           key_usage=["key_encipherment"])
    crl = pki.make_crl(ca, revoked=[enc.cert], this_update=T0)
    assert code_of(sign(enc), TrustStore(anchors=[ca.cert], crls=[crl])) == "607"


def test_s10_certificate_of_another_company(signer, trust):
    assert code_of(sign(signer), trust, sender_company="0897223670") == "153"
    assert verify(sign(signer), trust, sender_company=None).signer == signer.cert


def test_s10_serial_number_style_and_no_identifier(ca, trust):
    by_serial = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256",
                                 id_style="serialNumber")
    assert verify(sign(by_serial), trust).signer == by_serial.cert
    anonymous = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256",
                                 id_style=None)
    assert code_of(sign(anonymous), trust) == "153"


def test_s10_registered_certificates(ca, signer, trust):
    other = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    reg_other = [other.cert.public_bytes(pki.serialization.Encoding.DER)]
    # registered certificates replace the subject rule: same company, wrong certificate -> 153
    assert code_of(sign(signer), trust, registered=reg_other) == "153"
    anonymous = pki.issue_signer(ca, company_id=None, not_before=T0, key_type="ec-p256",
                                 id_style=None)
    reg = [anonymous.cert.public_bytes(pki.serialization.Encoding.DER)]
    assert verify(sign(anonymous), trust, registered=reg).signer == anonymous.cert


def test_s9_comes_before_s10(ca, trust):
    enc = pki.issue_signer(ca, company_id="0897223670", not_before=T0, key_type="ec-p256",
                           key_usage=["key_encipherment"])
    assert code_of(sign(enc), trust) == "608"


def test_s11_sha1_is_accepted_with_warning_609(signer, trust):
    result = verify(sign(signer, digest="sha1"), trust)
    assert result.digest_algorithm == "sha1" and result.warnings == ("609",)


def test_subject_names_the_file(signer, trust):
    with pytest.raises(ChannelError) as info:
        verify(sign(signer), trust, FI + b"x", subject="FS.FLAC.123456.20260201.00001.T.1.1")
    assert info.value.subject == "FS.FLAC.123456.20260201.00001.T.1.1"
    assert str(info.value).startswith("FS.FLAC.123456.20260201.00001.T.1.1: ACRF-125")


def test_verify_from_inside_an_event_loop(signer, trust):
    async def main():
        return verify(sign(signer), trust)

    assert asyncio.run(main()).signer == signer.cert


# --------------------------------------------------------------------------- key loading


def test_load_signer_pem_with_chain_and_password(tmp_path):
    issuing = pki.make_ca(not_before=T0, key_type="ec-p256", intermediate=True)
    ck = pki.issue_signer(issuing, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    key = pki.write_pem(tmp_path / "key.pem", ck.key, password=b"s3cret")
    cert = pki.write_pem(tmp_path / "cert.pem", [ck.cert, *ck.chain])
    s = load_signer(key, cert, b"s3cret")
    assert s.cert == ck.cert and s.chain == ck.chain
    assert verify(sign(s), TrustStore(anchors=[ck.anchor])).signer == ck.cert
    with pytest.raises(SigningError, match="wrong password"):
        load_signer(key, cert, b"nope")
    with pytest.raises(PasswordRequired, match="encrypted and needs its password"):
        load_signer(key, cert, None)


def test_load_signer_key_does_not_match(tmp_path, ca, signer):
    other = pki.issue_signer(ca, company_id=COMPANY, not_before=T0, key_type="ec-p256")
    key = pki.write_pem(tmp_path / "key.pem", other.key)
    cert = pki.write_pem(tmp_path / "cert.pem", signer.cert)
    with pytest.raises(SigningError, match="does not match the certificate"):
        load_signer(key, cert)
    with pytest.raises(SigningError, match=r"missing\.pem: no such file"):
        load_signer(tmp_path / "missing.pem", cert)
    with pytest.raises(SigningError, match="holds a private key, not a certificate"):
        load_signer(key, key)


def test_load_pkcs12(tmp_path, signer, trust):
    p12 = pki.write_pkcs12(tmp_path / "signer.p12", signer, b"pw")
    s = load_pkcs12(p12, b"pw")
    assert s.cert == signer.cert
    assert verify(sign(s), trust).signer == signer.cert
    with pytest.raises(SigningError) as info:
        load_pkcs12(p12, b"wrong")
    assert isinstance(info.value, ValueError)
    assert "wrong password" in str(info.value) and "Traceback" not in str(info.value)
    (tmp_path / "junk.p12").write_bytes(b"junk")
    with pytest.raises(SigningError):
        load_pkcs12(tmp_path / "junk.p12", b"pw")


def test_trust_store_from_files(tmp_path, ca, signer):
    crl = pki.make_crl(ca, revoked=[signer.cert], this_update=T0)
    store = TrustStore.load([pki.write_pem(tmp_path / "ca.pem", ca.cert)],
                            crls=[pki.write_pem(tmp_path / "crl.pem", crl)])
    assert store.anchors == [ca.cert] and store.crls == [crl]
    assert code_of(sign(signer), store) == "607"
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(SigningError, match=r"junk\.pem"):
        TrustStore.load([tmp_path / "junk.pem"])


def test_naive_time_is_refused(signer, trust):
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(sign(signer), trust, at=datetime(2026, 2, 1))


def test_unknown_digest_and_naive_time_are_clear_errors(signer):
    with pytest.raises(SigningError, match="unknown digest"):
        sign(signer, digest="whirlpool")
    with pytest.raises(SigningError, match="timezone-aware"):
        sign(signer, signing_time=datetime(2026, 2, 1))


def test_build_signed_data_matches_streamed_signing(signer, trust):
    md = digest_stream(io.BytesIO(FI))
    der = build_signed_data(md, signer.signer(), signing_time=AT).dump()
    assert verify(der, trust).signer == signer.cert


# --------------------------------------------------------------------------- memory


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    from datetime import UTC, datetime, timedelta
    from fla_core import pki, signing
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ca = pki.make_ca(not_before=t0, key_type="ec-p256")
    ck = pki.issue_signer(ca, company_id="0123456749", not_before=t0, key_type="rsa2048")
    trust = signing.TrustStore(anchors=[ca.cert])
    # warm-up on a small file so imports and first-call allocations are in the baseline
    small = sys.argv[1] + ".small"
    open(small, "wb").write(b"x" * 1000)
    fs = signing.encode_fs(signing.sign_file(small, ck.signer(), signing_time=t0))
    signing.verify_fs(small, fs, trust=trust, at=t0, sender_company="0123456749")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fs = signing.encode_fs(signing.sign_file(sys.argv[1], ck.signer(), signing_time=t0))
    r = signing.verify_fs(sys.argv[1], fs, trust=trust, at=t0, sender_company="0123456749")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert r.digest_algorithm == "sha256"
    print((after - before) // 1024)
""")


def test_memory_does_not_grow_with_fi_size(tmp_path):
    big = tmp_path / "big.xml"
    block = os.urandom(1 << 16) * 16  # 1 MiB
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(block)
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(big)], capture_output=True,
                         text=True, check=True, timeout=60)
    growth_mib = int(out.stdout.strip())
    assert growth_mib < 40, f"peak RSS grew by {growth_mib} MiB signing+verifying 100 MiB"


def test_sign_stream_accepts_objects_without_readinto(signer, trust):
    class Chunks:
        def __init__(self, data: bytes):
            self.buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(n, 7))

    der = sign_stream(Chunks(FI), signer.signer())  # type: ignore[arg-type]
    assert verify(der, trust).signer == signer.cert


# --------------------------------------------------------------------------- fixtures/fs samples

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fs"
CASES = tomllib.loads((FIXTURES / "manifest.toml").read_text("utf-8"))["case"]


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_fixture_samples_match_their_manifest(case):
    trust = TrustStore.load([FIXTURES / "ca.pem"])
    fs = (FIXTURES / case["file"]).read_bytes()
    kw = {"trust": trust, "at": datetime(2026, 6, 1, tzinfo=UTC), "sender_company": COMPANY}
    if case["expect"] == "accepted":
        result = verify_fs(FIXTURES / "fi.xml", fs, **kw)
        assert list(result.warnings) == case.get("warnings", [])
    else:
        with pytest.raises(ChannelError) as info:
            verify_fs(FIXTURES / "fi.xml", fs, **kw)
        assert info.value.code == case["expect"]


def test_fixture_signer_files_load(trust):
    s = load_signer(FIXTURES / "signer.key", FIXTURES / "signer.pem")
    assert verify(sign(s), TrustStore.load([FIXTURES / "ca.pem"])).signer == s.cert


# --------------------------------------------------------------------------- never a traceback

@pytest.fixture(scope="module")
def valid_der(signer) -> bytes:
    return sign(signer)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_arbitrary_fs_bytes_give_a_spec_code(trust, data):
    with pytest.raises(ChannelError) as info:
        verify(data, trust, encode=False)
    assert info.value.code in ("601", "602")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_corrupted_der_gives_a_spec_code_or_a_valid_result(valid_der, signer, trust, data):
    pos = data.draw(st.integers(0, len(valid_der) - 1))
    value = data.draw(st.integers(0, 255))
    der = valid_der[:pos] + bytes([value]) + valid_der[pos + 1:]
    try:
        result = verify(der, trust)
    except ChannelError as e:
        assert e.code in ("602", "603", "604", "125", "605", "606", "607", "608", "153")
    else:
        # only unauthenticated bookkeeping (version numbers, the SignedData digestAlgorithms
        # set, NULL parameters) may change without effect: the signer is still the genuine one
        assert result.signer == signer.cert


# --- S2: a cap on the certificates an FS carries (issue "A hostile sender cannot ...") ----------

@pytest.fixture(scope="module")
def fake_issuers() -> list:
    """Self-signed certificates named like the signer's issuer: candidates for path building."""
    return [pki.make_ca("FLA Test Root CA", not_before=T0, key_type="ec-p256").cert
            for _ in range(100)]


def test_s2_an_fs_with_too_many_certificates_is_602_before_any_path_is_built(
        signer, trust, fake_issuers, monkeypatch):
    def no_path(*args):
        raise AssertionError("path building was reached")

    monkeypatch.setattr(verification, "_path_of", no_path)
    crowded = Signer(key=signer.key, cert=signer.cert, chain=tuple(fake_issuers))
    fs = sign(crowded)
    started = time.process_time()
    with pytest.raises(ChannelError) as err:
        verify(fs, trust)
    assert err.value.code == "602"
    assert "101 certificates" in err.value.detail
    assert time.process_time() - started < 1.0


def test_s2_path_building_sees_at_most_the_certificate_cap(signer, trust, fake_issuers,
                                                            monkeypatch):
    seen: list[int] = []
    real = verification._path_of

    def spy(leaf, others, anchors, intermediates, day):
        seen.append(len(others) + 1)
        return real(leaf, others, anchors, intermediates, day)

    monkeypatch.setattr(verification, "_path_of", spy)
    cap = signing.MAX_FS_CERTIFICATES
    full = Signer(key=signer.key, cert=signer.cert, chain=tuple(fake_issuers[:cap - 1]))
    assert verify(sign(full), trust).signer == signer.cert  # exactly the cap: accepted
    assert seen == [cap]
    over = Signer(key=signer.key, cert=signer.cert, chain=tuple(fake_issuers[:cap]))
    assert code_of(sign(over), trust) == "602"
    assert verify(sign(over), trust, max_certificates=cap + 1).signer == signer.cert
    assert code_of(sign(signer), trust, max_certificates=0) == "602"
    assert seen == [cap, cap + 1]


def test_the_certificate_cap_is_a_modelled_setting():
    from fla_core.settings import Settings

    assert Settings().max_fs_certificates == signing.MAX_FS_CERTIFICATES
    assert Settings.from_mapping({"max_fs_certificates": 3}).max_fs_certificates == 3
    with pytest.raises(ValueError, match="max_fs_certificates"):
        Settings.from_mapping({"max_fs_certificates": 0})
