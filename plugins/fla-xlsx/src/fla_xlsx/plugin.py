"""The ``xlsx`` input format: the layout of ``fla_core.formats.layout`` on the first sheet.

Rows are streamed with openpyxl's read-only mode. As in the CSV reader, declarations are
yielded one at a time when the rows of each declaration are adjacent; otherwise the sheet is
grouped in memory.

It also writes (``fla_write_export``): openpyxl's write-only mode streams the rows to a
temporary sheet file; identifiers stay text cells (a number would lose their leading zeros),
the year, dates, hours and the yes/no column are typed cells, as a spreadsheet holds them. The
same content gives the same bytes: every ZIP member and the document properties carry the
content's creation time, never the clock.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zipfile import ZIP_DEFLATED, BadZipFile, ZipFile, ZipInfo

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

NAME = "xlsx"


@hookimpl
def fla_input_formats() -> list[InputFormat]:
    """The Excel format."""
    return [InputFormat(NAME, (".xlsx",), "Excel workbook, first sheet, one row per training",
                        writes=True)]


@hookimpl
def fla_read_declarations(path: Path, format: str, context: ReadContext) -> FileContent | None:
    """Read the first sheet of a workbook; None for other formats."""
    if format != NAME:
        return None
    path = Path(path)
    with _SheetRows(path) as rows:
        first = next(rows, None)
    if first is None or not any(cell is not None for cell in first):
        raise InputError(f"{path}: the first sheet is empty; its first row must name the "
                         "columns")
    header = [str(c).strip().lower() if c is not None else "" for c in first]
    while header and header[-1] == "":
        header.pop()  # trailing empty header cells are formatting, not columns
    ok = check_columns(header, path, context)
    declarations = _declarations(path, header, context) if ok else iter(())
    return FileContent(make_header(context), declarations)


@hookimpl
def fla_write_export(content: FileContent, format: str, path: Path) -> bool | None:
    """Write a one-sheet workbook row by row; None for other formats."""
    if format != NAME:
        return None
    from openpyxl import Workbook
    from openpyxl.writer.excel import ExcelWriter

    created = datetime.fromisoformat(content.header.creation)
    book = Workbook(write_only=True)
    book.properties.created = book.properties.modified = created
    sheet = book.create_sheet("export")
    sheet.append(list(FIELDS))
    for declaration in content:
        for row in declaration_rows(declaration):
            sheet.append(_cells(row))
    # ExcelWriter, not Workbook.save: save() stamps the clock into the document properties.
    with _StampedZip(path, created) as archive:
        ExcelWriter(book, archive).save()
    return True


_TYPED = {name: FIELDS.index(name) for name in (
    "reporting_year", "start_date", "end_date", "hours", "during_working_time")}


def _cells(row: tuple[str, ...]) -> list[Any]:
    """A layout row as cells: identifiers and references text, the rest typed when it parses."""
    cells: list[Any] = [value or None for value in row]
    year, start, end, hours, during = (row[i] for i in _TYPED.values())
    if year.isdigit():
        cells[_TYPED["reporting_year"]] = int(year)
    for name, text in (("start_date", start), ("end_date", end)):
        if text:
            cells[_TYPED[name]] = date.fromisoformat(text)
    if hours:
        cells[_TYPED["hours"]] = Decimal(hours)
    if during:
        cells[_TYPED["during_working_time"]] = during == "true"
    return cells


class _StampedZip(ZipFile):
    """A ZIP whose members all carry one given time and mode, whatever the clock or umask."""

    def __init__(self, path: Path, when: datetime):
        super().__init__(path, "w", ZIP_DEFLATED, allowZip64=True)
        self._when = (max(when.year, 1980), when.month, when.day, when.hour, when.minute,
                      when.second)

    def _info(self, name: str, size: int = 0) -> ZipInfo:
        info = ZipInfo(name, date_time=self._when)
        info.compress_type = ZIP_DEFLATED
        info.external_attr = 0o600 << 16  # what ZipFile.writestr gives a member it names
        info.file_size = size  # lets zipfile choose ZIP64 up front for a big sheet
        return info

    def writestr(self, zinfo_or_arcname: str | ZipInfo, data: Any,
                 compress_type: int | None = None, compresslevel: int | None = None) -> None:
        """Add ``data``; a member given by name gets the fixed time."""
        if isinstance(zinfo_or_arcname, str):
            zinfo_or_arcname = self._info(zinfo_or_arcname)
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)

    def write(self, filename: Any, arcname: Any = None, compress_type: int | None = None,
              compresslevel: int | None = None) -> None:
        """Copy a file (openpyxl's temporary sheet) in, streamed, with the fixed time."""
        source = Path(filename)
        info = self._info(str(arcname or source.name), source.stat().st_size)
        with source.open("rb") as src, self.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


class _SheetRows:
    """Value tuples of the first sheet's rows; closes the workbook on exit."""

    def __init__(self, path: Path):
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            self.book = load_workbook(path, read_only=True, data_only=True)
        except (OSError, InvalidFileException, KeyError, ValueError, BadZipFile) as exc:
            raise InputError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
        self.rows = self.book.worksheets[0].iter_rows(values_only=True)

    def __enter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __exit__(self, *exc: object) -> None:
        self.book.close()


def _text(column: str, value: Any) -> tuple[str, str | None]:
    """Cell value -> layout text, or a problem message."""
    if value is None:
        return "", None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, datetime):
        return value.date().isoformat(), None
    if isinstance(value, date):
        return value.isoformat(), None
    if isinstance(value, int | float | Decimal):
        if column == "inss":
            return "", ("the INSZ is stored as a number (leading zeros are lost); format the "
                        "inss column as text")
        number = Decimal(str(value))
        if number == number.to_integral_value():
            return str(int(number)), None
        return format(number.normalize(), "f"), None
    return str(value), None


def _rows(path: Path, header: list[str], context: ReadContext) -> Iterator[Row]:
    with _SheetRows(path) as rows:
        next(rows, None)
        for line, cells in enumerate(rows, start=2):
            if not any(c is not None and str(c).strip() for c in cells):
                continue
            extra = [c for c in cells[len(header):] if c is not None and str(c).strip()]
            if extra:
                context.problem(path, line, None, f"{len(header) + len(extra)} or more "
                                f"cells, the header has {len(header)}")
                continue
            values: dict[str, str] = {}
            bad = False
            for column, cell in zip(header, cells, strict=False):
                text, why = _text(column, cell)
                if why:
                    context.problem(path, line, column, why)
                    bad = True
                values[column] = text
            if not bad:
                yield Row(line, values)


def _adjacent(path: Path, header: list[str]) -> bool:
    if "declaration_ref" not in header:
        return True
    index = header.index("declaration_ref")
    with _SheetRows(path) as rows:
        next(rows, None)
        return refs_adjacent(
            str(cells[index]).strip() if len(cells) > index and cells[index] is not None
            else "" for cells in rows)


def _declarations(path: Path, header: list[str], context: ReadContext
                  ) -> Iterator[Declaration]:
    group = group_consecutive if _adjacent(path, header) else group_all
    yield from group(parsed_rows(_rows(path, header, context), path, context), path, context)
