"""Writing an answer triplet FO (or CO) + FS + GO atomically (spec 4.8, 6.7; design 6).

FO and FS are written under a hidden temporary name, then renamed; the GO, empty, is created
last under its own name, so a client that waits for the GO never reads half an answer. After
a crash the same answer is written again: a file already present under its final name is
complete (rename is atomic; an empty GO is whole from the start) and is kept, so no answer file
is ever doubled or rewritten with other bytes.

A renamed file is in the OS page cache, which survives a kill of the simulator process; with
``durable=True`` (``[server] durability = "power"``) each file and the directory are also
fsynced, so the answer survives a power cut too.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from fla_core.files import fsync_directory, write_via_temp
from fla_core.names import with_prefix
from fla_core.signing import Signer, build_signed_data, encode_fs

TEMP_PREFIX = ".answer-"
CORRUPTION = b"<!-- altered after signing (injected fault) -->\n"

# A hook for fault injection (disk full): called with the file's name before each is written.
BeforeWrite = Callable[[str], None]


class AnswerConflict(RuntimeError):
    """An answer file exists with other bytes than the journal planned: never overwritten."""


# Plain string paths: this runs for every answer file on the event loop, where pathlib's
# objects cost more than the system calls on a fast file system.
def _write_atomic(directory: str, name: str, data: bytes, before_write: BeforeWrite | None,
                  durable: bool = True) -> bool:
    """Write ``data`` to ``directory/name`` via a temp name; False when it already exists.

    The temp name is fixed (``TEMP_PREFIX + name``): a leftover of a crash is reused, and the
    server hides it. The directory is fsynced once per answer by ``write_answer``.
    """
    path = os.path.join(directory, name)
    if os.path.exists(path):
        return False
    if before_write is not None:
        before_write(name)
    if not data:  # a GO: an empty file is complete the moment it exists, no temp name needed
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        try:
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return True
    write_via_temp(path, os.path.join(directory, TEMP_PREFIX + name), data, durable=durable)
    return True


# --- answer signatures -------------------------------------------------------------------------
# Every answer is signed with the same signer: only the digest, the signing time and the
# signature change. Building the SignedData with asn1crypto (``sign_answer_plain``) costs more
# than the signature itself: ~560 us against ~24 us for an EC P-256 answer (23x), ~760 against
# ~220 us with RSA-2048 (3.5x; bench/bench_core.py, rows "answer sign"). So the constant DER
# pieces are taken once from a reference built by fla_core.signing and the variable ones are
# encoded here. A self-check guards the template (``_make_template`` gives None and the plain
# way is used when they differ), and tests/sim/test_answer_signing.py holds both ways to the
# same signed attributes, certificates and digest, and to openssl's verdict.

_OID_CONTENT_TYPE = bytes.fromhex("06092a864886f70d010903")
_OID_MESSAGE_DIGEST = bytes.fromhex("06092a864886f70d010904")
_OID_SIGNING_TIME = bytes.fromhex("06092a864886f70d010905")
_OID_DATA = bytes.fromhex("06092a864886f70d010701")
_OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
_PROBE_TIME = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def _signed_attrs_body(message_digest: bytes, at: datetime) -> bytes:
    """The DER content of the signed attributes SET (RFC 5652: sorted by encoding)."""
    stamp = at.astimezone(UTC).strftime("%y%m%d%H%M%SZ").encode("ascii")
    attrs = [
        _tlv(0x30, _OID_CONTENT_TYPE + _tlv(0x31, _OID_DATA)),
        _tlv(0x30, _OID_MESSAGE_DIGEST + _tlv(0x31, _tlv(0x04, message_digest))),
        _tlv(0x30, _OID_SIGNING_TIME + _tlv(0x31, _tlv(0x17, stamp))),
    ]
    return b"".join(sorted(attrs))


@dataclass(frozen=True)
class _Template:
    """The constant DER pieces of one signer's SHA-256 SignedData."""

    signed_data_head: bytes  # version, digest algorithms, encapsulated content, certificates
    signer_info_head: bytes  # version, sid, digest algorithm
    signature_algorithm: bytes
    sign: Callable[[bytes], bytes]

    def assemble(self, attrs_body: bytes, signature: bytes) -> bytes:
        info = _tlv(0x30, self.signer_info_head + _tlv(0xA0, attrs_body)
                    + self.signature_algorithm + _tlv(0x04, signature))
        sd = _tlv(0x30, self.signed_data_head + _tlv(0x31, info))
        return _tlv(0x30, _OID_SIGNED_DATA + _tlv(0xA0, sd))

    def sign_bytes(self, data: bytes, at: datetime) -> bytes:
        body = _signed_attrs_body(hashlib.sha256(data).digest(), at)
        return self.assemble(body, self.sign(_tlv(0x31, body)))


