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
from fla_core.files import atomic_write, make_private, write_private

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
