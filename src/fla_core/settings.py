"""Channel-wide settings (spec 5.8) and the profile of a sending channel (spec 3.1).

Every *modelled* value of the spec lives here with the spec's default, so that the simulator's
``simulator.toml`` ``[server]`` table and ``fla check`` options configure the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, Literal

from fla_core.checks.context import Limits
from fla_core.model import Quality

FsPolicy = Literal["required", "optional", "forbidden"]

DEFAULT_FS_POLICY: dict[str, FsPolicy] = {"R": "required", "T": "optional", "S": "optional"}

# The business limits keep their defaults in one place: the checks' Limits.
_LIMITS = Limits()

Number = int | float | Decimal
# Every numeric key of Settings: key -> (lowest, highest or None); :func:`check_number` checks
# a value against it. fla_sim.config keeps the same kind of table for its own [server] keys.
NUMBER_RANGES: dict[str, tuple[Number, Number | None]] = {
    "answer_delay_ms": (0, None),
    "noti_delay_ms": (0, None),
    "orphan_timeout_s": (0, None),
    "max_age_days": (0, None),
    "max_parts": (1, 9),
    "max_file_size": (1, None),
    "max_declarations": (1, None),
    "max_prolog_size": (1, None),
    "max_attributes": (1, None),
    "max_fs_certificates": (1, None),
    "first_reporting_year": (1, None),
    "daily_max_hours": (0, None),
    "daily_warn_hours": (0, None),
}


@dataclass(frozen=True)
class Settings:
    """The keys of spec 5.8 with their defaults."""

    answer_delay_ms: int = 0
    noti_delay_ms: int = 0
    orphan_timeout_s: float = 86400
    max_age_days: int = 90
    max_parts: int = 9
    max_file_size: int = 52_428_800
    max_declarations: int = 10_000
    max_prolog_size: int = 1_048_576  # fla_core.fi.MAX_PROLOG_SIZE (102)
    max_attributes: int = 256  # fla_core.fi.MAX_ATTRIBUTES (102)
    max_fs_certificates: int = 10  # fla_core.signing.MAX_FS_CERTIFICATES (602)
    fs_policy: dict[str, FsPolicy] = field(default_factory=lambda: dict(DEFAULT_FS_POLICY))
    fs_layout: Literal["lenient", "strict"] = "lenient"
    two_level_qualities: tuple[str, ...] = tuple(sorted(_LIMITS.two_level_qualities))
    daily_max_hours: Decimal = _LIMITS.daily_max_hours
    daily_warn_hours: Decimal = _LIMITS.daily_warn_hours
    first_reporting_year: int = _LIMITS.first_reporting_year
    keep_uploads: bool = False
    compress_answers: bool = False
    timezone: str = "Europe/Brussels"

    @property
    def limits(self) -> Limits:
        """The business limits the checks use."""
        return Limits(
            daily_max_hours=self.daily_max_hours,
            daily_warn_hours=self.daily_warn_hours,
            first_reporting_year=self.first_reporting_year,
            two_level_qualities=frozenset(Quality.parse(q).value
                                          for q in self.two_level_qualities),
        )

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], *, source: str = "settings") -> Settings:
        """Build from a TOML table; unknown keys and bad values raise ValueError naming the key."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(f"{source}: unknown setting {key!r}; known: "
                                 f"{', '.join(sorted(known))}")
            values[key] = _coerce(key, value, source)
        base = cls()
        if "fs_policy" in values:
            values["fs_policy"] = {**base.fs_policy, **values["fs_policy"]}
        return replace(base, **values)

    def to_mapping(self) -> dict[str, Any]:
        """A TOML-friendly mapping (decimals as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Decimal):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


def _coerce(key: str, value: Any, source: str) -> Any:
    if key in NUMBER_RANGES:
        low, high = NUMBER_RANGES[key]
        kind: type = {"orphan_timeout_s": float, "daily_max_hours": Decimal,
                      "daily_warn_hours": Decimal}.get(key, int)
        return check_number(source, key, value, low, high, kind)
    # every other key: the same message shape as check_number ("<source> key = value: must be")
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    if key == "fs_policy":
        try:
            items = dict(value).items()
        except (TypeError, ValueError):
            items = None
        if items is None or any(env not in ("R", "T", "S")
                                or pol not in ("required", "optional", "forbidden")
                                for env, pol in items):
            raise ValueError(f"{source} {key} = {shown}: must be a table of R, T and/or S = "
                             "'required', 'optional' or 'forbidden'")
        return dict(items)
    if key == "fs_layout":
        if value not in ("lenient", "strict"):
            raise ValueError(f"{source} {key} = {shown}: must be 'lenient' or 'strict'")
        return str(value)
    if key == "two_level_qualities":
        try:
            if isinstance(value, str):
                raise ValueError(value)
            return tuple(Quality.parse(q).value for q in value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source} {key} = {shown}: must be a list of qualities ({exc})"
                             ) from None
    if key in ("keep_uploads", "compress_answers"):
        if not isinstance(value, bool):
            raise ValueError(f"{source} {key} = {shown}: must be true or false")
        return value
    if key == "timezone":
        if not isinstance(value, str):
            raise ValueError(f"{source} {key} = {shown}: must be a time zone name, e.g. "
                             "'Europe/Brussels'")
        return value
    return value


def check_number(source: str, key: str, value: Any, low: Number, high: Number | None = None,
                 kind: type = int) -> Any:
    """``value`` of ``key`` as a ``kind`` (int, float: int or float; Decimal: also a string)
    within ``low``..``high``; a ValueError ``<source> key = value: must be ...`` otherwise."""
    bounds = f"{low} or more" if high is None else f"{low}-{high}"
    shown = str(value).lower() if isinstance(value, bool) else repr(value)  # as TOML writes it
    number: Number | None = None
    if isinstance(value, bool):
        number = None
    elif kind is int:
        number = value if isinstance(value, int) else None
    elif kind is float:
        number = float(value) if isinstance(value, int | float) and value == value else None  # nan
    elif isinstance(value, int | float | str | Decimal):
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            number = None
        if number is not None and not number.is_finite():
            number = None
    if number is None:
        raise ValueError(f"{source} {key} = {shown}: must be a number, {bounds}")
    if number < low or (high is not None and number > high):
        raise ValueError(f"{source} {key} = {shown}: must be {bounds}")
    return number


@dataclass(frozen=True)
class ChannelProfile:
    """A sending channel as the checks see it (spec 3.1)."""

    user: str
    sender: str
    quality: Quality
    company_id: str
    applications: frozenset[str] = frozenset({"FLAC"})
    certificates: tuple[bytes, ...] = ()  # registered signing certificates, DER (spec 6.6)
