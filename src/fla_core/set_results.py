"""What the channel said about each set sent: answers paired with the files they answer.

The service behind ``fla send --wait``, ``fla poll`` and the simulator's demo: it parses and
verifies fetched answers (ACRF, NOTI) and attaches each to its triggering GO or TD; it prints
nothing and talks to no server (``fla_core.transport`` does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fla_core.anomalies import ChannelError
from fla_core.names import check_shape, prefix_of
from fla_core.responses import Acrf, Noti, parse_answer

if TYPE_CHECKING:
    from fla_core.signing import TrustStore
    from fla_core.transport import FetchedAnswer


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

    try:
        appl = check_shape(trigger)[1]
    except ChannelError:  # a name the channel refuses gets a negative ACRF, never a NOTI
        return False
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


def saved_answers(folder: Path) -> list[FetchedAnswer]:
    """The answers (FO/CO with their FS) that an earlier run saved in ``folder``."""
    from fla_core.names import parse_answer as parse_answer_name
    from fla_core.names import with_prefix
    from fla_core.transport import FetchedAnswer

    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if prefix_of(path.name) not in ("FO", "CO"):
            continue
        try:
            name = parse_answer_name(path.name)
        except ValueError:
            continue
        fs = path.with_name(with_prefix(path.name, "FS"))
        found.append(FetchedAnswer(name, str(folder), path, fs if fs.is_file() else None))
    return found
