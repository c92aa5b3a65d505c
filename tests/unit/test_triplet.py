"""Triplet folders: writing FI/FS/GO and TD with allocated names, reading folders back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fla_core import pki
from fla_core.anomalies import ChannelError
from fla_core.applications.fla import render
from fla_core.formats import ReadContext, csv_format
from fla_core.model import Quality, Sender
from fla_core.signing import Signer, SigningError, TrustStore, verify_fs
from fla_core.triplet import fs_name_for, read_folder, write_fs, write_td, write_triplet

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"
SENDER = Sender("123456", Quality.SOCIAL_SECRETARIAT, "0123456749")
NOW = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca():
    return pki.make_ca(not_before=datetime(2025, 1, 1, tzinfo=UTC), key_type="ec-p256")


@pytest.fixture(scope="module")
def signer(ca):
    return pki.issue_signer(ca, company_id="0123456749", key_type="ec-p256",
                            not_before=datetime(2025, 1, 1, tzinfo=UTC))


def content():
    ctx = ReadContext(sender=SENDER, creation="2026-03-16T09:30:00")
    return csv_format.fla_read_declarations(EXPORTS / "valid.csv", "csv", ctx)


def test_unsigned_triplet_in_test_environment(tmp_path):
    t = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                      render=render)
    assert t.fi.name == "FI.FLAC.123456.20260316.00001.T.1.1"
    assert t.go.name == "GO.FLAC.123456.20260316.00001.T.1"
    assert t.fs is None and t.stem == "FLAC.123456.20260316.00001.T"
    assert t.go.read_bytes() == b""
    assert b"<DeclarationRef>D-0897223670-2025-01</DeclarationRef>" in t.fi.read_bytes()
    # nothing else is visible: temporary files were renamed away
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".fla-seq"))
    assert visible == [t.fi.name, t.go.name]


def test_sequences_are_allocated_and_never_reused(tmp_path):
    first = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                          render=render)
    second = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                           render=render)
    other_env = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="S",
                              render=render)
    assert [t.stem.split(".")[3] for t in (first, second, other_env)] == [
        "00001", "00002", "00001"]
    given = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                          seq="ABCDE", render=render)
    assert given.go.name == "GO.FLAC.123456.20260316.ABCDE.T.1"


def test_signed_triplet_verifies(tmp_path, ca, signer):
    t = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="R",
                      signer=signer.signer(), signing_time=NOW, render=render)
    assert t.fs == tmp_path / "FS.FLAC.123456.20260316.00001.R.1.1"
    fs = t.fs.read_bytes()
    assert b"\n" not in fs  # one line, no terminator (spec 6.7)
    result = verify_fs(t.fi, fs, trust=TrustStore([ca.cert]), at=NOW,
                       sender_company="0123456749")
    assert result.digest_algorithm == "sha256"


def test_fs_policy_is_enforced_before_writing(tmp_path, signer):
    with pytest.raises(ChannelError) as info:
        write_triplet(tmp_path, content(), sender="123456", date="20260316", env="R",
                      render=render)
    assert info.value.code == "122"
    with pytest.raises(ChannelError) as info:
        write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                      signer=signer.signer(), fs_policy={"T": "forbidden"}, render=render)
    assert info.value.code == "121"
    assert list(tmp_path.iterdir()) == []


def test_failed_render_leaves_no_file_and_no_go(tmp_path):
    def broken(content, out):
        out.write(b"<FLAFile")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                      seq="00009", render=broken)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".fla-seq")] == []


def test_failed_signature_removes_the_fi_and_the_folders_it_made(tmp_path, signer):
    broken = Signer(key=object(), cert=signer.cert)  # a key no algorithm can sign with
    out = tmp_path / "outbox" / "2026"
    with pytest.raises(SigningError):
        write_triplet(out, content(), sender="123456", date="20260316", env="T",
                      signer=broken, render=render)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_what_was_there(tmp_path):
    first = write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                          render=render)
    before = sorted(p.name for p in tmp_path.iterdir())

    def broken(content, out):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_triplet(tmp_path, content(), sender="123456", date="20260316", env="T",
                      render=broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert first.fi.is_file() and first.go.is_file()


def test_write_fs_and_td(tmp_path, signer):
    fi = tmp_path / "FI.FLAC.123456.20260316.00003.T.1.1"
    fi.write_bytes(b"<x/>")
    fs = write_fs(fi, signer.signer())
    assert fs == fs_name_for(fi) == tmp_path / "FS.FLAC.123456.20260316.00003.T.1.1"
    td = write_td(tmp_path, sender="123456", date="20260316", seq="00003", env="T")
    assert td.name == "TD.FLAC.123456.20260316.00003.T.1" and td.read_bytes() == b""
    with pytest.raises(ValueError, match="not an FI name"):
        fs_name_for(tmp_path / "GO.FLAC.123456.20260316.00003.T.1")


def test_read_folder_groups_by_stem_and_reports_unknown(tmp_path):
    names = ["FI.FLAC.123456.20260316.00001.T.2.1", "FI.FLAC.123456.20260316.00001.T.2.2",
             "FS.FLAC.123456.20260316.00001.T.2.1", "GO.FLAC.123456.20260316.00001.T.2",
             "TD.FLAC.123456.20260316.00002.T.1", "export.csv", ".hidden.part"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    folder = read_folder(tmp_path)
    assert [s.stem for s in folder.sets] == ["FLAC.123456.20260316.00001.T",
                                             "FLAC.123456.20260316.00002.T"]
    first, second = folder.sets
    assert [p.name for p in first.fi] == names[:2]
    assert len(first.fs) == 1 and len(first.go) == 1 and first.td == []
    assert [p.name for p in second.files] == [names[4]]
    assert [p.name for p in folder.unknown] == ["export.csv"]
