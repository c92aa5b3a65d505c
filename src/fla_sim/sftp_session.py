"""One SFTP session of a channel (spec 3.3; design 6), restricted to what the channel allows.

:class:`ChannelSFTPServer` is chrooted into its channel's root and restricts the protocol with
one short method per request (as asyncssh wants), each raising :class:`asyncssh.SFTPError` with
the status a client sees on the real channel. The path policy is in one place,
:meth:`ChannelSFTPServer.map_path`, through which asyncssh and every request method here map
each client path; the request methods only add their own rule (writes in IN*, reads and deletes
in OUT*). Open handles are capped per session and per channel; the bytes and files of uploads
are counted by the channel's quota (:mod:`fla_sim.uploads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import posixpath
import re
import stat
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, cast

import asyncssh

from fla_core import model
from fla_sim.config import ConfigError
from fla_sim.uploads import (
    GRANT,
    HIDDEN,
    TEMP_PREFIX,
    UPLOAD_DIRS,
    ChannelQuota,
    Upload,
    copier,
    copy_prefix,
    never_in_a_set,
    pwrite_all,
)

if TYPE_CHECKING:
    from fla_sim.server import ServerContext

ANSWER_DIRS = frozenset(model.ANSWER_DIRS)  # the one table: fla_core.model.Environment's
CHANNEL_DIRS = UPLOAD_DIRS | ANSWER_DIRS
_CONTROL = re.compile("[\x00-\x1f\x7f\ufffe\uffff]")  # not allowed in names (see map_path)
# lstat errors meaning "not there": nothing below such a component can exist either
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})
_WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND
_MAX_GAPS = 64  # out-of-order ranges an FI upload may leave open and still be pre-scanned
# what a client that uploads under a temporary name and renames must change (docs/clients.md)
_FINAL_NAME = ("upload under the final name, never a temporary one (docs/clients.md; lftp: set "
               "xfer:use-temp-file no)")


def _input_ended(chan: asyncssh.SSHServerChannel[bytes]) -> bool:
    """True once the client stopped sending (EOF or lost connection)."""
    # asyncssh has no public flag for "EOF received"; its channel's _recv_state leaves "open"
    # at the client's EOF, which tells a client CLOSE apart from the session clean-up
    return chan.is_closing() or getattr(chan, "_recv_state", "open") != "open"


def _denied(reason: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(reason)


def _served(depth: int, name: str, st: os.stat_result) -> bool:
    """Whether an entry found ``depth`` levels below a channel root is part of what it serves.

    The root holds the six channel directories, they hold plain files: nothing else is ever
    shown or served, whatever was put in the tree (a link, a directory, a device, a FIFO).
    """
    if depth == 1:
        return name in CHANNEL_DIRS and stat.S_ISDIR(st.st_mode)
    # a hard link is another name of some file of the home (the CA key): only files with one
    # name are served; uploads and answers are always written under a single name
    return (depth == 2 and not name.startswith(HIDDEN) and stat.S_ISREG(st.st_mode)
            and st.st_nlink == 1)


class _Listing:
    """A directory handle: what the directory serves, read in one go at the first READDIR."""

    __slots__ = ("__weakref__", "_depth", "_local", "_names")

    def __init__(self, local: str, depth: int):
        self._local = local
        self._depth = depth  # of the entries listed: 1 at the root, 2 in a channel directory
        self._names: Iterator[asyncssh.SFTPName] | None = None

    def __aiter__(self) -> _Listing:
        return self

    async def __anext__(self) -> asyncssh.SFTPName:
        if self._names is None:
            # read whole and closed at once: an open listing holds no file descriptor
            self._names = iter(self._read())
        try:
            return next(self._names)
        except StopIteration:
            raise StopAsyncIteration from None

    def _read(self) -> list[asyncssh.SFTPName]:
        parent = os.path.dirname(self._local) if self._depth == 2 else self._local  # chroot
        names = [asyncssh.SFTPName(b".", attrs=asyncssh.SFTPAttrs.from_local(
                     os.lstat(self._local))),
                 asyncssh.SFTPName(b"..", attrs=asyncssh.SFTPAttrs.from_local(os.lstat(parent)))]
        with os.scandir(self._local) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # archived or answered-and-removed since the scan began
                if _served(self._depth, entry.name, st):
                    names.append(asyncssh.SFTPName(os.fsencode(entry.name),
                                                   attrs=asyncssh.SFTPAttrs.from_local(st)))
        return names


class ChannelSFTPServer(asyncssh.SFTPServer):
    """SFTP requests of one channel session, restricted to what spec 3.3 allows."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], *, ctx: ServerContext):
        self._ctx = ctx
        self._user: str = chan.get_extra_info("username")
        self._uploads: set[Upload] = set()
        self._readers: set[Any] = set()  # answers open for reading (plain file objects)
        # open directory handles: asyncssh drops one at CLOSEDIR without telling the server,
        # and with it the only strong reference, so this set follows the client's handles
        self._listings: weakref.WeakSet[_Listing] = weakref.WeakSet()
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
        ctx.sessions.setdefault(self._user, weakref.WeakSet()).add(self)

    # -- the path policy: every path of every request goes through map_path ----------------

    def map_path(self, path: bytes) -> bytes:
        """The local path of a client path, once it passed the channel's whole path policy.

        asyncssh maps every path it hands to the server through here, and so do the request
        methods of this class (:meth:`_parts`): this is the one place that decides what a client
        can reach. The channel root and nothing above it (``..`` at the root stays there, an
        absolute path starts at the root), UTF-8 names without control characters, no symbolic
        link anywhere on the path, and only what the channel serves (:func:`_served`: its six
        directories and the plain files in them, never the simulator's dot-name temp files).
        A path that does not exist passes, so each request answers it with its own rule: an
        upload creates it, STAT says there is no such file, MKDIR is refused.
        """
        if self._broken:
            raise asyncssh.SFTPFailure(self._broken)
        # lexically from "/", as a chroot does; with no link on the path (checked below) the
        # lexical path is the real one. normpath keeps a leading "//", lstrip drops it.
        rel = posixpath.normpath(b"/" + path).lstrip(b"/")
        try:
            text = rel.decode("utf-8")
        except UnicodeDecodeError:
            raise _denied("file names must be UTF-8") from None
        if _CONTROL.search(text):
            # NUL fails only at the final rename; other control characters cannot be written
            # into the XML answer naming the file, so the set would never be answered
            raise _denied("file names cannot contain control characters")
        local = self._root
        for depth, part in enumerate(text.split("/") if text else (), 1):
            local += b"/" + part.encode()
            try:
                st = os.lstat(local)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    break
                raise
            if stat.S_ISLNK(st.st_mode):
                # a link put in the tree could point anywhere (the CA key): never followed
                self._ctx.log.warning("%s: %s is a symbolic link in the channel tree; it is "
                                      "never followed (remove it)", self._user, os.fsdecode(local))
                raise _denied("symbolic links are not served")
            if not _served(depth, part, st):
                raise asyncssh.SFTPNoSuchFile("no such file")
        return self._root + b"/" + rel if rel else self._root

    def reverse_map_path(self, path: bytes) -> bytes:
        """The client's name of a local path: "/" is the channel root, nothing above exists."""
        if path == self._root:
            return b"/"
        if path.startswith(self._root + b"/"):
            return path[len(self._root):]
        raise asyncssh.SFTPNoSuchFile("no such file")

    def _parts(self, path: bytes) -> tuple[str, ...]:
        """The components below the channel root of a client path, through :meth:`map_path`."""
        rel = self.map_path(path)[len(self._root) + 1:]
        return tuple(rel.decode("utf-8").split("/")) if rel else ()

    def _local(self, parts: tuple[str, ...]) -> str:
        return os.path.join(os.fsdecode(self._root), *parts)

    def _account(self) -> ChannelQuota:
        """The channel's quota account, its folders read again if files may have left."""
        account = self._ctx.accounts.get(self._user)
        if account is None:
            account = self._ctx.accounts[self._user] = ChannelQuota(os.fsdecode(self._root))
        if account.stale:
            account.scan()
        return account

    def _admit(self, account: ChannelQuota, key: tuple[str, str], size: int) -> None:
        """FAILURE unless one more upload of ``key`` starting with ``size`` bytes fits."""
        cap = self._ctx.config.max_files_per_channel
        for again in (True, False):
            replaces = key in account.sizes and key not in account.credits
            files = 0 if replaces else 1
            held = max(0, size - account.sizes[key]) if replaces else size
            used, count = account.used()
            if count + files > cap:
                reason = (f"too many files in IN, INTEST and INTEST-S (max {cap}, uploads in "
                          "progress included); send their GO, or wait for the orphan sweep")
            elif used + held > self._quota:
                reason = self._over(used)
            else:
                return
            if again:
                account.recount()
        self._ctx.log.warning("%s: upload of %s/%s refused: %s", self._user, *key, reason)
        raise asyncssh.SFTPFailure(reason)

    def _over(self, used: int) -> str:
        return (f"quota exceeded: the channel holds {used} of its {self._quota} bytes in IN, "
                "INTEST and INTEST-S (uploads in progress included)")

    def _reserve(self, upload: Upload, end: int) -> None:
        """Grow an upload's reservation to ``end``, and some room ahead; FAILURE if it does not
        fit in the channel quota once every upload's reservation is back to its bytes."""
        account = upload.account
        for again in (True, False):
            used = account.used(without=upload)[0]
            room = self._quota - used + (account.replaced(upload) or 0)  # the highest end
            if end <= room:
                upload.quota = end + min(GRANT, (room - end) // 2)
                upload.bound()
                return
            if again:
                account.recount()
        upload.failed = True
        reason = self._over(used + end - (account.replaced(upload) or 0))
        self._ctx.log.warning("%s: upload of %s/%s refused: %s", self._user, upload.directory,
                              upload.name, reason)
        raise asyncssh.SFTPFailure(reason)

    # -- open / read / write / close ----------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        """OPEN: writes only directly in IN*, reads only in OUT*; open handles are capped."""
        parts = self._parts(path)
        if pflags & _WRITE_FLAGS:
            return self._open_upload(parts, pflags)
        if len(parts) != 2 or parts[0] not in ANSWER_DIRS:
            raise _denied("files can be read only in OUT, OUTTEST and OUTTEST-S")
        self._claim_handle()
        return self._open_answer(self._local(parts))

    def _open_answer(self, local: str) -> object:
        """A read handle on an answer (closed in :meth:`close`)."""
        # map_path checked the path an instant ago: O_NOFOLLOW and the fstat close the window
        # in which it could have been replaced (O_NONBLOCK: a FIFO must not block the loop)
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            served = _served(2, os.path.basename(local), os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        if not served:
            os.close(fd)
            raise asyncssh.SFTPNoSuchFile("no such file")
        reader = open(fd, "rb", buffering=0)  # noqa: SIM115 -- closed in close()
        self._readers.add(reader)
        return reader

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        """READ: answers; an upload's handle is write-only, as on OpenSSH."""
        if isinstance(file_obj, Upload):
            raise _denied("uploads cannot be read back; answers are read in OUT, OUTTEST and "
                          "OUTTEST-S")
        return os.pread(cast(Any, file_obj).fileno(), size, offset)

    def fstat(self, file_obj: object) -> os.stat_result:
        """FSTAT: any open file, as on OpenSSH; an upload answers with what it holds so far."""
        return os.fstat(cast(Any, file_obj).fileno())

    def handle_cap(self) -> int:
        """The most handles this session may hold: what limits@openssh.com advertises."""
        config = self._ctx.config
        return min(config.max_handles_per_session, config.max_handles_per_channel)

    def open_handles(self) -> int:
        """Files and directories this session has open."""
        return len(self._uploads) + len(self._readers) + len(self._listings)

    def _claim_handle(self) -> None:
        """FAILURE for one more open file or directory beyond the session's or channel's cap."""
        # each handle holds a file descriptor (a listing holds memory): one session once took
        # all of the process's, and from then on no channel could log in
        config = self._ctx.config
        if self.open_handles() >= config.max_handles_per_session:
            reason = (f"too many open files in this session (max "
                      f"{config.max_handles_per_session}); close some")
        elif self._ctx.channel_handles(self._user) >= config.max_handles_per_channel:
            reason = (f"too many open files on this channel, all its sessions together (max "
                      f"{config.max_handles_per_channel}); close some")
        else:
            return
        self._ctx.log.warning("%s: open refused: %s", self._user, reason)
        raise asyncssh.SFTPFailure(reason)

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

    def _open_upload(self, parts: tuple[str, ...], pflags: int) -> object:
        if len(parts) != 2 or parts[0] not in UPLOAD_DIRS:
            raise self._refused("upload", "/".join(parts).encode(),
                                "uploads go directly into IN, INTEST or INTEST-S")
        directory, name = parts
        if name.startswith(HIDDEN):
            raise self._refused("upload", "/".join(parts).encode(), "names starting with '.' "
                                f"are reserved by the simulator; {_FINAL_NAME}")
        why = never_in_a_set(name) if self._ctx.config.refuse_unusable_names else None
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
        self._claim_handle()
        account = self._account()
        account.saw((directory, name), existing)
        src = None
        if existing is not None and not pflags & asyncssh.FXF_TRUNC:
            # a client continuing an existing file expects its bytes to be there (if the
            # processor archived it meanwhile, the upload starts from an empty file)
            with contextlib.suppress(FileNotFoundError):
                src = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            size = 0 if src is None else os.fstat(src).st_size  # what the copy will hold
            self._admit(account, (directory, name), size)
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self._local((directory,)))
        except BaseException:
            if src is not None:
                os.close(src)
            raise
        upload = Upload(fd, temp, final, directory, name, account)
        upload.quota = upload.pinned = size
        account.add(upload)
        self._uploads.add(upload)  # from here a session's end discards it, even mid-copy
        if src is None:
            return self._opened(upload, pflags)
        return self._continued(upload, src, size, pflags)

    async def _continued(self, upload: Upload, src: int, size: int, pflags: int) -> Upload:
        """OPEN of an existing file without TRUNC: its bytes copied into the temp file by a
        worker thread, so every other session goes on meanwhile."""
        # the thread gets descriptors of its own and closes them: a session that ends during
        # the copy closes upload.fd, whose number may be reused at once
        try:
            dst = os.dup(upload.fd)
        except BaseException:
            os.close(src)
            raise
        try:
            copied = await asyncio.get_running_loop().run_in_executor(
                copier(), copy_prefix, src, dst, size)
        except BaseException:
            if upload in self._uploads:
                self._uploads.discard(upload)
                self._unwatch(upload, None)
                upload.discard()
            raise
        if upload not in self._uploads:  # the session ended during the copy: discarded
            raise asyncssh.SFTPFailure("the session ended during the open")
        upload.hwm = upload.pinned = copied  # the copied bytes are the prefix
        return self._opened(upload, pflags)

    def _opened(self, upload: Upload, pflags: int) -> Upload:
        """An upload ready for its writes: APPEND, or the pre-scan of an FI that may get big."""
        if pflags & asyncssh.FXF_APPEND:
            # as OpenSSH's sftp-server (O_APPEND): every write lands at the end, whatever its
            # offset (curl --append and paramiko's mode "a" send offset 0)
            upload.append = True
            upload.bound()
            return upload
        prescan = self._ctx.prescan
        name = upload.name
        # two string tests per OPEN, no work per WRITE below the threshold: only a single-part
        # FI (TOTAL 1, INDEX 1) that may reach prescan_min_bytes is watched
        if (prescan is not None and name.startswith("FI.") and name.endswith(".1.1")
                and prescan.min_bytes > upload.hwm):
            account = upload.account
            room = (self._quota - account.used(without=upload)[0]
                    + (account.replaced(upload) or 0))
            if room >= prescan.min_bytes:
                upload.watched = True
                upload.mark = prescan.min_bytes
        upload.bound()
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
        return pwrite_all(file_obj.fd, data, offset)  # type: ignore[attr-defined]

    def _write_noted(self, upload: Upload, offset: int, data: bytes, end: int) -> int:
        """WRITE off the fast path: append, the quota, an out-of-order range, a pre-scan mark."""
        if upload.append:
            offset, end = upload.hwm, upload.hwm + len(data)
        if end > upload.quota:
            self._reserve(upload, end)  # or FAILURE "quota exceeded"
        written = pwrite_all(upload.fd, data, offset)
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
        upload.bound()
        return written

    def _prescan_mark(self, upload: Upload) -> None:
        """The prefix reached the next mark: start the follower, or tell it how far it may read."""
        prescan = self._ctx.prescan
        assert prescan is not None
        if upload.hwm > self._ctx.config.settings.max_file_size:
            # P8 refuses it (184) without reading a byte: following it would only cost CPU
            self._unwatch(upload, "over max_file_size")
            return
        if upload.follower is None:
            upload.follower = prescan.start(self._user, upload.directory, upload.name, upload.fd)
            if upload.follower is None:
                self._unwatch(upload, None)
                return
        prescan.confirm(upload.follower, upload.hwm)
        upload.mark = upload.hwm + _prescan_step()

    def _unwatch(self, upload: Upload, why: str | None) -> None:
        """No pre-scan for this upload (any more): stop its follower, back to the fast path."""
        if upload.follower is not None and self._ctx.prescan is not None:
            self._ctx.prescan.abort(upload.follower, why or "upload not followed")
        upload.follower = None
        upload.watched = False
        upload.gaps = []
        upload.bound()

    async def close(self, file_obj: object) -> None:
        """CLOSE: a completed upload gets its real name, then ``on_file_closed`` is awaited."""
        if not isinstance(file_obj, Upload):
            self._readers.discard(file_obj)
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
        with self._ctx.replacing(self._user, file_obj.directory, file_obj.name) as free:
            if not free and os.path.lexists(file_obj.final):
                # the signed bytes are judged and archived as they were at the GO: a late
                # handle must not put other content under that name (issue: unsigned content)
                self._unwatch(file_obj, "name taken by a set being processed")
                file_obj.discard()
                raise self._refused_close(file_obj)
            try:
                st = file_obj.finish()
            except BaseException:
                self._unwatch(file_obj, "upload could not be renamed")
                raise
        size = st.st_size
        if file_obj.name.startswith(("GO.", "TD.")):
            file_obj.account.stale = True  # its set leaves the folders when processed
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
            file_obj.account.stale = True  # the injected fault removed the file
            self.connection.abort()  # an injected "drop-connection": really break the link
            raise
        except asyncssh.SFTPError:
            file_obj.account.stale = True  # an injected "disk-full" removed the file
            raise  # a veto or injected fault chosen by the processor: the client sees it
        except Exception:
            self._ctx.log.exception("%s: processing hand-off failed for %s/%s", self._user,
                                    file_obj.directory, file_obj.name)
            raise asyncssh.SFTPFailure("internal simulator error") from None

    def _refused_close(self, upload: Upload) -> asyncssh.SFTPError:
        """FAILURE for an upload whose name belongs to a set its GO triggered."""
        reason = (f"{upload.name} belongs to a set whose GO was closed and which is being "
                  "processed: this upload was discarded and the file keeps the content it had "
                  "at the GO; send a corrected set under a new sequence number")
        self._ctx.log.warning("%s: close of %s/%s refused: %s", self._user, upload.directory,
                              upload.name, reason)
        return asyncssh.SFTPFailure(reason)

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
        for reader in self._readers:  # asyncssh closed them already; never leave one open
            reader.close()
        self._readers.clear()
        self._closed.clear()
        self._ctx.sessions.get(self._user, weakref.WeakSet()).discard(self)
        # sshd reports the sftp-server's exit status; OpenSSH's scp (SFTP mode) exits 1 when a
        # session ends without one, after a successful transfer
        if not self.channel.is_closing():
            self.channel.exit(0)

    # -- directories --------------------------------------------------------------------------

    def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """OPENDIR: the root and the channel directories, listing only what they serve."""
        # a plain method, not an async generator: asyncssh calls it at OPENDIR and iterates
        # at READDIR, so a refusal here answers the OPENDIR itself, as OpenSSH does
        parts = self._parts(path)
        if len(parts) > 1 or (parts and parts[0] not in CHANNEL_DIRS):
            raise _denied("only the channel directories can be listed")
        self._claim_handle()
        listing = _Listing(self._local(parts), depth=len(parts) + 1)
        self._listings.add(listing)
        return listing

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
        self.map_path(path)
        raise _denied("directories cannot be removed")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """RENAME: refused (a set is named by its uploads)."""
        self.map_path(oldpath)  # so the refusal logs only a path that passed the policy
        self.map_path(newpath)
        raise self._refused("rename", oldpath,
                            f"rename is not allowed on the channel; {_FINAL_NAME}")

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        """posix-rename@openssh.com: refused like RENAME."""
        self.rename(oldpath, newpath)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        """SYMLINK: refused."""
        self.map_path(newpath)
        raise _denied("symbolic links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        """hardlink@openssh.com: refused."""
        self.map_path(oldpath)
        self.map_path(newpath)
        raise _denied("links are not allowed")

    def readlink(self, path: bytes) -> bytes:
        """READLINK: there are no links to read."""
        self.map_path(path)
        raise _denied("symbolic links are not served")

    def realpath(self, path: bytes) -> bytes:
        """REALPATH: the path made absolute in the channel root, never resolved on disk."""
        # asyncssh's default resolves links with os.path.realpath; map_path refuses any link
        # on the path, so the lexical path it checked is the answer
        return self.reverse_map_path(self.map_path(path))

    # -- attributes ---------------------------------------------------------------------------

    def stat(self, path: bytes) -> Any:
        """STAT: what the channel serves (never a link, see map_path); a just-closed upload
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
        if isinstance(file_obj, Upload) and attrs.size is not None:
            self._truncate(file_obj, attrs.size)

    def _truncate(self, upload: Upload, size: int) -> None:
        """Set an upload's size (FSETSTAT with a size)."""
        if size > upload.quota:
            self._reserve(upload, size)  # or FAILURE "quota exceeded"
        upload.pinned = min(upload.pinned, size)
        if upload.watched and (size != upload.hwm or upload.gaps):
            self._unwatch(upload, "upload truncated")
        os.ftruncate(upload.fd, size)
        if not upload.watched:
            upload.hwm = size


def advertise_handle_cap() -> None:
    """Make asyncssh's limits@openssh.com reply carry the session's handle cap.

    asyncssh answers the process's open-file limit, which ``raise_file_limit`` lifts to about a
    million: a client that sizes its parallel transfers by it would hit our cap instead. The
    reply is built per request by a handler of asyncssh's class table (private, hence looked up
    defensively: an asyncssh without the extension, 2.14, simply offers none).
    """
    table = getattr(asyncssh.sftp.SFTPServerHandler, "_packet_handlers", None)
    original = table.get(b"limits@openssh.com") if isinstance(table, dict) else None
    if original is None or getattr(original, "_fla_capped", False):
        return

    async def limits(handler: Any, packet: Any) -> Any:
        reply = await original(handler, packet)
        server = getattr(handler, "_server", None)
        if isinstance(server, ChannelSFTPServer):
            reply = type(reply)(reply.max_packet_len, reply.max_read_len, reply.max_write_len,
                                server.handle_cap())
        return reply

    limits._fla_capped = True  # type: ignore[attr-defined]
    assert table is not None
    table[b"limits@openssh.com"] = limits


def _prescan_step() -> int:
    from fla_sim.prescan import STEP

    return STEP
