"""Benchmark of a hostile sender (issue 11, items 5 and 6) on loopback.

    (a) peak RSS on the worst shapes of FI we could build (attributes at and far over
        ``max_attributes``, a prolog just under ``max_prolog_size`` and one that never ends, deep
        nesting, one huge text node, a file of ``<``, very long names, many declarations), at
        several sizes: ``fla check`` (a fresh process) and the simulator (a fresh process per FI,
        its judge worker and pre-scan followers included, their peaks summed); the peak at the
        largest size against the peak at the smallest       goal <= 1.1x + 10 MB (flat)
    (b) p99 GO->ACRF of a normal sender alone, then while another channel sends the costliest
        sets it can (the largest legal FI with an FS carrying the most certificates allowed,
        and bombs that must be refused cheaply)                  goal p99 under attack <= 2x

Run ``python bench/bench_hostile.py`` (1, 4, 16 MiB; 300 sets per latency run) or ``--quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the bench folder is not a package: sys.path above
    OUT_DIR,
    Measurement,
    Row,
    machine,
    peak_rss_mb,
    print_table,
    run_main,
    write_json,
)
from bench_channel import (
    DOWN,
    UP,
    AnswerWatcher,
    Channel,
    Sender,
    Setup,
    SimProcess,
    connect,
    fi_name,
    make_setup,
    percentile,
    render_fi,
    send_one,
    today,
    wait_answer,
)

NAME = "bench_hostile"
SCRIPT = Path(__file__).resolve()
MIB = 1 << 20
ANSWER_TIMEOUT_S = 300.0  # a shape that takes longer than this is a finding, not a wait
FLAT_FACTOR, FLAT_MB = 1.1, 10.0  # bench_core's "RSS flat" goal
P99_FACTOR = 2.0
ATTACK_WINDOW = 2  # attacker sets uploaded and not yet answered: one judged while one uploads
CERT_BOMB = 13_000  # certificates in the refused FS (the 6.7 MB FS)


# --- (a) the shapes -------------------------------------------------------------------------------

def _frame(channel: Channel, day: date) -> tuple[bytes, bytes, bytes]:
    """(head up to the first declaration, one declaration with ``@REF@``, tail) of a valid FI."""
    template = render_fi(channel, day, 1, None, ref="HOSTILE")
    start = template.index(b"<Declaration>")
    end = template.rindex(b"</Declaration>") + len(b"</Declaration>")
    return template[:start], template[start:end], template[end:]


def _fill(out: object, size: int, unit: bytes, written: int) -> int:
    """Write ``unit`` repeatedly (in 1 MiB writes) until ``size`` bytes are written."""
    chunk = unit * max(1, MIB // len(unit))
    while written + len(chunk) <= size:
        out.write(chunk)  # type: ignore[attr-defined]
        written += len(chunk)
    while written + len(unit) <= size:
        out.write(unit)  # type: ignore[attr-defined]
        written += len(unit)
    return written


def _declarations(out: object, block: bytes, size: int, written: int, limit: int,
                  prefix: str) -> int:
    """Declarations under fresh references until ``size`` bytes or ``limit`` declarations."""
    count = 0
    while written + len(block) + 16 < size and count < limit:
        piece = block.replace(b"@REF@", f"D-{prefix}-{count:06d}".encode()) + b"\n"
        out.write(piece)  # type: ignore[attr-defined]
        written += len(piece)
        count += 1
    return written


def write_shape(path: Path, shape: str, size: int, channel: Channel, day: date,
                max_attributes: int, max_prolog: int, max_declarations: int) -> None:
    """Write an FI of about ``size`` bytes in ``shape`` (see ``SHAPES``) for ``channel``."""
    head, block, tail = _frame(channel, day)
    xml_decl = head[:head.index(b"?>") + 2] + b"\n"
    body = head[len(xml_decl):]
    with path.open("wb") as out:
        if shape == "declarations":
            written = out.write(head)
            written = _declarations(out, block, size - len(tail), written, max_declarations,
                                    "MANY")
            out.write(tail)
        elif shape == "attrs-at-cap":  # every element carries exactly max_attributes
            element = (b"<Declaration" + b"".join(b' a%d="1"' % i for i in range(max_attributes))
                       + b"/>\n")
            written = _fill(out, size - len(tail), element, out.write(head))
            out.write(tail)
        elif shape == "attrs-over-cap":  # one element with every attribute the file can hold
            written = out.write(head + b"<Declaration")
            n = 0
            while written < size - 16:
                written += out.write(b' a%d="1"' % n)
                n += 1
            out.write(b"/>" + tail)
        elif shape == "prolog-at-cap":  # a comment filling the prolog to just under its cap
            comment = min(max_prolog - len(body) - 1024, size // 2)
            out.write(xml_decl + b"<!--" + b"x" * comment + b"-->\n")
            written = out.write(body) + len(xml_decl) + comment + 8
            _declarations(out, block, size - len(tail), written, max_declarations, "PRO")
            out.write(tail)
        elif shape == "prolog-endless":  # a comment that never ends: no root element ever
            _fill(out, size, b"x", out.write(xml_decl + b"<!--"))
        elif shape == "deep":
            _fill(out, size, b"<Worker>", out.write(head + b"<Declaration>"))
        elif shape == "one-text-node":
            written = out.write(head + b"<Declaration><DeclarationRef>")
            closing = b"</DeclarationRef></Declaration>" + tail
            _fill(out, size - len(closing), b"x", written)
            out.write(closing)
        elif shape == "lt-only":
            _fill(out, size, b"<", 0)
        elif shape == "long-name":
            written = out.write(head + b"<")
            _fill(out, size - len(tail) - 2, b"N", written)
            out.write(b"/>" + tail)
        else:
            raise ValueError(f"unknown shape {shape!r}")


SHAPES = ("declarations", "attrs-at-cap", "attrs-over-cap", "prolog-at-cap", "prolog-endless",
          "deep", "one-text-node", "lt-only", "long-name")
QUICK_SHAPES = ("attrs-over-cap", "declarations")


@dataclass
class Shaped:
    """An FI in one shape and size, its FS, and where they sit."""

    shape: str
    size: int
    fi: Path
    fs: Path


def make_shaped(work: Path, setup: Setup, shape: str, size: int, seq: int) -> Shaped:
    """Write the FI of ``shape`` at ``size`` and sign it (FS) for the attacker's channel."""
    from fla_core.settings import Settings
    from fla_core.signing import encode_fs, sign_file

    ch = setup.big
    day = today()
    limits = Settings()
    fi = work / fi_name("FI", ch.sender, day, seq)
    write_shape(fi, shape, size, ch, day, limits.max_attributes, limits.max_prolog_size,
                limits.max_declarations)
    fs = work / fi_name("FS", ch.sender, day, seq)
    fs.write_bytes(encode_fs(sign_file(fi, ch.signer)))
    return Shaped(shape, fi.stat().st_size, fi, fs)


