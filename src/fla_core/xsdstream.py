"""XSD validation of a byte stream without building a tree: libxml2's SAX-level validator
(``xmlSchemaValidateStream``), called through ctypes in the libxml2 that lxml carries.

lxml validates a document only while it builds its tree, and for a big FI the tree costs about
as much as the validation: 100 MB took 2.4-2.7 s through lxml, 1.5 s with
``xmllint --stream --schema`` and 1.5 s here (the same validator, without the tree). So this
module only *confirms* that a document is valid; whenever it finds anything (a syntax error, a
schema error, a read that failed) the caller reads the document again with lxml, whose path
names the exact anomaly (``fla_core.fi``). Being the libxml2 lxml was built with, it validates
exactly as lxml does. Where those symbols cannot be reached, ``validator_for`` returns None and
callers keep to lxml.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path

log = logging.getLogger("fla_core.xsdstream")

_P = ctypes.c_void_p
_READ = ctypes.CFUNCTYPE(ctypes.c_int, _P, ctypes.POINTER(ctypes.c_char), ctypes.c_int)
_CLOSE = ctypes.CFUNCTYPE(ctypes.c_int, _P)
_ERROR = ctypes.CFUNCTYPE(None, _P, _P)
_SAX2_MAGIC = 0xDEEDBEAF  # XML_SAX2_MAGIC: the handler uses the SAX2 (namespace) callbacks


class _SaxHandler(ctypes.Structure):
    """libxml2's ``xmlSAXHandler`` (stable since 2.6): every callback NULL, so that the parser
    builds nothing; the schema validator plugs its own callbacks in front."""

    _fields_ = [*((f"callback{i}", _P) for i in range(27)),  # internalSubset .. externalSubset
                ("initialized", ctypes.c_uint), ("private", _P), ("startElementNs", _P),
                ("endElementNs", _P), ("serror", _P)]


# libxml2 releases whose xmlSAXHandler layout and stream-validation API this module was checked
# against (2.9 to 2.15: lxml 5.0 ships 2.12, lxml 6.0 2.14). Another series may have changed
# the structure above: it gets the plain lxml path until someone checks it and widens this.
KNOWN_LIBXML2 = ((2, 9), (2, 15))


def known_libxml2(version: tuple[int, ...]) -> bool:
    """True when ``version`` (lxml's ``LIBXML_VERSION``) is a series checked against."""
    low, high = KNOWN_LIBXML2
    return low <= tuple(version[:2]) <= high


def _library() -> ctypes.CDLL | None:
    """lxml's extension module, which exports the libxml2 it is linked with."""
    try:
        from lxml import etree

        if not known_libxml2(etree.LIBXML_VERSION):
            log.info("tree-less XSD validation off: libxml2 %s is not a version it was checked "
                     "against", ".".join(map(str, etree.LIBXML_VERSION)))
            return None
        lib = ctypes.CDLL(etree.__file__)
        lib.xmlSchemaNewParserCtxt.restype = _P
        lib.xmlSchemaNewParserCtxt.argtypes = [ctypes.c_char_p]
        lib.xmlSchemaParse.restype = _P
        lib.xmlSchemaParse.argtypes = [_P]
        lib.xmlSchemaFreeParserCtxt.argtypes = [_P]
        lib.xmlSchemaNewValidCtxt.restype = _P
        lib.xmlSchemaNewValidCtxt.argtypes = [_P]
        lib.xmlSchemaFreeValidCtxt.argtypes = [_P]
        lib.xmlSchemaSetValidStructuredErrors.argtypes = [_P, _ERROR, _P]
        lib.xmlParserInputBufferCreateIO.restype = _P
        lib.xmlParserInputBufferCreateIO.argtypes = [_READ, _CLOSE, _P, ctypes.c_int]
        lib.xmlSchemaValidateStream.restype = ctypes.c_int
        lib.xmlSchemaValidateStream.argtypes = [_P, _P, ctypes.c_int, _P, _P]
        return lib
    except (OSError, AttributeError, ImportError) as exc:  # no such symbols in this build
        log.debug("tree-less XSD validation unavailable: %s", exc)
        return None


class StreamValidator:
    """One compiled XSD; ``valid(read)`` validates a document read through ``read(n)``."""

    def __init__(self, lib: ctypes.CDLL, schema: int):
        self._lib, self._schema = lib, schema

    def valid(self, read: Callable[[int], bytes]) -> bool:
        """True when the bytes ``read(n)`` returns (b"" at the end) are a well-formed document
        valid against the schema. An exception raised by ``read`` stops the parse and is
        raised here once libxml2 has returned."""
        lib = self._lib
        raised: list[BaseException] = []
        errors = 0

        def read_into(_ctx: int | None, buffer: ctypes.Array[ctypes.c_char], size: int) -> int:
            if raised:
                return -1
            try:
                data = read(size)
            except BaseException as exc:  # it cannot cross C: raised again below
                raised.append(exc)
                return -1
            ctypes.memmove(buffer, data, len(data))
            return len(data)

        def close(_ctx: int | None) -> int:
            return 0

        def count_error(_ctx: int | None, _error: int | None) -> None:
            nonlocal errors
            errors += 1

        # C callbacks, kept referenced until libxml2 has returned
        on_read, on_close, on_error = _READ(read_into), _CLOSE(close), _ERROR(count_error)

        context = lib.xmlSchemaNewValidCtxt(self._schema)
        if not context:
            raise MemoryError("xmlSchemaNewValidCtxt failed")
        try:
            lib.xmlSchemaSetValidStructuredErrors(context, on_error, None)
            # the input buffer belongs to the parser xmlSchemaValidateStream makes (it frees it)
            source = lib.xmlParserInputBufferCreateIO(on_read, on_close, None, 0)
            if not source:
                raise MemoryError("xmlParserInputBufferCreateIO failed")
            sax = _SaxHandler(initialized=_SAX2_MAGIC)
            outcome = lib.xmlSchemaValidateStream(context, source, 0, ctypes.addressof(sax), None)
        finally:
            lib.xmlSchemaFreeValidCtxt(context)
        if raised:
            raise raised[0]
        return outcome == 0 and errors == 0


_LOCK = threading.Lock()  # libxml2's schema compiler is not thread-safe


@cache
def _compiled(xsd: str) -> StreamValidator | None:
    lib = _library()
    if lib is None:
        return None
    parser = lib.xmlSchemaNewParserCtxt(xsd.encode())
    if not parser:
        return None
    try:
        schema = lib.xmlSchemaParse(parser)
    finally:
        lib.xmlSchemaFreeParserCtxt(parser)
    if not schema:
        log.warning("tree-less XSD validation unavailable: libxml2 could not compile %s", xsd)
        return None
    validator = StreamValidator(lib, schema)  # kept for the life of the process
    if not _answers_right(validator):
        log.warning("tree-less XSD validation off: it misjudged a known document (libxml2 "
                    "build not as expected)")
        return None
    return validator


def _answers_right(validator: StreamValidator) -> bool:
    """A canary at compile time: a document that is not well-formed must never be confirmed
    (the one verdict this module may give is "valid", so a binding that says "valid" to
    everything is the failure that matters)."""
    try:
        return validator.valid(_reader(b"<unclosed")) is False
    except Exception:  # a crash in the binding: off, the callers keep to lxml
        return False


def _reader(data: bytes) -> Callable[[int], bytes]:
    view = memoryview(data)
    position = 0

    def read(size: int) -> bytes:
        nonlocal position
        chunk = bytes(view[position:position + size])
        position += len(chunk)
        return chunk

    return read


def validator_for(xsd: Path) -> StreamValidator | None:
    """The validator of the XSD at ``xsd`` (compiled once per process), or None when the
    libxml2 symbols are out of reach: callers then validate with lxml alone."""
    with _LOCK:
        return _compiled(str(xsd))
