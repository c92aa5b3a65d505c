"""The separately installed fla-xlsx plugin: discovery by entry point and reading a workbook."""

from __future__ import annotations

import json
from datetime import date, datetime
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.formats import InputError, ReadContext
from fla_core.formats.layout import FIELDS
from fla_core.model import (
    Declaration,
    Employer,
    FileContent,
    FileHeader,
    Quality,
    Sender,
    Training,
    Worker,
)
from fla_core.plugins import FlaPlugins, PluginError

openpyxl = pytest.importorskip("openpyxl")

SENDER = Sender("123456", Quality.EMPLOYER, "0897223670")


def _installed() -> bool:
    return any(ep.value == "fla_xlsx.plugin" for ep in metadata.entry_points(group="fla"))


pytestmark = pytest.mark.skipif(not _installed(),
                                reason="fla-xlsx is not installed: pip install -e "
                                       "plugins/fla-xlsx")


def workbook(path: Path, rows: list[list[object]], header=FIELDS) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def row(ref="D-1", inss="93051822361", tr="TR-1", start=date(2025, 3, 3), hours=21,
        during=True, kbo="0897223670"):
    return [ref, "NEW", None, 2025, kbo, "042979535", inss, tr, None, "Forklift", "formal",
            start, datetime(2025, 3, 5), hours, during]


def test_entry_point_discovery():
    plugins = FlaPlugins()
    assert "xlsx" in [f.name for f in plugins.input_formats()]
    (info,) = [p for p in plugins.plugins() if p.name == "xlsx"]
    assert info.builtin is False and info.version == "0.1.0"
    assert info.hooks == ("fla_input_formats", "fla_read_declarations", "fla_write_export")
    # without entry points the format is gone, and the error lists what is installed
    bare = FlaPlugins(entry_points=False)
    ctx = ReadContext(sender=SENDER)
    with pytest.raises(PluginError, match=r"no installed plugin reads format 'xlsx'; "
                                          r"installed formats: csv, json"):
        bare.read_declarations(Path("x.xlsx"), "xlsx", ctx)


def test_reads_typed_cells_like_the_csv_layout(tmp_path):
    path = workbook(tmp_path / "export.xlsx", [
        row(), row(tr="TR-2", hours=3.5, during=False, kbo=897223670),
        row(ref="D-2", inss="00012556777", tr="TR-3", hours="7,25", during="ja")])
    ctx = ReadContext(sender=SENDER, creation="2026-03-16T09:30:00")
    decls = list(FlaPlugins().read_declarations(path, "xlsx", ctx))
    assert ctx.problems == []  # 897223670 as a number is padded like the CSV reader does
    first, second = decls
    t1 = first.workers[0].trainings[0]
    assert (t1.start_date, t1.end_date, t1.hours, t1.during_working_time, t1.line) == (
        "2025-03-03", "2025-03-05", "21.00", True, 2)
    assert first.reporting_year == "2025"
    t3 = second.workers[0].trainings[0]
    assert (t3.hours, t3.during_working_time, t3.line) == ("7.25", True, 4)


def test_problems_carry_sheet_rows(tmp_path):
    path = workbook(tmp_path / "export.xlsx", [
        row(), row(tr="TR-2", inss=12556777), row(tr="TR-3", hours=-2)],
        header=[*FIELDS, "cost_centre"])
    ctx = ReadContext(sender=SENDER)
    list(FlaPlugins().read_declarations(path, "xlsx", ctx))
    problems = [(p.line, p.field) for p in ctx.problems]
    assert problems == [(1, "cost_centre"), (3, "inss"), (4, "hours")]
    assert "format the inss column as text" in ctx.problems[1].message


def test_not_a_workbook_is_a_clear_error(tmp_path):
    path = tmp_path / "fake.xlsx"
    path.write_text("declaration_ref\n")
    with pytest.raises(InputError, match=r"not a readable \.xlsx workbook"):
        FlaPlugins().read_declarations(path, "xlsx", ReadContext(sender=SENDER))


def test_cli_checks_a_workbook_with_line_numbers(tmp_path):
    path = workbook(tmp_path / "export.xlsx", [row(), row(tr="TR-2", inss="93051822362")])
    res = CliRunner().invoke(cli.app, ["check", str(path), "--quality", "employer",
                                       "--company", "0897223670", "--today", "2025-12-31",
                                       "--json"])
    assert res.exit_code == 1, res.output
    findings = json.loads(res.stdout)
    assert [(f["code"], f["where"]) for f in findings] == [
        ("00122-004", f"{path}:3 field inss")]


