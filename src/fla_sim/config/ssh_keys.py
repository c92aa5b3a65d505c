"""A channel's registered SSH public keys: the ``keys/<user>-N.pub`` files ``simulator.toml``
names, and the key lines as ``channel key add/revoke`` compare and show them. asyncssh is
imported when needed only: judge workers load the configuration, not asyncssh."""

from __future__ import annotations

from pathlib import Path

from fla_core.files import atomic_write
from fla_sim.config.model import ChannelConfig
from fla_sim.config.toml_io import key_file


def write_key_files(base: Path, channel: ChannelConfig) -> list[Path]:
    """Write the channel's ``keys/<user>-N.pub`` (one key line each, N from 1 in the order of
    ``ssh_keys``) that are missing or hold another key; returns the files written. A file that
    already holds its key is left alone (its mtime too)."""
    written = []
    for n, line in enumerate(channel.ssh_keys, 1):
        path = base / key_file(channel.user, n)
        data = (line + "\n").encode()
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass  # missing or unreadable: written below
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, durable=True)
        written.append(path)
    return written


def remove_stale_key_files(base: Path, channel: ChannelConfig) -> list[Path]:
    """Delete ``keys/<user>-N.pub`` beyond the channel's keys (left by a revoked key)."""
    removed = []
    n = len(channel.ssh_keys) + 1
    while (stale := base / key_file(channel.user, n)).exists():
        stale.unlink()
        removed.append(stale)
        n += 1
    return removed


def _key_data(line: str) -> bytes | None:
    """The public data of an OpenSSH public key line, None when it is not one."""
    import asyncssh

    try:
        return asyncssh.import_public_key(line).public_data
    except (asyncssh.KeyImportError, ValueError):
        return None


def _fingerprint(line: str) -> str:
    """``SHA256:...`` of a registered key line (as ``ssh-keygen -l`` and the server log show)."""
    import asyncssh

    try:
        return asyncssh.import_public_key(line).get_fingerprint("sha256")
    except (asyncssh.KeyImportError, ValueError):
        return f"unreadable key {line[:20]}..."


def _key_matches(line: str, wanted: str) -> bool:
    """A registered key line is ``wanted``: the same key, or its SHA256 or MD5 fingerprint."""
    import asyncssh

    wanted = wanted.strip()
    data = _key_data(line)
    if data is None:
        return False
    if wanted.upper().startswith(("SHA256:", "MD5:")):
        key = asyncssh.import_public_key(line)
        return (wanted == key.get_fingerprint("sha256")
                or wanted.lower() == key.get_fingerprint("md5").lower())
    return _key_data(wanted) == data


def _shown(key: str) -> str:
    """A key argument as an error message names it: its fingerprint, or the text given."""
    return _fingerprint(key) if _key_data(key) is not None else repr(key.strip()[:60])
