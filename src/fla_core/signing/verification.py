"""Verifying an FS against its FI part (spec 6.2-6.6): ``verify_fs``, S1..S11 in order.

Each step raises the ChannelError of its ACRF code; a sender signs set after set with the
same certificates, so what depends only on them is cached (by DER or certificate object).
"""

from __future__ import annotations

import functools
import hmac
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from fla_core import pki
from fla_core.anomalies import ChannelError
from fla_core.signing.digests import HASHES, digest_stream
from fla_core.signing.fs_codec import Layout, decode_fs
from fla_core.signing.signer import SigningError, certificate_der

# Certificates an FS may include (S2, 602; modelled, Settings.max_fs_certificates): spec 6.2 asks
# for one signer and its chain. Counted before any certificate is decoded or a path is built:
# 13 000 fake intermediates cost ~22 s of path building.
MAX_FS_CERTIFICATES = 10
ACCEPTED_DIGESTS = ("sha256", "sha384", "sha512", "sha1")
_ACCEPTED_CURVES = ("secp256r1", "secp384r1")
# Public key types that can sign a CRL (cryptography also knows post-quantum ones in newer
# releases, which no test PKI of ours issues).
CRL_SIGNING_KEYS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey,
                    ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


@dataclass
class TrustStore:
    """Trust anchors, extra intermediates and CRLs used by :func:`verify_fs` (spec 6.4-6.5)."""

    anchors: list[x509.Certificate]
    intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)

    @classmethod
    def load(cls, anchors: Sequence[str | Path], intermediates: Sequence[str | Path] = (),
             crls: Sequence[str | Path] = ()) -> TrustStore:
        """A TrustStore from PEM/DER files (a PEM file may hold several certificates)."""
        def certs(paths: Sequence[str | Path]) -> list[x509.Certificate]:
            out: list[x509.Certificate] = []
            for p in paths:
                try:
                    out.extend(pki.load_certificates(p))
                except (OSError, ValueError) as e:
                    raise SigningError(f"{p}: not a readable certificate file ({e})") from None
            return out

        def load_crl(p: str | Path) -> x509.CertificateRevocationList:
            try:
                return pki.load_crl(p)
            except (OSError, ValueError) as e:
                raise SigningError(f"{p}: not a readable CRL file ({e})") from None

        return cls(anchors=certs(anchors), intermediates=certs(intermediates),
                   crls=[load_crl(p) for p in crls])


@dataclass(frozen=True)
class VerifyResult:
    """An accepted FS: its signer, digest algorithm and NOTI warnings (``("609",)`` for SHA-1)."""

    signer: x509.Certificate
    digest_algorithm: str
    warnings: tuple[str, ...] = ()
    signing_time: datetime | None = None


@dataclass
class _Parsed:
    signer_info: cms.SignerInfo
    cert: x509.Certificate
    signer_der: bytes  # the signer's certificate, as included in the FS
    other_ders: tuple[bytes, ...]  # the other certificates included
    digest: str
    message_digest: bytes | None
    signing_time: datetime | None


def _bad_structure(detail: str) -> ChannelError:
    return ChannelError("602", detail)


def _attr_values(attrs: cms.CMSAttributes, name: str) -> list[Any]:
    found = [a for a in attrs if a["type"].native == name]
    if len(found) > 1:
        raise _bad_structure(f"signed attribute {name} appears {len(found)} times")
    if not found:
        return []
    values = list(found[0]["values"])
    if len(values) != 1:
        raise _bad_structure(f"signed attribute {name} must have exactly one value")
    return values


