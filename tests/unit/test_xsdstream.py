"""Tree-less validation (fla_core.xsdstream, fi.confirm_valid): it may only confirm what the
lxml scan accepts, never accept what the scan refuses, and leaves streams where they were."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fla_core import fi, xsdstream
from fla_core.anomalies import ChannelError
from fla_core.applications import fla
from fla_core.model import Quality
from fla_core.names import NameRules, parse_upload
from fla_core.plugins import FlaPlugins
from fla_core.settings import ChannelProfile, Settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fla"
VALID = (FIXTURES / "valid-minimal.xml").read_bytes()
CHANNEL = ChannelProfile(user="acme-payroll", sender="123456",
                         quality=Quality.SOCIAL_SECRETARIAT, company_id="0123456749",
                         applications=frozenset({"FLAC"}))


def confirmed(data: bytes, **kw) -> object:
    return fi.confirm_valid(io.BytesIO(data), namespace=fla.NAMESPACE, root=fla.ROOT,
                            xsd=fla.SCHEMA, head_tag=fla.HEADER_TAG, **kw)


def scanned(data: bytes) -> fla.ScanResult | ChannelError:
    try:
        return fla.scan(io.BytesIO(data), expect=None, max_declarations=10_000)
    except ChannelError as exc:
        return exc


def test_the_validator_is_reachable_in_lxml():
    # the simulator's pre-scan relies on it for big files; its absence would only be slower
    assert xsdstream.validator_for(fla.SCHEMA) is not None


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.xml")))
def test_every_fixture_is_confirmed_exactly_when_the_scan_accepts_it(fixture):
    data = (FIXTURES / fixture).read_bytes()
    head = confirmed(data)
    outcome = scanned(data)
    if isinstance(outcome, ChannelError) and outcome.code != "158":  # 158: P14, not P10-P13
        assert head is None, fixture
    else:
        assert head is not None, fixture
        assert fla.header_of(head) == outcome.header


@settings(max_examples=int(os.environ.get("FLA_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, len(VALID)), length=st.integers(0, 40),
       insert=st.sampled_from([b"", b"<", b"&", b"<x>", b"</x>", b">", b"]]>", b"\x01", b"\xe9",
                               b"1", b" ", b"<!-- c -->", b' xmlns:p="a b"', b' xmlns="urn:x"']),
       chunk=st.sampled_from([7, 64, 1 << 20]))
def test_never_confirms_what_the_scan_refuses(monkeypatch, start, length, insert, chunk):
    """Patch the example anywhere: confirmed only if the lxml scan accepts it, same header."""
    monkeypatch.setattr(fi, "CHUNK", chunk)
    data = VALID[:start] + insert + VALID[start + length:]
    head = confirmed(data, chunk_size=chunk)
    if head is not None:
        outcome = scanned(data)
        assert isinstance(outcome, fla.ScanResult), (outcome, data)
        assert fla.header_of(head) == outcome.header


def test_a_namespace_declaration_after_the_first_chunk_is_left_to_the_scan():
    # libxml2 with a schema may hide an error in one: the tree-less pass does not decide
    at = VALID.rfind(b"<CompanyID>")  # the last one, far beyond the first read
    late = VALID[:at] + b'<CompanyID xmlns="urn:be:fgov:socialsecurity:fla:v1">' + \
        VALID[at + len(b"<CompanyID>"):]
    assert isinstance(scanned(late), fla.ScanResult)  # redeclaring the same namespace: valid
    assert confirmed(late, chunk_size=64) is None  # ... but not confirmed without the scan
    assert confirmed(late) is not None  # in the first chunk the root probe has seen it


def test_a_stream_is_left_where_it_started():
    for data in (VALID, VALID.replace(b"21.00", b"21.5")):
        stream = io.BytesIO(b"junk before" + data)
        stream.seek(len(b"junk before"))
        fi.confirm_valid(stream, namespace=fla.NAMESPACE, root=fla.ROOT, xsd=fla.SCHEMA,
                         head_tag=fla.HEADER_TAG)
        assert stream.tell() == len(b"junk before")


def test_a_stream_that_cannot_seek_back_is_not_read():
    read, write = os.pipe()
    with open(read, "rb") as pipe, open(write, "wb") as writer:
        writer.write(VALID)
        writer.close()
        assert fi.confirm_valid(pipe, namespace=fla.NAMESPACE, root=fla.ROOT, xsd=fla.SCHEMA,
                                head_tag=fla.HEADER_TAG) is None
        assert pipe.read() == VALID  # untouched: the scan reads it whole


class FailingDisk(io.BytesIO):
    """A file whose reads fail after the first chunk (an I/O error cannot be made on demand)."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_a_read_error_is_raised_not_taken_for_an_invalid_document():
    data = VALID.replace(b"</FLADeclarations>", b" " * 200 + b"</FLADeclarations>")
    with pytest.raises(OSError, match="Input/output error"):
        fi.confirm_valid(FailingDisk(data), namespace=fla.NAMESPACE, root=fla.ROOT,
                         xsd=fla.SCHEMA, head_tag=fla.HEADER_TAG, chunk_size=256)


def _go():
    from datetime import date

    rules = NameRules(today=date(2026, 3, 16), max_age_days=30, max_parts=99)
    return parse_upload("GO.FLAC.123456.20260316.00001.T.1", rules)


def test_validate_outcome_uses_it_and_equals_the_scan(monkeypatch):
    from fla_core.scanning import validate_outcome

    common = {"channel": CHANNEL, "settings": Settings(), "plugins": FlaPlugins(entry_points=False)}
    fast = validate_outcome(_go(), io.BytesIO(VALID), **common)
    monkeypatch.setattr(xsdstream, "validator_for", lambda xsd: None)  # as without the symbols
    slow = validate_outcome(_go(), io.BytesIO(VALID), **common)
    assert fast == (slow[0], None)  # same reference; declarations are counted by the rules half
    assert slow[1] == 2


def test_only_checked_libxml2_series_get_the_binding():
    assert xsdstream.known_libxml2((2, 12, 3)) and xsdstream.known_libxml2((2, 14, 6))
    assert not xsdstream.known_libxml2((2, 16, 0)) and not xsdstream.known_libxml2((3, 0, 0))
    assert not xsdstream.known_libxml2((2, 8, 0))


def test_an_unchecked_libxml2_falls_back_to_lxml_with_the_same_verdicts(monkeypatch):
    from lxml import etree

    monkeypatch.setattr(etree, "LIBXML_VERSION", (2, 99, 0))
    xsdstream._compiled.cache_clear()
    try:
        assert xsdstream.validator_for(fla.SCHEMA) is None
        assert confirmed(VALID) is None  # not confirmed: the caller reads it with lxml
        assert not isinstance(scanned(VALID), ChannelError)
    finally:
        xsdstream._compiled.cache_clear()


def test_a_binding_that_confirms_everything_is_switched_off(monkeypatch):
    monkeypatch.setattr(xsdstream.StreamValidator, "valid", lambda self, read: True)
    xsdstream._compiled.cache_clear()
    try:
        assert xsdstream.validator_for(fla.SCHEMA) is None
    finally:
        xsdstream._compiled.cache_clear()
