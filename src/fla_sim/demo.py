"""``fla demo``: a full round trip against an embedded simulator, then broken files.

Part of the simulator package, not of the core (``fla_core`` never imports ``fla_sim``): ``fla``
finds this module through the entry point group ``fla.commands`` (pyproject.toml) and imports it
only when the ``demo`` command is run; the help lists it from this file's source without
importing it (:func:`fla_core.cli.command_help`).

Everything is real: a simulator home with its own CA, an asyncssh SFTP server on a free
loopback port, a channel with an SSH key and a signing certificate, a CSV export built into a
signed triplet, uploaded over SFTP, and the signed ACRF/NOTI answers fetched and verified.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.rule import Rule

from fla_core.building import BuildResult, build
from fla_core.cli import app, emit_json, out
from fla_core.cli_channel import show_results
from fla_core.cli_common import EXIT_INVALID, Failure, Json
from fla_core.model import Quality, Sender
from fla_core.set_results import SetResult, complete, until_complete
from fla_core.signing import Signer
from fla_core.transport import ChannelAddress, fetch_answers, plan_sets, send_sets
from fla_sim.config import SimulatorHome

USER, SENDER, COMPANY = "acme-payroll", "123456", "0123456749"
MANDATED, UNMANDATED = "0897223670", "0477472701"


@dataclass(frozen=True)
class DemoChannel:
    """What the demo made: the simulator home, the sender's SSH key and signer."""

    home: SimulatorHome
    identity: Path
    signer: Signer


@dataclass(frozen=True)
class Step:
    """One demo upload: a folder to send and the answer it must get."""

    title: str
    folder: Path
    expect: str  # what the step must show for the demo to succeed


def make_channel(work: Path) -> DemoChannel:
    """Simulator home, sender key and certificate, channel and mandates of the spec example."""
    import asyncssh

    from fla_core import pki
    from fla_core.files import write_private
    from fla_core.mandates import MandateRecord

    home = SimulatorHome.init(work / "sim-home")
    signer = home.issue_signer(COMPANY, common_name="ACME payroll signer")
    sender_dir = work / "sender"
    sender_dir.mkdir()
    pki.write_pem(sender_dir / "signer-key.pem", signer.key)
    pki.write_pem(sender_dir / "signer-cert.pem", signer.cert)
    ssh_key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{USER} demo key")
    # 0600: OpenSSH refuses a key others can read, and --keep invites using this one
    identity = write_private(sender_dir / "id_ed25519", ssh_key.export_private_key())
    home.add_channel(USER, Quality.SOCIAL_SECRETARIAT, COMPANY, SENDER,
                     [ssh_key.export_public_key().decode()],
                     applications=("FLAC", "DMFA", "DIMN"))
    home.add_mandate(MandateRecord(level=1, employer=MANDATED, representative=COMPANY,
                                   application="FLAC", start="20241"))
    home.add_mandate(MandateRecord(level=2, employer=MANDATED, representative=COMPANY,
                                   application="FLAC", sender=SENDER))
    return DemoChannel(home, identity, signer.signer())


def prepare_steps(work: Path, today: date, signer: Signer) -> list[Step]:
    """Build the demo's triplets: a valid export, a broken export, a tampered signed file."""
    from fla_core.model import Employer, Training, Worker
    from fla_core.sample import demo_declarations, demo_year, write_csv

    who = Sender(SENDER, Quality.SOCIAL_SECRETARIAT, COMPANY)
    exports = work / "exports"
    exports.mkdir()
    outbox = work / "outbox"  # one folder, so one sequence allocator for the three sets
    steps = []

    good = exports / "trainings.csv"
    write_csv(demo_declarations(today, employer=MANDATED), good)
    folder = _move(build(good, fmt="csv", sender=who, env="T", out_dir=outbox, day=today,
                         signer=signer, file_reference="DEMO-VALID"), work / "send-valid")
    steps.append(Step("A valid export, signed, into INTEST", folder, "accepted"))

    bad_decls = demo_declarations(today, employer=MANDATED, seed=7, declarations=2)
    year = demo_year(today)
    bad_decls[0].declaration_ref = f"D-{MANDATED}-{year}-11"
    first: Training = bad_decls[0].workers[0].trainings[0]
    first.end_date, first.start_date = first.start_date, _later(first.end_date, 2, year)
    inss = bad_decls[0].workers[1].inss
    bad_decls[0].workers[1].inss = inss[:-2] + f"{(int(inss[-2:]) % 96) + 1:02d}"
    bad_decls[1].employer = Employer(company_id=UNMANDATED)
    bad_decls[1].declaration_ref = f"D-{UNMANDATED}-{year}-01"
    bad_decls[1].workers = [Worker(inss=w.inss, trainings=w.trainings)
                            for w in bad_decls[1].workers]
    broken = exports / "trainings-broken.csv"
    write_csv(bad_decls, broken)
    folder = _move(build(broken, fmt="csv", sender=who, env="T", out_dir=outbox, day=today,
                         signer=signer, file_reference="DEMO-BROKEN"), work / "send-broken")
    steps.append(Step("An export with business errors: bad INSZ, end before start, "
                      "no mandate", folder, "rejected declarations"))

    folder = _move(build(good, fmt="csv", sender=who, env="T", out_dir=outbox, day=today,
                         signer=signer, file_reference="DEMO-TAMPER"), work / "send-tampered")
    fi = next(folder.glob("FI.*"))
    fi.write_bytes(fi.read_bytes().replace(b"DEMO-TAMPER", b"DEMO-TAMPEX"))
    steps.append(Step("A signed FI changed after signing", folder, "ACRF-125"))
    return steps


