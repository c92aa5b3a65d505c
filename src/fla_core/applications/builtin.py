"""Built-in application plugin: the FLA (code ``FLAC``, spec 4.3 and 7)."""

from __future__ import annotations

from fla_core.applications import Application, fla
from fla_core.hookspecs import hookimpl


@hookimpl
def fla_applications() -> list[Application]:
    """The FLA application: namespace, root, XSD, renderer, scanner, reader, confirmation."""
    return [Application(
        code="FLAC",
        title="CareerPro Federal Learning Account declaration",
        namespace=fla.NAMESPACE,
        root=fla.ROOT,
        schema=fla.SCHEMA,
        render=fla.render,
        scan=fla.scan,
        read=fla.read,
        confirm=fla.confirmed_header,
    )]
