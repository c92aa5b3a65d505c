"""``fla fake``: realistic test exports, valid or with seeded defects, reproducible by seed.

The promises are checked through the real command line: ``fla fake`` -> ``fla build`` ->
``fla check`` finds nothing in valid data and exactly the announced error ids in invalid data,
for every format that writes (xlsx when the plugin is installed).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from datetime import date
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fla_core import cli, hookimpl
from fla_core.checking import check_export
from fla_core.faking import DEFECTS, FakeData, FakeSpec, write_fake
from fla_core.formats import InputFormat
from fla_core.model import Quality, Sender
from fla_core.plugins import FlaPlugins

CHANNEL = ["--sender", "123456", "--quality", "social-secretariat", "--company", "0123456749"]
# Mid-year: every defect kind is possible (a day before today, a day after it in the year).
TODAY = "2026-06-15"
XLSX = pytest.param("xlsx", marks=pytest.mark.skipif(
    not any(ep.value == "fla_xlsx.plugin" for ep in metadata.entry_points(group="fla")),
    reason="fla-xlsx is not installed: pip install -e plugins/fla-xlsx"))
FORMATS = ["csv", "json", XLSX]


@pytest.fixture
def runner(monkeypatch):
    for name in ("FLA_PLUGINS", "FLA_DISABLED_PLUGINS", "FLA_TRACE_HOOKS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def run(runner, *args):
    return runner.invoke(cli.app, [str(a) for a in args])


def fake(runner, out: Path, *args) -> dict:
    res = run(runner, "fake", "--out", out, "--today", TODAY, "--json", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def build_and_check(runner, export: Path, channel=CHANNEL) -> tuple[int, Counter[str]]:
    """``fla build`` then ``fla check`` of the triplet: exit code and error ids found."""
    folder = export.parent / f"triplet-{export.suffix[1:]}"
    built = run(runner, "build", export, *channel, "--out", folder, "--date", TODAY)
    assert built.exit_code == 0, built.output
    checked = run(runner, "check", folder, *channel, "--today", TODAY, "--json")
    findings = json.loads(checked.stdout)
    assert [f["code"] for f in findings].count("ACRF") == 1, findings  # a positive ACRF
    return checked.exit_code, Counter(f["code"] for f in findings if f["code"] != "ACRF")


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_data_builds_and_checks_clean(runner, tmp_path, fmt):
    summary = fake(runner, tmp_path / f"export.{fmt}", "--records", 150, "--seed", 1)
    assert (summary["format"], summary["records"], summary["expected"]) == (fmt, 150, {})
    code, found = build_and_check(runner, tmp_path / f"export.{fmt}")
    assert (code, found) == (0, Counter())


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_data_gives_exactly_the_announced_error_ids(runner, tmp_path, fmt):
    summary = fake(runner, tmp_path / f"export.{fmt}", "--records", 200, "--seed", 2,
                   "--invalid", "0.3")
    assert sum(d["records"] for d in summary["defects"]) == 60
    assert sum(summary["expected"].values()) == 60
    code, found = build_and_check(runner, tmp_path / f"export.{fmt}")
    assert code == 1
    assert found == Counter(summary["expected"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_seed_writes_the_same_bytes(runner, tmp_path, fmt):
    args = ["--records", 120, "--invalid", "0.2", "--format", fmt]
    first, again, other = (tmp_path / f"{name}.{fmt}" for name in ("first", "again", "other"))
    fake(runner, first, *args, "--seed", 7)
    fake(runner, again, *args, "--seed", 7)
    fake(runner, other, *args, "--seed", 8)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


@pytest.mark.parametrize("quality,company", [
    ("employer", "0897223670"), ("training-provider", "0897223670"),
    ("service-provider", "0897223670"), ("social-secretariat", "0123456749")])
def test_every_defect_kind_raises_only_its_own_error_id(tmp_path, quality, company):
    """Every record defective, every quality: the judge's findings equal the announcement."""
    who = Sender("123456", Quality.parse(quality), company)
    spec = FakeSpec(records=600, sender=who, today=date.fromisoformat(TODAY), seed=5,
                    invalid=1.0)
    plugins = FlaPlugins(entry_points=False)
    export = tmp_path / "export.csv"
    result = write_fake(spec, fmt="csv", out=export, plugins=plugins)
    findings = check_export(export, fmt="csv", sender=who, env="T", today=spec.today,
                            plugins=plugins)
    assert sum(result.defects.values()) == 600
    assert Counter(f.code for f in findings) == Counter(result.expected)
    impossible = {"training-provider": {"employer-check-digits", "employer-structure",
                                        "employer-missing", "provider-check-digits",
                                        "provider-structure"}}.get(quality, set())
    assert set(result.defects) == {d.kind for d in DEFECTS} - impossible


