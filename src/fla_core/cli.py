"""The ``fla`` command line (typer + rich): build, sign, verify, check, plugins.

Thin on purpose: each command parses its options, calls a service (``building``, ``checking``,
``triplet``, ``signing``) and prints. Exit codes, ``-v``, ``--json`` and the one-line errors
are those of both command lines (``fla_core.cli_common``).

Other modules add subcommands to :data:`app` (``@app.command()``): the core's own in
:data:`COMMAND_MODULES` (``send``/``poll``), other packages' through the entry point group
:data:`COMMAND_GROUP` (``demo`` comes from ``fla_sim.demo``: the core never imports the
simulator). The group is lazy: such a command is listed in the help with its one-line help read
from its module's source, and its module is imported only when the command runs, so that
``fla --help`` loads neither the simulator nor asyncssh. A listed module that is missing stops
``fla`` (exit 2) when the help or the command is asked for: a command must never vanish from
the help without a word.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperArgument, TyperCommand

from fla_core.anomalies import ChannelError
from fla_core.building import InputProblems, build
from fla_core.checking import Finding, Target, check_targets, target_of
from fla_core.cli_common import (
    EXIT_INVALID,
    EXIT_USAGE,
    PASSWORD_ENV,
    Failure,
    Json,
    Program,
    ProgramGroup,
    Verbose,
    flag,
)
from fla_core.formats import InputError
from fla_core.model import Quality, Sender
from fla_core.plugins import PluginError, get_plugins

# Modules of the core that register more subcommands on `app` when imported (written by other
# teams): command -> module. A module is listed here when it exists, not before (a missing one
# is an error). Other packages add commands through the entry point group COMMAND_GROUP: the
# name of an entry point is the command, its value the module that registers it.
COMMAND_MODULES: dict[str, str] = {"send": "fla_core.cli_channel", "poll": "fla_core.cli_channel"}
COMMAND_GROUP = "fla.commands"
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _describe(exc: Exception) -> tuple[int, str] | None:
    """The exit code and line of the exceptions only ``fla`` raises (cli_common maps the rest)."""
    from fla_core.signing import SigningError

    if isinstance(exc, InputProblems):
        for problem in exc.problems:
            FLA.err.print(f"{problem}", markup=False, highlight=False)
        return EXIT_INVALID, f"{len(exc.problems)} problem(s) in the input; nothing written"
    if isinstance(exc, InputError | PluginError | SigningError | MissingCommandModule):
        return EXIT_USAGE, str(exc)
    return None


FLA = Program("fla", describe=_describe)
out = Console(soft_wrap=True)
err = FLA.err


def _no_type(ctx: Any) -> None:
    """No type column for an argument in the rich help."""
    return None


def _without_type(option: Any) -> Any:
    """A switch's help line without a type: typer's rich help would print ``<bool>``."""
    if option is not None:
        option.metavar = ""
    return option


# --- commands of other modules, loaded when run --------------------------------------------------

class MissingCommandModule(ImportError):
    """A listed command module is not installed: its commands would silently vanish."""


@dataclass(frozen=True)
class CommandSource:
    """Where a command of another module comes from: the module and the list naming it."""

    module: str
    listed_in: str


def command_entry_points() -> dict[str, str]:
    """Command name -> module, from the installed entry points of :data:`COMMAND_GROUP`."""
    from importlib.metadata import entry_points

    return {ep.name: ep.module for ep in entry_points(group=COMMAND_GROUP)}


def command_sources() -> dict[str, CommandSource]:
    """Every command of another module: COMMAND_MODULES first, then the entry points."""
    sources = {name: CommandSource(module, "fla_core.cli.COMMAND_MODULES")
               for name, module in COMMAND_MODULES.items()}
    for name, module in command_entry_points().items():
        sources.setdefault(name, CommandSource(module, f"the {COMMAND_GROUP!r} entry points"))
    return sources


def load_command_modules(names: Iterable[str] | None = None, *,
                         listed_in: str = "fla_core.cli.COMMAND_MODULES") -> None:
    """Import the modules that add subcommands (default: every one of :func:`command_sources`);
    a missing one is an error (``MissingCommandModule``), as is a missing dependency inside
    one."""
    if names is None:
        for source in command_sources().values():
            load_command_modules([source.module], listed_in=source.listed_in)
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


def _command_name(info: Any) -> str:
    from typer.main import get_command_name

    return str(info.name or get_command_name(info.callback.__name__))


def load_command(name: str, source: CommandSource) -> TyperCommand:
    """Import the module of command ``name`` and build the command it registered on ``app``."""
    from typer.main import get_command_from_info

    load_command_modules([source.module], listed_in=source.listed_in)
    info = next((i for i in reversed(app.registered_commands)
                 if i.callback is not None and _command_name(i) == name), None)
    if info is None:
        raise MissingCommandModule(f"command module {source.module!r} ({source.listed_in}) "
                                   f"does not define the command {name!r}", name=source.module)
    command = get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                     rich_markup_mode=app.rich_markup_mode)
    assert isinstance(command, TyperCommand)
    return command


def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found without importing it nor its packages.

    None when it is not a plain ``.py`` file on the import path (a zip, a custom importer).
    """
    from importlib.machinery import ModuleSpec, PathFinder

    parts = module.split(".")  # a dotted module path, not a file name
    loaded = sys.modules.get(parts[0])
    spec: ModuleSpec | None = loaded.__spec__ if loaded is not None else \
        PathFinder.find_spec(parts[0])
    for depth in range(2, len(parts) + 1):
        if spec is None or spec.submodule_search_locations is None:
            return None
        spec = PathFinder.find_spec(".".join(parts[:depth]),
                                    list(spec.submodule_search_locations))
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin is not None and origin.endswith(".py") else None


