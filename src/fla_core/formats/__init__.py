"""Input formats: the types shared by the format plugins (``fla_read_declarations``, and
``fla_write_export`` for the formats that also write, as ``fla fake`` needs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fla_core.model import Sender


@dataclass(frozen=True)
class InputFormat:
    """A format a plugin reads: name (``--format``), file suffixes, one-line description;
    ``writes`` when the plugin also implements ``fla_write_export`` for it."""

    name: str
    suffixes: tuple[str, ...]
    description: str
    writes: bool = False


@dataclass(frozen=True)
class InputProblem:
    """A problem in the user's input, located by file, line and field."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f" field {self.field!r}"
        return f"{where}: {self.message}"


@dataclass
class ReadContext:
    """What a reader needs beyond the file: who sends (for the header) and where to report."""

    sender: Sender
    environment: str = "T"
    file_reference: str | None = None
    creation: str | None = None  # YYYY-MM-DDTHH:MM:SS; now when None
    problems: list[InputProblem] = field(default_factory=list)

    def problem(self, path: object, line: int | None, field_name: str | None, message: str) -> None:
        """Record a problem; readers go on to the next row so that all problems are listed."""
        self.problems.append(InputProblem(str(path), line, field_name, message))


class InputError(Exception):
    """The input cannot be read at all (unknown format, unreadable file, bad encoding)."""
