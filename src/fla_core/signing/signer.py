"""Loading a signer: its private key, certificate and chain, from PEM/DER files or PKCS#12.

Errors say which file is wrong and why (a certificate given as the key, a missing or wrong
password), so the CLI can show them as they are.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from fla_core import pki


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


# Signing and verification ask for the same certificates' DER again and again (signer
# identifier, S6 path, S10): it is derived once per certificate object.
@functools.lru_cache(maxsize=256)
def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER encoding of ``cert`` (cached by certificate object)."""
    return cert.public_bytes(serialization.Encoding.DER)
