"""``fla-sim init``: private keys 0600, and ``--force`` renews keys but keeps the configuration."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest

from fla_sim.api import Simulator
from fla_sim.cli import main
from fla_sim.config import SimulatorHome
from fla_sim.pytest_plugin import ChannelInfo
from fla_sim.store import Journal

KBO = "0123456749"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> SimulatorHome:
    """A home with a channel, a registered certificate of the home's CA, mandates, a journal."""
    path = tmp_path / "sim"
    pub = tmp_path / "acme.pub"
    asyncssh.generate_private_key("ssh-ed25519").write_public_key(str(pub))
    assert run(capsys, "init", str(path))[0] == 0
    assert run(capsys, "channel", "add", str(path), "--user", "acme-payroll", "--quality",
               "social-secretariat", "--company", KBO, "--sender", "123456",
               "--ssh-key", str(pub))[0] == 0
    assert run(capsys, "cert", "issue", str(path), "--company", KBO, "--channel",
               "acme-payroll", "--out", str(tmp_path / "signer"))[0] == 0
    for level in (["--level", "1", "--start", "20241"], ["--level", "2", "--sender", "123456"]):
        assert run(capsys, "mandate", "add", str(path), "--employer", "0897223670",
                   "--representative", KBO, *level)[0] == 0
    home = SimulatorHome(path)
    journal = Journal(home.journal_path)
    journal.record_file("acme-payroll", "INTEST", "FI.FLAC.123456.20260316.00001.T.1.1", 42,
                        datetime(2026, 3, 16, tzinfo=UTC))
    journal.close()
    return home


def test_init_writes_every_private_key_0600(home: SimulatorHome) -> None:
    assert [mode(p) for p in home.private_key_paths] == [0o600, 0o600, 0o600]


def test_init_force_renews_the_keys_and_keeps_channels_mandates_trust_and_journal(
        home: SimulatorHome, capsys: pytest.CaptureFixture[str]) -> None:
    config_before = home.config_path.read_bytes()
    keys_before = [p.read_bytes() for p in home.private_key_paths]
    journal_before = home.journal_path.read_bytes()
    code, out, err = run(capsys, "init", "--force", str(home.path))
    assert code == 0, err
    assert home.config_path.read_bytes() == config_before
    assert home.journal_path.read_bytes() == journal_before
    journal = Journal(home.journal_path)
    assert [f.size for f in journal.files(state=None)] == [42]
    journal.close()
    config = home.load()
    assert [c.user for c in config.channels] == ["acme-payroll"]
    assert len(config.mandates) == 2 and config.trust_anchors == ["pki/ca.pem"]
    # every key is new, and private
    assert all(p.read_bytes() != before for p, before in zip(home.private_key_paths,
                                                             keys_before, strict=True))
    assert [mode(p) for p in home.private_key_paths] == [0o600, 0o600, 0o600]
    # ...and the output says what was renewed, what was kept, and what to do now
    assert "renewed the keys" in out and "kept: simulator.toml (channels 1, mandates 2" in out
    assert "fla-sim hostkey" in out
    assert ("certs/acme-payroll-1.pem of channel acme-payroll was issued by the old CA" in out
            and f"--company {KBO} --channel acme-payroll" in out)


def test_the_renewed_ca_issues_certificates_the_new_answer_signer_chains_to(
        home: SimulatorHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init", "--force", str(home.path))[0] == 0
    ca = home.ca().cert
    home.answer_signer().cert.verify_directly_issued_by(ca)
    home.issue_signer(KBO).cert.verify_directly_issued_by(ca)


def test_init_force_refuses_a_home_whose_configuration_does_not_load(
        home: SimulatorHome, capsys: pytest.CaptureFixture[str]) -> None:
    home.config_path.write_text("[server\n", "utf-8")
    keys_before = [p.read_bytes() for p in home.private_key_paths]
    code, _, err = run(capsys, "init", "--force", str(home.path))
    assert code == 2 and err.count("\n") == 1
    assert "not valid TOML" in err and "remove the home to start over" in err
    assert [p.read_bytes() for p in home.private_key_paths] == keys_before


def test_pytest_fixture_keys_are_private(fla_channel: ChannelInfo) -> None:
    assert mode(fla_channel.ssh_key) == 0o600
    assert mode(fla_channel.signer_key) == 0o600


def test_a_simulator_makes_an_older_homes_keys_private(
        home: SimulatorHome, caplog: pytest.LogCaptureFixture) -> None:
    for key in home.private_key_paths:  # as every home made before keys were written 0600
        key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="fla_sim"), Simulator(home):
        pass
    assert [mode(p) for p in home.private_key_paths] == [0o600, 0o600, 0o600]
    warned = [r.getMessage() for r in caplog.records if "readable by other users" in
              r.getMessage()]
    assert len(warned) == 3 and str(home.host_key_path) in warned[0]
