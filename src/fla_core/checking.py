"""Checking offline what the channel would say: exports, triplet folders, one set of a folder.

The service behind ``fla check``: it turns each path into :class:`Finding` rows (where, code,
level, message) and prints nothing. Triplets are judged by ``fla_core.judge`` as the simulator
judges them; file names are split by ``fla_core.names`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from fla_core.anomalies import Anomaly
from fla_core.building import guess_format, no_declarations
from fla_core.formats import ReadContext
from fla_core.model import Declaration, Sender
from fla_core.names import UPLOAD_PREFIXES, prefix_of, stem_of
from fla_core.plugins import FlaPlugins

# What judge_folder judges offline: sets of FI/FS parts and GOs (a TD only acts on a channel).
JUDGED_PREFIXES = ("FI", "FS", "GO")

TargetKind = Literal["folder", "set", "export"]


class NothingToCheck(ValueError):
    """A path holds nothing to check (missing, empty, a folder named like an export)."""


@dataclass(frozen=True)
class Finding:
    """One line of ``fla check``: where, which code, how bad, what."""

    file: str
    where: str
    code: str
    severity: str  # "error" (input / file level), "B", "W", "ok"
    message: str

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-ready fields."""
        return {"file": self.file, "where": self.where, "code": self.code,
                "severity": self.severity, "message": self.message}

    @property
    def failing(self) -> bool:
        """True when the finding makes ``check`` exit 1 (an error or a blocking anomaly)."""
        return self.severity in ("error", "B")


@dataclass(frozen=True)
class Target:
    """A path to check and what it is."""

    path: Path
    kind: TargetKind


def target_of(path: Path, plugins: FlaPlugins) -> Target:
    """What ``path`` is: a triplet folder, a file of a set, an export; NothingToCheck else."""
    if not path.exists():
        raise NothingToCheck(f"{path}: no such file or folder")
    if not path.is_dir():
        return Target(path, "set" if prefix_of(path.name) in UPLOAD_PREFIXES else "export")
    if any(prefix_of(p.name) in JUDGED_PREFIXES and p.is_file() for p in path.iterdir()):
        return Target(path, "folder")
    suffix = path.suffix.lower()
    fmt = next((f for f in plugins.input_formats() if suffix in f.suffixes), None)
    if fmt is not None:
        raise NothingToCheck(f"{path}: is a folder, not a {fmt.name.upper()} export; give the "
                             "export file itself, or a folder of FI/FS/GO files")
    raise NothingToCheck(f"{path}: no FI/FS/GO files in this folder, nothing to check; give a "
                         "folder of triplets or an export file (CSV, JSON, ...)")


def set_of(name: str) -> str:
    """The set a file name belongs to: its stem, or the name itself when too short to have one.

    A name too short for a stem is judged on its own (its name check gives the code), exactly
    as in a folder (``fla_core.judge.judge_folder``); it never stands for another set.
    """
    return stem_of(name) or name


def check_export(path: Path, *, fmt: str | None, sender: Sender, env: str, today: date,
                 plugins: FlaPlugins) -> list[Finding]:
    """Input problems and business anomalies of an export, each located by file:line."""
    from fla_core.checks.context import CheckContext
    from fla_core.checks.engine import evaluate
    from fla_core.formats.layout import locate

    fmt = guess_format(path, plugins, fmt)
    context = ReadContext(sender=sender, environment=env,
                          creation=f"{today.isoformat()}T00:00:00")
    content = plugins.read_declarations(path, fmt, context)
    # Offline: mandates are unknown, so rules 155/101 (level 2) are skipped, not raised.
    checks = CheckContext(sender=sender, environment=env, processing_date=today,
                          check_mandates=False, qualities=plugins.quality_table())
    findings: list[Finding] = []
    position = 0
    for position, declaration in enumerate(content, start=1):
        verdict = evaluate(declaration, position, checks, plugins)
        for anomaly in verdict.anomalies:
            line, column = locate(anomaly.path, declaration)
            located = replace(anomaly, source=_source(path, line, column))
            findings.append(_anomaly_finding(str(path), located, declaration))
    if position == 0 and not context.problems:
        context.problems.append(no_declarations(path))
    problems = [Finding(str(path), _source(path, p.line, p.field), "input", "error", p.message)
                for p in context.problems]
    return problems + findings


