"""Detached CMS signatures of FI parts (spec 6): load a signer, sign, encode/decode the FS,
verify S1..S11.

One module per job; this package re-exports their public names, so callers import from
``fla_core.signing`` and need not know the split:

- ``signer``: ``Signer`` and its loading from key/certificate files or PKCS#12, the errors;
- ``digests``: the streamed FI digest and the hash algorithms known to both sides;
- ``signed_data``: building the detached SignedData (``sign_stream``, ``sign_file``);
- ``fs_codec``: the FS text (base64 of the DER) and its layout rules (S1);
- ``verification``: ``TrustStore``, ``verify_fs`` (S1..S11), ``VerifyResult``.
"""

from fla_core.signing.digests import CHUNK, digest_stream
from fla_core.signing.fs_codec import Layout, decode_fs, encode_fs
from fla_core.signing.signed_data import build_signed_data, sign_file, sign_stream
from fla_core.signing.signer import (
    PasswordError,
    PasswordRejected,
    PasswordRequired,
    Signer,
    SigningError,
    load_certificate_file,
    load_pkcs12,
    load_signer,
    read_file,
)
from fla_core.signing.verification import (
    ACCEPTED_DIGESTS,
    CRL_SIGNING_KEYS,
    MAX_FS_CERTIFICATES,
    TrustStore,
    VerifyResult,
    key_algorithm_oid,
    verify_fs,
)

__all__ = [
    "ACCEPTED_DIGESTS",
    "CHUNK",
    "CRL_SIGNING_KEYS",
    "MAX_FS_CERTIFICATES",
    "Layout",
    "PasswordError",
    "PasswordRejected",
    "PasswordRequired",
    "Signer",
    "SigningError",
    "TrustStore",
    "VerifyResult",
    "build_signed_data",
    "decode_fs",
    "digest_stream",
    "encode_fs",
    "key_algorithm_oid",
    "load_certificate_file",
    "load_pkcs12",
    "load_signer",
    "read_file",
    "sign_file",
    "sign_stream",
    "verify_fs",
]
