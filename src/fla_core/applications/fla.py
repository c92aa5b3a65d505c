"""The FLA application: FI layout of spec section 7, streaming renderer and reader/validator.

``scan`` is the one streaming pass that ``fla check`` and the simulator run on an FI set
(spec 5.3 P10-P15); ``render`` writes an FI with constant memory; ``read`` turns an FI back into
model objects lazily, for tools.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

from lxml import etree

from fla_core import fi
from fla_core.anomalies import ChannelError
from fla_core.model import Declaration, Employer, FileContent, FileHeader, Training, Worker

NAMESPACE = "urn:be:fgov:socialsecurity:fla:v1"
ROOT = "FLAFile"
SCHEMA: Path = Path(str(resources.files("fla_core").joinpath("schemas/fla_v1.xsd")))

_Q = f"{{{NAMESPACE}}}"
HEADER_TAG = _Q + "FileHeader"
DECLARATION_TAG = _Q + "Declaration"
_WORKER = _Q + "Worker"
_TRAINING = _Q + "Training"
_EMPLOYER = _Q + "Employer"


@dataclass(frozen=True)
class HeaderExpectation:
    """What P14 compares the FI header with: the name (sender, env) and the channel."""

    sender: str
    environment: str
    quality: str
    company_id: str


@dataclass
class ScanResult:
    """Outcome of a scan that raised nothing: the header and the number of declarations."""

    header: FileHeader
    declarations: int


_SCHEMA_LOCK = threading.Lock()


@cache
def _compiled_schema() -> etree.XMLSchema:
    parser = etree.XMLParser(**fi.SAFE_OPTIONS)
    return etree.XMLSchema(etree.parse(str(SCHEMA), parser))


def schema() -> etree.XMLSchema:
    """The compiled FLA XSD, loaded once per process (the compiled schema is then shared)."""
    # libxml2's schema compiler is not thread-safe: two sets judged at once must not both
    # compile it ("Internal error: xmlSchemaPValAttrNodeValue").
    with _SCHEMA_LOCK:
        return _compiled_schema()


# --- elements -> model ------------------------------------------------------------------------

def _texts(el: Any) -> dict[str, str]:
    # Comments and PIs have a non-string tag; they are not data.
    return {c.tag: c.text or "" for c in el if isinstance(c.tag, str)}


def header_of(el: Any) -> FileHeader:
    """``FileHeader`` element -> model (missing elements become empty text)."""
    v = _texts(el)
    return FileHeader(
        sender_nbr=v.get(_Q + "SenderNbr", ""), quality=v.get(_Q + "SenderQuality", ""),
        company_id=v.get(_Q + "SenderCompanyID", ""), environment=v.get(_Q + "Environment", ""),
        creation=v.get(_Q + "CreationDateTime", ""),
        file_reference=v.get(_Q + "FileReference", ""))


_TRAINING_FIELDS = {_Q + name: attr for name, attr in (
    ("TrainingRef", "training_ref"), ("ProviderCompanyID", "provider_company_id"),
    ("Title", "title"), ("TrainingType", "training_type"), ("StartDate", "start_date"),
    ("EndDate", "end_date"), ("Hours", "hours"))}
_DECLARATION_FIELDS = {_Q + name: attr for name, attr in (
    ("DeclarationRef", "declaration_ref"), ("Action", "action"),
    ("ReplacedDeclarationRef", "replaced_declaration_ref"),
    ("ReportingYear", "reporting_year"))}
_INSS = _Q + "INSS"
_DURING = _Q + "DuringWorkingTime"
_COMPANY = _Q + "CompanyID"
_NOSS = _Q + "NOSSRegistrationNbr"


_REPLACED = _Q + "ReplacedDeclarationRef"


# Every text node under an element, as plain strings: one call into libxml2 per declaration.
_ALL_TEXTS = etree.XPath(".//text()", smart_strings=False)


def valid_declaration_of(el: Any) -> Declaration:
    """``Declaration`` element already valid against the XSD (no comments) -> model.

    The element order and cardinalities of spec 7.3 are guaranteed, so values are taken by
    position: this runs for every record. The leaf values come from one XPath call, and only
    the workers and trainings become Python elements (for their line and child count): three
    times fewer element objects than walking every leaf.
    """
    kids = list(el)
    texts = _ALL_TEXTS(el)
    d = Declaration(texts[0], texts[1], "", line=el.sourceline)
    p = 2
    i = 2
    if kids[2].tag == _REPLACED:
        d.replaced_declaration_ref = texts[2]
        p = i = 3
    d.reporting_year = texts[p]
    p += 1
    i += 1
    if i < len(kids) and kids[i].tag == _EMPLOYER:
        n = len(kids[i])
        d.employer = Employer(texts[p], texts[p + 1] if n > 1 else None)
        p += n
        i += 1
    workers = d.workers
    for w in kids[i:]:
        worker = Worker(texts[p], line=w.sourceline)
        p += 1
        trainings = worker.trainings
        for t in w[1:]:
            if len(t) == 8:  # with ProviderCompanyID (second)
                v = texts[p:p + 8]
                p += 8
                trainings.append(Training(v[0], v[2], v[3], v[4], v[5], v[6], v[7] == "true",
                                          v[1], t.sourceline))
            else:
                v = texts[p:p + 7]
                p += 7
                trainings.append(Training(v[0], v[1], v[2], v[3], v[4], v[5], v[6] == "true",
                                          None, t.sourceline))
        workers.append(worker)
    # Each leaf has a non-empty value (no simple type allows ""), so there are at least as many
    # text nodes as leaves, and exactly as many unless a value is split into several nodes
    # (text and CDATA) or a container kept some white space: then the positions are wrong.
    if p != len(texts):
        return _declaration_by_children(el)
    return d


def _declaration_by_children(el: Any) -> Declaration:
    """``valid_declaration_of`` reading each leaf element's text (any text layout)."""
    kids = list(el)
    d = Declaration(kids[0].text, kids[1].text, "", line=el.sourceline)
    i = 2
    if kids[2].tag == _REPLACED:
        d.replaced_declaration_ref = kids[2].text
        i = 3
    d.reporting_year = kids[i].text
    i += 1
    if i < len(kids) and kids[i].tag == _EMPLOYER:
        ek = [c.text for c in kids[i]]
        d.employer = Employer(ek[0], ek[1] if len(ek) > 1 else None)
        i += 1
    workers = d.workers
    for w in kids[i:]:
        children = iter(w)
        worker = Worker(next(children).text, line=w.sourceline)
        trainings = worker.trainings
        for t in children:
            v = [c.text for c in t]
            if len(v) == 8:  # with ProviderCompanyID (second)
                trainings.append(Training(v[0], v[2], v[3], v[4], v[5], v[6], v[7] == "true",
                                          v[1], t.sourceline))
            else:
                trainings.append(Training(v[0], v[1], v[2], v[3], v[4], v[5], v[6] == "true",
                                          None, t.sourceline))
        workers.append(worker)
    return d


