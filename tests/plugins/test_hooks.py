"""Every hook of ``fla_core.hookspecs`` and ``fla_sim.hookspecs`` has a test here (asserted at
the end, as datasette does), plus the plugin manager's bootstrap: tracing, ``check_pending``,
``FLA_PLUGINS``, ``FLA_DISABLED_PLUGINS`` and the simulator's own hook specs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from fla_core import hookimpl, hookspecs
from fla_core.anomalies import Anomaly
from fla_core.applications import Application
from fla_core.checks.context import CheckContext
from fla_core.checks.engine import evaluate
from fla_core.formats import InputFormat, ReadContext
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
from fla_core.qualities import QualityInfo
from fla_sim.hooks import SimHooks

SENDER = Sender("123456", Quality.EMPLOYER, "0897223670")
TESTED: set[str] = set()


def covers_hook(name: str):
    """Mark a test as covering hook ``name`` (collected when the module is imported)."""
    TESTED.add(name)
    return lambda fn: fn


@pytest.fixture
def bare(monkeypatch):
    """A manager without entry points or FLA_PLUGINS, so tests never depend on the machine."""
    monkeypatch.delenv("FLA_PLUGINS", raising=False)
    monkeypatch.delenv("FLA_TRACE_HOOKS", raising=False)
    monkeypatch.delenv("FLA_DISABLED_PLUGINS", raising=False)
    return lambda *extra: FlaPlugins(entry_points=False, extra=extra)


def declaration() -> Declaration:
    training = Training("TR-1", "Forklift", "FORMAL", "2025-03-03", "2025-03-03", "7.00", True)
    return Declaration("D-1", "NEW", "2025", Employer("0897223670"),
                       workers=[Worker("93051822361", [training])])


@covers_hook("fla_input_formats")
@covers_hook("fla_read_declarations")
def test_input_format_plugin_reads_its_format_only(bare, tmp_path):
    header = FileHeader("123456", "EMPLOYER", "0897223670", "T", "2026-03-16T09:30:00", "R-1")

    class Yaml:
        @hookimpl
        def fla_input_formats(self):
            return [InputFormat("yaml", (".yml", ".yaml"), "YAML rows")]

        @hookimpl
        def fla_read_declarations(self, path, format, context):
            if format != "yaml":
                return None
            return FileContent(header, [declaration()])

    plugins = bare(Yaml())
    assert sorted(f.name for f in plugins.input_formats()) == ["csv", "json", "yaml"]
    ctx = ReadContext(sender=SENDER)
    content = plugins.read_declarations(tmp_path / "x.yml", "yaml", ctx)
    assert [d.declaration_ref for d in content] == ["D-1"]
    # the built-in CSV reader still wins for csv: first non-None result
    csv = tmp_path / "x.csv"
    csv.write_text("declaration_ref,reporting_year\nD-9,2025\n")
    assert [d.declaration_ref for d in plugins.read_declarations(csv, "csv", ctx)] == ["D-9"]
    with pytest.raises(PluginError, match="installed formats: csv, json, yaml"):
        plugins.read_declarations(csv, "toml", ctx)


@covers_hook("fla_write_export")
def test_write_export_plugin_writes_its_format_and_csv_reads_back(bare, tmp_path):
    header = FileHeader("123456", "EMPLOYER", "0897223670", "T", "2026-03-16T09:30:00", "R-1")

    class Yaml:
        @hookimpl
        def fla_input_formats(self):
            return [InputFormat("yaml", (".yml",), "YAML rows", writes=True)]

        @hookimpl
        def fla_write_export(self, content, format, path):
            if format != "yaml":
                return None
            path.write_text("".join(f"- {d.declaration_ref}\n" for d in content))
            return True

    plugins = bare(Yaml())
    assert {f.name: f.writes for f in plugins.input_formats()} == {
        "csv": True, "json": True, "yaml": True}
    plugins.write_export(FileContent(header, iter([declaration()])), "yaml", tmp_path / "x.yml")
    assert (tmp_path / "x.yml").read_text() == "- D-1\n"
    # the built-in CSV writer still answers for csv, and its rows read back the same
    plugins.write_export(FileContent(header, iter([declaration()])), "csv", tmp_path / "x.csv")
    back = list(plugins.read_declarations(tmp_path / "x.csv", "csv", ReadContext(SENDER)))
    assert [(d.declaration_ref, d.employer, [(w.inss, [(t.training_ref, t.hours) for t in
                                                      w.trainings]) for w in d.workers])
            for d in back] == [("D-1", Employer("0897223670"),
                                [("93051822361", [("TR-1", "7.00")])])]
    with pytest.raises(PluginError, match="no installed plugin writes format 'toml'; formats "
                                          "written: csv, json, yaml"):
        plugins.write_export(FileContent(header, iter(())), "toml", tmp_path / "x.toml")
    assert not (tmp_path / "x.toml").exists()


@covers_hook("fla_qualities")
def test_qualities_builtin_and_duplicates(bare):
    infos = {i.quality: i for i in bare().qualities()}
    assert set(infos) == set(Quality)
    assert infos[Quality.EMPLOYER].own_company_only
    assert infos[Quality.SOCIAL_SECRETARIAT].two_level
    assert infos[Quality.SERVICE_PROVIDER].needs_mandate
    assert not infos[Quality.SERVICE_PROVIDER].two_level
    assert infos[Quality.TRAINING_PROVIDER].employer_optional

    class Again:
        @hookimpl
        def fla_qualities(self):
            return [QualityInfo(Quality.EMPLOYER, "twice")]

    with pytest.raises(PluginError, match="quality EMPLOYER is declared by two plugins"):
        bare(Again()).qualities()


@covers_hook("fla_applications")
def test_applications_builtin_and_a_plugin_application(bare):
    codes = {a.code: a for a in bare().applications()}
    assert codes["FLAC"].namespace == "urn:be:fgov:socialsecurity:fla:v1"
    dmfa = Application("DMFA", "DmfA", "urn:x", "DmfA", Path("dmfa.xsd"),
                       render=lambda c, o: None, scan=lambda *a, **k: None)

    class Dmfa:
        @hookimpl
        def fla_applications(self):
            return [dmfa]

    assert {a.code for a in bare(Dmfa()).applications()} == {"FLAC", "DMFA"}

    class Clash:
        @hookimpl
        def fla_applications(self):
            return [dataclasses.replace(dmfa, code="FLAC")]

    with pytest.raises(PluginError, match="application FLAC is declared by two plugins"):
        bare(Clash()).applications()


@covers_hook("fla_check_declaration")
def test_check_plugin_adds_anomalies_to_the_verdict(bare):
    class NoForklifts:
        @hookimpl
        def fla_check_declaration(self, declaration, position, context):
            return [Anomaly("999", "B", "No forklifts", zone="00133", row=99,
                            path=f"/FLAFile/Declaration[{position}]/Worker[1]/Training[1]/Title",
                            declaration=position, worker=1, training=1)
                    for w in declaration.workers for t in w.trainings if "Forklift" in t.title]

    context = CheckContext(sender=SENDER, environment="T", processing_date=date(2026, 3, 16),
                           check_mandates=False)
    plain = evaluate(declaration(), 1, context, bare())
    assert plain.status == "ACCEPTED"
    assert [a.error_id for a in plain.anomalies if a.blocking] == []
    context = CheckContext(sender=SENDER, environment="T", processing_date=date(2026, 3, 16),
                           check_mandates=False)
    verdict = evaluate(declaration(), 1, context, bare(NoForklifts()))
    assert verdict.status == "REJECTED"
    assert "00133-999" in [a.error_id for a in verdict.anomalies]


@covers_hook("fla_sim_file_received")
def test_sim_file_received_first_veto_wins(bare):
    from fla_sim.events import FileReceived

    seen = []

    class Watcher:
        @hookimpl
        def fla_sim_file_received(self, event):
            seen.append(event.name)

    class Veto:
        @hookimpl
        def fla_sim_file_received(self, event):
            return "184" if event.size > 10 else None

    hooks = SimHooks(bare(Watcher(), Veto()))
    assert hooks.watches_uploads() and not hooks.watches_answers()
    small = FileReceived("acme", "INTEST", "FI.FLAC.123456.20260316.00001.T.1.1", 5, Path("x"))
    big = dataclasses.replace(small, size=11)
    assert hooks.file_received(small) is None
    assert hooks.file_received(big) == "184"
    assert seen == [small.name, big.name]


@covers_hook("fla_sim_answer")
def test_sim_answer_is_observed(bare):
    from fla_sim.events import AnswerWritten

    seen = []

    class Log:
        @hookimpl
        def fla_sim_answer(self, event):
            seen.append((event.kind, event.result_code))

    event = AnswerWritten("acme", "OUTTEST", "FO.ACRF.999999.20260316.00001.T", "ACRF",
                          "GO.FLAC.123456.20260316.00001.T.1", "ACRF-000")
    hooks = SimHooks(bare(Log()))
    assert hooks.watches_answers() and not hooks.watches_uploads()
    assert hooks.answer(event) is None
    assert seen == [("ACRF", "ACRF-000")]


# --- bootstrap ----------------------------------------------------------------------------------

def test_trace_prints_every_hook_call(bare, monkeypatch, capsys):
    monkeypatch.setenv("FLA_TRACE_HOOKS", "1")
    FlaPlugins(entry_points=False).input_formats()
    stderr = capsys.readouterr().err
    assert "fla-hook> fla_input_formats({}) -> [" in stderr
    assert "fla_core.formats.csv_format" in stderr
    assert "fla-hook< fla_input_formats = [" in stderr
    monkeypatch.setenv("FLA_TRACE_HOOKS", "0")
    FlaPlugins(entry_points=False).input_formats()
    assert capsys.readouterr().err == ""


def test_misspelt_hook_fails_at_start_up(bare):
    class Typo:
        @hookimpl
        def fla_input_format(self):  # missing "s"
            return []

    with pytest.raises(PluginError, match=r"unknown hook.*fla_input_format"):
        bare(Typo())


def test_fla_plugins_env_registers_a_module(bare, tmp_path, monkeypatch):
    (tmp_path / "fla_env_plugin.py").write_text(
        "from fla_core import hookimpl\n"
        "from fla_core.formats import InputFormat\n\n"
        "@hookimpl\n"
        "def fla_input_formats():\n"
        "    return [InputFormat('env', ('.env',), 'from FLA_PLUGINS')]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLA_PLUGINS", "fla_env_plugin")
    plugins = FlaPlugins(entry_points=False)
    assert "env" in [f.name for f in plugins.input_formats()]
    info = {p.name: p for p in plugins.plugins()}["fla_env_plugin"]
    assert info.hooks == ("fla_input_formats",) and not info.builtin
    monkeypatch.setenv("FLA_PLUGINS", "fla_no_such_plugin_module")
    with pytest.raises(PluginError, match="FLA_PLUGINS names 'fla_no_such_plugin_module'"):
        FlaPlugins(entry_points=False)


def test_every_hookspec_has_a_test():
    from fla_sim import hookspecs as sim_hookspecs

    specs = {name for module in (hookspecs, sim_hookspecs) for name in dir(module)
             if name.startswith("fla_") and hasattr(getattr(module, name), "fla_spec")}
    assert specs, "no hookspecs found: the marker attribute changed?"
    assert specs == TESTED


def test_hookimpl_is_the_project_marker():
    assert hookimpl is hookspecs.hookimpl


# --- the simulator's hooks are declared by the simulator -----------------------------------------

class Misspelt:
    @hookimpl
    def fla_sim_file_recieved(self, event):  # "ie": a hook nobody declares
        return None


def test_the_core_declares_no_simulator_hook(bare):
    from fla_sim import hookspecs as sim_hookspecs

    assert [n for n in dir(hookspecs) if n.startswith("fla_sim")] == []
    plugins = bare()
    assert not hasattr(plugins.pm.hook, "fla_sim_answer")  # no plugin needs it: not loaded
    SimHooks(plugins)
    SimHooks(plugins)  # declared once, however often the simulator asks
    assert plugins.pm.hook.fla_sim_answer.spec.namespace is sim_hookspecs
    assert plugins.recipe is not None and plugins.recipe.specs == ("fla_sim.hookspecs",)


def test_a_misspelt_simulator_hook_is_refused_when_the_manager_is_built(bare):
    with pytest.raises(PluginError, match=r"unknown hook 'fla_sim_file_recieved'"):
        bare(Misspelt())


def test_a_misspelt_simulator_hook_is_refused_when_the_simulator_starts(bare, fla_sim_home):
    from fla_sim.processor import Processor
    from fla_sim.store import Journal

    plugins = bare()
    plugins.pm.register(Misspelt())  # after the manager's own check, as a caller may do
    journal = Journal(fla_sim_home.journal_path)
    try:
        with pytest.raises(PluginError, match=r"unknown hook 'fla_sim_file_recieved'"):
            Processor(fla_sim_home, fla_sim_home.load(), journal, plugins=plugins)
    finally:
        journal.close()


def loaded_simulator_modules(tmp_path: Path, plugin: str | None) -> list[str]:
    """The fla_sim modules a fresh process imports to build a core manager (with FLA_PLUGINS)."""
    (tmp_path / "fla_watch_plugin.py").write_text(
        "from fla_core import hookimpl\n\n"
        "@hookimpl\n"
        "def fla_sim_answer(event):\n"
        "    pass\n")
    code = ("import sys\nfrom fla_core.plugins import FlaPlugins\n"
            "FlaPlugins(entry_points=False)\n"
            "print(sorted(m for m in sys.modules if m.startswith('fla_sim')))\n")
    env = {"PYTHONPATH": str(tmp_path), "FLA_PLUGINS": plugin or "", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=True)
    return eval(done.stdout)  # a printed list of str


def test_a_core_only_process_accepts_a_simulator_plugin(tmp_path):
    # the specs come from the entry point group fla.hookspecs, imported only when needed
    assert loaded_simulator_modules(tmp_path, None) == []
    assert loaded_simulator_modules(tmp_path, "fla_watch_plugin") == [
        "fla_sim", "fla_sim.hookspecs"]


# --- FLA_DISABLED_PLUGINS -------------------------------------------------------------------------

def bad_employer() -> Declaration:
    return dataclasses.replace(declaration(), employer=Employer("0897223607"))  # check digits


def employer_zone(plugins: FlaPlugins) -> list[str]:
    context = CheckContext(sender=SENDER, environment="T", processing_date=date(2026, 3, 16),
                           check_mandates=False)
    verdict = evaluate(bad_employer(), 1, context, plugins)
    return [a.error_id for a in verdict.anomalies if a.error_id.startswith("00112-")]


def test_a_disabled_builtin_check_no_longer_fires(bare, monkeypatch):
    assert employer_zone(bare()) != []
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", " fla_core.checks.employer ,")
    plugins = bare()
    assert employer_zone(plugins) == []
    info = {p.name: p for p in plugins.plugins()}["fla_core.checks.employer"]
    assert (info.blocked, info.kind, info.hooks, info.builtin) == (True, "blocked", (), True)
    # a worker rebuilds the same manager from the recipe, whatever its own environment says
    monkeypatch.delenv("FLA_DISABLED_PLUGINS")
    assert plugins.recipe is not None
    assert plugins.recipe.blocked == ("fla_core.checks.employer",)
    assert employer_zone(plugins.recipe.build()) == []


def test_a_disabled_module_of_fla_plugins_is_never_imported(bare, monkeypatch):
    monkeypatch.setenv("FLA_PLUGINS", "fla_no_such_plugin_module")
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", "fla_no_such_plugin_module")
    plugins = FlaPlugins(entry_points=False)  # no ImportError: blocked before loading
    assert [p.name for p in plugins.plugins() if p.blocked] == ["fla_no_such_plugin_module"]


# --- qualities reach the rules through the check context ---------------------------------------

EXPORTS = Path(__file__).resolve().parents[2] / "fixtures" / "exports"


class LaxEmployers:
    """Every quality of spec 2.1, but an employer may send for other employers (no M1)."""

    @hookimpl
    def fla_qualities(self):
        from fla_core.qualities.builtin import QUALITIES

        return [dataclasses.replace(q, own_company_only=False) for q in QUALITIES]


def m1_findings(plugins: FlaPlugins) -> list[str]:
    from fla_core.checking import check_export

    own = Sender("123456", Quality.EMPLOYER, "0123456749")  # the export's employer is another
    findings = check_export(EXPORTS / "valid.csv", fmt=None, sender=own, env="T",
                            today=date(2025, 12, 31), plugins=plugins)
    return [f.code for f in findings if f.code == "00112-101"]


def test_a_qualities_plugin_changes_what_the_rules_allow(bare, monkeypatch):
    assert m1_findings(bare()) != []
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", "fla_core.qualities.builtin")
    assert m1_findings(bare(LaxEmployers())) == []
    with pytest.raises(PluginError, match="no plugin declares quality EMPLOYER, "):
        bare().quality_table()


def test_the_judge_gives_the_rules_the_managers_qualities(bare, monkeypatch):
    from fla_core import scanning
    from fla_core.checks.context import MemoryRegistry, NoMandates
    from fla_core.names import FileName
    from fla_core.settings import ChannelProfile, Settings

    monkeypatch.setenv("FLA_DISABLED_PLUGINS", "fla_core.qualities.builtin")
    plugins = bare(LaxEmployers())
    go = FileName("GO", "FLAC", "123456", "20260316", "00001", "T", 1, 1)
    channel = ChannelProfile(user="acme", sender="123456", quality=Quality.EMPLOYER,
                             company_id="0123456749")
    context = scanning.check_context(go, channel=channel, settings=Settings(),
                                     today=date(2026, 3, 16), registry=MemoryRegistry(),
                                     mandates=NoMandates(), check_mandates=False,
                                     plugins=plugins)
    assert context.qualities is plugins.quality_table()
    assert not context.quality_info().own_company_only
