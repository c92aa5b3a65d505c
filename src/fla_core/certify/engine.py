"""Certification of a folder of sets, offline: transport, signature, document, rules and
consistency layers, the statement, the digest of every judged file.

Every verdict comes from the judge (``fla_core.judge.judge_folder``, names by
``fla_core.names``, signatures by ``fla_core.signing``): this module only looks at what the
folder holds (which sets, in which order) and maps the judge's codes onto the catalogue's cases
(``fla_core.certify.catalogue``). The round trip (simulator) and the exporter command are run by
others and handed in as ready case results: the core never imports the simulator.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fla_core
from fla_core.certify.catalogue import (
    CATALOGUE_VERSION,
    MANDATE_CODES,
    case_for_code,
    cases,
)
from fla_core.certify.model import (
    AnomalyGroup,
    CaseResult,
    Evidence,
    JudgedFile,
    Outcome,
    Profile,
    Report,
    Statement,
    count_outcomes,
)
from fla_core.names import UPLOAD_PREFIXES, prefix_of, stem_of, stem_sender, stem_set_key

if TYPE_CHECKING:
    from fla_core.judge import FolderEntry
    from fla_core.plugins import FlaPlugins
    from fla_core.signing import TrustStore

# How many examples of one error id a report lists (the count is always exact).
EXAMPLE_CAP = 5
_HASH_CHUNK = 1 << 20
_SIG_CHECKED = ("SIG-002", "SIG-003", "SIG-004", "SIG-005", "SIG-006", "SIG-007", "SIG-008")

# (stage, done, total): "files" hashed, "sets" judged, "cases" run.
ProgressFn = Callable[[str, int, int], None]
# The round trip layer (``fla_sim.certify_roundtrip``): given the folder, the profile and the
# offline verdicts, the results of the round trip cases.
RoundTripFn = Callable[[Path, Profile, "Sequence[FolderEntry]"], "Sequence[CaseResult]"]


class NothingToCertify(ValueError):
    """The folder holds no set to certify (empty, or no upload names at all)."""


@dataclass(frozen=True)
class CertifyOptions:
    """Who asks, and how the folder is judged."""

    supplier: str | None = None
    software: str | None = None
    software_version: str | None = None
    min_sets: int = 3
    trust: Sequence[Path] = ()
    mandates: Path | None = None
    today: date | None = None
    at: datetime | None = None
    round_trip: bool = True  # False: the statement says the round trip was not run
    example_cap: int = EXAMPLE_CAP


@dataclass
class _Findings:
    """Evidence and anomaly groups per case id, filled as the folder is judged."""

    evidence: dict[str, list[Evidence]] = field(default_factory=lambda: defaultdict(list))
    groups: dict[str, dict[str, list[Evidence]]] = field(
        default_factory=lambda: defaultdict(dict))
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    messages: dict[str, str] = field(default_factory=dict)
    warnings: set[str] = field(default_factory=set)  # case ids whose groups are warnings only

    def fail(self, case_id: str, evidence: Evidence) -> None:
        self.evidence[case_id].append(evidence)

    def anomaly(self, case_id: str, error_id: str, message: str, example: Evidence,
                cap: int, *, blocking: bool) -> None:
        self.counts[case_id][error_id] += 1
        self.messages.setdefault(error_id, message)
        examples = self.groups[case_id].setdefault(error_id, [])
        if len(examples) < cap:
            examples.append(example)
        if not blocking:
            self.warnings.add(f"{case_id}/{error_id}")

    def blocking_groups(self, case_id: str) -> bool:
        return any(f"{case_id}/{eid}" not in self.warnings for eid in self.counts[case_id])

    def groups_of(self, case_id: str) -> tuple[AnomalyGroup, ...]:
        return tuple(AnomalyGroup(eid, self.messages[eid], count,
                                  tuple(self.groups[case_id][eid]))
                     for eid, count in sorted(self.counts[case_id].items()))


# --- files: hashing, profile -------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks (a 1 GB FI never sits in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """The files a certification looks at: every visible file of the folder, by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _header_of(fi: Path) -> dict[str, str] | None:
    """The FileHeader fields of an FI (local names), None when it cannot be read."""
    from lxml import etree

    fields: dict[str, str] = {}
    try:
        for _, el in etree.iterparse(str(fi), events=("end",), resolve_entities=False,
                                     no_network=True, load_dtd=False, huge_tree=False):
            local = etree.QName(el).localname
            if local == "FileHeader":
                return fields
            if el.text and el.text.strip():
                fields[local] = el.text.strip()
    except (etree.XMLSyntaxError, OSError, ValueError):
        return None
    return None


