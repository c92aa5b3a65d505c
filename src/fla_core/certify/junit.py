"""The JUnit XML form of a certification report, for CI servers.

One ``<testsuite>`` per layer that has cases, one ``<testcase>`` per case (classname = the
layer, name = ``"ID title"``), ``<failure>`` carrying the evidence as text, ``<skipped>`` for a
case that does not apply. The shape is the Ant/Surefire one that Jenkins' xUnit plugin
publishes as ``junit-10.xsd`` (``tests/data/junit-10.xsd``); the statement travels as
``<properties>`` of every suite, so a CI page showing one suite still shows the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

from fla_core.certify.model import LAYERS, AnomalyGroup, CaseResult, Evidence, Outcome, Report
from fla_core.files import atomic_write

# What XML 1.0 cannot carry (C0 controls but tab/newline/return, lone surrogates from
# surrogate-escaped file names, U+FFFE/U+FFFF); HTML parses the same characters as errors.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 refuses shown as a ``\\xNN``/``\\uNNNN`` escape."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def evidence_line(e: Evidence) -> str:
    """One piece of evidence as one line: where, what, the answer, the sentence."""
    where = e.file or ""
    if e.line is not None:
        where += f":{e.line}"
    parts = [p for p in (where, f"zone {e.zone}" if e.zone else "", e.code or "") if p]
    head = " ".join(parts)
    tail = f" (answer: {e.answer})" if e.answer else ""
    return f"{head}: {e.message}{tail}" if head else f"{e.message}{tail}"


def _group_lines(g: AnomalyGroup) -> Iterable[str]:
    shown = len(g.examples)
    more = f", {shown} shown" if shown < g.count else ""
    yield f"{g.error_id} x{g.count}{more}: {g.message}"
    for example in g.examples:
        yield f"  {evidence_line(example)}"


def evidence_text(result: CaseResult) -> str:
    """A case's evidence and anomaly groups as plain text, one line each."""
    lines = [evidence_line(e) for e in result.evidence]
    for group in result.groups:
        lines.extend(_group_lines(group))
    return "\n".join(lines)


def _failure_message(result: CaseResult) -> str:
    if result.evidence:
        first = evidence_line(result.evidence[0])
        more = len(result.evidence) - 1 + len(result.groups)
        return f"{first} (+{more} more)" if more else first
    total = sum(g.count for g in result.groups)
    ids = ", ".join(g.error_id for g in result.groups)
    return f"{total} anomalies: {ids}"


def _layers(report: Report) -> list[str]:
    present = {r.case.layer for r in report.results}
    extra = sorted(present.difference(LAYERS))
    return [layer for layer in LAYERS if layer in present] + extra


def _properties(report: Report) -> dict[str, str]:
    s = report.statement
    values = {
        "verdict": s.verdict, "supplier": s.supplier, "software": s.software,
        "software_version": s.software_version, "quality": s.profile.quality,
        "sender": s.profile.sender, "company": s.profile.company,
        "mandates": s.profile.mandates, "trust": s.profile.trust, "started": s.started,
        "product_version": s.product_version, "catalogue_version": s.catalogue_version,
        "sets_judged": str(s.sets_judged), "min_sets": str(s.min_sets),
    }
    return {k: v for k, v in values.items() if v is not None}


def _testcase(suite: etree._Element, result: CaseResult) -> None:
    case = etree.SubElement(suite, "testcase", classname=xml_safe(result.case.layer),
                            name=xml_safe(f"{result.case.id} {result.case.title}"))
    text = xml_safe(evidence_text(result))
    if result.outcome is Outcome.FAILED:
        failure = etree.SubElement(case, "failure", message=xml_safe(_failure_message(result)),
                                   type=xml_safe(result.case.id))
        failure.text = text
    elif result.outcome is Outcome.NOT_APPLICABLE:
        skipped = etree.SubElement(case, "skipped", message="not applicable")
        skipped.text = text or None
    elif text:
        etree.SubElement(case, "system-out").text = text


def render_junit(report: Report) -> bytes:
    """The report as a JUnit XML document (UTF-8 bytes)."""
    root = etree.Element("testsuites", name="fla certify")
    properties = _properties(report)
    totals = {"tests": 0, "failures": 0}
    for layer in _layers(report):
        results = [r for r in report.results if r.case.layer == layer]
        failed = sum(r.outcome is Outcome.FAILED for r in results)
        skipped = sum(r.outcome is Outcome.NOT_APPLICABLE for r in results)
        suite = etree.SubElement(
            root, "testsuite", name=xml_safe(layer), tests=str(len(results)),
            failures=str(failed), errors="0", skipped=str(skipped),
            timestamp=xml_safe(report.statement.started))
        props = etree.SubElement(suite, "properties")
        for name, value in properties.items():
            etree.SubElement(props, "property", name=name, value=xml_safe(value))
        for result in results:
            _testcase(suite, result)
        totals["tests"] += len(results)
        totals["failures"] += failed
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                pretty_print=True))


def write_junit(report: Report, path: str | Path) -> None:
    """Write the JUnit XML form of ``report`` to ``path`` atomically."""
    atomic_write(path, render_junit(report))
