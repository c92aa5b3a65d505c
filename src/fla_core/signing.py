"""Detached CMS signatures of FI parts (spec 6): sign, encode/decode the FS, verify S1..S11.

The FI digest is always streamed (1 MiB chunks through hashlib) and computed once: SignedData
is assembled with asn1crypto around that digest and only the signed attributes are signed with
``cryptography``, whose own PKCS#7 builder would need the whole FI in memory.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Literal

from asn1crypto import algos, cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from fla_core import pki
from fla_core.anomalies import ChannelError

Layout = Literal["lenient", "strict"]
CHUNK = 1 << 20
# Certificates an FS may include (S2, 602; modelled, Settings.max_fs_certificates): spec 6.2 asks
# for one signer and its chain. Counted before any certificate is decoded or a path is built:
# 13 000 fake intermediates cost ~22 s of path building.
MAX_FS_CERTIFICATES = 10
ACCEPTED_DIGESTS = ("sha256", "sha384", "sha512", "sha1")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
    "sha1": hashes.SHA1, "md5": hashes.MD5, "sha224": hashes.SHA224,
}
_ACCEPTED_CURVES = ("secp256r1", "secp384r1")
# Public key types that can sign a CRL (cryptography also knows post-quantum ones in newer
# releases, which no test PKI of ours issues).
CRL_SIGNING_KEYS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey,
                    ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class SigningError(ValueError):
    """A key, certificate or PKCS#12 file cannot be used for signing (message says why)."""


class PasswordError(SigningError):
    """The file is fine, but its password is missing, wrong, or was given needlessly."""


class PasswordRequired(PasswordError):
    """The key or PKCS#12 file is protected and no password was given."""


class PasswordRejected(PasswordError):
    """The password given does not open the file (wrong, or the file has none)."""


@dataclass(frozen=True)
class Signer:
    """A signing key, its certificate and the intermediate CA certificates to include."""

    key: object
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


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


# --------------------------------------------------------------------------- loading


def read_file(path: str | Path, what: str) -> bytes:
    """The bytes of a key, certificate or PKCS#12 file; SigningError names the path and why."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{path}: no such file; give the path of the {what}") from None
    except IsADirectoryError:
        raise SigningError(f"{path}: is a folder; give the {what} itself") from None
    except OSError as e:
        raise SigningError(f"{path}: cannot read the {what}: {e.strerror or e}") from None


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def _content_kind(data: bytes) -> str | None:
    """What a key/certificate file holds, for error messages: "a certificate", ... or None."""
    labels = [m.decode() for m in _PEM_LABEL.findall(data)]
    if labels:
        if any(label.endswith("PRIVATE KEY") for label in labels):
            return "a private key"
        if any(label.endswith("CERTIFICATE") for label in labels):
            return "a certificate"
        return f"PEM data of type {labels[0]}"
    if _is_pkcs12(data):
        return "a PKCS#12 file"
    try:
        serialization.load_der_private_key(data, None)
        return "a private key"
    except TypeError:
        return "a private key"  # an encrypted one
    except (ValueError, UnsupportedAlgorithm):
        pass
    try:
        x509.load_der_x509_certificate(data)
        return "a certificate"
    except ValueError:
        return None


def _is_pkcs12(data: bytes) -> bool:
    """True when ``data`` has the outer structure of a PKCS#12 file (no password needed)."""
    from asn1crypto import pkcs12 as asn1_pkcs12

    try:
        pfx = asn1_pkcs12.Pfx.load(data, strict=True)
        return (pfx["version"].native == "v3"
                and pfx["auth_safe"]["content_type"].native in ("data", "signed_data"))
    except (ValueError, TypeError, KeyError):
        return False


def _not_a(where: str, data: bytes, wanted: str, hint: str) -> SigningError:
    """The error for a file that holds something else than ``wanted`` (names what it holds)."""
    kind = _content_kind(data)
    holds = f"holds {kind}, not {wanted}" if kind else f"not {wanted} (PEM or DER)"
    return SigningError(f"{where}: {holds}; {hint}")


def _load_key(data: bytes, password: bytes | None, where: str) -> object:
    loader = (serialization.load_pem_private_key if b"-----BEGIN" in data
              else serialization.load_der_private_key)
    try:
        return loader(data, password=password)
    except TypeError:
        # cryptography raises TypeError for "password given but key not encrypted" and the reverse.
        if password is None:
            raise PasswordRequired(f"{where}: the private key is encrypted and needs its "
                                   "password") from None
        raise PasswordRejected(f"{where}: the private key is not encrypted, but a password "
                               "was given") from None
    except ValueError:
        if password is not None and _content_kind(data) == "a private key":
            raise PasswordRejected(f"{where}: wrong password for the private key") from None
        raise _not_a(where, data, "a private key", "give the signer's private key file") from None
    except UnsupportedAlgorithm:
        raise SigningError(f"{where}: unsupported private key type") from None


