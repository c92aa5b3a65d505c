"""Anomalies and the code catalogue (spec sections 8 and 11).

The catalogue is data (``data/anomalies.toml``): a deployment may load another file to rename
or renumber codes, and ``docs/codes.md`` is generated from it (``python -m fla_core.codes_doc``).
Two kinds of findings flow through the engine:

* :class:`Anomaly` -- a finding with a code, severity and location. File-level findings
  (``severity == "file"``) reject a whole set with an ACRF; ``B``/``W`` findings are reported
  per declaration in a NOTI.
* :class:`ChannelError` -- an exception carrying one file-level code, raised where processing
  cannot go on (names, signature, XML). ``fla check`` and the simulator turn it into an
  ``ACRF-nnn``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

Severity = Literal["file", "B", "W"]

FILE_ZONE = "00000"


@dataclass(frozen=True)
class CodeInfo:
    """One code of the catalogue: where it is answered, its severity and message.

    ``steps`` name the checks that raise it (``N5c``, ``P8``, ``S1``, ``sweep``: the labels of
    docs/rules.md); ``modelled`` marks a code this project invented where public sources are
    silent. Both only document the code.
    """

    code: str
    where: Literal["ACRF", "NOTI"]
    severity: Severity
    message: str
    steps: tuple[str, ...] = ()
    modelled: bool = False


@dataclass(frozen=True)
class RuleInfo:
    """One NOTI error id ``zzzzz-nnn`` of the business rules (spec 8.3).

    ``rows`` are the rule rows that raise it (their order is the order of anomalies within a
    worker or training); ``path`` the element concerned, ``when`` the condition in words;
    ``message`` overrides the code's message for this zone (None: the code's message).
    """

    error_id: str
    rows: tuple[int, ...] = ()
    path: str = ""
    when: str = ""
    message: str | None = None

    @property
    def zone(self) -> str:
        """The 5-digit zone of the error id."""
        return self.error_id.split("-", 1)[0]

    @property
    def code(self) -> str:
        """The 3-digit code of the error id."""
        return self.error_id.split("-", 1)[1]


class Catalogue:
    """Codes, their severity and messages, loaded from a TOML file."""

    def __init__(self, codes: dict[str, CodeInfo], rules: dict[str, RuleInfo]):
        self._codes = codes
        self._rules = rules

    @classmethod
    def load(cls, path: str | Path | None = None) -> Catalogue:
        """Load a catalogue file; the packaged one when ``path`` is None."""
        if path is None:
            text = resources.files("fla_core").joinpath("data/anomalies.toml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        raw = tomllib.loads(text)
        codes = {
            code: CodeInfo(code, v["where"], v["severity"], v["message"],
                           steps=tuple(v.get("steps", ())), modelled=v.get("modelled", False))
            for code, v in raw.get("codes", {}).items()
        }
        # A [rules] entry may carry only a message: the older shape of the file still loads.
        rules = {
            eid: RuleInfo(eid, rows=tuple(v.get("rows", ())), path=v.get("path", ""),
                          when=v.get("when", ""), message=v.get("message"))
            for eid, v in raw.get("rules", {}).items()
        }
        return cls(codes, rules)

    def info(self, code: str) -> CodeInfo:
        """The entry of a 3-digit code; KeyError names the unknown code."""
        try:
            return self._codes[code]
        except KeyError:
            raise KeyError(f"anomaly code {code!r} is not in the catalogue") from None

    def message(self, code: str, zone: str | None = None) -> str:
        """Message for a code, the zone-specific one of spec 8.3 when there is one."""
        if zone is not None:
            rule = self._rules.get(f"{zone}-{code}")
            if rule is not None and rule.message:
                return rule.message
        return self.info(code).message

    def codes(self) -> list[CodeInfo]:
        """Every code of the catalogue, in code order."""
        return sorted(self._codes.values(), key=lambda c: c.code)

    def rules(self) -> list[RuleInfo]:
        """Every NOTI error id of the catalogue, in rule-row order (file-level ones first)."""
        return sorted(self._rules.values(), key=lambda r: (r.rows or (0,), r.error_id))


@cache
def default_catalogue() -> Catalogue:
    """The packaged catalogue, loaded once."""
    return Catalogue.load()


@dataclass(frozen=True)
class Anomaly:
    """One finding.

    ``zone`` is the 5-digit zone of spec 7.3 for declaration findings (``00000`` for file-level
    warnings) and None for ACRF codes. ``path``/``value`` follow spec 8.2. ``declaration``,
    ``worker``, ``training`` are 1-based positions (0 = not applicable) used for ordering.
    ``source`` locates the finding in the user's input (``export.csv:12 field hours``) when the
    data came from an input format rather than an FI.
    """

    code: str
    severity: Severity
    message: str
    zone: str | None = None
    path: str | None = None
    value: str | None = None
    declaration: int = 0
    worker: int = 0
    training: int = 0
    row: int = 0  # rule row of spec 8.3 table, for ordering
    source: str | None = None

    @property
    def error_id(self) -> str:
        """``ACRF-nnn`` for file-level codes, ``zzzzz-nnn`` for NOTI codes."""
        if self.severity == "file" or self.zone is None:
            return f"ACRF-{self.code}"
        return f"{self.zone}-{self.code}"

    @property
    def blocking(self) -> bool:
        """True when the anomaly rejects its file or declaration (not a warning)."""
        return self.severity in ("file", "B")

    def sort_key(self) -> tuple[int, int, int, int]:
        """Order of spec 8.2: worker, training, rule row (within one declaration)."""
        return (self.declaration, self.worker, self.training, self.row)

    def to_dict(self) -> dict[str, object]:
        """The anomaly as JSON-ready fields."""
        d: dict[str, object] = {
            "error_id": self.error_id,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
        }
        for key in ("zone", "path", "value", "source"):
            v = getattr(self, key)
            if v is not None:
                d[key] = v
        if self.declaration:
            d["declaration"] = self.declaration
        return d


def file_anomaly(code: str, detail: str | None = None, *, catalogue: Catalogue | None = None,
                 source: str | None = None) -> Anomaly:
    """A file-level (ACRF) anomaly for ``code``; ``detail`` is appended to the catalogue text."""
    cat = catalogue or default_catalogue()
    msg = cat.message(code)
    if detail:
        msg = f"{msg}: {detail}"
    return Anomaly(code=code, severity="file", message=msg, source=source)


def rule_anomaly(code: str, zone: str, path: str, value: str | None, *, row: int,
                 declaration: int, worker: int = 0, training: int = 0,
                 catalogue: Catalogue | None = None, source: str | None = None) -> Anomaly:
    """A declaration-level (NOTI) anomaly; severity comes from the catalogue."""
    cat = catalogue or default_catalogue()
    info = cat.info(code)
    return Anomaly(
        code=code, severity=info.severity, message=cat.message(code, zone), zone=zone,
        path=path, value=value, declaration=declaration, worker=worker, training=training,
        row=row, source=source,
    )


def _rebuild_channel_error(cls: type[ChannelError], code: str, detail: str | None,
                           subject: str | None) -> ChannelError:
    return cls(code, detail, subject=subject)


class ChannelError(Exception):
    """A file-level rejection: one spec code (``ACRF-nnn``) and a human explanation."""

    def __init__(self, code: str, detail: str | None = None, *, subject: str | None = None):
        self.code = code
        self.detail = detail
        self.subject = subject  # the file name or path concerned
        super().__init__(self.describe())

    @property
    def error_id(self) -> str:
        """The code as an ACRF error id (``ACRF-nnn``)."""
        return f"ACRF-{self.code}"

    def describe(self, catalogue: Catalogue | None = None) -> str:
        """One line: ``subject: ACRF-nnn message (detail)``."""
        cat = catalogue or default_catalogue()
        try:
            text = cat.message(self.code)
        except KeyError:
            text = "unknown code"
        line = f"{self.error_id} {text}"
        if self.detail:
            line += f" ({self.detail})"
        if self.subject:
            line = f"{self.subject}: {line}"
        return line

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickles its args (the message): rebuild from the fields instead, so that a
        # verdict can come back from a worker process (the simulator judges in a pool)
        return (_rebuild_channel_error, (type(self), self.code, self.detail, self.subject))

    def to_anomaly(self) -> Anomaly:
        """This error as a file-level anomaly naming its subject."""
        return file_anomaly(self.code, self.detail, source=self.subject)
