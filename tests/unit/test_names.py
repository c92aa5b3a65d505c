"""File names of spec 4: every worked example of 4.7, check order, formatting, sequences."""

from __future__ import annotations

import multiprocessing
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fla_core.anomalies import ChannelError
from fla_core.names import (
    ANSWER,
    UPLOAD_FI_FS,
    UPLOAD_GO_TD,
    ChannelNameContext,
    FileName,
    NameRules,
    SequenceAllocator,
    SequenceExhausted,
    answer_name,
    parse_answer,
    parse_upload,
    prefix_of,
    sequence_at,
    sequence_ordinal,
    stem_env,
    stem_of,
    stem_set_key,
    tail_of,
    upload_name,
    with_prefix,
)

TODAY = date(2026, 3, 16)
RULES = NameRules(today=TODAY)
ENABLED = frozenset({"FLAC", "DMFA", "DIMN"})


def channel(directory: str = "INTEST") -> ChannelNameContext:
    return ChannelNameContext(sender="123456", directory=directory, enabled=ENABLED)


VALID = [
    ("V1", "FI.FLAC.123456.20260316.00001.T.1.1", "INTEST"),
    ("V2", "FS.FLAC.123456.20260316.00001.T.1.1", "INTEST"),
    ("V3", "GO.FLAC.123456.20260316.00001.T.1", "INTEST"),
    ("V4", "TD.FLAC.123456.20260316.00002.T.1", "INTEST"),
    ("V5", "FI.FLAC.123456.20260316.00001.R.1.1", "IN"),
    ("V6", "FS.FLAC.123456.20260316.00001.R.1.1", "IN"),
    ("V7", "GO.FLAC.123456.20260316.00001.R.1", "IN"),
    ("V8", "FI.FLAC.123456.20260316.00001.S.1.1", "INTEST-S"),
    ("V9", "GO.FLAC.123456.20260316.00001.S.1", "INTEST-S"),
    ("V10", "FI.FLAC.123456.20260316.00003.T.3.1", "INTEST"),
    ("V11", "FI.FLAC.123456.20260316.00003.T.3.2", "INTEST"),
    ("V12", "FI.FLAC.123456.20260316.00003.T.3.3", "INTEST"),
    ("V13", "FS.FLAC.123456.20260316.00003.T.3.3", "INTEST"),
    ("V14", "GO.FLAC.123456.20260316.00003.T.3", "INTEST"),
    ("V15", "FI.FLAC.123456.20260316.24AZG.T.1.1", "INTEST"),
    ("V16", "FI.FLAC.123456.20260316.ZZZZZ.T.1.1", "INTEST"),
    ("V17", "FI.FLAC.123456.20251216.00001.T.1.1", "INTEST"),
    ("V18", "FS.FLAC.123456.20260316.00003.T.3.1", "INTEST"),
    ("V19", "FI.DMFA.123456.20260316.00010.T.1.1", "INTEST"),
    ("V20", "GO.DIMN.123456.20260316.00011.T.1", "INTEST"),
    ("V21", "FI.FLAC.123456.20260316.00001.T.9.9", "INTEST"),
    ("V22", "FI.FLAC.123456.20260301.A0001.T.1.1", "INTEST"),
]