def declaration_of(el: Any) -> Declaration:
    """``Declaration`` element -> model (missing elements become empty text or None)."""
    # One flat walk over the descendants in document order with table look-ups: this runs for
    # every declaration of a file, so it avoids per-level helper calls and dict building.
    d = Declaration(declaration_ref="", action="", reporting_year="", line=el.sourceline)
    workers = d.workers
    worker: Worker | None = None
    training: Training | None = None
    for c in el.iterdescendants():
        tag = c.tag
        attr = _TRAINING_FIELDS.get(tag)
        if attr is not None:
            if training is not None:
                setattr(training, attr, c.text or "")
        elif tag == _TRAINING:
            training = Training("", "", "", "", "", "", False, line=c.sourceline)
            if worker is not None:
                worker.trainings.append(training)
        elif tag == _DURING:
            if training is not None:
                training.during_working_time = c.text == "true"
        elif tag == _WORKER:
            worker = Worker("", line=c.sourceline)
            training = None
            workers.append(worker)
        elif tag == _INSS:
            if worker is not None:
                worker.inss = c.text or ""
        elif tag in _DECLARATION_FIELDS:
            setattr(d, _DECLARATION_FIELDS[tag], c.text or "")
        elif tag == _EMPLOYER:
            d.employer = Employer(company_id="")
        elif tag == _COMPANY:
            if d.employer is not None:
                d.employer.company_id = c.text or ""
        elif tag == _NOSS and d.employer is not None:
            d.employer.noss_registration_nbr = c.text or ""
    return d


# --- scan (P10-P15) ---------------------------------------------------------------------------

