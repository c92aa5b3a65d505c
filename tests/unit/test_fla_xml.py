"""The FLA data file (spec 7): XSD, renderer, scan (P10-P15), read, the FLAC plugin, memory."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lxml import etree

from fla_core import fi
from fla_core.anomalies import ChannelError
from fla_core.applications import fla
from fla_core.model import Declaration, Employer, FileContent, FileHeader, Training, Worker

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fla"
VALID_PATH = FIXTURES / "valid-minimal.xml"
VALID = VALID_PATH.read_bytes()
EXPECT = fla.HeaderExpectation(sender="123456", environment="T", quality="SOCIAL_SECRETARIAT",
                               company_id="0123456749")


def scan_code(data: bytes, *, expect: fla.HeaderExpectation | None = EXPECT,
              max_declarations: int = 10_000) -> str | None:
    try:
        fla.scan(io.BytesIO(data), expect=expect, max_declarations=max_declarations)
    except ChannelError as exc:
        return exc.code
    return None


def replace(old: str, new: str, data: bytes = VALID) -> bytes:
    assert old.encode() in data, old
    return data.replace(old.encode(), new.encode(), 1)


# --- fixtures and their README -----------------------------------------------------------------

def readme_table() -> dict[str, str | None]:
    rows = {}
    for line in (FIXTURES / "README.md").read_text("utf-8").splitlines():
        m = re.match(r"\| `([^`]+\.xml)` \| (?:`(\d{3})`|accepted) \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_readme_lists_every_fixture():
    assert set(readme_table()) == {p.name for p in FIXTURES.glob("*.xml")}


@pytest.mark.parametrize(("name", "code"), sorted(readme_table().items()))
def test_each_fixture_gives_the_code_its_readme_names(name, code):
    try:
        fla.scan([FIXTURES / name], expect=EXPECT, max_declarations=10_000)
        got = None
    except ChannelError as exc:
        got = exc.code
        assert exc.detail  # a readable reason, not only a code
        if b"<!ENTITY" in (FIXTURES / name).read_bytes():
            # refused at the DOCTYPE, before any entity is declared, let alone expanded
            assert "DOCTYPE" in exc.detail
    assert got == code


# SHA-256 of the XML block of spec 7.2, taken from the team's copy of the spec on 2026-11-23
SPEC_7_2_SHA256 = "0954f30f6ef6dbd5ba6b188de5dcdf56c7c1636ffffffb9759e3020bc8f203dc"


def test_valid_minimal_is_exactly_the_example_of_spec_7_2():
    # Always against the recorded digest (a clone without the team's shared/ folder beside it
    # still notices an edited fixture); against the spec itself too where that copy is present,
    # so that a change of the spec is noticed as well.
    assert hashlib.sha256(VALID).hexdigest() == SPEC_7_2_SHA256
    root = Path(__file__).resolve().parents[2]
    spec = next((p for p in (root.parent / "shared" / "spec" / "batch-channel.md",
                             Path("/work/shared/spec/batch-channel.md")) if p.exists()), None)
    if spec is not None:
        block = re.search(r"### 7\.2.*?```xml\n(.*?)```", spec.read_text("utf-8"), re.S)
        assert block is not None
        assert VALID.decode() == block.group(1)


def test_external_entity_content_never_reaches_the_result():
    # The refusal comes before any entity is declared, so /etc/passwd is never read.
    with pytest.raises(ChannelError) as err:
        fla.scan([FIXTURES / "external-entity.xml"], expect=None, max_declarations=10,
                 on_declaration=lambda d, p: pytest.fail("no declaration may be produced"))
    assert err.value.code == "102"
    assert "root:" not in str(err.value)


# --- scan: the valid example --------------------------------------------------------------------

def test_scan_of_the_example_gives_header_count_and_models_in_order():
    seen: list[tuple[int, Declaration]] = []
    result = fla.scan([VALID_PATH], expect=EXPECT, max_declarations=10_000,
                      on_declaration=lambda d, p: seen.append((p, d)))
    assert result.declarations == 2
    assert result.header == FileHeader("123456", "SOCIAL_SECRETARIAT", "0123456749", "T",
                                       "2026-03-16T09:30:00", "ACME-2026-0001")
    assert [p for p, _ in seen] == [1, 2]
    first, second = seen[0][1], seen[1][1]
    assert (first.declaration_ref, first.action, first.reporting_year) == (
        "D-0897223670-2025-01", "NEW", "2025")
    assert first.employer == Employer("0897223670", "042979535")
    assert first.replaced_declaration_ref is None
    assert [w.inss for w in first.workers] == ["93051822361", "00012556777"]
    t1 = first.workers[0].trainings[0]
    assert (t1.training_ref, t1.provider_company_id, t1.title, t1.training_type, t1.start_date,
            t1.end_date, t1.hours, t1.during_working_time) == (
        "TR-2025-001", "0566988259", "Forklift safety refresher", "FORMAL", "2025-03-03",
        "2025-03-05", "21.00", True)
    assert str(t1.hours_decimal) == "21.00"
    t2 = first.workers[1].trainings[0]
    assert t2.provider_company_id is None and t2.hours == "3.50"
    assert first.line == 11 and t1.line == 21  # lines of the FI, for messages
    assert (second.action, second.replaced_declaration_ref, second.workers) == (
        "CANCEL", "D-0897223670-2024-07", [])
    assert second.employer == Employer("0897223670", None)


def test_scan_without_callback_builds_no_models_but_counts():
    result = fla.scan([VALID_PATH], expect=None, max_declarations=2)
    assert result.declarations == 2


# --- P14 header, P15 count, and their precedence ---------------------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("sender", "654321"), ("environment", "R"), ("quality", "EMPLOYER"),
    ("company_id", "0897223670")])
def test_each_header_field_is_compared_with_158(field, value):
    expect = fla.HeaderExpectation(**{**EXPECT.__dict__, field: value})
    with pytest.raises(ChannelError) as err:
        fla.scan([VALID_PATH], expect=expect, max_declarations=10)
    assert err.value.code == "158"
    assert value in err.value.detail


def test_no_expectation_means_no_header_check():
    assert scan_code(replace("<SenderNbr>123456", "<SenderNbr>654321"), expect=None) is None


def test_header_mismatch_stops_the_business_checks():
    calls = []
    with pytest.raises(ChannelError):
        fla.scan([FIXTURES / "header-mismatch.xml"], expect=EXPECT, max_declarations=10,
                 on_declaration=lambda d, p: calls.append(p))
    assert calls == []


def test_too_many_declarations_is_172():
    assert scan_code(VALID, max_declarations=2) is None
    with pytest.raises(ChannelError) as err:
        fla.scan(io.BytesIO(VALID), expect=EXPECT, max_declarations=1)
    assert err.value.code == "172"
    assert "2 declarations" in err.value.detail


def test_header_mismatch_outranks_too_many_declarations():
    data = replace("<SenderNbr>123456", "<SenderNbr>654321")
    assert scan_code(data, max_declarations=1) == "158"


def test_schema_error_after_the_limit_outranks_172(monkeypatch):
    monkeypatch.setattr(fi, "CHUNK", 64)
    data = replace("<ReportingYear>2024", "<ReportingYear>24")  # in the 2nd declaration
    assert scan_code(data, max_declarations=1) == "312"


def test_schema_error_outranks_header_mismatch():
    data = replace("<SenderNbr>123456", "<SenderNbr>654321",
                   replace("<Hours>3.50", "<Hours>3.5"))
    assert scan_code(data) == "312"


# --- the XSD (spec 7.3) --------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new"), [
    ("<Title>Forklift safety refresher", "<Title>" + "x" * 200),
    ("<Hours>21.00", "<Hours>9999.99"),
    ("<Hours>21.00", "<Hours>0.00"),  # a business rule (920), not a schema error
    ("<StartDate>2025-03-03", "<StartDate>2024-02-29"),
    ("<DuringWorkingTime>true", "<DuringWorkingTime>false"),
    ("<TrainingRef>TR-2025-001", "<TrainingRef>" + "A.b_c/9-" * 4 + "xyz"),  # 35 characters
    ("<FLAFile ", '<FLAFile xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                  'xsi:schemaLocation="urn:be:fgov:socialsecurity:fla:v1 fla_v1.xsd" '),
    ("<Worker>\n      <INSS>93051822361</INSS>",
     "<!-- comment -->\n<Worker><INSS>93051822361</INSS>"),
    ("<SenderQuality>SOCIAL_SECRETARIAT", "<SenderQuality>SOCIAL_SECRETARIAT"),
])
def test_schema_accepts(old, new):
    assert scan_code(replace(old, new), expect=None) is None


@pytest.mark.parametrize(("old", "new"), [
    ("<Title>Forklift safety refresher", "<Title>" + "x" * 201),
    ("<Title>Forklift safety refresher", "<Title>"),
    ("<Hours>21.00", "<Hours>10000.00"),
    ("<Hours>21.00", "<Hours>21.5"),
    ("<Hours>21.00", "<Hours>21,00"),
    ("<Hours>21.00", "<Hours>-1.00"),
    ("<Hours>21.00", "<Hours> 21.00"),
    ("<DuringWorkingTime>true", "<DuringWorkingTime>1"),
    ("<DuringWorkingTime>true", "<DuringWorkingTime>TRUE"),
    ("<StartDate>2025-03-03", "<StartDate>2025-02-29"),
    ("<StartDate>2025-03-03", "<StartDate>2025-13-01"),
    ("<StartDate>2025-03-03", "<StartDate> 2025-03-03"),
    ("<StartDate>2025-03-03", "<StartDate>2025-03-03Z"),
    ("<StartDate>2025-03-03", "<StartDate>2025-3-3"),
    ("<CreationDateTime>2026-03-16T09:30:00", "<CreationDateTime>2026-03-16T09:30:00.5"),
    ("<CreationDateTime>2026-03-16T09:30:00", "<CreationDateTime>2026-03-16T09:30:00+01:00"),
    ("<CreationDateTime>2026-03-16T09:30:00", "<CreationDateTime>2026-03-16T25:30:00"),
    ("<ReportingYear>2025", "<ReportingYear> 2025"),
    ("<ReportingYear>2025", "<ReportingYear>25"),
    ("<INSS>93051822361", "<INSS>9305182236"),
    ("<INSS>93051822361", "<INSS>93.05.18-223.61"),
    ("<SenderNbr>123456", "<SenderNbr>12345"),
    ("<SenderCompanyID>0123456749", "<SenderCompanyID>BE0123456749"),
    ("<NOSSRegistrationNbr>042979535", "<NOSSRegistrationNbr>04297953"),
    ("<SenderQuality>SOCIAL_SECRETARIAT", "<SenderQuality>social-secretariat"),
    ("<Environment>T", "<Environment>X"),
    ("<Action>NEW", "<Action>new"),
    ("<TrainingType>FORMAL", "<TrainingType>OTHER"),
    ("<TrainingRef>TR-2025-001", "<TrainingRef>" + "x" * 36),
    ("<TrainingRef>TR-2025-001", "<TrainingRef>TR 2025"),
    ("<Worker>", '<Worker status="active">'),
    ("<FLAFile ", '<FLAFile version="1" '),
    # order is fixed (xs:sequence)
    ("<Action>NEW</Action>\n    <ReportingYear>2025</ReportingYear>",
     "<ReportingYear>2025</ReportingYear>\n    <Action>NEW</Action>"),
    # a worker needs at least one training; INSS is required
    ("<INSS>00012556777</INSS>",
     "<INSS>00012556777</INSS></Worker><Worker><INSS>00012556777</INSS>"),
    ("<INSS>93051822361</INSS>", ""),
    # unknown element
    ("<Employer>", "<Extra/><Employer>"),
])
def test_schema_refuses_with_312(old, new):
    assert scan_code(replace(old, new), expect=None) == "312"


def test_a_file_needs_at_least_one_declaration():
    start = VALID.index(b"  <Declaration>")
    end = VALID.rindex(b"</Declaration>") + len(b"</Declaration>\n")
    assert scan_code(VALID[:start] + VALID[end:], expect=None) == "312"


def test_wrong_root_name_in_the_right_namespace_is_312():
    data = VALID.replace(b"<FLAFile ", b"<FLAFiles ").replace(b"</FLAFile>", b"</FLAFiles>")
    assert scan_code(data) == "312"


@pytest.mark.interop
@pytest.mark.parametrize(("name", "code"), sorted(
    (name, code) for name, code in readme_table().items() if code in (None, "312", "158")))
def test_xmllint_agrees_on_schema_validity(name, code):
    """xmllint is an independent oracle for P13 on the files that reach P13."""
    if shutil.which("xmllint") is None:
        pytest.skip("xmllint is not installed (apt-get install libxml2-utils)")
    run = subprocess.run(["xmllint", "--noout", "--nonet", "--stream", "--schema",
                          str(fla.SCHEMA), str(FIXTURES / name)], capture_output=True)
    assert (run.returncode == 0) == (code != "312")


# --- render and read -----------------------------------------------------------------------------

def test_render_of_the_read_example_is_byte_identical():
    out = io.BytesIO()
    fla.render(fla.read([VALID_PATH]), out)
    assert out.getvalue() == VALID


def test_render_writes_utf8_with_a_declaration_and_one_default_namespace():
    source = replace("Forklift safety refresher", "Sécurité &amp; &lt;chariot&gt;")
    first = next(iter(fla.read(io.BytesIO(source))))
    assert first.workers[0].trainings[0].title == "Sécurité & <chariot>"
    content = fla.read(io.BytesIO(source))
    out = io.BytesIO()
    fla.render(content, out)
    data = out.getvalue()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert "Sécurité &amp; &lt;chariot&gt;".encode() in data
    assert data.count(b"xmlns") == 1
    assert scan_code(data) is None


def test_read_is_lazy():
    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size=-1):
            chunk = super().read(size)
            Counting.consumed += len(chunk)
            return chunk

    data = replace("</FLAFile>", "<!--" + "x" * 3_000_000 + "--></FLAFile>")
    content = fla.read(Counting(data))
    assert content.header.sender_nbr == "123456"
    assert Counting.consumed < len(data) / 2  # the header came before reading everything
    assert [d.declaration_ref for d in content] == ["D-0897223670-2025-01",
                                                    "D-0897223670-2025-02"]


def test_read_refuses_unsafe_files_like_scan():
    with pytest.raises(ChannelError) as err:
        fla.read([FIXTURES / "billion-laughs.xml"])
    assert err.value.code == "102"
    with pytest.raises(ChannelError) as err:
        fla.read([FIXTURES / "wrong-namespace.xml"])
    assert err.value.code == "139"


def test_render_reports_text_that_xml_cannot_carry():
    content = fla.read([VALID_PATH])
    decls = list(content)
    decls[1].declaration_ref = "bad\x01ref"
    with pytest.raises(ValueError, match="declaration 2"):
        fla.render(FileContent(content.header, decls), io.BytesIO())


def test_render_of_a_generator_round_trips(tmp_path):
    header = FileHeader("123456", "EMPLOYER", "0123456749", "R", "2026-01-02T03:04:05", "X-1")

    def declarations():
        for i in range(50):
            yield Declaration(f"D-{i}", "NEW", "2025", Employer("0123456749"),
                              workers=[Worker("93051822361", [Training(
                                  f"T{i}", "Title", "FORMAL", "2025-01-01", "2025-01-01",
                                  "1.00", False)])])

    path = tmp_path / "fi.xml"
    with path.open("wb") as out:
        fla.render(FileContent(header, declarations()), out)
    seen = []
    result = fla.scan([path], expect=fla.HeaderExpectation("123456", "R", "EMPLOYER",
                                                           "0123456749"),
                      max_declarations=50, on_declaration=lambda d, p: seen.append(d))
    assert result.declarations == 50
    assert seen[49].workers[0].trainings[0].during_working_time is False
    assert seen[49].declaration_ref == "D-49"


# --- the application plugin ---------------------------------------------------------------------

def test_builtin_plugin_declares_flac():
    from fla_core.plugins import FlaPlugins

    plugins = FlaPlugins(builtins=("fla_core.applications.builtin",), entry_points=False)
    [app] = plugins.applications()
    assert (app.code, app.namespace, app.root) == ("FLAC", fla.NAMESPACE, "FLAFile")
    assert app.schema.is_file()
    assert etree.XMLSchema(etree.parse(str(app.schema))) is not None
    assert app.scan is fla.scan and app.render is fla.render and app.read is fla.read


# --- memory: flat in the number of declarations -----------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from fla_core.anomalies import ChannelError
    from fla_core.applications import fla
    from fla_core.model import Declaration, Employer, FileContent, FileHeader, Training, Worker

    mode, path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    fla.schema()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def declarations():
        for i in range(n):  # 4 trainings per declaration
            yield Declaration(f"D-{i}", "NEW", "2025", Employer("0897223670"), workers=[
                Worker("93051822361", [Training(f"T{j}", "Forklift safety refresher", "FORMAL",
                                                "2025-03-03", "2025-03-05", "21.00", True,
                                                "0566988259") for j in range(2)])
                for _ in range(2)])

    if mode == "render":
        header = FileHeader("123456", "SOCIAL_SECRETARIAT", "0123456749", "T",
                            "2026-03-16T09:30:00", "MEM-1")
        with path.open("wb") as out:
            fla.render(FileContent(header, declarations()), out)
        count = n
    else:
        trainings = 0
        def on_declaration(d, p):
            global trainings
            trainings += sum(len(w.trainings) for w in d.workers)
        try:
            count = fla.scan([path], expect=None, max_declarations=10**9,
                             on_declaration=on_declaration).declarations
            assert trainings == 4 * count
        except ChannelError as exc:
            count = exc.code
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"count": count, "growth_kb": peak - base}))
""")


