"""``fla certify``: a production-readiness verdict on a supplier's test output.

Part of the simulator package, not of the core, because its round trip layer runs an embedded
simulator (``fla_sim.certify_roundtrip``): ``fla`` finds this module through the entry point
group ``fla.commands`` (pyproject.toml) and imports it only when ``certify`` runs. The offline
layers are ``fla_core.certify.engine``'s; this module parses options, checks every output path
and the trust anchors before any work, shows progress, and writes the reports.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fla_core.cli import _progress, app, company_number, out, parse_day
from fla_core.cli_common import EXIT_INVALID, Failure, flag

COMMAND_TIMEOUT = 600.0


def check_output(path: Path | None, option: str) -> None:
    """An output path must be writable where it points (exit 2 before any work)."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise Failure(f"{option} {path}: is a folder; give a file name")
    if not parent.is_dir():
        raise Failure(f"{option} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists()
                                                   and not os.access(path, os.W_OK)):
        raise Failure(f"{option} {path}: not writable")


def check_trust(paths: Sequence[Path]) -> None:
    """Every ``--trust`` file must hold at least one certificate (exit 2 before any work)."""
    from fla_core.signing import load_certificate_file

    for path in paths:
        try:
            if not load_certificate_file(path):
                raise ValueError("no certificate in it")
        except (ValueError, OSError) as exc:
            raise Failure(f"--trust {path}: not a certificate (PEM or DER): {exc}") from None


def reports_available(report: Path | None, junit: Path | None) -> None:
    """``--report``/``--junit`` need their writers (fla_core.certify.html, .junit)."""
    import importlib.util

    for path, option, module in ((report, "--report", "fla_core.certify.html"),
                                 (junit, "--junit", "fla_core.certify.junit")):
        if path is not None and importlib.util.find_spec(module) is None:
            raise Failure(f"{option}: this version cannot write that report yet ({module} "
                          "is missing); use --json")


@contextmanager
def _shown_progress() -> Iterator[Any]:
    with _progress("certifying") as progress:
        tasks: dict[str, Any] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield tick


def write_outputs(report: Any, *, json_path: Path | None, html: Path | None,
                  junit: Path | None) -> None:
    """Every output asked for."""
    from fla_core.certify.model import to_json
    from fla_core.files import atomic_write

    if json_path is not None:
        text = json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"
        atomic_write(json_path, text.encode("utf-8"))
    if html is not None:
        from fla_core.certify.html import write_html

        write_html(report, html)
    if junit is not None:
        from fla_core.certify.junit import write_junit

        write_junit(report, junit)


def summary(report: Any) -> None:
    """The verdict and the failed case ids on stdout."""
    s = report.statement
    failed = report.failed()
    out.print(f"{s.verdict}: {s.sets_judged} set(s) judged (at least {s.min_sets}), "
              f"{len(failed)} case(s) failed", markup=False, highlight=False)
    for result in failed:
        first = result.evidence[0].message if result.evidence else (
            f"{sum(g.count for g in result.groups)} anomaly(ies): "
            + ", ".join(f"{g.error_id} x{g.count}" for g in result.groups))
        out.print(f"FAILED {result.case.id} {result.case.title}: {first}", markup=False,
                  highlight=False)


