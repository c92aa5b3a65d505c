"""What a certification run produces: cases, their results and evidence, the statement.

One home for the shapes that the certification engine fills and the three outputs (HTML, JUnit,
JSON) read: the engine never formats, the writers never judge. ``to_json``/``from_json`` are
the documented, versioned JSON form (``docs/certify.md``, ``REPORT_SCHEMA``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The JSON form's version: bump the major part when a field changes meaning or goes away.
REPORT_SCHEMA = "fla-certify-report/1.0"

LAYERS: tuple[str, ...] = ("transport", "signature", "document", "rules", "round trip",
                           "consistency", "command")


class Outcome(StrEnum):
    """A case's result."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class CaseSpec:
    """A conformance case of the catalogue: a stable id (``NAM-001``), its layer, a title
    saying what must hold, and the spec section it tests (``4.5``)."""

    id: str
    layer: str
    title: str
    spec: str


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: where (file, line, zone: an XML path or an input field), what
    (the channel's code, ``ACRF-125``), the channel's answer file when there is one, and a
    sentence."""

    message: str
    file: str | None = None
    line: int | None = None
    zone: str | None = None
    code: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class AnomalyGroup:
    """Business anomalies of one error id: the exact count, and at most the report's cap of
    examples."""

    error_id: str
    message: str
    count: int
    examples: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """The result of one case, with its evidence (a failure always has some)."""

    case: CaseSpec
    outcome: Outcome
    evidence: tuple[Evidence, ...] = ()
    groups: tuple[AnomalyGroup, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome is Outcome.FAILED and not (self.evidence or self.groups):
            raise ValueError(f"{self.case.id}: a failed case needs evidence")


@dataclass(frozen=True)
class Profile:
    """The channel profile the files were judged against."""

    quality: str
    sender: str
    company: str
    mandates: str | None = None  # the mandates file given, if any
    trust: str | None = None  # the trust anchors given, if any


@dataclass(frozen=True)
class JudgedFile:
    """A file the certification judged, with its SHA-256 (hex): a registered report names
    exactly the bytes it speaks for."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Statement:
    """The conformance statement that heads every report."""

    supplier: str | None
    software: str | None
    software_version: str | None
    profile: Profile
    started: str  # ISO 8601 with offset
    product_version: str
    catalogue_version: str
    sets_judged: int
    min_sets: int
    counts: Mapping[str, Mapping[str, int]]  # layer -> outcome value -> count
    ready: bool

    @property
    def verdict(self) -> str:
        """The one line a reader looks for."""
        return "ready for production" if self.ready else "not ready for production"


@dataclass(frozen=True)
class Report:
    """A whole certification: statement, every case result, every judged file."""

    statement: Statement
    results: tuple[CaseResult, ...]
    files: tuple[JudgedFile, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. per-application readiness

    def failed(self) -> list[CaseResult]:
        """The failed cases, in catalogue order."""
        return [r for r in self.results if r.outcome is Outcome.FAILED]


def count_outcomes(results: Sequence[CaseResult]) -> dict[str, dict[str, int]]:
    """Per layer, how many cases passed, failed, were not applicable (every layer listed)."""
    counts = {layer: {o.value: 0 for o in Outcome} for layer in LAYERS}
    for result in results:
        counts.setdefault(result.case.layer, {o.value: 0 for o in Outcome})
        counts[result.case.layer][result.outcome.value] += 1
    return counts


def _evidence_json(e: Evidence) -> dict[str, Any]:
    return {k: v for k, v in (("message", e.message), ("file", e.file), ("line", e.line),
                              ("zone", e.zone), ("code", e.code), ("answer", e.answer))
            if v is not None}


def to_json(report: Report) -> dict[str, Any]:
    """The versioned JSON form of a report (``docs/certify.md``)."""
    s = report.statement
    return {
        "schema": REPORT_SCHEMA,
        "statement": {
            "supplier": s.supplier, "software": s.software,
            "software_version": s.software_version,
            "profile": {"quality": s.profile.quality, "sender": s.profile.sender,
                        "company": s.profile.company, "mandates": s.profile.mandates,
                        "trust": s.profile.trust},
            "started": s.started, "product_version": s.product_version,
            "catalogue_version": s.catalogue_version, "sets_judged": s.sets_judged,
            "min_sets": s.min_sets, "counts": {k: dict(v) for k, v in s.counts.items()},
            "ready": s.ready, "verdict": s.verdict,
        },
        "cases": [{
            "id": r.case.id, "layer": r.case.layer, "title": r.case.title, "spec": r.case.spec,
            "outcome": r.outcome.value,
            "evidence": [_evidence_json(e) for e in r.evidence],
            "groups": [{"error_id": g.error_id, "message": g.message, "count": g.count,
                        "examples": [_evidence_json(e) for e in g.examples]}
                       for g in r.groups],
        } for r in report.results],
        "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in report.files],
        "extra": dict(report.extra),
    }


def _evidence(data: Mapping[str, Any]) -> Evidence:
    return Evidence(message=data["message"], file=data.get("file"), line=data.get("line"),
                    zone=data.get("zone"), code=data.get("code"), answer=data.get("answer"))


def from_json(data: Mapping[str, Any]) -> Report:
    """A report back from its JSON form; ValueError when it is not one of this schema's major
    version."""
    schema = str(data.get("schema", ""))
    major = REPORT_SCHEMA[:REPORT_SCHEMA.rindex(".") + 1]  # "fla-certify-report/1."
    if not schema.startswith(major):
        raise ValueError(f"not a certification report of schema {REPORT_SCHEMA} ({schema!r})")
    s = data["statement"]
    p = s["profile"]
    statement = Statement(
        supplier=s.get("supplier"), software=s.get("software"),
        software_version=s.get("software_version"),
        profile=Profile(p["quality"], p["sender"], p["company"], p.get("mandates"),
                        p.get("trust")),
        started=s["started"], product_version=s["product_version"],
        catalogue_version=s["catalogue_version"], sets_judged=s["sets_judged"],
        min_sets=s["min_sets"], counts=s["counts"], ready=s["ready"])
    results = tuple(CaseResult(
        case=CaseSpec(c["id"], c["layer"], c["title"], c["spec"]),
        outcome=Outcome(c["outcome"]),
        evidence=tuple(_evidence(e) for e in c.get("evidence", ())),
        groups=tuple(AnomalyGroup(g["error_id"], g["message"], g["count"],
                                  tuple(_evidence(e) for e in g.get("examples", ())))
                     for g in c.get("groups", ())))
        for c in data["cases"])
    files = tuple(JudgedFile(f["name"], f["size"], f["sha256"]) for f in data.get("files", ()))
    return Report(statement, results, files, dict(data.get("extra", {})))
