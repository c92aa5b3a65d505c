"""The simulator's SFTP listener (spec 3; design 6).

One asyncssh server for all the channels, put together here: the SSH login
(:mod:`fla_sim.ssh_login`: public key only, failed logins capped per connection and per source,
connections per source and per channel), one SFTP session per channel connection chrooted into
its root (:mod:`fla_sim.sftp_session`, whose ``map_path`` holds the whole path policy), and the
uploads with the channel quota they share (:mod:`fla_sim.uploads`). Uploads are written under a
hidden temporary name and renamed to their real name when the client closes them; only then is
``on_file_closed`` awaited. :class:`ServerContext` is what the connections of one listener
share; the process's file limit and the log repeat filter are :mod:`fla_sim.limits`'.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.public_key import get_default_public_key_algs as _default_sig_algs

from fla_sim.limits import FailureWindow, RepeatFilter, raise_file_limit
from fla_sim.sftp_session import (
    ANSWER_DIRS,
    CHANNEL_DIRS,
    ChannelSFTPServer,
    advertise_handle_cap,
)
from fla_sim.ssh_login import ChannelSSHServer
from fla_sim.uploads import HIDDEN, TEMP_PREFIX, UPLOAD_DIRS

if TYPE_CHECKING:
    from fla_sim.config import SimulatorConfig, SimulatorHome
    from fla_sim.prescan import Prescanner
    from fla_sim.uploads import ChannelQuota

__all__ = [
    "ANSWER_DIRS",
    "CHANNEL_DIRS",
    "HIDDEN",
    "TEMP_PREFIX",
    "UPLOAD_DIRS",
    "ChannelSFTPServer",
    "ChannelSSHServer",
    "FileClosed",
    "Replacing",
    "ServerContext",
    "close_removed_sessions",
    "discard_partial_uploads",
    "start_server",
]

FileClosed = Callable[[str, str, str, int], Awaitable[None]]
# (user, directory, name) -> a context held while a closed upload takes its name; it yields
# False when that name belongs to a set its GO triggered (fla_sim.processor.Processor.replacing)
Replacing = Callable[[str, str, str], contextlib.AbstractContextManager[bool]]


@contextlib.contextmanager
def _always(user: str, directory: str, name: str) -> Generator[bool, None, None]:
    yield True


@dataclass
class ServerContext:
    """What every connection of one listener shares."""

    home: SimulatorHome
    config: SimulatorConfig
    on_file_closed: FileClosed
    log: logging.Logger
    legacy_ssh_rsa: bool = False
    prescan: Prescanner | None = None  # validates big FIs while they arrive (fla_sim.prescan)
    replacing: Replacing = _always
    # the SFTP sessions of each channel, for the per-channel handle cap (a session leaves at
    # its exit; weak, so a session asyncssh dropped without exit cannot be counted for ever)
    sessions: dict[str, weakref.WeakSet[ChannelSFTPServer]] = field(default_factory=dict)
    failures: FailureWindow = field(default_factory=FailureWindow)  # failed logins per source
    accounts: dict[str, ChannelQuota] = field(default_factory=dict)  # the quota of each channel
    # re-reads simulator.toml when it changed (fla_sim.api.Simulator.check_config), so a
    # removed channel or a revoked key is refused at the next login without a restart
    refresh: Callable[[], object] | None = None
    _parsed: dict[str, bytes | None] = field(default_factory=dict)
    # connections not logged in yet, per source address, and logged-in ones per channel
    startups: collections.Counter[str] = field(default_factory=collections.Counter)
    logged_in: collections.Counter[str] = field(default_factory=collections.Counter)

    def channel_handles(self, user: str) -> int:
        """Open files and directories of all the SFTP sessions of a channel."""
        return sum(session.open_handles() for session in self.sessions.get(user, ()))

    def key_allowed(self, user: str, key: asyncssh.SSHKey) -> bool:
        """True when ``key`` is registered for the channel ``user`` (looked up at each login)."""
        if self.refresh is not None:
            self.refresh()
        channel = self.config.channel(user)
        if channel is None:
            return False
        return any(self._public_data(line) == key.public_data for line in channel.ssh_keys)

    def _public_data(self, line: str) -> bytes | None:
        if line not in self._parsed:
            try:
                self._parsed[line] = asyncssh.import_public_key(line).public_data
            except (asyncssh.KeyImportError, ValueError):
                self.log.error("unreadable SSH public key in the configuration: %.40s...", line)
                self._parsed[line] = None
        return self._parsed[line]


_REPEATS = RepeatFilter()  # one per process: it is installed on loggers, which are global
_LIBRARY_LOGGERS = ("asyncio", "asyncssh", "asyncssh.sftp")  # the accept loop and SSH layer


def discard_partial_uploads(home: SimulatorHome, config: SimulatorConfig,
                            log: logging.Logger) -> int:
    """Remove temporary uploads left by a server that died mid-upload (spec 5.7: discarded).

    Nobody can be writing them: this runs before the listener accepts anyone. Without it they
    would count against the channel's quota forever.
    """
    removed = 0
    for channel in config.channels:
        root = home.path / "channels" / channel.user
        for directory in UPLOAD_DIRS:
            folder = root / directory
            if not folder.is_dir() or folder.is_symlink():
                continue
            for entry in os.scandir(folder):
                if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
                        log.warning("channel %s: discarded partial upload %s/%s left by an "
                                    "earlier run", channel.user, directory, entry.name)
    return removed


async def start_server(home: SimulatorHome, config: SimulatorConfig, on_file_closed: FileClosed,
                       *, host: str | None = None, port: int | None = None,
                       log: logging.Logger | None = None,
                       legacy_ssh_rsa: bool | None = None,
                       prescan: Prescanner | None = None,
                       replacing: Replacing = _always,
                       refresh: Callable[[], object] | None = None) -> asyncssh.SSHAcceptor:
    """Listen for SFTP sessions of the configured channels; ``port=0`` picks a free port.

    With ``prescan``, single-part FI uploads of ``prescan.min_bytes`` or more are followed by a
    pre-scan process while they arrive (fla_sim.prescan).
    """
    legacy = config.legacy_ssh_rsa if legacy_ssh_rsa is None else legacy_ssh_rsa
    log = log or logging.getLogger("fla_sim.server")
    # the handle caps keep every channel far below the limit; a limit left at a low default
    # (1024 on many systems) would still be reached by a few busy channels together
    raise_file_limit(log)
    advertise_handle_cap()
    # a flood of identical warnings (refusals, failed logins, the accept loop's "out of
    # system resource") must not fill the disk: each kind is let through at a bounded rate
    _REPEATS.reset()
    _REPEATS.install([log, *(logging.getLogger(name) for name in _LIBRARY_LOGGERS)])
    discard_partial_uploads(home, config, log)
    if prescan is not None and prescan.min_bytes <= 0:
        prescan = None
    ctx = ServerContext(home, config, on_file_closed, log, legacy_ssh_rsa=legacy, prescan=prescan,
                   replacing=replacing, refresh=refresh)
    host_key = asyncssh.read_private_key(home.host_key_path)
    options: dict[str, Any] = {"encryption_algs": list(config.ciphers)}
    if not legacy:
        # RSA keys still work, with SHA-2 signatures (spec 3.2: SHA-1 "ssh-rsa" is opt-in)
        options["signature_algs"] = [a.decode() for a in _default_sig_algs() if a != b"ssh-rsa"]
    acceptor = await asyncssh.create_server(
        partial(ChannelSSHServer, ctx),
        config.host if host is None else host,
        config.port if port is None else port,
        server_host_keys=[host_key],
        sftp_factory=partial(ChannelSFTPServer, ctx=ctx),
        allow_scp=False,
        login_timeout=config.login_timeout_s,
        **options,
    )
    _CONTEXTS[acceptor] = ctx
    return acceptor


_CONTEXTS: weakref.WeakKeyDictionary[asyncssh.SSHAcceptor, ServerContext] = (
    weakref.WeakKeyDictionary())


def close_removed_sessions(acceptor: asyncssh.SSHAcceptor) -> list[str]:
    """Disconnect the sessions of channels no longer in the configuration (on the server's
    loop); returns their users. Their unfinished uploads are discarded as on any drop."""
    ctx = _CONTEXTS.get(acceptor)
    if ctx is None:
        return []
    closed = []
    for user, sessions in list(ctx.sessions.items()):
        if ctx.config.channel(user) is not None:
            continue
        live = list(sessions)
        for session in live:
            session.channel.get_connection().disconnect(
                asyncssh.DISC_BY_APPLICATION, f"channel {user!r} was removed")
        if live:
            closed.append(user)
            ctx.log.warning("channel %s removed from the configuration: %d session(s) closed",
                            user, len(live))
        del ctx.sessions[user]
    return closed
