"""File names of the BATCH channel (spec 4): parsing, checks N1-N9 in spec order, formatting.

``parse_upload`` applies the checks of spec 4.5 one by one and raises the first failing check's
code as a :class:`~fla_core.anomalies.ChannelError`; it never raises anything else, whatever the
text. ``parse_answer`` reads the simulator's answer names (spec 4.8).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

from fla_core.anomalies import ChannelError
from fla_core.applications import KNOWN_UPLOAD_CODES
from fla_core.files import atomic_write
from fla_core.identifiers import SENDER_PATTERN
from fla_core.model import Environment

# Whole-name expressions of spec 4.2, for ``fullmatch``.
UPLOAD_FI_FS = re.compile(
    r"(FI|FS)\.([A-Z0-9]{4})\.(" + SENDER_PATTERN
    + r")\.([0-9]{8})\.([0-9A-Z]{5})\.([RTS])\.([1-9])\.([1-9])"
)
UPLOAD_GO_TD = re.compile(
    r"(GO|TD)\.([A-Z0-9]{4})\.(" + SENDER_PATTERN
    + r")\.([0-9]{8})\.([0-9A-Z]{5})\.([RTS])\.([1-9])"
)
ANSWER = re.compile(r"(FO|FS|GO|CO)\.([A-Z0-9]{4})\.(999999)\.([0-9]{8})\.([0-9A-Z]{5})\.([RTS])")

ANSWER_SENDER = "999999"
UPLOAD_PREFIXES = ("FI", "FS", "GO", "TD")
ANSWER_PREFIXES = ("FO", "FS", "GO", "CO")
# Spec 4.4; the directory of each environment is fla_core.model.Environment's.
ENVIRONMENTS = tuple(env.value for env in Environment)

# "Malformed" code of N2-N4 and the part-order code of N8e, by prefix (spec 4.5).
MALFORMED = {"FI": "131", "FS": "132", "GO": "107", "TD": "107"}
PART_ORDER = {"FI": "123", "FS": "124"}
# N9b: the code depends on the letter in the name.
WRONG_DIRECTORY = {"R": "118", "T": "119", "S": "257"}

_APPL = re.compile(r"[A-Z0-9]{4}")
_SENDER = re.compile(SENDER_PATTERN)  # N4: the sender number's grammar (fla_core.identifiers)
_DATE = re.compile(r"[0-9]{8}")
_SEQ_CHARS = re.compile(r"[0-9A-Z]*")
_DIGITS = "0123456789"  # str.isdigit() would accept "²" and other non-ASCII digits


@dataclass(frozen=True)
class FileName:
    """A parsed channel name; ``total``/``index`` are None where the prefix has no part number."""

    prefix: str
    appl: str
    sender: str
    date: str
    seq: str
    env: str
    total: int | None = None
    index: int | None = None

    @property
    def stem(self) -> str:
        """``APPL.SENDER.DATE.SEQ.ENV``: the elements a set's files share."""
        return f"{self.appl}.{self.sender}.{self.date}.{self.seq}.{self.env}"

    @property
    def set_key(self) -> str:
        """``SENDER.DATE.SEQ.ENV``: the key consumed by a processed GO/TD (spec 4.6)."""
        return f"{self.sender}.{self.date}.{self.seq}.{self.env}"

    @property
    def tail(self) -> str | None:
        """``TOTAL.INDEX`` for FI/FS, ``TOTAL`` for GO/TD, None for answers."""
        if self.total is None:
            return None
        if self.index is None:
            return str(self.total)
        return f"{self.total}.{self.index}"

    @property
    def is_answer(self) -> bool:
        """True for an answer name (no part number)."""
        return self.total is None

    @property
    def day(self) -> dt.date:  # the field `date` shadows datetime.date in the class body
        """The DATE element as a date (valid for any name that passed the checks)."""
        return dt.date(int(self.date[:4]), int(self.date[4:6]), int(self.date[6:]))

    def sibling(self, prefix: str, index: int | None = None) -> FileName:
        """The name of another file of the same upload set (FI -> FS, FI -> GO, GO -> FI part)."""
        if self.total is None:
            raise ValueError(f"{self} is an answer name: it has no set siblings")
        if prefix in ("GO", "TD"):
            return FileName(prefix, self.appl, self.sender, self.date, self.seq, self.env,
                            self.total)
        if prefix not in ("FI", "FS"):
            raise ValueError(f"{prefix!r} is not an upload prefix")
        part = index if index is not None else self.index
        if part is None:
            raise ValueError(f"an {prefix} name needs a part index")
        return FileName(prefix, self.appl, self.sender, self.date, self.seq, self.env,
                        self.total, part)

    def __str__(self) -> str:
        tail = self.tail
        return f"{self.prefix}.{self.stem}" + (f".{tail}" if tail is not None else "")