def infer_profile(files: Iterable[Path], *, quality: str | None = None,
                  sender: str | None = None, company: str | None = None,
                  mandates: str | None = None, trust: str | None = None) -> Profile:
    """The channel profile from the options, completed from the files' names and headers.

    The sender is the one most names carry; quality and enterprise number come from the first
    FI whose header reads. ValueError names the option to give when something stays unknown.
    """
    files = list(files)
    if sender is None:
        senders = Counter(stem_sender(stem) for stem in (stem_of(p.name) for p in files
                                                         if prefix_of(p.name) in UPLOAD_PREFIXES)
                          if stem is not None)
        sender = senders.most_common(1)[0][0] if senders else None
    if quality is None or company is None:
        for fi in (p for p in files if p.name.startswith("FI.")):
            header = _header_of(fi)
            if header is None:
                continue
            quality = quality or header.get("SenderQuality")
            company = company or header.get("SenderCompanyID")
            if quality and company:
                break
    missing = [opt for opt, value in (("--sender", sender), ("--quality", quality),
                                      ("--company", company)) if not value]
    if missing:
        raise ValueError(f"cannot read the channel profile from the files: give "
                         f"{', '.join(missing)}")
    assert sender and quality and company  # narrowed by the check above
    return Profile(quality=quality, sender=sender, company=company, mandates=mandates,
                   trust=trust)


def load_mandates(path: Path) -> Any:
    """A mandates file (TOML ``[[mandate]]`` tables or a JSON list) as a ``MandateBook``."""
    from fla_core.mandates import MandateBook, MandateRecord

    text = path.read_text("utf-8")
    raw: Any
    if path.suffix.lower() == ".json":
        raw = json.loads(text)
    else:
        raw = tomllib.loads(text).get("mandate", [])
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of mandates")
    return MandateBook(MandateRecord.from_mapping(item) for item in raw)


def load_trust(paths: Iterable[Path]) -> TrustStore:
    """A trust store of every certificate in the given PEM/DER files (ValueError: none)."""
    from fla_core.signing import TrustStore, load_certificate_file

    return TrustStore(anchors=[c for path in paths for c in load_certificate_file(path)])


# --- the transport layer: what the folder holds ------------------------------------------------

def _folder_cases(files: list[Path], found: _Findings) -> None:
    """NAM-001, SET-002..SET-005: the folder's sets as a whole (no judge code says these)."""
    from fla_core.triplet import read_folder

    folder = read_folder(files[0].parent) if files else None
    if folder is None:
        return
    for path in folder.unknown:
        found.fail("NAM-001", Evidence("not an upload name (FI, FS, GO, TD)", file=path.name))
    gos_by_key: dict[str, list[str]] = defaultdict(list)
    for group in folder.sets:
        for go in group.go:
            gos_by_key[stem_set_key(group.stem)].append(go.name)
        if (group.fi or group.fs) and not group.go:
            for path in [*group.fi, *group.fs]:
                found.fail("SET-002", Evidence(f"no GO.{group.stem}.* for this part",
                                               file=path.name, code="ACRF-130"))
        if group.td and not (group.fi or group.go):
            for path in group.td:
                found.fail("SET-005", Evidence("cancels a set that is not in the folder",
                                               file=path.name))
        _write_order(group.fi, group.fs, group.go, found)
    for key, names in sorted(gos_by_key.items()):
        if len(names) > 1:
            for name in names:
                found.fail("SET-004", Evidence(f"sequence {key} is used by {len(names)} sets: "
                                               f"{', '.join(names)}", file=name,
                                               code="ACRF-133"))


def _write_order(fis: list[Path], fss: list[Path], gos: list[Path], found: _Findings) -> None:
    """SET-003: a GO (or FS) written before the parts it follows (modification times)."""
    def last(paths: list[Path]) -> tuple[int, str] | None:
        return max(((p.stat().st_mtime_ns, p.name) for p in paths), default=None)

    def first(paths: list[Path]) -> tuple[int, str] | None:
        return min(((p.stat().st_mtime_ns, p.name) for p in paths), default=None)

    latest_fi, latest_fs, first_fs, first_go = last(fis), last(fss), first(fss), first(gos)
    if first_go and latest_fi and first_go[0] < latest_fi[0]:
        found.fail("SET-003", Evidence(f"written before {latest_fi[1]}", file=first_go[1]))
    if first_go and latest_fs and first_go[0] < latest_fs[0]:
        found.fail("SET-003", Evidence(f"written before {latest_fs[1]}", file=first_go[1]))
    if first_fs and latest_fi and first_fs[0] < latest_fi[0]:
        found.fail("SET-003", Evidence(f"written before {latest_fi[1]}", file=first_fs[1]))


