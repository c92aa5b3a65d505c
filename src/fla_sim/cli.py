"""``fla-sim``: create and configure a simulator home, serve it, show its journal (design 4).

Exit codes: 0 success; 2 usage, configuration or environment error, including a refused
configuration change (M4 overlap, reserved sender number) -- nothing is stored then.
Errors are one line on stderr; ``-v`` shows the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fla_sim.config import ConfigError, GiB, SimulatorConfig, SimulatorHome

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Local simulator of the social-security BATCH channel (SFTP).")
channel_app = typer.Typer(no_args_is_help=True, help="Register and list SFTP channels.")
mandate_app = typer.Typer(no_args_is_help=True, help="Register and list mandates (spec 2.2).")
trust_app = typer.Typer(no_args_is_help=True, help="Trust anchors for senders' signatures.")
app.add_typer(channel_app, name="channel")
app.add_typer(mandate_app, name="mandate")
app.add_typer(trust_app, name="trust")

class _Out:
    """A rich console bound to the current stdout (wide when it is not a terminal)."""

    def print(self, *objects: Any) -> None:
        width = None if sys.stdout.isatty() else 200  # scripts and logs: never crop columns
        Console(file=sys.stdout, highlight=False, width=width, soft_wrap=True).print(*objects)
        sys.stdout.flush()  # a supervising script reads the "serving ... on host:port" line


out = _Out()

Home = Annotated[Path, typer.Argument(help="Simulator home directory.")]
Json = Annotated[bool, typer.Option("--json", help="JSON output.")]


class CliError(Exception):
    """An error of the command line itself (bad file given, ...): exit code 2."""


def _loaded(path: Path) -> tuple[SimulatorHome, SimulatorConfig]:
    home = SimulatorHome(path)
    # Fails early, naming the file, when the home is missing or broken; the configuration read
    # here is handed on so a command does not read it a second time.
    return home, home.load()


def _home(path: Path) -> SimulatorHome:
    return _loaded(path)[0]


@app.callback()
def _options(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                   help="Show tracebacks on errors.")] = False
             ) -> None:
    """Local simulator of the social-security BATCH channel (SFTP)."""


@app.command()
def init(home: Home,
         force: Annotated[bool, typer.Option(help="Recreate keys and configuration.")] = False
         ) -> None:
    """Create a home: SSH host key, simulator PKI, simulator.toml."""
    created = SimulatorHome.init(home, force=force)
    out.print(f"created simulator home {created.path}")
    out.print(f"  host key      {created.host_key_path}.pub")
    out.print(f"  test CA       {created.ca_cert_path} (trusted for senders' signatures)")
    out.print(f"  answer signer {created.answer_cert_path}")


@channel_app.command("add")
def channel_add(
    home: Home,
    user: Annotated[str, typer.Option(help="Technical username [A-Za-z0-9._-]{1,64}.")],
    quality: Annotated[str, typer.Option(help="employer, service-provider, "
                                              "social-secretariat or training-provider.")],
    company: Annotated[str, typer.Option(help="Enterprise number (KBO/BCE), 10 digits.")],
    sender: Annotated[str, typer.Option(help="Sender number, 6 digits.")],
    ssh_key: Annotated[list[Path], typer.Option("--ssh-key",
                                                help="OpenSSH public key file (repeatable).")],
    application: Annotated[list[str] | None, typer.Option(
        "--application", help="Application code enabled on the channel (repeatable).")] = None,
    cert: Annotated[list[Path] | None, typer.Option(
        "--cert", help="Registered signing certificate, PEM (repeatable).")] = None,
    quota: Annotated[int, typer.Option(help="Bytes allowed in IN* at once.")] = GiB,
) -> None:
    """Register a channel (spec 3.1)."""
    target = _home(home)
    keys = [line for path in ssh_key for line in _key_lines(path)]
    added = target.add_channel(user, quality, company, sender, keys,
                               certificates=cert or [], applications=application or ["FLAC"],
                               quota_bytes=quota)
    out.print(f"channel {added.user} added: {added.quality.alias}, company {added.company}, "
              f"sender {added.sender}, applications {', '.join(sorted(added.applications))}")


def _key_lines(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read the SSH public key ({exc})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise CliError(f"{path}: no public key in the file; give the .pub file of the key pair")
    return lines


@channel_app.command("list")
def channel_list(home: Home, as_json: Json = False) -> None:
    """List the channels of a home."""
    _, config = _loaded(home)
    rows = [{"user": c.user, "quality": c.quality.value, "company": c.company,
             "sender": c.sender, "applications": sorted(c.applications),
             "ssh_keys": len(c.ssh_keys), "certificates": c.certificates,
             "quota_bytes": c.quota_bytes} for c in config.channels]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "quality", "company", "sender", "applications", "keys", "certs")
    for r in rows:
        table.add_row(r["user"], r["quality"], r["company"], r["sender"],
                      " ".join(r["applications"]), str(r["ssh_keys"]), str(len(r["certificates"])))
    out.print(table)


@mandate_app.command("add")
def mandate_add(
    home: Home,
    employer: Annotated[str, typer.Option(help="Employer enterprise number (mandator).")],
    representative: Annotated[str, typer.Option(help="Representative enterprise number.")],
    level: Annotated[int, typer.Option(help="1 (employer -> representative) or 2 "
                                            "(representative -> sender number).")],
    application: Annotated[str, typer.Option(help="Application code.")] = "FLAC",
    start: Annotated[str | None, typer.Option(help="Level 1: start quarter YYYYQ.")] = None,
    end: Annotated[str | None, typer.Option(help="Level 1: end quarter YYYYQ.")] = None,
    sender: Annotated[str | None, typer.Option(help="Level 2: sender number.")] = None,
) -> None:
    """Register a mandate; a second overlapping level-1 mandate is refused (M4)."""
    from fla_core.mandates import MandateError, MandateRecord

    target = _home(home)
    try:
        record = MandateRecord(level=level, employer=employer,  # type: ignore[arg-type]
                               representative=representative, application=application.upper(),
                               start=start, end=end, sender=sender)
    except MandateError as exc:
        raise CliError(f"mandate refused: {exc}") from None
    target.add_mandate(record)
    out.print(f"mandate added: {record.describe()}")


@mandate_app.command("list")
def mandate_list(home: Home, as_json: Json = False) -> None:
    """List the mandates of a home."""
    records = _loaded(home)[1].mandates
    if as_json:
        print(json.dumps([r.to_mapping() for r in records], indent=2))
        return
    for record in records:
        out.print(record.describe())


@trust_app.command("add")
def trust_add(home: Home,
              pem: Annotated[Path, typer.Argument(help="CA certificate (or CRL), PEM.")]) -> None:
    """Trust a CA for senders' signatures (a CRL PEM is added to the CRLs)."""
    rel = _home(home).add_trust(pem)
    out.print(f"added {rel}")