def _make_template(signer: Signer) -> _Template | None:
    """The template of ``signer``, None when its output would differ from fla_core.signing."""
    key = signer.key
    if isinstance(key, rsa.RSAPrivateKey):
        def sign(data: bytes) -> bytes:
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        def sign(data: bytes) -> bytes:
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        return None
    probe = bytes(range(32))
    ref = build_signed_data(probe, signer, signing_time=_PROBE_TIME)
    sd = ref["content"]
    si = sd["signer_infos"][0]
    template = _Template(
        signed_data_head=b"".join(sd[k].dump() for k in (
            "version", "digest_algorithms", "encap_content_info", "certificates")),
        signer_info_head=b"".join(si[k].dump() for k in (
            "version", "sid", "digest_algorithm")),
        signature_algorithm=si["signature_algorithm"].dump(), sign=sign)
    body = _signed_attrs_body(probe, _PROBE_TIME)
    if template.assemble(body, si["signature"].native) != ref.dump():
        return None  # not byte-identical to the reference: keep the general path
    return template


_templates: dict[int, tuple[Signer, _Template | None]] = {}
_templates_lock = threading.Lock()


def sign_answer_plain(data: bytes, signer: Signer, signing_time: datetime | None) -> bytes:
    """The answer's SignedData built the plain way, by fla_core.signing's asn1crypto builder."""
    der: bytes = build_signed_data(hashlib.sha256(data).digest(), signer,
                                   signing_time=signing_time).dump()
    return der


def sign_answer(data: bytes, signer: Signer, signing_time: datetime | None) -> bytes:
    """DER of the detached SHA-256 CMS SignedData of an answer (spec 6.7)."""
    # the template encodes signingTime as UTCTime only: other years take the plain way
    usable = signing_time is not None and signing_time.tzinfo is not None \
        and 1950 <= signing_time.year < 2050 \
        and 1950 <= signing_time.astimezone(UTC).year < 2050
    if not usable:
        return sign_answer_plain(data, signer, signing_time)
    with _templates_lock:
        cached = _templates.get(id(signer))
    if cached is None or cached[0] is not signer:
        cached = (signer, _make_template(signer))
        with _templates_lock:
            if len(_templates) > 16:  # signers of a long-gone configuration
                _templates.clear()
            _templates[id(signer)] = cached
    template = cached[1]
    if template is None:
        return sign_answer_plain(data, signer, signing_time)
    assert signing_time is not None
    return template.sign_bytes(data, signing_time)


def answer_names(name_fo: str) -> tuple[str, str]:
    """The FS and GO names of an answer whose FO (or CO) is ``name_fo``."""
    return with_prefix(name_fo, "FS"), with_prefix(name_fo, "GO")


def write_answer(directory: str | Path, name_fo: str, data: bytes, signer: Signer, *,
                 signing_time: datetime | None = None,
                 before_write: BeforeWrite | None = None, corrupt: bool = False,
                 durable: bool = True) -> list[Path]:
    """Write FO/CO, its FS (signed with ``signer``) and the GO; return the paths now present.

    Idempotent: files already present are kept (an existing FO must hold the same bytes).
    ``corrupt`` (fault injection) writes altered FO bytes under the FS of the right ones.
    ``durable`` fsyncs every file and the directory (survives a power cut, not only a kill).
    """
    folder = os.fspath(directory)
    fs_name, go_name = answer_names(name_fo)
    written = data + CORRUPTION if corrupt else data
    try:
        with open(os.path.join(folder, name_fo), "rb") as f:
            present = f.read()
    except FileNotFoundError:  # the usual case: one failed open instead of a stat and an open
        _write_atomic(folder, name_fo, written, before_write, durable)
    else:
        if present != written:
            raise AnswerConflict(f"{os.path.join(folder, name_fo)} exists with other content; "
                                 "refusing to overwrite an answer")
    if not os.path.exists(os.path.join(folder, fs_name)):
        der = sign_answer(data, signer, signing_time)
        _write_atomic(folder, fs_name, encode_fs(der), before_write, durable)
    _write_atomic(folder, go_name, b"", before_write, durable)
    if durable:
        fsync_directory(folder)
    base = Path(folder)
    return [base / name_fo, base / fs_name, base / go_name]