def run_memory(mode: str, path: Path, n: int) -> dict[str, int | str]:
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, mode, str(path), str(n)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_render_and_scan_of_200k_trainings_keep_memory_flat(tmp_path):
    small, big = tmp_path / "small.xml", tmp_path / "big.xml"
    run_memory("render", small, 500)
    rendered = run_memory("render", big, 50_000)  # 200k trainings, ~70 MB
    assert big.stat().st_size > 50_000_000
    scanned_small = run_memory("scan", small, 0)
    scanned = run_memory("scan", big, 0)
    assert scanned["count"] == 50_000
    # Peak RSS grows by a few MB at most (1 MiB chunks, one batch of elements), never with size.
    assert rendered["growth_kb"] < 30_000, rendered
    assert scanned["growth_kb"] < scanned_small["growth_kb"] + 30_000, scanned
    # A schema error in every record: refused after the first one, without an error per record.
    bad = tmp_path / "bad.xml"
    with big.open("rb") as src, bad.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk.replace(b"<Hours>21.00<", b"<Hours>21.0<"))
    refused = run_memory("scan", bad, 0)
    assert refused["count"] == "312"
    assert refused["growth_kb"] < scanned_small["growth_kb"] + 30_000, refused


def test_scan_and_read_build_the_same_models_whatever_the_layout():
    # scan takes the children of a valid element by position, read looks at every tag: both
    # must agree with comments, PIs, CDATA, optional elements absent and no indentation.
    data = (replace("<Employer>\n      <CompanyID>0897223670</CompanyID>\n    </Employer>", "")
            .replace(b"<Training>", b"<Training><!-- c --><?pi x?>")
            .replace(b"<Title>Forklift", b"<Title><![CDATA[<Fork>]]>lift")
            .replace(b"\n", b"").replace(b"?>  <", b"?><"))
    scanned: list[Declaration] = []
    fla.scan(io.BytesIO(data), expect=None, max_declarations=10,
             on_declaration=lambda d, p: scanned.append(d))
    read = list(fla.read(io.BytesIO(data)))
    assert scanned == read
    assert scanned[1].employer is None
    assert scanned[0].workers[0].trainings[0].title == "<Fork>lift safety refresher"


def test_concurrent_scans_share_the_compiled_schema_safely():
    # The simulator judges sets of several channels in worker threads at the same time.
    from concurrent.futures import ThreadPoolExecutor

    bad = replace("<Hours>21.00", "<Hours>21.5")
    jobs = [VALID, bad] * 8

    def judge(data: bytes) -> str | None:
        return scan_code(data, expect=EXPECT)

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(judge, jobs))
    assert codes == [None, "312"] * 8