@app.command()
def serve(home: Home,
          host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
          port: Annotated[int | None, typer.Option(help="Listen port (0 = any free).")] = None
          ) -> None:
    """Run the simulator until interrupted (Ctrl-C)."""
    from fla_sim.api import Simulator

    target, config = _loaded(home)
    listen_host = config.host if host is None else host
    listen_port = config.port if port is None else port
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way out
        asyncio.run(_serve(Simulator(target.path, host=listen_host, port=listen_port)))
    out.print("fla-sim stopped")


async def _serve(sim: Any) -> None:
    """Run ``sim`` on this loop until Ctrl-C or SIGTERM, then stop it on the same loop."""
    # Simulator's sync facade runs its own loop in a thread; serving from the CLI stays on one
    # loop so that stopping (astop) happens where the server was started.
    await sim.start()
    out.print(f"fla-sim serving {sim.home.path} on {sim.host}:{sim.port}; Ctrl-C stops")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # a service manager stops us with SIGTERM
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.astop()


@app.command()
def status(home: Home, as_json: Json = False) -> None:
    """Show the journal: sets and their states, received files, answers."""
    target = _home(home)
    report = _status_report(target)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    _print_status(report)


def _status_report(home: SimulatorHome) -> dict[str, list[dict[str, Any]]]:
    if not home.journal_path.exists():
        return {"sets": [], "files": [], "answers": []}
    from fla_sim.store import Journal

    journal = Journal(home.journal_path)
    try:
        return {
            "sets": [_row(s) for s in journal.sets()],
            "files": [_row(f) for f in journal.files(state=None)],
            "answers": [_row(a, drop=("content",)) for a in journal.answers()],
        }
    finally:
        journal.close()


def _row(obj: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    row = {k: v for k, v in dataclasses.asdict(obj).items() if k not in drop}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _print_status(report: dict[str, list[dict[str, Any]]]) -> None:
    sets = Table("channel", "dir", "stem", "state", "ticket", "updated", title="sets")
    for s in report["sets"]:
        sets.add_row(s["channel"], s["directory"], s["stem"], s["state"], s["ticket"] or "",
                     s["updated_at"])
    files = Table("channel", "dir", "name", "size", "state", title="files")
    for f in report["files"]:
        files.add_row(f["channel"], f["directory"], f["name"], str(f["size"]), f["state"])
    answers = Table("channel", "dir", "name", "kind", "trigger", "result", "written",
                    title="answers")
    for a in report["answers"]:
        answers.add_row(a["channel"], a["directory"], a["name"], a["kind"], a["trigger"],
                        a["result_code"], "yes" if a["written"] else "no")
    for table in (sets, files, answers):
        out.print(table)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``fla-sim``; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ("-v", "--verbose") for a in args)
    try:
        result = app(args=args, prog_name="fla-sim", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("fla-sim: aborted", file=sys.stderr)
        return 2
    except typer.TyperException as exc:  # usage errors: click's own message and usage line
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"fla-sim: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        print(f"fla-sim: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ConfigError | CliError):
        return text
    return f"{text} ({type(exc).__name__}; run with -v for details)"


if __name__ == "__main__":
    sys.exit(main())