def test_records_are_grouped_into_declarations_and_workers(runner, tmp_path):
    fake(runner, tmp_path / "export.csv", "--records", 500, "--seed", 3)
    with (tmp_path / "export.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 500
    declarations = Counter(r["declaration_ref"] for r in rows)
    assert 5 < len(declarations) < 250  # several workers and trainings per declaration
    workers = Counter((r["declaration_ref"], r["inss"]) for r in rows)
    assert len(declarations) < len(workers) < 500
    # one employer per declaration, adjacent rows (the readers stream them), this year only
    refs = [r["declaration_ref"] for r in rows]
    assert refs == sorted(refs, key=refs.index)
    assert {r["reporting_year"] for r in rows} == {"2026"}
    assert all(len({(r["employer_company_id"]) for r in rows if r["declaration_ref"] == d}) == 1
               for d in declarations)


@pytest.mark.parametrize("records", [1, 2, 37])
def test_exactly_n_records(runner, tmp_path, records):
    summary = fake(runner, tmp_path / "export.csv", "--records", records, "--seed", 4)
    lines = (tmp_path / "export.csv").read_text().splitlines()
    assert summary["records"] == records == len(lines) - 1


def test_defects_change_the_valid_run_of_the_same_seed_only(runner, tmp_path):
    fake(runner, tmp_path / "valid.csv", "--records", 300, "--seed", 6)
    summary = fake(runner, tmp_path / "bad.csv", "--records", 300, "--seed", 6,
                   "--invalid", "0.1")
    valid, bad = (list(csv.DictReader((tmp_path / name).open(newline="")))
                  for name in ("valid.csv", "bad.csv"))
    assert sum(summary["expected"].values()) == 30
    # each defect changes its own record's row (a declaration's or worker's defect, its
    # other rows too); what no defect touches, the title, is the valid run's
    changed = sum(a != b for a, b in zip(valid, bad, strict=True))
    assert changed >= 30
    assert [r["title"] for r in valid] == [r["title"] for r in bad]


def test_without_out_the_export_goes_to_stdout_and_the_summary_to_stderr(runner):
    res = run(runner, "fake", "--records", 5, "--seed", 9, "--today", TODAY)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith("declaration_ref,action,")
    assert len(res.stdout.splitlines()) == 6
    # quiet without a terminal: the summary line, no progress bar
    # (rich 13.8, the lowest allowed, leaves an empty line where the disabled bar was)
    (line,) = [text for text in res.stderr.splitlines() if text]
    assert re.fullmatch(r"5 record\(s\), \d declaration\(s\), \d worker\(s\) written to "
                        r"standard output \(csv, seed 9\)", line), line


def test_invalid_summary_on_stderr_names_each_error_id(runner, tmp_path):
    res = run(runner, "fake", "--records", 40, "--seed", 9, "--today", TODAY, "--invalid",
              "0.25", "--out", tmp_path / "x.csv")
    assert res.exit_code == 0, res.output
    lines = [text for text in res.stderr.splitlines() if text]
    assert lines[1] == "10 record(s) with a seeded defect; fla check of the build reports:"
    ids = {line.split()[0]: int(line.split()[1]) for line in lines[2:]}
    assert sum(ids.values()) == 10 and all(i in {d.error_id for d in DEFECTS} for i in ids)


@pytest.mark.parametrize("args,message", [
    (["--records", "0"], "Invalid value for '--records'"),
    (["--invalid", "1.5"], "Invalid value for '--invalid'"),
    (["--today", "2023-05-01"], "the FLA starts in 2024"),
    (["--out", "{tmp}/missing/x.csv"], "folder {tmp}/missing does not exist"),
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/x.csv", "--format", "json"], ".csv is the suffix of format csv, not "
                                                   "json; name the file {tmp}/x.json"),
    (["--out", "{tmp}/x.txt"], "cannot tell the format from '.txt'; give --format"),
    (["--format", "toml"], "--format toml: no installed plugin writes it"),
    (["--json"], "--json needs --out FILE"),
    (["--company", "0123456748"], "--company '0123456748': wrong check digits"),
])
def test_usage_errors_are_one_line_and_write_nothing(runner, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = run(runner, "fake", *args)
    assert res.exit_code == 2
    assert message.replace("{tmp}", str(tmp_path)) in one_line(res)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    class Broken:
        @hookimpl
        def fla_input_formats(self):
            return [InputFormat("broken", (".brk",), "half a file", writes=True)]

        @hookimpl
        def fla_write_export(self, content, format, path):
            if format != "broken":
                return None
            path.write_text("half")
            raise OSError(28, "No space left on device")

    spec = FakeSpec(records=10, sender=Sender("123456", Quality.EMPLOYER, "0897223670"),
                    today=date.fromisoformat(TODAY), seed=1)
    with pytest.raises(OSError, match="No space left"):
        write_fake(spec, fmt="broken", out=tmp_path / "x.brk",
                   plugins=FlaPlugins(entry_points=False, extra=[Broken()]))
    assert list(tmp_path.iterdir()) == []


def test_declarations_are_made_while_they_are_written(tmp_path, monkeypatch):
    """Streaming: the writer gets a lazy iterator, and each declaration is made when the
    writer asks for it, not all before (so memory does not grow with --records)."""
    made: list[int] = []
    seen: list[int] = []
    make = FakeData._declaration

    def counting(self, number):
        made.append(number)
        return make(self, number)

    monkeypatch.setattr(FakeData, "_declaration", counting)

    class Probe:
        @hookimpl
        def fla_input_formats(self):
            return [InputFormat("probe", (".probe",), "counts", writes=True)]

        @hookimpl
        def fla_write_export(self, content, format, path):
            if format != "probe":
                return None
            assert not isinstance(content.declarations, list | tuple)
            for _ in content:
                seen.append(len(made))
            path.write_text("done")
            return True

    spec = FakeSpec(records=400, sender=Sender("123456", Quality.EMPLOYER, "0897223670"),
                    today=date.fromisoformat(TODAY), seed=1)
    result = write_fake(spec, fmt="probe", out=tmp_path / "x.probe",
                        plugins=FlaPlugins(entry_points=False, extra=[Probe()]))
    assert seen == list(range(1, result.declarations + 1)) and len(seen) > 3


def test_generation_is_lazy():
    spec = FakeSpec(records=10**9, sender=Sender("123456", Quality.EMPLOYER, "0897223670"),
                    today=date.fromisoformat(TODAY), seed=1)
    first = next(FakeData(spec).declarations())  # a billion records: only one declaration made
    assert first.declaration_ref.startswith("D-0897223670-2026-")


def test_the_defect_table_of_the_docs_is_the_catalogue():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "input-formats.md").read_text("utf-8")
    section = doc.split("## Writing exports (`fla fake`)", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \|.*\| `(\d{5}-\d{3})` \|$", section, re.MULTILINE)
    assert rows == [(d.kind, d.error_id) for d in DEFECTS]
