"""Test PKI for signatures (spec 6): CAs, sender signing certificates, CRLs, PEM/PKCS#12 files.

Everything is made with ``cryptography``. Time is injected (``not_before``); nothing here reads
the clock. These certificates are for tests, demos and the simulator, never for production.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fla_core.files import atomic_write, write_private

if TYPE_CHECKING:
    from fla_core.signing import Signer

KeyType = Literal[
    "rsa1024", "rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384", "ec-p521", "ed25519",
    "dsa2048",
]
IdStyle = Literal["organizationIdentifier", "serialNumber"] | None
PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | dsa.DSAPrivateKey
)

SIMULATOR_CN = "BATCH simulator 999999"
DEFAULT_KEY_USAGE = ("digital_signature", "content_commitment")
_KU_FIELDS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)
_CURVES: dict[str, ec.EllipticCurve] = {
    "ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1(), "ec-p521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class CertifiedKey:
    """A private key with its certificate.

    ``chain`` holds the issuing CA certificates above ``cert`` up to, not including, the root;
    ``root`` is the self-signed trust anchor (None when ``cert`` is the root itself).
    """

    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    root: x509.Certificate | None = None

    @property
    def anchor(self) -> x509.Certificate:
        """The trust anchor certificate of this key's hierarchy."""
        return self.root if self.root is not None else self.cert

    def signer(self) -> Signer:
        """This key as a :class:`fla_core.signing.Signer` (certificate + intermediates)."""
        from fla_core.signing import Signer

        return Signer(key=self.key, cert=self.cert, chain=self.chain)


def generate_key(key_type: KeyType = "rsa2048") -> PrivateKey:
    """A fresh private key of the named type."""
    if key_type in ("rsa1024", "rsa2048", "rsa3072", "rsa4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "dsa2048":
        return dsa.generate_private_key(key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}")


def _sign_hash(key: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs without a separate hash; every other issuer signs with SHA-256.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _key_usage(names: Iterable[str]) -> x509.KeyUsage:
    wanted = set(names)
    unknown = wanted - set(_KU_FIELDS)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}; use {', '.join(_KU_FIELDS)}")
    return x509.KeyUsage(**{f: f in wanted for f in _KU_FIELDS})


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _ca_subject(name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FLA test PKI"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])


def make_ca(
    name: str = "FLA Test Root CA",
    *,
    not_before: datetime,
    not_after: datetime | None = None,
    key_type: KeyType = "rsa2048",
    intermediate: bool = False,
    intermediate_name: str = "FLA Test Issuing CA",
) -> CertifiedKey:
    """A self-signed root CA, or (``intermediate=True``) an issuing CA under a fresh root.

    The returned key is the one that issues certificates; ``anchor`` is the root to trust.
    """
    not_after = not_after or not_before + timedelta(days=3650)
    key = generate_key(key_type)
    subject = _ca_subject(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(("key_cert_sign", "crl_sign")), critical=True)
        .add_extension(_ski(key), critical=False)
        .sign(key, _sign_hash(key))
    )
    root = CertifiedKey(key=key, cert=cert)
    if not intermediate:
        return root
    return issue_ca(root, intermediate_name, not_before=not_before, not_after=not_after,
                    key_type=key_type)


def issue_ca(
    ca: CertifiedKey, name: str, *, not_before: datetime, not_after: datetime | None = None,
    key_type: KeyType = "rsa2048",
) -> CertifiedKey:
    """An intermediate CA certificate issued by ``ca``."""
    not_after = not_after or not_before + timedelta(days=3650)
    key = generate_key(key_type)
    subject = _ca_subject(name)
    cert = (
        _builder(ca, subject, key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(("key_cert_sign", "crl_sign")), critical=True)
        .sign(ca.key, _sign_hash(ca.key))
    )
    return CertifiedKey(key=key, cert=cert, chain=_issuer_chain(ca), root=ca.anchor)


def _issuer_chain(ca: CertifiedKey) -> tuple[x509.Certificate, ...]:
    # A certificate issued by ``ca`` carries ca's certificate and ca's own chain, minus the root.
    return () if ca.root is None else (ca.cert, *ca.chain)


def _builder(ca: CertifiedKey, subject: x509.Name, key: PrivateKey, not_before: datetime,
             not_after: datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )


def signer_subject(company_id: str | None, *, common_name: str | None = None,
                   id_style: IdStyle = "organizationIdentifier") -> x509.Name:
    """Subject of a sender signing certificate carrying the enterprise number (spec 6.6)."""
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"FLA test signer {company_id}"),
    ]
    if company_id is not None and id_style == "organizationIdentifier":
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRBE-{company_id}"))
    elif company_id is not None and id_style == "serialNumber":
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, company_id))
    elif id_style not in (None, "organizationIdentifier", "serialNumber"):
        raise ValueError(f"unknown id_style {id_style!r}")
    return x509.Name(attrs)


