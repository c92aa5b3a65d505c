"""Domain values of an FLA data file (spec section 7) and of the sender that sends it (spec 2, 3).

Values are kept as the text a file carries (dates as ``YYYY-MM-DD`` strings, hours as
``Decimal``) so that a check can report the value exactly as written (spec 8.2 ``Value``)
and so that a declaration read from a broken export can still be represented and checked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal


class Quality(enum.StrEnum):
    """The four qualities a channel acts in (spec 2.1); the value is the FI header token."""

    EMPLOYER = "EMPLOYER"
    SERVICE_PROVIDER = "SERVICE_PROVIDER"
    SOCIAL_SECRETARIAT = "SOCIAL_SECRETARIAT"
    TRAINING_PROVIDER = "TRAINING_PROVIDER"

    @property
    def alias(self) -> str:
        """Lower-case alias used in configuration and on the command line."""
        return self.value.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Quality:
        """Accept the token (``SOCIAL_SECRETARIAT``) or its alias (``social-secretariat``)."""
        key = text.strip().upper().replace("-", "_")
        try:
            return cls(key)
        except ValueError:
            known = ", ".join(q.alias for q in cls)
            raise ValueError(f"unknown quality {text!r}; expected one of: {known}") from None


class Action(enum.StrEnum):
    """What a declaration does to the registry (spec 8.4)."""

    NEW = "NEW"
    REPLACE = "REPLACE"
    CANCEL = "CANCEL"


class TrainingType(enum.StrEnum):
    """Kind of training (spec 7.3 zone 00134)."""

    FORMAL = "FORMAL"
    INFORMAL = "INFORMAL"


class Environment(enum.StrEnum):
    """Environment letter of a name (spec 4.4), and the one home of its channel directories.

    ``UPLOAD_DIRS``, ``ANSWER_DIRS`` and ``CHANNEL_DIRS`` below are the only tables of
    directory names: the name checks (N9b), the simulator's server, home and processor and
    ``fla send``/``fla poll`` all take them from here.
    """

    R = "R"
    T = "T"
    S = "S"

    @property
    def upload_dir(self) -> str:
        """The channel directory uploads of this environment go to."""
        return _UPLOAD_DIR[self]

    @property
    def answer_dir(self) -> str:
        """The channel directory answers of this environment come from."""
        return _ANSWER_DIR[self]

    @classmethod
    def of_dir(cls, directory: str) -> Environment | None:
        """Environment of an upload or answer directory name, None for any other name."""
        return _DIR_ENV.get(directory)

    @classmethod
    def of_upload_dir(cls, directory: str) -> Environment | None:
        """Environment of an upload directory name, None for any other name (answer ones too)."""
        return _UPLOAD_DIR_ENV.get(directory)


# Spec 4.4: each environment's upload directory and the directory its answers come from.
_UPLOAD_DIR: dict[Environment, str] = {
    Environment.R: "IN", Environment.T: "INTEST", Environment.S: "INTEST-S"}
_ANSWER_DIR: dict[Environment, str] = {
    Environment.R: "OUT", Environment.T: "OUTTEST", Environment.S: "OUTTEST-S"}
_UPLOAD_DIR_ENV: dict[str, Environment] = {d: env for env, d in _UPLOAD_DIR.items()}
_DIR_ENV: dict[str, Environment] = {
    **_UPLOAD_DIR_ENV, **{d: env for env, d in _ANSWER_DIR.items()}}

UPLOAD_DIRS: tuple[str, ...] = tuple(_UPLOAD_DIR.values())  # IN, INTEST, INTEST-S
ANSWER_DIRS: tuple[str, ...] = tuple(_ANSWER_DIR.values())  # OUT, OUTTEST, OUTTEST-S
# The folders of a channel's chroot, each upload directory beside its answer directory.
CHANNEL_DIRS: tuple[str, ...] = tuple(d for env in Environment
                                      for d in (_UPLOAD_DIR[env], _ANSWER_DIR[env]))


@dataclass(frozen=True)
class Sender:
    """Who sends: the channel's identity as the FI header and the checks see it."""

    sender_nbr: str  # 6 digits
    quality: Quality
    company_id: str  # KBO/BCE, 10 digits


@dataclass(frozen=True)
class FileHeader:
    """``FLAFile/FileHeader`` (spec 7.3)."""

    sender_nbr: str
    quality: str  # kept as text: a file may carry an unknown token (schema error, not a crash)
    company_id: str
    environment: str
    creation: str  # YYYY-MM-DDTHH:MM:SS
    file_reference: str


@dataclass
class Training:
    """``Worker/Training``; ``line`` is the input line it came from, when read from an export."""

    training_ref: str
    title: str
    training_type: str
    start_date: str  # YYYY-MM-DD as written
    end_date: str
    hours: str  # as written, e.g. "21.00"; see hours_decimal
    during_working_time: bool
    provider_company_id: str | None = None
    line: int | None = None
    # JSON inputs: the JSON path of the object it was read from (where, not what: not compared)
    place: str | None = field(default=None, compare=False)

    @property
    def hours_decimal(self) -> Decimal | None:
        """Hours as an exact decimal (spec 8.2: never a float); None if not a number."""
        try:
            return Decimal(self.hours)
        except ArithmeticError:
            return None


@dataclass
class Worker:
    """A worker of a declaration (INSZ) with the trainings declared for it."""

    inss: str
    trainings: list[Training] = field(default_factory=list)
    line: int | None = None
    # JSON inputs: the JSON path of its object or first row (where, not what: not compared)
    place: str | None = field(default=None, compare=False)


@dataclass
class Employer:
    """The employer of a declaration: enterprise number and optional NOSS number."""

    company_id: str
    noss_registration_nbr: str | None = None


@dataclass
class Declaration:
    """One employer x one reporting year (spec 7.1)."""

    declaration_ref: str
    action: str  # Action value as written
    reporting_year: str  # 4 digits as written
    employer: Employer | None = None
    replaced_declaration_ref: str | None = None
    workers: list[Worker] = field(default_factory=list)
    line: int | None = None
    # JSON inputs: the JSON path of its object or first row (where, not what: not compared)
    place: str | None = field(default=None, compare=False)


@dataclass
class FileContent:
    """A header and its declarations; ``declarations`` may be a one-shot iterator (streaming)."""

    header: FileHeader
    declarations: Iterable[Declaration]

    def __iter__(self) -> Iterator[Declaration]:
        return iter(self.declarations)
