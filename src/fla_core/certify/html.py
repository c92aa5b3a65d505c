"""The HTML form of a certification report: one self-contained page for people.

Everything is inline (CSS, a few lines of script for the table filter), nothing is fetched,
so the file reads the same opened from disk, mailed, archived or printed to PDF. Order of the
page: the conformance statement with the verdict, the failed cases with their evidence, then
every case in a table a reader can filter. Every string from the report is escaped; the
outcome is always written as a word, so the page reads without colour.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from pathlib import Path

from fla_core.certify.junit import xml_safe
from fla_core.certify.model import LAYERS, AnomalyGroup, CaseResult, Evidence, Outcome, Report
from fla_core.files import atomic_write

_CSS = """
:root { --ok: #1a7f37; --bad: #b42318; --na: #57606a; --line: #d0d7de; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans",
       sans-serif; color: #1f2328; margin: 0 auto; padding: 1rem 1.5rem 3rem;
       max-width: 78rem; }
h1 { font-size: 1.6rem; margin: .5rem 0; }
h2 { font-size: 1.3rem; margin: 1.5rem 0 .6rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace;
              font-size: .9em; }
/* Long file names, paths, digests and zones wrap anywhere: never a horizontal scroll. */
td, th, dd, li, code, summary, p { overflow-wrap: anywhere; word-break: break-word; }
.verdict { font-size: 2rem; font-weight: 800; letter-spacing: .02em; margin: .4rem 0;
           padding: .3rem 1rem; border: 3px solid; border-radius: 6px; display: inline-block; }
.verdict.ready { color: var(--ok); }
.verdict.not-ready { color: var(--bad); }
.summary { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 0 2rem;
           align-items: start; }
@media (max-width: 60rem) { .summary { grid-template-columns: minmax(0, 1fr); } }
dl.statement { display: grid; grid-template-columns: minmax(9rem, 14rem) minmax(0, 1fr);
               gap: .2rem 1rem; margin: .8rem 0; }
dl.statement dt { font-weight: 600; }
dl.statement dd { margin: 0; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; margin: .5rem 0; }
th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
thead th { background: var(--soft); }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
.counts td, .counts th { padding: .15rem .5rem; }
.counts td { text-align: right; }
.outcome { font-weight: 700; white-space: nowrap; }
.outcome.failed { color: var(--bad); }
.outcome.passed { color: var(--ok); }
.outcome.not-applicable { color: var(--na); font-weight: 400; }
article.case { border: 1px solid var(--line); border-left: 6px solid var(--bad);
               border-radius: 4px; padding: .7rem 1rem; margin: .8rem 0; }
.meta { color: #57606a; margin: 0 0 .5rem; }
ul.evidence { list-style: none; padding: 0; margin: .3rem 0; }
ul.evidence > li { border-top: 1px dashed var(--line); padding: .35rem 0; }
ul.evidence p { margin: 0; }
ul.evidence dl { display: grid; grid-template-columns: max-content minmax(0, 1fr);
                 gap: 0 .8rem; margin: .2rem 0 0; }
ul.evidence dt { font-weight: 600; }
ul.evidence dd { margin: 0; }
details { border: 1px solid var(--line); border-radius: 4px; padding: .3rem .6rem;
          margin: .4rem 0; }
summary { cursor: pointer; font-weight: 600; }
#filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end;
           margin: .5rem 0; }
