"""JSON input format (built-in plugin).

Two shapes are accepted (see ``docs/input-formats.md``):

* a list of row objects with the columns of the CSV layout (one object per training);
* a nested document ``{"file_reference": ..., "declarations": [{..., "workers": [{"inss": ...,
  "trainings": [{...}]}]}]}``.

Problems are located by JSON path (``$.declarations[3].workers[0].inss``): the public ``json``
API gives no line numbers, and a path names the value whatever the layout of the file. The
whole document is parsed in memory: use CSV for very large exports.

It writes (``fla_write_export``) the nested document, one declaration per line, streamed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from fla_core.formats import InputError, InputFormat, ReadContext
from fla_core.formats.layout import (
    DECLARATION_FIELDS,
    FIELDS,
    WORKER_FIELDS,
    Place,
    Row,
    group_all,
    json_child,
    make_header,
    parsed_rows,
)
from fla_core.hookspecs import hookimpl
from fla_core.model import Declaration, FileContent

NAME = "json"
TRAINING_KEYS = tuple(f for f in WORKER_FIELDS if f != "inss")
DOCUMENT_KEYS = ("file_reference", "declarations")
DECLARATION_KEYS = (*DECLARATION_FIELDS, "workers")
WORKER_KEYS = ("inss", "trainings")
# Identifiers as JSON numbers lose their leading zeros: refuse them.
_TEXT_ONLY = {"inss", "employer_company_id", "provider_company_id", "employer_noss_nbr",
              "declaration_ref", "replaced_declaration_ref", "training_ref"}


@hookimpl
def fla_input_formats() -> list[InputFormat]:
    """The JSON format."""
    return [InputFormat(NAME, (".json",), "JSON: list of rows, or nested declarations",
                        writes=True)]


@hookimpl
def fla_write_export(content: FileContent, format: str, path: Path) -> bool | None:
    """Write the nested JSON document, one declaration per line; None for other formats."""
    if format != NAME:
        return None
    with Path(path).open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(f'{{"file_reference": {json.dumps(content.header.file_reference)},\n'
                 ' "declarations": [')
        separator = "\n  "
        for declaration in content:
            fh.write(separator)
            fh.write(json.dumps(_declaration_object(declaration), ensure_ascii=False))
            separator = ",\n  "
        fh.write("\n]}\n")
    return True


def _declaration_object(declaration: Declaration) -> dict[str, Any]:
    """A declaration as the nested document holds it (absent optional values left out)."""
    employer = declaration.employer
    head: dict[str, Any] = {
        "declaration_ref": declaration.declaration_ref, "action": declaration.action,
        "replaced_declaration_ref": declaration.replaced_declaration_ref,
        "reporting_year": declaration.reporting_year,
        "employer_company_id": employer.company_id if employer else None,
        "employer_noss_nbr": employer.noss_registration_nbr if employer else None}
    workers = [{"inss": w.inss, "trainings": [
        {key: value for key, value in (
            ("training_ref", t.training_ref), ("provider_company_id", t.provider_company_id),
            ("title", t.title), ("training_type", t.training_type),
            ("start_date", t.start_date), ("end_date", t.end_date), ("hours", t.hours),
            ("during_working_time", t.during_working_time)) if value is not None}
        for t in w.trainings]} for w in declaration.workers]
    return {**{k: v for k, v in head.items() if v is not None}, "workers": workers}


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
        _check_keys(doc, "$", DOCUMENT_KEYS, path, context, "document")
        ref = doc.get("file_reference")
        reference = ref if isinstance(ref, str) else None
        if ref is not None and reference is None:
            context.problem(path, None, "$.file_reference", "file_reference must be text")
        decls = doc.get("declarations")
        if not isinstance(decls, list):
            context.problem(path, None, "$.declarations",
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
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} "
                         f"(column {exc.colno})") from exc


def _check_keys(obj: dict[str, Any], at: str, known: tuple[str, ...], path: Path,
                context: ReadContext, what: str) -> None:
    for key in obj:
        if key not in known:
            context.problem(path, None, json_child(at, key), f"unknown key {key!r} in {what}; "
                            f"known keys: {', '.join(known)}")


def _text(obj: dict[str, Any], at: str, keys: tuple[str, ...], path: Path,
          context: ReadContext) -> dict[str, str]:
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
            context.problem(path, None, json_child(at, key), f"{key} must be text, not {kind} "
                            "(identifiers keep their leading zeros only as text)")
    return out


def _flat_rows(doc: list[Any], path: Path, context: ReadContext) -> Iterator[Row]:
    unknown: set[str] = set()
    for i, obj in enumerate(doc):
        at = json_child("$", i)
        if not isinstance(obj, dict):
            context.problem(path, None, at, "a row is not an object")
            continue
        for key in obj:
            if key not in FIELDS and key not in unknown:  # each unknown key reported once
                unknown.add(key)
                context.problem(path, None, json_child(at, key), f"unknown key {key!r} in a "
                                f"row; known keys: {', '.join(FIELDS)}")
        before = len(context.problems)
        values = _text(obj, at, FIELDS, path, context)
        if len(context.problems) == before:  # a row with a non-text identifier is left out
            yield Row(None, values, at=Place(at))


def _nested_rows(decls: list[Any], path: Path, context: ReadContext) -> Iterator[Row]:
    for d, decl in enumerate(decls):
        at = json_child("$.declarations", d)
        if not isinstance(decl, dict):
            context.problem(path, None, at, "a declaration is not an object")
            continue
        _check_keys(decl, at, DECLARATION_KEYS, path, context, "a declaration")
        head = _text(decl, at, DECLARATION_FIELDS, path, context)
        workers = decl.get("workers") or []
        if not workers:
            yield Row(None, head, at=Place(at, at))
        for w, worker in enumerate(workers):
            yield from _worker_rows(worker, json_child(json_child(at, "workers"), w), at, head,
                                    path, context)


def _worker_rows(worker: Any, at: str, declaration: str, head: dict[str, str], path: Path,
                 context: ReadContext) -> Iterator[Row]:
    if not isinstance(worker, dict):
        context.problem(path, None, at, "a worker is not an object")
        return
    _check_keys(worker, at, WORKER_KEYS, path, context, "a worker")
    inss = _text(worker, at, ("inss",), path, context)
    trainings = worker.get("trainings") or []
    if not trainings:
        context.problem(path, None, json_child(at, "trainings"),
                        "a worker needs at least one training")
    for t, training in enumerate(trainings):
        here = json_child(json_child(at, "trainings"), t)
        if not isinstance(training, dict):
            context.problem(path, None, here, "a training is not an object")
            continue
        _check_keys(training, here, TRAINING_KEYS, path, context, "a training")
        before = len(context.problems)
        values = {**head, **inss, **_text(training, here, TRAINING_KEYS, path, context)}
        if len(context.problems) == before:
            yield Row(None, values, at=Place(here, declaration, at))
