"""P10 (``138``) of a document read in chunks: the encoding sniffed from the first bytes, and a
strict incremental UTF-8 check of every chunk."""

from __future__ import annotations

import codecs
import re
from typing import IO

from fla_core.anomalies import ChannelError
from fla_core.fi_parts import CHUNK
from fla_core.fi_shape import AttributeGuard

UTF8_BOM = b"\xef\xbb\xbf"
_FOREIGN_STARTS: tuple[tuple[bytes, str], ...] = (
    (b"\x00\x00\xfe\xff", "a UTF-32 byte-order mark"),
    (b"\xff\xfe\x00\x00", "a UTF-32 byte-order mark"),
    (b"\xfe\xff", "a UTF-16 byte-order mark"),
    (b"\xff\xfe", "a UTF-16 byte-order mark"),
    (b"\x00\x00\x00<", "UTF-32 bytes"),
    (b"<\x00\x00\x00", "UTF-32 bytes"),
    (b"\x00<\x00?", "UTF-16 bytes"),
    (b"<\x00?\x00", "UTF-16 bytes"),
    (b"\x4c\x6f\xa7\x94", "EBCDIC bytes"),
)
_XML_DECL = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*([\"'])[^\"']*\1"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*([\"'])([^\"']*)\2)?")


def sniff_encoding(head: bytes) -> int:
    """Count of leading bytes to drop (a UTF-8 BOM); ChannelError 138 for another encoding."""
    for start, what in _FOREIGN_STARTS:
        if head.startswith(start):
            raise ChannelError("138", f"the document starts with {what}; only UTF-8 is accepted")
    skip = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    match = _XML_DECL.match(head, skip)
    if match and match.group(3) is not None:
        name = match.group(3).decode("ascii", "replace")
        if name.lower() != "utf-8":
            raise ChannelError(
                "138", f'the XML declaration names encoding "{name}"; only UTF-8 is accepted')
    return skip


class Utf8Guard:
    """Strict incremental UTF-8 check of a byte stream fed chunk by chunk."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._pending = 0  # bytes of an unfinished sequence held by the decoder
        self.offset = 0  # bytes checked so far
        self.shape: AttributeGuard | None = None  # set by the readers that build elements

    def check(self, chunk: bytes | bytearray) -> None:
        """Raise ChannelError 138 naming the byte offset of the first invalid sequence."""
        if not self._pending and chunk.isascii():
            self.offset += len(chunk)  # ASCII is UTF-8: no decoding needed (the common case)
            return
        try:
            self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            at = self.offset - self._pending + exc.start
            raise ChannelError("138", f"invalid UTF-8 byte sequence at byte offset {at}") from None
        self._pending = len(self._decoder.getstate()[0])
        self.offset += len(chunk)

    def finish(self) -> None:
        """Raise ChannelError 138 if the stream ended inside a multi-byte sequence."""
        if self._pending:
            at = self.offset - self._pending
            raise ChannelError("138", f"truncated UTF-8 byte sequence at byte offset {at}")


def read_head(stream: IO[bytes], chunk_size: int) -> bytes:
    """First bytes of the document, enough to hold the whole XML declaration (short reads)."""
    head = bytearray(stream.read(chunk_size))
    searched = 0  # "?>" is not in head[:searched]: each byte is searched once (linear)

    def declaration_open() -> bool:
        nonlocal searched
        if not head.removeprefix(UTF8_BOM).startswith(b"<?xml"):
            return False
        if head.find(b"?>", searched) >= 0:
            return False
        searched = max(len(head) - 1, 0)
        return True

    # A pipe may return a few bytes at a time: the declaration must be complete to be judged.
    while head and (len(head) < 1024 or declaration_open()) and len(head) < (1 << 16):
        more = stream.read(chunk_size)
        if not more:
            break
        head += more
    return bytes(head)


def drain(stream: IO[bytes], guard: Utf8Guard, chunk_size: int = CHUNK) -> None:
    """Read the rest of ``stream`` through ``guard``: 138 outranks any later-step failure."""
    while data := stream.read(chunk_size):
        guard.check(data)
    guard.finish()