def _source(path: Path, line: int | None, column: str | None) -> str:
    where = f"{path}:{line}" if line is not None else str(path)
    return f"{where} field {column}" if column else where


def _anomaly_finding(file: str, anomaly: Anomaly, declaration: Declaration) -> Finding:
    value = f" (value {anomaly.value!r})" if anomaly.value is not None else ""
    return Finding(file, anomaly.source or anomaly.path or "", anomaly.error_id,
                   anomaly.severity, f"{anomaly.message}{value} "
                   f"[declaration {declaration.declaration_ref}]")


def check_folder(directory: Path, *, profile: Any, today: date, at: datetime, trust: Any,
                 plugins: FlaPlugins, only_set: str | None = None) -> list[Finding]:
    """Judge every set of a triplet folder as the channel would (``fla_core.judge``).

    ``only_set`` (a :func:`set_of`) keeps that set alone: ``fla check FI.…`` names a file of it.
    """
    from fla_core.checks.context import MemoryRegistry
    from fla_core.judge import judge_folder
    from fla_core.settings import Settings

    findings: list[Finding] = []
    if only_set is None:
        findings += _unknown_files(directory)
    entries = judge_folder(directory, profile, Settings(), trust=trust, today=today, at=at,
                           registry=MemoryRegistry(), plugins=plugins, check_mandates=False)
    # an entry is labelled by its GO name, by the stem of a set without GO, or by the name of a
    # file too short to have a stem
    entries = [e for e in entries if only_set is None or set_of(e.label) == only_set]
    if not entries:  # e.g. a TD alone: it cancels a set on the channel, nothing to judge here
        raise NothingToCheck(f"{directory}: no FI/FS/GO files to judge"
                             + (f" for the set {only_set}" if only_set else ""))
    for entry in entries:
        findings += _verdict_findings(str(directory / entry.label), entry.label, entry.verdict)
    return findings


def _unknown_files(directory: Path) -> list[Finding]:
    from fla_core.triplet import read_folder

    return [Finding(str(path), path.name, "name", "W", "not an upload name (FI/FS/GO/TD); "
                    "ignored") for path in read_folder(directory).unknown]


def _verdict_findings(label: str, subject: str, verdict: Any) -> list[Finding]:
    if verdict.error is not None:
        return [Finding(label, verdict.error.subject or subject, verdict.error.error_id,
                        "error", verdict.error.describe())]
    note = "" if verdict.signatures_checked else " (signatures not checked: no --trust)"
    findings = [Finding(label, subject, "ACRF", "ok", f"positive ACRF{note}; "
                        f"{len(verdict.declarations)} declaration(s)")]
    findings += [Finding(label, "/", w.error_id, w.severity, w.message)
                 for w in verdict.file_warnings]
    for decl in verdict.declarations:
        for anomaly in decl.anomalies:
            value = f" (value {anomaly.value!r})" if anomaly.value is not None else ""
            findings.append(Finding(label, anomaly.path or "", anomaly.error_id,
                                    anomaly.severity, f"{anomaly.message}{value} "
                                    f"[declaration {decl.declaration_ref}]"))
    return findings


def check_targets(targets: Iterable[Target], *, fmt: str | None, sender: Sender, env: str,
                  today: date, at: datetime, trust: Any, plugins: FlaPlugins) -> list[Finding]:
    """The findings of every target, in order: exports read, triplets judged."""
    from fla_core.settings import ChannelProfile

    profile = ChannelProfile(user="fla-check", sender=sender.sender_nbr, quality=sender.quality,
                             company_id=sender.company_id)
    findings: list[Finding] = []
    for target in targets:
        if target.kind == "export":
            findings += check_export(target.path, fmt=fmt, sender=sender, env=env, today=today,
                                     plugins=plugins)
        elif target.kind == "folder":
            findings += check_folder(target.path, profile=profile, today=today, at=at,
                                     trust=trust, plugins=plugins)
        else:
            findings += check_folder(target.path.parent, profile=profile, today=today, at=at,
                                     trust=trust, plugins=plugins,
                                     only_set=set_of(target.path.name))
    return findings