# --- judging -----------------------------------------------------------------------------------

@dataclass
class _Judged:
    """What the judge said, per set, with the stages reached."""

    entries: list[FolderEntry] = field(default_factory=list)
    sets_judged: int = 0
    reached_document: int = 0
    reached_rules: int = 0


def _judge(folder: Path, profile: Profile, options: CertifyOptions, trust: TrustStore | None,
           plugins: FlaPlugins, progress: ProgressFn | None, total_sets: int,
           found: _Findings) -> _Judged:
    from fla_core.checks.context import MemoryRegistry
    from fla_core.judge import judge_folder
    from fla_core.model import Quality
    from fla_core.settings import ChannelProfile, Settings

    channel = ChannelProfile(user="fla-certify", sender=profile.sender,
                             quality=Quality.parse(profile.quality), company_id=profile.company)
    mandates = load_mandates(options.mandates) if options.mandates else None
    today = options.today or date.today()
    at = options.at or datetime.now(UTC)
    registry = MemoryRegistry()
    judged = _Judged()

    def on_set(entry: FolderEntry) -> None:
        # Later sets see the declarations earlier ones registered (spec 8.4): references
        # reused or chains broken across files are the judge's own rules (CON-001, CON-002).
        registry.entries.update(entry.verdict.accepted_registry)
        judged.entries.append(entry)
        _record(entry, found, options.example_cap, judged)
        if progress is not None:
            progress("sets", len(judged.entries), total_sets)

    judge_folder(folder, channel, Settings(), trust=trust, today=today, at=at,
                 registry=registry, mandates=mandates, plugins=plugins,
                 check_mandates=mandates is not None, on_set=on_set)
    return judged


_DOCUMENT_STEP = {"138", "102", "139", "312", "158", "172"}


def _record(entry: FolderEntry, found: _Findings, cap: int, judged: _Judged) -> None:
    verdict = entry.verdict
    if entry.go is not None:
        judged.sets_judged += 1
    error = verdict.error
    if error is not None:
        case = case_for_code(error.code)
        if error.code in _DOCUMENT_STEP:
            judged.reached_document += 1
        found.fail(case, Evidence(error.describe(), file=error.subject or entry.label,
                                  code=error.error_id))
        return
    judged.reached_document += 1
    if not verdict.has_noti:
        return
    judged.reached_rules += 1
    data_file = entry.go.sibling("FI", 1) if entry.go is not None else entry.label
    for warning in verdict.file_warnings:
        found.anomaly(case_for_code(warning.code), warning.error_id, warning.message,
                      Evidence(warning.message, file=str(data_file), code=warning.error_id),
                      cap, blocking=True)  # a deprecated digest is not production quality
    for decl in verdict.declarations:
        for anomaly in decl.anomalies:
            value = f" (value {anomaly.value!r})" if anomaly.value is not None else ""
            example = Evidence(f"{anomaly.message}{value} [declaration {decl.declaration_ref}]",
                               file=str(data_file), zone=anomaly.path, code=anomaly.error_id)
            found.anomaly(case_for_code(anomaly.code), anomaly.error_id, anomaly.message,
                          example, cap, blocking=anomaly.blocking)


# --- results -----------------------------------------------------------------------------------

