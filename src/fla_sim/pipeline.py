"""Deciding a set's answers from an event and the journal (spec 4.5, 5.1-5.6, 5.9).

``Pipeline`` takes the configuration, the journal and the clock explicitly and does only
journal work: it journals closed files and claims (``journal_close``), plans a GO in two steps
around the judge (``plan_go_start`` P1-P3 and vetoes, ``plan_go_finish`` the verdict) or its
ACRF-999 (``plan_failure``), decides a TD (``handle_td``), and numbers, renders and commits
planned answers in one transaction (``commit``). It writes no answer file, moves no upload and
runs no judge: ``fla_sim.answer_writer``, ``fla_sim.archive`` and the processor do.

Lock order, everywhere: the claims lock first, then the journal's transaction (no deadlock).
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fla_core.anomalies import ChannelError
from fla_core.model import Environment
from fla_core.names import prefix_of, stem_of, stem_set_key
from fla_core.responses import render_acrf, render_noti
from fla_sim.config import SimulatorConfig
from fla_sim.faults import FaultInjector
from fla_sim.judging import JudgeBudgetSpent
from fla_sim.store import EventRow, Journal, SetRow

# the processor's parts log under one name: an operator filters "fla_sim.processor"
log = logging.getLogger("fla_sim.processor")

Clock = Callable[[], datetime]

POSITIVE = "ACRF-000"
# set states in which an FI or FS arriving is late: its GO was closed already (spec 5.1)
_AFTER_GO = frozenset({"QUEUED", "PROCESSING", "ACCEPTED", "REJECTED", "NOTIFIED"})
_N1_N4_CODES = frozenset({"129", "107", "131", "132"})


@dataclass(frozen=True)
class PlannedAnswer:
    """One answer decided by the state machine, before it gets its number and bytes."""

    kind: str  # ACRF or NOTI
    trigger: str  # the file name the answer ties back to (spec 4.8)
    error: str | None = None  # 3-digit code of a negative ACRF
    detail: str | None = None
    next_state: str | None = None  # set state once this answer is written
    description: str | None = None  # the ACRF's ErrorDescription; None: the catalogue's text


@dataclass(frozen=True)
class TdOutcome:
    """What a TD decided: an answer planned (written by its channel's worker), and the
    files to move to the archive (None: none, the TD was answered or ignored)."""

    answered: bool
    cancelled: list[str] | None = None


class ChannelRemoved(Exception):
    """A queued set's channel left the configuration (fla-sim channel remove, a reload)."""


class Pipeline:
    """From event and journal state to committed, planned answers (nothing written to disk)."""

    def __init__(self, config: SimulatorConfig, journal: Journal, *, now: Clock,
                 root: Callable[[str], Path], faults: FaultInjector, claims: threading.Lock):
        self.config = config
        self.settings = config.settings
        self.journal = journal
        self.now = now
        self.root = root
        self.faults = faults
        # held while files are claimed for a set and while the server puts a closed upload
        # under its name: a claimed file is never replaced (Processor.replacing)
        self.claims = claims
        # (user, directory, stem) -> names of the FI/FS files a set was judged with, from the
        # moment it is taken (PROCESSING) to its clean-up: tells a late file's fate exactly
        self.taken: dict[tuple[str, str, str], frozenset[str]] = {}

    def release(self, user: str, directory: str, stem: str) -> None:
        """The set's clean-up began: its files are no longer those of a set being judged."""
        self.taken.pop((user, directory, stem), None)

    # --- closed files ----------------------------------------------------------------------------

    def journal_close(self, user: str, directory: str, name: str, size: int, now: datetime,
                      veto: str | None) -> EventRow | None:
        """Journal a closed file in one transaction; a GO/TD also becomes an event and, when
        its name passes P1, claims the files of its stem (spec 5.6: never swept)."""
        kind = prefix_of(name)
        with self.claims, self.journal.transaction():
            self.journal.record_file(user, directory, name, size, now, veto=veto)
            if kind not in ("GO", "TD"):
                stem = _stem_of(name, now.date())
                if kind in ("FI", "FS") and stem is not None:
                    row = self.journal.get_set(user, directory, stem)
                    if row is None:
                        self.journal.touch_set(user, directory, stem, stem_set_key(stem), now)
                    elif row.go_name is not None and row.state in _AFTER_GO:
                        self.late_file(row, name, now)
                return None
            event = self.journal.add_event(user, directory, name, kind, now)
            try:
                fn = self.parse(user, directory, name, now)
            except ChannelError:
                self.journal.claim_files(user, directory, [name])  # answered via its event
                return event
            prefixes = (f"FI.{fn.stem}.", f"FS.{fn.stem}.", f"GO.{fn.stem}.")
            names = {f.name for f in self.journal.files(user, directory)
                     if f.name.startswith(prefixes)}
            self.journal.claim_files(user, directory, sorted(names | {name}))
            if kind == "GO":
                self.journal.update_set(user, directory, fn.stem, fn.set_key, "QUEUED", now,
                                        go_name=name, only_from=("RECEIVING",))
            return event

    def parse(self, user: str, directory: str, name: str, now: datetime) -> Any:
        """Name checks N1-N9 (spec 4.5) in the channel's context."""
        from fla_core.names import ChannelNameContext, NameRules, parse_upload

        channel = self.config.channel(user)
        if channel is None:  # removed while its set waited: answered 999 (plan_failure)
            raise ChannelRemoved(f"the channel {user!r} was removed from the configuration "
                                 "while this set waited")
        rules = NameRules.of(self.settings, now.date())
        return parse_upload(name, rules, ChannelNameContext.of(channel, directory))

    def late_file(self, row: SetRow, name: str, now: datetime) -> None:
        """An FI or FS closed after its set's GO (spec 5.1: the GO comes last): the verdict
        rules stay as they are (a GO is judged with the files present when it is taken); the
        sender is told in the log and in the set's events (``fla-sim status``)."""
        judged = row.state == "QUEUED" or (
            row.state == "PROCESSING"
            and name in self.taken.get((row.channel, row.directory, row.stem), ()))
        if judged:
            text = (f"{name} was closed after {row.go_name}, before the set was taken: it is "
                    "judged with the set this time; upload the GO last")
        else:
            text = (f"{name} was closed after {row.go_name} was taken (set {row.state}): the "
                    "set is judged without it, and it is not part of the answer; upload every "
                    "FI and FS first, one file at a time, and the GO last")
        self.journal.add_set_event(row.channel, row.directory, row.stem, now, "late-file",
                                   name, text)
        log.warning("%s: %s/%s", row.channel, row.directory, text)

    # --- GO ---------------------------------------------------------------------------------------

    def plan_go_start(self, event: EventRow) -> tuple[Any, list[Path], datetime] | None:
        """P1-P3 and vetoes; commits the answer itself and returns None when they decide,
        else what the judge needs. The set key is consumed (and the set PROCESSING) in one
        transaction first: a crash while judging re-judges the set at start-up."""
        user, directory, name = event.channel, event.directory, event.name
        now = self.now()
        try:
            go = self.parse(user, directory, name, now)
        except ChannelError as exc:  # P1: no set; the GO alone is archived
            self.commit(event, None, [PlannedAnswer("ACRF", name, exc.code, exc.detail)], now)
            return None
        # the claims lock first, then the journal's, in that order everywhere (no deadlock)
        with self.claims, self.journal.transaction():
            if self.journal.event(event.id).state != "pending":
                return None  # P3: a TD cancelled the queued set (and closed this event)
            row = self.journal.get_set(user, directory, go.stem)
            resumed = row is not None and row.state == "PROCESSING" and row.go_name == name
            if not resumed and self.journal.is_consumed(user, go.set_key):  # P2
                state = "REJECTED" if row is None or row.state in ("RECEIVING", "QUEUED") \
                    else None
                if row is None:
                    self.journal.update_set(user, directory, go.stem, go.set_key, "QUEUED", now,
                                            go_name=name)
                self.commit(event, go, [PlannedAnswer("ACRF", name, "133", None, state)], now)
                return None
            self.journal.consume(user, go.set_key, now)
            self.journal.update_set(user, directory, go.stem, go.set_key, "PROCESSING", now,
                                    go_name=name)
            # listed inside the transaction: a file journaled after it was not in the listing
            files = self.set_files(user, directory, go.stem)
            # a file that arrived after the GO is judged too: it is claimed now as well
            self.journal.claim_files(user, directory, [p.name for p in files])
            self.taken[(user, directory, go.stem)] = frozenset(p.name for p in files)
        code = self.veto(user, directory, [name, *(p.name for p in files)])
        if code is not None:
            self.commit(event, go, [PlannedAnswer("ACRF", name, code, None, "REJECTED")], now)
            return None
        return go, files, now

    def plan_go_finish(self, event: EventRow, go: Any, verdict: Any, now: datetime) -> None:
        """Commit the judge's verdict: a negative ACRF, or a positive ACRF and its NOTI."""
        name = event.name
        if verdict.error is not None:
            err = verdict.error
            self.commit(event, go, [PlannedAnswer("ACRF", name, err.code, err.detail,
                                                  "REJECTED")], now)
            return
        has_noti = bool(getattr(verdict, "has_noti", bool(verdict.declarations)))
        answers = [PlannedAnswer("ACRF", name, None, None, "ACCEPTED")]
        if has_noti:
            answers.append(PlannedAnswer("NOTI", name, None, None, "NOTIFIED"))
        self.commit(event, go, answers, now, verdict=verdict if has_noti else None)

    def plan_failure(self, event: EventRow, go: Any, exc: Exception) -> None:
        """Commit ACRF-999 for a GO whose judging raised, unless its answers were planned."""
        if self.journal.event(event.id).state != "pending":
            return  # the outcome was committed before the failure: it stands
        detail = (str(exc) if isinstance(exc, (ChannelRemoved, JudgeBudgetSpent)) else
                  f"internal failure ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        # a set over its budget is the sender's content, not our failure: say so in the answer
        description = (f"The channel could not process the set: {exc}"
                       if isinstance(exc, JudgeBudgetSpent) else None)
        self.commit(event, go, [PlannedAnswer("ACRF", event.name, "999", detail, "REJECTED",
                                              description)], self.now())

    def set_files(self, user: str, directory: str, stem: str) -> list[Path]:
        """FI/FS files of the stem present in the directory (P4), in ASCII order."""
        folder = self.root(user) / directory
        prefixes = (f"FI.{stem}.", f"FS.{stem}.")
        return sorted((p for p in folder.iterdir() if p.name.startswith(prefixes)
                       and p.is_file()), key=lambda p: p.name)

    def veto(self, user: str, directory: str, names: Sequence[str]) -> str | None:
        """A code forced by a plugin veto or an injected ``force-anomaly`` fault."""
        vetoes = self.journal.vetoes(user, directory, names)
        for n in names:  # the first file's veto wins: the GO's, then FI/FS in name order
            if vetoes.get(n):
                return vetoes[n]
        fault = self.faults.take("process", names[0], ("force-anomaly", "delay"))
        if fault is not None and fault.action == "delay":
            time.sleep(fault.delay_ms / 1000)  # a worker thread: only this channel waits
        elif fault is not None:
            return fault.code or "312"
        return None

    # --- TD (spec 5.5) ---------------------------------------------------------------------------

    def handle_td(self, event: EventRow) -> TdOutcome:
        """Cancel a set, or plan the ACRF of a refused TD. A cancellation is journaled whole
        here, the files it moves included (a crash before the move is finished at start-up)."""
        user, directory, name = event.channel, event.directory, event.name
        now = self.now()
        try:
            td = self.parse(user, directory, name, now)
        except ChannelError as exc:
            self.commit(event, None, [PlannedAnswer("ACRF", name, exc.code, exc.detail)], now)
            return TdOutcome(answered=True)
        except ChannelRemoved as exc:  # a TD is never answered when it cancels: nor here
            log.error("%s: %s/%s ignored: %s", user, directory, name, exc)
            self.journal.set_event_state(event.id, "done")
            return TdOutcome(answered=False)
        cancelled: list[str] = []
        with self.journal.transaction():
            row = self.journal.get_set(user, directory, td.stem)
            open_set = row is None or row.state in ("RECEIVING", "QUEUED")
            if open_set and not self.journal.is_consumed(user, td.set_key):
                self.journal.consume(user, td.set_key, now)
                self.journal.update_set(user, directory, td.stem, td.set_key, "CANCELLED", now)
                prefixes = (f"FI.{td.stem}.", f"FS.{td.stem}.", f"GO.{td.stem}.")
                cancelled = [f.name for f in self.journal.files(user, directory)
                             if f.name.startswith(prefixes)]
                # the queued GO never reaches the pipeline (P3): its event is closed here
                for queued in self.journal.events(("pending",)):
                    if (queued.kind == "GO" and queued.channel == user
                            and queued.directory == directory and queued.name in cancelled):
                        self.journal.set_event_state(queued.id, "done")
            # recorded with the decision, so a crash before the move is finished at start-up
            self.journal.set_file_state(user, directory, cancelled, "cancelled")
            self.journal.set_file_state(user, directory, [name], "archived")
            self.journal.set_event_state(event.id, "done")
        return TdOutcome(answered=False, cancelled=cancelled)

    # --- committing answers ----------------------------------------------------------------------

    def commit(self, event: EventRow | None, go: Any, planned: list[PlannedAnswer],
               now: datetime, *, verdict: Any = None, user: str | None = None,
               directory: str | None = None, stem: str | None = None) -> list[int]:
        """Number, render and journal the answers, registry updates included: one transaction."""
        user = event.channel if event is not None else user
        directory = event.directory if event is not None else directory
        assert user is not None and directory is not None
        env = env_of(directory)
        out_dir = Environment(env).answer_dir
        stem = go.stem if go is not None else stem
        ids = []
        with self.journal.transaction():
            ticket = self.journal.next_ticket(now)
            for p in planned:
                seq = self.journal.next_answer_seq(user, f"{now:%Y%m%d}", env)
                if p.kind == "ACRF":
                    content = render_acrf(file_name=p.trigger, ticket=ticket,
                                          accepted=p.error is None, error_code=p.error,
                                          description=p.description, at=now)
                    result = POSITIVE if p.error is None else f"ACRF-{p.error}"
                    prefix = "FO"
                else:
                    content, result = render_noti_answer(p.trigger, ticket, verdict, now)
                    prefix = "FO"
                    if self.settings.compress_answers:
                        content, prefix = gzip.compress(content, mtime=0), "CO"
                name = _answer_name(prefix, p.kind, f"{now:%Y%m%d}", seq, env)
                ids.append(self.journal.add_answer(
                    user, out_dir, name, p.kind, p.trigger, ticket, result, content, now,
                    event_id=event.id if event is not None else None, stem=stem,
                    next_state=p.next_state, set_directory=directory))
            if verdict is not None:  # registry effects travel with the NOTI (spec 8.4)
                channel = self.config.channel(user)
                assert channel is not None  # a set was judged for it just now
                updates = getattr(verdict, "accepted_registry", None)
                if updates is None:
                    updates = getattr(verdict, "registry_updates", {})
                self.journal.apply_registry(channel.sender, env, dict(updates))
            if event is not None:
                self.journal.set_event_state(event.id, "planned")
        log.info("%s: %s/%s: %s", user, directory, planned[0].trigger,
                 _verdict_text(planned, verdict))
        return ids


def render_noti_answer(trigger: str, ticket: str, verdict: Any,
                       now: datetime) -> tuple[bytes, str]:
    """A NOTI's bytes and its result code (1 all accepted, 0 none, 2 some)."""
    decls = list(verdict.declarations)
    accepted = sum(1 for d in decls if d.status == "ACCEPTED")
    code = 1 if accepted == len(decls) else (0 if accepted == 0 else 2)
    content = render_noti(application=verdict.application, file_name=trigger,
                          file_reference=verdict.file_reference or "", ticket=ticket,
                          result_code=code, declarations=decls,
                          file_warnings=list(verdict.file_warnings), at=now)
    return content, str(code)


def _verdict_text(planned: Sequence[PlannedAnswer], verdict: Any) -> str:
    """A set's verdict for the log: the ACRF code, and how many declarations the NOTI accepts."""
    parts = []
    for p in planned:
        if p.kind == "NOTI":
            decls = list(verdict.declarations)
            accepted = sum(1 for d in decls if d.status == "ACCEPTED")
            parts.append(f"NOTI, {accepted} of {len(decls)} declarations accepted")
        elif p.error is None:
            parts.append(f"{POSITIVE} (positive)")
        else:
            detail = f": {' '.join(p.detail.split())[:160]}" if p.detail else ""
            parts.append(f"ACRF-{p.error} (negative{detail})")
    return ", ".join(parts)


def env_of(directory: str) -> str:
    """The environment letter (R/T/S) of a channel directory (spec 4.4)."""
    env = Environment.of_dir(directory)
    if env is None:
        raise ValueError(f"{directory!r} is not a channel directory")
    return env.value


def n1_n4_code(name: str, today: date) -> str | None:
    """The code when ``name`` fails N1-N4 (prefix, element count, APPL, SENDER), else None."""
    from fla_core.names import NameRules, parse_upload

    try:
        parse_upload(name, NameRules(today=today))
    except ChannelError as exc:
        # N1-N4 run first and only they give these codes: a later failure passed them
        return exc.code if exc.code in _N1_N4_CODES else None
    return None


def _stem_of(name: str, today: date) -> str | None:
    """``APPL.SENDER.DATE.SEQ.ENV`` of a name that passes N1-N4 (spec 5.6 grouping)."""
    if n1_n4_code(name, today) is not None:
        return None
    return stem_of(name)


def _answer_name(prefix: str, appl: str, day: str, seq: str, env: str) -> str:
    try:
        from fla_core.names import answer_name
    except ImportError:  # names.py not installed: same format (spec 4.2 ANSWER)
        return f"{prefix}.{appl}.999999.{day}.{seq}.{env}"
    return answer_name(prefix, appl, day, seq, env)
