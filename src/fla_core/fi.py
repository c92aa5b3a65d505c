"""Safe streaming reading of an FI document, independent of the application (spec 5.3 P10-P13).

The document is the byte-concatenation of the FI parts (:mod:`fla_core.fi_parts`). It is read
once, in big chunks, and each chunk goes through cheap layers before lxml builds anything:

* P10 (``138``, :mod:`fla_core.fi_encoding`): a byte-order mark other than UTF-8's, a UTF-16/32
  byte pattern or an XML declaration naming another encoding is refused from the first bytes;
  every chunk is checked by an incremental strict UTF-8 decoder (skipped for pure-ASCII chunks,
  which are valid anyway).
* P11 (``102``, :mod:`fla_core.fi_shape`): the prolog is scanned for a DOCTYPE before any parser
  sees it, so entity bombs and external entities are never parsed; the prolog and the number of
  attributes of an element are capped; then a tree-less probe parser reads up to the root start
  tag. No DTD is loaded, no entity resolved, no network used, no huge-tree mode.
* P12/P13 (``139``/``312``): when the root is right, a validating pull parser (``XMLPullParser``
  with the XSD) builds only the elements of interest, which are cleared batch by batch.

The scan of one document is a :class:`_SafeScan`, whose state moves PROLOG -> ROOT -> BODY ->
TRAILING, then DONE, or SETTLE when something failed or is unsure. Precedence (spec 5.3: first
failing step wins) holds although the checks run in one pass: after a failure the rest is still
read, so that an invalid byte (138) or a well-formedness error (102) further on outranks it.
libxml2 with a schema plugged in hides some well-formedness errors (behind "no element found",
a schema error, or nothing: junk after the root, a truncated document, an xmlns that is not a
URI); so the root's end event is required, the end of the document is fed under watch, and on
any doubt the document is read a second time without schema (or, for a source that cannot be
rewound, a tree-less shadow parser runs alongside).

This module re-exports the public names of its helper modules: ``fla_core.fi`` stays the one
import for callers.
"""

from __future__ import annotations

import contextlib
import enum
import re
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lxml import etree

from fla_core.anomalies import ChannelError
from fla_core.fi_encoding import UTF8_BOM, Utf8Guard, drain, read_head, sniff_encoding
from fla_core.fi_errors import parse_error, schema_error, syntax_error
from fla_core.fi_parts import CHUNK, ConcatStream, Source, open_source, read_full
from fla_core.fi_shape import (
    MAX_ATTRIBUTES,
    MAX_PROLOG_SIZE,
    AttributeGuard,
    PrologScanner,
    ShapeLimits,
    current_shape_limits,
    prolog_doctype,
    shape_limits,
)

__all__ = [
    "CHUNK", "HEAD_LIMIT", "MAX_ATTRIBUTES", "MAX_PROLOG_SIZE", "SAFE_OPTIONS", "TAIL", "UTF8_BOM",
    "AttributeGuard", "Batch", "ConcatStream", "PrologScanner", "ShapeLimits", "Source",
    "Utf8Guard", "confirm_valid", "current_shape_limits", "drain", "open_source",
    "prolog_doctype", "read_full", "root_problem", "shape_limits", "sniff_encoding", "split_tag",
    "stream_elements",
]

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


# --- the validating pass --------------------------------------------------------------------