def header_mismatch(header: FileHeader, expect: HeaderExpectation) -> ChannelError | None:
    """P14: 158 naming every header value that differs from the name or the channel."""
    pairs = (("SenderNbr", header.sender_nbr, expect.sender, "the file name"),
             ("Environment", header.environment, expect.environment, "the file name"),
             ("SenderQuality", header.quality, expect.quality, "the channel"),
             ("SenderCompanyID", header.company_id, expect.company_id, "the channel"))
    wrong = [f"{name} is {got!r}, {origin} says {want!r}"
             for name, got, want, origin in pairs if got != want]
    return ChannelError("158", "; ".join(wrong)) if wrong else None


def scan(parts: Sequence[Path] | IO[bytes], *, expect: HeaderExpectation | None,
         max_declarations: int,
         on_declaration: Callable[[Declaration, int], None] | None = None) -> ScanResult:
    """One streaming pass over the FI parts: P10 138, P11 102, P12 139, P13 312, P14 158, P15 172.

    ``on_declaration(declaration, position)`` is called for each declaration as soon as it is
    complete, while the file is still clean; a ChannelError raised afterwards means the caller
    must discard what it computed.
    """
    header: FileHeader | None = None
    mismatch: ChannelError | None = None
    count = 0
    batches = fi.stream_elements(parts, namespace=NAMESPACE, root=ROOT, schema=schema(),
                                 tags=(HEADER_TAG, DECLARATION_TAG))
    with closing(batches):
        for batch in batches:
            for el in batch.elements:
                if el.tag == DECLARATION_TAG:
                    count += 1
                    if (on_declaration is not None and mismatch is None
                            and count <= max_declarations):
                        # Only clean chunks are yielded: the element is schema-valid.
                        on_declaration(valid_declaration_of(el), count)
                elif header is None:
                    header = header_of(el)
                    if expect is not None:
                        mismatch = header_mismatch(header, expect)
    if header is None:  # unreachable for a schema-valid document; kept for a clear error
        raise ChannelError("312", "the document has no FileHeader")
    if mismatch is not None:
        raise mismatch
    if (too_many := too_many_declarations(count, max_declarations)) is not None:
        raise too_many
    return ScanResult(header=header, declarations=count)


def too_many_declarations(count: int, max_declarations: int) -> ChannelError | None:
    """P15: 172 when the file holds more declarations than allowed."""
    if count > max_declarations:
        return ChannelError("172", f"{count} declarations; at most {max_declarations} allowed")
    return None


def confirmed_header(parts: Sequence[Path] | IO[bytes], *,
                     expect: HeaderExpectation | None) -> FileHeader | None:
    """P10-P14 without the document's tree: the header of a file that is schema-valid and whose
    header fits ``expect``; None when that is not certain (then ``scan`` tells what is wrong).
    Declarations are not counted (P15 is the caller's). See ``fi.confirm_valid``."""
    el = fi.confirm_valid(parts, namespace=NAMESPACE, root=ROOT, xsd=SCHEMA,
                          head_tag=HEADER_TAG)
    if el is None:
        return None
    header = header_of(el)
    if expect is not None and header_mismatch(header, expect) is not None:
        return None
    return header


# --- read (tools) -----------------------------------------------------------------------------

def read(parts: Sequence[Path] | Path | IO[bytes]) -> FileContent:
    """Parse an FI back to the model; declarations come lazily, as the document is read.

    The same safety applies as in ``scan`` (138, 102, 139), but no schema validation: use
    ``scan`` to judge a file. Raises ChannelError on the header; later while iterating.
    """
    batches = fi.stream_elements(parts, namespace=NAMESPACE, root=ROOT, schema=None,
                                 tags=(HEADER_TAG, DECLARATION_TAG))
    held: list[Declaration] = []
    header: FileHeader | None = None
    for batch in batches:
        for el in batch.elements:
            if el.tag == DECLARATION_TAG:
                held.append(declaration_of(el))
            elif header is None:
                header = header_of(el)
        if header is not None:
            break
    if header is None:
        batches.close()
        raise ChannelError("312", "the document has no FileHeader")
    return FileContent(header=header, declarations=_rest(held, batches))


def _rest(held: list[Declaration], batches: Iterator[fi.Batch]) -> Iterator[Declaration]:
    yield from held
    held.clear()
    with closing(batches):  # type: ignore[type-var]
        for batch in batches:
            for el in batch.elements:
                if el.tag == DECLARATION_TAG:
                    yield declaration_of(el)


# --- render -----------------------------------------------------------------------------------

