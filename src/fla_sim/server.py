"""The simulator's SFTP listener (spec 3; design 6).

One asyncssh server; each SFTP session is chrooted into its channel's root. The
:class:`ChannelSFTPServer` subclass restricts the protocol with one short method per request,
each raising :class:`asyncssh.SFTPError` with the status a client sees on the real channel.
Uploads are written under a hidden temporary name and renamed to their real name when the
client closes them; only then is ``on_file_closed`` awaited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.public_key import get_default_public_key_algs as _default_sig_algs

from fla_sim.config import ConfigError

if TYPE_CHECKING:
    from fla_sim.config import SimulatorConfig, SimulatorHome
    from fla_sim.prescan import Prescanner

UPLOAD_DIRS = frozenset({"IN", "INTEST", "INTEST-S"})
ANSWER_DIRS = frozenset({"OUT", "OUTTEST", "OUTTEST-S"})
CHANNEL_DIRS = UPLOAD_DIRS | ANSWER_DIRS
TEMP_PREFIX = ".upload-"
HIDDEN = "."  # simulator temp files (.upload-*, .answer-*): never listed, served or writable

FileClosed = Callable[[str, str, str, int], Awaitable[None]]

_CONTROL = re.compile("[\x00-\x1f\x7f\ufffe\uffff]")  # not allowed in names (see _parts)
_WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND
_MAX_GAPS = 64  # out-of-order ranges an FI upload may leave open and still be pre-scanned


@dataclass
class _Context:
    """What every connection of one listener shares."""

    home: SimulatorHome
    config: SimulatorConfig
    on_file_closed: FileClosed
    log: logging.Logger
    legacy_ssh_rsa: bool = False
    prescan: Prescanner | None = None  # validates big FIs while they arrive (fla_sim.prescan)
    _parsed: dict[str, bytes | None] = field(default_factory=dict)

    def key_allowed(self, user: str, key: asyncssh.SSHKey) -> bool:
        """True when ``key`` is registered for the channel ``user`` (looked up at each login)."""
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


class _Upload:
    """An upload in progress: a hidden temp file renamed to ``final`` on close."""

    __slots__ = ("directory", "failed", "fd", "final", "follower", "gaps", "hwm", "limit",
                 "mark", "name", "quota", "temp", "watched")

    def __init__(self, fd: int, temp: str, final: str, directory: str, name: str, limit: int):
        self.fd = fd
        self.temp = temp
        self.final = final
        self.directory = directory
        self.name = name
        self.quota = limit  # highest end offset the channel quota allows for this file
        # WRITE's fast path bound: the quota, lowered to the next pre-scan mark or gap
        self.limit = limit
        self.hwm = 0  # end of the contiguous prefix written so far
        self.failed = False  # a write was refused: the file is incomplete, never announce it
        # pre-scan (fla_sim.prescan): on for an FI that may get big, until anything odd happens
        self.watched = False
        self.mark = 0  # prefix length at which the follower is started, then told of progress
        self.gaps: list[tuple[int, int]] = []  # ranges written beyond the prefix (out of order)
        self.follower: Any = None

    def fileno(self) -> int:
        return self.fd

    def finish(self) -> os.stat_result:
        """Close the temp file and rename it over the real name; return its fstat."""
        st = os.fstat(self.fd)
        os.close(self.fd)
        try:
            os.replace(self.temp, self.final)  # last write wins: overwrite before GO
        except OSError:
            # e.g. a name too long for the file system: a stray temp file would stay forever
            # and count against the channel quota
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            raise
        return st

    def discard(self) -> None:
        """Close and delete the temp file: the upload never completed."""
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


def _input_ended(chan: asyncssh.SSHServerChannel) -> bool:
    """True once the client stopped sending (EOF or lost connection)."""
    # asyncssh has no public flag for "EOF received"; its channel's _recv_state leaves "open"
    # at the client's EOF, which tells a client CLOSE apart from the session clean-up
    return chan.is_closing() or getattr(chan, "_recv_state", "open") != "open"


def _size_if_present(entry: os.DirEntry[str]) -> int:
    """Size of a regular file of a listing; 0 when it vanished since (archived, renamed)."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return 0
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _pwrite_all(fd: int, data: bytes, offset: int) -> int:
    """Write all of ``data`` at ``offset``; returns its length."""
    written = os.pwrite(fd, data, offset)
    while written < len(data):  # short writes are rare on regular files, but possible
        written += os.pwrite(fd, memoryview(data)[written:], offset + written)
    return written


