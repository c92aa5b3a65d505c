"""Safe streaming reading of an FI document, independent of the application (spec 5.3 P10-P13).

The document is the byte-concatenation of the FI parts (:class:`ConcatStream`). It is read once,
in big chunks, and each chunk goes through cheap layers before lxml builds anything:

* P10 (``138``): a byte-order mark other than UTF-8's, a UTF-16/32 byte pattern or an XML
  declaration naming another encoding is refused from the first bytes; every chunk is checked by
  an incremental strict UTF-8 decoder (skipped for pure-ASCII chunks, which are valid anyway).
* P11 (``102``): the prolog is scanned for a DOCTYPE before any parser sees it, so entity bombs
  and external entities are never parsed; then a tree-less probe parser reads up to the root
  start tag. No DTD is loaded, no entity resolved, no network used, no huge-tree mode.
* P12/P13 (``139``/``312``): when the root is right, a validating pull parser (``XMLPullParser``
  with the XSD) builds only the elements of interest, which are cleared batch by batch.

Precedence (spec 5.3: first failing step wins) holds although the checks run in one pass: after
a failure the rest is still read, so that an invalid byte (138) or a well-formedness error (102)
further on outranks it. libxml2 with a schema plugged in hides some well-formedness errors
(behind "no element found", a schema error, or nothing: junk after the root, a truncated
document, an xmlns that is not a URI); so the root's end event is required, the end of the
document is fed under watch, and on any doubt the document is read a second time without schema
(or, for a source that cannot be rewound, a tree-less shadow parser runs alongside).
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import io
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from lxml import etree

from fla_core.anomalies import ChannelError

CHUNK = 1 << 20  # 1 MiB: few Python calls per document, small memory

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

Source = Sequence[Path | str] | Path | str | IO[bytes]

# Parser options used everywhere an FI is parsed: no DTD, no network, no huge tree. Entities
# are made harmless by refusing any DOCTYPE before a parser sees the document (prolog_doctype):
# with no internal subset, the only entities left are the five predefined ones. So entity
# resolution stays "internal" (lxml's default since 5.0, never external): with
# resolve_entities=False and a schema plugged in, lxml 6.2.0 silently drops a malformed or
# undefined entity reference ("x&y" parses as "x") instead of failing, and a broken FI passed.
SAFE_OPTIONS: dict[str, Any] = {
    "resolve_entities": "internal",
    "no_network": True,
    "huge_tree": False,
    "load_dtd": False,
    "dtd_validation": False,
    "collect_ids": False,
}


# --- the concatenated parts -----------------------------------------------------------------

def read_full(readinto: Callable[[memoryview], int], size: int) -> bytes:
    """Up to ``size`` bytes from repeated ``readinto`` calls, short only at the end of the data
    (a raw stream may return fewer bytes than asked at any call)."""
    out = bytearray(size)
    view = memoryview(out)
    got = 0
    while got < size:
        n = readinto(view[got:])
        if not n:
            break
        got += n
    del view
    if got < size:
        del out[got:]
    return bytes(out)


class ConcatStream(io.RawIOBase):
    """A readable binary stream over several files, in the given order (spec P10: byte-wise)."""

    def __init__(self, paths: Iterable[Path | str]):
        super().__init__()
        self._paths = [Path(p) for p in paths]
        self._index = 0
        self._current: io.FileIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current file, moving to the next one at its end."""
        view = memoryview(buffer).cast("B")
        while self._index < len(self._paths):
            if self._current is None:
                self._current = open(self._paths[self._index], "rb", buffering=0)  # noqa: SIM115
            n = self._current.readinto(view)
            if n:
                return n
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all when negative); short only at the end of the last file."""
        if size is None or size < 0:
            return self.readall()
        if self._current is not None:
            # The usual case: the current file alone fills the request (one copy, no zeroing).
            first = self._current.read(size)
            if first is not None and len(first) == size:
                return first
            if first:
                return first + self._fill(size - len(first))
        return self._fill(size)

    def _fill(self, size: int) -> bytes:
        """Up to ``size`` bytes across files, short only at the end of the last file."""
        return read_full(self.readinto, size)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


def open_source(source: Source) -> tuple[IO[bytes], bool]:
    """A binary stream for ``source`` and whether we opened it (and must close it)."""
    # typeshed does not see a RawIOBase as an IO[bytes]; it is one for every use made here.
    if isinstance(source, (str, Path)):
        return cast(IO[bytes], ConcatStream([source])), True
    if not isinstance(source, Sequence):
        return source, False
    return cast(IO[bytes], ConcatStream(source)), True


# --- P10 encoding ---------------------------------------------------------------------------

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


def _read_head(stream: IO[bytes], chunk_size: int) -> bytes:
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


def drain(stream: IO[bytes], guard: Utf8Guard, chunk_size: int = CHUNK) -> None:
    """Read the rest of ``stream`` through ``guard``: 138 outranks any later-step failure."""
    while data := stream.read(chunk_size):
        guard.check(data)
    guard.finish()


# --- P11 / P12: prolog and root -------------------------------------------------------------

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


class _DoctypeFound(Exception):
    pass


class _RootProbe:
    """lxml parser target building no tree: records the DOCTYPE and the root tag."""

    def __init__(self) -> None:
        self.root: str | None = None

    def doctype(self, name: str | None, pubid: str | None, system: str | None) -> None:
        # A second safety net behind prolog_doctype(): refuse as soon as a DOCTYPE is seen.
        raise _DoctypeFound(name)

    def start(self, tag: str, attrib: Any) -> None:
        if self.root is None:
            self.root = tag

    def close(self) -> str | None:
        return self.root


def split_tag(tag: str) -> tuple[str | None, str]:
    """``{ns}local`` -> (ns, local); (None, tag) without namespace."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def root_problem(tag: str, namespace: str, root: str) -> ChannelError | None:
    """P12 (139) when the root namespace is wrong, P13 (312) when only its local name is."""
    ns, local = split_tag(tag)
    if ns != namespace:
        found = f'namespace "{ns}"' if ns else "no namespace"
        return ChannelError("139", f'root element {local} has {found}; expected "{namespace}"')
    if local != root:
        return ChannelError("312", f"the root element is {local}; expected {root}")
    return None