@dataclass(frozen=True)
class NameRules:
    """Modelled limits of the name checks (spec 5.8), with today's date."""

    today: date
    max_age_days: int = 90
    max_parts: int = 9

    @classmethod
    def of(cls, settings: _NameLimits, today: date) -> NameRules:
        """The rules of a configuration (``fla_core.settings.Settings``) on ``today``."""
        return cls(today=today, max_age_days=settings.max_age_days, max_parts=settings.max_parts)


@dataclass(frozen=True)
class ChannelNameContext:
    """What the N9 checks need: the channel's sender, the upload directory, enabled codes."""

    sender: str
    directory: str
    enabled: frozenset[str]

    @classmethod
    def of(cls, channel: _Channel, directory: str) -> ChannelNameContext:
        """The context of an upload to ``directory`` of ``channel`` (a
        ``fla_core.settings.ChannelProfile`` or the simulator's ``ChannelConfig``): the one
        place that says which of a channel's values the N9 checks see."""
        return cls(sender=channel.sender, directory=directory,
                   enabled=frozenset(channel.applications))


class _NameLimits(Protocol):
    @property
    def max_age_days(self) -> int: ...
    @property
    def max_parts(self) -> int: ...


class _Channel(Protocol):
    @property
    def sender(self) -> str: ...
    @property
    def applications(self) -> Iterable[str]: ...


def _check_part(text: str, rules: NameRules, name: str, what: str) -> int:
    """N8a-N8d for one part number."""
    if len(text) != 1:
        raise ChannelError("114", f"{what} {text!r} is not 1 character", subject=name)
    if text not in _DIGITS:
        raise ChannelError("115", f"{what} {text!r} is not a digit", subject=name)
    if text == "0":
        raise ChannelError("116", f"{what} is zero", subject=name)
    value = int(text)
    if value > rules.max_parts:
        raise ChannelError("128", f"{what} {value} above the maximum {rules.max_parts}",
                           subject=name)
    return value


def _check_date(text: str, rules: NameRules, name: str) -> None:
    """N5a-N5d."""
    if not _DATE.fullmatch(text):
        raise ChannelError("109", f"date {text!r} is not 8 digits", subject=name)
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise ChannelError("110", f"date {text} is not a calendar date", subject=name) from None
    if day > rules.today:
        raise ChannelError("111", f"date {text} is after today {rules.today:%Y%m%d}",
                           subject=name)
    if rules.today - day > timedelta(days=rules.max_age_days):
        raise ChannelError("126", f"date {text} is older than {rules.max_age_days} days",
                           subject=name)


def _check_seq(text: str, name: str) -> None:
    """N6a-N6c."""
    if len(text) != 5:
        raise ChannelError("112", f"sequence {text!r} is not 5 characters", subject=name)
    if not _SEQ_CHARS.fullmatch(text):
        raise ChannelError("367", f"sequence {text!r} has characters outside 0-9A-Z",
                           subject=name)
    if text == "00000":
        raise ChannelError("127", "sequence 00000", subject=name)


