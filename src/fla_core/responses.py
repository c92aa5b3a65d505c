"""Answer files (spec 9): render ACRF / NOTI (simulator side) and parse them (client side).

The FO bytes are UTF-8 with the exact declaration ``<?xml version="1.0" encoding="UTF-8"?>``,
LF line ends and no namespace. The NOTI is written incrementally (``lxml.etree.xmlfile``)
because one file may carry 10 000 declarations. Consumers compare parsed values, never bytes
(spec 9.1), so :func:`parse_answer` is the client's entry point.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import BinaryIO, Protocol

from lxml import etree

from fla_core.anomalies import Anomaly, Catalogue, default_catalogue

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
TICKET_RE = re.compile(r"[0-9A-Z]{13}")
MAX_ANSWER_BYTES = 512 * 1024 * 1024  # refuse absurd inputs before parsing


class AnswerError(ValueError):
    """An answer file that is not a well-formed ACRF or NOTI of spec 9."""


class VerdictLike(Protocol):
    """What :func:`render_noti` reads of a declaration verdict (``checks.engine``)."""

    declaration_ref: str
    company_id: str | None
    status: str
    anomalies: list[Anomaly]


@dataclass(frozen=True)
class NotiAnomaly:
    """``AnomalyReport`` of a NOTI (spec 9.3)."""

    error_id: str
    anomaly_class: str
    path: str
    value: str | None
    diagnosis: str


@dataclass(frozen=True)
class NotiDeclaration:
    """``DeclarationResult`` of a NOTI (spec 9.3)."""

    declaration_ref: str
    company_id: str | None
    status: str
    anomalies: list[NotiAnomaly] = field(default_factory=list)


@dataclass(frozen=True)
class Acrf:
    """A parsed acknowledgement of receipt (spec 9.2); ``created`` is naive local time."""

    file_name: str
    ticket: str
    result_code: int
    error_id: str | None
    description: str | None
    created: datetime

    @property
    def accepted(self) -> bool:
        return self.result_code == 1

    @property
    def error_code(self) -> str | None:
        """The 3-digit code of ``ErrorID`` (``"118"`` for ``ACRF-118``)."""
        return self.error_id.split("-", 1)[1] if self.error_id else None


@dataclass(frozen=True)
class Noti:
    """A parsed notification (spec 9.3); ``created`` is naive local time."""

    application: str
    file_name: str
    file_reference: str
    ticket: str
    result_code: int
    file_warnings: list[NotiAnomaly]
    declarations: list[NotiDeclaration]
    created: datetime


# --- tickets -----------------------------------------------------------------------------------

def make_ticket(when: date, counter: int) -> str:
    """Ticket of spec 9.4: ``YY`` + day of year + ``A`` + 7-digit counter (``26075A0000001``)."""
    if not 1 <= counter <= 9_999_999:
        raise ValueError(f"ticket counter {counter} outside 1..9999999")
    return f"{when:%y}{when.timetuple().tm_yday:03d}A{counter:07d}"


# --- rendering ---------------------------------------------------------------------------------

def _hour(at: datetime) -> str:
    return f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"


def _leaf(parent: etree._Element, tag: str, text: str) -> None:
    etree.SubElement(parent, tag).text = text


def _check_ticket(ticket: str) -> None:
    if not TICKET_RE.fullmatch(ticket):
        raise ValueError(f"ticket {ticket!r} is not 13 characters [0-9A-Z] (spec 9.4)")


def _write_block(xf: etree.xmlfile, elem: etree._Element, level: int) -> None:
    """Write a finished subtree on its own line, indented at ``level`` (two spaces a level)."""
    etree.indent(elem, space="  ", level=level)
    elem.tail = None
    xf.write("\n" + "  " * level)
    xf.write(elem)


def render_acrf(*, file_name: str, ticket: str, accepted: bool, error_code: str | None,
                description: str | None, at: datetime,
                catalogue: Catalogue | None = None) -> bytes:
    """The FO bytes of an ACRF (spec 9.2); ``description`` defaults to the catalogue text."""
    _check_ticket(ticket)
    code = error_code[5:] if error_code and error_code.startswith("ACRF-") else error_code
    if accepted and code:
        raise ValueError("a positive ACRF carries no error code")
    if not accepted and not code:
        raise ValueError("a negative ACRF needs exactly one error code")
    form = etree.Element("Form")
    _leaf(form, "Identification", "ACRF001")
    _leaf(form, "FormCreationDate", f"{at:%Y-%m-%d}")
    _leaf(form, "FormCreationHour", _hour(at))
    _leaf(form, "AttestationStatus", "0")
    _leaf(form, "TypeForm", "FA")
    ref = etree.SubElement(form, "FileReference")
    _leaf(ref, "FileName", file_name)
    _leaf(ref, "ReferenceOrigin", "2")
    _leaf(ref, "ReferenceNbr", ticket)
    result = etree.SubElement(form, "ReceptionResult")
    _leaf(result, "ResultCode", "1" if accepted else "0")
    if code:
        if description is None:
            try:
                description = (catalogue or default_catalogue()).message(code)
            except KeyError:
                description = None
        _leaf(result, "ErrorID", f"ACRF-{code}")
        if description:
            _leaf(result, "ErrorDescription", description)
    root = etree.Element("ACRF")
    root.append(form)
    etree.indent(root, space="  ")
    body: bytes = etree.tostring(root, encoding="UTF-8")
    return XML_DECLARATION + body + b"\n"


def _anomaly_element(a: Anomaly) -> etree._Element:
    rep = etree.Element("AnomalyReport")
    _leaf(rep, "ErrorID", a.error_id)
    _leaf(rep, "AnomalyClass", a.severity)
    _leaf(rep, "Path", a.path or "/")
    if a.value is not None:
        _leaf(rep, "Value", a.value)
    _leaf(rep, "Diagnosis", a.message)
    return rep


def render_noti_to(out: BinaryIO, *, application: str, file_name: str, file_reference: str,
                   ticket: str, result_code: int, declarations: Iterable[VerdictLike],
                   file_warnings: Iterable[Anomaly], at: datetime) -> None:
    """Stream a NOTI (spec 9.3) into ``out``; ``declarations`` may be a one-shot iterator."""
    _check_ticket(ticket)
    if result_code not in (0, 1, 2):
        raise ValueError(f"NOTI ResultCode {result_code} is not 0, 1 or 2")
    out.write(XML_DECLARATION)
    with etree.xmlfile(out, encoding="UTF-8") as xf, xf.element("NOTIFICATION"):
        xf.write("\n  ")
        with xf.element("Form"):
            head = etree.Element("Head")  # throw-away wrapper: its children are written
            _leaf(head, "Identification", "NOTI001")
            _leaf(head, "FormCreationDate", f"{at:%Y-%m-%d}")
            _leaf(head, "FormCreationHour", _hour(at))
            handled = etree.SubElement(head, "HandledOriginalForm")
            _leaf(handled, "Identification", application)
            _leaf(handled, "FileName", file_name)
            _leaf(handled, "FileReference", file_reference)
            ref = etree.SubElement(head, "Reference")
            _leaf(ref, "ReferenceOrigin", "2")
            _leaf(ref, "ReferenceNbr", ticket)
            handling = etree.SubElement(head, "HandlingResult")
            _leaf(handling, "ResultCode", str(result_code))
            for warning in file_warnings:
                handling.append(_anomaly_element(warning))
            for child in list(head):
                _write_block(xf, child, 2)
            count = 0
            for verdict in declarations:
                count += 1
                res = etree.Element("DeclarationResult")
                _leaf(res, "DeclarationRef", verdict.declaration_ref)
                if verdict.company_id is not None:
                    _leaf(res, "CompanyID", verdict.company_id)
                _leaf(res, "Status", verdict.status)
                for a in verdict.anomalies:
                    res.append(_anomaly_element(a))
                _write_block(xf, res, 2)
            if count == 0:
                raise ValueError("a NOTI carries at least one DeclarationResult (spec 9.3)")
            xf.write("\n  ")
        xf.write("\n")
    out.write(b"\n")


def render_noti(*, application: str, file_name: str, file_reference: str, ticket: str,
                result_code: int, declarations: Iterable[VerdictLike],
                file_warnings: Iterable[Anomaly], at: datetime) -> bytes:
    """The FO bytes of a NOTI (spec 9.3); see :func:`render_noti_to` to stream to a file."""
    buf = io.BytesIO()
    render_noti_to(buf, application=application, file_name=file_name,
                   file_reference=file_reference, ticket=ticket, result_code=result_code,
                   declarations=declarations, file_warnings=file_warnings, at=at)
    return buf.getvalue()


# --- parsing -----------------------------------------------------------------------------------

def _parser() -> etree.XMLParser:
    # No entities, no DTD, no network: an answer comes over the wire and is untrusted input.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False)


def _text(parent: etree._Element, path: str, *, required: bool = True) -> str | None:
    node = parent.find(path)
    if node is None:
        if required:
            raise AnswerError(f"missing element {path}")
        return None
    return node.text or ""


def _req(parent: etree._Element, path: str) -> str:
    value = _text(parent, path)
    assert value is not None  # required=True never returns None
    return value


def _created(form: etree._Element) -> datetime:
    day, hour = _req(form, "FormCreationDate"), _req(form, "FormCreationHour")
    try:
        return datetime.strptime(f"{day} {hour}", "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        raise AnswerError(f"bad FormCreationDate/Hour {day!r} {hour!r}") from None


def _result_code(text: str, allowed: tuple[int, ...]) -> int:
    # compared as text: isdigit() also accepts "²", which int() refuses
    for code in allowed:
        if text == str(code):
            return code
    raise AnswerError(f"ResultCode {text!r} is not one of {allowed}")


def _anomaly(rep: etree._Element) -> NotiAnomaly:
    return NotiAnomaly(error_id=_req(rep, "ErrorID"), anomaly_class=_req(rep, "AnomalyClass"),
                       path=_req(rep, "Path"), value=_text(rep, "Value", required=False),
                       diagnosis=_req(rep, "Diagnosis"))


def _parse_acrf(form: etree._Element) -> Acrf:
    result_code = _result_code(_req(form, "ReceptionResult/ResultCode"), (0, 1))
    error_id = _text(form, "ReceptionResult/ErrorID", required=False)
    if result_code == 0 and not error_id:
        raise AnswerError("negative ACRF without ErrorID")
    return Acrf(file_name=_req(form, "FileReference/FileName"),
                ticket=_req(form, "FileReference/ReferenceNbr"), result_code=result_code,
                error_id=error_id,
                description=_text(form, "ReceptionResult/ErrorDescription", required=False),
                created=_created(form))


def _parse_noti(form: etree._Element) -> Noti:
    declarations = [
        NotiDeclaration(declaration_ref=_req(res, "DeclarationRef"),
                        company_id=_text(res, "CompanyID", required=False),
                        status=_req(res, "Status"),
                        anomalies=[_anomaly(r) for r in res.findall("AnomalyReport")])
        for res in form.findall("DeclarationResult")
    ]
    return Noti(application=_req(form, "HandledOriginalForm/Identification"),
                file_name=_req(form, "HandledOriginalForm/FileName"),
                file_reference=_req(form, "HandledOriginalForm/FileReference"),
                ticket=_req(form, "Reference/ReferenceNbr"),
                result_code=_result_code(_req(form, "HandlingResult/ResultCode"), (0, 1, 2)),
                file_warnings=[_anomaly(r) for r in form.findall("HandlingResult/AnomalyReport")],
                declarations=declarations, created=_created(form))


def parse_answer(data: bytes) -> Acrf | Noti:
    """Parse FO bytes (or a gzip ``CO``) into :class:`Acrf` or :class:`Noti`; AnswerError if not."""
    if data[:2] == b"\x1f\x8b":  # CO answers are gzip of the FO (spec 4.8)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise AnswerError(f"corrupt gzip answer: {exc}") from None
    if len(data) > MAX_ANSWER_BYTES:
        raise AnswerError("answer file too large")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise AnswerError(f"answer is not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.doctype:
        raise AnswerError("answer carries a DOCTYPE")
    form = root.find("Form")
    if form is None:
        raise AnswerError(f"<{root.tag}> has no Form element")
    if root.tag == "ACRF":
        return _parse_acrf(form)
    if root.tag == "NOTIFICATION":
        return _parse_noti(form)
    raise AnswerError(f"root element <{root.tag}> is neither ACRF nor NOTIFICATION")


parse_answer_file = parse_answer  # name used in docs/internals.md
