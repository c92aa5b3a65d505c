"""The FI as one byte stream: the byte-concatenation of its parts, in order (spec 5.3 P10)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, cast

Source = Sequence[Path | str] | Path | str | IO[bytes]
CHUNK = 1 << 20  # 1 MiB: few Python calls per document, small memory


def read_full(readinto: Callable[[memoryview], int], size: int) -> bytes:
    """Up to ``size`` bytes from repeated ``readinto`` calls, short only at the end of the data
    (a raw stream may return fewer bytes than asked at any call)."""
    out = bytearray(size)
    view = memoryview(out)
    got = 0
    while got < size:
        n = readinto(view[got:])
        if not n:
            break
        got += n
    del view
    if got < size:
        del out[got:]
    return bytes(out)


class ConcatStream(io.RawIOBase):
    """A readable binary stream over several files, in the given order (spec P10: byte-wise)."""

    def __init__(self, paths: Iterable[Path | str]):
        super().__init__()
        self._paths = [Path(p) for p in paths]
        self._index = 0
        self._current: io.FileIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current file, moving to the next one at its end."""
        view = memoryview(buffer).cast("B")
        while self._index < len(self._paths):
            if self._current is None:
                self._current = open(self._paths[self._index], "rb", buffering=0)  # noqa: SIM115
            n = self._current.readinto(view)
            if n:
                return n
            self._current.close()
            self._current = None
            self._index += 1
        return 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all when negative); short only at the end of the last file."""
        if size is None or size < 0:
            return self.readall()
        if self._current is not None:
            # The usual case: the current file alone fills the request (one copy, no zeroing).
            first = self._current.read(size)
            if first is not None and len(first) == size:
                return first
            if first:
                return first + self._fill(size - len(first))
        return self._fill(size)

    def _fill(self, size: int) -> bytes:
        """Up to ``size`` bytes across files, short only at the end of the last file."""
        return read_full(self.readinto, size)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        super().close()


def open_source(source: Source) -> tuple[IO[bytes], bool]:
    """A binary stream for ``source`` and whether we opened it (and must close it)."""
    # typeshed does not see a RawIOBase as an IO[bytes]; it is one for every use made here.
    if isinstance(source, (str, Path)):
        return cast(IO[bytes], ConcatStream([source])), True
    if not isinstance(source, Sequence):
        return source, False
    return cast(IO[bytes], ConcatStream(source)), True