# The measured commands are started by this small process, never by the bench itself: Python
# starts a child with vfork, and at exec the child's peak RSS (ru_maxrss) takes the peak of the
# memory it was started from (a /bin/true started by a process that once held 300 MB reports
# 310 MB). The launcher is a bare interpreter with a fresh address space of ~10 MB.
LAUNCHER = r"""
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    cmd, timeout = json.loads(line)
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:  # wait4 of this child only: its own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode(errors="replace")
    print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, wall, text]),
          flush=True)
"""


class Launcher:
    """A process of its own that runs commands and reports their exit code and peak RSS."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, cmd: list[str], timeout: float) -> tuple[Measurement, int, str]:
        """Run ``cmd`` whatever its exit code: (wall/RSS, code, output)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([cmd, timeout]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the launcher ended (exit {self.proc.poll()})")
        code, rss, wall, text = json.loads(line)
        return Measurement(wall, wall, rss), int(code), str(text)

    def close(self) -> None:
        """End the launcher (it ends when its input does)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_launcher: Launcher | None = None


def run_any(cmd: list[str], timeout: float) -> tuple[Measurement, int, str]:
    """Run ``cmd`` as a fresh process from the launcher: (wall/RSS, code, output)."""
    global _launcher
    if _launcher is None or _launcher.proc.poll() is not None:
        _launcher = Launcher()
    return _launcher.run(cmd, timeout)


def fla_check(setup: Setup, shaped: Shaped) -> tuple[float, str]:
    """Peak RSS (MB) of ``fla check --json FI FS`` in a fresh process, and its outcome."""
    fla = str(Path(sys.executable).with_name("fla"))
    ch = setup.big
    measured, code, text = run_any(
        [fla, "check", "--json", "--quality", "employer", "--company", ch.company,
         "--sender", ch.sender, "--trust", str(setup.ca), str(shaped.fi), str(shaped.fs)],
        ANSWER_TIMEOUT_S)
    outcome = f"exit {code}"
    try:
        items = json.loads(text)
        first = items[0]
        outcome += f" ({first['code']}, {len(items)} item{'s' if len(items) != 1 else ''})"
    except (ValueError, LookupError, TypeError):
        outcome += ": " + " ".join(text.split())[-160:]
    return measured.rss_mb, outcome


class TreePeaks:
    """The kernel's peak RSS (VmHWM) of a process and of every child it had, sampled every
    10 ms: a child's VmHWM is read while it lives, so its peak is kept even if it ends later."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.read()

    def read(self) -> None:
        """Read every living process's VmHWM once."""
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except Exception:  # the simulator ended
            return
        for proc in procs:
            with contextlib.suppress(Exception):  # a child that ended meanwhile
                peak = peak_rss_mb(proc.pid)  # 0 for a zombie: it has no memory left to read
                if peak > 0:
                    self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0.0), peak)

    def stop(self) -> tuple[float, float, list[float]]:
        """(peak of the simulator process, sum of every process's peak, each helper's peak)."""
        self.read()
        self._stop.set()
        self._thread.join(5)
        own = self.peaks.get(self.root.pid, 0.0)
        helpers = sorted((round(mb, 1) for pid, mb in self.peaks.items() if pid != self.root.pid),
                         reverse=True)
        return own, sum(self.peaks.values()), helpers