def _move(result: BuildResult, folder: Path) -> Path:
    folder.mkdir()
    for path in result.files:
        path.rename(folder / path.name)
    return folder


def _later(day: str, n: int, year: int) -> str:
    d = date.fromisoformat(day) + timedelta(days=n)
    return (d if d.year == year else date(year, 12, 31)).isoformat()


async def run_step(address: ChannelAddress, step: Step, trust: Path,
                   timeout: float) -> list[SetResult]:
    """Send one folder and wait for its answers."""
    sets = plan_sets(step.folder)
    report = await send_sets(address, step.folder, sets)
    results: dict[str, SetResult] = {}
    await fetch_answers(address, step.folder / "answers",
                        want=until_complete(results, report.triggers, trust), timeout=timeout,
                        interval=0.05)
    if not complete(results, report.triggers):
        raise Failure(f"{step.title}: no complete answer within {timeout:g} s")
    return [results[t] for t in report.triggers]


def step_ok(step: Step, results: list[SetResult]) -> bool:
    """Did the channel answer as the demo announced?"""
    r = results[0]
    if step.expect == "accepted":
        return not r.rejected and r.signature_problem is None
    if step.expect.startswith("ACRF-"):
        return r.acrf is not None and r.acrf.error_id == step.expect
    return r.noti is not None and any(d.status == "REJECTED" for d in r.noti.declarations)


@app.command("demo")
def demo_command(
    keep: Annotated[Path | None, typer.Option(
        "--keep", help="Work in this folder and keep it (home, keys, exports, answers).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 30,
    as_json: Json = False,
) -> None:
    """Round trip against an embedded simulator: build, sign, upload, answers; then bad files."""
    from fla_sim.api import Simulator

    started = time.monotonic()
    work = keep or Path(tempfile.mkdtemp(prefix="fla-demo-"))
    if keep is not None:
        if keep.exists() and any(keep.iterdir()):
            raise Failure(f"--keep {keep}: folder exists and is not empty")
        keep.mkdir(parents=True, exist_ok=True)
    try:
        channel = make_channel(work)
        # the channel's own date, not this machine's: a name dated "tomorrow" in Brussels
        # would be refused (N-code) when the machine runs ahead of the channel's timezone
        zone = ZoneInfo(channel.home.load().settings.timezone)
        today = datetime.now(zone).date()
        home, ca_pem = channel.home, channel.home.ca_cert_path
        steps = prepare_steps(work, today, channel.signer)
        failures = 0
        with Simulator(home) as sim:
            assert sim.port is not None  # started: it listens
            address = ChannelAddress("127.0.0.1", sim.port, USER, channel.identity)
            if not as_json:
                out.print(f"simulator on 127.0.0.1:{sim.port}, home {home.path}, "
                          f"channel {USER} (sender {SENDER}, social secretariat "
                          f"{COMPANY})", highlight=False)
            all_results = []
            for n, step in enumerate(steps, 1):
                results = asyncio.run(run_step(address, step, ca_pem, timeout))
                ok = step_ok(step, results)
                failures += not ok
                all_results += [r.to_dict() | {"step": step.title, "as_expected": ok}
                                for r in results]
                if not as_json:
                    out.print(Rule(f"{n}. {step.title}"))
                    show_results(results, False)
                    mark = "[green]as expected[/]" if ok else "[red]NOT as expected[/]"
                    out.print(f"expected: {step.expect} -> {mark}")
        if as_json:
            emit_json(all_results)
        else:
            out.print(Rule())
            out.print(f"demo finished in {time.monotonic() - started:.1f} s; files in "
                      f"{work if keep else '(temporary folder, removed)'}",
                      highlight=False)
        if failures:
            raise typer.Exit(EXIT_INVALID)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