INVALID = [
    ("I1", "FR.FLAC.123456.20260316.00001.T.1.1", "INTEST", "129"),
    ("I2", "fi.FLAC.123456.20260316.00001.T.1.1", "INTEST", "129"),
    ("I3", "FO.FLAC.123456.20260316.00001.T", "INTEST", "129"),
    ("I4", "FI.FLAC.123456.20260316.00001.T.1", "INTEST", "131"),
    ("I5", "FS.FLAC.123456.20260316.00001.T", "INTEST", "132"),
    ("I6", "GO.FLAC.123456.20260316.00001.T.1.1", "INTEST", "107"),
    ("I7", "FI.FLA.123456.20260316.00001.T.1.1", "INTEST", "131"),
    ("I8", "GO.FLAC.12345.20260316.00001.T.1", "INTEST", "107"),
    ("I9", "FI.FLAC.123456.20240229.00001.T.1.1", "INTEST", "126"),
    ("I10", "GO.FLAC.123456.2026316.00001.T.1", "INTEST", "109"),
    ("I11", "FI.FLAC.123456.20260230.00001.T.1.1", "INTEST", "110"),
    ("I12", "FI.FLAC.123456.20250229.00001.T.1.1", "INTEST", "110"),
    ("I13", "FI.FLAC.123456.20260317.00001.T.1.1", "INTEST", "111"),
    ("I14", "FI.FLAC.123456.20251215.00001.T.1.1", "INTEST", "126"),
    ("I15", "FI.FLAC.123456.20260316.0001.T.1.1", "INTEST", "112"),
    ("I16", "FI.FLAC.123456.20260316.0001a.T.1.1", "INTEST", "367"),
    ("I17", "FI.FLAC.123456.20260316.00-01.T.1.1", "INTEST", "367"),
    ("I18", "FI.FLAC.123456.20260316.00000.T.1.1", "INTEST", "127"),
    ("I19", "FI.FLAC.123456.20260316.00001.X.1.1", "INTEST", "117"),
    ("I20", "FI.FLAC.123456.20260316.00001.T.10.1", "INTEST", "114"),
    ("I21", "FI.FLAC.123456.20260316.00001.T.A.1", "INTEST", "115"),
    ("I22", "GO.FLAC.123456.20260316.00001.T.0", "INTEST", "116"),
    ("I23", "FI.FLAC.123456.20260316.00001.T.2.3", "INTEST", "123"),
    ("I24", "FS.FLAC.123456.20260316.00001.T.2.3", "INTEST", "124"),
    ("I25", "FI.FLAC.654321.20260316.00001.T.1.1", "INTEST", "108"),
    ("I26", "FI.FLAC.123456.20260316.00001.R.1.1", "INTEST", "118"),
    ("I27", "GO.FLAC.123456.20260316.00001.T.1", "IN", "119"),
    ("I28", "GO.FLAC.123456.20260316.00001.S.1", "INTEST", "257"),
    ("I29", "FI.ZZZZ.123456.20260316.00001.T.1.1", "INTEST", "154"),
    ("I30", "FI.WECH.123456.20260316.00001.T.1.1", "INTEST", "154"),
    ("I31", "GO.ACRF.123456.20260316.00001.T.1", "INTEST", "154"),
    ("I32", "FI.FLAC.123456.20260316.00001.T.1.1.xml", "INTEST", "131"),
    ("I33", "hello.txt", "INTEST", "129"),
]

ANSWERS = [
    ("A1", "FO.ACRF.999999.20260316.00001.T"),
    ("A2", "FS.ACRF.999999.20260316.00001.T"),
    ("A3", "GO.ACRF.999999.20260316.00001.T"),
    ("A4", "FO.NOTI.999999.20260316.00002.T"),
    ("A5", "CO.NOTI.999999.20260316.00002.T"),
]


@pytest.mark.parametrize(("row", "name", "directory"), VALID, ids=[r[0] for r in VALID])
def test_valid_upload_names_4_7(row: str, name: str, directory: str) -> None:
    parsed = parse_upload(name, RULES, channel(directory))
    assert str(parsed) == name
    pattern = UPLOAD_FI_FS if parsed.prefix in ("FI", "FS") else UPLOAD_GO_TD
    assert pattern.fullmatch(name)


@pytest.mark.parametrize(("row", "name", "directory", "code"), INVALID,
                         ids=[r[0] for r in INVALID])
def test_invalid_upload_names_4_7(row: str, name: str, directory: str, code: str) -> None:
    with pytest.raises(ChannelError) as info:
        parse_upload(name, RULES, channel(directory))
    assert info.value.code == code
    assert info.value.subject == name
    assert info.value.error_id in str(info.value)


