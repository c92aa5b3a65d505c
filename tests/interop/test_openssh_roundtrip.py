"""A sender with nothing but OpenSSH and openssl against the running simulator (spec 6, 9.1.1).

The FI is written by hand (the spec 7.2 text), signed with ``openssl cms``, uploaded and the
answers downloaded with OpenSSH ``sftp -b``; the answers' signatures are checked with
``openssl cms -verify`` against the simulator's CA. No project code touches the sending side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from fla_core import pki
from fla_core.responses import Acrf, Noti, parse_answer
from fla_sim.pytest_plugin import FixedClock

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH sftp client not installed"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
]

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
DAY = "20260316"
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"

# spec 7.2, typed as a sender would: header SenderNbr 123456 / T / SOCIAL_SECRETARIAT / 0123456749
FI_TEXT = """\
<?xml version="1.0" encoding="UTF-8"?>
<FLAFile xmlns="urn:be:fgov:socialsecurity:fla:v1">
  <FileHeader>
    <SenderNbr>123456</SenderNbr>
    <SenderQuality>SOCIAL_SECRETARIAT</SenderQuality>
    <SenderCompanyID>0123456749</SenderCompanyID>
    <Environment>T</Environment>
    <CreationDateTime>2026-03-16T09:30:00</CreationDateTime>
    <FileReference>ACME-2026-0001</FileReference>
  </FileHeader>
  <Declaration>
    <DeclarationRef>D-0897223670-2025-01</DeclarationRef>
    <Action>NEW</Action>
    <ReportingYear>2025</ReportingYear>
    <Employer>
      <CompanyID>0897223670</CompanyID>
      <NOSSRegistrationNbr>042979535</NOSSRegistrationNbr>
    </Employer>
    <Worker>
      <INSS>93051822361</INSS>
      <Training>
        <TrainingRef>TR-2025-001</TrainingRef>
        <ProviderCompanyID>0566988259</ProviderCompanyID>
        <Title>Forklift safety refresher</Title>
        <TrainingType>FORMAL</TrainingType>
        <StartDate>2025-03-03</StartDate>
        <EndDate>2025-03-05</EndDate>
        <Hours>21.00</Hours>
        <DuringWorkingTime>true</DuringWorkingTime>
      </Training>
    </Worker>
    <Worker>
      <INSS>00012556777</INSS>
      <Training>
        <TrainingRef>TR-2025-002</TrainingRef>
        <Title>Shadowing a senior planner</Title>
        <TrainingType>INFORMAL</TrainingType>
        <StartDate>2025-06-10</StartDate>
        <EndDate>2025-06-10</EndDate>
        <Hours>3.50</Hours>
        <DuringWorkingTime>true</DuringWorkingTime>
      </Training>
    </Worker>
  </Declaration>
  <Declaration>
    <DeclarationRef>D-0897223670-2025-02</DeclarationRef>
    <Action>CANCEL</Action>
    <ReplacedDeclarationRef>D-0897223670-2024-07</ReplacedDeclarationRef>
    <ReportingYear>2024</ReportingYear>
    <Employer>
      <CompanyID>0897223670</CompanyID>
    </Employer>
  </Declaration>
</FLAFile>
"""


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(AT)


def run(args: list[str], cwd: Path, *, ok: bool = True) -> subprocess.CompletedProcess:
    """Run an external tool; unless ``ok`` is False a failure fails the test with its stderr."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, timeout=60, check=False)
    if ok:
        assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}): {proc.stderr!r}"
    return proc


def sftp_batch(sim, channel, batch: str, cwd: Path) -> str:
    """Run OpenSSH ``sftp -b <batch file>`` as the channel's user; returns its stdout."""
    # no chmod: the fixture writes the key 0600, and OpenSSH ignores one others can read
    batch_file = cwd / "batch.sftp"
    batch_file.write_text(batch)
    return run(["sftp", "-b", str(batch_file), "-P", str(sim.port), "-i", str(channel.ssh_key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR",
                f"{channel.user}@127.0.0.1"], cwd).stdout.decode()


def signer_files(fla_pki, channel, work: Path) -> tuple[Path, Path]:
    """Certificate and key PEM files of a signer for the channel's enterprise number.

    openssl stamps the real time as signingTime, which the simulator checks (S7) while its
    clock stays on the fixed day: the certificate must cover both, for years to come.
    """
    ck = fla_pki.signer(channel.company, not_after=AT + timedelta(days=3000))
    cert, key = work / "signer-cert.pem", work / "signer-key.pem"
    cert.write_bytes(ck.cert.public_bytes(Encoding.PEM))
    pki.write_pem(key, ck.key)
    return cert, key


def openssl_sign(fi: Path, signer: tuple[Path, Path], work: Path) -> Path:
    """The FS of ``fi``: ``openssl cms -sign`` (DER, detached) then ``openssl base64 -A``."""
    cert, key = signer
    der = work / (fi.name + ".der")
    run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER",
         "-signer", str(cert), "-inkey", str(key), "-in", str(fi),
         "-out", str(der)], work)
    fs = fi.with_name("FS." + fi.name[3:])
    run(["openssl", "base64", "-A", "-in", str(der), "-out", str(fs)], work)
    return fs