def _parse_error(log: Any) -> ChannelError | None:
    """102 for the first well-formedness (non-schema) error of an lxml error log."""
    for entry in log:
        if entry.domain_name != "SCHEMASV" and entry.level_name in ("ERROR", "FATAL"):
            return ChannelError(
                "102", f"line {entry.line}, column {entry.column}: {entry.message.strip()}")
    return None


def _syntax_error(exc: etree.XMLSyntaxError, log: Any) -> ChannelError:
    """102 from a parser's own log (``exc.error_log`` may hold entries of earlier parses)."""
    found = _parse_error(log)
    if found is not None:
        return found
    line, column = exc.position if exc.position else (0, 0)
    return ChannelError("102", f"line {line}, column {column}: {exc.msg}")


# --- the validating pass --------------------------------------------------------------------

@dataclass
class Batch:
    """Completed elements of the requested tags, in document order, read from one chunk.

    Only clean chunks are yielded: once a schema or parse error is seen, no batch follows and
    the generator ends with the ChannelError of highest precedence.
    """

    elements: list[Any]


_ELEMENT_RE = re.compile(r"Element '([^']+)'")
_VALUE_RE = re.compile(r"[Vv]alue '([^']*)'")
_NS_RE = re.compile(r"\{(?:urn|https?):[^}]*\}")  # "{urn:...}Hours" -> "Hours", not "{1,4}"


def _schema_error(log: Any, root: Any) -> ChannelError | None:
    """312 for the first schema error of the log, located on an element still in memory."""
    for entry in log:
        if entry.domain_name == "SCHEMASV" and entry.level_name in ("ERROR", "FATAL"):
            message = entry.message.strip()
            line = entry.line or _locate(root, message)
            where = f"line {line}: " if line else ""
            return ChannelError("312", where + _NS_RE.sub("", message))
    return None