def _denied(reason: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(reason)


class ChannelSFTPServer(asyncssh.SFTPServer):
    """SFTP requests of one channel session, restricted to what spec 3.3 allows."""

    def __init__(self, chan: asyncssh.SSHServerChannel, *, ctx: _Context):
        self._ctx = ctx
        self._user: str = chan.get_extra_info("username")
        self._uploads: set[_Upload] = set()
        channel = ctx.config.channel(self._user)
        # None only if the channel was removed after this login: then nothing can be uploaded
        self._quota = channel.quota_bytes if channel is not None else 0
        self._broken: str | None = None
        try:
            root = os.path.realpath(ctx.home.channel_root(self._user))
        except ConfigError as exc:  # e.g. a symlink planted in the tree: serve nothing
            ctx.log.error("%s: channel tree refused: %s", self._user, exc)
            self._broken = "channel directory unusable; the simulator log says why"
            root = os.path.realpath(ctx.home.path / "channels" / self._user)
        super().__init__(chan, chroot=os.fsencode(root))
        self._root = os.fsencode(root)

    # -- path helpers -------------------------------------------------------------------------

    def _parts(self, path: bytes) -> tuple[str, ...]:
        """The client path as components below the channel root (``..`` cannot climb out)."""
        if self._broken:
            raise asyncssh.SFTPFailure(self._broken)
        rel = self.map_path(path)[len(self._root):].strip(b"/")
        try:
            text = rel.decode("utf-8")
        except UnicodeDecodeError:
            raise _denied("file names must be UTF-8") from None
        parts = tuple(text.split("/")) if text else ()
        if _CONTROL.search(text):
            # NUL fails only at the final rename; other control characters cannot be written
            # into the XML answer naming the file, so the set would never be answered
            raise _denied("file names cannot contain control characters")
        local = self._root
        for part in parts:  # a link planted in the tree could point outside: never follow it
            local = local + b"/" + part.encode()
            if os.path.islink(local):
                raise _denied("symbolic links are not served")
        if parts and parts[-1].startswith(HIDDEN) and parts[-1] not in (".", ".."):
            raise asyncssh.SFTPNoSuchFile("no such file")
        return parts

    def _local(self, parts: tuple[str, ...]) -> str:
        return os.path.join(os.fsdecode(self._root), *parts)

    def _used_bytes(self) -> int:
        """Bytes held by the channel's upload directories, temp files of uploads included."""
        # Not cached: the processor archives and other sessions upload behind our back, and a
        # listing of the few files a channel holds costs far less than one journal commit.
        total = 0
        for directory in UPLOAD_DIRS:
            with os.scandir(self._local((directory,))) as entries:
                for entry in entries:
                    total += _size_if_present(entry)
        return total

    # -- open / read / write / close ----------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        """OPEN: writes only directly in IN*, reads only in OUT*."""
        if pflags & _WRITE_FLAGS:
            if path.rstrip(b"/").rsplit(b"/", 1)[-1].startswith(HIDDEN.encode()):
                raise _denied("names starting with '.' are reserved by the simulator")
            return self._open_upload(self._parts(path), pflags)
        parts = self._parts(path)
        if len(parts) != 2 or parts[0] not in ANSWER_DIRS:
            raise _denied("files can be read only in OUT, OUTTEST and OUTTEST-S")
        return open(self._local(parts), "rb", buffering=0)  # closed in close()

    def open56(self, path: bytes, desired_access: int, flags: int,
               attrs: asyncssh.SFTPAttrs) -> object:
        """OPEN (SFTPv5+): translated to v3 flags so the same rules apply."""
        pflags = asyncssh.FXF_READ
        if desired_access & (asyncssh.ACE4_WRITE_DATA | asyncssh.ACE4_APPEND_DATA):
            pflags |= asyncssh.FXF_WRITE
        disposition = flags & asyncssh.FXF_ACCESS_DISPOSITION
        pflags |= {
            asyncssh.FXF_CREATE_NEW: asyncssh.FXF_CREAT | asyncssh.FXF_EXCL,
            asyncssh.FXF_CREATE_TRUNCATE: asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC,
            asyncssh.FXF_OPEN_OR_CREATE: asyncssh.FXF_CREAT,
            asyncssh.FXF_TRUNCATE_EXISTING: asyncssh.FXF_TRUNC,
        }.get(disposition, 0)
        return self.open(path, pflags, attrs)

    def _open_upload(self, parts: tuple[str, ...], pflags: int) -> _Upload:
        if len(parts) != 2 or parts[0] not in UPLOAD_DIRS:
            raise _denied("uploads go directly into IN, INTEST or INTEST-S")
        directory, name = parts
        final = self._local(parts)
        try:  # one stat: the processor may archive the file at any moment
            existing: int | None = os.stat(final).st_size
        except FileNotFoundError:
            existing = None
        if existing is not None and pflags & asyncssh.FXF_EXCL:
            raise asyncssh.SFTPFileAlreadyExists(f"{name} already exists")
        if existing is None and not pflags & asyncssh.FXF_CREAT:
            raise asyncssh.SFTPNoSuchFile(f"{name} does not exist")
        limit = self._quota - self._used_bytes() + (existing or 0)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self._local((directory,)))
        if existing is not None and not pflags & asyncssh.FXF_TRUNC:
            # a client continuing an existing file expects its bytes to be there (if the
            # processor archived it meanwhile, the upload starts from an empty file)
            with contextlib.suppress(FileNotFoundError), open(final, "rb") as src, \
                    open(fd, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst)
        upload = _Upload(fd, temp, final, directory, name, limit)
        if existing is not None and not pflags & asyncssh.FXF_TRUNC:
            upload.hwm = os.fstat(fd).st_size  # the copied bytes are the prefix
        prescan = self._ctx.prescan
        # two string tests per OPEN, no work per WRITE below the threshold: only a single-part
        # FI (TOTAL 1, INDEX 1) that may reach prescan_min_bytes is watched
        if (prescan is not None and name.startswith("FI.") and name.endswith(".1.1")
                and limit >= prescan.min_bytes > upload.hwm):
            upload.watched = True
            upload.mark = prescan.min_bytes
            upload.limit = min(limit, upload.mark - 1)
        self._uploads.add(upload)
        return upload

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        """WRITE: straight to the temp file; the fast path is two comparisons.

        The end against ``limit`` (the quota, or lower: the next pre-scan mark or out-of-order
        range), the offset against the end of the contiguous prefix; anything else is
        :meth:`_write_noted`.
        """
        try:
            limit = file_obj.limit  # type: ignore[attr-defined]
        except AttributeError:
            raise _denied("file is open for reading only") from None
        end = offset + len(data)
        if end > limit or offset != file_obj.hwm:  # type: ignore[attr-defined]
            return self._write_noted(file_obj, offset, data, end)  # type: ignore[arg-type]
        file_obj.hwm = end  # type: ignore[attr-defined]
        return _pwrite_all(file_obj.fd, data, offset)  # type: ignore[attr-defined]

    def _write_noted(self, upload: _Upload, offset: int, data: bytes, end: int) -> int:
        """WRITE off the fast path: the quota, an out-of-order range, or a pre-scan mark."""
        if end > upload.quota:
            upload.failed = True
            raise asyncssh.SFTPFailure("quota exceeded")
        written = _pwrite_all(upload.fd, data, offset)
        if not upload.watched:
            upload.hwm = end  # nobody follows this file: just keep the next write fast
            return written
        gaps = upload.gaps
        if offset == upload.hwm or (offset > upload.hwm and len(gaps) < _MAX_GAPS):
            gaps.append((offset, end))
            # grow the prefix with every range that now touches it (overlaps above the prefix
            # are harmless: nobody has read those bytes yet)
            merged = True
            while merged:
                merged = False
                for gap in gaps:
                    if gap[0] <= upload.hwm:
                        upload.hwm = max(upload.hwm, gap[1])
                        gaps.remove(gap)
                        merged = True
                        break
        else:
            # bytes of the prefix written again (a follower may have read them), or too
            # scattered a pattern: this upload is read at its GO like any other
            self._unwatch(upload, "bytes below the written prefix rewritten" if
                          offset < upload.hwm else "too many out-of-order writes")
            return written
        if upload.hwm >= upload.mark:
            self._prescan_mark(upload)
        if upload.watched:
            upload.limit = min(upload.quota, upload.mark - 1,
                               *(start - 1 for start, _ in gaps))
        return written

    def _prescan_mark(self, upload: _Upload) -> None:
        """The prefix reached the next mark: start the follower, or tell it how far it may read."""
        prescan = self._ctx.prescan
        assert prescan is not None
        if upload.follower is None:
            upload.follower = prescan.start(self._user, upload.directory, upload.name, upload.fd)
            if upload.follower is None:
                self._unwatch(upload, None)
                return
        prescan.confirm(upload.follower, upload.hwm)
        upload.mark = upload.hwm + _prescan_step()

    def _unwatch(self, upload: _Upload, why: str | None) -> None:
        """No pre-scan for this upload (any more): stop its follower, back to the fast path."""
        if upload.follower is not None and self._ctx.prescan is not None:
            self._ctx.prescan.abort(upload.follower, why or "upload not followed")
        upload.follower = None
        upload.watched = False
        upload.gaps = []
        upload.limit = upload.quota

    async def close(self, file_obj: object) -> None:
        """CLOSE: a completed upload gets its real name, then ``on_file_closed`` is awaited."""
        if not isinstance(file_obj, _Upload):
            file_obj.close()  # type: ignore[attr-defined]
            return
        self._uploads.discard(file_obj)
        if file_obj.failed or _input_ended(self.channel):
            # asyncssh closes leftover handles when the session ends: not a completed upload
            self._ctx.log.info("%s: upload of %s/%s incomplete, discarded", self._user,
                               file_obj.directory, file_obj.name)
            self._unwatch(file_obj, "upload incomplete")
            file_obj.discard()
            return
        try:
            st = file_obj.finish()
        except BaseException:
            self._unwatch(file_obj, "upload could not be renamed")
            raise
        size = st.st_size
        prescan = self._ctx.prescan
        if file_obj.follower is not None:
            assert prescan is not None
            prescan.closed(file_obj.follower, st)
        elif prescan is not None and file_obj.name.startswith("GO."):
            prescan.go_closed(self._user, file_obj.directory, file_obj.name)
        self._ctx.log.info("%s: received %s/%s (%d bytes)", self._user, file_obj.directory,
                           file_obj.name, size)
        try:
            await self._ctx.on_file_closed(self._user, file_obj.directory, file_obj.name, size)
        except asyncssh.SFTPConnectionLost:
            self.connection.abort()  # an injected "drop-connection": really break the link
            raise
        except asyncssh.SFTPError:
            raise  # a veto or injected fault chosen by the processor: the client sees it
        except Exception:
            self._ctx.log.exception("%s: processing hand-off failed for %s/%s", self._user,
                                    file_obj.directory, file_obj.name)
            raise asyncssh.SFTPFailure("internal simulator error") from None

    def exit(self) -> None:
        """End of session: any upload still open never completed."""
        for upload in self._uploads:
            self._unwatch(upload, "session ended during the upload")
            upload.discard()
        self._uploads.clear()

    # -- directories --------------------------------------------------------------------------

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """READDIR: the root and the channel directories; temp names are never listed."""
        parts = self._parts(path)
        if len(parts) > 1 or (parts and parts[0] not in CHANNEL_DIRS):
            raise _denied("only the channel directories can be listed")
        async for entry in super().scandir(path):
            if not entry.filename.startswith(HIDDEN.encode()) or entry.filename in (b".", b".."):
                yield entry

    def remove(self, path: bytes) -> None:
        """REMOVE: answers only (OUT*)."""
        parts = self._parts(path)
        if len(parts) != 2 or parts[0] not in ANSWER_DIRS:
            raise _denied("files can be removed only in OUT, OUTTEST and OUTTEST-S")
        os.remove(self._local(parts))

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """MKDIR: refused, the channel root is fixed."""
        raise _denied("directories cannot be created")

    def rmdir(self, path: bytes) -> None:
        """RMDIR: refused."""
        raise _denied("directories cannot be removed")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """RENAME: refused (a set is named by its uploads)."""
        raise _denied("rename is not allowed")

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        """posix-rename@openssh.com: refused like RENAME."""
        raise _denied("rename is not allowed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        """SYMLINK: refused."""
        raise _denied("symbolic links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        """hardlink@openssh.com: refused."""
        raise _denied("links are not allowed")

    def readlink(self, path: bytes) -> bytes:
        """READLINK: there are no links to read."""
        raise _denied("symbolic links are not served")

    # -- attributes ---------------------------------------------------------------------------

    def stat(self, path: bytes) -> Any:
        """STAT: anything inside the root except temp files and links."""
        return os.lstat(self._local(self._parts(path)))

    def lstat(self, path: bytes) -> Any:
        """LSTAT: as STAT (no links are served)."""
        return self.stat(path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """SETSTAT: ignored, so ``put -p`` keeps working (times and modes are not kept)."""
        self._parts(path)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """LSETSTAT: ignored."""
        self._parts(path)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        """FSETSTAT: ignored."""


class _ChannelSSHServer(asyncssh.SSHServer):
    """Authentication: public key only, the key must be registered for that channel."""

    def __init__(self, ctx: _Context):
        self._ctx = ctx
        self._peer = "?"
        self._user: str | None = None
        self._authenticated = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        if self._user is not None and not self._authenticated:
            # covers clients that only tried password or keyboard-interactive (never offered)
            self._ctx.log.warning("login failed: user %r from %s never authenticated",
                                  self._user, self._peer)

    def auth_completed(self) -> None:
        self._authenticated = True
        self._ctx.log.info("login: user %r from %s", self._user, self._peer)

    def begin_auth(self, username: str) -> bool:
        self._user = username
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
        if self._ctx.key_allowed(username, key):
            if not self._ctx.legacy_ssh_rsa and key.algorithm == b"ssh-rsa":
                self._refuse_sha1_signature(username, key)
            return True
        self._ctx.log.warning("login refused: key %s is not registered for user %r (from %s)",
                              key.get_fingerprint(), username, self._peer)
        return False


    def _refuse_sha1_signature(self, username: str, key: asyncssh.SSHKey) -> None:
        """Make this key's signature check fail for the SHA-1 "ssh-rsa" algorithm (spec 3.2)."""
        # asyncssh verifies whatever algorithm the client signed with; the key object it asked
        # us about is the one it verifies with, so wrapping its verify() enforces the policy
        verify = key.verify
        log, peer = self._ctx.log, self._peer

        def checked(data: bytes, sig: bytes) -> bool:
            alg = sig[4:4 + int.from_bytes(sig[:4], "big")]
            if alg == b"ssh-rsa":
                log.warning("login refused: user %r from %s signed with SHA-1 ssh-rsa "
                            "(legacy_ssh_rsa is off)", username, peer)
                return False
            return verify(data, sig)

        key.verify = checked  # type: ignore[method-assign]


def _prescan_step() -> int:
    from fla_sim.prescan import STEP

    return STEP


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
                       prescan: Prescanner | None = None) -> asyncssh.SSHAcceptor:
    """Listen for SFTP sessions of the configured channels; ``port=0`` picks a free port.

    With ``prescan``, single-part FI uploads of ``prescan.min_bytes`` or more are followed by a
    pre-scan process while they arrive (fla_sim.prescan).
    """
    legacy = config.legacy_ssh_rsa if legacy_ssh_rsa is None else legacy_ssh_rsa
    log = log or logging.getLogger("fla_sim.server")
    discard_partial_uploads(home, config, log)
    if prescan is not None and prescan.min_bytes <= 0:
        prescan = None
    ctx = _Context(home, config, on_file_closed, log, legacy_ssh_rsa=legacy, prescan=prescan)
    host_key = asyncssh.read_private_key(home.host_key_path)
    options: dict[str, Any] = {"encryption_algs": list(config.ciphers)}
    if not legacy:
        # RSA keys still work, with SHA-2 signatures (spec 3.2: SHA-1 "ssh-rsa" is opt-in)
        options["signature_algs"] = [a.decode() for a in _default_sig_algs() if a != b"ssh-rsa"]
    return await asyncssh.create_server(
        partial(_ChannelSSHServer, ctx),
        config.host if host is None else host,
        config.port if port is None else port,
        server_host_keys=[host_key],
        sftp_factory=partial(ChannelSFTPServer, ctx=ctx),
        allow_scp=False,
        **options,
    )
