"""The FS file's text: base64 of the SignedData DER, and its layout rules (spec 6.1, 6.7)."""

from __future__ import annotations

import binascii
import re
from typing import Literal

from fla_core.anomalies import ChannelError

Layout = Literal["lenient", "strict"]
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


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
