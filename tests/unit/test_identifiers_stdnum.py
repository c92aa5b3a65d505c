"""Differential properties: fla_core.identifiers against python-stdnum, an independent
implementation of the same Belgian numbers (``stdnum.be.nn``, ``stdnum.be.bis``,
``stdnum.be.vat``).

The spec (10.1, 10.2) and stdnum do not agree everywhere; each property draws only from the
numbers where they do, and every place where they differ is said next to the restriction that
leaves it out. A difference inside those domains is a fault in one of the two: read the spec.
"""

from __future__ import annotations

from datetime import date

from hypothesis import assume, example, given
from hypothesis import strategies as st
from stdnum.be import bis, nn, vat

from fla_core.identifiers import (
    inss_check_digits,
    inss_info,
    inss_problem,
    kbo_check_digits,
    kbo_problem,
    normalize_inss,
    normalize_kbo,
)

THIS_YEAR = date.today().year
# stdnum calls these the fictitious birth dates of a person whose date of birth was unknown
# (1900/00/01, 2000/00/01): it decodes no birth year from them, the spec decodes YY as usual.
FICTITIOUS = ("000001", "002001", "004001")
SEPARATORS = " .-"  # what both strip (the spec also strips "/" and any whitespace)


def _edges(edges: list[int], low: int, high: int) -> st.SearchStrategy[int]:
    """Any integer of low..high, the edges of the spec's ranges half of the time."""
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


@st.composite
def insz(draw: st.DrawFn) -> str:
    """An 11-digit INSZ in the domain where spec 10.1 and stdnum agree; valid about 2/3 of the
    time (check digits by either rule), otherwise the check digits are random."""
    # every month 00-99 (register 00-12, BIS 20-32 and 40-52, the rest invalid for both), but:
    # - the day is at most 31: stdnum takes a day beyond the month's end (32-99 too) for an
    #   unknown day and accepts it, the spec refuses a day above 31 (901);
    # - the counter is 001-998: stdnum accepts 000 and 999, the spec refuses them (901).
    yy = draw(_edges([0, THIS_YEAR - 2000, THIS_YEAR - 1999, 99], 0, 99))
    month = draw(_edges([0, 1, 12, 13, 19, 20, 21, 32, 33, 39, 40, 41, 52, 53, 60, 99], 0, 99))
    day, counter = draw(_edges([0, 1, 29, 30, 31], 0, 31)), draw(_edges([1, 2, 998], 1, 998))
    body = f"{yy:02d}{month:02d}{day:02d}{counter:03d}"
    cc = draw(st.sampled_from([inss_check_digits(body),
                               inss_check_digits(body, born_2000=True),
                               f"{draw(st.integers(0, 99)):02d}"]))
    # stdnum tries rule 2000 only for a birth year not after this year; the spec accepts
    # either rule whatever the year (a number of someone born in 2087 is valid for it).
    assume(cc != inss_check_digits(body, born_2000=True) or 2000 + yy <= THIS_YEAR)
    return body + cc


def stdnum_valid_insz(value: str) -> bool:
    """stdnum's verdict: a register number (nn) or a BIS number (bis)."""
    return nn.is_valid(value) or bis.is_valid(value)


@given(insz())
@example("85010101697")  # rule 1900, remainder 0: check digits 97
@example("00010100697")  # rule 2000, remainder 0: check digits 97
@example("85010101600")  # 00 is never valid
@example("93051822361")
@example("90231500148")  # BIS, sex unknown
@example("02510700222")  # BIS, sex known, rule 2000
@example("00000100166")  # stdnum's fictitious date, rule 1900
def test_insz_validity_agrees_with_stdnum(value: str) -> None:
    assert (inss_problem(value) is None) is stdnum_valid_insz(value), value


def test_insz_structure_edges_agree_with_stdnum() -> None:
    # every month 00-99 at the edges of the day and counter ranges, with the check digits of
    # each rule (rule 2000 only for a birth year stdnum tries it for): random drawing would
    # reach a month like 53 too seldom to notice a range that is one too wide
    disagree = []
    for yy in (0, 85, THIS_YEAR - 2000):
        for month in range(100):
            for day in (0, 1, 29, 30, 31):
                for counter in (1, 2, 997, 998):
                    body = f"{yy:02d}{month:02d}{day:02d}{counter:03d}"
                    rules = (False, True) if 2000 + yy <= THIS_YEAR else (False,)
                    for born_2000 in rules:
                        value = body + inss_check_digits(body, born_2000=born_2000)
                        if (inss_problem(value) is None) is not stdnum_valid_insz(value):
                            disagree.append(value)
    assert disagree == []


@given(insz())
@example("85010101697")
@example("00010100697")
@example("02510700222")
def test_what_a_valid_insz_tells_agrees_with_stdnum(value: str) -> None:
    assume(inss_problem(value) is None)
    info = inss_info(value)
    # both: no birth date when the month or the day is 00 or the day is beyond the month's end
    assert info.birth_date == nn.get_birth_date(value)
    if value[:6] not in FICTITIOUS:
        assert info.year == nn.get_birth_year(value)
    # a BIS number with month + 20 does not tell the sex; with month + 40 it does
    sex = bis.get_gender(value) if int(value[2:4]) >= 20 else nn.get_gender(value)
    assert info.sex == sex


@given(st.integers(0, 19_999_999), st.integers(1, 97), st.booleans())
@example(10234567, 97, True)  # remainder 0: check digits 97 (spec table 10.2)
@example(10234567, 50, False)
def test_kbo_validity_agrees_with_stdnum(body: int, cc: int, right: bool) -> None:
    # - only a first digit 0 or 1 (body < 2 * 10**7): stdnum before 2.2 does not check it;
    # - only check digits 01-97: stdnum tests (first 8 + CC) mod 97 == 0, so it also accepts
    #   00 where the spec wants 97, and 98 or 99 where it wants 01 or 02.
    first8 = f"{body:08d}"
    value = first8 + (kbo_check_digits(first8) if right else f"{cc:02d}")
    assert (kbo_problem(value) is None) is vat.is_valid(value), value


@given(insz(), st.lists(st.sampled_from(SEPARATORS), min_size=11, max_size=11))
def test_insz_normalisation_agrees_with_stdnum(value: str, separators: list[str]) -> None:
    written = "".join(d + s for d, s in zip(value, separators, strict=True))
    assert normalize_inss(written) == nn.compact(written) == value


@given(st.integers(0, 19_999_999), st.lists(st.sampled_from(SEPARATORS), min_size=10,
                                           max_size=10), st.sampled_from(["", "BE", "be", "BE "]))
def test_kbo_normalisation_agrees_with_stdnum(body: int, separators: list[str],
                                              prefix: str) -> None:
    value = f"{body:08d}" + kbo_check_digits(f"{body:08d}")
    # sometimes the 9-digit form of numbers issued before 2023: both put the leading 0 back
    digits = value[1:] if value[0] == "0" and separators[0] == " " else value
    written = prefix + "".join(d + s for d, s in zip(digits, separators, strict=False))
    assert normalize_kbo(written) == vat.compact(written) == value
