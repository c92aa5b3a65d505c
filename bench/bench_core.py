"""Benchmark of the core engine (issue "core engine"): build, sign, verify, schema, full check.

For each size (training records) it writes a CSV export, then measures each subject in a fresh
process against an anchor run in the same session on the same file:

    build   CSV -> FI (csv reader + fla.render)           peak RSS < 100 MB, flat across sizes
    sign    fla_core.signing.sign_file                    vs openssl cms -sign       <= 1.2x
    verify  fla_core.signing.verify_fs                    vs openssl cms -verify     <= 1.2x
    schema  fla.scan (no business rules)                  vs xmllint --stream        <= 1.6x
    check   fla.scan + checks.engine.evaluate (P10-P16)   vs xmllint --stream        <= 3x
    answer sign  fla_sim.answers.sign_answer (template)   vs the plain asn1crypto builder <= 0.67x

Run ``python bench/bench_core.py`` (100k and 1M records), ``--records 200000`` or ``--quick``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the bench folder is not a package: sys.path above
    Measurement,
    Row,
    best_of,
    have,
    limit_row,
    machine,
    paired_best,
    print_table,
    python_subject,
    ratio_row,
    report_op,
    run_main,
    run_measured,
    write_json,
)

NAME = "bench_core"
SCRIPT = Path(__file__).resolve()
SENDER = "123456"
QUALITY = "EMPLOYER"
ENV = "T"
YEAR = 2025
TODAY = date(2025, 12, 31)  # injected processing date: every generated declaration is valid
WORKERS_PER_DECLARATION = 100
TRAININGS_PER_WORKER = 10
RSS_LIMIT_MB = 100.0
HEADER = ("declaration_ref,action,replaced_declaration_ref,reporting_year,employer_company_id,"
          "employer_noss_nbr,inss,training_ref,provider_company_id,title,training_type,"
          "start_date,end_date,hours,during_working_time\n")


def company_id() -> str:
    """The sender's (and every declaration's employer's) enterprise number."""
    from fla_core.identifiers import make_kbo

    return make_kbo(8_972_236)


# --- data ---------------------------------------------------------------------------------------

def write_csv(path: Path, records: int) -> int:
    """Write ``records`` training rows: 100 workers x 10 trainings per declaration; returns
    the number of declarations."""
    from fla_core.identifiers import make_inss, make_kbo

    company = company_id()
    provider = make_kbo(5_669_882)
    inss = [make_inss(date(1960 + w % 40, 1 + w % 12, 1 + w % 28), 1 + w)
            for w in range(WORKERS_PER_DECLARATION)]
    trainings = []
    for t in range(TRAININGS_PER_WORKER):
        start = date(YEAR, 1 + t, 3)
        trainings.append(
            f"TR-{YEAR}-{t:03d},{provider if t % 2 else ''},Training course {t},"
            f"{'FORMAL' if t % 3 else 'INFORMAL'},{start.isoformat()},"
            f"{(start + timedelta(days=2)).isoformat()},{'21' if t % 2 else '14.50'},"
            f"{'yes' if t % 4 else 'no'}\n")
    per_declaration = WORKERS_PER_DECLARATION * TRAININGS_PER_WORKER
    declarations = 0
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        while written < records:
            declarations += 1
            head = f"D-{declarations:07d},NEW,,{YEAR},{company},042979535,"
            lines = []
            for w in range(WORKERS_PER_DECLARATION):
                for training in trainings:
                    if written == records or len(lines) == per_declaration:
                        break
                    lines.append(f"{head}{inss[w]},{training}")
                    written += 1
            out.writelines(lines)
    return declarations


def make_pki(directory: Path) -> dict[str, Path]:
    """A test CA and an RSA-2048 signer for the sender's company (fla_core.pki), as PEM."""
    from fla_core import pki

    at = datetime.now(UTC) - timedelta(days=1)
    ca = pki.make_ca("bench CA", not_before=at)
    signer = pki.issue_signer(ca, company_id=company_id(), not_before=at)
    paths = {"ca": directory / "ca.pem", "cert": directory / "signer.pem",
             "key": directory / "signer-key.pem"}
    pki.write_pem(paths["ca"], ca.cert)
    pki.write_pem(paths["cert"], signer.cert)
    pki.write_pem(paths["key"], signer.key)
    return paths


# --- subjects (run in the child process) ---------------------------------------------------------

def _plugins():  # type: ignore[no-untyped-def]
    from fla_core.plugins import FlaPlugins

    return FlaPlugins(entry_points=False)  # built-ins only: what is installed must not matter


