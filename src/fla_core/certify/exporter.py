"""The supplier's exporter run by ``fla certify --command``: its exit status, time and stderr
become the command layer's cases (CMD-001, CMD-002)."""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fla_core.certify.catalogue import by_id
from fla_core.certify.model import CaseResult, Evidence, Outcome
from fla_core.names import UPLOAD_PREFIXES, prefix_of

# How much of the command's stderr a report keeps (its end: where the error usually is).
STDERR_KEPT = 4000


@dataclass(frozen=True)
class ExporterRun:
    """What the command did: its argv, exit status (None: killed at the timeout), stderr tail,
    seconds taken, and the upload files it left in the folder."""

    argv: tuple[str, ...]
    returncode: int | None
    stderr: str
    seconds: float
    written: tuple[str, ...]


def command_argv(command: str, out: Path) -> list[str]:
    """The command split as a shell would, ``{out}`` replaced by the folder (ValueError: no
    ``{out}``, or unbalanced quotes)."""
    if "{out}" not in command:
        raise ValueError(f"--command {command!r} must name the output folder as {{out}}")
    return [part.replace("{out}", str(out)) for part in shlex.split(command)]


def run_exporter(command: str, out: Path, *, timeout: float) -> ExporterRun:
    """Run the exporter into ``out`` (created), no shell, no stdin, killed at ``timeout``."""
    argv = command_argv(command, out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
        code: int | None = done.returncode
        stderr = done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stderr = None, exc.stderr or b""
    except OSError as exc:  # not found, not executable: the command's failure, reported
        code, stderr = 127, str(exc).encode()
    seconds = time.monotonic() - started
    written = tuple(sorted(p.name for p in out.iterdir()
                           if p.is_file() and prefix_of(p.name) in UPLOAD_PREFIXES))
    text = stderr.decode("utf-8", "replace")[-STDERR_KEPT:]
    return ExporterRun(tuple(argv), code, text, seconds, written)


def command_results(run: ExporterRun, timeout: float) -> list[CaseResult]:
    """CMD-001 (exit 0 in time) and CMD-002 (wrote at least one upload file)."""
    what = " ".join(shlex.quote(a) for a in run.argv)
    stderr = f"; stderr: {run.stderr.strip()}" if run.stderr.strip() else ""
    if run.returncode is None:
        first = CaseResult(by_id()["CMD-001"], Outcome.FAILED, (Evidence(
            f"{what}: still running after {timeout:g} s, killed{stderr}", code="timeout"),))
    elif run.returncode != 0:
        first = CaseResult(by_id()["CMD-001"], Outcome.FAILED, (Evidence(
            f"{what}: exit status {run.returncode} after {run.seconds:.1f} s{stderr}",
            code=f"exit {run.returncode}"),))
    else:
        first = CaseResult(by_id()["CMD-001"], Outcome.PASSED, (Evidence(
            f"{what}: exit status 0 after {run.seconds:.1f} s"),))
    if run.written:
        second = CaseResult(by_id()["CMD-002"], Outcome.PASSED, (Evidence(
            f"{len(run.written)} upload file(s) written"),))
    else:
        second = CaseResult(by_id()["CMD-002"], Outcome.FAILED, (Evidence(
            f"{what}: wrote no FI/FS/GO/TD file into the output folder{stderr}"),))
    return [first, second]