def _esc(text: object) -> str:
    # Text content only: &, <, > (so "]]>" cannot appear) and CR (a parser would turn it into LF).
    t = "" if text is None else str(text)
    if "&" in t:
        t = t.replace("&", "&amp;")
    if "<" in t:
        t = t.replace("<", "&lt;")
    if ">" in t:
        t = t.replace(">", "&gt;")
    if "\r" in t:
        t = t.replace("\r", "&#13;")
    return t


# Each record is written as indented markup text and parsed back by lxml, which is 2-3 times
# faster than building it node by node and still refuses text XML cannot carry (control
# characters). The elements carry no namespace: they are written inside the root, which
# declares the default namespace, so they belong to it without a repeated xmlns="...".

def _header_text(h: FileHeader) -> str:
    return (f"<FileHeader>\n    <SenderNbr>{_esc(h.sender_nbr)}</SenderNbr>"
            f"\n    <SenderQuality>{_esc(h.quality)}</SenderQuality>"
            f"\n    <SenderCompanyID>{_esc(h.company_id)}</SenderCompanyID>"
            f"\n    <Environment>{_esc(h.environment)}</Environment>"
            f"\n    <CreationDateTime>{_esc(h.creation)}</CreationDateTime>"
            f"\n    <FileReference>{_esc(h.file_reference)}</FileReference>\n  </FileHeader>")


def _declaration_text(d: Declaration) -> str:
    p = [f"<Declaration>\n    <DeclarationRef>{_esc(d.declaration_ref)}</DeclarationRef>"
         f"\n    <Action>{_esc(d.action)}</Action>"]
    if d.replaced_declaration_ref is not None:
        p.append(f"\n    <ReplacedDeclarationRef>{_esc(d.replaced_declaration_ref)}"
                 "</ReplacedDeclarationRef>")
    p.append(f"\n    <ReportingYear>{_esc(d.reporting_year)}</ReportingYear>")
    e = d.employer
    if e is not None:
        p.append(f"\n    <Employer>\n      <CompanyID>{_esc(e.company_id)}</CompanyID>")
        if e.noss_registration_nbr is not None:
            p.append(f"\n      <NOSSRegistrationNbr>{_esc(e.noss_registration_nbr)}"
                     "</NOSSRegistrationNbr>")
        p.append("\n    </Employer>")
    for w in d.workers:
        p.append(f"\n    <Worker>\n      <INSS>{_esc(w.inss)}</INSS>")
        for t in w.trainings:
            p.append(f"\n      <Training>\n        <TrainingRef>{_esc(t.training_ref)}"
                     "</TrainingRef>")
            if t.provider_company_id is not None:
                p.append(f"\n        <ProviderCompanyID>{_esc(t.provider_company_id)}"
                         "</ProviderCompanyID>")
            p.append(f"\n        <Title>{_esc(t.title)}</Title>"
                     f"\n        <TrainingType>{_esc(t.training_type)}</TrainingType>"
                     f"\n        <StartDate>{_esc(t.start_date)}</StartDate>"
                     f"\n        <EndDate>{_esc(t.end_date)}</EndDate>"
                     f"\n        <Hours>{_esc(t.hours)}</Hours>"
                     "\n        <DuringWorkingTime>"
                     f"{'true' if t.during_working_time else 'false'}</DuringWorkingTime>"
                     "\n      </Training>")
        p.append("\n    </Worker>")
    p.append("\n  </Declaration>")
    return "".join(p)


def render(content: FileContent, out: IO[bytes]) -> None:
    """Write ``content`` as an FLA FI (UTF-8), one declaration at a time (constant memory)."""
    parser = etree.XMLParser(**fi.SAFE_OPTIONS)  # per call: lxml parsers are not thread-safe
    out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    with etree.xmlfile(out, encoding="utf-8") as xf, \
            xf.element(_Q + ROOT, nsmap={None: NAMESPACE}):
        xf.write("\n  ")
        xf.write(_element(_header_text(content.header), parser, "the file header"))
        for position, declaration in enumerate(content.declarations, start=1):
            where = f"declaration {position} ({declaration.declaration_ref!r})"
            xf.write("\n  ")
            xf.write(_element(_declaration_text(declaration), parser, where))
        xf.write("\n")
    out.write(b"\n")


def _element(markup: str, parser: Any, where: str) -> Any:
    try:
        return etree.fromstring(markup, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{where} cannot be written as XML: {exc.msg}") from None