def _docstring_of_command(source: str, name: str) -> str | None:
    """The docstring of the function that ``source`` registers as command ``name``, or None."""
    from typer.main import get_command_name

    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                    and decorator.func.attr == "command"):
                continue
            given = [*decorator.args[:1], *(k.value for k in decorator.keywords
                                            if k.arg == "name")]
            registered = (given[0].value if given and isinstance(given[0], ast.Constant)
                          else get_command_name(node.name))
            if registered == name:
                return ast.get_docstring(node) or ""
    return None


def command_help(name: str, source: CommandSource) -> str:
    """The help of a command of another module, without importing it when possible.

    Why read the source: the help lists every command, and importing ``fla_sim.demo`` for one
    line would load the simulator and asyncssh (a second or so, and the dependency rule). The
    docstring typer would show is read from the module's file with ``ast``, without running
    it; only a module that is not a plain file, or a command not found there, is imported.
    """
    path = _module_file(source.module)
    if path is not None:
        text = _docstring_of_command(path.read_text(encoding="utf-8"), name)
        if text is not None:
            return text
    return load_command(name, source).help or ""


class _Listed(TyperCommand):
    """A command of another module as the help lists it, before its module is imported."""

    def __init__(self, name: str, source: CommandSource):
        super().__init__(name=name, help=command_help(name, source))


