"""The core's hooks (pluggy project name ``fla``), grouped by phase.

Plugins implement hooks with ``@fla_core.hookimpl``. Built-in behaviour is registered exactly
like third-party plugins (see ``plugins.DEFAULT_PLUGINS``), so this API is exercised by our own
code on every run. Hooks are synchronous. Other packages declare their own hooks, under the
same project name, in a spec module of their own (see ``fla_core.plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from fla_core.anomalies import Anomaly
    from fla_core.applications import Application
    from fla_core.checks.context import CheckContext
    from fla_core.formats import InputFormat, ReadContext
    from fla_core.model import Declaration, FileContent
    from fla_core.qualities import QualityInfo

hookspec = pluggy.HookspecMarker("fla")
hookimpl = pluggy.HookimplMarker("fla")


# --- discovery -------------------------------------------------------------------------------

@hookspec
def fla_input_formats() -> list[InputFormat]:
    """Declare the input formats a plugin reads.

    Called once when the plugin manager is built and whenever the CLI lists formats.
    Return a list of :class:`fla_core.formats.InputFormat` (name, file suffixes, description).
    All results are collected.
    """


@hookspec
def fla_qualities() -> list[QualityInfo]:
    """Declare qualities (spec 2.1) and what each may send (mandate rules of spec 2.2).

    Return a list of :class:`fla_core.qualities.QualityInfo`. All results are collected; a
    quality declared twice, or a quality of spec 2.1 that no plugin declares, is an error. The
    table reaches the business rules as ``CheckContext.qualities`` (built by the judge and by
    ``fla check`` from this hook): a plugin replacing the blocked built-in
    ``fla_core.qualities.builtin`` changes what each quality may send.
    """


@hookspec
def fla_applications() -> list[Application]:
    """Declare applications routed by the channel (spec 3.4, 4.3).

    Return a list of :class:`fla_core.applications.Application`: code, namespace, schema,
    renderer and reader. A code without application plugin is still routed (positive ACRF,
    no NOTI). All results are collected.
    """


# --- reading ---------------------------------------------------------------------------------

@hookspec(firstresult=True)
def fla_read_declarations(path: Path, format: str, context: ReadContext) -> FileContent | None:
    """Turn an input file into :class:`fla_core.model.FileContent`.

    ``format`` is the name chosen by the user or guessed from the suffix. Return None when this
    plugin does not handle ``format``; the first non-None result wins. Problems in the input
    (a malformed row, an unknown column) are reported with ``context.problem(...)`` naming line
    and field, so that every bad row is listed, not only the first. ``declarations`` may be a
    lazy iterator so that a large export is never held in memory.
    """


@hookspec(firstresult=True)
def fla_write_export(content: FileContent, format: str, path: Path) -> bool | None:
    """Write ``content`` to ``path`` as an export in ``format``, the inverse of
    ``fla_read_declarations`` (used by ``fla fake``).

    Return None when this plugin does not write ``format``; True once ``path`` is written. The
    first non-None result wins. A format that writes says so with ``InputFormat(...,
    writes=True)`` from ``fla_input_formats``. What is written must read back, through this
    plugin's ``fla_read_declarations``, into the same declarations (the layout of
    ``fla_core.formats.layout``; ``layout.declaration_rows`` gives each declaration's rows as
    text). ``content.declarations`` is a lazy iterator of any length: write row by row and
    never collect it. The bytes must depend on ``content`` alone (no clock, no random: a
    timestamp a format needs comes from ``content.header.creation``), so that the same
    ``fla fake --seed`` gives the same file. ``path`` is a temporary name the caller renames
    into place when the hook returns, and removes when it raises: write it, nothing else.
    """


# --- checking --------------------------------------------------------------------------------

@hookspec
def fla_check_declaration(
    declaration: Declaration, position: int, context: CheckContext
) -> list[Anomaly] | None:
    """Business checks of one declaration (spec 8), called in document order.

    ``position`` is 1-based. Return the anomalies found (or None). All results are collected
    and ordered by (worker, training, rule row) as spec 8.2 says; ``context`` holds the sender,
    the processing date, limits, mandates and the registry as it stands after the earlier
    declarations of the same file.
    """
