"""The set judge (spec 5.3 P4-P16) on real files, real certificates and real signatures."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from fla_core.checks.context import MemoryRegistry
from fla_core.judge import SetVerdict, judge_folder, judge_set
from fla_core.mandates import MandateBook, MandateRecord
from fla_core.model import Quality
from fla_core.names import FileName, NameRules, parse_upload
from fla_core.pki import CertifiedKey, issue_signer, make_ca
from fla_core.plugins import FlaPlugins
from fla_core.responses import parse_answer, render_noti
from fla_core.settings import ChannelProfile, Settings
from fla_core.signing import TrustStore, encode_fs, sign_file

ROOT = Path(__file__).resolve().parents[2]
VALID = (ROOT / "fixtures" / "fla" / "valid-minimal.xml").read_bytes()
SPEC_NOTI = ROOT / "fixtures" / "answers" / "spec-9.3-noti-valid-minimal.xml"

TODAY = date(2026, 3, 16)
AT = datetime(2026, 3, 16, 10, 15, tzinfo=UTC)
STEM = "FLAC.123456.20260316.00001.T"
CHANNEL = ChannelProfile(user="acme-payroll", sender="123456",
                         quality=Quality.SOCIAL_SECRETARIAT, company_id="0123456749",
                         applications=frozenset({"FLAC", "DMFA"}))
MANDATES = MandateBook([
    MandateRecord(level=1, employer="0897223670", representative="0123456749",
                  application="FLAC", start="20241"),
    MandateRecord(level=2, employer="0897223670", representative="0123456749",
                  application="FLAC", sender="123456"),
])


@dataclasses.dataclass(frozen=True)
class Pki:
    trust: TrustStore
    signer: CertifiedKey
    other_company: CertifiedKey
    foreign: CertifiedKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    start = AT - timedelta(days=30)
    ca = make_ca(not_before=start, key_type="ec-p256")
    rogue = make_ca("Rogue CA", not_before=start, key_type="ec-p256")
    return Pki(trust=TrustStore(anchors=[ca.anchor]),
               signer=issue_signer(ca, company_id="0123456749", not_before=start,
                                   key_type="ec-p256"),
               other_company=issue_signer(ca, company_id="0566988259", not_before=start,
                                          key_type="ec-p256"),
               foreign=issue_signer(rogue, company_id="0123456749", not_before=start,
                                    key_type="ec-p256"))


@pytest.fixture(scope="module")
def plugins() -> FlaPlugins:
    return FlaPlugins(entry_points=False)


def go_name(stem: str = STEM, total: int = 1) -> FileName:
    return parse_upload(f"GO.{stem}.{total}", NameRules(today=TODAY))


def write_fi(folder: Path, data: bytes, total: int = 1, index: int = 1,
             stem: str = STEM) -> Path:
    path = folder / f"FI.{stem}.{total}.{index}"
    path.write_bytes(data)
    return path


def write_fs(fi: Path, key: CertifiedKey, digest: str = "sha256") -> Path:
    fs = fi.with_name("FS" + fi.name[2:])
    fs.write_bytes(encode_fs(sign_file(fi, key.signer(), digest=digest)))
    return fs


def judge(folder: Path, pki: Pki, plugins: FlaPlugins, go: FileName | None = None, *,
          settings: Settings | None = None, registry: MemoryRegistry | None = None,
          check_mandates: bool = True, trust: TrustStore | str | None = "default"
          ) -> SetVerdict:
    return judge_set(go or go_name(), sorted(folder.iterdir()), channel=CHANNEL,
                     settings=settings or Settings(),
                     trust=pki.trust if trust == "default" else trust,  # type: ignore[arg-type]
                     today=TODAY, at=AT, registry=registry or MemoryRegistry(),
                     mandates=MANDATES, plugins=plugins, check_mandates=check_mandates)


def codes(verdict: SetVerdict) -> list[list[str]]:
    return [[a.error_id for a in v.anomalies] for v in verdict.declarations]


def error_code(verdict: SetVerdict) -> str | None:
    return verdict.error.code if verdict.error else None


# --- the valid set -------------------------------------------------------------------------------

def test_valid_minimal_file_gives_the_spec_notification(tmp_path, pki, plugins):
    write_fs(write_fi(tmp_path, VALID), pki.signer)
    verdict = judge(tmp_path, pki, plugins)
    assert verdict.error is None and verdict.has_noti
    assert verdict.result_code == 2
    assert verdict.file_reference == "ACME-2026-0001"
    assert [v.status for v in verdict.declarations] == ["ACCEPTED", "REJECTED"]
    assert codes(verdict) == [["00104-960"], ["00103-944", "00104-960"]]
    assert verdict.file_warnings == []
    assert verdict.accepted_registry == {"D-0897223670-2025-01": "ACTIVE"}
    # The verdict rendered as a NOTI equals the spec example on parsed values (spec 9.3).
    noti = render_noti(application=verdict.application,
                       file_name="GO.FLAC.123456.20260316.00001.T.1",
                       file_reference=verdict.file_reference, ticket="26075A0000001",
                       result_code=verdict.result_code, declarations=verdict.declarations,
                       file_warnings=verdict.file_warnings,
                       at=datetime(2026, 3, 16, 10, 15, 0, 530000, tzinfo=UTC))
    assert parse_answer(noti) == parse_answer(SPEC_NOTI.read_bytes())


def test_registry_before_the_file_changes_the_verdicts(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    registry = MemoryRegistry({"D-0897223670-2024-07": "ACTIVE"})
    verdict = judge(tmp_path, pki, plugins, registry=registry)
    assert verdict.result_code == 1
    assert verdict.accepted_registry == {"D-0897223670-2025-01": "ACTIVE",
                                         "D-0897223670-2024-07": "CANCELLED",
                                         "D-0897223670-2025-02": "CANCEL"}
    assert registry.entries == {"D-0897223670-2024-07": "ACTIVE"}  # committed by the caller


@pytest.mark.parametrize("old, new, expected, status", [
    (b"<CompanyID>0897223670</CompanyID>\n      <NOSS", b"<CompanyID>0477472701</CompanyID>\n"
     b"      <NOSS", ["00104-960", "00112-155"], "REJECTED"),
    (b"<CompanyID>0897223670</CompanyID>\n      <NOSS", b"<CompanyID>0897223607</CompanyID>\n"
     b"      <NOSS", ["00104-960", "00112-004"], "REJECTED"),
    (b"<Hours>21.00</Hours>", b"<Hours>35.00</Hours>", ["00104-960", "00137-921"], "REJECTED"),
    (b"<Hours>21.00</Hours>", b"<Hours>27.00</Hours>", ["00104-960", "00137-922"], "ACCEPTED"),
    (b"<StartDate>2025-03-03</StartDate>\n        <EndDate>2025-03-05</EndDate>",
     b"<StartDate>2025-12-30</StartDate>\n        <EndDate>2026-01-02</EndDate>",
     ["00104-960", "00136-911"], "REJECTED"),
], ids=["no-mandate-155", "check-digit-004", "hours-921", "hours-922", "year-911"])
def test_worked_verdicts_of_spec_8_5(tmp_path, pki, plugins, old, new, expected, status):
    assert VALID.count(old) == 1
    write_fi(tmp_path, VALID.replace(old, new))
    verdict = judge(tmp_path, pki, plugins)
    assert verdict.error is None
    assert codes(verdict)[0] == expected
    assert verdict.declarations[0].status == status


def test_without_mandate_data_rule_155_is_skipped(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID.replace(b"0897223670</CompanyID>\n      <NOSS",
                                     b"0477472701</CompanyID>\n      <NOSS"))
    verdict = judge(tmp_path, pki, plugins, check_mandates=False)
    assert codes(verdict)[0] == ["00104-960"]


def test_two_part_set_is_the_byte_concatenation(tmp_path, pki, plugins):
    cut = VALID.index(b"<Declaration>") + 5  # in the middle of a tag
    for index, chunk in enumerate((VALID[:cut], VALID[cut:]), start=1):
        write_fs(write_fi(tmp_path, chunk, total=2, index=index), pki.signer)
    verdict = judge(tmp_path, pki, plugins, go_name(total=2))
    assert verdict.error is None
    assert codes(verdict) == [["00104-960"], ["00103-944", "00104-960"]]


def test_sha1_signature_is_accepted_with_file_warning_609(tmp_path, pki, plugins):
    write_fs(write_fi(tmp_path, VALID), pki.signer, digest="sha1")
    verdict = judge(tmp_path, pki, plugins)
    assert verdict.error is None and verdict.has_noti
    assert [(a.error_id, a.severity, a.path, a.value) for a in verdict.file_warnings] == [
        ("00000-609", "W", "/", None)]


def test_sha1_warning_is_reported_once_per_set(tmp_path, pki, plugins):
    cut = len(VALID) // 3
    for index, chunk in enumerate((VALID[:cut], VALID[cut:]), start=1):
        write_fs(write_fi(tmp_path, chunk, total=2, index=index), pki.signer, digest="sha1")
    verdict = judge(tmp_path, pki, plugins, go_name(total=2))
    assert [a.error_id for a in verdict.file_warnings] == ["00000-609"]


def test_application_without_plugin_is_accepted_without_noti(tmp_path, pki, plugins):
    stem = "DMFA.123456.20260316.00010.T"
    write_fi(tmp_path, b"not even XML: DmfA is routed, not read", stem=stem)
    verdict = judge(tmp_path, pki, plugins, go_name(stem))
    assert verdict.error is None
    assert verdict.application == "DMFA"
    assert (verdict.has_noti, verdict.result_code, verdict.declarations) == (False, None, [])


# --- P4 names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("names, code", [
    ([f"FI.{STEM}.1.1.xml"], "131"),
    ([f"FI.{STEM}.1.1", f"FS.{STEM}.2.3"], "124"),
    # FI names before FS names, whatever ASCII order says between the prefixes.
    ([f"FI.{STEM}.1.1.xml", f"FS.{STEM}.2.3"], "131"),
    # FI names in ASCII order: ".0.1" sorts before ".1.1.xml".
    ([f"FI.{STEM}.1.1.xml", f"FI.{STEM}.0.1"], "116"),
    ([f"FI.{STEM}.1.1", f"FI.{STEM}.A.1"], "115"),
])
def test_p4_name_checks_of_every_file(tmp_path, pki, plugins, names, code):
    for name in names:
        (tmp_path / name).write_bytes(VALID)
    verdict = judge(tmp_path, pki, plugins)
    assert error_code(verdict) == code
    assert verdict.declarations == [] and not verdict.has_noti


def test_files_of_other_stems_are_not_part_of_the_set(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    (tmp_path / "FI.FLAC.123456.20260316.00002.T.1.1.xml").write_bytes(b"")
    (tmp_path / "FS.FLAC.123456.20260316.00001.R.1.1").write_bytes(b"junk")
    assert judge(tmp_path, pki, plugins).error is None


# --- P5, P6 --------------------------------------------------------------------------------------

def test_p5_no_fi_is_142(tmp_path, pki, plugins):
    assert error_code(judge(tmp_path, pki, plugins)) == "142"
    write_fs(write_fi(tmp_path, VALID), pki.signer).with_name(f"FI.{STEM}.1.1").unlink()
    assert error_code(judge(tmp_path, pki, plugins)) == "142"


@pytest.mark.parametrize("tails, go_total", [
    (["2.1"], 2),            # part 2 missing
    (["1.1"], 2),            # FI announces 1 part, GO 2
    (["2.1", "2.2"], 1),     # GO announces 1 part
    (["3.1", "3.3"], 3),     # hole in the numbering
])
def test_p6_parts_must_match_the_go(tmp_path, pki, plugins, tails, go_total):
    for tail in tails:
        (tmp_path / f"FI.{STEM}.{tail}").write_bytes(VALID)
    assert error_code(judge(tmp_path, pki, plugins, go_name(total=go_total))) == "120"


# --- P7 ------------------------------------------------------------------------------------------

def test_p7_forbidden_policy_refuses_any_fs(tmp_path, pki, plugins):
    write_fs(write_fi(tmp_path, VALID), pki.signer)
    settings = Settings(fs_policy={"R": "required", "T": "forbidden", "S": "optional"})
    assert error_code(judge(tmp_path, pki, plugins, settings=settings)) == "121"


def test_p7_required_policy_needs_an_fs_per_part(tmp_path, pki, plugins):
    stem = "FLAC.123456.20260316.00001.R"
    first = write_fi(tmp_path, VALID, total=2, index=1, stem=stem)
    write_fi(tmp_path, VALID, total=2, index=2, stem=stem)
    write_fs(first, pki.signer)
    assert error_code(judge(tmp_path, pki, plugins, go_name(stem, 2))) == "122"


def test_p7_optional_policy_refuses_an_fs_without_its_fi(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    (tmp_path / f"FS.{STEM}.2.1").write_bytes(b"x")
    assert error_code(judge(tmp_path, pki, plugins)) == "122"


def test_fs_is_optional_in_test(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    assert judge(tmp_path, pki, plugins).error is None


# --- P8 ------------------------------------------------------------------------------------------

def test_p8_sizes_in_index_order(tmp_path, pki, plugins):
    write_fi(tmp_path, b"", total=2, index=1)
    write_fi(tmp_path, VALID, total=2, index=2)
    small = Settings(max_file_size=100)
    assert error_code(judge(tmp_path, pki, plugins, go_name(total=2), settings=small)) == "134"
    write_fi(tmp_path, VALID, total=2, index=1)
    write_fi(tmp_path, b"", total=2, index=2)
    verdict = judge(tmp_path, pki, plugins, go_name(total=2), settings=small)
    assert error_code(verdict) == "184"
    assert verdict.error is not None and verdict.error.subject == f"FI.{STEM}.2.1"
    assert error_code(judge(tmp_path, pki, plugins, go_name(total=2))) == "134"


# --- P9 ------------------------------------------------------------------------------------------

def test_p9_signature_failures(tmp_path, pki, plugins):
    fi = write_fi(tmp_path, VALID)
    fs = write_fs(fi, pki.signer)
    fi.write_bytes(VALID.replace(b"21.00", b"22.00"))  # signed bytes changed
    assert error_code(judge(tmp_path, pki, plugins)) == "125"
    fi.write_bytes(VALID)
    write_fs(fi, pki.other_company)
    assert error_code(judge(tmp_path, pki, plugins)) == "153"
    write_fs(fi, pki.foreign)
    assert error_code(judge(tmp_path, pki, plugins)) == "605"
    fs.write_bytes(b"-----BEGIN PKCS7-----\n")
    verdict = judge(tmp_path, pki, plugins)
    assert error_code(verdict) == "601"
    assert verdict.error is not None and verdict.error.subject == fs.name


def test_p9_registered_certificate_must_be_the_signer(tmp_path, pki, plugins):
    from cryptography.hazmat.primitives.serialization import Encoding

    write_fs(write_fi(tmp_path, VALID), pki.signer)
    registered = dataclasses.replace(
        CHANNEL, certificates=(pki.other_company.cert.public_bytes(Encoding.DER),))
    verdict = judge_set(go_name(), sorted(tmp_path.iterdir()), channel=registered,
                        settings=Settings(), trust=pki.trust, today=TODAY, at=AT,
                        registry=MemoryRegistry(), mandates=MANDATES, plugins=plugins)
    assert error_code(verdict) == "153"


def test_p9_checks_parts_in_index_order(tmp_path, pki, plugins):
    cut = len(VALID) // 2
    first = write_fi(tmp_path, VALID[:cut], total=2, index=1)
    second = write_fi(tmp_path, VALID[cut:], total=2, index=2)
    write_fs(first, pki.foreign)  # 605 on part 1
    write_fs(second, pki.signer).write_bytes(b"@@@@")  # 601 on part 2
    assert error_code(judge(tmp_path, pki, plugins, go_name(total=2))) == "605"


def test_without_trust_store_signatures_are_not_checked(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    (tmp_path / f"FS.{STEM}.1.1").write_bytes(b"not a signature")
    verdict = judge(tmp_path, pki, plugins, trust=None)
    assert verdict.error is None and not verdict.signatures_checked


# --- P10-P16 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, code", [
    (VALID.replace(b'encoding="UTF-8"', b'encoding="ISO-8859-1"'), "138"),
    (VALID.replace(b"Forklift", b"Forkl\xefft"), "138"),
    (VALID.replace(b"</FLAFile>", b""), "102"),
    (VALID.replace(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                   b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE FLAFile>"), "102"),
    (VALID.replace(b"fla:v1", b"fla:v2"), "139"),
    (VALID.replace(b"<Hours>3.50</Hours>", b"<Hours>3.5</Hours>"), "312"),
    (VALID.replace(b"<SenderNbr>123456", b"<SenderNbr>654321"), "158"),
    (VALID.replace(b"<Environment>T", b"<Environment>S"), "158"),
], ids=["iso-8859-1", "bad-utf8", "unclosed-root", "doctype", "namespace", "schema",
        "header-sender", "header-env"])
def test_p10_to_p14_file_level_failures(tmp_path, pki, plugins, data, code):
    write_fi(tmp_path, data)
    verdict = judge(tmp_path, pki, plugins)
    assert error_code(verdict) == code
    assert verdict.error is not None and verdict.error.subject == f"FI.{STEM}.1.1"
    # P16: no verdict survives a file-level failure, even for declarations read before it.
    assert verdict.declarations == [] and not verdict.has_noti
    assert verdict.accepted_registry == {}


def test_p15_too_many_declarations(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID)
    verdict = judge(tmp_path, pki, plugins, settings=Settings(max_declarations=1))
    assert error_code(verdict) == "172"
    assert verdict.declarations == []
    exactly = judge(tmp_path, pki, plugins, settings=Settings(max_declarations=2))
    assert exactly.error is None and len(exactly.declarations) == 2


def test_header_must_carry_the_channel_quality(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID.replace(b"SOCIAL_SECRETARIAT", b"EMPLOYER"))
    assert error_code(judge(tmp_path, pki, plugins)) == "158"


# --- folders (fla check) -------------------------------------------------------------------------

def test_judge_folder_judges_every_set(tmp_path, pki, plugins):
    write_fs(write_fi(tmp_path, VALID), pki.signer)
    (tmp_path / f"GO.{STEM}.1").write_bytes(b"")
    orphan = "FLAC.123456.20260316.00002.T"
    write_fi(tmp_path, VALID, stem=orphan)  # no GO: judged as if GO.<stem>.1 were there
    (tmp_path / "GO.FLAC.123456.20260316.00003.T.1").write_bytes(b"")  # GO without FI
    (tmp_path / "FI.FLAC.654321.20260316.00004.T.1.1").write_bytes(VALID)  # another sender
    (tmp_path / "FI.FLAC.1").write_bytes(VALID)  # too short to belong to a set
    (tmp_path / "export.csv").write_text("ignored")
    entries = judge_folder(tmp_path, CHANNEL, Settings(), trust=pki.trust, today=TODAY, at=AT,
                           registry=MemoryRegistry(), mandates=MANDATES, plugins=plugins)
    found = {e.label: (error_code(e.verdict), e.verdict.result_code) for e in entries}
    assert found == {
        f"GO.{STEM}.1": (None, 2),
        "GO.FLAC.123456.20260316.00003.T.1": ("142", None),
        "FI.FLAC.1": ("131", None),
        orphan: (None, 2),
        "FLAC.654321.20260316.00004.T": ("108", None),
    }
    by_label = {e.label: e for e in entries}
    assert by_label["FLAC.654321.20260316.00004.T"].verdict.error.subject == (
        "FI.FLAC.654321.20260316.00004.T.1.1")


def test_part_removed_before_judging_counts_as_missing(tmp_path, pki, plugins):
    write_fi(tmp_path, VALID, total=2, index=1)
    listed = [*sorted(tmp_path.iterdir()), tmp_path / f"FI.{STEM}.2.2"]  # listed, then gone
    verdict = judge_set(go_name(total=2), listed, channel=CHANNEL, settings=Settings(),
                        trust=pki.trust, today=TODAY, at=AT, registry=MemoryRegistry(),
                        mandates=MANDATES, plugins=plugins)
    assert error_code(verdict) == "120"


# --- modelled shape and certificate limits reach P9 and P11 -------------------------------------

def test_p9_p11_limits_come_from_the_settings(tmp_path, pki, plugins):
    """max_fs_certificates (602), max_attributes and max_prolog_size (102) are settings."""
    fi = write_fi(tmp_path, VALID)
    write_fs(fi, pki.signer)
    assert error_code(judge(tmp_path, pki, plugins)) is None
    assert error_code(judge(tmp_path, pki, plugins,
                            settings=Settings(max_fs_certificates=0))) == "602"
    three = VALID.replace(b"<FileHeader>", b'<FileHeader a="1" b="2" c="3">', 1)
    fi.write_bytes(three)
    write_fs(fi, pki.signer)
    assert error_code(judge(tmp_path, pki, plugins)) == "312"  # the schema has no attribute
    assert error_code(judge(tmp_path, pki, plugins, settings=Settings(max_attributes=2))) == "102"
    fi.write_bytes(VALID)
    write_fs(fi, pki.signer)
    assert error_code(judge(tmp_path, pki, plugins, settings=Settings(max_prolog_size=60))) == "102"
    settings = Settings.from_mapping({"max_prolog_size": 4096, "max_attributes": 8})
    assert (settings.max_prolog_size, settings.max_attributes) == (4096, 8)
