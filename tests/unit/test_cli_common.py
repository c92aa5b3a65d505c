"""``fla`` and ``fla-sim`` share one error policy: exit codes and one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fla_core import cli
from fla_core.anomalies import ChannelError
from fla_core.cli_common import EXIT_INVALID, EXIT_USAGE, Failure, Program
from fla_sim import cli as sim_cli


@pytest.mark.parametrize(("exc", "code", "line"), [
    (Failure("--env 'X' must be R, T or S"), EXIT_USAGE, "--env 'X' must be R, T or S"),
    (Failure("rejected", EXIT_INVALID), EXIT_INVALID, "rejected"),
    (ChannelError("125", "the FI changed after signing", subject="FS.X"), EXIT_INVALID,
     "FS.X: ACRF-125 "),
    (FileNotFoundError(2, "No such file or directory", "x.csv"), EXIT_USAGE,
     "x.csv: No such file or directory"),
    (ValueError("--sender must be 6 digits"), EXIT_USAGE, "--sender must be 6 digits"),
    (RuntimeError("boom"), EXIT_USAGE, "unexpected RuntimeError: boom (run with -v for details)"),
])
def test_exit_code_and_line_of_each_kind_of_error(exc, code, line):
    got_code, got_line = Program("prog").classify(exc)
    assert got_code == code and got_line.startswith(line)


def test_a_program_maps_its_own_errors_first():
    program = Program("prog", describe=lambda e: (EXIT_INVALID, "mine")
                      if isinstance(e, KeyError) else None)
    assert program.classify(KeyError("k")) == (EXIT_INVALID, "mine")
    assert program.classify(ValueError("v")) == (EXIT_USAGE, "v")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_both_programs_print_usage_errors_as_one_line(capsys, tmp_path):
    assert sim_cli.main(["frobnicate"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "fla-sim: error: No such command 'frobnicate'; see 'fla-sim --help'")
    assert sim_cli.main(["channel", "add", str(tmp_path), "--user"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "fla-sim: error: Option '--user' requires an argument")
    res = CliRunner().invoke(cli.app, ["frobnicate"])
    assert res.exit_code == 2
    assert one_line(res.stderr) == "fla: error: No such command 'frobnicate'; see 'fla --help'"


def test_both_programs_show_the_traceback_only_with_verbose(capsys, tmp_path):
    missing = str(tmp_path / "nowhere")
    assert sim_cli.main(["status", missing]) == 2
    assert one_line(capsys.readouterr().err).startswith("fla-sim: error: ")
    assert sim_cli.main(["-v", "status", missing]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert sim_cli.main(["status", missing]) == 2  # -v of an earlier run is not kept
    assert "Traceback" not in capsys.readouterr().err
    args = ["check", missing, "--quality", "employer", "--company", "0123456749"]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 2 and one_line(res.stderr).startswith("fla: error: ")
    res = CliRunner().invoke(cli.app, ["-v", *args])
    assert res.exit_code == 2 and "Traceback" in res.stderr
