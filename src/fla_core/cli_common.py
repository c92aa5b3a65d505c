"""What the two command lines (``fla``, ``fla-sim``) do alike: options, exit codes, error lines.

Exit codes: 0 success, 1 the checked thing is invalid or was rejected, 2 usage or environment
error. Every error is one line ``PROG: error: MESSAGE`` on stderr; ``-v`` (the root option of
both programs) adds the traceback before it. A :class:`Program` holds one command line's
policy (its name, its ``-v`` state, its own exception types); its :class:`ProgramGroup` applies
it at one choke point, the root group, so no command repeats a ``try``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from fla_core.anomalies import ChannelError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
# Key passwords come from here or from a prompt, never from an argument (both programs).
PASSWORD_ENV = "FLA_KEY_PASSWORD"


def flag(*names: str, help: str) -> Any:
    """A boolean switch (``--json``, ``--sign``): shown in the help without a placeholder."""
    return typer.Option(*names, help=help, metavar="")


Json = Annotated[bool, flag("--json", help="Machine-readable output.")]
# The root option of both programs; ProgramGroup reads it (the callback need not).
Verbose = Annotated[bool, flag("--verbose", "-v", help="Show tracebacks on errors.")]


class Failure(Exception):
    """A usage or environment error: one line on stderr and exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# A program's own mapping: (exit code, message) for the exceptions it knows, None for others.
Describe = Callable[[Exception], "tuple[int, str] | None"]


class Program:
    """The error policy of one command line: its name, ``-v``, its own exception types."""

    def __init__(self, name: str, *, describe: Describe | None = None) -> None:
        self.name = name
        self.verbose = False
        self.describe = describe
        # resolved at each print: a test runner swapping sys.stderr sees the lines
        self.err = Console(stderr=True, soft_wrap=True)

    def error_line(self, message: str) -> None:
        """``PROG: error: MESSAGE`` on stderr, exactly one line."""
        text = " ".join(message.split()) or "error"
        self.err.print(f"{self.name}: error: {text}", markup=False, highlight=False)

    def classify(self, exc: Exception) -> tuple[int, str]:
        """The exit code and the one-line message of an exception."""
        own = self.describe(exc) if self.describe is not None else None
        if own is not None:
            return own
        if isinstance(exc, Failure):
            return exc.code, str(exc)
        if isinstance(exc, ChannelError):
            return EXIT_INVALID, exc.describe()
        if isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""
            return EXIT_USAGE, f"{where}{exc.strerror or exc}"
        if isinstance(exc, ValueError):  # our validators' messages are written for the user
            return EXIT_USAGE, str(exc)
        return EXIT_USAGE, (f"unexpected {type(exc).__name__}: {exc} "
                            "(run with -v for details)")

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn any failure into one stderr line and an exit code (traceback only with -v)."""
        try:
            yield
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise  # a closed pipe (``fla --help | head``) is typer's to silence
        except Exception as exc:
            code, message = self.classify(exc)
            if self.verbose:
                self.err.print(traceback.format_exc(), markup=False, highlight=False)
            self.error_line(message)
            raise typer.Exit(code) from None

    @contextmanager
    def usage_errors(self) -> Iterator[None]:
        """A usage error (missing option, bad value, unknown command) as one line, exit 2."""
        try:
            yield
        except typer.TyperException as exc:
            # "PROG" alone (no_args_is_help) has printed the help: not an error line
            if exc.exit_code != EXIT_USAGE or type(exc).__name__ == "NoArgsIsHelpError":
                raise
            ctx = getattr(exc, "ctx", None)
            see = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
            self.error_line(f"{exc.format_message().rstrip('.')}{see}")
            raise typer.Exit(EXIT_USAGE) from None

    def run(self, app: typer.Typer, args: Sequence[str]) -> int:
        """Run ``app`` on ``args`` and return its exit code (no ``SystemExit``)."""
        try:
            result = app(args=list(args), prog_name=self.name, standalone_mode=False)
        except typer.Exit as exc:
            return exc.exit_code
        except typer.Abort:
            self.error_line("aborted")
            return EXIT_USAGE
        except typer.TyperException as exc:  # NoArgsIsHelpError: the help is already shown
            return exc.exit_code
        return result if isinstance(result, int) else EXIT_OK


class ProgramGroup(TyperGroup):
    """A root group applying its :attr:`program`'s policy to parsing and to every command."""

    program: ClassVar[Program]

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        """Parse the group's own arguments (an unknown command is a one-line error)."""
        with self.program.usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand: its usage errors and failures are one line and an exit code."""
        # -v is read here, not in the root callback: typer resolves (and may fail to load) the
        # subcommand before it runs the callback, and that failure must honour -v too
        self.program.verbose = bool(ctx.params.get("verbose", False))
        with self.program.usage_errors(), self.program.errors():
            return super().invoke(ctx)