def _check_channel(parsed: FileName, channel: ChannelNameContext, name: str) -> None:
    """N9a-N9c."""
    if parsed.sender != channel.sender:
        raise ChannelError("108", f"sender {parsed.sender} is not the channel's "
                           f"{channel.sender}", subject=name)
    if Environment.of_upload_dir(channel.directory) != parsed.env:
        expected = Environment(parsed.env).upload_dir
        raise ChannelError(WRONG_DIRECTORY[parsed.env], f"{parsed.env} file in "
                           f"{channel.directory}, expected {expected}", subject=name)
    if parsed.appl not in KNOWN_UPLOAD_CODES:
        raise ChannelError("154", f"application code {parsed.appl} unknown for uploads",
                           subject=name)
    if parsed.appl not in channel.enabled:
        raise ChannelError("154", f"application {parsed.appl} not enabled on this channel",
                           subject=name)


# --- elements of a name read without checking them -------------------------------------------
# The one home of splitting a name on its dots: the simulator, the judge, the CLI and the
# transport group files by these before (or instead of) the checks of parse_upload. None of them
# validates an element; each says what it returns for a name too short to have it.

ELEMENT_COUNT = {"FI": 8, "FS": 8, "GO": 7, "TD": 7}  # spec 4.2: PREFIX ... TOTAL[.INDEX]


def prefix_of(name: str) -> str:
    """The text before the first dot: ``FI``, ``GO``, ``FO``... (the whole name without one)."""
    return name.split(".", 1)[0]


def tail_of(name: str) -> str:
    """The text after the prefix and its dot (``APPL.SENDER...``); ValueError without a dot."""
    _, dot, tail = name.partition(".")
    if not dot:
        raise ValueError(f"{name!r} has no prefix element")
    return tail


def with_prefix(name: str, prefix: str) -> str:
    """The same name with another prefix: the FS of an FI, the GO of an FO, ..."""
    return f"{prefix}.{tail_of(name)}"


def stem_of(name: str, *, exact: bool = False) -> str | None:
    """``APPL.SENDER.DATE.SEQ.ENV``: elements 2-6 of a name, as written (unchecked).

    None when the name has fewer than 7 elements, or, with ``exact``, when it does not have
    exactly the count of its prefix (``ELEMENT_COUNT``; None for another prefix).
    """
    parts = name.split(".")
    if (len(parts) != ELEMENT_COUNT.get(parts[0])) if exact else (len(parts) < 7):
        return None
    return ".".join(parts[1:6])


def stem_set_key(stem: str) -> str:
    """``SENDER.DATE.SEQ.ENV`` of a stem ``APPL.SENDER.DATE.SEQ.ENV`` (``FileName.set_key``)."""
    return stem.partition(".")[2]


def stem_sender(stem: str) -> str:
    """The SENDER element of a stem ``APPL.SENDER.DATE.SEQ.ENV``, as written."""
    return stem_set_key(stem).partition(".")[0]


def stem_env(stem: str) -> str:
    """The last element of a stem: its environment letter as written."""
    return stem.rpartition(".")[2]


def check_shape(name: str) -> list[str]:
    """Checks N1-N4 (prefix, element count, APPL, SENDER); returns the name's elements.

    They are the checks that need neither a date nor a channel: a name failing them never
    passes, whenever and wherever it is uploaded (spec 5.6 answers such a file on its own).
    """
    parts = name.split(".")
    prefix = parts[0]
    if prefix not in UPLOAD_PREFIXES:
        raise ChannelError("129", f"prefix {prefix[:20]!r} is not FI, FS, GO or TD", subject=name)
    malformed = MALFORMED[prefix]
    expected = ELEMENT_COUNT[prefix]
    if len(parts) != expected:
        raise ChannelError(malformed, f"{len(parts)} elements, {prefix} names have {expected}",
                           subject=name)
    if not _APPL.fullmatch(parts[1]):
        raise ChannelError(malformed, f"application code {parts[1]!r} is not 4 characters "
                                      "A-Z0-9", subject=name)
    if not _SENDER.fullmatch(parts[2]):
        raise ChannelError(malformed, f"sender {parts[2]!r} is not 6 digits", subject=name)
    return parts


