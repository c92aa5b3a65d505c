"""Write a triplet (FI, FS, GO) or a TD to a folder, and read a folder back as sets (spec 4, 5).

Files are written under a hidden temporary name and renamed when complete
(``fla_core.files.atomic_write``, durable: file and folder fsynced), in upload order
(FI, FS, then GO), so that a folder watcher or ``fla send`` never sees a half-written FI or a GO
before its parts. The FI is rendered as a stream: its size never sits in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from fla_core.anomalies import ChannelError
from fla_core.files import atomic_write
from fla_core.identifiers import SENDER_PATTERN
from fla_core.model import FileContent
from fla_core.names import SequenceAllocator, date_text, stem_of, upload_name, with_prefix
from fla_core.settings import DEFAULT_FS_POLICY

SEQUENCES_FILE = ".fla-sequences"
Renderer = Callable[[FileContent, BinaryIO], None]
_SET_NAME = re.compile(r"(FI|FS|GO|TD)\.([A-Z0-9]{4}\." + SENDER_PATTERN
                       + r"\.[0-9]{8}\.[0-9A-Z]{5}\.[RTS])(\..*)?")


@dataclass(frozen=True)
class Triplet:
    """The files of one written set; ``fs`` is None when the set was not signed."""

    fi: Path
    fs: Path | None
    go: Path

    @property
    def stem(self) -> str:
        """``APPL.SENDER.DATE.SEQ.ENV``."""
        stem = stem_of(self.go.name)
        if stem is None:  # never: the GO is one write_triplet named
            raise ValueError(f"{self.go.name} is not a GO name")
        return stem


@dataclass
class FileSet:
    """Files of one folder sharing a stem (spec 4.1), each list in ASCII order."""

    stem: str
    fi: list[Path] = field(default_factory=list)
    fs: list[Path] = field(default_factory=list)
    go: list[Path] = field(default_factory=list)
    td: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file of the set: FI, FS, GO, TD."""
        return [*self.fi, *self.fs, *self.go, *self.td]


@dataclass
class Folder:
    """A folder read as sets; ``unknown`` holds files whose name is not an upload name."""

    sets: list[FileSet]
    unknown: list[Path]


def _default_renderer(appl: str) -> Renderer:
    from fla_core.plugins import get_plugins  # the CLI's manager; tests pass render=

    for app in get_plugins().applications():
        if app.code == appl:
            return app.render
    raise ChannelError("154", f"no installed application plugin renders {appl} files")


def allocate_seq(out_dir: Path, sender: str, date: str, env: str,
                 state: Path | None = None) -> str:
    """Next unused sequence for (sender, date, env), kept in ``out_dir/.fla-sequences``."""
    return SequenceAllocator(state or Path(out_dir) / SEQUENCES_FILE).allocate(sender, date, env)


def write_triplet(out_dir: str | Path, content: FileContent, *, sender: str, date: str | Date,
                  env: str, appl: str = "FLAC", seq: str | None = None,
                  signer: object | None = None, signing_time: datetime | None = None,
                  fs_policy: Mapping[str, str] = DEFAULT_FS_POLICY,
                  render: Renderer | None = None, state: Path | None = None) -> Triplet:
    """Render ``content`` as an FI, sign it when ``signer`` is given, then write the GO.

    The environment's FS policy applies: ``required`` without signer raises ChannelError 122,
    ``forbidden`` with a signer raises 121, before anything is written. A failure later (bad
    input while rendering, signing) removes what this call created: its files, the sequence
    state when it was new, and the folders of ``out_dir`` it made; nothing that was there before.
    """
    out = Path(out_dir)
    policy = fs_policy.get(env, "optional")
    if policy == "required" and signer is None:
        raise ChannelError("122", f"environment {env} requires a signature (FS): give a key and "
                                  "certificate or a PKCS#12 file")
    if policy == "forbidden" and signer is not None:
        raise ChannelError("121", f"environment {env} forbids signatures (FS)")
    created = _missing_folders(out)
    out.mkdir(parents=True, exist_ok=True)
    allocator = SequenceAllocator(state or out / SEQUENCES_FILE)
    # What a failure removes: only files this call creates, never ones that were already there.
    written = [p for p in (allocator.state_path, allocator.lock_path) if not p.exists()]
    try:
        day = date_text(date)
        seq = seq or allocator.allocate(sender, day, env)
        fi = out / upload_name("FI", appl, sender, day, seq, env, 1, 1)
        renderer = render or _default_renderer(appl)
        written.append(atomic_write(fi, lambda stream: renderer(content, stream), durable=True))
        fs = None
        if signer is not None:
            # a failed signature removes the FI too: never an unsigned FI where a signed one is due
            fs = write_fs(fi, signer, signing_time=signing_time)
            written.append(fs)
        go = atomic_write(out / upload_name("GO", appl, sender, day, seq, env, 1), b"",
                          durable=True)
    except BaseException:
        _remove(written, created)
        raise
    return Triplet(fi=fi, fs=fs, go=go)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of ``folder`` (itself and its parents) that do not exist yet, deepest first."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove(files: list[Path], folders: list[Path]) -> None:
    """Undo a failed write: the files it created, then the folders it created while empty."""
    for path in files:
        path.unlink(missing_ok=True)
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: something else writes there too, leave it and its parents


def fs_name_for(fi: Path) -> Path:
    """The FS path beside an FI: the same name with the ``FS`` prefix."""
    if not fi.name.startswith("FI."):
        raise ValueError(f"{fi.name}: not an FI name (it must start with 'FI.')")
    return fi.with_name(with_prefix(fi.name, "FS"))


def write_fs(fi: Path, signer: object, *, signing_time: datetime | None = None,
             digest: str = "sha256") -> Path:
    """Sign an FI part (streamed digest) and write its FS beside it."""
    from fla_core.signing import encode_fs, sign_file

    der = sign_file(fi, signer, digest=digest, signing_time=signing_time)  # type: ignore[arg-type]
    return atomic_write(fs_name_for(Path(fi)), encode_fs(der), durable=True)


def write_td(out_dir: str | Path, *, sender: str, date: str | Date, seq: str, env: str,
             appl: str = "FLAC", total: int = 1) -> Path:
    """Write an empty TD that cancels the set with this stem (spec 5.5)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = upload_name("TD", appl, sender, date, seq, env, total)
    return atomic_write(out / name, b"", durable=True)


def read_folder(directory: str | Path) -> Folder:
    """Group the files of a folder by stem; hidden files (temporary, state) are ignored."""
    sets: dict[str, FileSet] = {}
    unknown: list[Path] = []
    for path in sorted(Path(directory).iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _SET_NAME.fullmatch(path.name)
        if match is None:
            unknown.append(path)
            continue
        prefix, stem = match.group(1), match.group(2)
        group = sets.setdefault(stem, FileSet(stem))
        getattr(group, prefix.lower()).append(path)
    return Folder(sets=list(sets.values()), unknown=unknown)
