"""Streamed digests of FI parts and the hash algorithms known to signing and verification.

The FI digest is always streamed (1 MiB chunks through hashlib): memory does not grow with
the size of the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes

CHUNK = 1 << 20
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
    "sha1": hashes.SHA1, "md5": hashes.MD5, "sha224": hashes.SHA224,
}


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