@pytest.mark.parametrize(("row", "name"), ANSWERS, ids=[r[0] for r in ANSWERS])
def test_answer_names_4_7(row: str, name: str) -> None:
    parsed = parse_answer(name)
    assert parsed.is_answer and parsed.tail is None
    assert str(parsed) == name
    assert answer_name(parsed.prefix, parsed.appl, parsed.date, parsed.seq, parsed.env) == name


def test_filename_parts() -> None:
    fi = parse_upload("FI.FLAC.123456.20260316.00003.T.3.2", RULES)
    assert fi.stem == "FLAC.123456.20260316.00003.T"
    assert fi.set_key == "123456.20260316.00003.T"
    assert fi.tail == "3.2"
    assert fi.day == TODAY
    go = parse_upload("GO.FLAC.123456.20260316.00003.T.3", RULES)
    assert go.tail == "3" and go.index is None
    assert fi.sibling("GO") == go
    assert str(fi.sibling("FS")) == "FS.FLAC.123456.20260316.00003.T.3.2"
    assert str(go.sibling("FI", 1)) == "FI.FLAC.123456.20260316.00003.T.3.1"


def test_set_key_ignores_application() -> None:
    flac = parse_upload("GO.FLAC.123456.20260316.00001.T.1", RULES)
    dmfa = parse_upload("GO.DMFA.123456.20260316.00001.T.1", RULES)
    assert flac.set_key == dmfa.set_key and flac.stem != dmfa.stem


def test_without_channel_n9_is_skipped() -> None:
    # I25/I26/I29 pass N1-N8: only the channel context rejects them.
    for _, name, _, _ in INVALID[24:31]:
        assert parse_upload(name, RULES).prefix in ("FI", "GO")


def test_part_checks_apply_to_total_before_index() -> None:
    # Spec 4.5 N8a: the tail 0.10 gives 116 (TOTAL zero), not 114 (INDEX of 2 characters).
    with pytest.raises(ChannelError) as info:
        parse_upload("FI.FLAC.123456.20260316.00001.T.0.10", RULES)
    assert info.value.code == "116"
    with pytest.raises(ChannelError) as info:
        parse_upload("FI.FLAC.123456.20260316.00001.T.1.10", RULES)
    assert info.value.code == "114"


def test_superscript_digit_is_not_a_digit() -> None:
    with pytest.raises(ChannelError) as info:
        parse_upload("GO.FLAC.123456.20260316.00001.T.²", RULES)
    assert info.value.code == "115"


def test_modelled_limits_are_configurable() -> None:
    name = "FI.FLAC.123456.20260316.00001.T.4.1"
    with pytest.raises(ChannelError) as info:
        parse_upload(name, NameRules(today=TODAY, max_parts=3))
    assert info.value.code == "128"
    old = "FI.FLAC.123456.20251215.00001.T.1.1"  # I14, 91 days
    assert parse_upload(old, NameRules(today=TODAY, max_age_days=91)).date == "20251215"


def test_check_order_date_before_sequence_before_env() -> None:
    # Several defects: the earliest step of 4.5 wins.
    cases = {
        "FI.FLAC.123456.20260317.0000.X.0.1": "111",
        "FI.FLAC.123456.20260316.0000.X.0.1": "112",
        "FI.FLAC.123456.20260316.00000.X.0.1": "127",
        "FI.FLAC.123456.20260316.00001.X.0.1": "117",
        "FI.FLAC.654321.20260316.00001.R.1.1": "108",
    }
    for name, code in cases.items():
        with pytest.raises(ChannelError) as info:
            parse_upload(name, RULES, channel("INTEST"))
        assert info.value.code == code, name


def test_formatting_helpers() -> None:
    assert upload_name("FI", "FLAC", "123456", TODAY, "00001", "T", 3, 2) == (
        "FI.FLAC.123456.20260316.00001.T.3.2")
    assert upload_name("GO", "FLAC", "123456", "20260316", "00001", "T", 3) == (
        "GO.FLAC.123456.20260316.00001.T.3")
    assert answer_name("FO", "NOTI", TODAY, 2, "T") == "FO.NOTI.999999.20260316.00002.T"
    for bad in (("FI", "FLAC", "123456", TODAY, "00001", "T", 2, 3),
                ("GO", "FLAC", "123456", TODAY, "00001", "T", 1, 1),
                ("FI", "FLAC", "12345", TODAY, "00001", "T", 1, 1)):
        with pytest.raises(ValueError):
            upload_name(*bad)
    with pytest.raises(ValueError):
        parse_answer("FO.ACRF.123456.20260316.00001.T")