def _parse(der: bytes, max_certificates: int = MAX_FS_CERTIFICATES) -> _Parsed:
    """S2: the DER as a detached SignedData with one signer whose certificate is included,
    and at most ``max_certificates`` certificates."""
    try:
        ci = cms.ContentInfo.load(der, strict=True)
        if ci["content_type"].native != "signed_data":
            raise _bad_structure(f"content type is {ci['content_type'].native}, not signedData")
        sd = ci["content"]
        infos = list(sd["signer_infos"])
        if len(infos) != 1:
            raise _bad_structure(f"{len(infos)} SignerInfos; exactly one is required")
        eci = sd["encap_content_info"]
        if eci["content_type"].native != "data":
            raise _bad_structure(f"eContentType is {eci['content_type'].native}, not id-data")
        if eci["content"].native is not None:
            raise _bad_structure("the content is attached; the FS must be detached")
        si = infos[0]
        included = len(sd["certificates"])  # the entries' headers only: nothing decoded yet
        if included > max_certificates:
            raise _bad_structure(f"{included} certificates included; at most "
                                 f"{max_certificates} (the signer and its chain)")
        signer_der, other_ders = _included_certificates(sd, si)
        cert = _certificate(signer_der)
        digest = si["digest_algorithm"]["algorithm"].native
        md = signing_time = None
        attrs = si["signed_attrs"]
        if attrs.native is not None:
            ct = _attr_values(attrs, "content_type")
            if not ct or ct[0].native != "data":
                raise _bad_structure("signed attribute contentType missing or not id-data")
            mdv = _attr_values(attrs, "message_digest")
            if not mdv:
                raise _bad_structure("signed attribute messageDigest missing")
            md = mdv[0].native
            st = _attr_values(attrs, "signing_time")
            signing_time = st[0].native if st else None
        # parse the remaining fields and every included certificate now, so that a malformed
        # encoding is a 602 here rather than a crash in a later step
        si["signature"].native  # noqa: B018
        si["signature_algorithm"]["algorithm"].native  # noqa: B018
    except ChannelError:
        raise
    except Exception as e:  # asn1crypto parses lazily; any decoding error is a bad structure
        raise _bad_structure(f"not a CMS SignedData in DER ({type(e).__name__}: {e})") from None
    return _Parsed(si, cert, signer_der, other_ders, digest, md, signing_time)


# (certificates field, signer identifier) -> (signer DER, other DERs), both as encoded bytes
_INCLUDED: dict[tuple[bytes, bytes], tuple[bytes, tuple[bytes, ...]]] = {}
_INCLUDED_MAX = 256


def _included_certificates(sd: cms.SignedData,
                           si: cms.SignerInfo) -> tuple[bytes, tuple[bytes, ...]]:
    """The signer's certificate and the other certificates an FS includes, every one fully
    decoded (a bad encoding raises here, a 602).

    A sender includes the same certificates in every FS it signs: the outcome is kept by the
    bytes of the certificates field and of the signer identifier. Finding the signer among
    the certificates decoded them with asn1crypto, ~40 % of S2 for a small file.
    """
    key = (sd["certificates"].dump(), si["sid"].dump())
    found = _INCLUDED.get(key)
    if found is None:
        certs = [c.chosen for c in sd["certificates"] if c.name == "certificate"]
        a_cert = _find_signer_cert(si["sid"], certs)
        for c in certs:  # now, so that a malformed certificate is a 602 and not a later crash
            _fully_decoded(c.dump())
        found = (a_cert.dump(), tuple(c.dump() for c in certs if c is not a_cert))
        if len(_INCLUDED) >= _INCLUDED_MAX:  # signers of long ago: start again
            _INCLUDED.clear()
        _INCLUDED[key] = found
    return found


# A sender signs set after set with the same certificate: what only depends on it is derived
# once (by its DER, or by the certificate object these caches hand out), not once per FS.

@functools.lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


@functools.lru_cache(maxsize=256)
def _fully_decoded(der: bytes) -> bool:
    """Decode every field of a certificate (asn1crypto decodes lazily); raises on a bad
    encoding. Cached by its bytes: a sender signs set after set with the same certificates,
    and decoding them all cost more than the rest of S2 (~0.6 ms per FS)."""
    asn1_x509.Certificate.load(der).native  # noqa: B018
    return True