def _locate(root: Any, message: str) -> int | None:
    """Line of the element an lxml schema message names (libxml2 gives none when streaming)."""
    if root is None:
        return None
    match = _ELEMENT_RE.search(message)
    if not match:
        return root.sourceline
    value = _VALUE_RE.search(message)
    first = None
    for el in root.iter(match.group(1)):
        if value is None or (el.text or "") == value.group(1):
            return el.sourceline
        first = first or el.sourceline
    return first or root.sourceline


def _read_checked(stream: IO[bytes], guard: Utf8Guard, size: int) -> bytes:
    data = stream.read(size)
    if data:
        guard.check(data)
        _check_shape(stream, guard, data, size)
    return data


def _check_shape(stream: IO[bytes], guard: Utf8Guard, data: bytes | bytearray,
                 size: int) -> None:
    """102 (after the rest is read for a 138) when ``data`` shows too many attributes."""
    if guard.shape is not None and (bad := guard.shape.check(data)) is not None:
        guard.shape = None
        drain(stream, guard, size)
        raise bad


def stream_elements(source: Source, *, namespace: str, root: str, schema: etree.XMLSchema | None,
                    tags: Sequence[str],
                    chunk_size: int | None = None) -> Generator[Batch, None, None]:
    """Yield batches of completed ``tags`` elements of the document, checking P10-P13 on the way.

    Raises ChannelError 138, 102, 139 or 312 with the precedence of spec 5.3. Elements of a
    batch are cleared (and removed from the root) when the consumer asks for the next batch, so
    memory does not grow with the document; the consumer must not keep references to them.
    """
    chunk_size = chunk_size or CHUNK  # read at call time, so tests can use tiny chunks
    stream, owned = open_source(source)
    try:
        yield from _stream_elements(stream, _reopener(source, stream, owned), namespace, root,
                                    schema, tags, chunk_size)
    finally:
        if owned:
            stream.close()


HEAD_LIMIT = 4 << 20  # bytes within which confirm_valid expects its head element to end


def confirm_valid(source: Source, *, namespace: str, root: str, xsd: Path, head_tag: str,
                  chunk_size: int | None = None) -> Any:
    """The first ``head_tag`` element of a document that is certainly clean (P10-P13), found
    without building the document's tree; None when anything failed or is unsure.

    The prolog and root checks are those of :func:`stream_elements`; the rest is validated by
    libxml2 without a tree (:mod:`fla_core.xsdstream`), which confirms validity but does not
    name anomalies: on None the caller runs :func:`stream_elements`, which does (and which
    also covers a missing tree-less validator). A stream ``source`` is left where it started;
    one that cannot seek back is not tried.
    """
    from fla_core import xsdstream

    validator = xsdstream.validator_for(xsd)
    if validator is None:
        return None
    stream, owned = open_source(source)
    start = None
    try:
        if not owned:
            try:
                start = stream.tell() if stream.seekable() else None
            except (AttributeError, OSError):
                start = None
            if start is None:
                return None
        guard = Utf8Guard()
        limits = current_shape_limits()
        guard.shape = AttributeGuard(limits.max_attributes)
        chunk_size = chunk_size or CHUNK
        try:
            pieces = _prolog(stream, guard, namespace, root, chunk_size,
                             limits.max_prolog_size)
        except ChannelError:
            return None
        feed = _ValidatorFeed(stream, guard, pieces, head_tag, chunk_size)
        try:
            valid = validator.valid(feed.read)
        except (ChannelError, _Unsure):
            return None
        finally:
            feed.close()
        return feed.head if valid else None
    finally:
        if owned:
            stream.close()
        elif start is not None:
            stream.seek(start)


class _Unsure(Exception):
    """A namespace declaration after the first chunk: libxml2 with a schema may hide its
    error (see _validating_pass), so the tree-less pass gives up."""


