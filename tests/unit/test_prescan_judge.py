"""judge_set with a precomputed outcome (fla_core.judge.Precomputed) and verify_fs with a
known digest.

The pre-scan replaces reading the FI for P9's digest and for P10-P16, never the order of the
steps: each test proves the outcome came from (or ignored) the pre-scan by planting one that
differs from what the file itself would give.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from fla_core.anomalies import ChannelError
from fla_core.checks.context import MemoryRegistry
from fla_core.judge import judge_set
from fla_core.mandates import MandateBook, MandateRecord
from fla_core.model import Quality
from fla_core.names import NameRules, parse_upload
from fla_core.pki import issue_signer, make_ca
from fla_core.plugins import FlaPlugins
from fla_core.scanning import ScanOutcome, scan_outcome
from fla_core.settings import ChannelProfile, Settings
from fla_core.signing import TrustStore, encode_fs, sign_file, verify_fs

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PrescanResult:
    """Any object with these three attributes is what the judge takes (its Precomputed
    protocol): the core knows nothing of the simulator's pre-scan."""

    fi_name: str
    digests: Mapping[str, bytes]
    outcome: ScanOutcome | ChannelError
VALID = (ROOT / "fixtures" / "fla" / "valid-minimal.xml").read_bytes()
TODAY = date(2026, 3, 16)
AT = datetime(2026, 3, 16, 10, 15, tzinfo=UTC)
STEM = "FLAC.123456.20260316.00001.T"
FI = f"FI.{STEM}.1.1"
CHANNEL = ChannelProfile(user="acme-payroll", sender="123456",
                         quality=Quality.SOCIAL_SECRETARIAT, company_id="0123456749",
                         applications=frozenset({"FLAC"}))
MANDATES = MandateBook([
    MandateRecord(level=1, employer="0897223670", representative="0123456749",
                  application="FLAC", start="20241"),
    MandateRecord(level=2, employer="0897223670", representative="0123456749",
                  application="FLAC", sender="123456"),
])


@pytest.fixture(scope="module")
def plugins() -> FlaPlugins:
    return FlaPlugins(entry_points=False)


@pytest.fixture(scope="module")
def pki() -> tuple[TrustStore, object]:
    start = AT - timedelta(days=30)
    ca = make_ca(not_before=start, key_type="ec-p256")
    return TrustStore(anchors=[ca.anchor]), issue_signer(ca, company_id="0123456749",
                                                         not_before=start, key_type="ec-p256")


def go():
    return parse_upload(f"GO.{STEM}.1", NameRules(today=TODAY))


def judge(folder: Path, plugins: FlaPlugins, trust: TrustStore | None,
          prescan: PrescanResult | None, registry: MemoryRegistry | None = None):
    return judge_set(go(), sorted(folder.iterdir()), channel=CHANNEL, settings=Settings(),
                     trust=trust, today=TODAY, at=AT, registry=registry or MemoryRegistry(),
                     mandates=MANDATES, plugins=plugins, prescan=prescan)


def outcome_of(data: bytes, plugins: FlaPlugins, registry: MemoryRegistry | None = None):
    return scan_outcome(go(), io.BytesIO(data), channel=CHANNEL, settings=Settings(),
                        today=TODAY, registry=registry or MemoryRegistry(), mandates=MANDATES,
                        plugins=plugins)


def test_scan_outcome_of_a_stream_equals_the_judge_reading_the_file(tmp_path, plugins):
    (tmp_path / FI).write_bytes(VALID)
    outcome = outcome_of(VALID, plugins)
    verdict = judge(tmp_path, plugins, None, None)
    assert not isinstance(outcome, ChannelError) and outcome is not None
    assert outcome == (verdict.file_reference, verdict.declarations, verdict.accepted_registry)


def test_the_prescan_outcome_is_used_instead_of_reading_the_file(tmp_path, plugins):
    (tmp_path / FI).write_bytes(VALID)
    # computed against a registry where the declaration already exists: another verdict
    other = outcome_of(VALID, plugins, MemoryRegistry({"D-0897223670-2025-01": "ACTIVE"}))
    plain = judge(tmp_path, plugins, None, None)
    used = judge(tmp_path, plugins, None, PrescanResult(FI, {}, other))
    assert used.declarations == other[1] != plain.declarations  # type: ignore[index]
    assert used.accepted and used.has_noti