def parse_upload(name: str, rules: NameRules, channel: ChannelNameContext | None = None
                 ) -> FileName:
    """Apply checks N1-N8 (and N9 when ``channel`` is given); ChannelError at the first failure."""
    parts = check_shape(name)
    prefix, appl, sender, day, seq, env, *tail = parts
    with_index = prefix in ("FI", "FS")
    _check_date(day, rules, name)
    _check_seq(seq, name)
    if env not in ENVIRONMENTS:
        raise ChannelError("117", f"environment {env!r} is not R, T or S", subject=name)
    total = _check_part(tail[0], rules, name, "part count")
    index = _check_part(tail[1], rules, name, "part index") if with_index else None
    if index is not None and index > total:
        raise ChannelError(PART_ORDER[prefix], f"part {index} of {total}", subject=name)
    parsed = FileName(prefix, appl, sender, day, seq, env, total, index)
    if channel is not None:
        _check_channel(parsed, channel, name)
    return parsed


def parse_answer(name: str) -> FileName:
    """Parse an answer name (spec 4.8); ValueError when it is not one."""
    m = ANSWER.fullmatch(name)
    if m is None:
        raise ValueError(f"{name!r} is not an answer name (PREFIX.APPL.999999.DATE.SEQ.ENV)")
    prefix, appl, sender, day, seq, env = m.groups()
    return FileName(prefix, appl, sender, day, seq, env)


def date_text(value: date | str) -> str:
    """A date as the ``YYYYMMDD`` of a file name; text is taken as already written so."""
    return value.strftime("%Y%m%d") if isinstance(value, date) else value


def upload_name(prefix: str, appl: str, sender: str, date: date | str, seq: str, env: str,
                total: int, index: int | None = None) -> str:
    """Format an upload name; ValueError when the result would not match spec 4.2."""
    name = str(FileName(prefix, appl, sender, date_text(date), seq, env, total, index))
    pattern = UPLOAD_FI_FS if prefix in ("FI", "FS") else UPLOAD_GO_TD
    if not pattern.fullmatch(name) or (index is not None and index > total):
        raise ValueError(f"{name!r} is not a well-formed upload name")
    return name


def answer_name(prefix: str, appl: str, date: date | str, seq: str | int, env: str) -> str:
    """Format an answer name; an integer ``seq`` is written as 5 decimal digits."""
    seq_text = f"{seq:05d}" if isinstance(seq, int) else seq
    name = f"{prefix}.{appl}.{ANSWER_SENDER}.{date_text(date)}.{seq_text}.{env}"
    if not ANSWER.fullmatch(name):
        raise ValueError(f"{name!r} is not a well-formed answer name")
    return name


# ---- sequence numbers -----------------------------------------------------------------------

_DECIMAL_LAST = 99_999
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_FIRST = 26 * 36**4  # A0000 .. ZZZZZ
LAST_ORDINAL = _DECIMAL_LAST + _LETTER_FIRST


def sequence_at(ordinal: int) -> str:
    """The ``ordinal``-th sequence (1-based): 00001..99999, then A0000..ZZZZZ in base-36 order."""
    if not 1 <= ordinal <= LAST_ORDINAL:
        raise ValueError(f"sequence ordinal {ordinal} outside 1..{LAST_ORDINAL}")
    if ordinal <= _DECIMAL_LAST:
        return f"{ordinal:05d}"
    rest = ordinal - _DECIMAL_LAST - 1
    chars = []
    for _ in range(4):
        rest, digit = divmod(rest, 36)
        chars.append(_BASE36[digit])
    return _BASE36[10 + rest] + "".join(reversed(chars))


def sequence_ordinal(seq: str) -> int | None:
    """Inverse of :func:`sequence_at`; None for a valid SEQ outside that order (``0000A``)."""
    if re.fullmatch(r"[0-9]{5}", seq):
        return int(seq) or None
    if re.fullmatch(r"[A-Z][0-9A-Z]{4}", seq):
        return _DECIMAL_LAST + 1 + (_BASE36.index(seq[0]) - 10) * 36**4 + int(seq[1:], 36)
    return None


class SequenceExhausted(RuntimeError):
    """No sequence left for a (sender, date, environment)."""


