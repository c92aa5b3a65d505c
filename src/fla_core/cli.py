"""The ``fla`` command line (typer + rich): build, sign, verify, check, plugins.

Thin on purpose: each command parses its options and calls functions that tests call directly
(``triplet``, ``signing``, ``judge``, ``checks.engine``). Exit codes: 0 success, 1 the checked
thing is invalid or rejected, 2 usage or environment error; one line on stderr per error, the
traceback only with ``-v``.

Other modules add subcommands to :data:`app` (``@app.command()``): the core's own in
:data:`COMMAND_MODULES` (``send``/``poll``), other packages' through the entry point group
:data:`COMMAND_GROUP` (``demo`` comes from ``fla_sim.demo``: the core never imports the
simulator). :func:`main` imports only what the command line needs: nothing more for a command of
this file (``fla build`` loads neither the simulator nor asyncssh), the one module of an entry
point command, everything for the help or an unknown command. A listed module that is missing
stops ``fla`` (exit 2): a command must never vanish from the help without a word.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup

from fla_core.anomalies import Anomaly, ChannelError
from fla_core.formats import InputError, InputProblem, ReadContext
from fla_core.model import Declaration, FileContent, Quality, Sender
from fla_core.plugins import FlaPlugins, PluginError, get_plugins

# Modules of the core that register more subcommands on `app` when imported (written by other
# teams). A module is listed here when it exists, not before (load_command_modules refuses a
# missing one). Other packages add commands through the entry point group COMMAND_GROUP: the
# name of an entry point is the command, its value the module that registers it.
COMMAND_MODULES: tuple[str, ...] = ("fla_core.cli_channel",)
COMMAND_GROUP = "fla.commands"
PASSWORD_ENV = "FLA_KEY_PASSWORD"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """A usage error (missing option, bad value) as one ``fla: error:`` line, exit code 2."""
    try:
        yield
    except typer.TyperException as exc:
        # Usage errors carry exit code 2; "fla" alone (no_args_is_help) must still show the help.
        if exc.exit_code != EXIT_USAGE or type(exc).__name__ == "NoArgsIsHelpError":
            raise
        ctx = getattr(exc, "ctx", None)
        see = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        message = exc.format_message().rstrip(".")
        err.print(f"fla: error: {message}{see}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _no_type(ctx: Any) -> None:
    """No type column for an argument in the rich help."""
    return None


def _without_type(option: Any) -> Any:
    """A switch's help line without a type: typer's rich help would print ``<bool>``."""
    if option is not None:
        option.metavar = ""
    return option


class _Group(TyperGroup):
    """The ``fla`` command group: usage errors are one line on stderr, like all other errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:
        """Parse the group's own arguments (an unknown command is a one-line error)."""
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand (its missing or bad options are one-line errors)."""
        with _one_line_usage_errors():
            return super().invoke(ctx)

    def get_help_option(self, ctx: Any) -> Any:
        """``--help`` without a type placeholder."""
        return _without_type(super().get_help_option(ctx))


class _Command(TyperCommand):
    """A subcommand of ``fla``: its help shows placeholders (FILE, DIR, KBO), not types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                # its metavar already says what it is (FILE, FI, DIR); typer adds "<path>"
                param.display_type_rich = _no_type  # type: ignore[method-assign]

    def get_help_option(self, ctx: Any) -> Any:
        """``--help`` without a type placeholder."""
        return _without_type(super().get_help_option(ctx))


