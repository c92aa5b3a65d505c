"""INSZ/NISS and KBO/BCE rules of spec 10 (tables 10.1 and 10.2 are test cases)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fla_core.identifiers import (
    SENDER_PATTERN,
    InssInfo,
    channel_user_problem,
    format_inss,
    format_kbo,
    has_inss_form,
    has_kbo_form,
    inss_check_digits,
    inss_info,
    inss_problem,
    is_valid_inss,
    is_valid_kbo,
    kbo_problem,
    make_inss,
    make_kbo,
    normalize_inss,
    normalize_kbo,
    normalize_noss,
    noss_problem,
    sender_problem,
)

# Table 10.1: (INSZ, expected problem). The 10-digit row is a schema error in FI files; this
# module reports it as structure ("901").
INSS_TABLE = [
    ("93051822361", None),
    ("00012556777", None),
    ("01051200511", None),
    ("85073003328", None),
    ("90231500148", None),
    ("02510700222", None),
    ("93051822362", "004"),
    ("93051822300", "004"),
    ("93051822398", "004"),
    ("93131822320", "901"),
    ("93051800090", "901"),
    ("9305182236", "901"),
    ("00012556748", None),  # the note under the table: rule 1900, born in 1900
    # Check digits 97: the first 9 digits (rule 1900) or 2 000 000 000 + them (rule 2000) are a
    # multiple of 97, remainder 0 gives 97, never 00.
    ("85010101697", None),  # 850101016 mod 97 = 0
    ("00010100697", None),  # (2 000 101 006) mod 97 = 0
    ("85010101600", "004"),
    ("00010100600", "004"),
]

KBO_TABLE = [
    ("0566988259", None),
    ("0897223670", None),
    ("0123456749", None),
    ("0477472701", None),
    ("1000000021", None),
    ("1023456797", None),
    ("0566988258", "004"),
    ("0897223607", "004"),
    ("0123456700", "004"),
    ("1023456750", "004"),
    ("2000000042", "901"),
    ("123456749", "901"),
]


@pytest.mark.parametrize(("value", "expected"), INSS_TABLE)
def test_inss_table_10_1(value: str, expected: str | None) -> None:
    assert inss_problem(value) == expected
    assert is_valid_inss(value) is (expected is None)


@pytest.mark.parametrize(("value", "expected"), KBO_TABLE)
def test_kbo_table_10_2(value: str, expected: str | None) -> None:
    assert kbo_problem(value) == expected
    assert is_valid_kbo(value) is (expected is None)


@pytest.mark.parametrize(
    ("value", "info"),
    [
        ("93051822361", InssInfo(1900, 1993, 5, 18, "M", False, 223)),
        ("00012556777", InssInfo(2000, 2000, 1, 25, "M", False, 567)),
        ("01051200511", InssInfo(2000, 2001, 5, 12, "M", False, 5)),
        ("85073003328", InssInfo(1900, 1985, 7, 30, "M", False, 33)),
        ("90231500148", InssInfo(1900, 1990, 3, 15, None, True, 1)),
        ("02510700222", InssInfo(2000, 2002, 11, 7, "F", True, 2)),
        ("00012556748", InssInfo(1900, 1900, 1, 25, "M", False, 567)),
    ],
)
def test_inss_info_decodes_table_rows(value: str, info: InssInfo) -> None:
    assert inss_info(value) == info


def test_check_digits_97_when_the_remainder_is_0() -> None:
    assert inss_check_digits("850101016") == "97"
    assert inss_check_digits("000101006", born_2000=True) == "97"
    assert (inss_info("85010101697").century, inss_info("85010101697").year) == (1900, 1985)
    assert (inss_info("00010100697").century, inss_info("00010100697").year) == (2000, 2000)
    assert make_inss(date(1985, 1, 1), 16) == "85010101697"
    assert make_inss(date(2000, 1, 1), 6) == "00010100697"


def test_inss_info_birth_date_and_unknowns() -> None:
    assert inss_info("93051822361").birth_date == date(1993, 5, 18)
    unknown = make_inss(None, 12, year=1970)
    decoded = inss_info(unknown)
    assert (decoded.month, decoded.day, decoded.birth_date) == (None, None, None)
    assert decoded.year == 1970


def test_inss_info_rejects_invalid_with_code() -> None:
    with pytest.raises(ValueError, match="004"):
        inss_info("93051822362")


@pytest.mark.parametrize(
    "value",
    [
        "93131822320",  # month 13
        "93191822361",  # month 19 (between ranges)
        "93331822361",  # month 33
        "93531822361",  # month 53
        "93053222361",  # day 32
        "93051899961",  # counter 999
        "9305182236a",
        "930518223611",
        "",
        "93.05.18-223.61",  # written form is not the file form
        "٩٣٠٥١٨٢٢٣٦١",  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_inss_structure_901(value: str) -> None:
    assert inss_problem(value) == "901"


def test_structure_checked_before_check_digits() -> None:
    # Month 13 with check digits that satisfy rule 1900: still 901, not valid.
    body = "931318223"
    assert inss_problem(body + inss_check_digits(body)) == "901"
    # Counter 000 with matching check digits.
    body = "930518000"
    assert inss_problem(body + inss_check_digits(body)) == "901"


def test_kbo_first_digit_then_check_digits() -> None:
    for first in "23456789":
        body = first + "1234567"
        assert kbo_problem(body + f"{97 - int(body) % 97:02d}") == "901"


def test_non_string_input_is_structure() -> None:
    assert inss_problem(93051822361) == "901"  # type: ignore[arg-type]
    assert kbo_problem(None) == "901"  # type: ignore[arg-type]


def test_noss_format_only() -> None:
    assert noss_problem("042979535") is None
    assert noss_problem("42979535") == "901"
    assert noss_problem("04297953A") == "901"


def test_format_and_normalize() -> None:
    assert format_inss("93051822361") == "93.05.18-223.61"
    assert normalize_inss("93.05.18-223.61") == "93051822361"
    assert normalize_inss("93/05/18-223.61") == "93051822361"
    assert normalize_inss("93 05 18\u00a0223 61") == "93051822361"  # Excel's no-break space
    assert normalize_noss("042-9795-35") == "042979535"
    assert format_kbo("0123456749") == "0123.456.749"
    assert format_kbo("123456749") == "0123.456.749"
    assert normalize_kbo("BE 0123.456.749") == "0123456749"
    assert normalize_kbo("be0123456749") == "0123456749"
    assert normalize_kbo("123.456.749") == "0123456749"
    assert normalize_kbo("\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0664\u0669") == \
        "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0664\u0669"  # not padded: not 0-9
    with pytest.raises(ValueError, match="11 digits"):
        format_inss("123")
    with pytest.raises(ValueError, match="10 digits"):
        format_kbo("12")


def test_make_inss_rules() -> None:
    assert make_inss(date(1993, 5, 18), 223) == "93051822361"
    assert make_inss(date(2002, 11, 7), 2, bis="sex-known") == "02510700222"
    assert make_inss(date(1990, 3, 15), 1, bis="sex-unknown") == "90231500148"
    with pytest.raises(ValueError):
        make_inss(date(1990, 3, 15), 999)
    with pytest.raises(ValueError):
        make_inss(None, 1)


# ---- properties -----------------------------------------------------------------------------

births = st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31))
counters = st.integers(min_value=1, max_value=998)
bis_kinds = st.sampled_from([None, "sex-unknown", "sex-known"])


@given(births, counters, bis_kinds)
def test_made_inss_is_valid_and_decodes_back(birth: date, counter: int, bis) -> None:
    value = make_inss(birth, counter, bis=bis)
    assert inss_problem(value) is None
    info = inss_info(value)
    assert info.birth_date == birth
    assert info.century == (2000 if birth.year >= 2000 else 1900)
    assert info.bis is (bis is not None)
    assert info.counter == counter
    if bis != "sex-unknown":
        assert info.sex == ("M" if counter % 2 else "F")


@given(births, counters, st.integers(min_value=1, max_value=96))
def test_changing_check_digits_breaks_the_number_unless_other_rule(
    birth: date, counter: int, delta: int
) -> None:
    value = make_inss(birth, counter)
    cc = (int(value[9:]) + delta - 1) % 97 + 1  # another value in 1..97
    other = value[:9] + f"{cc:02d}"
    other_rule = {inss_check_digits(value[:9]), inss_check_digits(value[:9], born_2000=True)}
    assert inss_problem(other) == (None if other[9:] in other_rule else "004")


@given(st.integers(min_value=0, max_value=19_999_999))
def test_made_kbo_is_valid_and_any_other_check_digit_is_004(body: int) -> None:
    value = make_kbo(body)
    assert kbo_problem(value) is None
    assert format_kbo(value).replace(".", "") == value
    for cc in ("00", "98", f"{(int(value[8:]) % 97) + 1:02d}"):
        assert kbo_problem(value[:8] + cc) == "004"


@given(st.text(max_size=20))
def test_problem_functions_never_raise(text: str) -> None:
    assert inss_problem(text) in (None, "901", "004")
    assert kbo_problem(text) in (None, "901", "004")
    assert noss_problem(text) in (None, "901")


@given(st.from_regex(r"[0-9]{11}", fullmatch=True))
def test_two_rules_never_both_match(value: str) -> None:
    body = value[:9]
    assert inss_check_digits(body) != inss_check_digits(body, born_2000=True)


@pytest.mark.parametrize(("value", "problem"), [
    ("123456", None),
    ("000001", None),
    ("000000", "reserved"),  # spec 3.1: never a channel's sender number
    ("999999", "reserved"),  # the sender number of the channel's own answers
    ("12345", "901"),
    ("1234567", "901"),
    ("12a456", "901"),
    ("\u0661\u0662\u0663\u0664\u0665\u0666", "901"),  # digits, but not ASCII ones
])
def test_sender_number(value, problem):
    assert sender_problem(value) == problem
    assert (re.fullmatch(SENDER_PATTERN, value) is not None) is (problem != "901")


@pytest.mark.parametrize(("value", "form"), [
    ("93051822362", True),  # the form only: check digits are the business rules' concern
    ("9305182236", False),
    ("930518223611", False),
    ("93.05.18-223.61", False),  # normalise first
    ("\u0669\u0663\u0660\u0665\u0661\u0668\u0662\u0662\u0663\u0666\u0661", False),
])
def test_inss_form(value, form):
    assert has_inss_form(value) is form


def test_kbo_form():
    assert has_kbo_form("0123456700") and has_kbo_form("2000000042")
    assert not has_kbo_form("123456749") and not has_kbo_form("0123.456.749")
    assert not has_kbo_form("\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0664\u0669")
    assert not has_kbo_form(123456749)  # type: ignore[arg-type]


@pytest.mark.parametrize("user", ["acme-payroll", "ACME_2", "a", "9", "a.b", "x" * 64])
def test_plain_channel_usernames(user):
    assert channel_user_problem(user) is None


@pytest.mark.parametrize("user", [
    ".", "..",  # the root would be the channels folder or the simulator home
    ".hidden", "-opt", "_x",  # a letter or digit first
    "a..b", "acme..",  # no ".." anywhere
    "../etc", "a/b", "a b", "", "x" * 65, "acm\u00e9",
])
def test_channel_usernames_that_are_not_plain(user):
    assert "not a plain name" in (channel_user_problem(user) or "")
