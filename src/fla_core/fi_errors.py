"""lxml's error logs turned into the channel's codes: 102 for well-formedness, 312 for the
schema, located on a line when libxml2 gives none (it does not while streaming)."""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from fla_core.anomalies import ChannelError


def parse_error(log: Any) -> ChannelError | None:
    """102 for the first well-formedness (non-schema) error of an lxml error log."""
    for entry in log:
        if entry.domain_name != "SCHEMASV" and entry.level_name in ("ERROR", "FATAL"):
            return ChannelError(
                "102", f"line {entry.line}, column {entry.column}: {entry.message.strip()}")
    return None


def syntax_error(exc: etree.XMLSyntaxError, log: Any) -> ChannelError:
    """102 from a parser's own log (``exc.error_log`` may hold entries of earlier parses)."""
    found = parse_error(log)
    if found is not None:
        return found
    line, column = exc.position if exc.position else (0, 0)
    return ChannelError("102", f"line {line}, column {column}: {exc.msg}")


_ELEMENT_RE = re.compile(r"Element '([^']+)'")
_VALUE_RE = re.compile(r"[Vv]alue '([^']*)'")
_NS_RE = re.compile(r"\{(?:urn|https?):[^}]*\}")  # "{urn:...}Hours" -> "Hours", not "{1,4}"


def schema_error(log: Any, root: Any) -> ChannelError | None:
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
        return _line(root)
    value = _VALUE_RE.search(message)
    first = None
    for el in root.iter(match.group(1)):
        if value is None or (el.text or "") == value.group(1):
            return _line(el)
        first = first or _line(el)
    return first or _line(root)


def _line(element: Any) -> int | None:
    line = element.sourceline
    return line if isinstance(line, int) else None
