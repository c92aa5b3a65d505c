"""What a business check sees (spec 8.2): sender, clock, limits, qualities, mandates and the
registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Protocol

from fla_core.anomalies import Catalogue, default_catalogue
from fla_core.model import Quality, Sender
from fla_core.qualities import QualityInfo
from fla_core.qualities.builtin import qualities_with, table


@dataclass(frozen=True)
class Limits:
    """The *modelled* business limits of spec 5.8 / 8.3, all configurable."""

    daily_max_hours: Decimal = Decimal("10.00")
    daily_warn_hours: Decimal = Decimal("8.00")
    first_reporting_year: int = 2024
    # M3 default: the qualities marked two_level in the built-in table of spec 2.2.
    two_level_qualities: frozenset[str] = frozenset(q.value for q in qualities_with("two_level"))


class MandateView(Protocol):
    """Mandates as the checks need them (spec 2.2); the simulator backs it with its config."""

    def has_level1(self, employer: str, representative: str, application: str,
                   on: date) -> bool:
        """An active level-1 mandate employer -> representative on the quarter of ``on``."""

    def has_level2(self, employer: str, representative: str, application: str,
                   sender: str) -> bool:
        """A level-2 record for this employer, representative, application and sender number."""


class RegistryView(Protocol):
    """The declaration registry (spec 8.4) for one sender number and environment letter."""

    def status(self, declaration_ref: str) -> str | None:
        """``ACTIVE``, ``REPLACED``, ``CANCELLED``, ``CANCEL`` or None when unknown."""


class MemoryRegistry:
    """A registry held in a dict: offline checks, tests, and the overlay of one file."""

    def __init__(self, initial: dict[str, str] | None = None):
        self.entries: dict[str, str] = dict(initial or {})

    def status(self, declaration_ref: str) -> str | None:
        """The recorded status of a declaration, None when unknown."""
        return self.entries.get(declaration_ref)


class NoMandates:
    """Offline default: nobody holds a mandate (``fla check`` without a mandates file)."""

    def has_level1(self, employer: str, representative: str, application: str,
                   on: date) -> bool:
        """Always False: no mandates are known."""
        return False

    def has_level2(self, employer: str, representative: str, application: str,
                   sender: str) -> bool:
        """Always False: no mandates are known."""
        return False


@dataclass
class CheckContext:
    """Everything a ``fla_check_declaration`` implementation may read.

    ``registry`` answers for declarations accepted before this file; ``file_registry`` holds
    what earlier declarations of this file did (spec 8.2: the registry is updated after each
    declaration). Use :meth:`registry_status`, which looks at both. ``seen_refs`` holds the
    DeclarationRefs of earlier declarations of the same file (rule 931).
    ``check_mandates`` is False when mandates are unknown (offline check without a mandates
    file): rules 101 (level 2) and 155 are then skipped instead of raised for every employer.
    ``qualities`` is what each quality may send (spec 2.2): the judge and ``fla check`` fill it
    from the ``fla_qualities`` hook (``FlaPlugins.quality_table()``); a context built by hand
    holds the built-in table. Rules read it through :meth:`quality_info`.
    """

    sender: Sender
    environment: str
    processing_date: date
    application: str = "FLAC"
    limits: Limits = field(default_factory=Limits)
    mandates: MandateView = field(default_factory=NoMandates)
    check_mandates: bool = True
    registry: RegistryView = field(default_factory=MemoryRegistry)
    catalogue: Catalogue = field(default_factory=default_catalogue)
    file_registry: dict[str, str] = field(default_factory=dict)
    seen_refs: set[str] = field(default_factory=set)
    qualities: Mapping[Quality, QualityInfo] = field(default_factory=table)

    def quality_info(self) -> QualityInfo:
        """What the sender's quality may send (M1, M2, M5 of spec 2.2)."""
        return self.qualities[self.sender.quality]

    def registry_status(self, declaration_ref: str) -> str | None:
        """Registry status after the earlier declarations of this file."""
        if declaration_ref in self.file_registry:
            return self.file_registry[declaration_ref]
        return self.registry.status(declaration_ref)