@app.command("certify")
def certify_command(
    folder: Annotated[Path | None, typer.Argument(metavar="DIR", help="Folder of the "
                                                  "software's sets (FI, FS, GO, TD).")] = None,
    command: Annotated[str | None, typer.Option("--command", metavar="CMD", help="Run the "
                                                "exporter instead; {out} is its output "
                                                "folder.")] = None,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Time allowed to "
                                           "--command.")] = COMMAND_TIMEOUT,
    json_path: Annotated[Path | None, typer.Option("--json", metavar="FILE", help="Write the "
                                                   "JSON report (docs/certify.md).")] = None,
    report_path: Annotated[Path | None, typer.Option("--report", metavar="FILE", help="Write "
                                                     "the HTML report.")] = None,
    junit_path: Annotated[Path | None, typer.Option("--junit", metavar="FILE", help="Write "
                                                    "the JUnit XML report.")] = None,
    quality: Annotated[str | None, typer.Option(metavar="QUALITY", help="Quality of the "
                                                "channel (default: from the headers).")] = None,
    sender: Annotated[str | None, typer.Option(metavar="NNNNNN", help="Sender number "
                                               "(default: from the names).")] = None,
    company: Annotated[str | None, typer.Option(metavar="KBO", help="Enterprise number "
                                                "(default: from the headers).")] = None,
    mandates: Annotated[Path | None, typer.Option(metavar="FILE", help="Mandates file (TOML "
                                                  "mandate tables or a JSON list).")] = None,
    trust: Annotated[list[Path] | None, typer.Option(metavar="CA.pem", help="Trust anchor "
                                                     "for the FS; repeatable.")] = None,
    supplier: Annotated[str | None, typer.Option(metavar="NAME", help="Software "
                                                 "supplier.")] = None,
    software: Annotated[str | None, typer.Option(metavar="NAME", help="Software "
                                                 "name.")] = None,
    software_version: Annotated[str | None, typer.Option(metavar="V", help="Software "
                                                         "version.")] = None,
    min_sets: Annotated[int, typer.Option(metavar="N", min=1, help="Sets needed for a "
                                          "ready verdict.")] = 3,
    today: Annotated[str | None, typer.Option(metavar="YYYY-MM-DD", help="Processing date "
                                              "(default today).")] = None,
    no_round_trip: Annotated[bool, flag("--no-round-trip", help="Offline layers only (the "
                                        "statement says so).")] = False,
) -> None:
    """Certify a software's sets for production: exit 0 ready, 1 not ready."""
    from fla_core.certify.engine import CertifyOptions, NothingToCertify, certify, make_report
    from fla_core.certify.exporter import command_argv, command_results, run_exporter
    from fla_core.model import Quality

    if (folder is None) == (command is None):
        raise Failure("give DIR or --command, not both" if folder else "give DIR or --command")
    if folder is not None and not folder.is_dir():
        raise Failure(f"{folder}: no such folder")
    if command is not None:
        command_argv(command, Path("out"))  # its shape, before any work
    for path, option in ((json_path, "--json"), (report_path, "--report"),
                         (junit_path, "--junit")):
        check_output(path, option)
    reports_available(report_path, junit_path)
    trust = list(trust or [])
    check_trust(trust)
    if mandates is not None and not mandates.is_file():
        raise Failure(f"--mandates {mandates}: no such file")
    if quality is not None:
        try:
            quality = Quality.parse(quality).value
        except ValueError as exc:
            raise Failure(f"--quality: {exc}") from None
    if company is not None:
        company = company_number(company)
    day = parse_day(today, default=date.today())
    options = CertifyOptions(supplier=supplier, software=software,
                             software_version=software_version, min_sets=min_sets,
                             trust=tuple(trust), mandates=mandates, today=day,
                             round_trip=not no_round_trip)
    started = datetime.now(UTC).astimezone()
    work: Path | None = None
    try:
        extra = []
        if command is not None:
            work = Path(tempfile.mkdtemp(prefix="fla-certify-out-"))
            folder = work / "out"
            run = run_exporter(command, folder, timeout=timeout)
            extra = command_results(run, timeout)
        assert folder is not None
        report = None
        with _shown_progress() as tick:
            try:
                report = _certify(folder, options, quality, sender, company, extra, tick,
                                  started, certify)
            except NothingToCertify:
                if command is None:
                    raise
        if report is None:  # the command wrote nothing: its cases say so
            profile = _profile_or_unknown(quality, sender, company, options)
            report = make_report(_only(extra), profile=profile, options=options,
                                 started=started, sets_judged=0)
        write_outputs(report, json_path=json_path, html=report_path, junit=junit_path)
        summary(report)
        if not report.statement.ready:
            raise typer.Exit(EXIT_INVALID)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _certify(folder: Path, options: Any, quality: str | None, sender: str | None,
             company: str | None, extra: list[Any], tick: Any, started: datetime,
             certify: Any) -> Any:
    from fla_core.certify.engine import folder_files, infer_profile

    profile = None
    if quality or sender or company:
        profile = infer_profile(folder_files(folder), quality=quality, sender=sender,
                                company=company,
                                mandates=str(options.mandates) if options.mandates else None,
                                trust=", ".join(str(p) for p in options.trust) or None)
    round_trip = None
    if options.round_trip:
        from fla_sim.certify_roundtrip import round_trip as run_round_trip

        round_trip = functools.partial(run_round_trip, trust=options.trust,
                                       mandates=options.mandates, today=options.today)
    return certify(folder, profile, options=options, extra_results=extra,
                   round_trip=round_trip, progress=tick, started=started)


def _profile_or_unknown(quality: str | None, sender: str | None, company: str | None,
                        options: Any) -> Any:
    """The profile as given when there are no files to read it from."""
    from fla_core.certify.model import Profile

    return Profile(quality=quality or "unknown", sender=sender or "unknown",
                   company=company or "unknown",
                   mandates=str(options.mandates) if options.mandates else None,
                   trust=", ".join(str(p) for p in options.trust) or None)


def _only(extra: list[Any]) -> list[Any]:
    """Every case of the catalogue: the command's as run, the others not applicable."""
    from fla_core.certify.catalogue import cases
    from fla_core.certify.model import CaseResult, Evidence, Outcome

    ran = {r.case.id: r for r in extra}
    return [ran.get(c.id) or CaseResult(c, Outcome.NOT_APPLICABLE,
                                        (Evidence("the command wrote no set"),))
            for c in cases()]