async def _upload(port: int, key: Path, user: str, files: list[tuple[str, bytes]]) -> None:
    import asyncssh

    async with asyncssh.connect("127.0.0.1", port, username=user, client_keys=[str(key)],
                                known_hosts=None) as conn, conn.start_sftp_client() as sftp:
        for name, data in files:
            async with sftp.open(f"{UP}/{name}", "wb") as f:
                await f.write(data)


def answer_outcome(setup: Setup, before: set[str]) -> str:
    """Wait for the attacker channel's next ACRF (and NOTI when positive): its code."""
    from fla_core.responses import Acrf, parse_answer

    out = setup.big.root / DOWN
    acrf_go = wait_answer(out, "ACRF", before, ANSWER_TIMEOUT_S)
    acrf = parse_answer((out / ("FO" + acrf_go[2:])).read_bytes())
    if not isinstance(acrf, Acrf):
        return "?"
    if acrf.result_code != 1:
        return f"ACRF {acrf.error_code}"
    wait_answer(out, "NOTI", before, ANSWER_TIMEOUT_S)
    return "ACRF 1 + NOTI"


def simulator_peak(setup: Setup, shaped: Shaped, seq: int
                   ) -> tuple[float, float, list[float], str]:
    """A fresh simulator judges the shaped set: (its own peak, peaks summed over it and its
    helpers, each helper's peak, outcome) in MB."""
    ch = setup.big
    day = today()
    sim = SimProcess(setup.home, setup.work / f"simulator-{seq}.log")
    peaks = TreePeaks(sim.proc.pid)
    try:
        before = set(os.listdir(ch.root / DOWN))
        files = [(fi_name("FI", ch.sender, day, seq), shaped.fi.read_bytes()),
                 (fi_name("FS", ch.sender, day, seq), shaped.fs.read_bytes()),
                 (fi_name("GO", ch.sender, day, seq), b"")]
        asyncio.run(_upload(sim.port, setup.ssh_key, ch.user, files))
        try:
            outcome = answer_outcome(setup, before)
        except TimeoutError as exc:
            outcome = f"NO ANSWER: {exc}"
    finally:
        own, summed, helpers = peaks.stop()
        sim.stop()
    return own, summed, helpers, outcome


def same_processes(points: list[tuple[int, list[float], str]]) -> list[tuple[int, float, str]]:
    """Each size's peaks summed over as many processes as the size with the fewest: a helper
    that ended before it was sampled (a quick refusal) must not read as growth elsewhere."""
    k = min(len([mb for mb in peaks if mb > 0]) for _, peaks, _ in points)
    return [(size, sum(sorted(peaks, reverse=True)[:k]), outcome)
            for size, peaks, outcome in points]