class _ValidatorFeed:
    """What libxml2 reads in confirm_valid: the prolog's pieces, then the stream, UTF-8
    checked, in the sizes it asks for; the head element is parsed on the side (lxml)."""

    def __init__(self, stream: IO[bytes], guard: Utf8Guard, pieces: list[bytes], head_tag: str,
                 chunk_size: int):
        self._stream, self._guard, self._chunk_size = stream, guard, chunk_size
        self._pieces, self._probed = list(pieces), len(pieces)
        self._view, self._pos, self._last = memoryview(b""), 0, b""
        self._head_parser: Any = etree.XMLPullParser(
            events=("end",), tag=head_tag, remove_blank_text=True, remove_comments=True,
            remove_pis=True, **SAFE_OPTIONS)
        self._head_fed = 0
        self.head: Any = None

    def read(self, size: int) -> bytes:
        while self._pos >= len(self._view):
            if self._pieces:
                data = self._pieces.pop(0)
            else:
                data = _read_checked(self._stream, self._guard, self._chunk_size)
                if not data:
                    self._guard.finish()
                    return b""
                if self._probed <= 0 and (b"xmlns" in data
                                          or b"xmlns" in self._last[-4:] + data[:4]):
                    raise _Unsure
            self._probed -= 1
            self._last = data
            self._find_head(data)
            self._view, self._pos = memoryview(data), 0
        piece = self._view[self._pos:self._pos + size]
        self._pos += len(piece)
        return piece.tobytes()

    def _find_head(self, data: bytes) -> None:
        if self._head_parser is None:
            return
        try:
            self._head_parser.feed(data)
            for _event, el in self._head_parser.read_events():
                self.head = el
                break
        except etree.XMLSyntaxError:
            pass  # the validator fails on it too
        self._head_fed += len(data)
        if self.head is not None or self._head_fed > HEAD_LIMIT:
            self.close()  # found, or not where a valid document has it

    def close(self) -> None:
        """Free the side parser (the head element stays usable)."""
        if self._head_parser is not None:
            _discard(self._head_parser)
            self._head_parser = None


def _reopener(source: Source, stream: IO[bytes],
              owned: bool) -> Callable[[], tuple[IO[bytes], bool]] | None:
    """How to read the document again from its start (error path only), or None if we cannot."""
    if owned:
        return lambda: open_source(source)
    try:
        if stream.seekable():
            start = stream.tell()

            def rewind() -> tuple[IO[bytes], bool]:
                stream.seek(start)
                return stream, False

            return rewind
    except (AttributeError, OSError):
        pass
    return None


class _NullTarget:
    """Parser target that builds nothing: the cheapest well-formedness check lxml offers."""

    def close(self) -> None:
        return None


def _wellformedness_error(stream: IO[bytes], chunk_size: int) -> ChannelError | None:
    """102 if the document in ``stream`` is not well-formed, else None (a second, tree-less read).

    Needed because libxml2, while validating against a schema, hides the message of a
    well-formedness error behind "no element found" or behind a schema error.
    """
    parser = etree.XMLParser(target=_NullTarget(), **SAFE_OPTIONS)
    data = stream.read(chunk_size)
    data = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    try:
        while data:
            parser.feed(data)
            data = stream.read(chunk_size)
        parser.close()
    except etree.XMLSyntaxError as exc:
        return _syntax_error(exc, parser.feed_error_log)
    return _parse_error(parser.feed_error_log)  # recoverable ones (an xmlns that is no URI)


def _shadow_feed(shadow: Any, data: bytes | None) -> ChannelError | None:
    """Feed (or close, for None) the well-formedness shadow parser; 102 when it fails."""
    try:
        if data is None:
            shadow.close()
            return _parse_error(shadow.feed_error_log)  # recoverable errors do not raise
        shadow.feed(data)
    except etree.XMLSyntaxError as exc:
        return _syntax_error(exc, shadow.feed_error_log)
    return None


def _stream_elements(stream: IO[bytes], reopen: Callable[[], tuple[IO[bytes], bool]] | None,
                     namespace: str, root_name: str, schema: etree.XMLSchema | None,
                     tags: Sequence[str], chunk_size: int) -> Generator[Batch, None, None]:
    guard = Utf8Guard()
    limits = current_shape_limits()
    guard.shape = AttributeGuard(limits.max_attributes)
    buffered = _prolog(stream, guard, namespace, root_name, chunk_size, limits.max_prolog_size)
    yield from _validating_pass(stream, guard, reopen, buffered, namespace, root_name, schema,
                                tags, chunk_size)