def _find_signer_cert(sid: cms.SignerIdentifier,
                      certs: list[asn1_x509.Certificate]) -> asn1_x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        want = sid.chosen
        for c in certs:
            if c.serial_number != want["serial_number"].native:
                continue
            # identical encodings are the common case and cheap to compare; asn1crypto's
            # Name equality (string preparation of every attribute) is the fallback
            if c.issuer.dump() == want["issuer"].dump() or c.issuer == want["issuer"]:
                return c
    else:
        for c in certs:
            if c.key_identifier == sid.chosen.native:
                return c
    raise _bad_structure("the signer certificate is not included in the FS")


@functools.lru_cache(maxsize=256)
def key_algorithm_oid(cert: x509.Certificate) -> str:
    """The dotted OID of the certificate's public key algorithm."""
    # Read with asn1crypto: cryptography has Certificate.public_key_algorithm_oid from 43 only.
    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    return str(tbs["tbs_certificate"]["subject_public_key_info"]["algorithm"]["algorithm"].dotted)


def _check_key(cert: x509.Certificate) -> object:
    """S4: the signer key is RSA >= 2048 or ECDSA on P-256/P-384 (cached when it is)."""
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError):
        oid = key_algorithm_oid(cert)
        raise ChannelError("604", f"unsupported public key algorithm {oid}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ChannelError("604", f"RSA key of {key.key_size} bits; at least 2048 required")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _ACCEPTED_CURVES:
            raise ChannelError("604", f"EC curve {key.curve.name}; accepted: P-256, P-384")
        return key
    names = {ed25519.Ed25519PublicKey: "Ed25519", ed448.Ed448PublicKey: "Ed448",
             dsa.DSAPublicKey: "DSA"}
    kind = next((n for t, n in names.items() if isinstance(key, t)), type(key).__name__)
    raise ChannelError("604", f"{kind} keys are not accepted; use RSA >= 2048 or EC P-256/P-384")


def _verify_signature(key: object, si: cms.SignerInfo, digest: str, data: bytes,
                      prehashed: bool) -> None:
    """Raise InvalidSignature unless the signature value verifies (RSA v1.5/PSS, ECDSA)."""
    alg = si["signature_algorithm"]
    name = alg.signature_algo  # "rsassa_pkcs1v15", "rsassa_pss", "ecdsa", ...
    algorithm = HASHES[digest]()
    h: hashes.HashAlgorithm | Prehashed = Prehashed(algorithm) if prehashed else algorithm
    sig = si["signature"].native
    if isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pkcs1v15":
        key.verify(sig, data, padding.PKCS1v15(), h)
    elif isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pss":
        params = alg["parameters"]
        if params["hash_algorithm"]["algorithm"].native != digest:
            raise InvalidSignature
        pss = padding.PSS(padding.MGF1(HASHES[digest]()), params["salt_length"].native)
        key.verify(sig, data, pss, h)
    elif isinstance(key, ec.EllipticCurvePublicKey) and name == "ecdsa":
        key.verify(sig, data, ec.ECDSA(h))
    else:
        raise InvalidSignature


def _check_signature(fi: str | Path | BinaryIO, p: _Parsed, key: object,
                     digests: Mapping[str, bytes] | None = None) -> None:
    """S5: FI digest matches and the signature value verifies."""
    si = p.signer_info
    try:
        si["signature_algorithm"].signature_algo  # noqa: B018
    except ValueError:
        raise ChannelError("604", "unsupported signature algorithm "
                                  f"{si['signature_algorithm']['algorithm'].dotted}") from None
    # a digest computed while the FI was uploaded spares reading it again (fla_sim.prescan)
    known = digests.get(p.digest) if digests else None
    actual = known if known is not None else digest_stream(fi, p.digest)
    try:
        if p.message_digest is not None:
            if not hmac.compare_digest(actual, p.message_digest):
                raise ChannelError("125", "the FI bytes do not match the signed digest")
            der = si["signed_attrs"].dump()
            # the signature covers the attributes as a SET (tag 0x31), not as [0] IMPLICIT
            _verify_signature(key, si, p.digest, b"\x31" + der[1:], prehashed=False)
        else:
            _verify_signature(key, si, p.digest, actual, prehashed=True)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise ChannelError("125", "the signature value does not verify with the signer "
                                  "certificate (FI changed or wrong key)") from None


def _validate_path(p: _Parsed, trust: TrustStore, at: datetime) -> list[x509.Certificate]:
    """S6: a certification path from the signer to an anchor (signatures, CA constraints).

    Validity periods and revocation are left to S7/S8 so each failure keeps its own code.
    """
    if not trust.anchors:
        raise ChannelError("605", "no trust anchor is configured")

    outcome = _path_of(p.signer_der, p.other_ders,
                       tuple(certificate_der(c) for c in trust.anchors),
                       tuple(certificate_der(c) for c in trust.intermediates), at.date())
    if isinstance(outcome, ChannelError):
        raise ChannelError(outcome.code, outcome.detail)
    return [_certificate(c) for c in outcome]


@functools.lru_cache(maxsize=256)
def _path_of(leaf: bytes, others: tuple[bytes, ...], anchors: tuple[bytes, ...],
             intermediates: tuple[bytes, ...], day: date) -> tuple[bytes, ...] | ChannelError:
    """The path (leaf first, DER) or the S6 failure; cached, since path building costs a fixed
    40-100 ms per call and every set of a sender is signed by the same few certificates.

    The outcome depends only on the certificates, not on validity (S7) or revocation (S8),
    which are checked afresh on every call; ``day`` keeps pyhanko's date-dependent algorithm
    policy honest without defeating the cache.
    """
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError

    load = asn1_x509.Certificate.load
    ctx = ValidationContext(
        trust_roots=[load(c) for c in anchors],
        other_certs=[load(c) for c in others + intermediates],
        allow_fetching=False, moment=datetime.combine(day, time(12), tzinfo=UTC),
        revocation_mode="soft-fail",
        # validity is S7's job: a tolerance wider than any certificate lifetime disables it here
        time_tolerance=timedelta(days=365 * 200),
    )
    validator = CertificateValidator(load(leaf), validation_context=ctx)
    try:
        path = _run(validator.async_validate_path())
    except (PathBuildingError, PathValidationError) as e:
        return ChannelError("605", f"signer certificate does not chain to a trust anchor ({e})")
    except (ValueError, TypeError, KeyError) as e:  # a certificate pyhanko cannot process
        return ChannelError("605", f"certification path cannot be validated ({e})")
    # leaf first, root last: S8 pairs each certificate with its issuer
    return tuple(c.dump() for c in list(path.iter_certs(include_root=True))[::-1])


def _run(coro: Any) -> Any:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # called from inside an event loop (the simulator): run the validation in a worker thread
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _check_validity(path: list[x509.Certificate], at: datetime,
                    signing_time: datetime | None) -> None:
    """S7: every certificate of the path valid at ``at`` and at signingTime when present."""
    moments = [("processing time", at)]
    if signing_time is not None:
        moments.append(("signingTime", signing_time))
    for cert in path:
        for label, t in moments:
            if t < cert.not_valid_before_utc:
                raise ChannelError("606", f"{_describe(cert)} not yet valid at {label} "
                                          f"{t:%Y-%m-%d %H:%M:%S%z}"
                                          f" (valid from {cert.not_valid_before_utc:%Y-%m-%d})")
            if t > cert.not_valid_after_utc:
                raise ChannelError("606", f"{_describe(cert)} expired at {label} "
                                          f"{t:%Y-%m-%d %H:%M:%S%z}"
                                          f" (valid until {cert.not_valid_after_utc:%Y-%m-%d})")


def _check_crls(path: list[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
                ) -> None:
    """S8: no certificate of the path listed in a configured CRL signed by its issuer."""
    for cert, issuer in itertools.pairwise(path):
        for crl in crls:
            key = issuer.public_key()
            # an issuer whose key type cannot sign a CRL (X25519, ...) has issued none here
            if crl.issuer != cert.issuer or not isinstance(key, CRL_SIGNING_KEYS) \
                    or not crl.is_signature_valid(key):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise ChannelError("607", f"{_describe(cert)} is revoked (serial "
                                          f"{cert.serial_number:x})")


@functools.lru_cache(maxsize=256)
def _check_key_usage(cert: x509.Certificate) -> None:
    """S9: KeyUsage, when present, allows digitalSignature or nonRepudiation (cached when it
    does)."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (ku.digital_signature or ku.content_commitment):
        raise ChannelError("608", "signer certificate KeyUsage has neither digitalSignature "
                                  "nor nonRepudiation")


def _check_sender(cert: x509.Certificate, company: str, registered: Sequence[bytes]) -> None:
    """S10: the signer certificate is linked to the sender (spec 6.6)."""
    if registered:
        der = certificate_der(cert)
        if not any(hmac.compare_digest(der, r) for r in registered):
            raise ChannelError("153", "signer certificate is not one of the certificates "
                                      "registered for the channel")
        return
    org_ids, serials = _subject_ids(cert)
    if f"NTRBE-{company}" in org_ids or company in serials:
        return
    raise ChannelError("153", f"signer certificate subject carries neither organizationIdentifier "
                              f"NTRBE-{company} nor serialNumber {company}")


@functools.lru_cache(maxsize=256)
def _subject_ids(cert: x509.Certificate) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """organizationIdentifier and serialNumber values of the subject (S10); tuples, since the
    cache hands the same value to every caller."""
    subj = cert.subject
    return (tuple(a.value for a in subj.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)),
            tuple(a.value for a in subj.get_attributes_for_oid(NameOID.SERIAL_NUMBER)))


def _describe(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"certificate {cns[0].value!r}" if cns else "certificate"


def verify_fs(fi: str | Path | BinaryIO, fs: bytes, *, trust: TrustStore, at: datetime,
              sender_company: str | None, registered: Sequence[bytes] = (),
              layout: Layout = "lenient", subject: str | None = None,
              digests: Mapping[str, bytes] | None = None,
              max_certificates: int = MAX_FS_CERTIFICATES) -> VerifyResult:
    """Check an FS against its FI part, S1..S11 in order; the first failure raises ChannelError.

    ``sender_company`` None skips S10; ``registered`` are the channel's DER certificates (6.6).
    ``digests`` maps hashlib algorithm names to digests of the FI bytes already computed by the
    caller; S5 uses the one of the FS's algorithm instead of reading ``fi`` (read otherwise).
    An FS including more than ``max_certificates`` certificates is a 602 (S2).
    """
    if at.tzinfo is None:
        raise ValueError("verify_fs: 'at' must be a timezone-aware datetime")
    try:
        der = decode_fs(fs, layout)  # S1
        p = _parse(der, max_certificates)  # S2
        if p.digest not in ACCEPTED_DIGESTS:  # S3
            raise ChannelError("603", f"digest algorithm {p.digest} is not accepted; "
                                      "use SHA-256, SHA-384 or SHA-512")
        key = _check_key(p.cert)  # S4
        _check_signature(fi, p, key, digests)  # S5
        path = _validate_path(p, trust, at)  # S6
        _check_validity(path, at, p.signing_time)  # S7
        _check_crls(path, trust.crls)  # S8
        _check_key_usage(p.cert)  # S9
        if sender_company is not None:
            _check_sender(p.cert, sender_company, registered)  # S10
    except ChannelError as e:
        if subject is not None and e.subject is None:
            raise ChannelError(e.code, e.detail, subject=subject) from None
        raise
    warnings = ("609",) if p.digest == "sha1" else ()  # S11
    return VerifyResult(signer=p.cert, digest_algorithm=p.digest, warnings=warnings,
                        signing_time=p.signing_time)
