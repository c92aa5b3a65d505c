"""The round trip layer of ``fla certify``: every set over real SFTP to an embedded simulator.

A temporary simulator home is configured with the certification profile (the channel, the
mandates of ``--mandates``, the trust anchors of ``--trust``); the sets are uploaded with the
channel client (``fla_core.transport.send_sets``), the answers fetched and their signatures
verified (``fla_core.set_results``), and each answer compared with the offline judge's verdict
of the same set: a disagreement is a failed case (TRP-003) and a bug of ours to report.
The simulator's clock is the certification's day, so names dated that day stay valid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

from fla_core.certify.catalogue import MANDATE_CODES, by_id
from fla_core.certify.model import CaseResult, Evidence, Outcome, Profile
from fla_core.set_results import SetResult, until_complete
from fla_core.transport import ChannelAddress, fetch_answers, plan_sets, send_sets

if TYPE_CHECKING:
    from fla_core.judge import FolderEntry

USER = "certify"
# Seconds to wait for all the answers of a folder (a large FI takes its judging time).
ANSWER_TIMEOUT = 120.0


def _stage(folder: Path, work: Path) -> Path:
    """The sets in a folder of our own: ``send_sets`` keeps its resume state beside the files,
    and the supplier's folder is never written to. Hard links where possible."""
    staged = work / "outbox"
    staged.mkdir()
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith("."):
            try:
                os.link(path, staged / path.name)
            except OSError:
                shutil.copy2(path, staged / path.name)
    return staged


def _not_applicable(reason: str) -> list[CaseResult]:
    return [CaseResult(by_id()[i], Outcome.NOT_APPLICABLE, (Evidence(reason),))
            for i in ("TRP-001", "TRP-002", "TRP-003")]


def round_trip(folder: Path, profile: Profile, entries: Sequence[FolderEntry], *,
               trust: Sequence[Path] = (), mandates: Path | None = None,
               today: date | None = None, timeout: float = ANSWER_TIMEOUT) -> list[CaseResult]:
    """The TRP cases of ``folder`` (judged offline as ``entries``)."""
    judged = [e for e in entries if e.go is not None]
    if not judged:
        return _not_applicable("no set to send")
    signed = any(p.name.startswith("FS.") for p in folder.iterdir())
    if signed and not trust:
        return _not_applicable("the sets are signed: the round trip needs --trust")
    work = Path(tempfile.mkdtemp(prefix="fla-certify-"))
    try:
        return _run(folder, profile, judged, work, trust=trust, mandates=mandates,
                    today=today, timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(folder: Path, profile: Profile, judged: Sequence[FolderEntry], work: Path, *,
         trust: Sequence[Path], mandates: Path | None, today: date | None,
         timeout: float) -> list[CaseResult]:
    import asyncssh

    from fla_core.certify.engine import load_mandates
    from fla_core.files import write_private
    from fla_sim.api import Simulator
    from fla_sim.config import SimulatorHome

    home = SimulatorHome.init(work / "home")
    key = asyncssh.generate_private_key("ssh-ed25519")
    identity = write_private(work / "id_ed25519", key.export_private_key())
    apps = sorted({e.go.appl for e in judged if e.go is not None})
    home.add_channel(USER, profile.quality, profile.company, profile.sender,
                     [key.export_public_key().decode()], applications=tuple(apps))
    for pem in trust:
        home.add_trust(pem)
    if mandates is not None:
        for record in load_mandates(mandates).records:
            home.add_mandate(record)
    staged = _stage(folder, work)
    day = today or datetime.now(UTC).date()
    # The channel's clock runs from noon of the certification day: names of that day are
    # neither in the future nor too old, and time still moves for the simulator's timers.
    shift = datetime.combine(day, time(12, 0), tzinfo=UTC) - datetime.now(UTC)
    results: dict[str, SetResult] = {}
    with Simulator(home, clock=lambda: datetime.now(UTC) + shift) as sim:
        assert sim.port is not None
        address = ChannelAddress("127.0.0.1", sim.port, USER, identity)
        sets = [s for s in plan_sets(staged)
                if any(p.name == e.label for p in s.files for e in judged)]
        report = asyncio.run(send_sets(address, staged, sets))
        triggers = [t for t in report.triggers if t.startswith("GO.")]
        asyncio.run(fetch_answers(address, work / "answers",
                                  want=until_complete(results, triggers,
                                                      home.ca_cert_path),
                                  timeout=timeout, interval=0.05))
    return _compare(judged, results, timeout, check_mandates=mandates is not None)


def _compare(judged: Sequence[FolderEntry], results: dict[str, SetResult], timeout: float, *,
             check_mandates: bool) -> list[CaseResult]:
    missing, unsigned, disagree = [], [], []
    keys = Counter(e.go.set_key for e in judged if e.go is not None)
    for entry in judged:
        got = results.get(entry.label)
        if got is None or got.acrf is None or (got.acrf.accepted and entry.verdict.has_noti
                                               and got.noti is None):
            missing.append(Evidence(f"no complete answer within {timeout:g} s",
                                    file=entry.label))
            continue
        answers = ", ".join(got.answers)
        if got.signature_problem:
            unsigned.append(Evidence(got.signature_problem, file=entry.label, answer=answers))
        # a sequence reused in the folder (SET-004): the channel refuses the second GO for it
        reused = entry.go is not None and keys[entry.go.set_key] > 1
        problem = _disagreement(entry, got, check_mandates, reused=reused)
        if problem:
            disagree.append(Evidence(problem, file=entry.label, answer=answers,
                                     code=got.acrf.error_id or None))
    return [
        _case("TRP-001", missing, f"{len(judged)} set(s) answered"),
        _case("TRP-002", unsigned, "every answer's FS verifies against the simulator CA"),
        _case("TRP-003", disagree, "the channel's verdicts are the offline judge's"),
    ]


def _case(case_id: str, evidence: list[Evidence], passed: str) -> CaseResult:
    if evidence:
        return CaseResult(by_id()[case_id], Outcome.FAILED, tuple(evidence))
    return CaseResult(by_id()[case_id], Outcome.PASSED, (Evidence(passed),))


def _disagreement(entry: FolderEntry, got: SetResult, check_mandates: bool, *,
                  reused: bool = False) -> str | None:
    """How the channel's answer differs from the offline verdict, None when it agrees.

    ``reused``: the set's sequence is used by another set of the folder; the channel may then
    answer ACRF-133 (P2, name already used), which a judge of one set cannot know.
    """
    verdict = entry.verdict
    assert got.acrf is not None
    offline = f"ACRF-{verdict.error.code}" if verdict.error is not None else "positive ACRF"
    channel = got.acrf.error_id if not got.acrf.accepted else "positive ACRF"
    if reused and channel == "ACRF-133":
        return None
    if offline != channel:
        return f"offline: {offline}; channel: {channel}"
    if verdict.error is not None or got.noti is None:
        return None
    mine = {d.declaration_ref: {a.error_id for a in d.anomalies} for d in verdict.declarations}
    theirs = {d.declaration_ref: {a.error_id for a in d.anomalies}
              for d in got.noti.declarations}
    if not check_mandates:  # offline, mandates were not judged: compare the other rules
        mine = {k: {e for e in v if e[-3:] not in MANDATE_CODES} for k, v in mine.items()}
        theirs = {k: {e for e in v if e[-3:] not in MANDATE_CODES} for k, v in theirs.items()}
    if mine != theirs:
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        first = diff[0]
        return (f"declaration {first}: offline {sorted(mine.get(first, ()))}, channel "
                f"{sorted(theirs.get(first, ()))} ({len(diff)} declaration(s) differ)")
    return None