def _prolog(stream: IO[bytes], guard: Utf8Guard, namespace: str, root_name: str,
            chunk_size: int, max_prolog: int = MAX_PROLOG_SIZE) -> list[bytes]:
    """P10-P12 up to the root start tag: no DOCTYPE, well-formed so far, the right root
    (ChannelError otherwise); the bytes read so far, in pieces (not yet validated).

    At most ``max_prolog`` bytes (and one more read) are held before the root start tag
    ends: a longer prolog is refused (102) without being parsed.
    """
    first = _read_head(stream, chunk_size)
    skip = sniff_encoding(first)
    head = bytearray(first[skip:])  # grows in place: appending stays linear
    del first
    guard.check(head)
    _check_shape(stream, guard, head, chunk_size)

    # 1. No DOCTYPE in the prolog: refused before any parser sees it, so entity bombs and
    #    external entities are never parsed (libxml2 reads the internal subset eagerly).
    scanner = PrologScanner()
    more = b"-"
    while (doctype := scanner.scan(head)) is None and more:
        if len(head) > max_prolog:
            drain(stream, guard, chunk_size)
            raise _prolog_too_long(max_prolog)
        more = _read_checked(stream, guard, chunk_size)
        head += more
    if doctype is not None and doctype is not False:
        drain(stream, guard, chunk_size)
        line = head.count(b"\n", 0, doctype) + 1
        raise ChannelError("102", f"line {line}: a DOCTYPE declaration is not allowed")

    # 2. Tree-less probe up to the root start tag (its doctype hook is a second safety net).
    probe, probe_parser = _root_probe()
    try:
        return _probe_root(stream, guard, bytes(head), probe, probe_parser, namespace,
                           root_name, chunk_size, max_prolog)
    finally:
        _discard(probe_parser)


def _prolog_too_long(max_prolog: int) -> ChannelError:
    return ChannelError("102", f"no root start tag within the first {max_prolog} bytes "
                               "(the limit on the prolog and the root start tag)")


_probes = threading.local()


def _root_probe() -> tuple[_RootProbe, Any]:
    """This thread's root probe and its feed parser, reset for a new document.

    Reused rather than made per FI: lxml inspects a Python target's ``start`` with
    ``inspect.getfullargspec`` once per parser, which cost more than probing a small FI. A
    closed feed parser starts a new document (and a new error log) at its next feed; the
    probe runs to its end without yielding, so one per thread is enough.
    """
    pair = getattr(_probes, "pair", None)
    if pair is None:
        probe = _RootProbe()
        pair = _probes.pair = (probe, etree.XMLParser(target=probe, **SAFE_OPTIONS))
    pair[0].root = None
    return pair


def _probe_root(stream: IO[bytes], guard: Utf8Guard, head: bytes, probe: _RootProbe,
                probe_parser: Any, namespace: str, root_name: str,
                chunk_size: int, max_prolog: int = MAX_PROLOG_SIZE) -> list[bytes]:
    """Steps 2-3 of _prolog: feed the probe up to the root start tag, then judge the root."""
    buffered = [head]
    data = head
    held = 0  # bytes fed to the probe: the root start tag must end within max_prolog
    try:
        while True:
            if data:
                probe_parser.feed(data if held + len(data) <= max_prolog
                                  else data[:max(max_prolog - held, 0)])
                held += len(data)
            if probe.root is not None:
                break
            if held > max_prolog:
                drain(stream, guard, chunk_size)
                raise _prolog_too_long(max_prolog)
            data = _read_checked(stream, guard, chunk_size)
            if not data:
                probe_parser.close()  # raises: no root element
                break
            buffered.append(data)
    except _DoctypeFound:
        drain(stream, guard, chunk_size)
        raise ChannelError("102", "a DOCTYPE declaration is not allowed") from None
    except etree.XMLSyntaxError as exc:
        drain(stream, guard, chunk_size)
        raise _syntax_error(exc, probe_parser.feed_error_log) from None
    if probe.root is None:
        drain(stream, guard, chunk_size)
        raise ChannelError("102", "the document has no root element")

    # 3. Wrong root: only well-formedness and encoding can still outrank 139/312.
    wrong = root_problem(probe.root, namespace, root_name)
    if wrong is None and (bad := _parse_error(probe_parser.feed_error_log)) is not None:
        drain(stream, guard, chunk_size)  # a recoverable error in the first chunk (an xmlns)
        raise bad
    if wrong is not None:
        try:
            while data := _read_checked(stream, guard, chunk_size):
                probe_parser.feed(data)
            guard.finish()
            probe_parser.close()
        except etree.XMLSyntaxError as exc:
            drain(stream, guard, chunk_size)
            raise _syntax_error(exc, probe_parser.feed_error_log) from None
        # Recoverable errors (an xmlns value that is not a URI) do not raise: look at the log.
        raise _parse_error(probe_parser.feed_error_log) or wrong
    return buffered  # 4. the validating pass proper follows