def _load_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        return pki.certificates_from(data)
    except ValueError:
        raise _not_a(where, data, "a certificate", "give a certificate file") from None


def _check_pair(key: object, cert: x509.Certificate, key_where: str, cert_where: str) -> None:
    pub = getattr(key, "public_key", None)
    if pub is None or pub().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise SigningError(f"{key_where}: this private key does not match the certificate "
                           f"{cert_where}; give the key and the certificate of the same signer")


def load_certificate_file(path: str | Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (or the one of a DER file); SigningError says why not."""
    return _load_certificates(read_file(path, "certificate file"), str(path))


def load_signer(key_path: str | Path, cert_path: str | Path,
                password: bytes | None = None) -> Signer:
    """A Signer from a private-key file and a certificate file (extra certificates = chain)."""
    # Both files are read and the certificate parsed before the key, so that a wrong path or
    # a wrong file is reported as such instead of as a missing password.
    key_data = read_file(key_path, "private key file")
    certs = load_certificate_file(cert_path)
    key = _load_key(key_data, password, str(key_path))
    _check_pair(key, certs[0], str(key_path), str(cert_path))
    return Signer(key=key, cert=certs[0], chain=tuple(certs[1:]))


def load_pkcs12(path: str | Path, password: bytes | None) -> Signer:
    """A Signer from a PKCS#12 (.p12/.pfx) file; a missing or wrong password is a PasswordError."""
    data = read_file(path, "PKCS#12 file")
    if not _is_pkcs12(data):
        raise _not_a(str(path), data, "a PKCS#12 file",
                     "give the .p12/.pfx file, or the key and certificate files instead")
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise _pkcs12_password_error(data, password, str(path)) from None
    except UnsupportedAlgorithm as e:
        raise SigningError(f"{path}: PKCS#12 uses an unsupported algorithm ({e})") from None
    if key is None or cert is None:
        raise SigningError(f"{path}: the PKCS#12 file has no private key and certificate")
    _check_pair(key, cert, str(path), str(path))
    return Signer(key=key, cert=cert, chain=tuple(extra))


def _pkcs12_password_error(data: bytes, password: bytes | None, where: str) -> SigningError:
    """Why a file with the PKCS#12 structure did not open (its MAC or decryption failed)."""
    if password is None:
        return PasswordRequired(f"{where}: the PKCS#12 file is protected and needs its password")
    try:
        pkcs12.load_key_and_certificates(data, None)
    except ValueError:
        # OpenSSL cannot tell a wrong password from damaged contents: say both, password first.
        return PasswordRejected(f"{where}: wrong password for the PKCS#12 file (or the file is "
                                "damaged)")
    return PasswordRejected(f"{where}: the PKCS#12 file is not protected by a password, but "
                            "one was given")


# --------------------------------------------------------------------------- signing


def _open(source: str | Path | BinaryIO) -> tuple[BinaryIO, bool]:
    if isinstance(source, str | Path):
        return open(source, "rb", buffering=0), True  # closed by the caller
    return source, False


def digest_stream(source: str | Path | BinaryIO, algorithm: str = "sha256") -> bytes:
    """Digest of a file or binary stream, read in 1 MiB chunks (memory independent of size)."""
    h = hashlib.new(algorithm)
    stream, owned = _open(source)
    try:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        readinto = getattr(stream, "readinto", None)
        if readinto is None:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
        else:
            while n := readinto(buf):
                h.update(view[:n])
    finally:
        if owned:
            stream.close()
    return h.digest()


def _signature_algorithm(key: object, digest: str) -> tuple[str, Callable[[bytes], bytes]]:
    """asn1crypto name of the signature algorithm and a callable signing bytes."""
    hash_cls = _HASHES[digest]
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
    return cms.SignerIdentifier.load(_signer_identifier_der(_der(cert)))


# The certificate-dependent parts of a SignedData are the same for every file a signer signs;
# building them with asn1crypto (retagging and re-encoding each certificate) cost more than
# the signature itself for a small file. They are encoded once per certificate and reused.
@functools.lru_cache(maxsize=64)
def _signer_identifier_der(cert_der: bytes) -> bytes:
    a_cert = asn1_x509.Certificate.load(cert_der)
    return cms.SignerIdentifier({
        "issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": a_cert.issuer, "serial_number": a_cert.serial_number,
        })
    }).dump()


@functools.lru_cache(maxsize=64)
def _certificate_set_der(cert_ders: tuple[bytes, ...]) -> bytes:
    certs = [asn1_x509.Certificate.load(d) for d in cert_ders]
    return cms.CertificateSet([cms.CertificateChoices({"certificate": c})
                               for c in certs]).dump()