def openssl_verify(answer: Path, ca: Path, work: Path, content: Path | None = None) -> bool:
    """``openssl cms -verify`` of an answer (or other ``content``) against the answer's FS."""
    fs = answer.with_name("FS." + answer.name[3:])
    der = work / (fs.name + ".der")
    run(["openssl", "base64", "-d", "-A", "-in", str(fs), "-out", str(der)], work)
    return run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(der),
                "-content", str(content or answer), "-CAfile", str(ca), "-purpose", "any",
                "-out", os.devnull], work, ok=False).returncode == 0


def test_hand_written_fi_signed_by_openssl_round_trips_through_openssh(
        fla_sim, fla_channel, fla_sim_home, fla_pki, tmp_path):
    assert FI_TEXT.encode() == FIXTURE.read_bytes()  # the fixture is the spec text
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir()
    inbox.mkdir()
    stem = f"FLAC.123456.{DAY}.00001.T"
    fi = outbox / f"FI.{stem}.1.1"
    fi.write_text(FI_TEXT, encoding="utf-8", newline="\n")
    fs = openssl_sign(fi, signer_files(fla_pki, fla_channel, tmp_path), tmp_path)
    go = outbox / f"GO.{stem}.1"
    go.write_bytes(b"")

    sftp_batch(fla_sim, fla_channel,
               f"put {fi.name} INTEST/\nput {fs.name} INTEST/\nput {go.name} INTEST/\n", outbox)
    fla_sim.drain()
    listing = sftp_batch(fla_sim, fla_channel, "ls -1 OUTTEST\nget OUTTEST/* .\n", inbox)

    expected = sorted(f"{p}.{a}.999999.{DAY}.{n}.T" for p in ("FO", "FS", "GO")
                      for a, n in (("ACRF", "00001"), ("NOTI", "00002")))
    # stdout echoes the batch commands ("sftp> get OUTTEST/* ."): keep the listed names only
    assert sorted(word[len("OUTTEST/"):] for word in listing.split()
                  if word.startswith("OUTTEST/") and "*" not in word) == expected
    assert sorted(p.name for p in inbox.iterdir() if p.name != "batch.sftp") == expected

    acrf = parse_answer((inbox / f"FO.ACRF.999999.{DAY}.00001.T").read_bytes())
    noti = parse_answer((inbox / f"FO.NOTI.999999.{DAY}.00002.T").read_bytes())
    assert isinstance(acrf, Acrf) and acrf.accepted and acrf.file_name == go.name
    assert isinstance(noti, Noti) and noti.file_name == go.name and noti.ticket == acrf.ticket
    assert noti.result_code == 2 and noti.file_warnings == []
    # spec 8.5 row 1
    assert [(d.declaration_ref, d.status, [(a.error_id, a.anomaly_class) for a in d.anomalies])
            for d in noti.declarations] == [
        ("D-0897223670-2025-01", "ACCEPTED", [("00104-960", "W")]),
        ("D-0897223670-2025-02", "REJECTED", [("00103-944", "B"), ("00104-960", "W")]),
    ]
    for name in (f"FO.ACRF.999999.{DAY}.00001.T", f"FO.NOTI.999999.{DAY}.00002.T"):
        assert openssl_verify(inbox / name, fla_sim_home.ca_cert_path, tmp_path), name
    # the oracle is not a rubber stamp: one changed byte of an answer fails it
    tampered = tmp_path / "tampered"
    tampered.write_bytes((inbox / expected[0]).read_bytes().replace(b"<ResultCode>1",
                                                                    b"<ResultCode>0"))
    assert tampered.read_bytes() != (inbox / expected[0]).read_bytes()
    assert not openssl_verify(inbox / expected[0], fla_sim_home.ca_cert_path, tmp_path,
                              content=tampered)


