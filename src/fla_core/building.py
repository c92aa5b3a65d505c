"""Building a triplet from an export: read it, render the FI, sign it, write FI [+ FS] + GO.

The service behind ``fla build`` and the simulator's demo; it prints nothing and knows no
command line. Input problems are collected over the whole export and raised at the end
(:class:`InputProblems`), so a half-good export never leaves a triplet behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fla_core.formats import InputError, InputProblem, ReadContext
from fla_core.model import Declaration, FileContent, Sender
from fla_core.plugins import FlaPlugins, get_plugins


@dataclass(frozen=True)
class BuildResult:
    """The files written by :func:`build` and how many declarations the FI holds."""

    fi: Path
    fs: Path | None
    go: Path
    declarations: int

    @property
    def files(self) -> list[Path]:
        """FI, FS (when signed) and GO, in upload order."""
        return [p for p in (self.fi, self.fs, self.go) if p is not None]


class InputProblems(Exception):
    """The input export has problems; raised at the end of reading to stop a build."""

    def __init__(self, problems: list[InputProblem]):
        super().__init__(f"{len(problems)} problem(s) in the input")
        self.problems = problems


def guess_format(path: Path, plugins: FlaPlugins, given: str | None) -> str:
    """The format given, or the format whose suffix matches the input file."""
    formats = plugins.input_formats()
    if given:
        return given.lower()
    suffix = path.suffix.lower()
    for fmt in formats:
        if suffix in fmt.suffixes:
            return fmt.name
    names = ", ".join(f"{f.name} ({' '.join(f.suffixes)})"
                      for f in sorted(formats, key=lambda f: f.name))
    raise InputError(f"{path}: cannot guess the format from {suffix or 'no suffix'!r}; give "
                     f"--format, one of: {names}")


def no_declarations(source: Path) -> InputProblem:
    """The problem of an export without any declaration (an FI needs one, spec 7)."""
    return InputProblem(str(source), None, None, "no declarations: the export has no data rows "
                        "(an FI holds at least one declaration)")


def _guarded(declarations: Iterable[Declaration], context: ReadContext, source: Path,
             tick: Callable[[], None] | None) -> Iterator[Declaration]:
    """Pass declarations through; at the end raise InputProblems so nothing half-good is kept."""
    count = 0
    for declaration in declarations:
        count += 1
        if tick is not None:
            tick()
        yield declaration
    if count == 0 and not context.problems:
        context.problems.append(no_declarations(source))
    if context.problems:
        raise InputProblems(list(context.problems))


def build(input_path: Path, *, fmt: str | None, sender: Sender, env: str, out_dir: Path,
          day: date, signer: Any = None, file_reference: str | None = None,
          creation: str | None = None, plugins: FlaPlugins | None = None,
          tick: Callable[[], None] | None = None) -> BuildResult:
    """Read an export, render the FI, sign it, write the triplet; ``tick`` per declaration."""
    from fla_core.triplet import write_triplet

    plugins = plugins or get_plugins()
    fmt = guess_format(input_path, plugins, fmt)
    context = ReadContext(sender=sender, environment=env, file_reference=file_reference,
                          creation=creation)
    content = plugins.read_declarations(input_path, fmt, context)
    count = 0

    def counted() -> Iterator[Declaration]:
        nonlocal count
        for declaration in _guarded(content, context, input_path, tick):
            count += 1
            yield declaration

    triplet = write_triplet(out_dir, FileContent(content.header, counted()),
                            sender=sender.sender_nbr, date=day, env=env, signer=signer,
                            signing_time=datetime.now(UTC))
    return BuildResult(triplet.fi, triplet.fs, triplet.go, count)