def flat_row(subject: str, points: list[tuple[int, float, str]], note: str = "") -> Row:
    """RSS at the largest size against the smallest (goal: flat), slope and outcomes noted."""
    (s_small, r_small, _), (s_large, r_large, outcome) = points[0], points[-1]
    limit = FLAT_FACTOR * r_small + FLAT_MB
    slope = (r_large - r_small) / max((s_large - s_small) / MIB, 1e-9)
    sizes = ", ".join(f"{s / MIB:.3g} MiB {r:.0f}" for s, r, _ in points)
    status = "PASS" if r_large <= limit and "NO ANSWER" not in outcome else "MISS"
    return Row("(a) RSS flat", subject, r_large, r_small, "MB", r_large / r_small,
               f"<= {FLAT_FACTOR:g}x + {FLAT_MB:g} MB", status,
               f"{sizes} MB; {slope:+.2f} MB per MiB; {r_large / (s_large / MIB):.1f} MB per "
               f"MiB of FI at the largest; {outcome}{note}")


def rss_part(setup: Setup, shapes: list[str], sizes: list[int], raw: dict[str, object]
             ) -> list[Row]:
    """(a): every shape at every size, ``fla check`` then the simulator."""
    from fla_core.settings import Settings
    from fla_sim.config import SimulatorHome

    # over max_file_size a set is answered 184 unread: that measures nothing of the shape
    sizes = sorted({min(size, Settings().max_file_size - 64 * 1024) for size in sizes})

    rows: list[Row] = []
    work = setup.work / "shapes"
    work.mkdir()
    seq = 100
    # every size read by the same processes: with the default threshold (8 MiB) the largest
    # FIs alone would bring two pre-scan followers, a step that is no growth with the size
    home = SimulatorHome(setup.home)
    config = home.load()
    default_prescan = config.prescan_min_bytes
    config.prescan_min_bytes = max(1, min(sizes) // 2)
    home.save(config)
    results: dict[str, object] = {}
    for shape in shapes:
        check: list[tuple[int, float, str]] = []
        sim: list[tuple[int, list[float], str]] = []
        detail = []
        for size in sizes:
            seq += 1
            shaped = make_shaped(work, setup, shape, size, seq)
            rss, outcome = fla_check(setup, shaped)
            check.append((shaped.size, rss, outcome))
            own, summed, helpers, sim_outcome = simulator_peak(setup, shaped, seq)
            sim.append((shaped.size, [own, *helpers], sim_outcome))
            detail.append({"bytes": shaped.size, "check_rss_mb": rss, "check": outcome,
                           "sim_own_mb": own, "sim_sum_mb": summed, "sim_helpers_mb": helpers,
                           "sim": sim_outcome})
            print(f"[a] {shape:<15} {shaped.size / MIB:6.2f} MiB: fla check {rss:5.0f} MB "
                  f"({outcome}); simulator {own:.0f} MB, with {len(helpers)} helpers "
                  f"{summed:.0f} MB {helpers} ({sim_outcome})", flush=True)
            shaped.fi.unlink()
            shaped.fs.unlink()
        results[shape] = detail
        rows.append(flat_row(f"fla check: {shape}", check))
        aligned = same_processes(sim)
        rows.append(flat_row(f"simulator+helpers: {shape}", aligned,
                             f"; the {min(len([m for m in p if m > 0]) for _, p, _ in sim)} "
                             "largest peaks summed at each size"))
    raw["shapes"] = results
    raw["shapes_prescan_min_bytes"] = config.prescan_min_bytes
    config.prescan_min_bytes = default_prescan
    home.save(config)
    return rows


# --- (b) p99 under attack -------------------------------------------------------------------------

def _wide_declaration(channel: Channel, day: date, size: int) -> bytes:
    """One declaration with ``@REF@`` and enough workers to weigh ``size`` bytes at least."""
    workers = 1
    while True:
        wide = render_fi(channel, day, workers, None, ref="HOSTILE")
        piece = wide[wide.index(b"<Declaration>"):wide.rindex(b"</Declaration>") + 14]
        if len(piece) >= size or workers >= 100:
            return piece
        workers += 1


def build_attack(setup: Setup, work: Path, big: int, bomb: int, variants: int
                 ) -> list[dict[str, str]]:
    """The attacker's payloads: the largest legal FI (signed with an FS carrying the most
    certificates allowed, the extra ones named like the real CA so a path builder tries them),
    an FS with ``CERT_BOMB`` certificates, an attribute bomb and an endless prolog comment."""
    from datetime import UTC, datetime, timedelta

    from fla_core import pki
    from fla_core.settings import Settings
    from fla_core.signing import encode_fs, sign_file
    from fla_core.signing.signer import Signer

    ch = setup.big
    day = today()
    limits = Settings()
    at = datetime.now(UTC) - timedelta(days=1)
    # the same name as the real CA, other keys: each one is a candidate issuer to try
    fakes = tuple(pki.make_ca("bench channel CA", not_before=at).cert
                  for _ in range(limits.max_fs_certificates - 1))
    base: Signer = ch.signer
    heavy = Signer(base.key, base.cert, fakes)
    bomb_signer = Signer(base.key, base.cert, (fakes[0],) * (CERT_BOMB - 1))
    payloads: list[dict[str, str]] = []

    def add(kind: str, fi: Path, signer: Signer) -> None:
        fs = fi.with_suffix(".FS")
        fs.write_bytes(encode_fs(sign_file(fi, signer)))
        payloads.append({"kind": kind, "fi": str(fi), "fs": str(fs)})

    head, block, tail = _frame(ch, day)
    target = min(big, limits.max_file_size - 64 * 1024)
    for v in range(variants):  # fresh references per variant
        fi = work / f"attack-largest-{v}.FI"
        with fi.open("wb") as out:
            written = out.write(head.replace(b"HOSTILE", f"HOSTILE-{v}".encode()))
            # as many declarations as allowed, each as large as it must be to fill the file
            piece = _wide_declaration(ch, day, target // limits.max_declarations)
            _declarations(out, piece, target - len(tail), written, limits.max_declarations,
                          f"V{v}")
            out.write(tail)
        add("largest legal FI, FS with max_fs_certificates", fi, heavy)
    small = work / "attack-certs.FI"
    small.write_bytes(head + block.replace(b"@REF@", b"D-CERTS-1") + tail)
    add(f"FS with {CERT_BOMB} certificates", small, bomb_signer)
    attrs = work / "attack-attrs.FI"
    write_shape(attrs, "attrs-over-cap", bomb, ch, day, limits.max_attributes,
                limits.max_prolog_size, limits.max_declarations)
    add("attribute bomb", attrs, base)
    comment = work / "attack-comment.FI"
    write_shape(comment, "prolog-endless", bomb, ch, day, limits.max_attributes,
                limits.max_prolog_size, limits.max_declarations)
    add("endless prolog comment", comment, base)
    return payloads


def attack(spec_path: Path) -> None:
    """Child entry point: send the payloads in rotation until SIGTERM, then report."""
    spec = json.loads(spec_path.read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    asyncio.run(_attack(spec, stop))


async def _attack(spec: dict[str, object], stop: threading.Event) -> None:
    import asyncssh

    from fla_core.responses import Acrf, parse_answer

    payloads: list[dict[str, str]] = spec["payloads"]  # type: ignore[assignment]
    largest = [p for p in payloads if p["kind"].startswith("largest")]
    others = [p for p in payloads if not p["kind"].startswith("largest")]
    # the costliest legal set every other time, a cheap bomb in between
    rotation = [x for pair in zip(largest * len(others), others * len(largest), strict=False)
                for x in pair] or largest
    down = Path(str(spec["down"]))
    sender = str(spec["sender"])
    day = date.fromisoformat(str(spec["day"]))
    if spec.get("mode") == "upload":
        await _upload_only(spec, largest[0], sender, day, stop)
        return
    sent: list[tuple[str, str, int]] = []  # (GO name, kind, bytes)
    earlier = set(os.listdir(down))  # answers to the sets of (a) on the same channel

    def answered() -> list[str]:
        return [n for n in os.listdir(down) if n.startswith("GO.ACRF.") and n not in earlier]

    start = time.perf_counter()
    async with asyncssh.connect("127.0.0.1", int(spec["port"]),  # type: ignore[call-overload]
                                username=spec["user"], client_keys=[spec["key"]],
                                known_hosts=None) as conn, conn.start_sftp_client() as sftp:
        seq = 0
        while not stop.is_set():
            if len(sent) - len(answered()) >= ATTACK_WINDOW:
                await asyncio.sleep(0.02)
                continue
            payload = rotation[seq % len(rotation)]
            seq += 1
            size = 0
            for prefix, key in (("FI", "fi"), ("FS", "fs")):
                data = Path(payload[key]).read_bytes()
                size += len(data)
                async with sftp.open(f"{UP}/{fi_name(prefix, sender, day, seq)}", "wb") as f:
                    await f.write(data)
            go = fi_name("GO", sender, day, seq)
            async with sftp.open(f"{UP}/{go}", "wb"):
                pass
            sent.append((go, payload["kind"], size))
            if seq == 1:
                print("STARTED", flush=True)
    stopped = time.perf_counter()
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while len(answered()) < len(sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    codes: Counter[str] = Counter()
    answered_go: Counter[str] = Counter()
    for name in sorted(os.listdir(down)):
        if name.startswith("FO.ACRF.") and "GO" + name[2:] not in earlier:
            acrf = parse_answer((down / name).read_bytes())
            if isinstance(acrf, Acrf):
                answered_go[acrf.file_name] += 1
                codes[acrf.error_code or "1"] += 1
    kinds = Counter(kind for _, kind, _ in sent)
    print(json.dumps({
        "sets_sent": len(sent), "seconds": stopped - start, "bytes_sent": sum(s for *_, s in sent),
        "kinds": dict(kinds), "codes": dict(codes),
        "lost": [go for go, _, _ in sent if answered_go[go] == 0],
        "duplicated": [go for go, n in answered_go.items() if n > 1],
        "unexpected": sorted(set(answered_go) - {go for go, _, _ in sent}),
    }), flush=True)


async def _upload_only(spec: dict[str, object], payload: dict[str, str], sender: str, day: date,
                       stop: threading.Event) -> None:
    """The largest FI uploaded again and again under one name, never a GO: what the intake
    alone (SSH, SFTP, disk) costs the others, without any judging."""
    import asyncssh

    data = Path(payload["fi"]).read_bytes()
    name = f"{UP}/{fi_name('FI', sender, day, 99999)}"
    uploads = 0
    start = time.perf_counter()
    async with asyncssh.connect("127.0.0.1", int(spec["port"]),  # type: ignore[call-overload]
                                username=spec["user"], client_keys=[spec["key"]],
                                known_hosts=None) as conn, conn.start_sftp_client() as sftp:
        while not stop.is_set():
            async with sftp.open(name, "wb") as f:
                await f.write(data)
            uploads += 1
            if uploads == 1:
                print("STARTED", flush=True)
    print(json.dumps({"uploads": uploads, "seconds": time.perf_counter() - start,
                      "bytes_sent": uploads * len(data)}), flush=True)


class Attacker:
    """The attacking channel in a process of its own: its uploads (and their encryption)
    never hold the normal sender's event loop."""

    def __init__(self, setup: Setup, port: int, payloads: list[dict[str, str]],
                 mode: str = "sets"):
        spec = setup.work / "attack.json"
        spec.write_text(json.dumps({
            "mode": mode, "port": port, "user": setup.big.user, "key": str(setup.ssh_key),
            "sender": setup.big.sender, "day": today().isoformat(),
            "down": str(setup.big.root / DOWN), "payloads": payloads}))
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), "--attack", str(spec)],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "STARTED":
            self.proc.kill()
            raise RuntimeError(f"the attacker did not start: {line!r}")

    def stop(self) -> dict[str, object]:
        """SIGTERM, then its report (it waits for the answers of the sets in flight)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=ANSWER_TIMEOUT_S + 60)
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {"error": f"exit {self.proc.returncode}"}


async def normal_sets(setup: Setup, port: int, count: int, seconds: float = 0.0
                      ) -> tuple[list[float], list[str]]:
    """The normal sender: ``count`` signed one-part sets one at a time, and more until
    ``seconds`` have passed (latencies in ms)."""
    ch = setup.small[0]
    day = today()
    watcher = AnswerWatcher([ch.root / DOWN])
    s = _senders.setdefault(ch.user, Sender(ch, render_fi(ch, day, 1, None, ref="NORMAL"), day))
    s.watcher = watcher
    try:
        await connect(s, port, setup.ssh_key)
        if s.seq == 0:
            await send_one(s)  # warm-up: first-use imports and caches in the simulator
        s.prepare(count)
        results = [await send_one(s) for _ in range(count)]
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            results.append(await send_one(s))
    finally:
        watcher.close()
        if s.conn is not None:
            s.conn.close()  # type: ignore[attr-defined]
    return ([r[0] * 1000 for r in results if r[0] is not None and r[1] is None],
            [r[1] for r in results if r[1]])


_senders: dict[str, Sender] = {}  # the normal sender keeps its numbering across both runs


def latency_part(setup: Setup, sets: int, seconds: float, big: int, bomb: int, variants: int,
                 raw: dict[str, object]) -> list[Row]:
    """(b): the normal sender alone, then under attack (``sets`` sets and ``seconds`` at least:
    a few of the attacker's costliest sets); the attacker's own throughput."""
    payloads = build_attack(setup, setup.work, big, bomb, variants)
    sim = SimProcess(setup.home, setup.work / "simulator-attack.log")
    try:
        alone, errors_alone = asyncio.run(normal_sets(setup, sim.port, sets))
        attacker = Attacker(setup, sim.port, payloads)
        try:
            attacked, errors_attacked = asyncio.run(normal_sets(setup, sim.port, sets,
                                                                seconds))
        finally:
            report = attacker.stop()
        # the same again while the other channel only uploads: the intake's share of the delay
        uploader = Attacker(setup, sim.port, payloads, mode="upload")
        try:
            intake, errors_intake = asyncio.run(normal_sets(setup, sim.port, sets, seconds))
        finally:
            intake_report = uploader.stop()
    finally:
        sim.stop()
    rows: list[Row] = []
    if not alone or not attacked:
        raise RuntimeError(f"no answered set: {errors_alone[:3]} {errors_attacked[:3]}")
    p99_alone, p99_attacked = percentile(alone, 99), percentile(attacked, 99)
    raw["latency"] = {
        "alone": {"n": len(alone), "p50_ms": statistics.median(alone), "p99_ms": p99_alone,
                  "max_ms": max(alone), "errors": errors_alone},
        "attacked": {"n": len(attacked), "p50_ms": statistics.median(attacked),
                     "p99_ms": p99_attacked, "max_ms": max(attacked), "errors": errors_attacked},
        "attacker": report,
        "upload_only": {"n": len(intake), "p50_ms": statistics.median(intake),
                        "p99_ms": percentile(intake, 99), "max_ms": max(intake),
                        "errors": errors_intake, "uploader": intake_report},
        "payloads": [{"kind": p["kind"], "fi_bytes": Path(p["fi"]).stat().st_size,
                      "fs_bytes": Path(p["fs"]).stat().st_size} for p in payloads]}
    print(f"[b] alone: p50 {statistics.median(alone):.1f} ms, p99 {p99_alone:.1f} ms; under "
          f"attack: p50 {statistics.median(attacked):.1f} ms, p99 {p99_attacked:.1f} ms; "
          f"attacker {report}; while it only uploads: p99 {percentile(intake, 99):.1f} ms "
          f"({intake_report})", flush=True)
    ratio = p99_attacked / p99_alone
    ok = ratio <= P99_FACTOR and not errors_alone and not errors_attacked
    rows.append(Row("(b) p99 under attack", "normal sender p99 GO->ACRF", p99_attacked,
                    p99_alone, "ms", ratio, f"<= {P99_FACTOR:g}x", "PASS" if ok else "MISS",
                    f"{len(attacked)} sets under attack, {len(alone)} alone; p50 "
                    f"{statistics.median(attacked):.1f} vs {statistics.median(alone):.1f} ms; "
                    f"{len(errors_alone) + len(errors_attacked)} errors"))
    p99_intake = percentile(intake, 99)
    mb_s = float(intake_report.get("bytes_sent", 0)) / 1e6 / max(  # type: ignore[arg-type]
        float(intake_report.get("seconds", 1)), 1e-9)  # type: ignore[arg-type]
    rows.append(Row("(b) p99 under attack", "p99 while the other only uploads", p99_intake,
                    p99_alone, "ms", p99_intake / p99_alone, "info", "info",
                    f"the largest FI uploaded again and again, no GO ({mb_s:.0f} MB/s): the "
                    f"share of the delay that is SSH/SFTP intake, not judging; p50 "
                    f"{statistics.median(intake):.1f} ms, {len(intake)} sets, "
                    f"{len(errors_intake)} errors"))
    seconds = float(report.get("seconds", 0) or 0)  # type: ignore[arg-type]
    sent = int(report.get("sets_sent", 0) or 0)  # type: ignore[call-overload]
    lost, dup = report.get("lost", ["?"]), report.get("duplicated", ["?"])
    rows.append(Row("(b) p99 under attack", "attacker's throughput", sent / seconds if seconds
                    else 0.0, None, "sets/s", None, "info",
                    "PASS" if not lost and not dup else "MISS",
                    f"{sent} sets, {float(report.get('bytes_sent', 0)) / 1e6:.0f} MB "  # type: ignore[arg-type]
                    f"in {seconds:.0f} s; answers {report.get('codes')}; lost {len(lost)}, "  # type: ignore[arg-type]
                    f"duplicated {len(dup)}"))  # type: ignore[arg-type]
    return rows


# --- main -----------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """``16M`` or ``256k`` (binary units: MiB, KiB) or plain bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().rstrip("ib")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the bench (and of its attacker child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", type=parse_size, dest="sizes",
                        help="FI size of (a), repeatable (default 1M, 4M, 16M)")
    parser.add_argument("--shape", action="append", dest="shapes", choices=SHAPES,
                        help="shape of (a), repeatable (default: all)")
    parser.add_argument("--records", type=int, default=None,
                        help="normal sets per latency run of (b) (default 300)")
    parser.add_argument("--attack-seconds", type=float, default=None,
                        help="the normal sender goes on under attack for this long at least "
                             "(default 60)")
    parser.add_argument("--attack-size", type=parse_size, default=None,
                        help="the attacker's largest FI (default: just under max_file_size)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run that keeps the script from rotting")
    parser.add_argument("--skip-rss", action="store_true", help="only (b)")
    parser.add_argument("--skip-latency", action="store_true", help="only (a)")
    parser.add_argument("--out", type=Path, help="folder of the JSON result (bench/out)")
    parser.add_argument("--work", type=Path, default=None, help="folder of the run's files")
    parser.add_argument("--attack", type=Path, help=argparse.SUPPRESS)
    # ./dev bench passes the same arguments to every script: accept bench_channel's too
    parser.add_argument("--duration", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    if args.sizes and len(args.sizes) == 1:  # one size (./dev bench --size X): three up to it
        args.sizes = [args.sizes[0] // 16, args.sizes[0] // 4, args.sizes[0]]
    args.sizes = sorted(args.sizes or ([MIB // 4, MIB] if args.quick
                                       else [MIB, 4 * MIB, 16 * MIB]))
    args.shapes = args.shapes or list(QUICK_SHAPES if args.quick else SHAPES)
    args.records = args.records or (8 if args.quick else 300)
    args.attack_seconds = (args.attack_seconds if args.attack_seconds is not None
                           else 0.0 if args.quick else 60.0)
    args.attack_size = args.attack_size or (MIB if args.quick else 50 * MIB)
    args.bomb_size = MIB // 2 if args.quick else 16 * MIB
    args.variants = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    """Set up a home with an attacker channel and a normal one; run (a) and (b)."""
    args = parse_args(argv)
    if args.attack:
        attack(args.attack)
        return 0
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="fla-bench-hostile-", dir=args.work))
    rows: list[Row] = []
    raw: dict[str, object] = {}
    try:
        setup = make_setup(work, 0, 1)  # max_file_size stays the default (0 asks no raise)
        if not args.skip_rss:
            rows += rss_part(setup, args.shapes, args.sizes, raw)
        if not args.skip_latency:
            rows += latency_part(setup, args.records, args.attack_seconds, args.attack_size,
                                 args.bomb_size, args.variants, raw)
    finally:
        if _launcher is not None:
            _launcher.close()
        out_dir = args.out or OUT_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        logs = sorted(work.glob("simulator-*.log"))
        with (out_dir / f"{NAME}-simulator.log").open("w") as keep:
            for log in logs:  # the simulators' own logs, kept beside the JSON
                keep.write(f"== {log.name}\n{log.read_text(errors='replace')}\n")
        shutil.rmtree(work, ignore_errors=True)
    print_table("A hostile sender: memory on the worst shapes, latency of the others", rows,
                info)
    path = write_json(NAME, rows, info, {"sizes": args.sizes, "shapes": args.shapes,
                                         "records": args.records,
                                         "attack_seconds": args.attack_seconds,
                                         "attack_size": args.attack_size,
                                         "bomb_size": args.bomb_size, "results": raw}, args.out)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, NAME))
