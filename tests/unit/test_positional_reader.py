"""Differential test of the positional XML reader against the plain lxml way.

``fla.valid_declaration_of`` (run by ``fla.scan`` on every declaration) reads the leaf values of
a schema-valid declaration by their position in one XPath call: a shortcut taken for speed. The
plain way parses the document whole with lxml and reads each leaf by its name. Both must give
the same model objects, lines included, on the example FI and on generated documents, however
their text is laid out (indentation, comments, CDATA sections, character references).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from fla_core import fi
from fla_core.applications import fla
from fla_core.model import Declaration, Employer, FileContent, FileHeader, Training, Worker

VALID = (Path(__file__).resolve().parents[2] / "fixtures" / "fla" / "valid-minimal.xml"
         ).read_bytes()
HEADER = FileHeader(sender_nbr="123456", quality="SOCIAL_SECRETARIAT", company_id="0123456749",
                    environment="T", creation="2026-03-16T09:30:00", file_reference="REF-1")
_Q = f"{{{fla.NAMESPACE}}}"


def scanned(data: bytes) -> list[Declaration]:
    """The declarations ``fla.scan`` builds, by position (it raises if the FI is not clean)."""
    found: list[Declaration] = []
    fla.scan(io.BytesIO(data), expect=None, max_declarations=10_000,
             on_declaration=lambda declaration, _position: found.append(declaration))
    return found


def plain(data: bytes) -> list[Declaration]:
    """The declarations read the plain way: the whole tree, each leaf by its name."""
    root = etree.fromstring(data, etree.XMLParser(**fi.SAFE_OPTIONS))

    def text(el: Any, name: str) -> Any:
        leaf = el.find(_Q + name)
        # the XPath string-value: every text node of the leaf, comments and PIs left out
        return None if leaf is None else leaf.xpath("string()")

    out = []
    for d in root.iterfind(_Q + "Declaration"):
        employer = d.find(_Q + "Employer")
        workers = [Worker(text(w, "INSS"), [
            Training(text(t, "TrainingRef"), text(t, "Title"), text(t, "TrainingType"),
                     text(t, "StartDate"), text(t, "EndDate"), text(t, "Hours"),
                     text(t, "DuringWorkingTime") == "true", text(t, "ProviderCompanyID"),
                     t.sourceline)
            for t in w.iterfind(_Q + "Training")], w.sourceline)
            for w in d.iterfind(_Q + "Worker")]
        out.append(Declaration(
            text(d, "DeclarationRef"), text(d, "Action"), text(d, "ReportingYear"),
            None if employer is None else Employer(text(employer, "CompanyID"),
                                                   text(employer, "NOSSRegistrationNbr")),
            text(d, "ReplacedDeclarationRef"), workers, d.sourceline))
    return out


# --- generated documents ------------------------------------------------------------------

def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


_REF = st.from_regex(r"[A-Za-z0-9._/\-]{1,35}", fullmatch=True)
# Any XML character but carriage returns, which XML reads as line feeds (the same for both).
_TITLE = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                blacklist_characters="\ufffe\uffff")
                 | st.sampled_from(" \t\n&<>\"'"), min_size=1, max_size=200)
_TRAINING = st.builds(
    Training, training_ref=_REF, title=_TITLE,
    training_type=st.sampled_from(["FORMAL", "INFORMAL"]),
    start_date=st.dates().map(lambda d: d.isoformat()),
    end_date=st.dates().map(lambda d: d.isoformat()),
    hours=st.integers(0, 999_999).map(lambda n: f"{n // 100}.{n % 100:02d}"),
    during_working_time=st.booleans(), provider_company_id=st.none() | _digits(10))
_WORKER = st.builds(Worker, inss=_digits(11), trainings=st.lists(_TRAINING, min_size=1, max_size=3))
_DECLARATION = st.builds(
    Declaration, declaration_ref=_REF, action=st.sampled_from(["NEW", "REPLACE", "CANCEL"]),
    reporting_year=_digits(4),
    employer=st.none() | st.builds(Employer, company_id=_digits(10),
                                   noss_registration_nbr=st.none() | _digits(9)),
    replaced_declaration_ref=st.none() | _REF, workers=st.lists(_WORKER, max_size=3))

_LEAF = re.compile(rb"(<(Title|TrainingRef|INSS|Hours)>)([^<]+)(</)")


def _layouts(data: bytes, layout: str) -> bytes:
    """The same document with its text laid out another way (the values are unchanged)."""
    if layout == "indented":
        return etree.tostring(etree.fromstring(data, etree.XMLParser(remove_blank_text=True)),
                              xml_declaration=True, encoding="UTF-8", pretty_print=True)
    if layout == "flat":  # no white space before a start tag (a leaf's own text is kept)
        return re.sub(rb">\s+<(?!/)", b"><", data)
    if layout == "comments":  # a comment and a PI before and inside every leaf
        return _LEAF.sub(rb"<!--c-->\1<?pi x?>\3<!--d-->\4", data)
    if layout == "cdata":  # a value split into a text node and a CDATA section
        return _LEAF.sub(lambda m: m[1] + _cdata(m[3]) + m[4], data)
    if layout == "references":  # the first character of a value as a character reference
        return _LEAF.sub(lambda m: m[1] + b"&#%d;" % m[3][0] + m[3][1:] + m[4]
                         if m[3][0] < 128 and m[3][:1] != b"&" else m[0], data)
    return data


def _cdata(value: bytes) -> bytes:
    """``value`` (escaped text) as its first character, then the rest in a CDATA section."""
    text = etree.fromstring(b"<v>" + value + b"</v>").text or ""
    rest = text[1:].replace("]]>", "]]]]><![CDATA[>")
    return (value[:1] if text[:1].isascii() and value[:1] != b"&" else b"&#%d;" % ord(text[0])) \
        + b"<![CDATA[" + rest.encode() + b"]]>"


LAYOUTS = ["as rendered", "indented", "flat", "comments", "cdata", "references"]


def test_the_example_fi_reads_the_same_both_ways():
    for layout in LAYOUTS:
        data = _layouts(VALID, layout)
        assert scanned(data) == plain(data), layout
    assert len(plain(VALID)) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(declarations=st.lists(_DECLARATION, min_size=1, max_size=4),
       layout=st.sampled_from(LAYOUTS))
def test_generated_documents_read_the_same_both_ways(declarations, layout):
    out = io.BytesIO()
    fla.render(FileContent(HEADER, declarations), out)
    data = _layouts(out.getvalue(), layout)
    got = scanned(data)
    assert got == plain(data)
    # and the values are those written (lines aside: the model given to render has none)
    assert [(d.declaration_ref, [(w.inss, [t.title for t in w.trainings]) for w in d.workers])
            for d in got] == [
        (d.declaration_ref, [(w.inss, [t.title for t in w.trainings]) for w in d.workers])
        for d in declarations]


# Blanks alone next to a comment, PI or CDATA section inside a value were once dropped by the
# streaming reader (its pull parser removed "blank text"): a changed value, or a valid FI
# refused with 312.
@pytest.mark.parametrize("title, layout", [(" x", "cdata"), ("  ", "cdata"), (" ", "comments")])
def test_blanks_next_to_markup_inside_a_value_are_kept(title, layout):
    training = Training("T", title, "FORMAL", "2025-01-01", "2025-01-01", "1.00", True)
    out = io.BytesIO()
    fla.render(FileContent(HEADER, [Declaration("D", "NEW", "2025", workers=[
        Worker("93051822361", [training])])]), out)
    data = _layouts(out.getvalue(), layout)
    assert plain(data)[0].workers[0].trainings[0].title == title
    assert scanned(data) == plain(data)