TAIL = 64 * 1024  # bytes held back so that the end of the document is fed under watch


def _root_end_start(tail: bytes, root_name: str) -> int | None:
    """Offset in ``tail`` of the root end tag followed only by a well-formed epilogue.

    With a schema plugged in, libxml2 silently ignores content after the root element
    ("<x/>" and the like): the epilogue is checked here, by a tree-less parser, instead.
    None when no candidate fits (the caller then reads the document again to be exact).
    """
    pattern = re.compile(rb"</(?:[A-Za-z_][\w.\-]*:)?" + re.escape(root_name.encode())
                         + rb"[ \t\r\n]*>")
    candidates = [m for m in pattern.finditer(tail)][-8:]
    for match in reversed(candidates):
        parser = etree.XMLParser(target=_NullTarget(), **SAFE_OPTIONS)
        try:
            parser.feed(b"<r/>" + tail[match.end():])
            parser.close()
        except etree.XMLSyntaxError:
            continue
        if not _parse_error(parser.feed_error_log):
            return match.start()
    return None


def _validating_pass(stream: IO[bytes], guard: Utf8Guard,
                     reopen: Callable[[], tuple[IO[bytes], bool]] | None,
                     buffered: list[bytes], namespace: str, root_name: str,
                     schema: etree.XMLSchema | None, tags: Sequence[str],
                     chunk_size: int) -> Generator[Batch, None, None]:
    """P11 (rest) and P13 over the whole document, yielding clean batches (see stream_elements).

    libxml2 with a schema plugged in may hide a well-formedness error (behind "no element
    found", a schema error or nothing at all). Hence: the root's end event is required, the
    end of the document is fed under watch (``_root_end_start``), and on any doubt the document
    is read again without schema; a source that cannot be read twice gets a tree-less shadow
    parser alongside instead.
    """
    shadow = None
    if schema is not None and reopen is None:
        shadow = etree.XMLParser(target=_NullTarget(), **SAFE_OPTIONS)
    # Only "end" events of the wanted tags: lxml filters in C, Python sees one call per element
    # of interest. Blank text between elements, comments and PIs are not kept: fewer nodes, and
    # the children of a valid element are exactly those of the schema (values are untouched).
    root_tag = f"{{{namespace}}}{root_name}"
    parser = etree.XMLPullParser(events=("end",), tag=(*tags, root_tag), schema=schema,
                                 remove_blank_text=True, remove_comments=True, remove_pis=True,
                                 **SAFE_OPTIONS)
    try:
        yield from _validate(stream, guard, reopen, buffered, root_name, root_tag, schema,
                             chunk_size, parser, shadow)
    finally:  # an error, or a consumer that stopped early (fla.read): the partial tree too
        _discard(parser)
        if shadow is not None:
            _discard(shadow)


def _discard(parser: Any) -> None:
    """Close a feed parser, wherever it stopped. lxml frees a parser's libxml2 context (and
    its partial tree) on close(), not when the parser object goes: an unclosed one leaked
    ~240 bytes with a target, ~2.4 KB with a tree, per FI."""
    with contextlib.suppress(Exception):  # a parser left mid-document refuses to close
        parser.close()


