"""The SSH login of a channel (spec 3.2): public key only, failed attempts and connections
capped, as OpenSSH's ``MaxAuthTries`` and ``MaxStartups`` (the windows are :mod:`fla_sim.limits`').

A connection is dropped before the SSH handshake while too many are logging in (in all, or from
its address); a login beyond ``max_connections_per_channel`` is disconnected with the reason.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import asyncssh

if TYPE_CHECKING:
    from fla_sim.server import ServerContext


class ChannelSSHServer(asyncssh.SSHServer):
    """Authentication: public key only, the key must be registered for that channel.

    Failed attempts are capped per connection (``max_auth_attempts``, OpenSSH's MaxAuthTries)
    and per source address over a sliding window; beyond either the connection is dropped
    with a reason the client shows.
    """

    def __init__(self, ctx: ServerContext):
        self._ctx = ctx
        self._peer = "?"
        self._source = "?"  # the peer's address without port: the per-source window's key
        self._user: str | None = None
        self._authenticated = False
        self._failures: list[float] = []  # when this connection's attempts failed
        self._conn: asyncssh.SSHServerConnection | None = None
        self._starting = False  # counted in ctx.startups
        self._counted_user: str | None = None  # counted in ctx.logged_in

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._source = str(peer[0]) if peer else "?"
        self._conn = conn
        refusal = self._startup_refusal()
        if refusal is not None:
            # as OpenSSH's MaxStartups: dropped before the SSH handshake, so a flood of
            # half-open connections costs nothing and the other sources still get in
            self._ctx.log.warning("connection from %s refused: %s", self._peer, refusal)
            conn.abort()  # now: asyncssh sends its banner right after this call returns
            return
        self._starting = True
        self._ctx.startups[self._source] += 1

    def _startup_refusal(self) -> str | None:
        config, startups = self._ctx.config, self._ctx.startups
        if startups.total() >= config.max_startups:
            return f"{config.max_startups} connections are logging in (max_startups)"
        if startups[self._source] >= config.max_startups_per_source:
            return (f"{config.max_startups_per_source} connections from {self._source} are "
                    "logging in (max_startups_per_source)")
        return None

    def _end_startup(self) -> None:
        if self._starting:
            self._starting = False
            self._ctx.startups[self._source] -= 1
            if self._ctx.startups[self._source] <= 0:
                del self._ctx.startups[self._source]

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_startup()
        if self._counted_user is not None:
            self._ctx.logged_in[self._counted_user] -= 1
            if self._ctx.logged_in[self._counted_user] <= 0:
                del self._ctx.logged_in[self._counted_user]
            self._counted_user = None
        if self._user is not None and not self._authenticated:
            # covers clients that only tried password or keyboard-interactive (never offered)
            self._ctx.log.warning("login failed: user %r from %s never authenticated",
                                  self._user, self._peer)

    def auth_completed(self) -> None:
        self._authenticated = True
        self._end_startup()
        # an agent offers its other keys first: a login that succeeds is no failed login
        self._ctx.failures.forgive(self._source, self._failures)
        user = self._user or "?"
        limit = self._ctx.config.max_connections_per_channel
        if self._ctx.logged_in[user] >= limit:
            reason = (f"channel {user!r} has {limit} connections already "
                      "(max_connections_per_channel); close one first")
            self._ctx.log.warning("login refused: user %r from %s: %s", user, self._peer,
                                  reason)
            if self._conn is not None:
                self._conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, reason)
            return
        self._ctx.logged_in[user] += 1
        self._counted_user = user
        self._ctx.log.info("login: user %r from %s", self._user, self._peer)

    def begin_auth(self, username: str) -> bool:
        self._user = username
        self._check_source()
        if self._ctx.config.channel(username) is None:
            self._ctx.log.warning("login refused: unknown channel user %r from %s",
                                  username, self._peer)
        return True  # always require auth; unknown users simply never succeed

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._check_source()
        if self._ctx.key_allowed(username, key):
            self._check_signature(username, key)
            return True
        self._ctx.log.warning("login refused: key %s is not registered for user %r (from %s)",
                              key.get_fingerprint(), username, self._peer)
        self._failed(username)
        return False

    def _check_source(self) -> None:
        """Drop the connection while its address has too many recent failed logins."""
        config = self._ctx.config
        wait = self._ctx.failures.blocked_for(self._source, config.max_auth_failures_per_source,
                                              config.auth_failure_window_s)
        if wait:
            reason = (f"too many failed logins from {self._source} (max "
                      f"{config.max_auth_failures_per_source} in "
                      f"{config.auth_failure_window_s} s); try again in {math.ceil(wait)} s")
            self._ctx.log.warning("login refused: %s", reason)
            raise asyncssh.PermissionDenied(reason)  # asyncssh sends it as the disconnect

    def _failed(self, username: str) -> None:
        """Count a failed attempt; at ``max_auth_attempts`` the connection is dropped."""
        self._failures.append(self._ctx.failures.add(self._source))
        limit = self._ctx.config.max_auth_attempts
        if len(self._failures) >= limit:
            # as OpenSSH (MaxAuthTries): the attempt that reaches the cap ends the connection
            self._ctx.log.warning("login refused: user %r from %s: too many authentication "
                                  "failures (max %d per connection)", username, self._peer, limit)
            raise asyncssh.PermissionDenied("Too many authentication failures")

    def _check_signature(self, username: str, key: asyncssh.SSHKey) -> None:
        """Count a bad signature as a failed attempt; refuse SHA-1 "ssh-rsa" (spec 3.2)."""
        # asyncssh verifies whatever algorithm the client signed with; the key object it asked
        # us about is the one it verifies with, so wrapping its verify() enforces the policy
        verify = key.verify
        refuse_sha1 = not self._ctx.legacy_ssh_rsa and key.algorithm == b"ssh-rsa"
        log, peer = self._ctx.log, self._peer

        def checked(data: bytes, sig: bytes) -> bool:
            alg = sig[4:4 + int.from_bytes(sig[:4], "big")]
            if refuse_sha1 and alg == b"ssh-rsa":
                log.warning("login refused: user %r from %s signed with SHA-1 ssh-rsa "
                            "(legacy_ssh_rsa is off)", username, peer)
                good = False
            else:
                good = verify(data, sig)
            if not good:
                self._failed(username)
            return good

        key.verify = checked  # type: ignore[method-assign]
