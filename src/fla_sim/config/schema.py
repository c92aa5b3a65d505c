"""The keys of each table of ``simulator.toml``: one declarative row per key (name, type, range
or choices, default), read by :mod:`fla_sim.config.toml_io` both to check a table and to write
it, so every table is checked the same way and every message names the table and the key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fla_core.settings import check_number
from fla_sim.config.model import (
    DEFAULT_CIPHERS,
    DURABILITY_MODES,
    FAULT_ACTIONS,
    FAULT_WHEN,
    SERVER_NUMBERS,
    ConfigError,
    GiB,
)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # a key without a default: a table without it is refused


@dataclass(frozen=True)
class Key:
    """One key of a table: its TOML type (``int``, ``bool``, ``str`` or ``list`` of strings),
    its default (``REQUIRED``: none; ``None``: absent means unset) and what it may hold."""

    name: str
    kind: type
    default: Any = REQUIRED
    low: int = 0  # int keys: the lowest value...
    high: int | None = None  # ... and the highest (None: no bound)
    choices: tuple[str, ...] = ()  # str keys: the values allowed (empty: any)

    def check(self, where: str, value: Any) -> Any:
        """``value`` if this key may hold it; a ConfigError naming ``where`` and the key if not."""
        if self.kind is int:
            try:
                return check_number(where, self.name, value, self.low, self.high)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.kind is bool:
            ok, wanted = isinstance(value, bool), "true or false"
        elif self.kind is str and self.choices:
            ok = isinstance(value, str) and value in self.choices
            wanted = " or ".join(repr(c) for c in self.choices)
        elif self.kind is str:
            ok, wanted = isinstance(value, str), "a string"
        else:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            wanted = "a list of strings"
        if not ok:
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise ConfigError(f"{where}: key {self.name!r} must be {wanted}, not {shown}")
        return list(value) if isinstance(value, list) else value


def read_table(where: str, table: Any, keys: tuple[Key, ...], *,
               others: bool = False) -> dict[str, Any]:
    """Every key of ``keys`` from ``table``, checked, defaults filled in. Keys the table does not
    declare are refused, unless ``others`` (the caller checks them: ``[server]``'s spec keys)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of keys, not {table!r}")
    names = [k.name for k in keys]
    if not others:
        for name in table:
            if name not in names:
                raise ConfigError(f"{where}: unknown key {name!r}; known: {', '.join(names)}")
    values: dict[str, Any] = {}
    for key in keys:
        if key.name in table:
            values[key.name] = key.check(where, table[key.name])
        elif key.default is REQUIRED:
            raise ConfigError(f"{where}: missing key {key.name!r}; add it")
        else:
            default = key.default
            values[key.name] = list(default) if isinstance(default, list) else default
    return values


def _number(name: str) -> Key:
    default, low, high = SERVER_NUMBERS[name]
    return Key(name, int, default, low, high)


# [server]: the simulator's own keys (the keys of spec 5.8 are fla_core.settings.Settings')
SERVER_KEYS: tuple[Key, ...] = (
    Key("host", str, "127.0.0.1"),
    _number("port"),
    Key("legacy_ssh_rsa", bool, False),
    Key("durability", str, "process", choices=DURABILITY_MODES),
    Key("ciphers", list, list(DEFAULT_CIPHERS)),  # names asyncssh knows: checked on reading
    Key("refuse_unusable_names", bool, True),
    *(_number(name) for name in SERVER_NUMBERS if name != "port"),
)
CHANNEL_KEYS: tuple[Key, ...] = (
    Key("user", str),
    Key("quality", str),  # a Quality alias or token
    Key("company", str),
    Key("sender", str),
    Key("ssh_keys", list),  # key files, relative to the home
    Key("certificates", list, []),  # PEM files, relative to the home
    Key("applications", list, ["FLAC"]),
    Key("quota_bytes", int, GiB, low=0),
)
TRUST_KEYS: tuple[Key, ...] = (
    Key("anchors", list, []),
    Key("crls", list, []),
)
FAULT_KEYS: tuple[Key, ...] = (
    Key("when", str, choices=FAULT_WHEN),
    Key("action", str, choices=FAULT_ACTIONS),
    Key("match", str, "*"),
    Key("delay_ms", int, 0, low=0),
    Key("code", str, None),
    Key("times", int, None, low=0),
)
