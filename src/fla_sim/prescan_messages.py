"""The messages between the pre-scan manager (``fla_sim.prescan``) and a follower process.

They travel over ``multiprocessing.connection.Connection`` pairs (``Pipe(duplex=False)``),
one per direction, whose ``send``/``recv`` frame and pickle them. The end of the manager's
connection without a :class:`Closed` means the upload was abandoned; the end of the
follower's without a :class:`Result` or :class:`Failed` means it died.

To the follower: one :class:`Job`, then :class:`Confirmed` positions as the upload grows,
:class:`Wanted` when the set's GO arrives, :class:`Closed` with the final size at CLOSE.
From the follower: :class:`Progress` reports of its reading position, then one
:class:`Result` or :class:`Failed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fla_core.anomalies import ChannelError
    from fla_core.mandates import MandateRecord
    from fla_core.names import FileName
    from fla_core.plugins import PluginRecipe
    from fla_core.scanning import ScanOutcome
    from fla_core.settings import ChannelProfile, Settings


@dataclass(frozen=True)
class PrescanResult:
    """A followed FI's outcome as the judge takes it (``fla_core.judge.Precomputed``): the FI
    part's name, its digests, and its P10-P16 outcome or ChannelError."""

    fi_name: str
    digests: Mapping[str, bytes]
    outcome: ScanOutcome | ChannelError

@dataclass(frozen=True)
class Job:
    """Everything a follower needs to judge the upload alike (sent first, once)."""

    # "validate" (P10-P15 and the digests) + "rules" (the business rules over the same bytes)
    # for the built-in FLA application, else "full" (scan_outcome)
    role: str
    fd: int  # the upload's file descriptor in the receiving process
    go: FileName  # the FI's parsed name (its set's GO has the same stem)
    channel: ChannelProfile
    settings: Settings
    mandates: list[MandateRecord]
    today: date
    journal: str  # path of the journal: the registry is read from it (read-only, WAL)
    registry: tuple[str, str]  # sender, env
    plugins: list[str]  # the simulator's plugin names: the follower must find the same
    recipe: PluginRecipe
    algorithms: tuple[str, ...]  # digests to compute for P9
    memory: int = 0  # address space the follower may add (bytes, 0: no limit)


@dataclass(frozen=True)
class Confirmed:
    """Bytes ``[0, upto)`` of the upload are written and will not change."""

    upto: int


@dataclass(frozen=True)
class Closed:
    """The upload is complete: ``size`` bytes."""

    size: int


@dataclass(frozen=True)
class Wanted:
    """The set's GO arrived: its judge waits for the result."""


@dataclass(frozen=True)
class Progress:
    """The follower has read ``position`` bytes (``0``: started, its imports done)."""

    position: int


@dataclass(frozen=True)
class Result:
    """What the follower computed: ``outcome`` as :func:`fla_core.scanning.scan_outcome` (or one
    of its halves) returns it, a ChannelError when ``error``."""

    outcome: Any
    error: bool
    digests: dict[str, bytes]  # algorithm -> digest; empty from the rules half
    size: int | None  # bytes hashed; None from the rules half
    peak_rss_kb: int
    pss_kb: int


@dataclass(frozen=True)
class Failed:
    """The follower could not compute a result (the judge reads the file)."""

    why: str


ToFollower = Job | Confirmed | Closed | Wanted
FromFollower = Progress | Result | Failed