def subject_build(csv: Path, fi: Path) -> None:
    """CSV export -> FI with the csv reader plugin and the streaming FLA renderer."""
    from fla_core.applications import fla
    from fla_core.formats import ReadContext
    from fla_core.model import Quality, Sender

    plugins = _plugins()
    start = time.perf_counter()
    context = ReadContext(sender=Sender(SENDER, Quality(QUALITY), company_id()), environment=ENV,
                          file_reference="BENCH-CORE", creation="2025-12-31T10:00:00")
    content = plugins.read_declarations(csv, "csv", context)
    with fi.open("wb") as out:
        fla.render(content, out)
    report_op(time.perf_counter() - start, problems=len(context.problems))


def subject_sign(fi: Path, key: Path, cert: Path, fs: Path) -> None:
    """Detached CMS signature of the FI, streamed digest; the DER is written to ``fs``."""
    from fla_core.signing import load_signer, sign_file

    signer = load_signer(key, cert)
    start = time.perf_counter()
    der = sign_file(fi, signer)
    fs.write_bytes(der)
    report_op(time.perf_counter() - start)


def subject_verify(fi: Path, fs: Path, ca: Path) -> None:
    """S1-S11 on the FI and its signature, trusting the bench CA."""
    from fla_core.pki import load_certificate
    from fla_core.signing import TrustStore, encode_fs, verify_fs

    trust = TrustStore(anchors=[load_certificate(ca)])
    encoded = encode_fs(fs.read_bytes())
    start = time.perf_counter()
    result = verify_fs(fi, encoded, trust=trust, at=datetime.now(UTC),
                       sender_company=company_id())
    report_op(time.perf_counter() - start, digest=result.digest_algorithm)


def _expect():  # type: ignore[no-untyped-def]
    from fla_core.applications.fla import HeaderExpectation

    return HeaderExpectation(SENDER, ENV, QUALITY, company_id())


def subject_schema(fi: Path) -> None:
    """P10-P15 in one streaming pass, no business rules."""
    from fla_core.applications import fla

    start = time.perf_counter()
    result = fla.scan([fi], expect=_expect(), max_declarations=10_000)
    report_op(time.perf_counter() - start, declarations=result.declarations)


def subject_check(fi: Path) -> None:
    """P10-P16: the scan with every business rule evaluated per declaration (as judge_set)."""
    from fla_core.applications import fla
    from fla_core.checks.context import CheckContext
    from fla_core.checks.engine import evaluate
    from fla_core.model import Quality, Sender

    plugins = _plugins()
    context = CheckContext(sender=Sender(SENDER, Quality(QUALITY), company_id()),
                           environment=ENV, processing_date=TODAY, application="FLAC")
    rejected = anomalies = 0

    def on_declaration(declaration, position):  # type: ignore[no-untyped-def]
        nonlocal rejected, anomalies
        verdict = evaluate(declaration, position, context, plugins)
        rejected += not verdict.accepted
        anomalies += len(verdict.anomalies)

    start = time.perf_counter()
    result = fla.scan([fi], expect=_expect(), max_declarations=10_000,
                      on_declaration=on_declaration)
    report_op(time.perf_counter() - start, declarations=result.declarations, rejected=rejected,
              anomalies=anomalies)


ANSWER_KEY_TYPES = ("ec-p256", "rsa2048")  # the simulator's own key, and the usual other one


def subject_answer_sign(quick: bool) -> None:
    """Answer signatures: the hand-built template against the plain asn1crypto builder.

    Both sign the same ACRF with the same signer in this process, interleaved, timeit-style
    (best of 5 repeats); what is kept is the time of one signature each way.
    """
    import timeit

    from fla_core import pki
    from fla_core.responses import make_ticket, render_acrf
    from fla_core.signing import Signer
    from fla_sim.answers import sign_answer, sign_answer_plain

    at = datetime.now(UTC)
    data = render_acrf(file_name=f"FI.FLAC.{SENDER}.20251231.00001.{ENV}.1.1",
                       ticket=make_ticket(at.date(), 1), accepted=True, error_code=None,
                       description=None, at=at)
    ca = pki.make_ca("bench answers CA", not_before=at - timedelta(days=1))
    number = 50 if quick else 500
    times: dict[str, dict[str, float]] = {}
    for key_type in ANSWER_KEY_TYPES:
        ck = pki.issue_simulator_signer(ca, not_before=at - timedelta(days=1),
                                        key_type=key_type)  # type: ignore[arg-type]
        signer = Signer(ck.key, ck.cert, (ca.cert,))
        sign_answer(data, signer, at)  # builds and self-checks the template once
        fast: list[float] = []
        plain: list[float] = []
        for _ in range(5):
            fast.append(timeit.timeit(lambda s=signer: sign_answer(data, s, at),
                                      number=number) / number)
            plain.append(timeit.timeit(lambda s=signer: sign_answer_plain(data, s, at),
                                       number=number) / number)
        times[key_type] = {"template": min(fast), "plain": min(plain)}
    report_op(sum(t["template"] for t in times.values()), answer_bytes=len(data), times=times)


