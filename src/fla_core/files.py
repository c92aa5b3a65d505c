"""Writing a file whole or not at all, and private files (keys) that are never readable by others.

The one home of the temporary-write-then-rename primitive (:func:`write_via_temp`) and of its
durability choice: ``durable=True`` fsyncs the file before the rename and (in
:func:`atomic_write`) the directory after it, so the file survives a power cut;
``durable=False`` skips both, and the file survives a kill of the process (the page cache
keeps it) but not a power cut. Both packages write through here: triplets and FS files
(``fla_core.triplet``), PEM and PKCS#12 files (``fla_core.pki``), SSH keys (``fla_sim`` home,
``fla demo``, the pytest fixtures), the sequence state (``fla_core.names``), the resume state
of ``fla send`` (``fla_core.transport``) and the simulator's answers (``fla_sim.answers``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_MODE = 0o600
# Ordinary files: the process umask decides, as for any file the user creates.
_PUBLIC_MODE = 0o666

Content = bytes | Callable[[BinaryIO], None]


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory, so that the names renamed or created in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_via_temp(path: str, temp: str, content: Content, *, durable: bool,
                   mode: int = _PUBLIC_MODE, exclusive: bool = False) -> None:
    """Write ``content`` to ``temp``, fsync it when ``durable``, then rename it to ``path``.

    The primitive under every atomic write: plain string paths and raw system calls, since the
    simulator runs it for each answer file on its event loop. ``temp`` must be in the directory
    of ``path``. It is created with ``mode`` (given to ``open(2)``: no moment at which the file
    has another one); ``exclusive`` refuses an existing ``temp`` (a unique name), otherwise a
    leftover of a killed writer is truncated and reused (a fixed name). On any failure the
    temporary file is removed and ``path`` is untouched. The directory is *not* fsynced: the
    caller does it once with :func:`fsync_directory` (:func:`atomic_write` does).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(temp, flags, mode)
    except FileExistsError:  # someone else's unique name: not ours to remove
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    try:
        if isinstance(content, bytes):
            try:
                view = memoryview(content)
                while view:  # short writes are rare on regular files, but possible
                    view = view[os.write(fd, view):]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with open(fd, "wb") as out:
                content(out)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # a full disk must not leave a half file
            os.unlink(temp)
        raise


def atomic_write(target: str | Path, content: Content, *, durable: bool = True,
                 private: bool = False) -> Path:
    """Write ``target`` through a hidden temporary file, then rename it into place.

    ``content`` is the bytes, or a function writing to the open binary stream. ``durable``
    fsyncs the file before the rename and its directory after it (see the module docstring).
    With ``private`` the file is created 0600 (the mode is given to ``open(2)``, so there is
    no moment at which others could read it, whatever the umask); the rename also replaces a
    file that was readable by others.
    """
    target = Path(target)
    # A unique hidden name: readers of the folder skip dot-files, and a temporary file left
    # by a killed writer never blocks the next one.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    write_via_temp(os.fspath(target), os.fspath(tmp), content, durable=durable,
                   mode=PRIVATE_MODE if private else _PUBLIC_MODE, exclusive=True)
    if durable:
        fsync_directory(target.parent)
    return target


@contextlib.contextmanager
def path_then_rename(target: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A hidden temporary path beside ``target`` for a writer that needs a path, not a stream
    (a library that writes its own file: openpyxl, a format plugin): renamed over ``target``
    when the block ends, removed when it raises. The temporary name keeps ``target``'s
    suffix, which such writers may look at."""
    target = Path(target)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.part{target.suffix}")
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
        if durable:
            fsync_directory(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_private(target: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Write a private key (or any secret) as a 0600 file, atomically."""
    return atomic_write(target, data, durable=durable, private=True)


def make_private(path: str | Path) -> bool:
    """Take group and other permissions away from an existing file; True when it had some."""
    mode = os.stat(path).st_mode & 0o777
    if not mode & 0o077:
        return False
    os.chmod(path, mode & 0o700)
    return True
