"""Hostile and broken uploads through the real simulator, end to end (spec 3.3, 4.5-4.7, 5, 6, 9).

Every case logs in with a real asyncssh SFTP client, uploads into the running simulator on
loopback, waits for processing with ``drain()`` (no sleeping) and fetches the answers as a sender
would. Each case checks the exact verdict and that every GO got exactly one ACRF: nothing lost,
nothing answered twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core import pki
from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.set_results import SetResult, collect_results
from fla_core.signing import encode_fs, sign_file
from fla_core.transport import fetch_answers
from fla_sim.pytest_plugin import FixedClock

BRU = ZoneInfo("Europe/Brussels")
AT = datetime(2026, 3, 16, 10, 15, tzinfo=BRU)
DAY = "20260316"
FLA = Path(__file__).parents[2] / "fixtures" / "fla"
STEM = f"FLAC.123456.{DAY}.00001.T"
FI, FS, GO = f"FI.{STEM}.1.1", f"FS.{STEM}.1.1", f"GO.{STEM}.1"
ANSWER_DIRS = ("OUT", "OUTTEST", "OUTTEST-S")


@pytest.fixture
def fla_clock() -> FixedClock:
    return FixedClock(AT)


# --- helpers ---------------------------------------------------------------------------------

def accepted_fi() -> bytes:
    """The 7.2 file without its CANCEL declaration: its one declaration is accepted."""
    return re.sub(rb"\s*<Declaration>\s*<DeclarationRef>D-0897223670-2025-02.*?</Declaration>",
                  b"", (FLA / "valid-minimal.xml").read_bytes(), flags=re.S)


@contextlib.asynccontextmanager
async def sftp_session(channel, port: int) -> AsyncIterator[asyncssh.SFTPClient]:
    """A real SFTP session on the channel, logged in with its SSH key."""
    key = asyncssh.read_private_key(str(channel.ssh_key))
    async with (asyncssh.connect("127.0.0.1", port, username=channel.user, client_keys=[key],
                                 known_hosts=None, agent_path=None) as conn,
                conn.start_sftp_client() as sftp):
        yield sftp


async def _upload(channel, port: int, files: list[tuple[str, bytes]]) -> list[Exception | None]:
    """Upload each (remote path, bytes) in order; the SFTP error of each refused file."""
    outcome: list[Exception | None] = []
    async with sftp_session(channel, port) as sftp:
        for remote, data in files:
            try:
                async with sftp.open(remote, "wb") as f:
                    await f.write(data)
                outcome.append(None)
            except asyncssh.SFTPError as exc:
                outcome.append(exc)
    return outcome


def upload(sim, channel, files: list[tuple[str, bytes]]) -> list[Exception | None]:
    """Upload through a real SFTP session, then wait until every queued set is answered."""
    outcome = asyncio.run(_upload(channel, sim.port, files))
    sim.drain()
    return outcome


def answers(sim, channel, home, tmp_path: Path, triggers: list[str]) -> dict[str, SetResult]:
    """Fetch every answer as a sender does; check one ACRF per trigger and valid signatures."""
    on_server = {d: sim.answers(channel.user, d) for d in ANSWER_DIRS}
    fetched = asyncio.run(fetch_answers(channel.address(sim), tmp_path / "answers"))
    results: dict[str, SetResult] = {}
    collect_results(fetched, results, home.ca_cert_path, at=AT)
    # nothing lost, nothing answered twice: one ACRF per GO, every answer a full FO+FS+GO triplet
    acrfs = sorted(n for names in on_server.values() for n in names if n.startswith("FO.ACRF"))
    assert len(acrfs) == len(triggers), on_server
    assert sorted(results) == sorted(triggers)
    for trigger, r in results.items():
        assert r.acrf is not None and r.acrf.file_name == trigger
        assert r.signature_problem is None, r.signature_problem
    for names in on_server.values():
        fo = [n for n in names if n.startswith(("FO.", "CO."))]
        assert sorted(names) == sorted(p + n[2:] for n in fo for p in (n[:2], "FS", "GO"))
    return results


def negative(result: SetResult) -> str | None:
    """The ACRF error id of a rejected set; the set had no NOTI."""
    assert result.acrf is not None and not result.acrf.accepted
    assert result.noti is None
    return result.acrf.error_id


def signed(fi: bytes, signer, tmp_path: Path, **kw) -> bytes:
    """The FS content (base64 one line) of ``fi`` signed with ``signer``."""
    path = tmp_path / "to-sign"
    path.write_bytes(fi)
    return encode_fs(sign_file(path, signer, signing_time=AT, **kw))


def no_uploads_left(home, channel) -> bool:
    """The processed set was archived (spec 5.3 clean-up): INTEST shows nothing any more."""
    return [p.name for p in (home.channel_root(channel.user) / "INTEST").iterdir()
            if not p.name.startswith(".")] == []


# --- data file (P10-P13) ---------------------------------------------------------------------

@pytest.mark.parametrize(("fixture", "code"), [
    ("billion-laughs.xml", "ACRF-102"),
    ("not-well-formed.xml", "ACRF-102"),
    ("wrong-namespace.xml", "ACRF-139"),
    ("no-namespace.xml", "ACRF-139"),
    ("schema-invalid-inss.xml", "ACRF-312"),
    ("schema-invalid-attribute.xml", "ACRF-312"),
    ("latin1-declared.xml", "ACRF-138"),
    ("invalid-utf8.xml", "ACRF-138"),
])
def test_hostile_data_file_is_rejected_with_its_code(fla_sim, fla_channel, fla_sim_home,
                                                     tmp_path, fixture, code):
    data = (FLA / fixture).read_bytes()
    assert upload(fla_sim, fla_channel, [(f"INTEST/{FI}", data), (f"INTEST/{GO}", b"")]) \
        == [None, None]
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == code
    assert no_uploads_left(fla_sim_home, fla_channel)


def test_external_entity_is_refused_and_never_read(fla_sim, fla_channel, fla_sim_home,
                                                   tmp_path):
    secret = tmp_path / "secret.txt"
    marker = "S3CRET-MARKER-7f3a9c"
    secret.write_text(marker)
    data = (FLA / "external-entity.xml").read_bytes().replace(
        b"file:///etc/passwd", secret.as_uri().encode())
    assert secret.as_uri().encode() in data
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", data), (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-102"
    for path in (tmp_path / "answers").iterdir():
        assert marker.encode() not in path.read_bytes(), path.name


# --- signature (P9, spec 6) ------------------------------------------------------------------

def _other_ca_signer(fla_channel, fla_pki):
    ca = pki.make_ca("stranger CA", not_before=AT - timedelta(days=1))
    return pki.issue_signer(ca, company_id=fla_channel.company,
                            not_before=AT - timedelta(days=1)).signer()


SIGNATURE_CASES = {
    "garbage-not-base64": ("ACRF-601", lambda fi, ch, p, t: b"this is not base64 at all!"),
    "signature-of-another-file": (
        "ACRF-125", lambda fi, ch, p, t: signed(fi + b"\n", ch.signer, t)),
    "signer-expired": ("ACRF-606", lambda fi, ch, p, t: signed(fi, p.signer(
        ch.company, not_before=AT - timedelta(days=400),
        not_after=AT - timedelta(days=1)).signer(), t)),
    "untrusted-ca": ("ACRF-605", lambda fi, ch, p, t: signed(fi, _other_ca_signer(ch, p), t)),
    "other-company": ("ACRF-153", lambda fi, ch, p, t: signed(
        fi, p.signer("0897223670").signer(), t)),
    "md5-digest": ("ACRF-603", lambda fi, ch, p, t: signed(fi, ch.signer, t, digest="md5")),
}


@pytest.mark.parametrize("case", sorted(SIGNATURE_CASES))
def test_bad_signature_rejects_the_set(fla_sim, fla_channel, fla_sim_home, fla_pki, tmp_path,
                                       case):
    code, make_fs = SIGNATURE_CASES[case]
    fi = accepted_fi()
    fs = make_fs(fi, fla_channel, fla_pki, tmp_path)
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi), (f"INTEST/{FS}", fs),
                                  (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == code
    assert no_uploads_left(fla_sim_home, fla_channel)


def test_sha1_signature_is_accepted_with_a_file_warning(fla_sim, fla_channel, fla_sim_home,
                                                        tmp_path):
    fi = accepted_fi()
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi),
                                  (f"INTEST/{FS}", signed(fi, fla_channel.signer, tmp_path,
                                                          digest="sha1")),
                                  (f"INTEST/{GO}", b"")])
    r = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])[GO]
    assert isinstance(r.acrf, Acrf) and r.acrf.accepted
    assert isinstance(r.noti, Noti) and r.noti.result_code == 1
    assert [(a.error_id, a.anomaly_class, a.path) for a in r.noti.file_warnings] == [
        ("00000-609", "W", "/")]
    assert [d.status for d in r.noti.declarations] == ["ACCEPTED"]


def test_a_ca_trusted_while_running_counts_after_reload(fla_sim, fla_channel, fla_sim_home,
                                                       tmp_path):
    ca = pki.make_ca("newly trusted CA", not_before=AT - timedelta(days=1))
    signer = pki.issue_signer(ca, company_id=fla_channel.company,
                              not_before=AT - timedelta(days=1)).signer()
    fi = accepted_fi()
    second = STEM.replace(".00001.", ".00002.")
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi), (f"INTEST/{FS}", signed(fi, signer,
                                                                                tmp_path)),
                                  (f"INTEST/{GO}", b"")])
    fla_sim_home.add_trust(pki.write_pem(tmp_path / "new-ca.pem", ca.cert))
    fla_sim.reload()  # `fla-sim trust add` beside a running simulator, then a reload
    upload(fla_sim, fla_channel, [(f"INTEST/FI.{second}.1.1", fi),
                                  (f"INTEST/FS.{second}.1.1", signed(fi, signer, tmp_path)),
                                  (f"INTEST/GO.{second}.1", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO, f"GO.{second}.1"])
    assert negative(results[GO]) == "ACRF-605"
    after = results[f"GO.{second}.1"]
    assert isinstance(after.acrf, Acrf) and after.acrf.accepted  # judged by a new worker


# --- business rules (section 8) --------------------------------------------------------------

def test_employer_without_mandate_is_rejected_in_the_noti(fla_sim, fla_channel, fla_sim_home,
                                                          tmp_path):
    fi = accepted_fi().replace(b"<CompanyID>0897223670</CompanyID>",
                               b"<CompanyID>0477472701</CompanyID>")
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi), (f"INTEST/{GO}", b"")])
    r = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])[GO]
    assert r.acrf is not None and r.acrf.accepted
    assert r.noti is not None and r.noti.result_code == 0 and r.noti.ticket == r.acrf.ticket
    (decl,) = r.noti.declarations
    assert (decl.company_id, decl.status) == ("0477472701", "REJECTED")
    assert [(a.error_id, a.anomaly_class, a.path, a.value) for a in decl.anomalies] == [
        ("00104-960", "W", "/FLAFile/Declaration[1]/ReportingYear", "2025"),
        ("00112-155", "B", "/FLAFile/Declaration[1]/Employer/CompanyID", "0477472701"),
    ]


# --- GO names (P1, spec 4.5 / 4.7) ----------------------------------------------------------
# 129 cannot be carried by a GO: a name starting with "GO." passes N1, and any other name is
# not a trigger (it waits for the orphan sweep).

GO_NAME_CASES = [
    ("I6", "INTEST", f"GO.{STEM}.1.1", "107"),
    ("I8", "INTEST", f"GO.FLAC.12345.{DAY}.00001.T.1", "107"),
    ("I10", "INTEST", "GO.FLAC.123456.2026316.00001.T.1", "109"),
    ("110", "INTEST", "GO.FLAC.123456.20260230.00001.T.1", "110"),
    ("111-tomorrow", "INTEST", "GO.FLAC.123456.20260317.00001.T.1", "111"),
    ("126-too-old", "INTEST", "GO.FLAC.123456.20251215.00001.T.1", "126"),
    ("112", "INTEST", f"GO.FLAC.123456.{DAY}.0001.T.1", "112"),
    ("367", "INTEST", f"GO.FLAC.123456.{DAY}.0001a.T.1", "367"),
    ("127-seq-zero", "INTEST", f"GO.FLAC.123456.{DAY}.00000.T.1", "127"),
    ("117-env-X", "INTEST", f"GO.FLAC.123456.{DAY}.00001.X.1", "117"),
    ("114", "INTEST", f"GO.{STEM}.10", "114"),
    ("115", "INTEST", f"GO.{STEM}.A", "115"),
    ("I22", "INTEST", f"GO.{STEM}.0", "116"),
    ("108-other-sender", "INTEST", f"GO.FLAC.654321.{DAY}.00001.T.1", "108"),
    ("118", "INTEST", f"GO.FLAC.123456.{DAY}.00001.R.1", "118"),
    ("I27", "IN", f"GO.{STEM}.1", "119"),
    ("I28", "INTEST", f"GO.FLAC.123456.{DAY}.00001.S.1", "257"),
    ("I31", "INTEST", f"GO.ACRF.123456.{DAY}.00001.T.1", "154"),
    ("119-T-in-INTEST-S", "INTEST-S", f"GO.{STEM}.1", "119"),
    ("118-R-in-INTEST-S", "INTEST-S", f"GO.FLAC.123456.{DAY}.00001.R.1", "118"),
    ("257-S-in-IN", "IN", f"GO.FLAC.123456.{DAY}.00001.S.1", "257"),
    ("154-not-enabled", "INTEST", f"GO.WECH.123456.{DAY}.00001.T.1", "154"),
]


@pytest.mark.parametrize(("directory", "name", "code"),
                         [c[1:] for c in GO_NAME_CASES], ids=[c[0] for c in GO_NAME_CASES])
def test_go_name_error_gives_a_negative_acrf_naming_the_go(fla_sim, fla_channel, fla_sim_home,
                                                           tmp_path, directory, name, code):
    assert upload(fla_sim, fla_channel, [(f"{directory}/{name}", b"")]) == [None]
    # the answer goes to the pair of the directory used, with that pair's letter (spec 4.8)
    answer_dir, env = {"IN": ("OUT", "R"), "INTEST": ("OUTTEST", "T"),
                       "INTEST-S": ("OUTTEST-S", "S")}[directory]
    acrf = f"FO.ACRF.999999.{DAY}.00001.{env}"
    assert acrf in fla_sim.answers(fla_channel.user, answer_dir)
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [name])
    assert negative(results[name]) == f"ACRF-{code}"
    assert results[name].answers == [acrf]


def test_duplicate_sequence_is_answered_133(fla_sim, fla_channel, fla_sim_home, tmp_path):
    fi = accepted_fi()
    triplet = [(f"INTEST/{FI}", fi), (f"INTEST/{FS}", signed(fi, fla_channel.signer, tmp_path)),
               (f"INTEST/{GO}", b"")]
    upload(fla_sim, fla_channel, triplet)
    first = answers(fla_sim, fla_channel, fla_sim_home, tmp_path / "1", [GO])[GO]
    assert first.acrf is not None and first.acrf.accepted and first.noti is not None
    upload(fla_sim, fla_channel, triplet)
    again = answers(fla_sim, fla_channel, fla_sim_home, tmp_path / "2", [GO])[GO]
    assert negative(again) == "ACRF-133"
    assert again.answers == [f"FO.ACRF.999999.{DAY}.00003.T"]
    assert again.acrf is not None and again.acrf.ticket != first.acrf.ticket


def test_fi_name_error_inside_a_set_is_found_at_p4(fla_sim, fla_channel, fla_sim_home,
                                                   tmp_path):
    fi = accepted_fi()
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi), (f"INTEST/FI.{STEM}.1.2", fi),
                                  (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-123"


# --- confinement through the server (spec 3.3) -----------------------------------------------

@pytest.mark.parametrize("prefix", ["../../INTEST/", "/INTEST/", "/../../../INTEST/",
                                    "OUTTEST/../INTEST/"])
def test_climbing_paths_land_confined_in_the_channel(fla_sim, fla_channel, fla_sim_home,
                                                     tmp_path, prefix):
    fi = accepted_fi()
    outcome = upload(fla_sim, fla_channel, [(prefix + FI, fi), (prefix + GO, b"")])
    assert outcome == [None, None]  # ".." is clamped at the channel root
    r = answers(fla_sim, fla_channel, fla_sim_home, tmp_path / "fetch", [GO])[GO]
    assert r.acrf is not None and r.acrf.accepted and r.noti is not None
    archived = [p for p in fla_sim_home.archive_dir.rglob(FI)]
    assert len(archived) == 1 and archived[0].read_bytes() == fi
    # the only copy anywhere below tmp_path (home, channels, pki) is the archived one
    assert [p for p in tmp_path.rglob(FI)] == archived


@pytest.mark.parametrize("path", ["/etc/" + FI, "../" + FI, "/" + FI, "INTEST/sub/" + FI])
def test_uploads_outside_the_upload_directories_are_refused(fla_sim, fla_channel, fla_sim_home,
                                                            tmp_path, path):
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    (err,) = upload(fla_sim, fla_channel, [(path, accepted_fi())])
    assert isinstance(err, asyncssh.SFTPError)
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and FI in p] == []
    assert all(fla_sim.answers(fla_channel.user, d) == [] for d in ANSWER_DIRS)


def test_symlink_request_is_refused(fla_sim, fla_channel, fla_sim_home):
    async def attempt() -> Exception | None:
        async with sftp_session(fla_channel, fla_sim.port) as sftp:
            try:
                await sftp.symlink("/etc/passwd", f"INTEST/{FI}")
            except asyncssh.SFTPError as exc:
                return exc
        return None

    err = asyncio.run(attempt())
    assert isinstance(err, asyncssh.SFTPPermissionDenied)
    root = fla_sim_home.channel_root(fla_channel.user)
    assert not any(p.is_symlink() for p in root.rglob("*"))


def test_write_into_outtest_is_permission_denied_and_not_answered(fla_sim, fla_channel,
                                                                   fla_sim_home):
    fi = accepted_fi()
    outcome = upload(fla_sim, fla_channel, [(f"OUTTEST/{FI}", fi), (f"OUTTEST/{GO}", b"")])
    assert all(isinstance(e, asyncssh.SFTPPermissionDenied) for e in outcome), outcome
    assert all(fla_sim.answers(fla_channel.user, d) == [] for d in ANSWER_DIRS)
    assert list((fla_sim_home.channel_root(fla_channel.user) / "OUTTEST").iterdir()) == []


@pytest.mark.parametrize(("name", "error"), [
    # longer than a file name may be on disk (a name that could be part of a set: any other
    # is refused at OPEN, see tests/interop/test_clients.py)
    (f"FI.FLAC.123456.{'2' * 300}.00001.T.1.1", asyncssh.SFTPFailure),
    ("FI.X\0Y", asyncssh.SFTPPermissionDenied),
    # control characters cannot be written into the XML answer that names the file: such a
    # GO or TD would never be answered, so the name is refused at upload
    (f"GO.{STEM}.\x01", asyncssh.SFTPPermissionDenied),
    (f"GO.FLAC.\x1b[31m.{DAY}.00001.T.1", asyncssh.SFTPPermissionDenied),
    ("TD.\x02", asyncssh.SFTPPermissionDenied),
    ("GO.\ufffe", asyncssh.SFTPPermissionDenied),
])
def test_unstorable_names_are_refused_and_leave_nothing_behind(fla_sim, fla_channel,
                                                               fla_sim_home, name, error):
    (err,) = upload(fla_sim, fla_channel, [(f"INTEST/{name}", accepted_fi())])
    assert isinstance(err, error), err
    assert "Uncaught exception" not in str(err)
    # no temporary upload file stays behind to eat the channel quota
    intest = fla_sim_home.channel_root(fla_channel.user) / "INTEST"
    assert [p.name for p in intest.iterdir()] == []
    assert all(fla_sim.answers(fla_channel.user, d) == [] for d in ANSWER_DIRS)


# --- more hostile documents ----------------------------------------------------------------

def _in_title(text: bytes) -> bytes:
    return accepted_fi().replace(b"<Title>Forklift safety refresher</Title>", text)


def test_xinclude_is_never_followed(fla_sim, fla_channel, fla_sim_home, tmp_path):
    secret = tmp_path / "secret.txt"
    marker = b"XINCLUDE-MARKER-41c2"
    secret.write_bytes(marker)
    data = _in_title(b'<Title><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="'
                     + secret.as_uri().encode() + b'" parse="text"/></Title>')
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", data), (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-312"  # an element the schema does not define
    for path in (tmp_path / "answers").iterdir():
        assert marker not in path.read_bytes(), path.name


@pytest.mark.parametrize(("data", "code"), [
    pytest.param(lambda: accepted_fi().replace(b"<FLAFile", b"<!DOCTYPE FLAFile>\n<FLAFile", 1),
                 "ACRF-102", id="empty-doctype"),
    pytest.param(lambda: accepted_fi().replace(
        b"<FLAFile", b'<!DOCTYPE FLAFile [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]>\n'
                     b"<FLAFile", 1), "ACRF-102", id="parameter-entity"),
    pytest.param(lambda: accepted_fi().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
                 .encode("utf-16"), "ACRF-138", id="utf-16"),
    pytest.param(lambda: accepted_fi() + b"<FLAFile/>", "ACRF-102", id="second-root"),
    pytest.param(lambda: b"", None, id="empty-fi-134"),
])
def test_more_hostile_documents(fla_sim, fla_channel, fla_sim_home, tmp_path, data, code):
    content = data()
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", content), (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == (code or "ACRF-134")


def test_utf8_bom_is_accepted(fla_sim, fla_channel, fla_sim_home, tmp_path):
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", b"\xef\xbb\xbf" + accepted_fi()),
                                  (f"INTEST/{GO}", b"")])
    r = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])[GO]
    assert r.acrf is not None and r.acrf.accepted
    assert r.noti is not None and r.noti.result_code == 1


def test_same_go_twice_in_one_session_is_answered_once_each(fla_sim, fla_channel,
                                                            fla_sim_home, tmp_path):
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", accepted_fi()), (f"INTEST/{GO}", b""),
                                  (f"INTEST/{GO}", b"")])
    on_server = fla_sim.answers(fla_channel.user, "OUTTEST")
    assert [n for n in on_server if n.startswith("FO.")] == [
        f"FO.ACRF.999999.{DAY}.00001.T", f"FO.ACRF.999999.{DAY}.00003.T",
        f"FO.NOTI.999999.{DAY}.00002.T"]
    fetched = asyncio.run(fetch_answers(fla_channel.address(fla_sim), tmp_path / "answers"))
    parsed = {a.path.name: parse_answer(a.path.read_bytes()) for a in fetched}
    first = parsed[f"FO.ACRF.999999.{DAY}.00001.T"]
    second = parsed[f"FO.ACRF.999999.{DAY}.00003.T"]
    assert isinstance(first, Acrf) and first.accepted and first.file_name == GO
    assert isinstance(second, Acrf) and second.error_id == "ACRF-133" and second.file_name == GO


def test_parallel_senders_lose_nothing(fla_sim, fla_channel, fla_sim_home, tmp_path):
    fi = accepted_fi()
    sets = [f"FLAC.123456.{DAY}.{n:05d}.T" for n in range(1, 7)]

    async def all_at_once() -> None:
        await asyncio.gather(*(_upload(fla_channel, fla_sim.port, [
            (f"INTEST/FI.{s}.1.1", fi), (f"INTEST/GO.{s}.1", b"")]) for s in sets))

    asyncio.run(all_at_once())
    fla_sim.drain()
    gos = [f"GO.{s}.1" for s in sets]
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, gos)
    # each set has its own ACRF and NOTI, numbered without gaps or reuse (spec 4.8)
    assert sorted(n for r in results.values() for n in r.answers) == sorted(
        f"FO.{'ACRF' if i % 2 else 'NOTI'}.999999.{DAY}.{i:05d}.T" for i in range(1, 13))
    for r in results.values():
        assert r.acrf is not None and r.acrf.accepted
        assert r.noti is not None and r.noti.ticket == r.acrf.ticket
    # the first set accepted D-...-01; the five others reuse the reference: rejected (945)
    codes = sorted(r.noti.result_code for r in results.values() if r.noti is not None)
    assert codes == [0, 0, 0, 0, 0, 1]


# --- sets that do not add up (P4-P9) ---------------------------------------------------------

@pytest.mark.parametrize(("extra", "go", "code"), [
    pytest.param([(f"INTEST/FS.{STEM}.1.2", b"x")], GO, "ACRF-124", id="fs-index-above-total"),
    pytest.param([(f"INTEST/FS.{STEM}.2.2", b"x")], f"GO.{STEM}.2", "ACRF-120",
                 id="part-2-missing"),
    pytest.param([], f"GO.{STEM}.2", "ACRF-120", id="go-total-2-one-part"),
])
def test_set_that_does_not_add_up(fla_sim, fla_channel, fla_sim_home, tmp_path, extra, go,
                                  code):
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", accepted_fi()), *extra,
                                  (f"INTEST/{go}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [go])
    assert negative(results[go]) == code


def test_fs_without_its_fi_is_122_in_test(fla_sim, fla_channel, fla_sim_home, tmp_path):
    fi = accepted_fi()
    stray_fs = f"FS.{STEM}.2.1"  # tail 2.1: no FI part has it (spec 5.3 P7, policy optional)
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi),
                                  (f"INTEST/{stray_fs}", signed(fi, fla_channel.signer, tmp_path)),
                                  (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-122"


def test_fi_overwritten_after_signing_fails_the_signature(fla_sim, fla_channel, fla_sim_home,
                                                          tmp_path):
    fi = accepted_fi()
    fs = signed(fi, fla_channel.signer, tmp_path)
    changed = fi.replace(b"<Hours>21.00</Hours>", b"<Hours>24.00</Hours>")
    upload(fla_sim, fla_channel, [(f"INTEST/{FI}", fi), (f"INTEST/{FS}", fs),
                                  (f"INTEST/{FI}", changed), (f"INTEST/{GO}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-125"  # last write wins, and it is not what was signed


def test_td_with_a_bad_name_is_answered_naming_the_td(fla_sim, fla_channel, fla_sim_home,
                                                      tmp_path):
    td = f"TD.FLAC.654321.{DAY}.00001.T.1"
    upload(fla_sim, fla_channel, [(f"INTEST/{td}", b"")])
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [td])
    assert negative(results[td]) == "ACRF-108"


def test_another_channel_cannot_reach_this_channel(fla_sim, fla_channel, fla_sim_home, fla_pki,
                                                   tmp_path):
    from fla_sim.pytest_plugin import add_channel

    other = add_channel(fla_sim_home, fla_pki, tmp_path / "other", user="other-payroll",
                        company="0897223670", sender="654321", mandates=False)
    fla_sim.reload()
    mine = fla_sim_home.channel_root(fla_channel.user)
    (mine / "OUTTEST" / "FO.ACRF.999999.20260316.00009.T").write_bytes(b"<ACRF/>")
    tail = f"FLAC.654321.{DAY}.00001.T"
    outcome = upload(fla_sim, other, [
        (f"../{fla_channel.user}/INTEST/FI.{tail}.1.1", b"<x/>"),
        (f"/../../channels/{fla_channel.user}/INTEST/GO.{tail}.1", b""),
    ])
    assert all(isinstance(e, asyncssh.SFTPPermissionDenied) for e in outcome), outcome
    assert [p.name for p in (mine / "INTEST").iterdir()] == []

    async def peek() -> list[Exception | None]:
        errors: list[Exception | None] = []
        async with sftp_session(other, fla_sim.port) as sftp:
            for call in (sftp.listdir(f"../{fla_channel.user}/OUTTEST"),
                         sftp.remove(f"../{fla_channel.user}/OUTTEST/FO.ACRF.999999."
                                     f"{DAY}.00009.T")):
                try:
                    await call
                    errors.append(None)
                except asyncssh.SFTPError as exc:
                    errors.append(exc)
        return errors

    assert all(isinstance(e, asyncssh.SFTPError) for e in asyncio.run(peek()))
    assert (mine / "OUTTEST" / "FO.ACRF.999999.20260316.00009.T").is_file()


def test_names_that_are_no_trigger_are_swept_with_129(fla_channel, fla_sim_home, fla_clock,
                                                      tmp_path):
    from fla_sim.api import Simulator

    # by default such names are refused at OPEN (tests/interop/test_clients.py); spec 5.6's
    # answer for them stays available with refuse_unusable_names = false
    config = fla_sim_home.load()
    config.refuse_unusable_names = False
    fla_sim_home.save(config)
    # a GO-like name that does not start with "GO." is no trigger: it waits for the sweep
    strays = ["go.FLAC.123456.20260316.00001.T.1", "hello.txt"]
    with Simulator(fla_sim_home.path, clock=fla_clock) as sim:
        assert upload(sim, fla_channel, [(f"INTEST/{n}", b"") for n in strays]) == [None, None]
        assert sim.answers(fla_channel.user) == []
        fla_clock.advance(hours=25)  # past orphan_timeout_s (24 h by default)
        sim.sweep_orphans()
        sim.drain()
        results = answers(sim, fla_channel, fla_sim_home, tmp_path, strays)
    assert {n: negative(results[n]) for n in strays} == {n: "ACRF-129" for n in strays}
    assert no_uploads_left(fla_sim_home, fla_channel)


@pytest.mark.parametrize(("settings", "code"), [
    ({"max_declarations": 1}, "ACRF-172"),  # the 7.2 file has two
    ({"max_file_size": 1000}, "ACRF-184"),
])
def test_limits_reject_the_set(fla_sim_home, fla_channel, fla_clock, tmp_path, settings, code):
    from fla_sim.api import Simulator

    data = (FLA / "valid-minimal.xml").read_bytes()
    assert len(data) > 1000
    with Simulator(fla_sim_home.path, clock=fla_clock, **settings) as sim:
        upload(sim, fla_channel, [(f"INTEST/{FI}", data), (f"INTEST/{GO}", b"")])
        results = answers(sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == code


def test_go_before_its_fi_is_closed_never_sees_half_a_file(fla_sim, fla_channel, fla_sim_home,
                                                          tmp_path):
    fi = accepted_fi()

    async def interleaved() -> None:
        async with sftp_session(fla_channel, fla_sim.port) as slow:
            f = await slow.open(f"INTEST/{FI}", "wb")
            await f.write(fi[:100])  # the FI is still open when the GO comes
            assert await _upload(fla_channel, fla_sim.port, [(f"INTEST/{GO}", b"")]) == [None]
            await asyncio.to_thread(fla_sim.drain)
            await f.write(fi[100:], 100)
            await f.close()

    asyncio.run(interleaved())
    fla_sim.drain()
    results = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])
    assert negative(results[GO]) == "ACRF-142"  # the half-written FI was invisible
    # the FI closed after its GO stays, complete, for the orphan sweep (spec 5.7)
    assert (fla_sim_home.channel_root(fla_channel.user) / "INTEST" / FI).read_bytes() == fi


# --- a signature covers exactly the bytes judged ---------------------------------------------

def test_a_file_of_a_triggered_set_cannot_be_replaced_by_unsigned_content(
        fla_sim, fla_channel, fla_sim_home, tmp_path):
    """A second write handle on the FI, opened before the GO and closed after it, would put
    content that was never signed under the signed FI's name while the set waits or is judged:
    its CLOSE is refused, and the set is judged, answered and archived with the signed bytes."""
    from fla_sim.config import FaultSpec

    fi = accepted_fi()
    fs = signed(fi, fla_channel.signer, tmp_path)
    unsigned = fi.replace(b"Forklift safety refresher", b"Never signed, never sent")
    assert unsigned != fi
    # hold the set in processing for a while: the window the attack used (a few ms) made wide
    fla_sim.processor.faults.add(FaultSpec(when="process", action="delay", delay_ms=1000))
    refused: list[Exception] = []

    async def attack() -> None:
        async with sftp_session(fla_channel, fla_sim.port) as sftp:
            for name, data in ((FI, fi), (FS, fs)):
                async with sftp.open(f"INTEST/{name}", "wb") as f:
                    await f.write(data)
            second = await sftp.open(f"INTEST/{FI}", "wb")
            await second.write(unsigned)
            async with sftp.open(f"INTEST/{GO}", "wb"):
                pass
            try:
                await second.close()
            except asyncssh.SFTPFailure as exc:
                refused.append(exc)

    asyncio.run(attack())
    fla_sim.drain()
    assert refused and "being processed" in str(refused[0])
    result = answers(fla_sim, fla_channel, fla_sim_home, tmp_path, [GO])[GO]
    assert result.acrf is not None and result.acrf.accepted
    archived = fla_sim_home.archive_dir / fla_channel.user / "INTEST" / FI
    assert archived.read_bytes() == fi
    assert no_uploads_left(fla_sim_home, fla_channel)