class SequenceAllocator:
    """Hands out SEQ values per (sender, date, environment), never twice, across processes.

    State is a small JSON file next to a lock file; every call takes an exclusive ``flock`` on the
    lock file, reads the state, updates it and replaces the file atomically, so two processes (two
    ``fla send`` runs, a test and the simulator) never get the same sequence. ``last_ordinal``
    caps the order of :func:`sequence_at` (99999 = decimal sequences only).
    """

    _FORMAT = 1

    def __init__(self, state_path: Path, *, last_ordinal: int = LAST_ORDINAL):
        self.state_path = Path(state_path)
        self.lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        self.last_ordinal = min(last_ordinal, LAST_ORDINAL)

    def allocate(self, sender: str, date: date | str, env: str) -> str:
        """The next unused sequence for this set-key prefix; SequenceExhausted when none is left."""
        key = _allocation_key(sender, date, env)
        with self._locked() as state:
            entry = state["keys"].setdefault(key, {"last": 0, "used": []})
            used = set(entry["used"])
            ordinal = entry["last"] + 1
            while ordinal <= self.last_ordinal and sequence_at(ordinal) in used:
                ordinal += 1
            if ordinal > self.last_ordinal:
                raise SequenceExhausted(
                    f"no sequence left for {key} (last {sequence_at(self.last_ordinal)} used); "
                    "use another date"
                )
            entry["last"] = ordinal
            seq = sequence_at(ordinal)
            # Entries below the cursor can never be handed out again: keep the list short.
            entry["used"] = sorted(s for s in used if _ahead_of(s, ordinal))
            return seq

    def reserve(self, sender: str, date: date | str, env: str, seq: str) -> None:
        """Mark ``seq`` as used outside this allocator (a set uploaded by hand, a journal entry)."""
        key = _allocation_key(sender, date, env)
        if len(seq) != 5 or not _SEQ_CHARS.fullmatch(seq) or seq == "00000":
            raise ValueError(f"sequence {seq!r} is not 5 characters 0-9A-Z other than 00000")
        with self._locked() as state:
            entry = state["keys"].setdefault(key, {"last": 0, "used": []})
            ordinal = sequence_ordinal(seq)
            if (ordinal is None or ordinal > entry["last"]) and seq not in entry["used"]:
                entry["used"] = sorted([*entry["used"], seq])

    def is_used(self, sender: str, date: date | str, env: str, seq: str) -> bool:
        """True when ``seq`` was allocated or reserved for this (sender, date, environment)."""
        key = _allocation_key(sender, date, env)
        with self._locked(write=False) as state:
            entry = state["keys"].get(key, {"last": 0, "used": []})
            ordinal = sequence_ordinal(seq)
            return seq in entry["used"] or (ordinal is not None and ordinal <= entry["last"])

    @contextmanager
    def _locked(self, write: bool = True) -> Iterator[dict[str, Any]]:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                if write:
                    self._write(state)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.state_path.read_text("utf-8")
        except FileNotFoundError:
            return {"format": self._FORMAT, "keys": {}}
        try:
            state: dict[str, Any] = json.loads(text)
            if state.get("format") != self._FORMAT or not isinstance(state.get("keys"), dict):
                raise ValueError("unknown layout")
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"sequence state {self.state_path} is unreadable ({exc}); "
                             "move it away to start afresh") from None
        return state

    def _write(self, state: dict[str, Any]) -> None:
        atomic_write(self.state_path, json.dumps(state, indent=1, sort_keys=True).encode(),
                     durable=True)


def _ahead_of(seq: str, ordinal: int) -> bool:
    """True when the allocator's cursor at ``ordinal`` has not passed ``seq`` yet."""
    seq_ordinal = sequence_ordinal(seq)
    return seq_ordinal is None or seq_ordinal > ordinal


def _allocation_key(sender: str, day: date | str, env: str) -> str:
    """``SENDER.DATE.ENV``: the set key without its SEQ (uniqueness spans applications, 4.6)."""
    text = date_text(day)
    if not (_SENDER.fullmatch(sender) and _DATE.fullmatch(text) and env in ENVIRONMENTS):
        raise ValueError(f"not a sender/date/environment: {sender!r} {text!r} {env!r}")
    return f"{sender}.{text}.{env}"