# ---- properties -----------------------------------------------------------------------------

_seq = st.from_regex(r"[0-9A-Z]{5}", fullmatch=True).filter(lambda s: s != "00000")


@st.composite
def upload_names(draw: st.DrawFn) -> FileName:
    prefix = draw(st.sampled_from(["FI", "FS", "GO", "TD"]))
    total = draw(st.integers(1, 9))
    index = draw(st.integers(1, total)) if prefix in ("FI", "FS") else None
    day = TODAY - timedelta(days=draw(st.integers(0, 90)))
    return FileName(
        prefix, draw(st.from_regex(r"[A-Z0-9]{4}", fullmatch=True)),
        draw(st.from_regex(r"[0-9]{6}", fullmatch=True)), f"{day:%Y%m%d}", draw(_seq),
        draw(st.sampled_from(["R", "T", "S"])), total, index,
    )


@given(upload_names())
def test_format_parse_identity(name: FileName) -> None:
    text = upload_name(name.prefix, name.appl, name.sender, name.date, name.seq, name.env,
                       name.total or 0, name.index)
    assert text == str(name)
    assert parse_upload(text, RULES) == name


_name_alphabet = st.sampled_from([*"FISGOTD.0123456789ARSXZ-a²", "FLAC", "123456"])


@given(st.one_of(st.text(max_size=60), st.lists(_name_alphabet, max_size=40).map("".join)))
def test_parse_upload_raises_only_channel_error(text: str) -> None:
    try:
        parse_upload(text, RULES, channel())
    except ChannelError as exc:
        assert exc.code.isdigit() and len(exc.code) == 3


@given(st.integers(1, 99_999 + 26 * 36**4))
def test_sequence_order_roundtrip(ordinal: int) -> None:
    seq = sequence_at(ordinal)
    assert len(seq) == 5 and seq != "00000"
    assert sequence_ordinal(seq) == ordinal
    assert ANSWER.fullmatch(f"FO.ACRF.999999.20260316.{seq}.T")


def test_sequence_order_edges() -> None:
    assert [sequence_at(i) for i in (1, 2, 99_999, 100_000, 100_001)] == [
        "00001", "00002", "99999", "A0000", "A0001"]
    assert sequence_at(99_999 + 26 * 36**4) == "ZZZZZ"
    assert sequence_ordinal("0000A") is None


# ---- allocator ------------------------------------------------------------------------------

def test_allocator_is_sequential_and_persistent(tmp_path: Path) -> None:
    state = tmp_path / "seq.json"
    first = SequenceAllocator(state)
    assert [first.allocate("123456", TODAY, "T") for _ in range(3)] == ["00001", "00002", "00003"]
    # Another environment or date has its own counter (set keys differ, spec 4.6).
    assert first.allocate("123456", TODAY, "R") == "00001"
    assert first.allocate("123456", "20260315", "T") == "00001"
    again = SequenceAllocator(state)  # a later run
    assert again.allocate("123456", TODAY, "T") == "00004"
    assert again.is_used("123456", TODAY, "T", "00002")
    assert not again.is_used("123456", TODAY, "T", "00005")


def test_allocator_skips_reserved(tmp_path: Path) -> None:
    alloc = SequenceAllocator(tmp_path / "seq.json")
    alloc.reserve("123456", TODAY, "T", "00002")
    alloc.reserve("123456", TODAY, "T", "00003")
    alloc.reserve("123456", TODAY, "T", "24AZG")
    assert alloc.allocate("123456", TODAY, "T") == "00001"
    assert alloc.allocate("123456", TODAY, "T") == "00004"
    assert alloc.is_used("123456", TODAY, "T", "24AZG")
    with pytest.raises(ValueError):
        alloc.reserve("123456", TODAY, "T", "00000")