class _Group(ProgramGroup):
    """The ``fla`` group: one-line errors (``ProgramGroup``), commands of other modules lazy."""

    program = FLA

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._lazy: dict[str, CommandSource] | None = None
        self._listed: dict[str, _Listed] = {}

    def _sources(self) -> dict[str, CommandSource]:
        """Commands of other modules not registered yet (looked up once, only when needed:
        ``fla build`` never reads the entry points)."""
        if self._lazy is None:
            self._lazy = {n: s for n, s in command_sources().items() if n not in self.commands}
        return self._lazy

    def list_commands(self, ctx: Any) -> list[str]:
        """This module's commands, then those of other modules (their modules not imported)."""
        return [*self.commands, *(n for n in self._sources() if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The command, or for one not loaded yet its listing (``resolve_command`` loads it)."""
        found = self.commands.get(cmd_name)
        if found is not None or cmd_name not in self._sources():
            return found
        if cmd_name not in self._listed:
            self._listed[cmd_name] = _Listed(cmd_name, self._sources()[cmd_name])
        return self._listed[cmd_name]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """Import the module of a command of another module when that command is run."""
        name = args[0] if args else ""
        if name not in self.commands and name in self._sources():
            self.commands[name] = load_command(name, self._sources()[name])
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:  # typer suggests among loaded commands only
            close = get_close_matches(name, list(self._sources()))
            message = getattr(exc, "message", "")
            if close and "Did you mean" not in message:
                exc.message = f"{message.rstrip('.')}. Did you mean {close[0]!r}?"
            raise

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """The help; every listed module is looked up first, so a missing one prints nothing."""
        for name in self.list_commands(ctx):
            self.get_command(ctx, name)
        super().format_help(ctx, formatter)

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
                **kwargs: Any) -> Callable[[F], F]:
        """Register a subcommand (typer's ``command``, with ``_Command`` as default class)."""
        return super().command(name, cls=cls or _Command, **kwargs)


app = _Typer(name="fla", cls=_Group, no_args_is_help=True, add_completion=False,
             pretty_exceptions_enable=False,
             help="Build, sign, verify and check files of the BATCH channel (FLA).")


# Options several commands share (here and in the modules of COMMAND_MODULES).
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


@app.callback()
def _root(verbose: Verbose = False) -> None:
    """Build, sign, verify and check files of the BATCH channel (FLA)."""


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout (``--json``)."""
    out.print_json(json.dumps(data, default=str))


# --- option parsing (tested directly) ----------------------------------------------------------

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



# --- build ------------------------------------------------------------------------------------

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
    with _progress("building") as progress:
        task = progress.add_task("declarations", total=None)
        result = build(input_path, fmt=fmt, sender=who, env=env, out_dir=out_dir, day=when,
                       signer=signer, file_reference=file_reference, creation=creation,
                       tick=lambda: progress.advance(task))
    if as_json:
        emit_json({"files": [str(p) for p in result.files], "declarations": result.declarations})
        return
    for path in result.files:
        out.print(str(path), markup=False, highlight=False)
    err.print(f"{result.declarations} declaration(s) written", highlight=False)


# --- fake -------------------------------------------------------------------------------------

@app.command("fake")
def fake_command(
    records: Annotated[int, typer.Option(metavar="N", min=1, help="Training records (export "
                                         "rows) to write.")] = 100,
    fmt: Annotated[str | None, typer.Option("--format", metavar="NAME", help="Format to write "
                                            "(default: from the --out suffix, else csv; see "
                                            "fla plugins).")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", metavar="FILE", help="Export to "
                                                  "write (default: standard output).")] = None,
    invalid: Annotated[float, typer.Option(metavar="RATE", min=0.0, max=1.0, help="Fraction "
                                           "of the records that carry one seeded defect.")]
    = 0.0,
    seed: Annotated[int | None, typer.Option(metavar="S", min=0, help="Seed: the same seed "
                                             "and options write the same bytes (default: "
                                             "random, reported).")] = None,
    sender: Annotated[str, typer.Option(metavar="NNNNNN", help="Sender number of the channel "
                                        "(for fla build).")] = "123456",
    quality: QualityOpt = "social-secretariat",
    company: CompanyOpt = "0123456749",
    today: Annotated[str | None, typer.Option(metavar="YYYY-MM-DD", help="Processing date the "
                                              "data is valid on (default today).")] = None,
    as_json: Json = False,
) -> None:
    """Write a realistic fake export (--invalid: with seeded defects) for fla build and check."""
    from fla_core.faking import FakeSpec, new_seed, write_fake, writer_format

    who = make_sender(sender, quality, company)
    spec = FakeSpec(records=records, sender=who, today=parse_day(today, default=date.today()),
                    seed=new_seed() if seed is None else seed, invalid=invalid)
    if out_path is None and as_json:
        raise Failure("--json needs --out FILE: without it the export goes to standard output")
    if out_path is not None and out_path.is_dir():
        raise Failure(f"--out {out_path}: is a folder; give a file name")
    if out_path is not None and not out_path.parent.is_dir():
        raise Failure(f"--out {out_path}: folder {out_path.parent} does not exist")
    plugins = get_plugins()
    name = writer_format(fmt, out_path, plugins)
    if out_path is None and name not in ("csv", "json") and sys.stdout.isatty():
        raise Failure(f"format {name} is not text: give --out FILE, or redirect the output")
    with _progress("faking") as progress:
        task = progress.add_task("records", total=records)
        result = write_fake(spec, fmt=name, out=out_path or sys.stdout.buffer, plugins=plugins,
                            tick=lambda rows: progress.advance(task, rows))
    if as_json:
        emit_json({"file": str(out_path), "format": name, "seed": result.seed,
                   "records": result.records, "declarations": result.declarations,
                   "workers": result.workers,
                   "defects": [seeded.as_dict() for seeded in result.seeded],
                   "expected": result.expected})
        return
    err.print(f"{result.records} record(s), {result.declarations} declaration(s), "
              f"{result.workers} worker(s) written to {out_path or 'standard output'} "
              f"({name}, seed {result.seed})", markup=False, highlight=False)
    if result.seeded:
        err.print(f"{sum(result.defects.values())} record(s) with a seeded defect; fla check "
                  "of the build reports:", markup=False, highlight=False)
        for seeded in result.seeded:
            d = seeded.defect
            err.print(f"  {d.error_id}  {seeded.records:>7}  {d.kind}: {d.description}",
                      markup=False, highlight=False)


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
            emit_json({"valid": False, "code": exc.code, "error_id": exc.error_id,
                       "message": exc.describe()})
        else:
            err.print(f"invalid: {exc.describe()}", markup=False, highlight=False)
        raise typer.Exit(EXIT_INVALID) from None
    subject = result.signer.subject.rfc4514_string()
    if as_json:
        emit_json({"valid": True, "signer": subject, "digest": result.digest_algorithm,
                   "warnings": list(result.warnings)})
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
    day = parse_day(today, default=date.today())
    plugins = get_plugins()
    who = make_sender(sender or "000001", quality, company)
    # Every path is looked at before any is checked: a typo fails at once, not after minutes.
    targets: list[Target] = [target_of(path, plugins) for path in paths]
    triplets = [t.path for t in targets if t.kind != "export"]
    if sender is None and triplets:
        raise Failure(f"{triplets[0]}: checking triplets needs --sender")
    findings = check_targets(targets, fmt=fmt, sender=who, env=env.upper(), today=day,
                             at=datetime.now(UTC), trust=load_trust(trust) if trust else None,
                             plugins=plugins)
    _report(findings, as_json)
    if any(f.failing for f in findings):
        raise typer.Exit(EXIT_INVALID)


def _report(findings: list[Finding], as_json: bool) -> None:
    if as_json:
        emit_json([f.as_dict() for f in findings])
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
    infos = get_plugins().plugins()
    if as_json:
        emit_json([{"name": p.name, "version": p.version, "builtin": p.builtin,
                    "blocked": p.blocked, "hooks": list(p.hooks)} for p in infos])
        return
    table = Table()
    table.add_column("plugin", overflow="fold")
    table.add_column("version", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("hooks", overflow="fold")
    for p in infos:
        table.add_row(p.name, p.version or "-", p.kind, ", ".join(p.hooks))
    out.print(table)


# --- entry point ------------------------------------------------------------------------------

def main() -> None:
    """Console script ``fla``; a listed command module that is missing is exit 2."""
    try:
        code = FLA.run(app, sys.argv[1:])
    except MissingCommandModule as exc:
        FLA.error_line(str(exc))
        code = EXIT_USAGE
    raise SystemExit(code)


if __name__ == "__main__":
    main()
