"""P10-P16 of a set's data file: the document steps, in one pass or in two halves.

:func:`scan` is what :func:`fla_core.judge.judge_set` runs after P9. The other functions compute
the same outcome ahead of the judge (the simulator's pre-scan reads a big FI while it is
uploaded): :func:`scan_outcome` in one pass, or :func:`validate_outcome` (P10-P15) and
:func:`rules_outcome` (the business rules over the same bytes) in two processes, joined by
:func:`split_outcome`. The judge takes such an outcome through the small
:class:`fla_core.judge.Precomputed` protocol; it knows nothing of who computed it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, closing
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING

from fla_core.anomalies import ChannelError
from fla_core.checks.context import CheckContext, MandateView, RegistryView
from fla_core.checks.engine import DeclarationVerdict, evaluate
from fla_core.model import Sender
from fla_core.names import FileName
from fla_core.settings import ChannelProfile, Settings

if TYPE_CHECKING:
    from fla_core.applications import Application
    from fla_core.model import Declaration
    from fla_core.plugins import FlaPlugins

# What P10-P16 compute for a data file: its FileReference, the declarations' verdicts in
# document order and the registry changes of the accepted ones.
ScanOutcome = tuple[str | None, list[DeclarationVerdict], dict[str, str]]


def shape_of(settings: Settings) -> AbstractContextManager[object]:
    """The P11 shape limits of ``settings`` for the documents read within the block."""
    from fla_core.fi import shape_limits

    return shape_limits(max_prolog_size=settings.max_prolog_size,
                           max_attributes=settings.max_attributes)


def application_of(plugins: FlaPlugins, code: str) -> Application | None:
    """The application plugin of ``code``, None when none is installed (spec 4.3)."""
    return next((app for app in plugins.applications() if app.code == code), None)


def check_context(go: FileName, *, channel: ChannelProfile, settings: Settings, today: date,
                   registry: RegistryView, mandates: MandateView,
                   check_mandates: bool, plugins: FlaPlugins) -> CheckContext:
    """What the business rules of the set's declarations see (spec 8.2)."""
    return CheckContext(
        sender=Sender(channel.sender, channel.quality, channel.company_id),
        environment=go.env, processing_date=today, application=go.appl,
        limits=settings.limits, mandates=mandates, check_mandates=check_mandates,
        registry=registry, qualities=plugins.quality_table())


def scan(app: Application, go: FileName, parts: list[Path] | IO[bytes], *,
          channel: ChannelProfile,
          settings: Settings, today: date, registry: RegistryView, mandates: MandateView,
          plugins: FlaPlugins, check_mandates: bool) -> ScanOutcome:
    """P10-P15 and the business rules in one pass; ChannelError on a file-level failure."""
    from fla_core.applications.fla import HeaderExpectation

    context = check_context(go, channel=channel, settings=settings, today=today,
                             registry=registry, mandates=mandates,
                             check_mandates=check_mandates, plugins=plugins)
    verdicts: list[DeclarationVerdict] = []

    def on_declaration(declaration: Declaration, position: int) -> None:
        verdicts.append(evaluate(declaration, position, context, plugins))

    expect = HeaderExpectation(go.sender, go.env, channel.quality.value, channel.company_id)
    with shape_of(settings):
        result = app.scan(parts, expect=expect, max_declarations=settings.max_declarations,
                          on_declaration=on_declaration)
    return result.header.file_reference, verdicts, dict(context.file_registry)


def scan_outcome(go: FileName, source: list[Path] | IO[bytes], *, channel: ChannelProfile,
                 settings: Settings, today: date, registry: RegistryView,
                 mandates: MandateView, plugins: FlaPlugins, check_mandates: bool = True
                 ) -> ScanOutcome | ChannelError | None:
    """P10-P16 of a set's data (what :func:`judge_set` runs after P9), for a pre-scan.

    ``go`` may be the FI's own name (same stem). Returns the outcome, the P10-P15 ChannelError
    (subject as the scan left it), or None when the application has no plugin (no scan).
    A stream ``source`` must deliver the bytes as a file would: full reads until its end.
    """
    app = application_of(plugins, go.appl)
    if app is None:
        return None
    try:
        return scan(app, go, source, channel=channel, settings=settings, today=today,
                     registry=registry, mandates=mandates, plugins=plugins,
                     check_mandates=check_mandates)
    except ChannelError as exc:
        return exc


