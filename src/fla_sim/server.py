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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import asyncssh
from asyncssh.public_key import get_default_public_key_algs as _default_sig_algs

from fla_core.anomalies import ChannelError
from fla_core.names import check_shape
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
# what a client that uploads under a temporary name and renames must change (docs/clients.md)
_FINAL_NAME = ("upload under the final name, never a temporary one (docs/clients.md; lftp: set "
               "xfer:use-temp-file no)")


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

    __slots__ = ("append", "directory", "failed", "fd", "final", "follower", "gaps", "hwm",
                 "limit", "mark", "name", "quota", "temp", "watched")

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
        self.append = False  # opened with APPEND: every write goes to the end (see _open_upload)
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


def _never_in_a_set(name: str) -> str | None:
    """Why a file of this name can never be part of a set (checks N1-N4 fail), else None.

    GO and TD names are left out: whatever their shape they are answered at once (P1).
    """
    if name.startswith(("GO.", "TD.")):
        return None
    try:
        check_shape(name)
    except ChannelError as exc:
        return exc.detail or exc.code
    return None


class ChannelSFTPServer(asyncssh.SFTPServer):
    """SFTP requests of one channel session, restricted to what spec 3.3 allows."""

    def __init__(self, chan: asyncssh.SSHServerChannel, *, ctx: _Context):
        self._ctx = ctx
        self._user: str = chan.get_extra_info("username")
        self._uploads: set[_Upload] = set()
        # (directory, name) -> (fstat at CLOSE, monotonic deadline): this session's uploads
        # whose name keeps answering STAT and SETSTAT for [server] close_grace_ms
        self._closed: dict[tuple[str, ...], tuple[os.stat_result, float]] = {}
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
                    # a file that can never be part of a set waits only for the orphan sweep
                    # and its sender cannot remove it: it must not block the next upload
                    if entry.name.startswith(HIDDEN) or not _never_in_a_set(entry.name):
                        total += _size_if_present(entry)
        return total

    # -- open / read / write / close ----------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        """OPEN: writes only directly in IN*, reads only in OUT*."""
        if pflags & _WRITE_FLAGS:
            if path.rstrip(b"/").rsplit(b"/", 1)[-1].startswith(HIDDEN.encode()):
                raise self._refused("upload", path, "names starting with '.' are reserved by "
                                                    f"the simulator; {_FINAL_NAME}")
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

    def _refused(self, what: str, path: bytes, reason: str) -> asyncssh.SFTPError:
        """PERMISSION_DENIED, logged: OpenSSH's clients and curl never show the reason."""
        self._ctx.log.warning("%s: %s of %.120s refused: %s", self._user, what,
                              path.decode("utf-8", "backslashreplace"), reason)
        return _denied(reason)

    def _open_upload(self, parts: tuple[str, ...], pflags: int) -> _Upload:
        if len(parts) != 2 or parts[0] not in UPLOAD_DIRS:
            raise self._refused("upload", "/".join(parts).encode(),
                                "uploads go directly into IN, INTEST or INTEST-S")
        directory, name = parts
        why = _never_in_a_set(name) if self._ctx.config.refuse_unusable_names else None
        if why is not None:
            # such a file would wait a day for the orphan sweep, undeletable: a client's
            # temporary name (NAME.filepart) is the usual cause
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise self._refused(
                "upload", "/".join(parts).encode(),
                f"{shown} can never be part of a set ({why}): names are FI|FS.APPL.SENDER.DATE."
                f"SEQ.ENV.TOTAL.INDEX or GO|TD.APPL.SENDER.DATE.SEQ.ENV.TOTAL; {_FINAL_NAME}")
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
        if pflags & asyncssh.FXF_APPEND:
            # as OpenSSH's sftp-server (O_APPEND): every write lands at the end, whatever its
            # offset (curl --append and paramiko's mode "a" send offset 0). A bound below any
            # end takes every write to _write_noted, so the fast path stays two comparisons.
            upload.append = True
            upload.limit = -1
            self._uploads.add(upload)
            return upload
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
        """WRITE off the fast path: append, the quota, an out-of-order range, a pre-scan mark."""
        if upload.append:
            offset, end = upload.hwm, upload.hwm + len(data)
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
        self._remember_closed((file_obj.directory, file_obj.name), st)
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

    def _remember_closed(self, parts: tuple[str, ...], st: os.stat_result) -> None:
        """Keep a closed upload's attributes for the client's usual requests after CLOSE."""
        # The processor may archive a GO within milliseconds of its CLOSE, while rclone still
        # sets its time and reads it back and paramiko's put() stats it: without this they see
        # "no such file", fail, and upload the GO again (answered ACRF-133).
        grace = self._ctx.config.close_grace_ms / 1000
        if grace <= 0:
            return
        now = time.monotonic()
        for key in [k for k, (_, deadline) in self._closed.items() if deadline <= now]:
            del self._closed[key]
        self._closed[parts] = (st, now + grace)

    def _recently_closed(self, parts: tuple[str, ...]) -> os.stat_result | None:
        """The attributes this session's upload had at CLOSE, while its grace lasts."""
        entry = self._closed.get(parts)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def exit(self) -> None:
        """End of session: any upload still open never completed; report exit status 0."""
        for upload in self._uploads:
            self._unwatch(upload, "session ended during the upload")
            upload.discard()
        self._uploads.clear()
        self._closed.clear()
        # sshd reports the sftp-server's exit status; OpenSSH's scp (SFTP mode) exits 1 when a
        # session ends without one, after a successful transfer
        if not self.channel.is_closing():
            self.channel.exit(0)

    # -- directories --------------------------------------------------------------------------

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """READDIR: the root and the channel directories; temp names are never listed."""
        parts = self._parts(path)
        if len(parts) > 1 or (parts and parts[0] not in CHANNEL_DIRS):
            raise _denied("only the channel directories can be listed")
        async for entry in super().scandir(path):
            name = cast(bytes, entry.filename)  # typed str | bytes; the server side has bytes
            if not name.startswith(HIDDEN.encode()) or name in (b".", b".."):
                yield entry

    def remove(self, path: bytes) -> None:
        """REMOVE: answers only (OUT*)."""
        parts = self._parts(path)
        if len(parts) != 2 or parts[0] not in ANSWER_DIRS:
            raise _denied("files can be removed only in OUT, OUTTEST and OUTTEST-S")
        os.remove(self._local(parts))

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """MKDIR: refused, the channel root is fixed; an existing path fails as on OpenSSH."""
        parts = self._parts(path)
        if os.path.lexists(self._local(parts)):
            # OpenSSH's sftp-server answers EEXIST with FAILURE (so does this, for SFTP v3):
            # clients that create a folder if needed take that for "exists" and go on, where
            # PERMISSION_DENIED stops them (asyncssh's makedirs(exist_ok=True))
            raise asyncssh.SFTPFileAlreadyExists(f"{'/'.join(parts) or '/'}: already exists")
        raise _denied("directories cannot be created: the channel has only IN, OUT, INTEST, "
                      "OUTTEST, INTEST-S and OUTTEST-S")

    def rmdir(self, path: bytes) -> None:
        """RMDIR: refused."""
        raise _denied("directories cannot be removed")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """RENAME: refused (a set is named by its uploads)."""
        raise self._refused("rename", oldpath,
                            f"rename is not allowed on the channel; {_FINAL_NAME}")

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        """posix-rename@openssh.com: refused like RENAME."""
        self.rename(oldpath, newpath)

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
        """STAT: anything inside the root except temp files and links; a just-closed upload
        of this session keeps its attributes at CLOSE when it was already processed."""
        parts = self._parts(path)
        try:
            return os.lstat(self._local(parts))
        except FileNotFoundError:
            closed = self._recently_closed(parts)
            if closed is None:
                raise
            return closed

    def lstat(self, path: bytes) -> Any:
        """LSTAT: as STAT (no links are served)."""
        return self.stat(path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """SETSTAT: ignored, so ``put -p`` and rclone's modification times keep working
        (times and modes are not kept); a missing file fails, except a just-closed upload."""
        parts = self._parts(path)
        if not os.path.lexists(self._local(parts)) and self._recently_closed(parts) is None:
            raise asyncssh.SFTPNoSuchFile(f"{'/'.join(parts)}: no such file")

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """LSETSTAT: as SETSTAT."""
        self.setstat(path, attrs)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        """FSETSTAT: ignored, except a size on an upload, which truncates it as on OpenSSH."""
        # OpenSSH's scp (SFTP mode) writes over an existing file without TRUNC, then sets the
        # size: without the truncation a shorter file would keep the old file's tail
        if isinstance(file_obj, _Upload) and attrs.size is not None:
            self._truncate(file_obj, attrs.size)

    def _truncate(self, upload: _Upload, size: int) -> None:
        """Set an upload's size (FSETSTAT with a size)."""
        if size > upload.quota:
            upload.failed = True
            raise asyncssh.SFTPFailure("quota exceeded")
        if upload.watched and (size != upload.hwm or upload.gaps):
            self._unwatch(upload, "upload truncated")
        os.ftruncate(upload.fd, size)
        if not upload.watched:
            upload.hwm = size


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