@dataclass
class Batch:
    """Completed elements of the requested tags, in document order, read from one chunk.

    Only clean chunks are yielded: once a schema or parse error is seen, no batch follows and
    the generator ends with the ChannelError of highest precedence.
    """

    elements: list[Any]


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
        scan = _SafeScan(stream, namespace, root, chunk_size)
        yield from scan.elements(_reopener(source, stream, owned), schema, tags)
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
        chunk_size = chunk_size or CHUNK
        scan = _SafeScan(stream, namespace, root, chunk_size)
        try:
            pieces = scan.up_to_root()
        except ChannelError:
            return None
        feed = _ValidatorFeed(stream, scan.guard, pieces, head_tag, chunk_size)
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
    error (see _SafeScan), so the tree-less pass gives up."""


class _ValidatorFeed:
    """What libxml2 reads in confirm_valid: the prolog's pieces, then the stream, UTF-8
    checked, in the sizes it asks for; the head element is parsed on the side (lxml)."""

    def __init__(self, stream: IO[bytes], guard: Utf8Guard, pieces: list[bytes], head_tag: str,
                 chunk_size: int):
        self._stream, self._guard, self._chunk_size = stream, guard, chunk_size
        self._pieces, self._probed = list(pieces), len(pieces)
        self._view, self._pos, self._last = memoryview(b""), 0, b""
        self._head_parser: Any = etree.XMLPullParser(
            events=("end",), tag=head_tag, remove_blank_text=False, remove_comments=True,
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


# libxml2 refuses elements nested deeper than this when it builds a tree ("Excessive depth"),
# but not with a parser target: the read below counts instead, so that elements that open and
# never close (60 bytes each in libxml2's stacks) cannot grow memory with the input.
MAX_DEPTH = 256


class _TooDeep(Exception):
    pass


class _DepthTarget:
    """A target that builds nothing and refuses nesting deeper than :data:`MAX_DEPTH`. Its
    callbacks cost a Python call per element (6x the bare target), so it is used where a
    document is already known to be refused: the second read that names the error."""

    def __init__(self) -> None:
        self.depth = 0

    def start(self, tag: str, attrib: object) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _TooDeep

    def end(self, tag: str) -> None:
        self.depth -= 1

    def close(self) -> None:
        return None


def _wellformedness_error(stream: IO[bytes], chunk_size: int) -> ChannelError | None:
    """102 if the document in ``stream`` is not well-formed, else None (a second, tree-less read).

    Needed because libxml2, while validating against a schema, hides the message of a
    well-formedness error behind "no element found" or behind a schema error.
    """
    parser = etree.XMLParser(target=_DepthTarget(), **SAFE_OPTIONS)
    data = stream.read(chunk_size)
    data = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    try:
        while data:
            parser.feed(data)
            data = stream.read(chunk_size)
        parser.close()
    except etree.XMLSyntaxError as exc:
        return syntax_error(exc, parser.feed_error_log)
    except _TooDeep:
        return ChannelError("102", f"elements nested more than {MAX_DEPTH} deep")
    return parse_error(parser.feed_error_log)  # recoverable ones (an xmlns that is no URI)


def _shadow_feed(shadow: Any, data: bytes | None) -> ChannelError | None:
    """Feed (or close, for None) the well-formedness shadow parser; 102 when it fails."""
    try:
        if data is None:
            shadow.close()
            return parse_error(shadow.feed_error_log)  # recoverable errors do not raise
        shadow.feed(data)
    except etree.XMLSyntaxError as exc:
        return syntax_error(exc, shadow.feed_error_log)
    return None


# --- the scan of one document, state by state ----------------------------------------------

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
        if not parse_error(parser.feed_error_log):
            return match.start()
    return None


def _discard(parser: Any) -> None:
    """Close a feed parser, wherever it stopped. lxml frees a parser's libxml2 context (and
    its partial tree) on close(), not when the parser object goes: an unclosed one leaked
    ~240 bytes with a target, ~2.4 KB with a tree, per FI."""
    with contextlib.suppress(Exception):  # a parser left mid-document refuses to close
        parser.close()


class _State(enum.Enum):
    """Where a :class:`_SafeScan` is in its document."""

    PROLOG = "prolog"  # up to the root: encoding, no DOCTYPE, the prolog's size
    ROOT = "root"  # the tree-less probe up to the root start tag, then the root judged
    BODY = "body"  # the validating pass, the last TAIL bytes held back
    TRAILING = "trailing"  # the end of the document: root end tag and epilogue fed under watch
    SETTLE = "settle"  # something failed or is unsure: the rest read for a higher-ranked error
    DONE = "done"  # clean


class _SafeScan:
    """The safe scan of one document (P10-P13), one method per rule; ``state`` says where it is.

    :meth:`up_to_root` runs PROLOG and ROOT (``confirm_valid`` stops there); :meth:`elements`
    runs them, then BODY and TRAILING, then SETTLE when anything failed or is unsure. Every
    read goes through the UTF-8 guard (138) and the attribute cap (:meth:`_read`); every
    refusal first reads the rest of the document, since a 138 further on outranks it
    (:meth:`_refuse`).
    """

    def __init__(self, stream: IO[bytes], namespace: str, root_name: str,
                 chunk_size: int) -> None:
        limits = current_shape_limits()  # read once, when the reader starts
        self.stream, self.chunk_size = stream, chunk_size
        self.namespace, self.root_name = namespace, root_name
        self.root_tag = f"{{{namespace}}}{root_name}"
        self.max_prolog = limits.max_prolog_size
        self.guard = Utf8Guard()
        self.guard.shape = AttributeGuard(limits.max_attributes)
        self.state = _State.PROLOG
        # BODY and after (set by elements())
        self.parser: Any = None
        self.schema: etree.XMLSchema | None = None
        self.reopen: Callable[[], tuple[IO[bytes], bool]] | None = None
        self.shadow: Any = None  # the tree-less shadow parser while it still has to be fed
        self.shadow_error: ChannelError | None = None
        self.root_el: Any = None
        self.root_closed = False  # the root's end event was seen
        self.unsure = False  # the end of the document could not be watched: read it again
        self.first_error: ChannelError | None = None
        self.failure: etree.XMLSyntaxError | None = None
        self.held = b""  # the last bytes, held back from the parser (TAIL)
        self.queue: list[bytes] = []  # pieces read by the prolog and root steps
        self.probed = 0  # of them, those the root probe parsed (up to the root start tag)

    # --- reading -------------------------------------------------------------------------

    def _read(self) -> bytes:
        """The next chunk, UTF-8 checked (138) and its attributes counted (102)."""
        return _read_checked(self.stream, self.guard, self.chunk_size)

    def _refuse(self, error: ChannelError) -> ChannelError:
        """``error``, once the rest of the document is read for a 138 that outranks it."""
        drain(self.stream, self.guard, self.chunk_size)
        return error

    # --- PROLOG and ROOT ------------------------------------------------------------------

    def up_to_root(self) -> list[bytes]:
        """P10-P12 up to the root start tag: no DOCTYPE, well-formed so far, the right root
        (ChannelError otherwise); the bytes read so far, in pieces (not yet validated).

        At most ``max_prolog`` bytes (and one more read) are held before the root start tag
        ends: a longer prolog is refused (102) without being parsed.
        """
        head = self._prolog()
        return self._root(bytes(head))

    def _prolog(self) -> bytearray:
        """PROLOG: the encoding from the first bytes, then the DOCTYPE refusal."""
        self.state = _State.PROLOG
        first = read_head(self.stream, self.chunk_size)
        skip = sniff_encoding(first)
        head = bytearray(first[skip:])  # grows in place: appending stays linear
        del first
        self.guard.check(head)
        _check_shape(self.stream, self.guard, head, self.chunk_size)
        self._refuse_doctype(head)
        return head

    def _refuse_doctype(self, head: bytearray) -> None:
        """No DOCTYPE in the prolog: refused before any parser sees it, so entity bombs and
        external entities are never parsed (libxml2 reads the internal subset eagerly).
        ``head`` grows with what is read to find the end of the prolog."""
        scanner = PrologScanner()
        more = b"-"
        while (doctype := scanner.scan(head)) is None and more:
            self._cap_prolog(len(head))
            more = self._read()
            head += more
        if doctype is not None and doctype is not False:
            line = head.count(b"\n", 0, doctype) + 1
            raise self._refuse(ChannelError(
                "102", f"line {line}: a DOCTYPE declaration is not allowed"))

    def _cap_prolog(self, held: int) -> None:
        """102 when ``held`` bytes went by without the root start tag ending."""
        if held > self.max_prolog:
            raise self._refuse(_prolog_too_long(self.max_prolog))

    def _root(self, head: bytes) -> list[bytes]:
        """ROOT: a tree-less probe up to the root start tag (its doctype hook is a second
        safety net), then the root judged."""
        self.state = _State.ROOT
        probe, probe_parser = _root_probe()
        try:
            buffered = self._probe_to_root(head, probe, probe_parser)
            self._judge_root(probe.root or "", probe_parser)
            return buffered
        finally:
            _discard(probe_parser)

    def _probe_to_root(self, head: bytes, probe: _RootProbe, probe_parser: Any) -> list[bytes]:
        """Feed the probe until it sees the root start tag; the pieces fed (102 without one)."""
        buffered = [head]
        data = head
        held = 0  # bytes fed to the probe: the root start tag must end within max_prolog
        try:
            while True:
                if data:
                    probe_parser.feed(data if held + len(data) <= self.max_prolog
                                      else data[:max(self.max_prolog - held, 0)])
                    held += len(data)
                if probe.root is not None:
                    break
                self._cap_prolog(held)
                data = self._read()
                if not data:
                    probe_parser.close()  # raises: no root element
                    break
                buffered.append(data)
        except _DoctypeFound:
            raise self._refuse(ChannelError("102", "a DOCTYPE declaration is not allowed")) \
                from None
        except etree.XMLSyntaxError as exc:
            raise self._refuse(syntax_error(exc, probe_parser.feed_error_log)) from None
        if probe.root is None:
            raise self._refuse(ChannelError("102", "the document has no root element"))
        return buffered

    def _judge_root(self, tag: str, probe_parser: Any) -> None:
        """The root's namespace (139) and name (312); only well-formedness and encoding can
        still outrank them, so a wrong root is reported after the probe read the rest."""
        wrong = root_problem(tag, self.namespace, self.root_name)
        if wrong is None:
            if (bad := parse_error(probe_parser.feed_error_log)) is not None:
                raise self._refuse(bad)  # a recoverable error in the first chunk (an xmlns)
            return
        try:
            while data := self._read():
                probe_parser.feed(data)
            self.guard.finish()
            probe_parser.close()
        except etree.XMLSyntaxError as exc:
            raise self._refuse(syntax_error(exc, probe_parser.feed_error_log)) from None
        # Recoverable errors (an xmlns value that is not a URI) do not raise: look at the log.
        raise parse_error(probe_parser.feed_error_log) or wrong

    # --- BODY, TRAILING, SETTLE -------------------------------------------------------------

    def elements(self, reopen: Callable[[], tuple[IO[bytes], bool]] | None,
                 schema: etree.XMLSchema | None,
                 tags: Sequence[str]) -> Generator[Batch, None, None]:
        """P10-P13 over the whole document, yielding clean batches (see stream_elements).

        libxml2 with a schema plugged in may hide a well-formedness error (behind "no element
        found", a schema error or nothing at all). Hence: the root's end event is required,
        the end of the document is fed under watch (:meth:`_trailing`), and on any doubt the
        document is read again without schema; a source that cannot be read twice gets a
        tree-less shadow parser alongside instead.
        """
        self.queue = self.up_to_root()
        self.probed = len(self.queue)
        self.schema, self.reopen = schema, reopen
        shadow = None
        if schema is not None and reopen is None:
            shadow = self.shadow = etree.XMLParser(target=_NullTarget(), **SAFE_OPTIONS)
        # Only "end" events of the wanted tags: lxml filters in C, Python sees one call per
        # element of interest. Comments and PIs are not kept (the children of a valid element
        # are exactly those of the schema). Blank text is: libxml2's "blank" also means blanks
        # alone next to a comment, PI or CDATA section *inside a value*, and removing it changed
        # values (" <![CDATA[x]]>" read as "x") or refused valid files (312).
        self.parser = etree.XMLPullParser(
            events=("end",), tag=(*tags, self.root_tag), schema=schema,
            remove_blank_text=False, remove_comments=True, remove_pis=True, **SAFE_OPTIONS)
        try:
            yield from self._body()
            self._settle()
        finally:  # an error, or a consumer that stopped early (fla.read): the partial tree too
            _discard(self.parser)
            if shadow is not None:
                _discard(shadow)

    def _next_piece(self) -> bytes:
        """The pieces the prolog and root steps read, then the rest of the stream."""
        self.probed -= 1
        return self.queue.pop(0) if self.queue else self._read()

    def _watch_namespaces(self, data: bytes) -> None:
        """libxml2 with a schema also hides namespace errors ("xmlns:p='a b'"): a namespace
        declaration after the first chunk is rare, so it simply earns the second read."""
        if self.probed < 0 and not self.unsure and (
                b"xmlns" in data or b"xmlns" in self.held[-4:] + data[:4]):
            self.unsure = True

    def _feed(self, data: bytes) -> None:
        if self.shadow is not None and self.shadow_error is None:
            self.shadow_error = _shadow_feed(self.shadow, data)
        self.parser.feed(data)

    def _events(self) -> list[Any]:
        """The completed elements of interest; the root's own end is recorded, not returned."""
        found = [el for _event, el in self.parser.read_events()]
        if found and found[-1].tag == self.root_tag and found[-1].getparent() is None:
            self.root_el = found.pop()
            self.root_closed = True
        return found

    def _body(self) -> Generator[Batch, None, None]:
        """BODY: feed every piece but the last TAIL bytes, yield each clean batch; then
        TRAILING. Stops at the first error (the verdict, but for a later 138/102)."""
        self.state = _State.BODY
        try:
            while True:
                data = self._next_piece()
                self._watch_namespaces(data)
                if data:
                    self.held += data
                    if len(self.held) <= TAIL:
                        continue
                    self._feed(self.held[:-TAIL])
                    self.held = self.held[-TAIL:]
                    batch = self._events()
                else:
                    batch = self._trailing()
                self._find_root(batch)
                if self._failed():
                    break  # the verdict is known but for a later 138/102: stop validating
                if batch or not data:
                    yield Batch(batch)
                    self._release(batch)
                if not data:
                    break
        except etree.XMLSyntaxError as exc:
            self.failure = exc

    def _trailing(self) -> list[Any]:
        """TRAILING: the end of the document. The held bytes are fed in two steps around the
        root end tag, whose epilogue a tree-less parser checked (trailing content); with no
        such end tag, or with the root closed before it, the document is read again."""
        self.state = _State.TRAILING
        self.guard.finish()
        held = self.held
        start = _root_end_start(held, self.root_name) if not self.root_closed else None
        if start is None:
            self.unsure = True
            self._feed(held)
            batch = self._events()
        else:
            self._feed(held[:start])
            batch = self._events()
            self.unsure = self.unsure or self.root_closed  # closed before its last end tag: junk
            self._feed(held[start:])
            batch += self._events()
        if self.shadow is not None and self.shadow_error is None:
            self.shadow_error = _shadow_feed(self.shadow, None)
        if self.shadow_error is None:
            self.shadow = None  # closed: nothing left to feed
        self.parser.close()
        return batch + self._events()

    def _find_root(self, batch: list[Any]) -> None:
        if self.root_el is None and batch:
            root_el = batch[0]
            while (up := root_el.getparent()) is not None:
                root_el = up
            self.root_el = root_el

    def _failed(self) -> bool:
        """Whether a schema, parse or shadow error is known (the first one is kept)."""
        if self.first_error is None and self.schema is not None:
            log = self.parser.feed_error_log  # a copy: looked at once per chunk, until dirty
            if len(log):
                self.first_error = (parse_error(log) or schema_error(log, self.root_el)
                                    or ChannelError("312", log[0].message))
        return self.first_error is not None or self.shadow_error is not None

    def _release(self, batch: list[Any]) -> None:
        """Clear the yielded elements and drop the root's finished children."""
        for el in batch:
            el.clear()
        root_el = self.root_el
        if root_el is not None and len(root_el) > 1:
            del root_el[:-1]  # finished children; the last one may still be open

    def _settle(self) -> None:
        """DONE when clean and sure; else SETTLE: read the rest without validating (a schema
        error at every record would otherwise cost time and an lxml log entry each), and
        raise the error of highest precedence: 138 anywhere, then 102, then 312."""
        if self.failure is None and self.first_error is None and self.shadow_error is None:
            if self.root_closed and not self.unsure:
                self.state = _State.DONE
                return
            if not self.root_closed:
                self.first_error = ChannelError(
                    "102", "the document ends before its root element is closed")
        self.state = _State.SETTLE
        self._finish_shadow()
        drain(self.stream, self.guard, self.chunk_size)
        if self.shadow_error is not None:
            raise self.shadow_error
        log = self.parser.feed_error_log
        if (found := self._read_again()) is not None:
            raise found
        if self.failure is None and self.first_error is None:
            self.state = _State.DONE  # the doubt about the end of the document was unfounded
            return
        found = parse_error(log) or self.first_error or schema_error(log, self.root_el)
        if found is None and self.failure is not None:
            # Well-formed for a tree-less reader, yet the tree builder stopped: a safety limit.
            found = ChannelError("102", f"the parser stopped ({self.failure.msg}): a text "
                                        "over 10 MB or too deep a nesting is refused")
        raise found or ChannelError("312", "the document is not valid")

    def _finish_shadow(self) -> None:
        """Feed the shadow parser the rest of the document (a source read only once)."""
        while self.shadow is not None and self.shadow_error is None:
            data = self.queue.pop(0) if self.queue else self._read()
            self.shadow_error = _shadow_feed(self.shadow, data or None)
            if not data:
                break

    def _read_again(self) -> ChannelError | None:
        """102 from a second, tree-less read of a document validated with a schema."""
        if self.schema is None or self.reopen is None:
            return None
        again, owned = self.reopen()
        try:
            return _wellformedness_error(again, self.chunk_size)
        finally:
            if owned:
                again.close()