class _Typer(typer.Typer):
    """Every ``@app.command()``, also in the modules of COMMAND_MODULES, is a ``_Command``."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **kwargs: Any) -> Any:
        """Register a subcommand (typer's ``command``, with ``_Command`` as default class)."""
        return super().command(name, cls=cls or _Command, **kwargs)


app = _Typer(name="fla", cls=_Group, no_args_is_help=True, add_completion=False,
             help="Build, sign, verify and check files of the BATCH channel (FLA).")


def flag(*names: str, help: str) -> Any:
    """A boolean switch (``--json``, ``--sign``): shown in the help without a placeholder."""
    return typer.Option(*names, help=help, metavar="")


# Options several commands share (here and in the modules of COMMAND_MODULES).
Json = Annotated[bool, flag("--json", help="Machine-readable output.")]
Key = Annotated[Path | None, typer.Option(metavar="FILE", help="Private key (PEM/DER).")]
Cert = Annotated[Path | None, typer.Option(metavar="FILE",
                                           help="Signer certificate (+ chain), PEM/DER.")]
P12 = Annotated[Path | None, typer.Option(metavar="FILE",
                                          help="PKCS#12 file (.p12/.pfx) instead of key+cert.")]
QualityOpt = Annotated[str, typer.Option(
    metavar="QUALITY",
    help="employer, service-provider, social-secretariat or training-provider.")]
CompanyOpt = Annotated[str, typer.Option(
    metavar="KBO", help="Enterprise number (KBO/BCE) of the channel, 10 digits.")]


@dataclass
class _State:
    verbose: bool = False


STATE = _State()


class Failure(Exception):
    """A usage or environment error: one line on stderr and exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class InputProblems(Exception):
    """The input export has problems; raised at the end of reading to stop a build."""

    def __init__(self, problems: list[InputProblem]):
        super().__init__(f"{len(problems)} problem(s) in the input")
        self.problems = problems


@app.callback()
def _root(verbose: Annotated[bool, flag("--verbose", "-v", help="Show tracebacks on errors.")]
          = False) -> None:
    """Build, sign, verify and check files of the BATCH channel (FLA)."""
    STATE.verbose = verbose


@contextmanager
def errors() -> Iterator[None]:
    """Turn known failures into one stderr line and an exit code (traceback only with -v)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        code, message = _classify(exc)
        if STATE.verbose:
            err.print(traceback.format_exc(), markup=False, highlight=False)
        err.print(f"fla: error: {message}", markup=False, highlight=False)
        raise typer.Exit(code) from None


def _classify(exc: Exception) -> tuple[int, str]:
    from fla_core.signing import SigningError

    if isinstance(exc, Failure):
        return exc.code, str(exc)
    if isinstance(exc, ChannelError):
        return EXIT_INVALID, exc.describe()
    if isinstance(exc, InputProblems):
        for problem in exc.problems:
            err.print(f"{problem}", markup=False, highlight=False)
        return EXIT_INVALID, f"{len(exc.problems)} problem(s) in the input; nothing written"
    if isinstance(exc, InputError | PluginError | SigningError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, f"{where}{exc.strerror or exc}"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    return EXIT_USAGE, f"unexpected {type(exc).__name__}: {exc} (run with -v for details)"


# --- shared helpers (tested directly) ---------------------------------------------------------

def parse_day(text: str | None, *, default: date) -> date:
    """``YYYY-MM-DD`` or ``YYYYMMDD``; ``default`` when None."""
    if not text:
        return default
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise Failure(f"--date/--today {text!r} is not a date (YYYY-MM-DD)")


def make_sender(sender: str, quality: str, company: str) -> Sender:
    """A Sender from command-line text; bad values are usage errors naming the option."""
    from fla_core.identifiers import RESERVED, sender_problem

    problem = sender_problem(sender)
    if problem == RESERVED:
        raise Failure(f"--sender {sender}: 000000 and 999999 are reserved sender numbers; give "
                      "the sender number of the channel")
    if problem is not None:
        raise Failure(f"--sender {sender!r} must be the 6-digit sender number of the channel")
    try:
        q = Quality.parse(quality)
    except ValueError as exc:
        raise Failure(f"--quality: {exc}") from None
    return Sender(sender, q, company_number(company))


def company_number(text: str, option: str = "--company") -> str:
    """The 10-digit enterprise number of an option; a wrong one is a usage error naming it."""
    from fla_core.identifiers import CHECK_DIGITS, kbo_problem, normalize_kbo

    kbo = normalize_kbo(text)
    problem = kbo_problem(kbo)
    if problem == CHECK_DIGITS:
        raise Failure(f"{option} {text!r}: wrong check digits (the last two digits are 97 - "
                      "the first eight mod 97); check the enterprise number")
    if problem is not None:
        raise Failure(f"{option} {text!r} is not an enterprise number (10 digits starting "
                      "with 0 or 1, dots and a BE prefix allowed)")
    return kbo


def guess_format(path: Path, plugins: FlaPlugins, given: str | None) -> str:
    """The ``--format`` given, or the format whose suffix matches the input file."""
    formats = plugins.input_formats()
    if given:
        return given.lower()
    suffix = path.suffix.lower()
    for fmt in formats:
        if suffix in fmt.suffixes:
            return fmt.name
    names = ", ".join(f"{f.name} ({' '.join(f.suffixes)})"
                      for f in sorted(formats, key=lambda f: f.name))
    raise Failure(f"{path}: cannot guess the format from {suffix or 'no suffix'!r}; give "
                  f"--format, one of: {names}")


def read_password(what: str) -> bytes | None:
    """The key password from $FLA_KEY_PASSWORD, else an interactive prompt (never argv)."""
    value = os.environ.get(PASSWORD_ENV)
    if value is not None:
        return value.encode()
    if not sys.stdin.isatty():
        return None
    # err=True: the prompt goes to stderr so that --json output on stdout stays clean.
    return typer.prompt(f"Password for {what}", hide_input=True, default="",
                        show_default=False, err=True).encode() or None


def load_signer_from(key: Path | None, cert: Path | None, p12: Path | None) -> Any:
    """A Signer from --key/--cert or --p12, asking for a password only when one is needed."""
    from fla_core.signing import Signer, load_pkcs12, load_signer

    if p12 is not None and (key is not None or cert is not None):
        raise Failure("give either --key and --cert, or --p12, not both")
    if p12 is not None:
        return with_password(lambda password: load_pkcs12(p12, password), str(p12))
    if key is None or cert is None:
        raise Failure("signing needs --key KEY.pem and --cert CERT.pem, or --p12 FILE")

    def attempt(password: bytes | None) -> Signer:
        return load_signer(key, cert, password)

    return with_password(attempt, str(key))


def with_password(load: Callable[[bytes | None], T], what: str) -> T:
    """``load(password)`` with $FLA_KEY_PASSWORD, else without one, then with a prompted one.

    Only a file that really is protected (signing.PasswordRequired) leads to the prompt or to
    "set FLA_KEY_PASSWORD"; a missing or wrong file keeps its own message.
    """
    from fla_core.signing import PasswordRejected, PasswordRequired

    env_password = os.environ.get(PASSWORD_ENV)
    if env_password is not None:
        try:
            return load(env_password.encode())
        except PasswordRejected as exc:
            raise Failure(f"{exc}; correct or unset {PASSWORD_ENV}") from None
    try:
        return load(None)
    except PasswordRequired as exc:
        if not sys.stdin.isatty():
            raise Failure(f"{exc}: set {PASSWORD_ENV}, or run on a terminal to be asked for "
                          "it") from None
    return load(read_password(what))


def load_trust(paths: Iterable[Path]) -> Any:
    """A TrustStore from PEM/DER files (every certificate in them is an anchor)."""
    from fla_core.signing import TrustStore, load_certificate_file

    return TrustStore(anchors=[c for path in paths for c in load_certificate_file(path)])


def _progress(label: str, total: int | None = None) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def _guarded(declarations: Iterable[Declaration], context: ReadContext,
             progress: Progress, source: Path) -> Iterator[Declaration]:
    """Pass declarations through; at the end raise InputProblems so nothing half-good is kept."""
    task = progress.add_task("declarations", total=None)
    count = 0
    for declaration in declarations:
        count += 1
        progress.advance(task)
        yield declaration
    if count == 0 and not context.problems:
        context.problems.append(no_declarations(source))
    if context.problems:
        raise InputProblems(list(context.problems))


def no_declarations(source: Path) -> InputProblem:
    """The problem of an export without any declaration (an FI needs one, spec 7)."""
    return InputProblem(str(source), None, None, "no declarations: the export has no data rows "
                        "(an FI holds at least one declaration)")


def _emit(data: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(data, default=str))


# --- build ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    """The files written by ``build`` and how many declarations the FI holds."""

    fi: Path
    fs: Path | None
    go: Path
    declarations: int


def build(input_path: Path, *, fmt: str | None, sender: Sender, env: str, out_dir: Path,
          day: date, signer: Any = None, file_reference: str | None = None,
          creation: str | None = None, plugins: FlaPlugins | None = None,
          progress: Progress | None = None) -> BuildResult:
    """Read an export, render the FI, sign it, write the triplet (the body of ``fla build``)."""
    from fla_core.triplet import write_triplet

    plugins = plugins or get_plugins()
    fmt = guess_format(input_path, plugins, fmt)
    context = ReadContext(sender=sender, environment=env, file_reference=file_reference,
                          creation=creation)
    content = plugins.read_declarations(input_path, fmt, context)
    progress = progress or _progress("building")
    count = 0

    def counted() -> Iterator[Declaration]:
        nonlocal count
        for declaration in _guarded(content, context, progress, input_path):
            count += 1
            yield declaration

    streamed = FileContent(content.header, counted())
    with progress:
        triplet = write_triplet(out_dir, streamed, sender=sender.sender_nbr, date=day, env=env,
                                signer=signer, signing_time=datetime.now(UTC))
    return BuildResult(triplet.fi, triplet.fs, triplet.go, count)


@app.command("build")
def build_command(
    input_path: Annotated[Path, typer.Argument(metavar="FILE", help="Export to convert "
                                               "(CSV, JSON, ...).")],
    sender: Annotated[str, typer.Option(metavar="NNNNNN", help="6-digit sender number of the "
                                        "channel.")],
    company: CompanyOpt,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the "
                                          "triplet (created when missing).")],
    quality: QualityOpt,
    fmt: Annotated[str | None, typer.Option("--format", metavar="NAME", help="Input format "
                                            "(default: from the suffix; see fla plugins).")]
    = None,
    env: Annotated[str, typer.Option(metavar="R|T|S", help="Environment letter.")] = "T",
    sign: Annotated[bool, flag("--sign", help="Sign the FI (FS).")] = False,
    key: Key = None,
    cert: Cert = None,
    p12: P12 = None,
    file_reference: Annotated[str | None, typer.Option(metavar="TEXT", help="FileReference of "
                                                       "the header.")] = None,
    day: Annotated[str | None, typer.Option("--date", metavar="YYYY-MM-DD", help="Date of the "
                                            "name (default today).")] = None,
    as_json: Json = False,
) -> None:
    """Convert an export into a triplet FI [+ FS] + GO in --out."""
    with errors():
        env = env.upper()
        if env not in ("R", "T", "S"):
            raise Failure(f"--env {env!r} must be R, T or S")
        who = make_sender(sender, quality, company)
        if out_dir.exists() and not out_dir.is_dir():
            raise Failure(f"--out {out_dir}: is a file; give a folder for the triplet")
        now = datetime.now()
        when = parse_day(day, default=now.date())
        signer = (load_signer_from(key, cert, p12)
                  if sign or key is not None or p12 is not None else None)
        creation = f"{when.isoformat()}T{now.strftime('%H:%M:%S')}"
        result = build(input_path, fmt=fmt, sender=who, env=env, out_dir=out_dir, day=when,
                       signer=signer, file_reference=file_reference, creation=creation)
        files = [p for p in (result.fi, result.fs, result.go) if p is not None]
        if as_json:
            _emit({"files": [str(p) for p in files], "declarations": result.declarations},
                  True)
        else:
            for path in files:
                out.print(str(path), markup=False, highlight=False)
            err.print(f"{result.declarations} declaration(s) written", highlight=False)


