"""``fla`` lists the commands of other modules without importing them (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fla_core import cli

HELP_PROBE = """\
import io, sys
from contextlib import redirect_stdout
from fla_core.cli import main
sys.argv = ["fla", *sys.argv[1:]]
text = io.StringIO()
try:
    with redirect_stdout(text):
        main()
except SystemExit as stop:
    code = stop.code
loaded = sorted(m for m in ("fla_sim", "asyncssh") if m in sys.modules)
assert loaded == [], loaded
assert " demo " in text.getvalue(), text.getvalue()
assert " send " in text.getvalue() and " poll " in text.getvalue(), text.getvalue()
print(code)
"""


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "no-args"])
def test_the_help_lists_demo_without_loading_the_simulator_or_asyncssh(args):
    done = subprocess.run([sys.executable, "-c", HELP_PROBE, *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("0" if args else "2")  # "fla" alone: the help, exit 2


def test_demo_help_still_works():
    done = subprocess.run([sys.executable, "-c", "from fla_core.cli import main; main()",
                           "demo", "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "Usage: fla demo [OPTIONS]" in done.stdout and "--keep" in done.stdout


@pytest.mark.parametrize("name", sorted(cli.command_sources()))
def test_the_listed_help_is_the_help_of_the_command_itself(name):
    """The help read from the source (ast) equals the help typer builds on import."""
    source = cli.command_sources()[name]
    assert cli._module_file(source.module) is not None  # read from the file, not imported
    read = cli.command_help(name, source)
    assert read and read == cli.load_command(name, source).help


def test_a_typo_of_a_lazy_command_gets_a_suggestion():
    done = subprocess.run([sys.executable, "-c", "from fla_core.cli import main; main()",
                           "sedn"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("fla: error: No such command 'sedn'. Did you mean 'send'?; "
                                   "see 'fla --help'")


def test_running_a_listed_command_whose_module_is_missing_is_exit_2(monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setattr(cli, "COMMAND_MODULES",
                        {**cli.COMMAND_MODULES, "ghost": "fla_core.cli_ghost"})
    loud = CliRunner().invoke(cli.app, ["-v", "ghost", "--help"])
    assert loud.exit_code == 2 and "Traceback" in loud.stderr  # -v holds before the callback
    res = CliRunner().invoke(cli.app, ["ghost", "--help"])  # and is not kept from a run
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "fla: error: command module 'fla_core.cli_ghost' is listed in "
        "fla_core.cli.COMMAND_MODULES but is not installed; reinstall fla-batch (pip install -e "
        ".) or remove it from the list"]