#filters[hidden] { display: none; }
#filters label { display: flex; flex-direction: column; font-size: .9rem; }
#filters input { min-width: 16rem; }
.col-id { width: 7.5rem; } .col-layer { width: 8rem; } .col-spec { width: 6rem; }
.col-outcome { width: 9rem; }
.col-size { width: 8rem; } .col-digest { width: 40%; }
footer { margin-top: 2rem; color: #57606a; font-size: .9rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  #filters { display: none; }
  .verdict { border-width: 2px; }
  article.case, tr, details { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  tr[hidden] { display: table-row; }
}
"""

# Filters the table of all cases by layer, outcome and text. Without script the form stays
# hidden and the table is shown whole; before printing every group is opened.
_SCRIPT = """
(function () {
  var form = document.getElementById('filters');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#all-cases tbody tr'));
  var count = document.getElementById('shown');
  function apply() {
    var layer = form.elements.layer.value, outcome = form.elements.outcome.value;
    var text = form.elements.text.value.toLowerCase(), shown = 0;
    rows.forEach(function (row) {
      var ok = (!layer || row.dataset.layer === layer) &&
               (!outcome || row.dataset.outcome === outcome) &&
               (!text || row.textContent.toLowerCase().indexOf(text) >= 0);
      row.hidden = !ok; if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + rows.length + ' cases shown';
  }
  form.hidden = false;
  form.addEventListener('input', apply);
  form.addEventListener('change', apply);
  form.addEventListener('submit', function (e) { e.preventDefault(); });
  window.addEventListener('beforeprint', function () {
    document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  });
  apply();
})();
"""


def _e(value: object) -> str:
    """Text for HTML: escaped, quotes included, with what HTML cannot carry made visible."""
    return escape(xml_safe(str(value)), quote=True)


def _outcome(outcome: Outcome) -> str:
    label = {Outcome.PASSED: "✓ passed", Outcome.FAILED: "✗ FAILED",
             Outcome.NOT_APPLICABLE: "– not applicable"}[outcome]
    css = outcome.value.replace(" ", "-")
    return f'<span class="outcome {css}">{_e(label)}</span>'


def _anchor(case_id: str) -> str:
    return "case-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in case_id)


def _evidence(e: Evidence) -> str:
    rows = [(label, value) for label, value in (
        ("File", e.file), ("Line", e.line), ("Zone", e.zone), ("Code", e.code),
        ("Answer", e.answer)) if value is not None]
    dl = "".join(f"<dt>{label}</dt><dd><code>{_e(value)}</code></dd>" for label, value in rows)
    return f"<li><p>{_e(e.message)}</p>" + (f"<dl>{dl}</dl>" if dl else "") + "</li>"


def _evidence_list(items: Iterable[Evidence]) -> str:
    body = "".join(_evidence(e) for e in items)
    return f'<ul class="evidence">{body}</ul>' if body else ""


def _group(g: AnomalyGroup) -> str:
    shown = len(g.examples)
    listed = (f"all {shown} listed" if shown >= g.count
              else f"first {shown} of {g.count} listed")
    noun = "anomaly" if g.count == 1 else "anomalies"
    return (f"<details><summary><code>{_e(g.error_id)}</code>: {g.count} {noun} "
            f"({listed}) — {_e(g.message)}</summary>"
            f"{_evidence_list(g.examples)}</details>")


def _failed_case(r: CaseResult) -> str:
    c = r.case
    return (f'<article class="case" id="{_anchor(c.id)}">'
            f"<h3>{_e(c.id)} — {_e(c.title)}</h3>"
            f'<p class="meta">{_outcome(r.outcome)} · layer {_e(c.layer)} · spec §{_e(c.spec)}'
            f"</p>{_evidence_list(r.evidence)}"
            + "".join(_group(g) for g in r.groups) + "</article>")


def _statement(report: Report) -> str:
    s = report.statement
    p = s.profile
    profile = f"quality {p.quality}, sender {p.sender}, company {p.company}"
    rows: list[tuple[str, object]] = [
        ("Supplier", s.supplier or "not given"),
        ("Software", s.software or "not given"),
        ("Software version", s.software_version or "not given"),
        ("Profile", profile),
    ]
    if p.mandates:
        rows.append(("Mandates", p.mandates))
    if p.trust:
        rows.append(("Trust anchors", p.trust))
    enough = "enough" if s.sets_judged >= s.min_sets else "too few"
    rows += [
        ("Date and time", s.started),
        ("Sets judged", f"{s.sets_judged} (at least {s.min_sets} required: {enough})"),
        ("Product version", s.product_version),
        ("Catalogue version", s.catalogue_version),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    css = "ready" if s.ready else "not-ready"
    mark = "✓" if s.ready else "✗"
    return (f'<section aria-labelledby="statement"><h2 id="statement">Conformance statement'
            f'</h2><p class="verdict {css}" role="status">{mark} {_e(s.verdict.upper())}</p>'
            f'<div class="summary"><dl class="statement">{dl}</dl>{_counts(s.counts)}</div>'
            "</section>")


def _counts(counts: Mapping[str, Mapping[str, int]]) -> str:
    layers = [layer for layer in LAYERS if layer in counts]
    layers += sorted(set(counts).difference(LAYERS))
    outcomes = [o.value for o in Outcome]
    head = "".join(f'<th scope="col">{_e(o)}</th>' for o in outcomes)
    body = []
    totals = dict.fromkeys(outcomes, 0)
    for layer in layers:
        cells = "".join(f"<td>{counts[layer].get(o, 0)}</td>" for o in outcomes)
        for o in outcomes:
            totals[o] += counts[layer].get(o, 0)
        body.append(f'<tr><th scope="row">{_e(layer)}</th>{cells}</tr>')
    total = "".join(f"<td>{totals[o]}</td>" for o in outcomes)
    return (f'<table class="counts"><caption>Cases per layer</caption><thead><tr>'
            f'<th scope="col">layer</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f'<tfoot><tr><th scope="row">all layers</th>{total}</tr></tfoot></table>')


def _failed(report: Report) -> str:
    failed = report.failed()
    body = "".join(_failed_case(r) for r in failed) or "<p>No case failed.</p>"
    return (f'<section aria-labelledby="failed"><h2 id="failed">Failed cases ({len(failed)})'
            f"</h2>{body}</section>")


def _all_cases(report: Report) -> str:
    layers = [layer for layer in LAYERS if any(r.case.layer == layer for r in report.results)]
    layers += sorted({r.case.layer for r in report.results}.difference(LAYERS))
    layer_options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in layers)
    outcome_options = "".join(f'<option value="{_e(o.value)}">{_e(o.value)}</option>'
                              for o in Outcome)
    form = ('<form id="filters" hidden role="search" aria-label="Filter the cases">'
            '<label>Layer<select name="layer"><option value="">all layers</option>'
            f'{layer_options}</select></label>'
            '<label>Outcome<select name="outcome"><option value="">all outcomes</option>'
            f'{outcome_options}</select></label>'
            '<label>Text<input name="text" type="search" placeholder="id, title, file…">'
            '</label><output id="shown" aria-live="polite"></output></form>')
    rows = []
    for r in report.results:
        c = r.case
        cid = _e(c.id)
        ident = (f'<a href="#{_anchor(c.id)}">{cid}</a>' if r.outcome is Outcome.FAILED
                 else cid)
        rows.append(f'<tr data-layer="{_e(c.layer)}" data-outcome="{_e(r.outcome.value)}">'
                    f'<th scope="row">{ident}</th><td>{_e(c.layer)}</td><td>{_e(c.title)}</td>'
                    f"<td>§{_e(c.spec)}</td><td>{_outcome(r.outcome)}</td></tr>")
    table = ('<table id="all-cases"><caption>Every case of the catalogue</caption>'
             '<colgroup><col class="col-id"><col class="col-layer"><col><col class="col-spec">'
             '<col class="col-outcome"></colgroup><thead><tr><th scope="col">Case</th>'
             '<th scope="col">Layer</th><th scope="col">What must hold</th>'
             '<th scope="col">Spec</th><th scope="col">Outcome</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    return (f'<section aria-labelledby="cases"><h2 id="cases">All cases ({len(rows)})</h2>'
            f"{form}{table}</section>")


def _files(report: Report) -> str:
    if not report.files:
        return ""
    rows = "".join(f"<tr><td><code>{_e(f.name)}</code></td><td>{f.size:,} "
                   f"{'byte' if f.size == 1 else 'bytes'}</td>"
                   f"<td><code>{_e(f.sha256)}</code></td></tr>" for f in report.files)
    return ('<section aria-labelledby="files"><h2 id="files">Judged files</h2>'
            '<table><colgroup><col><col class="col-size"><col class="col-digest"></colgroup>'
            '<thead><tr><th scope="col">File</th><th scope="col">Size</th>'
            f'<th scope="col">SHA-256</th></tr></thead><tbody>{rows}</tbody></table></section>')


def _extra(report: Report) -> str:
    if not report.extra:
        return ""
    items = "".join(
        f"<dt>{_e(k)}</dt><dd><code>{_e(json.dumps(v, ensure_ascii=False, default=str))}"
        f"</code></dd>" for k, v in report.extra.items())
    return ('<section aria-labelledby="extra"><h2 id="extra">Other details</h2>'
            f'<dl class="statement">{items}</dl></section>')


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page."""
    s = report.statement
    who = " ".join(x for x in (s.software, s.software_version) if x) or "software"
    title = f"Certification of {who}: {s.verdict}"
    heading = f"Certification report: {who}"
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_e(heading)}</h1></header><main>"
            f"{_statement(report)}{_failed(report)}{_all_cases(report)}{_files(report)}"
            f"{_extra(report)}</main>"
            f"<footer>fla {_e(s.product_version)}, catalogue {_e(s.catalogue_version)}, "
            f"run started {_e(s.started)}.</footer>"
            f"<script>{_SCRIPT}</script></body></html>\n")


def write_html(report: Report, path: str | Path) -> None:
    """Write the HTML form of ``report`` to ``path`` atomically (UTF-8)."""
    atomic_write(path, render_html(report).encode("utf-8"))
