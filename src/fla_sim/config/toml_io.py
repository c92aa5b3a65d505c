"""``simulator.toml`` text to :class:`SimulatorConfig` and back. Reading checks every table
against :mod:`fla_sim.config.schema` and reads the SSH key files the channels name; writing is
a pure function of the configuration (the key files are the home's to write)."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from fla_core.model import Quality
from fla_core.settings import Settings
from fla_sim.config.model import (
    DEFAULT_CIPHERS,
    ChannelConfig,
    ConfigError,
    FaultSpec,
    SimulatorConfig,
    _as,
    _channel_problem,
    _same_root,
)
from fla_sim.config.schema import (
    CHANNEL_KEYS,
    FAULT_KEYS,
    SERVER_KEYS,
    TRUST_KEYS,
    Key,
    read_table,
)

if TYPE_CHECKING:
    from fla_core.mandates import MandateRecord

TABLES = ("server", "channel", "mandate", "trust", "fault")
ARRAYS = ("channel", "mandate", "fault")  # written [[name]]

# tomli-w writes no comments: the file starts with this one.
CONFIG_HEADER = (
    "# fla-sim simulator home (design 5); a running 'fla-sim serve' re-reads channels,\n"
    "# mandates and trust when this file changes ([server] and faults: restart it).\n")


def key_file(user: str, n: int) -> str:
    """Where the ``n``-th (from 1) SSH key of channel ``user`` is kept, relative to the home."""
    return f"keys/{user}-{n}.pub"


def read_config(path: Path, base: Path) -> SimulatorConfig:
    """Read and check the ``simulator.toml`` at ``path`` of the home ``base``; a ConfigError
    names the file, the table, the key and the fix."""
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; create the home with "
                          f"'fla-sim init {base}'") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    return _parse_config(raw, base, str(path))


def _parse_config(raw: dict[str, Any], base: Path, source: str) -> SimulatorConfig:
    for key in raw:
        if key not in TABLES:
            raise ConfigError(f"{source}: unknown table [{key}]; known: "
                              f"{', '.join(sorted(TABLES))}")
    for key in ARRAYS:
        if not isinstance(raw.get(key, []), list):
            raise ConfigError(f"{source} [{key}]: must be an array of tables; write "
                              f"[[{key}]] before each one")
    server_raw = raw.get("server", {})
    where = f"{source} [server]"
    server = read_table(where, server_raw, SERVER_KEYS, others=True)
    server["ciphers"] = _ciphers(server["ciphers"], where)
    known = [k.name for k in SERVER_KEYS] + [f.name for f in fields(Settings)]
    for name in server_raw:
        if name not in known:  # named here: Settings would list its own keys only
            raise ConfigError(f"{where}: unknown key {name!r}; known: {', '.join(known)}")
    try:
        settings = Settings.from_mapping(
            {k: v for k, v in server_raw.items() if k not in server}, source=where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    channels: list[ChannelConfig] = []
    for n, table in enumerate(raw.get("channel", []), 1):
        channel = _parse_channel(table, base, f"{source} [[channel]] #{n}")
        taken = _same_root(channel.user, channels)
        if taken is not None:
            raise ConfigError(f"{source} [[channel]] #{n}: key 'user': channel user "
                              f"{channel.user!r} is defined twice{_as(taken, channel.user)}; "
                              "give each channel its own user")
        channels.append(channel)
    mandates = [_parse_mandate(t, f"{source} [[mandate]] #{n}")
                for n, t in enumerate(raw.get("mandate", []), 1)]
    trust = read_table(f"{source} [trust]", raw.get("trust", {}), TRUST_KEYS)
    faults = [FaultSpec(**read_table(f"{source} [[fault]] #{n}", t, FAULT_KEYS))
              for n, t in enumerate(raw.get("fault", []), 1)]
    return SimulatorConfig(settings=settings, channels=channels, mandates=mandates,
                           trust_anchors=trust["anchors"], crls=trust["crls"], faults=faults,
                           **{**server, "ciphers": tuple(server["ciphers"])})


def _ciphers(value: list[str], where: str) -> list[str]:
    """``[server] ciphers``: a non-empty list of encryption algorithms asyncssh knows."""
    from asyncssh.encryption import get_encryption_algs

    known = [a.decode() for a in get_encryption_algs()]
    if not value:
        raise ConfigError(f"{where}: key 'ciphers': give at least one cipher, e.g. "
                          f"{list(DEFAULT_CIPHERS)!r}")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{where}: key 'ciphers': unknown {unknown!r}; "
                          f"known: {', '.join(known)}")
    return value


def _parse_channel(table: Any, base: Path, where: str) -> ChannelConfig:
    if isinstance(table, dict) and isinstance(table.get("user"), str):
        where = f"{where} (user {table['user']!r})"  # which channel, for every message
    values = read_table(where, table, CHANNEL_KEYS)
    try:
        quality = Quality.parse(values["quality"])
    except ValueError as exc:
        raise ConfigError(f"{where}: key 'quality': {exc}") from None
    apps = frozenset(a.upper() for a in values["applications"])
    problem = _channel_problem(values["user"], values["company"], values["sender"], apps)
    if problem:
        key, message = problem
        raise ConfigError(f"{where}: key {key!r}: {message}")
    keys: list[str] = []
    for rel in values["ssh_keys"]:
        path = base / rel
        try:
            keys.extend(line.strip() for line in path.read_text("utf-8").splitlines()
                        if line.strip() and not line.startswith("#"))
        except OSError as exc:
            raise ConfigError(f"{where}: key 'ssh_keys': cannot read {path} ({exc.strerror}); "
                              "fix the path or add the key again") from None
    return ChannelConfig(user=values["user"], quality=quality, company=values["company"],
                         sender=values["sender"], ssh_keys=keys,
                         certificates=values["certificates"], applications=apps,
                         quota_bytes=values["quota_bytes"])


def _parse_mandate(table: Any, where: str) -> MandateRecord:
    # a mandate's keys and their checks are fla_core.mandates' (the core reads them too)
    from fla_core.mandates import MandateError, MandateRecord

    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table of keys, not {table!r}")
    try:
        return MandateRecord.from_mapping(table)
    except MandateError as exc:
        raise ConfigError(f"{where}: {exc}; fix the record") from None


def _render_config(config: SimulatorConfig) -> str:
    """The text of ``simulator.toml``: every value written by tomli-w, the arrays of tables as
    ``[[channel]]`` blocks (tomli-w would write a short one as an inline table). Pure: the key
    files the channels name are written by the home (``SimulatorHome.write_key_files``)."""
    server = {k.name: _plain(getattr(config, k.name)) for k in SERVER_KEYS}
    blocks = [CONFIG_HEADER, tomli_w.dumps({"server": server | config.settings.to_mapping()})]
    for channel in config.channels:
        blocks.append(_table_of_array("channel", {
            "user": channel.user, "quality": channel.quality.alias, "company": channel.company,
            "sender": channel.sender,
            "ssh_keys": [key_file(channel.user, n) for n in range(1, len(channel.ssh_keys) + 1)],
            "certificates": channel.certificates,
            "applications": sorted(channel.applications), "quota_bytes": channel.quota_bytes},
            CHANNEL_KEYS))
    blocks += [_table_of_array("mandate", m.to_mapping()) for m in config.mandates]
    blocks.append(tomli_w.dumps({"trust": {"anchors": config.trust_anchors,
                                           "crls": config.crls}}))
    for fault in config.faults:  # the keys left at their default are left out
        blocks.append(_table_of_array("fault", {
            f.name: getattr(fault, f.name) for f in fields(fault)
            if getattr(fault, f.name) is not None and getattr(fault, f.name) != f.default},
            FAULT_KEYS))
    return "\n".join(blocks)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _table_of_array(name: str, table: dict[str, Any], keys: tuple[Key, ...] = ()) -> str:
    """One ``[[name]]`` table (of plain values: a nested table would land outside it), its keys
    in the order of the schema ``keys`` when there is one."""
    assert not any(isinstance(v, dict) for v in table.values()), table
    if keys:
        assert set(table) <= {k.name for k in keys}, table  # a key reading would refuse
        table = {k.name: table[k.name] for k in keys if k.name in table}
    return f"[[{name}]]\n" + tomli_w.dumps(table)