def validate_outcome(go: FileName, source: list[Path] | IO[bytes], *, channel: ChannelProfile,
                     settings: Settings, plugins: FlaPlugins
                     ) -> tuple[str | None, int | None] | ChannelError | None:
    """P10-P15 alone, no business rules: (FileReference, declaration count), the ChannelError,
    or None without plugin. With :func:`rules_outcome` of the same bytes, it makes
    :func:`scan_outcome` in two processes (see :func:`split_outcome`).

    An application with a ``confirm`` (the built-in FLA one) is first validated without a
    tree, which is faster but does not count: the count is then None, and P15 is left to
    :func:`split_outcome` (the rules half counts). Anything that pass does not confirm is read
    again by the application's scan.
    """
    from fla_core.applications.fla import HeaderExpectation

    app = application_of(plugins, go.appl)
    if app is None:
        return None
    expect = HeaderExpectation(go.sender, go.env, channel.quality.value, channel.company_id)
    with shape_of(settings):
        if app.confirm is not None:
            header = app.confirm(source, expect=expect)
            if header is not None:
                return header.file_reference, None
        try:
            result = app.scan(source, expect=expect, max_declarations=settings.max_declarations)
        except ChannelError as exc:
            return exc
    return result.header.file_reference, result.declarations


def rules_outcome(go: FileName, source: list[Path] | IO[bytes], *, channel: ChannelProfile,
                  settings: Settings, today: date, registry: RegistryView,
                  mandates: MandateView, plugins: FlaPlugins, check_mandates: bool = True
                  ) -> tuple[list[DeclarationVerdict], dict[str, str], int] | None:
    """The business rules of every declaration, reading the document WITHOUT the schema:
    (verdicts, registry changes, declaration count), or None when the application is not the
    built-in FLA one (whose reader this relies on).

    Meaningful only for a document :func:`validate_outcome` found valid: the elements are then
    the ones the validating reader yields (libxml2 builds the same tree with or without the
    schema plugged in), so the verdicts are those of :func:`scan_outcome`. On another document
    it may raise anything; the caller discards it.
    """
    from fla_core import fi
    from fla_core.applications import fla

    app = application_of(plugins, go.appl)
    if app is None or app.scan is not fla.scan:
        return None
    context = check_context(go, channel=channel, settings=settings, today=today,
                             registry=registry, mandates=mandates,
                             check_mandates=check_mandates, plugins=plugins)
    verdicts: list[DeclarationVerdict] = []
    count = 0
    batches = fi.stream_elements(source, namespace=fla.NAMESPACE, root=fla.ROOT, schema=None,
                                 tags=(fla.HEADER_TAG, fla.DECLARATION_TAG))
    with shape_of(settings), closing(batches):
        for batch in batches:
            for el in batch.elements:
                if el.tag == fla.DECLARATION_TAG:
                    count += 1
                    verdicts.append(evaluate(fla.valid_declaration_of(el), count, context,
                                             plugins))
    return verdicts, dict(context.file_registry), count


def split_outcome(validated: tuple[str | None, int | None] | ChannelError,
                  rules: tuple[list[DeclarationVerdict], dict[str, str], int] | None, *,
                  max_declarations: int | None = None) -> ScanOutcome | ChannelError | None:
    """:func:`scan_outcome` from its two halves; None when they do not fit together.

    A validating half that did not count (None) takes the rules half's count, and P15 is
    checked here against ``max_declarations`` (required then).
    """
    from fla_core.applications.fla import too_many_declarations

    if isinstance(validated, ChannelError):
        return validated  # the rules' verdicts would be discarded (P16 not reached)
    reference, count = validated
    if rules is None:
        return None
    if count is None:
        if max_declarations is None:
            raise ValueError("split_outcome: max_declarations is needed for an uncounted half")
        if (too_many := too_many_declarations(rules[2], max_declarations)) is not None:
            return too_many
        count = rules[2]
    if rules[2] != count:
        return None
    return reference, rules[0], rules[1]