def _results(found: _Findings, judged: _Judged, *, files: list[Path], options: CertifyOptions,
             trust_given: bool, extra: dict[str, CaseResult]) -> list[CaseResult]:
    has_fs = any(p.name.startswith("FS.") for p in files)
    not_applicable: dict[str, str] = {}
    for case_id in _SIG_CHECKED:
        if not has_fs:
            not_applicable[case_id] = "no FS in the sets"
        elif not trust_given:
            not_applicable[case_id] = "signatures not checked: no --trust given"
    for case in cases():
        if case.layer == "document" and not judged.reached_document:
            not_applicable[case.id] = "no set reached the document checks"
        if case.layer in ("rules", "consistency") and not judged.reached_rules:
            not_applicable[case.id] = "no set reached the business rules"
        if case.layer == "round trip":
            not_applicable[case.id] = ("round trip not run (--no-round-trip)"
                                       if not options.round_trip else "round trip not run")
        if case.layer == "command":
            not_applicable[case.id] = "no --command: the folder was given"
    for code in MANDATE_CODES:
        if options.mandates is None:
            not_applicable[f"RUL-{code}"] = "mandates not checked: no --mandates given"
    not_applicable["CON-003"] = ("not checked by this catalogue version: the rules 930/932 "
                                 "judge duplicates within one file (RUL-930, RUL-932)")
    if judged.sets_judged < options.min_sets:
        found.fail("SET-007", Evidence(f"{judged.sets_judged} set(s) judged; at least "
                                       f"{options.min_sets} are required"))
    results = []
    for case in cases():
        if case.id in extra:
            results.append(extra[case.id])
            continue
        evidence = tuple(found.evidence.get(case.id, ()))
        groups = found.groups_of(case.id) if case.id in found.counts else ()
        if evidence or (groups and found.blocking_groups(case.id)):
            results.append(CaseResult(case, Outcome.FAILED, evidence, groups))
        elif case.id in not_applicable:
            results.append(CaseResult(case, Outcome.NOT_APPLICABLE,
                                      (Evidence(not_applicable[case.id]),)))
        else:
            results.append(CaseResult(case, Outcome.PASSED, (), groups))
    return results


def certify(folder: Path, profile: Profile | None = None, *,
            options: CertifyOptions = CertifyOptions(),
            extra_results: Iterable[CaseResult] = (), round_trip: RoundTripFn | None = None,
            plugins: FlaPlugins | None = None, progress: ProgressFn | None = None,
            started: datetime | None = None) -> Report:
    """Certify the sets of ``folder``: the offline layers, then ``round_trip`` (when given and
    ``options.round_trip``) with the offline verdicts. ``extra_results`` (the command's cases)
    replace the cases of the same ids. NothingToCertify when the folder holds no upload name.
    """
    from fla_core.plugins import get_plugins

    started = started or datetime.now(UTC).astimezone()
    files = folder_files(folder)
    if not files:
        raise NothingToCertify(f"{folder}: empty folder, nothing to certify")
    if not any(prefix_of(p.name) in UPLOAD_PREFIXES and stem_of(p.name) for p in files):
        raise NothingToCertify(f"{folder}: no FI/FS/GO/TD files, nothing to certify; give the "
                               "folder the software writes its sets to")
    trust_text = ", ".join(str(p) for p in options.trust) or None
    if profile is None:
        profile = infer_profile(files, mandates=str(options.mandates) if options.mandates
                                else None, trust=trust_text)
    judged_files = []
    for n, path in enumerate(files, 1):
        judged_files.append(JudgedFile(path.name, path.stat().st_size, sha256_file(path)))
        if progress is not None:
            progress("files", n, len(files))
    found = _Findings()
    _folder_cases(files, found)
    trust = load_trust(options.trust) if options.trust else None
    total_sets = sum(1 for p in files if p.name.startswith("GO.")) or 1
    judged = _judge(folder, profile, options, trust, plugins or get_plugins(), progress,
                    total_sets, found)
    extra = {r.case.id: r for r in extra_results}
    if round_trip is not None and options.round_trip:
        extra.update({r.case.id: r for r in round_trip(folder, profile, judged.entries)})
    results = _results(found, judged, files=files, options=options,
                       trust_given=trust is not None, extra=extra)
    if progress is not None:
        progress("cases", len(results), len(results))
    return make_report(results, profile=profile, options=options, started=started,
                       sets_judged=judged.sets_judged, files=judged_files,
                       applications=sorted({e.go.appl for e in judged.entries
                                            if e.go is not None}))


def make_report(results: Sequence[CaseResult], *, profile: Profile, options: CertifyOptions,
                started: datetime, sets_judged: int, files: Sequence[JudgedFile] = (),
                applications: Sequence[str] = ()) -> Report:
    """The report of finished results: statement, counts, verdict."""
    ready = (sets_judged >= options.min_sets
             and all(r.outcome is not Outcome.FAILED for r in results))
    statement = Statement(
        supplier=options.supplier, software=options.software,
        software_version=options.software_version, profile=profile,
        started=started.isoformat(timespec="seconds"), product_version=fla_core.__version__,
        catalogue_version=CATALOGUE_VERSION, sets_judged=sets_judged,
        min_sets=options.min_sets, counts=count_outcomes(results), ready=ready)
    extra: dict[str, Any] = {"applications": list(applications),
                             "round_trip": options.round_trip}
    if options.today is not None:
        extra["today"] = options.today.isoformat()
    return Report(statement, tuple(results), tuple(files), extra)