def run_subject(args: argparse.Namespace) -> None:
    """Child entry point: ``--subject NAME FILE...``."""
    if args.subject == "answer-sign":
        subject_answer_sign(args.quick)
        return
    paths = [Path(p) for p in args.paths]
    {"build": subject_build, "sign": subject_sign, "verify": subject_verify,
     "schema": subject_schema, "check": subject_check}[args.subject](*paths)


# --- parent --------------------------------------------------------------------------------------

def ours(subject: str, *paths: Path) -> Measurement:
    """Measure one of our subjects in a fresh interpreter."""
    return run_measured(python_subject(SCRIPT, subject, [str(p) for p in paths]))


def bench_size(records: int, work: Path, runs: int) -> tuple[list[Row], dict[str, object]]:
    """Every subject and anchor for one size; rows plus raw numbers for the JSON."""
    label = f"{records:,} rec"
    csv, fi, fs, fs_ssl = (work / "export.csv", work / "FI.bin", work / "FS.der",
                           work / "FS-openssl.der")
    started = time.perf_counter()
    declarations = write_csv(csv, records)
    print(f"[{label}] CSV {csv.stat().st_size / 1e6:.0f} MB, {declarations} declarations "
          f"({time.perf_counter() - started:.1f} s to write)", flush=True)
    pki = make_pki(work)
    rows: list[Row] = []
    raw: dict[str, object] = {"records": records, "declarations": declarations,
                              "csv_bytes": csv.stat().st_size}

    build = best_of(lambda: ours("build", csv, fi), runs)
    raw["fi_bytes"] = fi.stat().st_size
    raw["build"] = build.__dict__
    if build.extra.get("problems"):
        print(f"[{label}] WARNING: the reader reported {build.extra['problems']} input problems",
              flush=True)
    print(f"[{label}] build {build.seconds:.2f} s, FI {fi.stat().st_size / 1e6:.0f} MB, "
          f"{build.rss_mb:.0f} MB RSS", flush=True)
    rows.append(limit_row(label, "build RSS", build.rss_mb, "MB", limit_max=RSS_LIMIT_MB,
                          note=f"{build.seconds:.2f} s, {records / build.seconds:,.0f} rec/s"))

    sign, ssl_sign = paired_best(
        lambda: ours("sign", fi, pki["key"], pki["cert"], fs),
        lambda: run_measured(
            ["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER",
             "-nosmimecap", "-signer", str(pki["cert"]), "-inkey", str(pki["key"]),
             "-in", str(fi), "-out", str(fs_ssl)]), runs)
    rows.append(ratio_row(label, "sign", sign.seconds, ssl_sign.seconds, "s", goal_max=1.2,
                          note="vs openssl cms -sign"))
    rows.append(limit_row(label, "sign RSS", sign.rss_mb, "MB", limit_max=RSS_LIMIT_MB))

    verify, ssl_verify = paired_best(
        lambda: ours("verify", fi, fs, pki["ca"]),
        lambda: run_measured(
            ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(fs),
             "-content", str(fi), "-CAfile", str(pki["ca"]), "-purpose", "any",
             "-out", "/dev/null"]), runs)
    rows.append(ratio_row(label, "verify", verify.seconds, ssl_verify.seconds, "s",
                          goal_max=1.2, note="vs openssl cms -verify (same FS)"))
    rows.append(limit_row(label, "verify RSS", verify.rss_mb, "MB", limit_max=RSS_LIMIT_MB))

    from fla_core.applications.fla import SCHEMA

    def lint() -> Measurement:
        return run_measured(["xmllint", "--noout", "--stream", "--schema", str(SCHEMA), str(fi)])

    xmllint = xmllint2 = None
    if have("xmllint"):
        schema, xmllint = paired_best(lambda: ours("schema", fi), lint, runs)
        check, xmllint2 = paired_best(lambda: ours("check", fi), lint, runs)
    else:
        print("xmllint is missing: apt-get install libxml2-utils; schema anchors skipped")
        schema = best_of(lambda: ours("schema", fi), runs)
        check = best_of(lambda: ours("check", fi), runs)
    anchor = xmllint.seconds if xmllint else None
    anchor2 = xmllint2.seconds if xmllint2 else None
    rows.append(ratio_row(label, "schema", schema.seconds, anchor, "s", goal_max=1.6,
                          note="vs xmllint --stream --schema"))
    rows.append(ratio_row(label, "check", check.seconds, anchor2, "s", goal_max=3.0,
                          note=f"rules on {check.extra.get('declarations')} decl, "
                               f"{check.extra.get('rejected')} rejected"))
    rows.append(limit_row(label, "check RSS", check.rss_mb, "MB", limit_max=RSS_LIMIT_MB,
                          note=f"schema-only scan {schema.rss_mb:.0f} MB"))
    raw.update({name: m.__dict__ for name, m in (
        ("sign", sign), ("openssl_sign", ssl_sign), ("verify", verify),
        ("openssl_verify", ssl_verify), ("schema", schema), ("check", check),
        ("xmllint", xmllint), ("xmllint_check_round", xmllint2)) if m is not None})
    if check.extra.get("rejected"):
        print(f"[{label}] WARNING: {check.extra['rejected']} declarations rejected; the "
              "generated data should all be valid", flush=True)
    return rows, raw


