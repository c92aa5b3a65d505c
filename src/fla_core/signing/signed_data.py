"""Building detached CMS SignedData over FI parts (spec 6): ``sign_stream``, ``sign_file``.

SignedData is assembled with asn1crypto around the streamed digest and only the signed
attributes are signed with ``cryptography``, whose own PKCS#7 builder would need the whole FI
in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from fla_core.signing.digests import HASHES, digest_stream
from fla_core.signing.signer import Signer, SigningError, certificate_der


def _signature_algorithm(key: object, digest: str) -> tuple[str, Callable[[bytes], bytes]]:
    """asn1crypto name of the signature algorithm and a callable signing bytes."""
    hash_cls = HASHES[digest]
    if isinstance(key, rsa.RSAPrivateKey):
        # rsaEncryption as the algorithm identifier, as OpenSSL writes it
        return "rsassa_pkcs1v15", lambda data: key.sign(data, padding.PKCS1v15(), hash_cls())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{digest}_ecdsa", lambda data: key.sign(data, ec.ECDSA(hash_cls()))
    if isinstance(key, dsa.DSAPrivateKey):
        return f"{digest}_dsa", lambda data: key.sign(data, hash_cls())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key.sign
    raise SigningError(f"unsupported signing key type {type(key).__name__}")


def _signer_identifier(cert: x509.Certificate) -> cms.SignerIdentifier:
    return cms.SignerIdentifier.load(_signer_identifier_der(certificate_der(cert)))


# The certificate-dependent parts of a SignedData are the same for every file a signer signs;
# building them with asn1crypto (retagging and re-encoding each certificate) cost more than
# the signature itself for a small file. They are encoded once per certificate and reused.
@functools.lru_cache(maxsize=64)
def _signer_identifier_der(cert_der: bytes) -> bytes:
    a_cert = asn1_x509.Certificate.load(cert_der)
    der: bytes = cms.SignerIdentifier({
        "issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": a_cert.issuer, "serial_number": a_cert.serial_number,
        })
    }).dump()
    return der


@functools.lru_cache(maxsize=64)
def _certificate_set_der(cert_ders: tuple[bytes, ...]) -> bytes:
    certs = [asn1_x509.Certificate.load(d) for d in cert_ders]
    der: bytes = cms.CertificateSet([cms.CertificateChoices({"certificate": c})
                                     for c in certs]).dump()
    return der


def build_signed_data(message_digest: bytes, signer: Signer, *, digest: str = "sha256",
                      signing_time: datetime | None = None,
                      signed_attributes: bool = True) -> cms.ContentInfo:
    """The detached SignedData ContentInfo for an already computed FI digest."""
    if digest not in HASHES:
        raise SigningError(f"unknown digest algorithm {digest!r}")
    if signing_time is not None and signing_time.tzinfo is None:
        raise SigningError("signing_time must be timezone-aware (UTC)")
    sig_name, sign = _signature_algorithm(signer.key, digest)
    if signed_attributes:
        attrs = [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "message_digest", "values": [message_digest]}),
        ]
        if signing_time is not None:
            # RFC 5652: UTCTime for 1950..2049, GeneralizedTime otherwise
            kind = "utc_time" if 1950 <= signing_time.year < 2050 else "generalized_time"
            attrs.append(cms.CMSAttribute({"type": "signing_time",
                                           "values": [cms.Time({kind: signing_time})]}))
        # DER orders a SET OF by encoding; verifiers (OpenSSL) re-encode before checking.
        attrs.sort(key=lambda a: a.dump())
        signed_attrs = cms.CMSAttributes(attrs)
        signature = sign(signed_attrs.dump())
    else:
        signed_attrs = None
        signature = _sign_prehashed(signer.key, digest, message_digest)
    info = {
        "version": "v1",
        "sid": _signer_identifier(signer.cert),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_name}),
        "signature": signature,
    }
    if signed_attrs is not None:
        info["signed_attrs"] = signed_attrs
    ders = tuple(certificate_der(c) for c in (signer.cert, *signer.chain))
    sd = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": {"content_type": "data"},
        "certificates": cms.CertificateSet.load(_certificate_set_der(ders)),
        "signer_infos": [cms.SignerInfo(info)],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": sd})


def _sign_prehashed(key: object, digest: str, value: bytes) -> bytes:
    pre = Prehashed(HASHES[digest]())
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(value, padding.PKCS1v15(), pre)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(value, ec.ECDSA(pre))
    raise SigningError("signing without signed attributes needs an RSA or EC key")


def sign_stream(stream: BinaryIO, signer: Signer, *, digest: str = "sha256",
                signing_time: datetime | None = None, signed_attributes: bool = True) -> bytes:
    """DER of a detached CMS SignedData over the stream's bytes (digest streamed).

    ``signing_time`` None leaves the signingTime attribute out (callers own the clock).
    """
    if digest not in HASHES:
        raise SigningError(f"unknown digest algorithm {digest!r}; use sha256, sha384 or sha512")
    md = digest_stream(stream, digest)
    der: bytes = build_signed_data(md, signer, digest=digest, signing_time=signing_time,
                                   signed_attributes=signed_attributes).dump()
    return der


def sign_file(path: str | Path, signer: Signer, *, digest: str = "sha256",
              signing_time: datetime | None = None, signed_attributes: bool = True) -> bytes:
    """DER of a detached CMS SignedData over the file's bytes."""
    with open(path, "rb", buffering=0) as f:
        return sign_stream(f, signer, digest=digest, signing_time=signing_time,
                           signed_attributes=signed_attributes)
