"""The events of the simulator's hooks (``fla_sim.hookspecs``): plain frozen records, safe to
keep, compare and print in a plugin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileReceived:
    """A file completely uploaded into an ``IN*`` directory and visible under its real name."""

    user: str  # channel username
    directory: str  # IN, INTEST or INTEST-S
    name: str  # the file name as the client gave it
    size: int  # bytes
    path: Path  # where the file lies in the simulator home


@dataclass(frozen=True)
class AnswerWritten:
    """An answer file (ACRF or NOTI) written into an ``OUT*`` directory."""

    user: str  # channel username
    directory: str  # OUT, OUTTEST or OUTTEST-S
    name: str  # answer file name
    kind: str  # "ACRF" or "NOTI"
    trigger: str  # the GO (or swept file) name that caused the answer
    result_code: str  # e.g. "ACRF-000" / "ACRF-122" / NOTI result
