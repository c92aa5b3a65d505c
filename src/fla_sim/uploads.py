"""The uploads of the SFTP sessions (spec 3.3; design 6): what a channel's folders hold and what
is being written into them.

An upload is written under a hidden temporary name (``TEMP_PREFIX``) and renamed to its real
name when the client closes it (:class:`Upload`). What a channel holds in IN* is counted by its
:class:`ChannelQuota`, in bytes and in files, at each write across all its sessions. Continuing
an existing file copies its bytes in worker threads (:func:`copier`, :func:`copy_prefix`), never
on the event loop. The SFTP requests that drive all this are in :mod:`fla_sim.sftp_session`.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncssh

from fla_core import model
from fla_core.anomalies import ChannelError
from fla_core.names import check_shape

UPLOAD_DIRS = frozenset(model.UPLOAD_DIRS)  # the one table: fla_core.model.Environment's
TEMP_PREFIX = ".upload-"
HIDDEN = "."  # simulator temp files (.upload-*, .answer-*): never listed, served or writable
# the quota (ChannelQuota): bytes an upload reserves beyond a write, so that WRITE's fast path
# stays two comparisons; a refusal first takes every upload back to the bytes it holds
GRANT = 4 << 20
RESCAN_S = 0.5  # before refusing, the upload folders are read again at most this often


class ChannelQuota:
    """The quota of one channel, shared by all its sessions: what its upload folders hold.

    Completed files: the counted size of each file in IN* (0 for a name that can never be part
    of a set: its sender cannot remove it), read from the folders, then followed by every
    OPEN (its stat of the name) and CLOSE. Files leave behind the server's back (the processor
    archives a set after its GO or TD, sweeps orphans): the folders are read again at the next
    OPEN after a GO or TD was closed, and before any refusal at most every ``RESCAN_S``; in
    between the count can only be too high, never too low. Uploads in progress: each holds a
    reservation (``Upload.quota``), never below the bytes of its temp file, grown at WRITE by
    up to ``GRANT`` ahead and taken back to those bytes before anything is refused.

    An upload that replaces a file is counted for the bytes it adds beyond that file and as no
    new file (its *credit*; one upload per name at a time holds it), so a file can be
    overwritten before its GO by a bigger one up to the quota: while such uploads are open the
    folders may hold the replaced files' bytes on top of the quota.
    """

    __slots__ = ("credits", "live", "root", "scanned", "sizes", "stale", "total")

    def __init__(self, root: str):
        self.root = root
        self.sizes: dict[tuple[str, str], int] = {}  # (directory, name) -> counted bytes
        self.total = 0  # their sum
        self.live: set[Upload] = set()  # the uploads in progress of every session
        self.credits: dict[tuple[str, str], Upload] = {}  # the upload replacing each name
        self.scanned = -math.inf  # monotonic time of the last reading of the folders
        self.stale = True  # files may have left since: read them at the next OPEN

    def scan(self) -> None:
        """Read the upload folders (temp files are counted from the uploads in progress)."""
        sizes: dict[tuple[str, str], int] = {}
        for directory in UPLOAD_DIRS:
            with os.scandir(os.path.join(self.root, directory)) as entries:
                for entry in entries:
                    if not entry.name.startswith(HIDDEN):
                        size = _size_if_present(entry)
                        if size is not None:
                            sizes[(directory, entry.name)] = _counted(entry.name, size)
        self.sizes, self.total = sizes, sum(sizes.values())
        self.scanned, self.stale = time.monotonic(), False

    def recount(self) -> None:
        """Before a refusal: every reservation back to its bytes, the folders read again."""
        for upload in self.live:
            held = max(os.fstat(upload.fd).st_size, upload.pinned)
            if held < upload.quota:
                upload.quota = held
                upload.bound()
        if time.monotonic() - self.scanned >= RESCAN_S:
            self.scan()

    def saw(self, key: tuple[str, str], size: int | None) -> None:
        """A completed file of that name has ``size`` bytes now (None: there is none)."""
        old = self.sizes.pop(key, None)
        if old is not None:
            self.total -= old
        if size is not None:
            self.sizes[key] = counted = _counted(key[1], size)
            self.total += counted

    def replaced(self, upload: Upload) -> int | None:
        """The counted bytes of the file ``upload`` replaces, when it holds that credit."""
        key = (upload.directory, upload.name)
        return self.sizes.get(key) if self.credits.get(key) is upload else None

    def used(self, without: Upload | None = None) -> tuple[int, int]:
        """Bytes and files counted against the quota, all uploads in progress but ``without``."""
        total, files = self.total, len(self.sizes)
        for upload in self.live:
            if upload is not without:
                replaced = self.replaced(upload)
                if replaced is None:
                    total, files = total + upload.quota, files + 1
                else:
                    total += max(0, upload.quota - replaced)
        return total, files

    def add(self, upload: Upload) -> None:
        self.live.add(upload)
        key = (upload.directory, upload.name)
        if key in self.sizes and key not in self.credits:
            self.credits[key] = upload

    def release(self, upload: Upload, size: int | None = None) -> None:
        """An upload ended; ``size``: it now is the completed file of its name."""
        self.live.discard(upload)
        key = (upload.directory, upload.name)
        if self.credits.get(key) is upload:
            del self.credits[key]
        if size is not None:
            self.saw(key, size)


class Upload:
    """An upload in progress: a hidden temp file renamed to ``final`` on close."""

    __slots__ = ("account", "append", "directory", "failed", "fd", "final", "follower", "gaps",
                 "hwm", "limit", "mark", "name", "pinned", "quota", "temp", "watched")

    def __init__(self, fd: int, temp: str, final: str, directory: str, name: str,
                 account: ChannelQuota):
        self.fd = fd
        self.temp = temp
        self.final = final
        self.directory = directory
        self.name = name
        self.account = account
        # bytes reserved against the channel quota (ChannelQuota): the highest end offset WRITE may
        # reach without asking for more; never below the bytes the temp file holds
        self.quota = 0
        self.pinned = 0  # bytes the temp file holds for sure (an existing file's, being copied)
        # WRITE's fast path bound: the reservation, lowered to the next pre-scan mark or gap
        self.limit = 0
        self.hwm = 0  # end of the contiguous prefix written so far
        self.failed = False  # a write was refused: the file is incomplete, never announce it
        # opened with APPEND: every write goes to the end (ChannelSFTPServer._open_upload)
        self.append = False
        # pre-scan (fla_sim.prescan): on for an FI that may get big, until anything odd happens
        self.watched = False
        self.mark = 0  # prefix length at which the follower is started, then told of progress
        self.gaps: list[tuple[int, int]] = []  # ranges written beyond the prefix (out of order)
        self.follower: Any = None

    def bound(self) -> None:
        """Set WRITE's fast path bound from the reservation and the pre-scan state."""
        if self.append:
            # every write goes to ChannelSFTPServer._write_noted (a bound below any end), which
            # puts it at the end
            self.limit = -1
        elif self.watched:
            self.limit = min(self.quota, self.mark - 1, *(start - 1 for start, _ in self.gaps))
        else:
            self.limit = self.quota

    def fileno(self) -> int:
        return self.fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Refused: an upload's handle is write-only."""
        # asyncssh's ranges@asyncssh.com handler seeks the handle object itself (no server
        # method to override); without this it answered "Uncaught exception"
        raise asyncssh.SFTPPermissionDenied("uploads cannot be read back")

    def finish(self) -> os.stat_result:
        """Close the temp file and rename it over the real name; return its fstat."""
        st = os.fstat(self.fd)
        os.close(self.fd)
        self.fd = -1
        try:
            os.replace(self.temp, self.final)  # last write wins: overwrite before GO
        except OSError:
            # e.g. a name too long for the file system: a stray temp file would stay forever
            # and count against the channel quota
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp)
            self.account.release(self)
            raise
        self.account.release(self, st.st_size)
        return st

    def discard(self) -> None:
        """Close and delete the temp file: the upload never completed."""
        os.close(self.fd)
        self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)
        self.account.release(self)


