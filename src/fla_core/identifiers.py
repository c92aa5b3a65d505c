"""Belgian identifiers: INSZ/NISS (with BIS numbers), KBO/BCE enterprise numbers (spec 10), NOSS
registration numbers (spec 7.3), and the channel's sender number and username (spec 3.1).

This is the one place where these are normalised and validated: the input formats, both command
lines, the simulator configuration, mandates and file names all call it, so that no entry point
accepts a value another one refuses. "Digits" always means the ASCII digits 0-9: ``str.isdigit``
and ``\\d`` also accept Arabic-Indic and other digits, which no file name or FI can carry.

The ``*_problem`` functions return the NOTI code of spec 8.3 (rows 9-10, 16-17, 20-21) or None:

* ``"901"`` -- structure invalid. This module also answers ``"901"`` for text that is not made of
  exactly the right number of digits: in an FI that case is already a schema error (``ACRF-312``)
  before the business rules run, so ``901`` only matters for callers checking loose input
  (CSV exports, command-line arguments).
* ``"004"`` -- structure fine, check digits wrong.

``sender_problem`` also answers ``"reserved"``; ``channel_user_problem`` answers a phrase for the
error message (a username has no NOTI code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Literal

STRUCTURE = "901"
CHECK_DIGITS = "004"
RESERVED = "reserved"

# Spec 3.1: never allocated to a channel (999999 signs the channel's own answers, spec 4.2).
RESERVED_SENDERS = frozenset({"000000", "999999"})

# The sender element of every file name (spec 4.2): the name patterns of fla_core.names and
# fla_core.triplet are built from this text.
SENDER_PATTERN = "[0-9]{6}"

_INSS_RE = re.compile(r"[0-9]{11}")
_KBO_RE = re.compile(r"[0-9]{10}")
_NOSS_RE = re.compile(r"[0-9]{9}")
_SENDER_RE = re.compile(SENDER_PATTERN)
_DIGITS9 = _NOSS_RE
_BODY8_RE = re.compile(r"[0-9]{8}")
# What people write between the digits: 93.05.18-223.61, 93/05/18-223.61, 042-9795-35 and any
# whitespace (exports often carry a no-break space).
_SEPARATORS_INSS = re.compile(r"[.\-\s/]")
_SEPARATORS_NOSS = _SEPARATORS_INSS
_SEPARATORS_KBO = re.compile(r"[.\-\s]")

# Spec 3.1 allows [A-Za-z0-9._-]{1,64}. The name is also the folder of the channel's root
# (channels/<user>), so it must start with a letter or digit ("." and ".." would make the root
# the channels folder or the home itself; "-x" reads as an option) and hold no "..".
_CHANNEL_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CHANNEL_USER_GRAMMAR = ("1 to 64 characters of A-Z a-z 0-9 . _ -, starting with a letter or "
                        "a digit, without '..'")

# Rule 2000 adds a leading "2" to the 9 first digits (spec 10.1).
_RULE_2000_OFFSET = 2_000_000_000

Sex = Literal["M", "F"]


def _mod97_complement(number: int) -> int:
    """97 - (number mod 97): a remainder 0 gives 97, so the result is never 0."""
    return 97 - number % 97


def inss_check_digits(first9: str, *, born_2000: bool = False) -> str:
    """The two check digits of an INSZ from its first 9 digits (rule 2000 when ``born_2000``)."""
    if not _DIGITS9.fullmatch(first9):
        raise ValueError(f"INSZ body must be 9 digits, got {first9!r}")
    n = int(first9) + (_RULE_2000_OFFSET if born_2000 else 0)
    return f"{_mod97_complement(n):02d}"


def kbo_check_digits(first8: str) -> str:
    """The two check digits of an enterprise number from its first 8 digits."""
    if not _BODY8_RE.fullmatch(first8):
        raise ValueError(f"enterprise number body must be 8 digits, got {first8!r}")
    return f"{_mod97_complement(int(first8)):02d}"


def _inss_structure_ok(value: str) -> bool:
    month = int(value[2:4])
    day = int(value[4:6])
    counter = int(value[6:9])
    month_ok = 0 <= month <= 12 or 20 <= month <= 32 or 40 <= month <= 52
    return month_ok and day <= 31 and 1 <= counter <= 998


def _inss_century(value: str) -> int | None:
    """1900 or 2000 for the check-digit rule that matches, None when neither does."""
    cc = value[9:]
    if cc == inss_check_digits(value[:9]):
        return 1900
    if cc == inss_check_digits(value[:9], born_2000=True):
        return 2000
    return None


# The checks ask about the same few numbers again and again (a worker in every declaration, a
# provider in every training): answers are cached, bounded so a huge file cannot grow memory.
_CACHE_SIZE = 4096


def inss_problem(value: str) -> str | None:
    """None for a valid INSZ, ``"901"`` for its structure, ``"004"`` for its check digits."""
    if not isinstance(value, str):
        return STRUCTURE
    return _inss_problem(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _inss_problem(value: str) -> str | None:
    if not _INSS_RE.fullmatch(value):
        return STRUCTURE
    if not _inss_structure_ok(value):
        return STRUCTURE
    if _inss_century(value) is None:
        return CHECK_DIGITS
    return None


def kbo_problem(value: str) -> str | None:
    """None when ``value`` is a valid 10-digit enterprise number, else ``"901"`` or ``"004"``."""
    if not isinstance(value, str):
        return STRUCTURE
    return _kbo_problem(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _kbo_problem(value: str) -> str | None:
    if not _KBO_RE.fullmatch(value):
        return STRUCTURE
    if value[0] not in "01":
        return STRUCTURE
    if value[8:] != kbo_check_digits(value[:8]):
        return CHECK_DIGITS
    return None


def noss_problem(value: str) -> str | None:
    """None when ``value`` has the NOSS registration number format (9 digits), else ``"901"``."""
    # No public check-digit rule exists (spec 7.3 zone 00113, open point 12.14): format only.
    if not isinstance(value, str) or not _NOSS_RE.fullmatch(value):
        return STRUCTURE
    return None


def sender_problem(value: str) -> str | None:
    """None for a usable sender number, else ``"901"`` (not 6 digits) or ``"reserved"``."""
    if not isinstance(value, str) or not _SENDER_RE.fullmatch(value):
        return STRUCTURE
    if value in RESERVED_SENDERS:
        return RESERVED
    return None


def channel_user_problem(value: str) -> str | None:
    """None for a usable channel username (spec 3.1), else what is wrong with it, as a phrase."""
    if not isinstance(value, str) or not _CHANNEL_USER_RE.fullmatch(value) or ".." in value:
        return f"not a plain name: use {CHANNEL_USER_GRAMMAR}"
    return None


def has_inss_form(value: str) -> bool:
    """True when ``value`` is 11 ASCII digits, the form an FI carries (the rules judge the rest)."""
    return isinstance(value, str) and _INSS_RE.fullmatch(value) is not None


def has_kbo_form(value: str) -> bool:
    """True when ``value`` is 10 ASCII digits, the form an FI carries (the rules judge the rest)."""
    return isinstance(value, str) and _KBO_RE.fullmatch(value) is not None


def is_valid_inss(value: str) -> bool:
    """True when ``value`` is a valid INSZ/NISS (register or BIS number)."""
    return inss_problem(value) is None


def is_valid_kbo(value: str) -> bool:
    """True when ``value`` is a valid 10-digit enterprise number."""
    return kbo_problem(value) is None


def normalize_inss(text: str) -> str:
    """Strip the separators people write (dots, dashes, slashes, whitespace) from an INSZ."""
    return _SEPARATORS_INSS.sub("", text)


def normalize_noss(text: str) -> str:
    """Strip the separators people write (dots, dashes, slashes, whitespace) from a NOSS number."""
    return _SEPARATORS_NOSS.sub("", text)


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_kbo(text: str) -> str:
    """Strip dots, spaces, dashes and a ``BE`` prefix; pad a 9-digit number to 10 (spec 10.2)."""
    value = _SEPARATORS_KBO.sub("", text).upper()
    if value.startswith("BE"):
        value = value[2:]
    # Numbers issued before 2023 are often written with 9 digits (the leading 0 dropped).
    if _DIGITS9.fullmatch(value):
        value = "0" + value
    return value


def format_inss(value: str) -> str:
    """The usual written form ``93.05.18-223.61`` of an 11-digit INSZ."""
    v = normalize_inss(value)
    if not _INSS_RE.fullmatch(v):
        raise ValueError(f"an INSZ has 11 digits, got {value!r}")
    return f"{v[0:2]}.{v[2:4]}.{v[4:6]}-{v[6:9]}.{v[9:11]}"


def format_kbo(value: str) -> str:
    """The usual written form ``0123.456.749`` of an enterprise number."""
    v = normalize_kbo(value)
    if not _KBO_RE.fullmatch(v):
        raise ValueError(f"an enterprise number has 10 digits, got {value!r}")
    return f"{v[0:4]}.{v[4:7]}.{v[7:10]}"


@dataclass(frozen=True)
class InssInfo:
    """What a valid INSZ tells: century rule, birth year, month, day, sex and BIS kind."""

    century: int  # 1900 or 2000: the check-digit rule that matched
    year: int
    month: int | None  # None when unknown (00)
    day: int | None  # None when unknown (00)
    sex: Sex | None  # None for a BIS number with unknown sex (month + 20)
    bis: bool
    counter: int

    @property
    def birth_date(self) -> date | None:
        """The birth date when month and day are known and form a real date."""
        if self.month is None or self.day is None:
            return None
        try:
            return date(self.year, self.month, self.day)
        except ValueError:
            return None


def inss_info(value: str) -> InssInfo:
    """Decode a valid INSZ; ValueError naming the spec code when it is invalid."""
    problem = inss_problem(value)
    if problem is not None:
        raise ValueError(f"invalid INSZ {value!r} (code {problem})")
    century = _inss_century(value)
    assert century is not None  # guaranteed by inss_problem
    raw_month = int(value[2:4])
    bis = raw_month >= 20
    month = raw_month - 40 if raw_month >= 40 else raw_month - 20 if bis else raw_month
    day = int(value[4:6])
    counter = int(value[6:9])
    sex: Sex | None = "M" if counter % 2 else "F"
    if 20 <= raw_month <= 32:
        sex = None  # BIS "sex unknown": the counter parity carries no meaning
    return InssInfo(
        century=century, year=century + int(value[:2]), month=month or None, day=day or None,
        sex=sex, bis=bis, counter=counter,
    )


def make_inss(birth: date | None, counter: int, *, bis: Literal[None, "sex-unknown", "sex-known"]
              = None, year: int | None = None) -> str:
    """Build a valid INSZ; ``birth`` None means unknown month and day (``year`` then required)."""
    if not 1 <= counter <= 998:
        raise ValueError(f"INSZ counter must be 1..998, got {counter}")
    if birth is not None:
        year, month, day = birth.year, birth.month, birth.day
    elif year is None:
        raise ValueError("make_inss needs a birth date or a year")
    else:
        month, day = 0, 0
    if not 1900 <= year <= 2099:
        raise ValueError(f"INSZ birth year must be 1900..2099, got {year}")
    month += {None: 0, "sex-unknown": 20, "sex-known": 40}[bis]
    first9 = f"{year % 100:02d}{month:02d}{day:02d}{counter:03d}"
    return first9 + inss_check_digits(first9, born_2000=year >= 2000)


def make_kbo(body: int) -> str:
    """Build a valid enterprise number from its first 8 digits given as an integer < 2*10**7."""
    if not 0 <= body < 20_000_000:
        raise ValueError(f"enterprise number body must be 0..19999999, got {body}")
    first8 = f"{body:08d}"
    return first8 + kbo_check_digits(first8)