# --- sign / verify ----------------------------------------------------------------------------

@app.command("sign")
def sign_command(
    fi: Annotated[Path, typer.Argument(metavar="FI", help="FI file to sign.")],
    key: Key = None,
    cert: Cert = None,
    p12: P12 = None,
    digest: Annotated[str, typer.Option(metavar="ALGORITHM", help="sha256, sha384 or "
                                        "sha512.")] = "sha256",
) -> None:
    """Write the FS (detached CMS signature) beside an FI."""
    from fla_core.triplet import fs_name_for, write_fs

    with errors():
        try:
            fs_name_for(fi)
        except ValueError as exc:
            raise Failure(str(exc)) from None
        if not fi.is_file():
            raise Failure(f"{fi}: no such file")
        signer = load_signer_from(key, cert, p12)
        with _progress("signing") as progress:
            progress.add_task("sign", total=None)
            fs = write_fs(fi, signer, signing_time=datetime.now(UTC), digest=digest)
        out.print(str(fs), markup=False, highlight=False)


@app.command("verify")
def verify_command(
    fi: Annotated[Path, typer.Argument(metavar="FI", help="Signed FI part.")],
    trust: Annotated[list[Path], typer.Option(metavar="FILE", help="Trust anchor (CA "
                                              "certificate, PEM/DER); repeatable.")],
    fs: Annotated[Path | None, typer.Argument(metavar="FS", help="Its FS (default: the FS "
                                              "name beside the FI).")] = None,
    company: Annotated[str | None, typer.Option(
        metavar="KBO", help="Check the certificate names this enterprise number (S10).")]
    = None,
    at: Annotated[str | None, typer.Option(metavar="TIME", help="Validation time, ISO 8601 "
                                           "(default now).")] = None,
    strict: Annotated[bool, flag("--strict", help="Strict FS layout (spec 6.1).")] = False,
    as_json: Json = False,
) -> None:
    """Verify an FS against its FI: exit 0 valid, 1 invalid (the spec code says why)."""
    from fla_core.signing import verify_fs
    from fla_core.triplet import fs_name_for

    with errors():
        sender_company = company_number(company) if company else None
        fs_path = fs or fs_name_for(fi)
        store = load_trust(trust)
        when = _parse_at(at)
        try:
            result = verify_fs(fi, fs_path.read_bytes(), trust=store, at=when,
                               sender_company=sender_company,
                               layout="strict" if strict else "lenient", subject=fs_path.name)
        except ChannelError as exc:
            if as_json:
                _emit({"valid": False, "code": exc.code, "error_id": exc.error_id,
                       "message": exc.describe()}, True)
            else:
                err.print(f"invalid: {exc.describe()}", markup=False, highlight=False)
            raise typer.Exit(EXIT_INVALID) from None
        subject = result.signer.subject.rfc4514_string()
        if as_json:
            _emit({"valid": True, "signer": subject, "digest": result.digest_algorithm,
                   "warnings": list(result.warnings)}, True)
        else:
            extra = "".join(f"; warning {w}" for w in result.warnings)
            out.print(f"valid: {fs_path.name} signed by {subject} ({result.digest_algorithm})"
                      f"{extra}", markup=False, highlight=False)