def issue_signer(
    ca: CertifiedKey,
    *,
    company_id: str | None,
    not_before: datetime,
    not_after: datetime | None = None,
    key_type: KeyType = "rsa2048",
    key_usage: Sequence[str] | None = DEFAULT_KEY_USAGE,
    id_style: IdStyle = "organizationIdentifier",
    common_name: str | None = None,
    key: PrivateKey | None = None,
) -> CertifiedKey:
    """A signing certificate issued by ``ca`` for a sender's enterprise number (spec 6.6).

    ``key_usage=None`` leaves the KeyUsage extension out; ``id_style=None`` leaves the
    enterprise number out of the subject.
    """
    not_after = not_after or not_before + timedelta(days=730)
    key = key or generate_key(key_type)
    subject = signer_subject(company_id, common_name=common_name, id_style=id_style)
    builder = _builder(ca, subject, key, not_before, not_after).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(_key_usage(key_usage), critical=True)
    cert = builder.sign(ca.key, _sign_hash(ca.key))
    return CertifiedKey(key=key, cert=cert, chain=_issuer_chain(ca), root=ca.anchor)


def issue_simulator_signer(ca: CertifiedKey, *, not_before: datetime,
                           not_after: datetime | None = None,
                           key_type: KeyType = "rsa2048") -> CertifiedKey:
    """The simulator's answer-signing certificate, subject CN ``BATCH simulator 999999`` (6.7)."""
    return issue_signer(ca, company_id=None, not_before=not_before, not_after=not_after,
                        key_type=key_type, id_style=None, common_name=SIMULATOR_CN)


def make_crl(ca: CertifiedKey, revoked: Iterable[x509.Certificate | int] = (), *,
             this_update: datetime,
             next_update: datetime | None = None) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing the given certificates (or serial numbers)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(this_update)
        .next_update(next_update or this_update + timedelta(days=30))
    )
    for item in revoked:
        serial = item.serial_number if isinstance(item, x509.Certificate) else int(item)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(this_update).build()
        )
    return builder.sign(ca.key, _sign_hash(ca.key))


PemObject = x509.Certificate | x509.CertificateRevocationList | PrivateKey


def to_pem(obj: PemObject | Sequence[x509.Certificate], password: bytes | None = None) -> bytes:
    """PEM text of a certificate, a list of certificates, a CRL or a private key."""
    if isinstance(obj, x509.Certificate | x509.CertificateRevocationList):
        return obj.public_bytes(serialization.Encoding.PEM)
    if isinstance(obj, Sequence):
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in obj)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_pem(path: str | Path, obj: PemObject | Sequence[x509.Certificate],
              password: bytes | None = None) -> Path:
    """Write ``obj`` as PEM (private keys encrypted when ``password`` is given); keys are 0600."""
    public = isinstance(obj, x509.Certificate | x509.CertificateRevocationList | Sequence)
    return atomic_write(path, to_pem(obj, password), private=not public)


def write_pkcs12(path: str | Path, ck: CertifiedKey, password: bytes | None,
                 name: str = "fla signer") -> Path:
    """Write key, certificate and chain as a PKCS#12 file, encrypted when ``password`` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password
        else serialization.NoEncryption()
    )
    data = pkcs12.serialize_key_and_certificates(
        name.encode(), ck.key, ck.cert, list(ck.chain) or None, enc)
    return write_private(path, data)


def certificates_from(data: bytes) -> list[x509.Certificate]:
    """All certificates of PEM text (or the one certificate of DER bytes); ValueError if none."""
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """All certificates of a PEM file (or the one certificate of a DER file)."""
    return certificates_from(Path(path).read_bytes())


def load_certificate(path: str | Path) -> x509.Certificate:
    """The first certificate of a PEM or DER file."""
    return load_certificates(path)[0]


def load_crl(path: str | Path) -> x509.CertificateRevocationList:
    """A CRL from a PEM or DER file."""
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)