def _size_if_present(entry: os.DirEntry[str]) -> int | None:
    """Size of a regular file of a listing; None for anything else, or when it vanished since
    (archived, renamed)."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return None


def _counted(name: str, size: int) -> int:
    """The bytes of a completed upload the quota counts."""
    # a file that can never be part of a set waits only for the orphan sweep and its sender
    # cannot remove it: it must not block the next upload (it still counts as a file)
    return 0 if never_in_a_set(name) else size


def never_in_a_set(name: str) -> str | None:
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


_COPIER: ThreadPoolExecutor | None = None


def copier() -> ThreadPoolExecutor:
    """The threads that copy existing files for uploads that continue them (never the loop:
    a GiB took ~0.8 s, and every session waited)."""
    global _COPIER
    if _COPIER is None:
        _COPIER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fla-sim-copy")
    return _COPIER


def copy_prefix(src: int, dst: int, size: int) -> int:
    """Copy the first ``size`` bytes of ``src`` into ``dst`` (a worker thread); returns the
    bytes copied. Closes both descriptors, which are this copy's own."""
    try:
        copied = 0
        copy_range = getattr(os, "copy_file_range", None)  # in the kernel, a reflink if it can
        try:
            while copy_range is not None and copied < size:
                n = copy_range(src, dst, size - copied, copied, copied)
                if n == 0:
                    return copied
                copied += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
        while copied < size:
            chunk = os.pread(src, min(1 << 20, size - copied), copied)
            if not chunk:
                break
            copied += pwrite_all(dst, chunk, copied)
        return copied
    finally:
        os.close(src)
        os.close(dst)


def pwrite_all(fd: int, data: bytes, offset: int) -> int:
    """Write all of ``data`` at ``offset``; returns its length."""
    written = os.pwrite(fd, data, offset)
    while written < len(data):  # short writes are rare on regular files, but possible
        written += os.pwrite(fd, memoryview(data)[written:], offset + written)
    return written
