"""``fla send`` and ``fla poll``: talk to a channel (the simulator or a compatible server).

Registered on :data:`fla_core.cli.app` at import. The work is done by
:mod:`fla_core.transport` (upload, resume, fetch) and :func:`collect_results` (pairing answers
with the files that triggered them), which tests call directly.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fla_core.cli import EXIT_INVALID, Failure, Json, _emit, app, err, errors, flag, out
from fla_core.model import ANSWER_DIRS
from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.transport import (
    ChannelAddress,
    FetchedAnswer,
    TransportError,
    fetch_answers,
    plan_sets,
    read_identity,
    send_sets,
)

if TYPE_CHECKING:
    from fla_core.signing import TrustStore

T = TypeVar("T")


@dataclass
class SetResult:
    """What the channel said about one triggering file (GO or TD)."""

    trigger: str
    acrf: Acrf | None = None
    noti: Noti | None = None
    answers: list[str] = field(default_factory=list)
    signature_problem: str | None = None

    @property
    def rejected(self) -> bool:
        """True when the ACRF refused the set or the NOTI ResultCode is not 1."""
        if self.acrf is not None and not self.acrf.accepted:
            return True
        return self.noti is not None and self.noti.result_code != 1

    def to_dict(self) -> dict[str, object]:
        """The result as JSON-ready fields."""
        d: dict[str, object] = {"trigger": self.trigger, "answers": self.answers}
        if self.acrf is not None:
            d["acrf"] = {"result_code": self.acrf.result_code, "error_id": self.acrf.error_id,
                         "description": self.acrf.description, "ticket": self.acrf.ticket}
        if self.noti is not None:
            d["noti"] = {
                "result_code": self.noti.result_code,
                "file_warnings": [a.error_id for a in self.noti.file_warnings],
                "declarations": [
                    {"declaration_ref": x.declaration_ref, "company_id": x.company_id,
                     "status": x.status,
                     "anomalies": [{"error_id": a.error_id, "class": a.anomaly_class,
                                    "path": a.path, "value": a.value,
                                    "diagnosis": a.diagnosis} for a in x.anomalies]}
                    for x in self.noti.declarations],
            }
        if self.signature_problem:
            d["signature_problem"] = self.signature_problem
        return d


def collect_results(answers: list[FetchedAnswer], results: dict[str, SetResult],
                    trust: Path | None = None, *, at: datetime | None = None) -> None:
    """Parse fetched answers and attach each to the result of the file it answers.

    With ``trust`` (a CA PEM file) each answer's FS is verified at ``at`` (default now); a
    failure is kept in ``signature_problem``. An answer that cannot be read is kept under its
    own name with the reason, never raised: the other answers still count.
    """
    from fla_core.anomalies import ChannelError
    from fla_core.responses import AnswerError
    from fla_core.signing import TrustStore, load_certificate_file

    @functools.cache
    def store() -> TrustStore:
        """The CA file, read once per call, when the first signed answer needs it."""
        assert trust is not None  # only called when answers are verified
        return TrustStore(anchors=load_certificate_file(trust))

    for answer in answers:
        problem = None
        if trust is not None:
            try:
                _verify_answer(answer, store, at or datetime.now(UTC))
            except ChannelError as exc:
                problem = exc.describe()  # "FO...: ACRF-nnn ...": names the answer
        try:
            parsed = parse_answer(answer.path.read_bytes())
        except AnswerError as exc:
            result = results.setdefault(answer.path.name, SetResult(answer.path.name))
            result.answers.append(answer.path.name)
            result.signature_problem = problem or f"{answer.path.name}: unreadable answer: {exc}"
            continue
        result = results.setdefault(parsed.file_name, SetResult(parsed.file_name))
        result.answers.append(answer.path.name)
        if isinstance(parsed, Acrf):
            result.acrf = parsed
        else:
            result.noti = parsed
        if problem is not None:
            result.signature_problem = problem


def _verify_answer(answer: FetchedAnswer, trust: Callable[[], TrustStore],
                   at: datetime) -> None:
    from fla_core.anomalies import ChannelError
    from fla_core.signing import verify_fs

    if answer.signature is None:
        raise ChannelError("122", "the answer has no FS", subject=answer.path.name)
    verify_fs(answer.path, answer.signature.read_bytes(), trust=trust(), at=at,
              sender_company=None, subject=answer.path.name)


def _expects_noti(trigger: str) -> bool:
    from fla_core.plugins import get_plugins

    appl = trigger.split(".")[1] if trigger.count(".") >= 2 else ""
    return any(a.code == appl for a in get_plugins().applications())


def until_complete(results: dict[str, SetResult], triggers: list[str], trust: Path | None
                   ) -> Callable[[list[FetchedAnswer]], bool]:
    """A ``want`` for ``fetch_answers``: collects each new answer, True once ``complete``."""
    seen: list[FetchedAnswer] = []

    def done(fetched: list[FetchedAnswer]) -> bool:
        collect_results(fetched[len(seen):], results, trust)
        seen.extend(fetched[len(seen):])
        return complete(results, triggers)

    return done


def complete(results: dict[str, SetResult], triggers: list[str]) -> bool:
    """Every GO has its ACRF, and its NOTI when the ACRF is positive and one is due."""
    for trigger in triggers:
        if trigger.startswith("TD."):
            continue  # a valid TD is not answered (spec 5.5)
        r = results.get(trigger)
        if r is None or r.acrf is None:
            return False
        if r.acrf.accepted and r.noti is None and _expects_noti(trigger):
            return False
    return True


def show_results(results: list[SetResult], as_json: bool) -> None:
    """One verdict line per triggering file, then a table of its anomalies (or JSON)."""
    if as_json:
        _emit([r.to_dict() for r in results], True)
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
    with errors():
        if not folder.is_dir():
            raise Failure(f"{folder}: not a folder of triplets")
        sets = plan_sets(folder)
        if not sets:
            raise Failure(f"{folder}: no FI/FS/GO/TD files to send")
        _check_options(user, identity, trust)
        address = ChannelAddress(host, port, user, identity, known_hosts)
        report = _run(send_sets(address, folder, sets))
        if as_json and not wait:
            _emit({"uploaded": report.uploaded, "skipped": report.skipped,
                   "triggers": report.triggers}, True)
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


def saved_answers(folder: Path) -> list[FetchedAnswer]:
    """The answers (FO/CO with their FS) that an earlier run saved in ``folder``."""
    from fla_core.names import parse_answer as parse_answer_name
    from fla_core.names import with_prefix

    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if path.name[:3] not in ("FO.", "CO."):
            continue
        try:
            name = parse_answer_name(path.name)
        except ValueError:
            continue
        fs = path.with_name(with_prefix(path.name, "FS"))
        found.append(FetchedAnswer(name, str(folder), path, fs if fs.is_file() else None))
    return found


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
    with errors():
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
