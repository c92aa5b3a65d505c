"""Shapes refused before any parser builds them (spec 5.3 P11, ``102``): a DOCTYPE in the
prolog (entity bombs, external entities), a prolog too long, too many attributes on one
element. A hostile prolog or start tag must not cost memory out of proportion."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from fla_core.anomalies import ChannelError

# Shapes refused before any parser builds them (P11, 102; modelled, Settings.max_prolog_size and
# Settings.max_attributes): a hostile prolog or start tag must not cost memory out of proportion.
MAX_PROLOG_SIZE = 1 << 20  # bytes from the document's start to the end of the root start tag
MAX_ATTRIBUTES = 256  # attributes (namespace declarations included) on one element


@dataclass(frozen=True)
class ShapeLimits:
    """The modelled limits on a document's shape (see :func:`shape_limits`)."""

    max_prolog_size: int = MAX_PROLOG_SIZE
    max_attributes: int = MAX_ATTRIBUTES


_DEFAULT_SHAPE = ShapeLimits()
_SHAPE: ContextVar[ShapeLimits | None] = ContextVar("fla_fi_shape", default=None)


def current_shape_limits() -> ShapeLimits:
    """The limits in force (see :func:`shape_limits`)."""
    return _SHAPE.get() or _DEFAULT_SHAPE


@contextlib.contextmanager
def shape_limits(*, max_prolog_size: int = MAX_PROLOG_SIZE,
                 max_attributes: int = MAX_ATTRIBUTES) -> Iterator[ShapeLimits]:
    """Within the block (this thread or task), documents are read with these limits; the
    judge sets them from its Settings. A reader reads them once, when it starts."""
    limits = ShapeLimits(max_prolog_size, max_attributes)
    token = _SHAPE.set(limits)
    try:
        yield limits
    finally:
        _SHAPE.reset(token)


class AttributeGuard:
    """Refuses (102) an element with more than ``limit`` attributes before lxml builds it.

    A million attributes on one element cost lxml ~900 bytes each. Each read is looked at
    with the end of the previous one (``OVERLAP`` bytes); the exact search (a regular
    expression, in C) runs only when those bytes hold more than ``limit`` "=" signs, which an
    ordinary document never does. A start tag whose first ``limit`` + 1 attributes span more
    than ``OVERLAP`` bytes across a read boundary may escape the count: such attributes average
    over 250 bytes, so their cost stays in proportion to the input. Something shaped like such
    a start tag inside a comment or CDATA section is refused too.
    """

    OVERLAP = 64 * 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tail = b""
        self._tail_eq = 0
        self._pattern = _attribute_pattern(limit + 1)

    def check(self, data: bytes | bytearray) -> ChannelError | None:
        """102 when ``data`` (after what was checked before) shows too many attributes."""
        eq = data.count(b"=")
        if eq + self._tail_eq > self.limit:
            window = self._tail + bytes(data) if self._tail else data
            if self._pattern.search(window):
                return ChannelError(
                    "102", f"an element has more than {self.limit} attributes (the limit)")
        self._tail = bytes(data[-self.OVERLAP:])
        self._tail_eq = self._tail.count(b"=") if eq else 0
        return None


@functools.lru_cache(maxsize=8)
def _attribute_pattern(count: int) -> re.Pattern[bytes]:
    """A start tag (finished or not) with at least ``count`` attributes; possessive
    quantifiers, so that a near miss costs no backtracking."""
    return re.compile(rb"<[^\s/<>!?=]++(?:[ \t\r\n]++[^\s=<>/]++[ \t\r\n]*+=[ \t\r\n]*+"
                      rb"(?:\"[^\"<]*+\"|'[^'<]*+')){%d}" % count)

# --- P11: the prolog scanned for a DOCTYPE ------------------------------------------------


_BLANKS = re.compile(rb"[ \t\r\n]+")
_DOCTYPE = b"<!DOCTYPE"
_OPEN_ITEMS = ((b"<?", b"?>"), (b"<!--", b"-->"))  # a PI, a comment: opener, terminator


def _find(buf: bytes | bytearray, needle: bytes, start: int) -> int:
    """``buf.find(needle, start)``; one place, so that tests can count the bytes searched."""
    return buf.find(needle, start)


class PrologScanner:
    """Incremental scan of the prolog (XML declaration, PIs, comments, white space) of a
    buffer that only grows: every byte is examined a bounded number of times however the
    bytes arrive (rescanning from the start at each read was quadratic: a 45 MB comment took
    14-28 s). ``scan`` answers like :func:`prolog_doctype`.
    """

    def __init__(self) -> None:
        self.pos = 0  # end of the prolog items read so far
        self._resume = 0  # where the terminator of an unfinished item is looked for next

    def scan(self, buf: bytes | bytearray) -> int | bool | None:
        """The offset of a DOCTYPE, False when the prolog ends without one, None for more."""
        pos = self.pos
        while True:
            blanks = _BLANKS.match(buf, pos)
            if blanks:
                pos = blanks.end()
            item = next((pair for pair in _OPEN_ITEMS if buf.startswith(pair[0], pos)), None)
            if item is None:
                self.pos = pos
                rest = bytes(buf[pos:pos + len(_DOCTYPE)])
                if rest == _DOCTYPE:
                    return pos
                if len(rest) < len(_DOCTYPE) and _DOCTYPE.startswith(rest):
                    return None  # "", "<", "<!D", ...: need more bytes
                return False
            # the terminator is looked for after the opener, never twice over the same bytes
            opener, end = item
            found = _find(buf, end, max(pos + len(opener), self._resume))
            if found < 0:
                self.pos = pos
                self._resume = max(pos + len(opener), len(buf) - len(end) + 1)
                return None  # an unfinished PI or comment
            pos = found + len(end)
            self._resume = 0


def prolog_doctype(buf: bytes | bytearray) -> int | bool | None:
    """Scan the prolog (XML declaration, PIs, comments, white space) of ``buf``.

    Returns the offset of a DOCTYPE declaration, False when the prolog ends without one (at the
    root or at something the parser will refuse), None when ``buf`` ends inside the prolog.
    A buffer that grows should be scanned by one :class:`PrologScanner` instead (linear).
    """
    return PrologScanner().scan(buf)

