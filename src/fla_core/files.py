"""Writing a file whole or not at all, and private files (keys) that are never readable by others.

Both packages write through here: triplets and FS files (``fla_core.triplet``), PEM and PKCS#12
files (``fla_core.pki``), SSH keys (``fla_sim`` home, ``fla demo``, the pytest fixtures).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PRIVATE_MODE = 0o600
# Ordinary files: the process umask decides, as for any file the user creates.
_PUBLIC_MODE = 0o666

Content = bytes | Callable[[BinaryIO], None]


def atomic_write(target: str | Path, content: Content, *, private: bool = False) -> Path:
    """Write ``target`` through a hidden temporary file, fsync, then rename it into place.

    ``content`` is the bytes, or a function writing to the open binary stream. With
    ``private`` the file is created 0600 (the mode is given to ``open(2)``, so there is no
    moment at which others could read it, whatever the umask); the rename also replaces a
    file that was readable by others.
    """
    target = Path(target)
    mode = PRIVATE_MODE if private else _PUBLIC_MODE
    # A unique hidden name: readers of the folder skip dot-files, and a temporary file left
    # by a killed writer never blocks the next one.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb", opener=lambda path, flags: os.open(path, flags, mode)) as out:
            if isinstance(content, bytes):
                out.write(content)
            else:
                content(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_private(target: str | Path, data: bytes) -> Path:
    """Write a private key (or any secret) as a 0600 file, atomically."""
    return atomic_write(target, data, private=True)


def make_private(path: str | Path) -> bool:
    """Take group and other permissions away from an existing file; True when it had some."""
    mode = os.stat(path).st_mode & 0o777
    if not mode & 0o077:
        return False
    os.chmod(path, mode & 0o700)
    return True