def answer_sign_rows(quick: bool) -> tuple[list[Row], dict[str, object]]:
    """The answer-signature shortcut against the plain way, one row per key type.

    Goal: the template at most 0.67x the plain builder's time (1.5x faster), or it goes.
    """
    cmd = python_subject(SCRIPT, "answer-sign", [])
    measured = run_measured([*cmd, "--quick"] if quick else cmd)
    times: dict[str, dict[str, float]] = measured.extra["times"]  # type: ignore[assignment]
    rows = []
    for key_type in ANSWER_KEY_TYPES:
        rows.append(ratio_row("answers", f"answer sign {key_type}",
                              times[key_type]["template"] * 1e6, times[key_type]["plain"] * 1e6,
                              "us", goal_max=0.67,
                              note=f"template vs asn1crypto builder, "
                                   f"{measured.extra['answer_bytes']} B ACRF"))
    return rows, measured.__dict__


def flat_rows(raws: list[dict[str, object]]) -> list[Row]:
    """RSS flat across sizes: the largest size's peak within 10 MB + 10 % of the smallest's."""
    rows: list[Row] = []
    small, large = raws[0], raws[-1]
    for subject in ("build", "sign", "verify", "check"):
        a = small[subject]["rss_mb"]  # type: ignore[index]
        b = large[subject]["rss_mb"]  # type: ignore[index]
        limit = a * 1.1 + 10
        rows.append(Row("RSS flat", subject, b, a, "MB", b / a, f"<= {limit:.0f} MB",
                        "PASS" if b <= limit else "MISS",
                        f"{large['records']:,} vs {small['records']:,} records"))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the bench (and of its child subjects)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, action="append",
                        help="training records per run (repeatable; default 100000 and 1000000)")
    parser.add_argument("--size", dest="records_alias", type=int, action="append",
                        help="alias of --records")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (2000 and 3000 records), one run each: keeps the script "
                             "from rotting")
    parser.add_argument("--runs", type=int, default=3, help="runs of short subjects (best kept)")
    parser.add_argument("--workdir", type=Path, help="keep the generated files here")
    parser.add_argument("--out", type=Path, help="folder of the JSON result (bench/out)")
    parser.add_argument("--subject", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.records = (args.records or []) + (args.records_alias or [])
    if not args.records:
        args.records = [2000, 3000] if args.quick else [100_000, 1_000_000]
    if args.quick:
        args.runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every size, print the table, write bench/out/bench_core.json."""
    args = parse_args(argv)
    if args.subject:
        run_subject(args)
        return 0
    if not have("openssl"):
        print("openssl is missing (apt-get install openssl): the signature anchors need it",
              file=sys.stderr)
        return 2
    info = machine()
    rows: list[Row] = []
    raws: list[dict[str, object]] = []
    base = args.workdir or Path(tempfile.mkdtemp(prefix="fla-bench-core-"))
    try:
        for records in sorted(set(args.records)):
            work = base / f"r{records}"
            work.mkdir(parents=True, exist_ok=True)
            size_rows, raw = bench_size(records, work, args.runs)
            rows += size_rows
            raws.append(raw)
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)  # a 1M-record FI is ~0.5 GB
        if len(raws) > 1:
            rows += flat_rows(raws)
        answer_rows, answer_raw = answer_sign_rows(args.quick)
        rows += answer_rows
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    print_table("FLA core engine (ours vs anchors measured in this run)", rows, info)
    path = write_json(NAME, rows, info, {"records": args.records, "runs": args.runs,
                                         "sizes": raws, "answer_sign": answer_raw}, args.out)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, NAME))
