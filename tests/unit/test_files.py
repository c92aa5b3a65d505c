"""``fla_core.files``: whole-or-nothing writes, and private files no one else can read."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest

from fla_core import pki
from fla_core.files import atomic_write, make_private, write_private, write_via_temp

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: any mode we see is the one the code asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_0600_while_it_is_written(tmp_path: Path, open_umask: None) -> None:
    seen = []

    def write(stream: BinaryIO) -> None:
        seen.append(stat.S_IMODE(os.fstat(stream.fileno()).st_mode))  # before any byte
        stream.write(b"secret")

    target = atomic_write(tmp_path / "key.pem", write, private=True)
    assert seen == [0o600]
    assert mode(target) == 0o600 and target.read_bytes() == b"secret"


def test_a_private_file_replaces_one_others_could_read(tmp_path: Path, open_umask: None) -> None:
    target = tmp_path / "id_ed25519"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert mode(target) == 0o600 and target.read_bytes() == b"new"


def test_an_ordinary_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = atomic_write(tmp_path / "cert.pem", b"public")
    finally:
        os.umask(old)
    assert mode(target) == 0o644


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path) -> None:
    def fail(stream: BinaryIO) -> None:
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "FI", fail)
    assert list(tmp_path.iterdir()) == []


def test_make_private_takes_group_and_other_bits_away(tmp_path: Path) -> None:
    path = tmp_path / "host_key"
    path.write_bytes(b"k")
    path.chmod(0o644)
    assert make_private(path) is True and mode(path) == 0o600
    assert make_private(path) is False and mode(path) == 0o600


def test_pki_keys_and_pkcs12_are_private_certificates_are_not(tmp_path: Path,
                                                             open_umask: None) -> None:
    ca = pki.make_ca(not_before=T0)
    ck = pki.issue_signer(ca, company_id="0123456749", not_before=T0)
    assert mode(pki.write_pem(tmp_path / "key.pem", ck.key)) == 0o600
    assert mode(pki.write_pem(tmp_path / "enc-key.pem", ck.key, password=b"pw")) == 0o600
    assert mode(pki.write_pkcs12(tmp_path / "s.p12", ck, b"pw")) == 0o600
    assert mode(pki.write_pem(tmp_path / "cert.pem", ck.cert)) == 0o666


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``os.fsync`` was called on: "file" or "dir"."""
    seen: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        seen.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return seen


@pytest.mark.parametrize("content", [b"data", lambda stream: stream.write(b"data")])
def test_durable_fsyncs_the_file_and_its_folder(tmp_path: Path, fsyncs: list[str],
                                                content: object) -> None:
    target = atomic_write(tmp_path / "FI", content, durable=True)  # type: ignore[arg-type]
    assert fsyncs == ["file", "dir"] and target.read_bytes() == b"data"


def test_not_durable_fsyncs_nothing(tmp_path: Path, fsyncs: list[str]) -> None:
    target = atomic_write(tmp_path / "state", b"data", durable=False)
    assert fsyncs == [] and target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_a_fixed_temporary_name_left_by_a_crash_is_reused(tmp_path: Path) -> None:
    (tmp_path / ".tmp-x").write_bytes(b"half of a longer file")
    write_via_temp(str(tmp_path / "x"), str(tmp_path / ".tmp-x"), b"whole", durable=False)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]
    assert (tmp_path / "x").read_bytes() == b"whole"


def test_every_atomic_write_goes_through_fla_core_files() -> None:
    """One temp-write-rename primitive: ``os.replace`` elsewhere is a move, not a write."""
    src = Path(__file__).resolve().parents[2] / "src"
    allowed = {
        "fla_core/files.py",  # the primitive
        "fla_sim/uploads.py",  # an upload's hidden name renamed when its client closes it
        "fla_sim/archive.py",  # processed sets moved to the archive
    }
    users = {str(p.relative_to(src)) for p in src.rglob("*.py") if "os.replace(" in p.read_text()}
    assert users <= allowed, users - allowed


def test_a_path_writer_replaces_the_target_whole_or_not_at_all(tmp_path: Path) -> None:
    from fla_core.files import path_then_rename

    target = tmp_path / "export.xlsx"
    target.write_bytes(b"old")
    with path_then_rename(target) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".xlsx" and temp.name.startswith(".")
        temp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible before the end
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), path_then_rename(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.xlsx"]  # no temp left
