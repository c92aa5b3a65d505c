"""JSON input format (built-in plugin).

Two shapes are accepted (see ``docs/input-formats.md``):

* a list of row objects with the columns of the CSV layout (one object per training);
* a nested document ``{"file_reference": ..., "declarations": [{..., "workers": [{"inss": ...,
  "trainings": [{...}]}]}]}``.

Line numbers are those of the object's opening brace, so problems and business anomalies point
into the file. The whole document is parsed in memory: use CSV for very large exports.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from fla_core.formats import InputError, InputFormat, ReadContext
from fla_core.formats.layout import (
    DECLARATION_FIELDS,
    FIELDS,
    WORKER_FIELDS,
    Row,
    check_columns,
    group_all,
    make_header,
    parsed_rows,
)
from fla_core.hookspecs import hookimpl
from fla_core.model import FileContent

NAME = "json"
TRAINING_KEYS = tuple(f for f in WORKER_FIELDS if f != "inss")
DOCUMENT_KEYS = ("file_reference", "declarations")
DECLARATION_KEYS = (*DECLARATION_FIELDS, "workers")
WORKER_KEYS = ("inss", "trainings")
# Identifiers as JSON numbers lose their leading zeros: refuse them.
_TEXT_ONLY = {"inss", "employer_company_id", "provider_company_id", "employer_noss_nbr",
              "declaration_ref", "replaced_declaration_ref", "training_ref"}


class _Obj(dict):
    """A JSON object that remembers the line of its opening brace."""

    line: int = 0


@hookimpl
def fla_input_formats() -> list[InputFormat]:
    """The JSON format."""
    return [InputFormat(NAME, (".json",), "JSON: list of rows, or nested declarations")]


@hookimpl
def fla_read_declarations(path: Path, format: str, context: ReadContext) -> FileContent | None:
    """Read a JSON export; None for other formats."""
    if format != NAME:
        return None
    path = Path(path)
    doc = _load(path)
    reference = None
    rows: Iterable[Row]
    if isinstance(doc, list):
        rows = _flat_rows(doc, path, context)
    elif isinstance(doc, dict):
        _check_keys(doc, DOCUMENT_KEYS, path, context, "document")
        ref = doc.get("file_reference")
        reference = ref if isinstance(ref, str) else None
        if ref is not None and reference is None:
            context.problem(path, _line(doc), "file_reference", "file_reference must be text")
        decls = doc.get("declarations")
        if not isinstance(decls, list):
            context.problem(path, _line(doc), "declarations",
                            "the document needs a list \"declarations\"")
            decls = []
        rows = list(_nested_rows(decls, path, context))
    else:
        raise InputError(f"{path}: a JSON export is a list of rows or an object with "
                         "\"declarations\"")
    declarations = group_all(parsed_rows(rows, path, context), path, context)
    return FileContent(make_header(context, reference), declarations)


def _load(path: Path) -> Any:
    try:
        text = path.read_text("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    # parse_object, scan_once and py_make_scanner are the json module's undeclared internals.
    decoder: Any = json.JSONDecoder(parse_float=Decimal)
    scanner: Any = json.scanner
    base_parse_object = decoder.parse_object
    # Objects are entered in document order, so lines are counted incrementally (linear time).
    cursor = [0, 1]  # position, line at that position

    def parse_object(s_and_end, *args):
        s, end = s_and_end
        if end >= cursor[0]:
            cursor[1] += s.count("\n", cursor[0], end)
            cursor[0] = end
        line = cursor[1]
        obj, new_end = base_parse_object(s_and_end, *args)
        mine = _Obj(obj)
        mine.line = line
        return mine, new_end

    decoder.parse_object = parse_object
    # The pure-Python scanner calls decoder.parse_object, so every object gets its line.
    decoder.scan_once = scanner.py_make_scanner(decoder)
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} "
                         f"(column {exc.colno})") from exc


def _line(obj: Any) -> int | None:
    return getattr(obj, "line", None)


def _check_keys(obj: dict, known: tuple[str, ...], path: Path, context: ReadContext,
                what: str) -> None:
    for key in obj:
        if key not in known:
            context.problem(path, _line(obj), key, f"unknown key {key!r} in {what}; known keys: "
                            f"{', '.join(known)}")


def _text(obj: dict, keys: tuple[str, ...], path: Path, context: ReadContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | Decimal) and key not in _TEXT_ONLY:
            out[key] = str(value)
        elif isinstance(value, str):
            out[key] = value
        else:
            kind = "a number" if isinstance(value, int | Decimal) else type(value).__name__
            context.problem(path, _line(obj), key, f"{key} must be text, not {kind} "
                            "(identifiers keep their leading zeros only as text)")
    return out


def _flat_rows(doc: list, path: Path, context: ReadContext) -> Iterator[Row]:
    unknown: set[str] = set()
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict):
            context.problem(path, None, None, f"row {i + 1} is not an object")
            continue
        fresh = [k for k in obj if k not in FIELDS and k not in unknown]
        if fresh:
            unknown.update(fresh)
            check_columns([*fresh, *FIELDS], path, context, _line(obj))
        before = len(context.problems)
        values = _text(obj, FIELDS, path, context)
        if len(context.problems) == before:  # a row with a non-text identifier is left out
            yield Row(_line(obj), values)


def _nested_rows(decls: list, path: Path, context: ReadContext) -> Iterator[Row]:
    for decl in decls:
        if not isinstance(decl, dict):
            context.problem(path, None, "declarations", "a declaration is not an object")
            continue
        _check_keys(decl, DECLARATION_KEYS, path, context, "a declaration")
        head = _text(decl, DECLARATION_FIELDS, path, context)
        workers = decl.get("workers") or []
        if not workers:
            yield Row(_line(decl), head, _line(decl))
        for worker in workers:
            if not isinstance(worker, dict):
                context.problem(path, _line(decl), "workers", "a worker is not an object")
                continue
            _check_keys(worker, WORKER_KEYS, path, context, "a worker")
            inss = _text(worker, ("inss",), path, context)
            trainings = worker.get("trainings") or []
            if not trainings:
                context.problem(path, _line(worker), "trainings",
                                "a worker needs at least one training")
            for training in trainings:
                if not isinstance(training, dict):
                    context.problem(path, _line(worker), "trainings",
                                    "a training is not an object")
                    continue
                _check_keys(training, TRAINING_KEYS, path, context, "a training")
                before = len(context.problems)
                values = {**head, **inss, **_text(training, TRAINING_KEYS, path, context)}
                if len(context.problems) == before:
                    yield Row(_line(training), values, _line(decl))
