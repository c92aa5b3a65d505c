"""CSV input format (built-in plugin): one row per training, layout of ``formats.layout``.

The file is UTF-8 (a BOM, as Excel writes it, is accepted), with a header row; the delimiter is
``,`` or ``;`` (guessed from the header line). Declarations are yielded lazily: when the rows of
each declaration are adjacent (the usual export order) the reader holds one declaration in
memory at a time; otherwise it groups the whole file in memory (a cheap first pass over the
``declaration_ref`` column decides which).

It also writes (``fla_write_export``): UTF-8 without BOM, ``,``, ``\n`` line ends, one row per
training in declaration order, so the reader streams it back.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from fla_core.formats import InputError, InputFormat, ReadContext
from fla_core.formats.layout import (
    FIELDS,
    Row,
    check_columns,
    declaration_rows,
    group_all,
    group_consecutive,
    make_header,
    parsed_rows,
    refs_adjacent,
)
from fla_core.hookspecs import hookimpl
from fla_core.model import Declaration, FileContent

NAME = "csv"


@hookimpl
def fla_input_formats() -> list[InputFormat]:
    """The CSV format."""
    return [InputFormat(NAME, (".csv",), "CSV export, one row per training (UTF-8, , or ;)",
                        writes=True)]


@hookimpl
def fla_read_declarations(path: Path, format: str, context: ReadContext) -> FileContent | None:
    """Read a CSV export; None for other formats."""
    if format != NAME:
        return None
    path = Path(path)
    header, delimiter = _header(path)
    ok = check_columns(header, path, context)
    declarations = _declarations(path, header, delimiter, context) if ok else iter(())
    return FileContent(make_header(context), declarations)


@hookimpl
def fla_write_export(content: FileContent, format: str, path: Path) -> bool | None:
    """Write a CSV export row by row; None for other formats."""
    if format != NAME:
        return None
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FIELDS)
        for declaration in content:
            writer.writerows(declaration_rows(declaration))
    return True


def _open(path: Path) -> TextIO:
    # newline="" as the csv module requires; utf-8-sig drops an Excel BOM.
    return path.open("r", encoding="utf-8-sig", newline="")


def _header(path: Path) -> tuple[list[str], str]:
    try:
        with _open(path) as fh:
            first = fh.readline()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save the export as CSV UTF-8") from exc
    if not first.strip():
        raise InputError(f"{path}: empty file or empty header line; the first line must name "
                         "the columns")
    delimiter = ";" if first.count(";") > first.count(",") else ","
    columns = next(csv.reader([first], delimiter=delimiter))
    return [c.strip().lower() for c in columns], delimiter


def _rows(path: Path, header: list[str], delimiter: str,
          context: ReadContext) -> Iterator[Row]:
    with _open(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader, None)
        try:
            for record in reader:
                # The first cell decides for almost every row without a generator.
                if not record or (not record[0].strip()
                                  and all(not cell.strip() for cell in record)):
                    continue  # blank line
                line = reader.line_num
                if len(record) != len(header):
                    context.problem(path, line, None,
                                    f"{len(record)} fields, the header has {len(header)}")
                    continue
                yield Row(line, dict(zip(header, record, strict=True)))
        except csv.Error as exc:
            context.problem(path, reader.line_num, None, f"CSV syntax error: {exc}")
        except UnicodeDecodeError as exc:
            context.problem(path, reader.line_num + 1, None,
                            f"not UTF-8 text ({exc.reason}); save the export as CSV UTF-8")


def _adjacent(path: Path, header: list[str], delimiter: str) -> bool:
    """True when the rows of every declaration are adjacent (streaming possible)."""
    if "declaration_ref" not in header:
        return True
    index = header.index("declaration_ref")
    with _open(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader, None)
        refs = (record[index].strip() if len(record) > index else "" for record in reader)
        try:
            return refs_adjacent(refs)
        except (csv.Error, UnicodeDecodeError):
            return True  # the reading pass reports it


def _declarations(path: Path, header: list[str], delimiter: str,
                  context: ReadContext) -> Iterator[Declaration]:
    group = group_consecutive if _adjacent(path, header, delimiter) else group_all
    rows = parsed_rows(_rows(path, header, delimiter, context), path, context)
    yield from group(rows, path, context)
