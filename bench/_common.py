"""Shared helpers of the bench scripts: fresh-process measurement, best-of runs, result table.

Every subject runs in its own process so that its peak RSS (``ru_maxrss`` of that one child, from
``os.wait4``) belongs to it alone; a Python subject also reports the time of the operation itself,
measured inside the child after its imports, on the last line of its stdout as JSON.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
SHORT_S = 2.0  # subjects faster than this are run three times, best kept


@dataclass
class Measurement:
    """One run of one subject: operation seconds, process wall seconds, peak RSS in MB."""

    seconds: float
    wall: float
    rss_mb: float
    extra: dict[str, object] = field(default_factory=dict)


class SubjectFailed(RuntimeError):
    """A subject process exited non-zero; the message carries its stderr tail."""


def run_measured(cmd: Sequence[str], *, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 3600) -> Measurement:
    """Run ``cmd`` as a fresh process; its own peak RSS comes from ``wait4``, not the parent's."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env)
        try:
            status, usage = _wait(proc, timeout)
        except BaseException:  # interrupted: never leave the subject running behind us
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise SubjectFailed(f"{' '.join(cmd[:4])} ... exited {code}:\n{tail}")
    extra: dict[str, object] = {}
    seconds = wall
    lines = stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        extra = json.loads(lines[-1])
        seconds = float(extra.pop("seconds", wall))  # type: ignore[arg-type]
    return Measurement(seconds=seconds, wall=wall, rss_mb=usage.ru_maxrss / 1024, extra=extra)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, os.struct_rusage]:
    # wait4 with WNOHANG in a bounded loop: a hung subject is killed instead of hanging the bench
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise SubjectFailed(f"{proc.args!r}: still running after {timeout:.0f} s, killed")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def best_of(run: Callable[[], Measurement], runs: int = 3) -> Measurement:
    """One run; if it took less than ``SHORT_S``, ``runs`` in all and the fastest kept.

    The RSS reported is the highest seen over the runs, so a lucky run cannot hide memory.
    """
    first = run()
    if first.seconds >= SHORT_S or runs <= 1:
        return first
    return _best([first] + [run() for _ in range(runs - 1)])


def paired_best(ours: Callable[[], Measurement], anchor: Callable[[], Measurement],
                runs: int = 3, long_runs: int = 1) -> tuple[Measurement, Measurement]:
    """Ours and the anchor in alternation (ours, anchor, ours, ...), best of each kept.

    On a shared machine the load changes from minute to minute; alternating puts both sides
    under the same conditions. Short subjects (< ``SHORT_S``) get ``runs`` rounds, others
    ``long_runs``.
    """
    mine, theirs = [ours()], [anchor()]
    short = mine[0].seconds < SHORT_S and theirs[0].seconds < SHORT_S
    for _ in range((runs if short else long_runs) - 1):
        mine.append(ours())
        theirs.append(anchor())
    return _best(mine), _best(theirs)


def _best(all_runs: list[Measurement]) -> Measurement:
    best = min(all_runs, key=lambda m: m.seconds)
    best.rss_mb = max(m.rss_mb for m in all_runs)
    return best


def python_subject(script: Path, subject: str, args: Sequence[str]) -> list[str]:
    """Command line running ``script --subject NAME ...`` under this interpreter."""
    return [sys.executable, str(script), "--subject", subject, *args]


def report_op(seconds: float, **extra: object) -> None:
    """Child side: print the operation time (and facts) as the last stdout line."""
    print(json.dumps({"seconds": seconds, **extra}), flush=True)


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak RSS of a process (this one by default) so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Row:
    """One line of the result table: our subject against its anchor, with the goal."""

    group: str
    subject: str
    ours: float | None
    anchor: float | None
    unit: str
    ratio: float | None
    goal: str
    status: str
    note: str = ""


def ratio_row(group: str, subject: str, ours: float, anchor: float | None, unit: str,
              goal_max: float | None = None, goal_min: float | None = None,
              note: str = "") -> Row:
    """A row with ratio = ours / anchor and PASS/MISS against a max or min goal on the ratio."""
    ratio = ours / anchor if anchor else None
    if goal_max is not None:
        goal = f"<= {goal_max:g}x"
        ok = ratio is not None and ratio <= goal_max
    else:
        goal = f">= {goal_min:g}x"
        ok = ratio is not None and goal_min is not None and ratio >= goal_min
    status = "PASS" if ok else ("MISS" if ratio is not None else "n/a")
    return Row(group, subject, ours, anchor, unit, ratio, goal, status, note)


def limit_row(group: str, subject: str, value: float, unit: str, *, limit_max: float | None = None,
              limit_min: float | None = None, note: str = "") -> Row:
    """A row with an absolute goal (``value < limit_max`` or ``value >= limit_min``)."""
    if limit_max is not None:
        goal, ok = f"< {limit_max:g} {unit}", value < limit_max
    else:
        goal, ok = f">= {limit_min:g} {unit}", limit_min is not None and value >= limit_min
    return Row(group, subject, value, None, unit, None, goal, "PASS" if ok else "MISS", note)


def machine() -> dict[str, object]:
    """What the numbers were measured on (they only compare within one run)."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "loadavg_at_start": [round(x, 2) for x in load],
        "note": "shared machine (other work may run at the same time): compare ratios, "
                "not absolute numbers",
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def print_table(title: str, rows: Sequence[Row], info: dict[str, object]) -> None:
    """Print the rows (rich when available, plain text otherwise)."""
    headers = ("group", "subject", "ours", "anchor", "unit", "ratio", "goal", "result", "note")
    cells = [(r.group, r.subject, _fmt(r.ours), _fmt(r.anchor), r.unit,
              "-" if r.ratio is None else f"{r.ratio:.2f}x", r.goal, r.status, r.note)
             for r in rows]
    caption = (f"{info.get('cpus')} CPUs, load {info.get('loadavg_at_start')}; "
               f"{info.get('note')}")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}\n{caption}")
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        for line in (headers, *cells):
            print("  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title, caption=caption)
    for h in headers:
        table.add_column(h, justify="right" if h in ("ours", "anchor", "ratio") else "left")
    for c in cells:
        style = {"PASS": "green", "MISS": "red"}.get(c[7])
        table.add_row(*c[:7], f"[{style}]{c[7]}[/]" if style else c[7], c[8])
    Console(width=max(140, shutil.get_terminal_size().columns)).print(table)


def write_json(name: str, rows: Sequence[Row], info: dict[str, object],
               params: dict[str, object], out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (default ``bench/out``): machine, parameters, rows."""
    out_dir = out_dir or OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"bench": name, "machine": info, "params": params,
               "rows": [asdict(r) for r in rows],
               "misses": [f"{r.group}/{r.subject}" for r in rows if r.status == "MISS"]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot listen on port 0 and tell us)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C so that every ``finally`` cleans up."""
    raise KeyboardInterrupt


def run_main(main: Callable[[], int], name: str) -> int:
    """Run a bench's main; SIGTERM and Ctrl-C end it with one line and exit code 130."""
    import signal

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing written", file=sys.stderr)
        return 130


def have(tool: str) -> bool:
    """True when ``tool`` is on PATH (or an absolute path that exists)."""
    return shutil.which(tool) is not None or Path(tool).is_file()