def _validate(stream: IO[bytes], guard: Utf8Guard,
              reopen: Callable[[], tuple[IO[bytes], bool]] | None, buffered: list[bytes],
              root_name: str, root_tag: str, schema: etree.XMLSchema | None, chunk_size: int,
              parser: Any, shadow: Any) -> Generator[Batch, None, None]:
    """The body of _validating_pass, with its parsers."""
    shadow_error: ChannelError | None = None
    root_el = None
    root_closed = False
    unsure = False  # the end of the document could not be watched: read it again
    first_error: ChannelError | None = None
    failure: etree.XMLSyntaxError | None = None
    held = b""
    queue = list(buffered)
    probed = len(queue)  # pieces the root probe has parsed already (up to the root start tag)

    def feed(data: bytes) -> None:
        nonlocal shadow_error
        if shadow is not None and shadow_error is None:
            shadow_error = _shadow_feed(shadow, data)
        parser.feed(data)

    def events() -> list[Any]:
        nonlocal root_el, root_closed
        found = [el for _event, el in parser.read_events()]
        if found and found[-1].tag == root_tag and found[-1].getparent() is None:
            root_el = found.pop()
            root_closed = True
        return found

    try:
        while True:
            data = queue.pop(0) if queue else _read_checked(stream, guard, chunk_size)
            probed -= 1
            # libxml2 with a schema also hides namespace errors ("xmlns:p='a b'"): a namespace
            # declaration after the first chunk is rare, so it simply earns the second read.
            if probed < 0 and not unsure and (b"xmlns" in data
                                               or b"xmlns" in held[-4:] + data[:4]):
                unsure = True
            batch: list[Any]
            if data:
                held += data
                if len(held) <= TAIL:
                    continue
                feed(held[:-TAIL])
                held = held[-TAIL:]
                batch = events()
            else:
                guard.finish()
                start = _root_end_start(held, root_name) if not root_closed else None
                if start is None:
                    unsure = True
                    feed(held)
                    batch = events()
                else:
                    feed(held[:start])
                    batch = events()
                    unsure = unsure or root_closed  # closed before its last end tag: junk
                    feed(held[start:])
                    batch += events()
                if shadow is not None and shadow_error is None:
                    shadow_error = _shadow_feed(shadow, None)
                shadow = None if shadow_error is None else shadow  # closed: nothing left to feed
                parser.close()
                batch += events()
            if root_el is None and batch:
                root_el = batch[0]
                while (up := root_el.getparent()) is not None:
                    root_el = up
            if first_error is None and schema is not None:
                log = parser.feed_error_log  # a copy: looked at once per chunk, only until dirty
                if len(log):
                    first_error = (_parse_error(log) or _schema_error(log, root_el)
                                   or ChannelError("312", log[0].message))
            if first_error is not None or shadow_error is not None:
                break  # the verdict is known but for a later 138/102: stop validating
            if batch or not data:
                yield Batch(batch)
                for el in batch:
                    el.clear()
                if root_el is not None and len(root_el) > 1:
                    del root_el[:-1]  # finished children; the last one may still be open
            if not data:
                break
    except etree.XMLSyntaxError as exc:
        failure = exc
    if failure is None and first_error is None and shadow_error is None:
        if root_closed and not unsure:
            return
        if not root_closed:
            first_error = ChannelError(
                "102", "the document ends before its root element is closed")
    # Something failed or is unsure. Read the rest without validating (a schema error at every
    # record would otherwise cost time and an lxml log entry each): 138 anywhere, then 102.
    while shadow is not None and shadow_error is None:
        data = queue.pop(0) if queue else _read_checked(stream, guard, chunk_size)
        shadow_error = _shadow_feed(shadow, data or None)
        if not data:
            break
    drain(stream, guard, chunk_size)
    if shadow_error is not None:
        raise shadow_error
    log = parser.feed_error_log
    if schema is not None and reopen is not None:
        again, owned = reopen()
        try:
            found = _wellformedness_error(again, chunk_size)
        finally:
            if owned:
                again.close()
        if found is not None:
            raise found
    if failure is None and first_error is None:
        return  # the doubt about the end of the document was unfounded
    found = _parse_error(log) or first_error or _schema_error(log, root_el)
    if found is None and failure is not None:
        # Well-formed for a tree-less reader, yet the tree builder stopped: a safety limit.
        found = ChannelError("102", f"the parser stopped ({failure.msg}): a text over 10 MB "
                                    "or too deep a nesting is refused")
    raise found or ChannelError("312", "the document is not valid")