def test_a_prescan_error_becomes_the_negative_acrf_naming_the_fi(tmp_path, plugins):
    (tmp_path / FI).write_bytes(VALID)
    error = outcome_of(VALID.replace(b"<Environment>T", b"<Environment>R"), plugins)
    assert isinstance(error, ChannelError) and error.code == "158"
    verdict = judge(tmp_path, plugins, None, PrescanResult(FI, {}, error))
    assert verdict.error is not None and verdict.error.code == "158"
    assert verdict.error.subject == FI and not verdict.has_noti


def test_a_prescan_of_another_file_is_ignored(tmp_path, plugins):
    (tmp_path / FI).write_bytes(VALID)
    error = ChannelError("312", "planted")
    verdict = judge(tmp_path, plugins, None, PrescanResult(FI + "x", {}, error))
    assert verdict.accepted


def test_p9_still_runs_first_and_uses_the_precomputed_digest(tmp_path, plugins, pki):
    trust, signer = pki
    fi = tmp_path / FI
    fi.write_bytes(VALID)
    (tmp_path / ("FS" + FI[2:])).write_bytes(encode_fs(sign_file(fi, signer.signer())))
    planted = ChannelError("312", "planted schema error")
    right = {"sha256": hashlib.sha256(VALID).digest()}
    wrong = {"sha256": hashlib.sha256(b"other bytes").digest()}
    # the right digest: P9 passes, then the pre-scan's outcome decides
    assert judge(tmp_path, plugins, trust, PrescanResult(FI, right, planted)).error.code == "312"
    # a wrong digest proves P9 took the digest from the pre-scan, and that P9 outranks P13
    assert judge(tmp_path, plugins, trust, PrescanResult(FI, wrong, planted)).error.code == "125"


def test_verify_fs_uses_a_given_digest_of_the_same_algorithm_only(tmp_path, pki):
    trust, signer = pki
    fi = tmp_path / FI
    fi.write_bytes(VALID)
    fs = encode_fs(sign_file(fi, signer.signer()))
    kw = {"trust": trust, "at": AT, "sender_company": "0123456749"}
    good = {"sha256": hashlib.sha256(VALID).digest()}
    # the FI is never opened when the digest is known
    assert verify_fs(tmp_path / "missing", fs, digests=good, **kw).digest_algorithm == "sha256"
    with pytest.raises(ChannelError) as err:
        verify_fs(fi, fs, digests={"sha256": hashlib.sha256(b"x").digest()}, **kw)
    assert err.value.code == "125"
    # a digest of another algorithm is not used: the FI is read
    assert verify_fs(fi, fs, digests={"sha512": b"\0" * 64}, **kw).digest_algorithm == "sha256"


def _layouts() -> dict[str, bytes]:
    """Documents whose verdicts the two halves must reproduce (and a few they must refuse)."""
    registry_hit = VALID.replace(b"D-0897223670-2025-01", b"D-KNOWN")
    return {
        "valid": VALID,
        "registry": registry_hit,
        "cdata and spaces": VALID.replace(b"<Hours>21.00</Hours>",
                                          b"<Hours><![CDATA[21.00]]></Hours>")
                                 .replace(b"<Worker>\n", b"<Worker>  \n\n"),
        "comments": VALID.replace(b"<Action>", b"<!-- c --><Action>"),
        "schema error": VALID.replace(b"<Action>NEW", b"<Oops/><Action>NEW"),
        "header": VALID.replace(b"<Environment>T", b"<Environment>R"),
        "not well-formed": VALID[:-30],
    }


@pytest.mark.parametrize("limit", [10_000, 1], ids=["", "max 1 declaration"])
@pytest.mark.parametrize("name", list(_layouts()))
def test_the_two_halves_make_the_single_pass_outcome(plugins, name, limit):
    from fla_core.scanning import rules_outcome, split_outcome, validate_outcome

    data = _layouts()[name]
    registry = MemoryRegistry({"D-KNOWN": "ACTIVE"})
    settings = Settings(max_declarations=limit)  # the file has 2: P15 (172) at 1
    common = {"channel": CHANNEL, "settings": settings, "plugins": plugins}
    single = scan_outcome(go(), io.BytesIO(data), today=TODAY, registry=registry,
                          mandates=MANDATES, **common)
    validated = validate_outcome(go(), io.BytesIO(data), **common)
    try:
        rules = rules_outcome(go(), io.BytesIO(data), today=TODAY, registry=registry,
                              mandates=MANDATES, **common)
    except Exception:  # an invalid document: the halves never use these verdicts
        assert isinstance(validated, ChannelError)
        rules = None
    combined = split_outcome(validated, rules, max_declarations=limit)
    if isinstance(single, ChannelError):
        assert isinstance(combined, ChannelError)
        assert (combined.code, combined.detail) == (single.code, single.detail)
    else:
        assert combined == single