def test_production_set_without_fs_is_answered_122_in_out(fla_sim, fla_channel, tmp_path):
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir()
    inbox.mkdir()
    stem = f"FLAC.123456.{DAY}.00001.R"
    fi = outbox / f"FI.{stem}.1.1"
    fi.write_text(FI_TEXT.replace("<Environment>T</Environment>",
                                  "<Environment>R</Environment>"), encoding="utf-8")
    go = outbox / f"GO.{stem}.1"
    go.write_bytes(b"")

    sftp_batch(fla_sim, fla_channel, f"put {fi.name} IN/\nput {go.name} IN/\n", outbox)
    fla_sim.drain()
    sftp_batch(fla_sim, fla_channel, "get OUT/* .\n", inbox)

    expected = sorted(f"{p}.ACRF.999999.{DAY}.00001.R" for p in ("FO", "FS", "GO"))
    assert sorted(p.name for p in inbox.iterdir() if p.name != "batch.sftp") == expected
    acrf = parse_answer((inbox / expected[0]).read_bytes())
    assert isinstance(acrf, Acrf) and not acrf.accepted
    assert acrf.error_id == "ACRF-122" and acrf.file_name == go.name
    assert fla_sim.answers(fla_channel.user, "OUTTEST") == []


@pytest.mark.parametrize(("encode", "md", "verdict"), [
    pytest.param(["openssl", "base64"], "sha256", None, id="base64-64-column-lines"),
    pytest.param(None, "sha1", "00000-609", id="sha1-digest-warning"),
    pytest.param("pem", "sha256", "ACRF-601", id="pem-armour"),
])
def test_what_openssl_users_commonly_send(fla_sim, fla_channel, fla_pki, tmp_path, encode, md,
                                         verdict):
    """Other openssl spellings: 64-column base64 passes (6.1), SHA-1 warns, PEM armour is 601."""
    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir()
    inbox.mkdir()
    stem = f"FLAC.123456.{DAY}.00001.T"
    fi = outbox / f"FI.{stem}.1.1"
    fi.write_bytes(FI_TEXT.encode())
    fs = fi.with_name("FS." + fi.name[3:])
    cert, key = signer_files(fla_pki, fla_channel, tmp_path)
    sign = ["openssl", "cms", "-sign", "-binary", "-md", md, "-signer", str(cert),
            "-inkey", str(key), "-in", str(fi)]
    if encode == "pem":
        run([*sign, "-outform", "PEM", "-out", str(fs)], tmp_path)
        assert fs.read_bytes().startswith(b"-----BEGIN CMS-----")
    else:
        der = tmp_path / "fs.der"
        run([*sign, "-outform", "DER", "-out", str(der)], tmp_path)
        run([*(encode or ["openssl", "base64", "-A"]), "-in", str(der), "-out", str(fs)],
            tmp_path)
        lines = fs.read_bytes().split(b"\n")
        assert len(lines) > 2 if encode else len(lines) == 1  # the layout under test
    go = outbox / f"GO.{stem}.1"
    go.write_bytes(b"")
    sftp_batch(fla_sim, fla_channel,
               f"put {fi.name} INTEST/\nput {fs.name} INTEST/\nput {go.name} INTEST/\n", outbox)
    fla_sim.drain()
    sftp_batch(fla_sim, fla_channel, f"get OUTTEST/FO.ACRF.999999.{DAY}.00001.T .\n", inbox)
    acrf = parse_answer((inbox / f"FO.ACRF.999999.{DAY}.00001.T").read_bytes())
    assert isinstance(acrf, Acrf) and acrf.file_name == go.name
    if verdict is not None and verdict.startswith("ACRF-"):
        assert acrf.error_id == verdict
        return
    assert acrf.accepted
    sftp_batch(fla_sim, fla_channel, f"get OUTTEST/FO.NOTI.999999.{DAY}.00002.T .\n", inbox)
    noti = parse_answer((inbox / f"FO.NOTI.999999.{DAY}.00002.T").read_bytes())
    assert isinstance(noti, Noti) and noti.result_code == 2
    assert [a.error_id for a in noti.file_warnings] == ([verdict] if verdict else [])

