"""``fla send`` and ``fla poll``: talk to a channel (the simulator or a compatible server).

Registered on :data:`fla_core.cli.app` at import (``fla`` imports this module only when
``send`` or ``poll`` runs: it loads asyncssh). The work is done by the services
:mod:`fla_core.transport` (upload, resume, fetch) and :mod:`fla_core.set_results` (pairing
answers with the files that triggered them), which tests call directly; this module parses
options and prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from fla_core.cli import app, emit_json, err, out
from fla_core.cli_common import EXIT_INVALID, Failure, Json, flag
from fla_core.model import ANSWER_DIRS
from fla_core.set_results import (
    SetResult,
    collect_results,
    complete,
    saved_answers,
    until_complete,
)
from fla_core.transport import (
    ChannelAddress,
    TransportError,
    fetch_answers,
    plan_sets,
    read_identity,
    send_sets,
)

T = TypeVar("T")


def show_results(results: list[SetResult], as_json: bool) -> None:
    """One verdict line per triggering file, then a table of its anomalies (or JSON)."""
    if as_json:
        emit_json([r.to_dict() for r in results])
        return
    for r in results:
        if r.acrf is None:
            verdict = "[yellow]no ACRF yet[/]"
        elif r.acrf.accepted:
            verdict = f"ACRF [green]accepted[/] (ticket {r.acrf.ticket})"
        else:
            verdict = f"ACRF [red]{r.acrf.error_id}[/] {r.acrf.description or ''}"
        if r.noti is not None:
            ok = sum(1 for d in r.noti.declarations if d.status == "ACCEPTED")
            bad = len(r.noti.declarations) - ok
            colour = "green" if bad == 0 else "red"
            verdict += (f"; NOTI: [{colour}]{ok} declaration(s) accepted, {bad} rejected[/]")
        out.print(f"{r.trigger} -> {verdict}", highlight=False)
        if r.signature_problem:
            err.print(f"fla: warning: answer signature: {r.signature_problem}", markup=False)
        if r.noti is None:
            continue
        # one line per anomaly rather than a table: paths are long and terminals narrow
        for w in r.noti.file_warnings:
            out.print(f"  (file) {w.error_id} {w.anomaly_class} {w.path}  {w.diagnosis}",
                      markup=False, highlight=False)
        for d in r.noti.declarations:
            status = "[green]ACCEPTED[/]" if d.status == "ACCEPTED" else "[red]REJECTED[/]"
            out.print(f"  {d.declaration_ref} ({d.company_id or '-'}) {status}",
                      highlight=False)
            for a in d.anomalies:
                value = f" = {a.value}" if a.value is not None else ""
                out.print(f"    {a.error_id} {a.anomaly_class} {a.path}{value}  {a.diagnosis}",
                          markup=False, highlight=False)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a transport coroutine; a channel that cannot be reached is a one-line failure."""
    try:
        return asyncio.run(coro)
    except TransportError as exc:
        raise Failure(str(exc)) from None


Host = Annotated[str, typer.Option("--host", metavar="HOST", help="Channel host.")]
Port = Annotated[int, typer.Option("--port", metavar="PORT", help="Channel SFTP port.")]
User = Annotated[str, typer.Option("--user", metavar="USER", help="Technical user of the "
                                   "channel.")]
Identity = Annotated[Path, typer.Option("--identity", "-i", metavar="KEY",
                                        help="SSH private key registered for the channel.")]
KnownHosts = Annotated[Path | None, typer.Option(
    "--known-hosts", metavar="FILE", help="OpenSSH known_hosts file to check the server key "
                                          "(recommended for anything but a local simulator).")]
Trust = Annotated[Path | None, typer.Option(
    "--trust", metavar="FILE", help="CA certificate to verify the FS of each answer "
                                    "(simulator: HOME/pki/ca.pem).")]


@app.command("send")
def send_command(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Folder of FI/FS/GO (or TD) "
                                           "files.")],
    user: User,
    host: Host = "127.0.0.1", port: Port = 8022,
    identity: Identity = Path("id_ed25519"), known_hosts: KnownHosts = None,
    wait: Annotated[bool, flag("--wait", help="Poll until every set is answered.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS",
                                           help="Seconds to wait for answers.")] = 60,
    answers_dir: Annotated[Path | None, typer.Option(
        "--answers", metavar="DIR", help="Where answers are saved (default DIR/answers).")]
    = None,
    trust: Trust = None, as_json: Json = False,
) -> None:
    """Upload every set of DIR (FI, FS, then GO); resume after a dropped connection."""
    if not folder.is_dir():
        raise Failure(f"{folder}: not a folder of triplets")
    sets = plan_sets(folder)
    if not sets:
        raise Failure(f"{folder}: no FI/FS/GO/TD files to send")
    _check_options(user, identity, trust)
    address = ChannelAddress(host, port, user, identity, known_hosts)
    report = _run(send_sets(address, folder, sets))
    if as_json and not wait:
        emit_json({"uploaded": report.uploaded, "skipped": report.skipped,
                   "triggers": report.triggers})
    elif not as_json:
        out.print(f"uploaded {len(report.uploaded)} file(s)"
                  + (f", {len(report.skipped)} already sent" if report.skipped else ""))
    if not wait:
        return
    target = answers_dir or folder / "answers"
    # a set sent by an earlier run may have been answered then: its saved answers count
    earlier: dict[str, SetResult] = {}
    collect_results(saved_answers(target), earlier, trust)
    results = {t: earlier[t] for t in report.triggers
               if t in earlier and t not in report.uploaded}
    _run(fetch_answers(address, target, want=until_complete(results, report.triggers, trust),
                       timeout=timeout))
    if not complete(results, report.triggers):
        missing = [t for t in report.triggers if not complete(results, [t])]
        raise Failure(f"no complete answer after {timeout:g} s for: {', '.join(missing)}")
    ordered = [results[t] for t in report.triggers if t in results]
    ordered += [r for k, r in results.items() if k not in report.triggers]
    show_results(ordered, as_json)
    if any(r.rejected or r.signature_problem for r in ordered):
        raise typer.Exit(EXIT_INVALID)


def _check_options(user: str, identity: Path, trust: Path | None) -> None:
    """Refuse an empty --user, an unusable -i KEY or --trust FILE before any upload."""
    from fla_core.signing import load_certificate_file

    if not user:
        raise Failure("--user is required: the technical user of the channel")
    try:
        read_identity(identity)
    except TransportError as exc:
        raise Failure(str(exc)) from None
    if trust is not None:
        load_certificate_file(trust)  # SigningError: one line naming the file


@app.command("poll")
def poll_command(
    user: User,
    host: Host = "127.0.0.1", port: Port = 8022,
    identity: Identity = Path("id_ed25519"), known_hosts: KnownHosts = None,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where answers are "
                                          "saved.")] = Path("."),
    trust: Trust = None, as_json: Json = False,
    keep: Annotated[bool, flag("--keep", help="Leave answers on the server.")] = False,
) -> None:
    """Fetch the answers waiting in OUT, OUTTEST and OUTTEST-S, once."""
    _check_options(user, identity, trust)
    address = ChannelAddress(host, port, user, identity, known_hosts)
    fetched = _run(fetch_answers(address, out_dir, directories=ANSWER_DIRS,
                                        remove=not keep))
    results: dict[str, SetResult] = {}
    collect_results(fetched, results, trust)
    if not fetched and not as_json:
        out.print("no answers waiting")
        return
    show_results(list(results.values()), as_json)
    if any(r.rejected or r.signature_problem for r in results.values()):
        raise typer.Exit(EXIT_INVALID)