def _parse_at(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Failure(f"--at {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- check ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One line of ``fla check``: where, which code, how bad, what."""

    file: str
    where: str
    code: str
    severity: str  # "error" (input / file level), "B", "W", "ok"
    message: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready fields."""
        return {"file": self.file, "where": self.where, "code": self.code,
                "severity": self.severity, "message": self.message}

    @property
    def failing(self) -> bool:
        """True when the finding makes ``check`` exit 1 (an error or a blocking anomaly)."""
        return self.severity in ("error", "B")


def check_export(path: Path, *, fmt: str | None, sender: Sender, env: str, today: date,
                 plugins: FlaPlugins) -> list[Finding]:
    """Input problems and business anomalies of an export, each located by file:line."""
    from fla_core.checks.context import CheckContext
    from fla_core.checks.engine import evaluate
    from fla_core.formats.layout import locate

    fmt = guess_format(path, plugins, fmt)
    context = ReadContext(sender=sender, environment=env,
                          creation=f"{today.isoformat()}T00:00:00")
    content = plugins.read_declarations(path, fmt, context)
    # Offline: mandates are unknown, so rules 155/101 (level 2) are skipped, not raised.
    checks = CheckContext(sender=sender, environment=env, processing_date=today,
                          check_mandates=False)
    findings: list[Finding] = []
    position = 0
    for position, declaration in enumerate(content, start=1):
        verdict = evaluate(declaration, position, checks, plugins)
        for anomaly in verdict.anomalies:
            line, column = locate(anomaly.path, declaration)
            located = replace(anomaly, source=_source(path, line, column))
            findings.append(_anomaly_finding(str(path), located, declaration))
    if position == 0 and not context.problems:
        context.problems.append(no_declarations(path))
    problems = [Finding(str(path), _source(path, p.line, p.field), "input", "error", p.message)
                for p in context.problems]
    return problems + findings


def _source(path: Path, line: int | None, column: str | None) -> str:
    where = f"{path}:{line}" if line is not None else str(path)
    return f"{where} field {column}" if column else where


def _anomaly_finding(file: str, anomaly: Anomaly, declaration: Declaration) -> Finding:
    value = f" (value {anomaly.value!r})" if anomaly.value is not None else ""
    return Finding(file, anomaly.source or anomaly.path or "", anomaly.error_id,
                   anomaly.severity, f"{anomaly.message}{value} "
                   f"[declaration {declaration.declaration_ref}]")


def check_folder(directory: Path, *, profile: Any, today: date, at: datetime, trust: Any,
                 plugins: FlaPlugins, only_stem: str | None = None) -> list[Finding]:
    """Judge every set of a triplet folder as the channel would (``fla_core.judge``).

    ``only_stem`` keeps the set of one stem (``fla check FI.…`` names a file of the set).
    """
    from fla_core.checks.context import MemoryRegistry
    from fla_core.judge import judge_folder
    from fla_core.settings import Settings
    from fla_core.triplet import read_folder

    findings: list[Finding] = []
    if only_stem is None:
        for path in read_folder(directory).unknown:
            findings.append(Finding(str(path), path.name, "name", "W",
                                    "not an upload name (FI/FS/GO/TD); ignored"))
    entries = judge_folder(directory, profile, Settings(), trust=trust, today=today, at=at,
                           registry=MemoryRegistry(), plugins=plugins, check_mandates=False)
    entries = [e for e in entries if only_stem is None or only_stem in e.label]
    if not entries:  # e.g. a TD alone: it cancels a set on the channel, nothing to judge here
        raise Failure(f"{directory}: no FI/FS/GO files to judge"
                      + (f" for the set {only_stem}" if only_stem else ""))
    for entry in entries:
        verdict = entry.verdict
        label = str(directory / entry.label)
        if verdict.error is not None:
            findings.append(Finding(label, verdict.error.subject or entry.label,
                                    verdict.error.error_id, "error", verdict.error.describe()))
            continue
        note = "" if verdict.signatures_checked else " (signatures not checked: no --trust)"
        findings.append(Finding(label, entry.label, "ACRF", "ok",
                                f"positive ACRF{note}; {len(verdict.declarations)} "
                                "declaration(s)"))
        for warning in verdict.file_warnings:
            findings.append(Finding(label, "/", warning.error_id, warning.severity,
                                    warning.message))
        for decl in verdict.declarations:
            for anomaly in decl.anomalies:
                value = f" (value {anomaly.value!r})" if anomaly.value is not None else ""
                findings.append(Finding(label, anomaly.path or "", anomaly.error_id,
                                        anomaly.severity, f"{anomaly.message}{value} "
                                        f"[declaration {decl.declaration_ref}]"))
    return findings


def _is_channel_file(path: Path) -> bool:
    return path.name[:3] in ("FI.", "FS.", "GO.", "TD.")


# What judge_folder judges offline: sets of FI/FS parts and GOs (a TD only acts on a channel).
_JUDGED_PREFIXES = ("FI.", "FS.", "GO.")


def _kind_of_target(path: Path, plugins: FlaPlugins) -> str:
    """``"folder"``, ``"set"`` (a file of a set) or ``"export"``; Failure for nothing to check."""
    if not path.exists():
        raise Failure(f"{path}: no such file or folder")
    if not path.is_dir():
        return "set" if _is_channel_file(path) else "export"
    if any(p.name.startswith(_JUDGED_PREFIXES) and p.is_file() for p in path.iterdir()):
        return "folder"
    suffix = path.suffix.lower()
    fmt = next((f for f in plugins.input_formats() if suffix in f.suffixes), None)
    if fmt is not None:
        raise Failure(f"{path}: is a folder, not a {fmt.name.upper()} export; give the export file "
                      "itself, or a folder of FI/FS/GO files")
    raise Failure(f"{path}: no FI/FS/GO files in this folder, nothing to check; give a folder "
                  "of triplets or an export file (CSV, JSON, ...)")


def _stem(path: Path) -> str:
    parts = path.name.split(".")
    if len(parts) < 6:
        raise Failure(f"{path.name}: not an upload name (PREFIX.APPL.SENDER.DATE.SEQ.ENV...)")
    return ".".join(parts[1:6])


@app.command("check")
def check_command(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH", help="Exports (CSV, JSON, "
                                                "...), triplet folders or files of a set.")],
    quality: QualityOpt,
    company: CompanyOpt,
    sender: Annotated[str | None, typer.Option(metavar="NNNNNN", help="Sender number of the "
                                               "channel; needed for triplets.")] = None,
    env: Annotated[str, typer.Option(metavar="R|T|S", help="Environment letter for "
                                     "exports.")] = "T",
    fmt: Annotated[str | None, typer.Option("--format", metavar="NAME", help="Format of the "
                                            "exports (default: from the suffix).")] = None,
    trust: Annotated[list[Path] | None, typer.Option(metavar="FILE", help="Trust anchor "
                                                     "(CA certificate) to check FS "
                                                     "signatures; repeatable.")] = None,
    today: Annotated[str | None, typer.Option(metavar="YYYY-MM-DD", help="Processing date "
                                              "(default today).")] = None,
    as_json: Json = False,
) -> None:
    """Check exports or triplet folders: names, schema, rules, signatures; exit 1 if any fail."""
    from fla_core.settings import ChannelProfile

    with errors():
        day = parse_day(today, default=date.today())
        plugins = get_plugins()
        who = make_sender(sender or "000001", quality, company)
        # Every path is looked at before any is checked: a typo fails at once, not after minutes.
        targets = [(path, _kind_of_target(path, plugins)) for path in paths]
        triplets = [path for path, kind in targets if kind != "export"]
        if sender is None and triplets:
            raise Failure(f"{triplets[0]}: checking triplets needs --sender")
        findings: list[Finding] = []
        profile = ChannelProfile(user="fla-check", sender=who.sender_nbr, quality=who.quality,
                                 company_id=who.company_id)
        store = load_trust(trust) if trust else None
        for path, kind in targets:
            if kind == "export":
                findings += check_export(path, fmt=fmt, sender=who, env=env.upper(), today=day,
                                         plugins=plugins)
                continue
            folder, stem = (path, None) if kind == "folder" else (path.parent, _stem(path))
            findings += check_folder(folder, profile=profile, today=day, at=datetime.now(UTC),
                                     trust=store, plugins=plugins, only_stem=stem)
        _report(findings, as_json)
        if any(f.failing for f in findings):
            raise typer.Exit(EXIT_INVALID)


def _report(findings: list[Finding], as_json: bool) -> None:
    if as_json:
        _emit([f.as_dict() for f in findings], True)
        return
    if not findings:
        out.print("no problems found")
        return
    table = Table(show_lines=False)
    table.add_column("where", overflow="fold")
    table.add_column("code", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("message", overflow="fold")
    for f in findings:
        table.add_row(f.where, f.code, f.severity, f.message)
    out.print(table)
    failing = sum(1 for f in findings if f.failing)
    out.print(f"{failing} blocking finding(s), {len(findings) - failing} other")


# --- plugins ----------------------------------------------------------------------------------

@app.command("plugins")
def plugins_command(
    as_json: Json = False,
) -> None:
    """List the installed plugins, their versions and the hooks they implement."""
    with errors():
        infos = get_plugins().plugins()
        if as_json:
            _emit([{"name": p.name, "version": p.version, "builtin": p.builtin,
                    "hooks": list(p.hooks)} for p in infos], True)
            return
        table = Table()
        table.add_column("plugin", overflow="fold")
        table.add_column("version", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("hooks", overflow="fold")
        for p in infos:
            table.add_row(p.name, p.version or "-", "built-in" if p.builtin else "external",
                          ", ".join(p.hooks))
        out.print(table)


# --- entry point ------------------------------------------------------------------------------

class MissingCommandModule(ImportError):
    """A listed command module is not installed: its commands would silently vanish."""


def command_entry_points() -> dict[str, str]:
    """Command name -> module, from the installed entry points of :data:`COMMAND_GROUP`."""
    from importlib.metadata import entry_points

    return {ep.name: ep.module for ep in entry_points(group=COMMAND_GROUP)}


def load_command_modules(names: Iterable[str] | None = None, *,
                         listed_in: str = "fla_core.cli.COMMAND_MODULES") -> None:
    """Import the modules that add subcommands (default: COMMAND_MODULES and every entry point
    of COMMAND_GROUP); a missing one is an error (``MissingCommandModule``), as is a missing
    dependency inside one."""
    if names is None:
        load_command_modules(COMMAND_MODULES)
        load_command_modules(command_entry_points().values(),
                             listed_in=f"the {COMMAND_GROUP!r} entry points")
        return
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing != name and not name.startswith(missing + "."):
                raise  # a dependency missing inside the module: its own message says which
            raise MissingCommandModule(
                f"command module {name!r} is listed in {listed_in} but is not "
                "installed; reinstall fla-batch (pip install -e .) or remove it from the list",
                name=name) from None


def _registered() -> set[str]:
    from typer.main import get_command_name

    return {info.name or get_command_name(info.callback.__name__)
            for info in app.registered_commands if info.callback is not None}


def load_commands_for(argv: list[str]) -> None:
    """Import only the command modules the command line ``argv`` (without the program) needs.

    The root takes no option with a value, so the first word not starting with ``-`` is the
    command: one of this file needs nothing more, one of an entry point its module only; the
    others (send, poll), the help and an unknown command load COMMAND_MODULES, and the entry
    points too unless that defined the command.
    """
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in _registered():
        return
    extra = command_entry_points()
    if command is not None and command in extra:
        load_command_modules([extra[command]], listed_in=f"the {COMMAND_GROUP!r} entry points")
        return
    load_command_modules(COMMAND_MODULES)
    if command not in _registered():
        load_command_modules(extra.values(), listed_in=f"the {COMMAND_GROUP!r} entry points")


def main() -> None:
    """Console script ``fla``; a listed command module that is missing is exit 2."""
    try:
        load_commands_for(sys.argv[1:])
    except MissingCommandModule as exc:
        err.print(f"fla: error: {exc}", markup=False, highlight=False)
        raise SystemExit(EXIT_USAGE) from None
    app()


if __name__ == "__main__":
    main()
