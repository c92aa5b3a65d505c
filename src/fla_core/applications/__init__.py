"""Applications routed by the shared channel (spec 3.4, 4.3).

The routing table knows every upload code; an application *plugin* (``fla_applications`` hook)
brings the namespace, schema, renderer and reader of one code. A known code without plugin is
routed and answered with a positive ACRF and no NOTI (spec 4.3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Upload codes known to the router (spec 4.3). ACRF/NOTI are answer-only: refused (154) in uploads.
KNOWN_UPLOAD_CODES: frozenset[str] = frozenset({
    "FLAC", "DMFA", "DMWA", "DMRQ", "DIMN", "AOAT", "WECH", "ZIMA", "DUCN", "PFRQ", "TWCT",
    "VBLV", "FLEX",
})
ANSWER_CODES: frozenset[str] = frozenset({"ACRF", "NOTI"})


@dataclass(frozen=True)
class Application:
    """What an application plugin brings for one application code.

    ``render(content, out)`` writes an FI to a binary stream; ``scan(...)`` is the streaming
    reader/validator used by ``fla check`` and the simulator (see ``fla_core.judge``).
    ``confirm(source, expect=...)``, optional, is a faster P10-P14 without the document's tree
    that only confirms: the header of a file certainly clean, else None (then ``scan`` runs).
    """

    code: str
    title: str
    namespace: str
    root: str
    schema: Path
    render: Callable[..., None]
    scan: Callable[..., Any]
    read: Callable[..., Any] | None = None
    confirm: Callable[..., Any] | None = None
