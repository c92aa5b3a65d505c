"""Writing an answer triplet FO (or CO) + FS + GO atomically (spec 4.8, 6.7; design 6).

Each file is written under a hidden temporary name, then renamed, the GO last, so a client that
waits for the GO never reads half an answer. After a crash the same answer is written again: a
file already present under its final name is complete (rename is atomic) and is kept, so no
answer file is ever doubled or rewritten with other bytes.

A renamed file is in the OS page cache, which survives a kill of the simulator process; with
``durable=True`` (``[server] durability = "power"``) each file and the directory are also
fsynced, so the answer survives a power cut too.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fla_core.signing import Signer, encode_fs, sign_stream

TEMP_PREFIX = ".answer-"
CORRUPTION = b"<!-- altered after signing (injected fault) -->\n"

# A hook for fault injection (disk full): called with the final path before each file is written.
BeforeWrite = Callable[[Path], None]


class AnswerConflict(RuntimeError):
    """An answer file exists with other bytes than the journal planned: never overwritten."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes, before_write: BeforeWrite | None,
                  durable: bool = True) -> bool:
    """Write ``data`` to ``path`` via a temp name; False when ``path`` already exists."""
    if path.exists():
        return False
    if before_write is not None:
        before_write(path)
    temp = path.with_name(TEMP_PREFIX + path.name)
    try:
        with open(temp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)  # a full disk must not leave a half file behind
        raise
    return True


def answer_names(name_fo: str) -> tuple[str, str]:
    """The FS and GO names of an answer whose FO (or CO) is ``name_fo``."""
    tail = name_fo.split(".", 1)[1]
    return f"FS.{tail}", f"GO.{tail}"


def write_answer(directory: str | Path, name_fo: str, data: bytes, signer: Signer, *,
                 signing_time: datetime | None = None,
                 before_write: BeforeWrite | None = None, corrupt: bool = False,
                 durable: bool = True) -> list[Path]:
    """Write FO/CO, its FS (signed with ``signer``) and the GO; return the paths now present.

    Idempotent: files already present are kept (an existing FO must hold the same bytes).
    ``corrupt`` (fault injection) writes altered FO bytes under the FS of the right ones.
    ``durable`` fsyncs every file and the directory (survives a power cut, not only a kill).
    """
    directory = Path(directory)
    fo = directory / name_fo
    fs_name, go_name = answer_names(name_fo)
    written = data + CORRUPTION if corrupt else data
    if fo.exists() and fo.read_bytes() != written:
        raise AnswerConflict(f"{fo} exists with other content; refusing to overwrite an answer")
    _write_atomic(fo, written, before_write, durable)
    fs = directory / fs_name
    if not fs.exists():
        der = sign_stream(io.BytesIO(data), signer, signing_time=signing_time)
        _write_atomic(fs, encode_fs(der), before_write, durable)
    go = directory / go_name
    _write_atomic(go, b"", before_write, durable)
    if durable:
        _fsync_dir(directory)
    return [fo, fs, go]