def test_allocator_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    alloc = SequenceAllocator(tmp_path / "seq.json", last_ordinal=2)
    alloc.allocate("123456", TODAY, "T")
    alloc.reserve("123456", TODAY, "T", "00002")
    with pytest.raises(SequenceExhausted, match=r"no sequence left for 123456\.20260316\.T"):
        alloc.allocate("123456", TODAY, "T")


def test_allocator_rejects_bad_keys_and_corrupt_state(tmp_path: Path) -> None:
    state = tmp_path / "seq.json"
    alloc = SequenceAllocator(state)
    with pytest.raises(ValueError, match="not a sender"):
        alloc.allocate("12345", TODAY, "T")
    state.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        alloc.allocate("123456", TODAY, "T")


def _allocate_many(state: str, count: int, out: multiprocessing.Queue) -> None:
    alloc = SequenceAllocator(Path(state))
    out.put([alloc.allocate("123456", "20260316", "T") for _ in range(count)])


def test_two_processes_never_get_the_same_sequence(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    state = str(tmp_path / "seq.json")
    procs = [ctx.Process(target=_allocate_many, args=(state, 40, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    every = results[0] + results[1]
    assert len(set(every)) == 80
    assert sorted(every) == [f"{i:05d}" for i in range(1, 81)]


# --- elements read without checks: the helpers every module groups files by -------------------

@pytest.mark.parametrize(("name", "prefix", "stem", "exact"), [
    ("GO.FLAC.123456.20260316.00001.T.1", "GO", "FLAC.123456.20260316.00001.T", True),
    ("FI.FLAC.123456.20260316.00001.T.2.1", "FI", "FLAC.123456.20260316.00001.T", True),
    ("GO.FLAC.123456.20260316.00001.T.1.1", "GO", "FLAC.123456.20260316.00001.T", False),
    ("FS.A.B.C.D.E.F.G.H", "FS", "A.B.C.D.E", False),  # elements as written, unchecked
    ("XX.A.B.C.D.E.F", "XX", "A.B.C.D.E", False),  # any prefix: None only when exact
    ("GO.A.B.C.D.E", "GO", None, False),  # six elements: too few
    ("export.csv", "export", None, False),
    ("nodot", "nodot", None, False),
    ("", "", None, False),
])
def test_prefix_and_stem_of_any_name(name: str, prefix: str, stem: str | None,
                                     exact: bool) -> None:
    assert prefix_of(name) == prefix
    assert stem_of(name) == stem
    assert stem_of(name, exact=True) == (stem if exact else None)


@given(st.text(alphabet="AB.", max_size=30))
def test_stem_of_is_elements_two_to_six_of_names_with_seven_or_more(name: str) -> None:
    parts = name.split(".")
    assert stem_of(name) == (".".join(parts[1:6]) if len(parts) >= 7 else None)


def test_stem_of_agrees_with_the_parsed_name() -> None:
    for name in ("GO.FLAC.123456.20260316.00001.T.1", "FI.FLAC.123456.20260316.0000A.S.3.2",
                 "TD.DMFA.123456.20260301.ZZZZZ.R.9"):
        parsed = parse_upload(name, RULES)
        stem = stem_of(name, exact=True)
        assert stem == parsed.stem and stem_set_key(stem) == parsed.set_key
        assert stem_env(stem) == parsed.env and prefix_of(name) == parsed.prefix


def test_tail_and_with_prefix() -> None:
    fo = "FO.FLAC.999999.20260316.00001.T"
    assert tail_of(fo) == "FLAC.999999.20260316.00001.T"
    assert with_prefix(fo, "FS") == "FS.FLAC.999999.20260316.00001.T"
    assert with_prefix("FI.FLAC.123456.20260316.00001.T.1.1", "FS").startswith("FS.FLAC.")
    with pytest.raises(ValueError, match="no prefix"):
        tail_of("FO")