@pytest.mark.parametrize("name", ["xlsx", "fla_xlsx.plugin"])
def test_fla_disabled_plugins_blocks_the_entry_point(monkeypatch, name):
    # by its entry point name or by its module name, as `fla plugins` shows them
    monkeypatch.delenv("FLA_PLUGINS", raising=False)
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", f"csv_nothing,{name}")
    plugins = FlaPlugins()
    assert "xlsx" not in [f.name for f in plugins.input_formats()]
    (info,) = [p for p in plugins.plugins() if p.name == "xlsx"]
    assert info.blocked and info.hooks == () and info.kind == "blocked"
    with pytest.raises(PluginError, match="no installed plugin reads format 'xlsx'"):
        plugins.read_declarations(Path("x.xlsx"), "xlsx", ReadContext(sender=SENDER))


def test_fla_plugins_command_says_blocked(monkeypatch):
    from rich.console import Console

    from fla_core.plugins import get_plugins

    monkeypatch.delenv("FLA_PLUGINS", raising=False)
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", "xlsx")
    monkeypatch.setattr(cli, "out", Console(width=300))
    get_plugins.cache_clear()  # the process-wide manager reads the environment once
    try:
        listed = CliRunner().invoke(cli.app, ["plugins", "--json"])
        table = CliRunner().invoke(cli.app, ["plugins"])
    finally:
        get_plugins.cache_clear()
    assert listed.exit_code == 0, listed.output
    (xlsx,) = [p for p in json.loads(listed.stdout) if p["name"] == "xlsx"]
    assert xlsx["blocked"] is True and xlsx["hooks"] == []
    (line,) = [row for row in table.stdout.splitlines() if " xlsx " in row]
    assert "blocked" in line


# --- writing (fla_write_export) -------------------------------------------------------------------

HEADER = FileHeader("123456", "EMPLOYER", "0897223670", "T", "2026-03-16T09:30:00", "R-1")


def declarations() -> list[Declaration]:
    forklift = Training("TR-1", "Forklift", "FORMAL", "2025-03-03", "2025-03-05", "21.00", True,
                        "0566988259")
    shadow = Training("TR-2", "Shadowing, café", "INFORMAL", "2025-06-10", "2025-06-10", "3.50",
                      False)
    return [Declaration("D-1", "NEW", "2025", Employer("0897223670", "042979535"),
                        workers=[Worker("00012556777", [forklift, shadow])]),
            Declaration("D-2", "CANCEL", "2025", Employer("0897223670"),
                        replaced_declaration_ref="D-0")]


def shape(decls):
    return [(d.declaration_ref, d.action, d.replaced_declaration_ref, d.reporting_year,
             d.employer, [(w.inss, [(t.training_ref, t.title, t.training_type, t.start_date,
                                     t.end_date, t.hours, t.during_working_time,
                                     t.provider_company_id) for t in w.trainings])
                          for w in d.workers]) for d in decls]


def test_writes_a_workbook_that_reads_back_the_same(tmp_path):
    path = tmp_path / "out.xlsx"
    FlaPlugins().write_export(FileContent(HEADER, iter(declarations())), "xlsx", path)
    ctx = ReadContext(sender=SENDER)
    assert shape(FlaPlugins().read_declarations(path, "xlsx", ctx)) == shape(declarations())
    assert ctx.problems == []
    sheet = openpyxl.load_workbook(path).worksheets[0]
    cells = {name: sheet.cell(2, FIELDS.index(name) + 1).value for name in FIELDS}
    # identifiers stay text (leading zeros); dates, hours, year and yes/no are typed
    assert (cells["inss"], cells["employer_noss_nbr"]) == ("00012556777", "042979535")
    assert cells["start_date"] == datetime(2025, 3, 3) and cells["reporting_year"] == 2025
    assert cells["hours"] == 21 and cells["during_working_time"] is True


def test_the_same_content_gives_the_same_bytes(tmp_path, monkeypatch):
    import time
    import zipfile

    first, second = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    FlaPlugins().write_export(FileContent(HEADER, iter(declarations())), "xlsx", first)
    # the clock moves on (ZIP member times have a 2-second resolution)
    real = time.time()
    monkeypatch.setattr(time, "time", lambda: real + 3600)
    monkeypatch.setattr(time, "localtime", lambda *a: time.gmtime(real + 3600))
    FlaPlugins().write_export(FileContent(HEADER, iter(declarations())), "xlsx", second)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2026, 3, 16, 9, 30, 0)}
        assert b"2026-03-16T09:30:00Z" in archive.read("docProps/core.xml")
