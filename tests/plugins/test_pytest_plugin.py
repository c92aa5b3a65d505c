"""The pytest plugin (entry point pytest11 ``fla_sim``), exercised with pytester."""

from __future__ import annotations

pytest_plugins = ["pytester"]

ROUND_TRIP = '''
import asyncio

import asyncssh


def test_round_trip(fla_sim, fla_channel, fla_clock):
    assert fla_clock().isoformat() == "2026-03-16T10:15:00+01:00"
    assert (fla_channel.user, fla_channel.sender) == ("acme-payroll", "123456")

    async def upload():
        async with asyncssh.connect("127.0.0.1", fla_sim.port, username=fla_channel.user,
                                    client_keys=[str(fla_channel.ssh_key)],
                                    known_hosts=None) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("/INTEST/GO.FLAC.123456.20260316.00007.T.1", "wb"):
                pass

    asyncio.run(upload())
    fla_sim.drain(20)
    assert fla_sim.answers(fla_channel.user, "OUTTEST") == [
        "FO.ACRF.999999.20260316.00001.T", "FS.ACRF.999999.20260316.00001.T",
        "GO.ACRF.999999.20260316.00001.T"]


def test_transport_client_against_the_fixture(fla_sim, fla_channel, tmp_path):
    from fla_core import transport

    out = tmp_path / "send"
    out.mkdir()
    (out / "GO.FLAC.123456.20260316.00008.T.1").write_bytes(b"")
    address = fla_channel.address(fla_sim)
    asyncio.run(transport.send_sets(address, out, transport.plan_sets(out)))
    fla_sim.drain(20)
    got = asyncio.run(transport.fetch_answers(address, tmp_path / "answers"))
    assert [str(a.name) for a in got] == ["FO.ACRF.999999.20260316.00001.T"]


def test_pki_issues_sender_certificates(fla_pki, fla_channel):
    from cryptography.x509.oid import NameOID
    ck = fla_pki.signer("0566988259")
    org = ck.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
    assert org[0].value == "NTRBE-0566988259"
    assert fla_channel.signer_cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_clock_moves_only_when_told(fla_clock):
    before = fla_clock()
    assert fla_clock() == before
    assert (fla_clock.advance(hours=2) - before).total_seconds() == 7200
'''


def test_fixtures_run_a_real_simulator(pytester):
    pytester.makepyfile(ROUND_TRIP)
    result = pytester.runpytest_subprocess("--fla-clock=2026-03-16T10:15:00", "-p",
                                           "no:randomly")
    result.assert_outcomes(passed=4)


def test_clock_from_ini(pytester):
    pytester.makeini("[pytest]\nfla_clock = 2026-03-16T10:15:00\n")
    pytester.makepyfile('''
def test_clock(fla_clock):
    assert fla_clock().isoformat() == "2026-03-16T10:15:00+01:00"
''')
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_bad_clock_option_is_a_clear_usage_error(pytester):
    pytester.makepyfile("def test_x(fla_clock):\n    pass\n")
    result = pytester.runpytest("--fla-clock=yesterday", "-p", "no:randomly")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--fla-clock 'yesterday': not an ISO date-time*"])


def test_the_fixtures_build_their_own_plugin_manager(pytester, monkeypatch):
    # what is installed or set in the environment does not reach the fixtures' simulator
    monkeypatch.setenv("FLA_DISABLED_PLUGINS", "fla_core.checks.employer")
    monkeypatch.setenv("FLA_PLUGINS", "fla_no_such_plugin_module")
    pytester.makepyfile('''
def test_plugins(fla_sim, fla_plugins):
    assert fla_sim.processor.plugins is fla_plugins
    infos = {p.name: p for p in fla_plugins.plugins()}
    assert "fla_core.checks.employer" in infos
    assert not any(p.blocked for p in infos.values())
    assert "xlsx" not in infos  # installed, but no entry point is loaded
    assert fla_plugins.pm.hook.fla_sim_answer.has_spec()
''')
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)
