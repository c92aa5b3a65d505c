"""Test PKI (spec 6.6, 6.7): CAs, sender certificates, CRLs, PEM and PKCS#12 files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fla_core import pki

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> pki.CertifiedKey:
    return pki.make_ca(not_before=T0, key_type="ec-p256")


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls).value


def test_root_ca_is_self_signed_ca(root):
    root.cert.verify_directly_issued_by(root.cert)
    assert ext(root.cert, x509.BasicConstraints).ca
    ku = ext(root.cert, x509.KeyUsage)
    assert ku.key_cert_sign and ku.crl_sign
    assert root.anchor is root.cert and root.chain == ()
    assert root.cert.not_valid_before_utc == T0


def test_rsa_root_and_intermediate_hierarchy():
    issuing = pki.make_ca(not_before=T0, key_type="rsa2048", intermediate=True)
    assert isinstance(issuing.key, rsa.RSAPrivateKey)
    assert issuing.root is not None and issuing.root != issuing.cert
    issuing.cert.verify_directly_issued_by(issuing.root)
    assert ext(issuing.cert, x509.BasicConstraints).ca
    signer = pki.issue_signer(issuing, company_id="0123456749", not_before=T0,
                              key_type="ec-p256")
    signer.cert.verify_directly_issued_by(issuing.cert)
    assert signer.chain == (issuing.cert,)
    assert signer.anchor == issuing.root


def test_signer_subject_organization_identifier(root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256")
    org = ck.cert.subject.get_attributes_for_oid(x509.ObjectIdentifier("2.5.4.97"))
    assert [a.value for a in org] == ["NTRBE-0123456749"]
    assert not ext(ck.cert, x509.BasicConstraints).ca
    ku = ext(ck.cert, x509.KeyUsage)
    assert ku.digital_signature and ku.content_commitment and not ku.key_encipherment
    ck.cert.verify_directly_issued_by(root.cert)
    assert ck.chain == () and ck.anchor == root.cert


def test_signer_subject_serial_number_and_none(root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256",
                          id_style="serialNumber")
    serial = ck.cert.subject.get_attributes_for_oid(x509.ObjectIdentifier("2.5.4.5"))
    assert [a.value for a in serial] == ["0123456749"]
    bare = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256",
                            id_style=None)
    oids = {a.oid for a in bare.cert.subject}
    assert NameOID.SERIAL_NUMBER not in oids and NameOID.ORGANIZATION_IDENTIFIER not in oids


def test_validity_and_key_usage_options(root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0,
                          not_after=T0 + timedelta(days=3), key_type="ec-p256",
                          key_usage=["key_encipherment"])
    assert ck.cert.not_valid_after_utc == T0 + timedelta(days=3)
    ku = ext(ck.cert, x509.KeyUsage)
    assert ku.key_encipherment and not ku.digital_signature
    none = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256",
                            key_usage=None)
    with pytest.raises(x509.ExtensionNotFound):
        ext(none.cert, x509.KeyUsage)
    with pytest.raises(ValueError, match="unknown key usage"):
        pki.issue_signer(root, company_id="1", not_before=T0, key_type="ec-p256",
                         key_usage=["sign_everything"])


def curve(name: str):
    return lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == name


@pytest.mark.parametrize(("key_type", "check"), [
    ("rsa1024", lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 1024),
    ("ec-p256", curve("secp256r1")),
    ("ec-p384", curve("secp384r1")),
    ("ec-p521", curve("secp521r1")),
    ("ed25519", lambda k: isinstance(k, ed25519.Ed25519PrivateKey)),
    ("dsa2048", lambda k: isinstance(k, dsa.DSAPrivateKey)),
])
def test_key_types(root, key_type, check):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type=key_type)
    assert check(ck.key)
    ck.cert.verify_directly_issued_by(root.cert)


def test_unknown_key_type():
    with pytest.raises(ValueError, match="unknown key type"):
        pki.generate_key("rsa-huge")  # type: ignore[arg-type]


def test_simulator_answer_signer(root):
    sim = pki.issue_simulator_signer(root, not_before=T0, key_type="ec-p256")
    cn = sim.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["BATCH simulator 999999"]
    assert ext(sim.cert, x509.KeyUsage).digital_signature


def test_ed25519_ca_issues_certificates():
    ca = pki.make_ca(not_before=T0, key_type="ed25519")
    assert isinstance(ca.cert.public_key(), ed25519.Ed25519PublicKey)
    ck = pki.issue_signer(ca, company_id="0123456749", not_before=T0, key_type="ec-p256")
    ck.cert.verify_directly_issued_by(ca.cert)  # raises when the Ed25519 signature is wrong


def test_crl_lists_revoked_serials(root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256")
    crl = pki.make_crl(root, revoked=[ck.cert, 42], this_update=T0)
    assert crl.is_signature_valid(root.cert.public_key())
    assert crl.issuer == root.cert.subject
    assert crl.get_revoked_certificate_by_serial_number(ck.cert.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(42) is not None
    assert crl.get_revoked_certificate_by_serial_number(43) is None
    assert crl.next_update_utc == T0 + timedelta(days=30)


def test_pem_round_trip(tmp_path, root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256")
    cert_path = pki.write_pem(tmp_path / "chain.pem", [ck.cert, root.cert])
    assert pki.load_certificates(cert_path) == [ck.cert, root.cert]
    assert pki.load_certificate(cert_path) == ck.cert
    der = tmp_path / "c.der"
    der.write_bytes(ck.cert.public_bytes(pki.serialization.Encoding.DER))
    assert pki.load_certificate(der) == ck.cert
    key_path = pki.write_pem(tmp_path / "key.pem", ck.key, password=b"pw")
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()
    assert key_path.stat().st_mode & 0o777 == 0o600
    crl_path = pki.write_pem(tmp_path / "crl.pem", pki.make_crl(root, this_update=T0))
    assert pki.load_crl(crl_path).issuer == root.cert.subject


def test_pkcs12_is_password_protected(tmp_path):
    issuing = pki.make_ca(not_before=T0, key_type="ec-p256", intermediate=True)
    ck = pki.issue_signer(issuing, company_id="0123456749", not_before=T0, key_type="ec-p256")
    path = pki.write_pkcs12(tmp_path / "s.p12", ck, b"secret")
    _key, cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), b"secret")
    assert cert == ck.cert and extra == [issuing.cert]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(path.read_bytes(), b"other")


def test_certified_key_signer(root):
    ck = pki.issue_signer(root, company_id="0123456749", not_before=T0, key_type="ec-p256")
    s = ck.signer()
    assert s.key is ck.key and s.cert == ck.cert and s.chain == ck.chain