def build_signed_data(message_digest: bytes, signer: Signer, *, digest: str = "sha256",
                      signing_time: datetime | None = None,
                      signed_attributes: bool = True) -> cms.ContentInfo:
    """The detached SignedData ContentInfo for an already computed FI digest."""
    if digest not in _HASHES:
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
    ders = tuple(_der(c) for c in (signer.cert, *signer.chain))
    sd = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": {"content_type": "data"},
        "certificates": cms.CertificateSet.load(_certificate_set_der(ders)),
        "signer_infos": [cms.SignerInfo(info)],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": sd})


def _sign_prehashed(key: object, digest: str, value: bytes) -> bytes:
    pre = Prehashed(_HASHES[digest]())
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
    if digest not in _HASHES:
        raise SigningError(f"unknown digest algorithm {digest!r}; use sha256, sha384 or sha512")
    md = digest_stream(stream, digest)
    return build_signed_data(md, signer, digest=digest, signing_time=signing_time,
                             signed_attributes=signed_attributes).dump()


def sign_file(path: str | Path, signer: Signer, *, digest: str = "sha256",
              signing_time: datetime | None = None, signed_attributes: bool = True) -> bytes:
    """DER of a detached CMS SignedData over the file's bytes."""
    with open(path, "rb", buffering=0) as f:
        return sign_stream(f, signer, digest=digest, signing_time=signing_time,
                           signed_attributes=signed_attributes)


# --------------------------------------------------------------------------- FS codec


def encode_fs(der: bytes) -> bytes:
    """The FS content: base64 of the DER on one line, no line terminator (spec 6.7)."""
    return binascii.b2a_base64(der, newline=False)


def _fail(detail: str) -> ChannelError:
    return ChannelError("601", detail)


def _split_lines(data: bytes) -> tuple[list[bytes], bytes | None]:
    """Lines of the FS and the one separator kind used, per the layout rules of 6.1."""
    crlf, cr, lf = data.count(b"\r\n"), data.count(b"\r"), data.count(b"\n")
    if crlf and crlf == cr == lf:
        sep: bytes | None = b"\r\n"
    elif crlf or (cr and lf):
        raise _fail("mixed line separators")
    elif cr:
        sep = b"\r"
    elif lf:
        sep = b"\n"
    else:
        return [data], None
    assert sep is not None  # each branch above set it or returned
    body = data[: -len(sep)] if data.endswith(sep) else data
    lines = body.split(sep)
    if any(not line for line in lines):
        raise _fail("empty line (two separators in a row or a leading separator)")
    return lines, sep


def decode_fs(data: bytes, layout: Layout = "lenient") -> bytes:
    """DER from FS content, after checking the line layout and strict base64 (spec 6.1)."""
    if not data:
        raise _fail("the FS file is empty")
    if data.startswith(b"\xef\xbb\xbf"):
        raise _fail("the FS starts with a byte order mark")
    if data.startswith(b"-----BEGIN"):
        raise _fail("PEM armour is not accepted; give the bare base64 text")
    lines, sep = _split_lines(data)
    if layout == "strict" and sep not in (None, b"\r"):
        raise _fail("strict layout: only one line or 76-character lines separated by CR")
    if len(lines) > 1:
        width = len(lines[0])
        allowed = (76,) if layout == "strict" else (64, 76)
        if width not in allowed:
            raise _fail(f"lines of {width} characters; accepted: "
                        f"{' or '.join(map(str, allowed))}")
        for i, line in enumerate(lines[1:], start=2):
            last = i == len(lines)
            if (len(line) > width) if last else (len(line) != width):
                raise _fail(f"line {i} has {len(line)} characters, expected {width}")
    text = b"".join(lines)
    if not _B64.fullmatch(text):
        bad = next((c for c in text if c not in _ALPHABET), None)
        raise _fail("'=' padding in the middle of the text" if bad is None
                    else f"character {bytes([bad])!r} is not in the base64 alphabet")
    if len(text) % 4:
        raise _fail(f"base64 length {len(text)} is not a multiple of 4 (padding missing?)")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error as e:
        raise _fail(f"invalid base64: {e}") from None


# --------------------------------------------------------------------------- verification


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
def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


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
    algorithm = _HASHES[digest]()
    h: hashes.HashAlgorithm | Prehashed = Prehashed(algorithm) if prehashed else algorithm
    sig = si["signature"].native
    if isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pkcs1v15":
        key.verify(sig, data, padding.PKCS1v15(), h)
    elif isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pss":
        params = alg["parameters"]
        if params["hash_algorithm"]["algorithm"].native != digest:
            raise InvalidSignature
        pss = padding.PSS(padding.MGF1(_HASHES[digest]()), params["salt_length"].native)
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
                       tuple(_der(c) for c in trust.anchors),
                       tuple(_der(c) for c in trust.intermediates), at.date())
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
        der = _der(cert)
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
