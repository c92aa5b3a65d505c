"""Configuration changes take effect while serving: ``channel remove``, ``channel key
revoke``/``add``, and a running server that re-reads ``simulator.toml`` (docs/simulator.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fla_sim.api import Simulator
from fla_sim.cli import main
from fla_sim.config import SimulatorHome
from fla_sim.store import Journal

ACME = ("acme-payroll", "social-secretariat", "0123456749", "123456")
BETA = ("beta-hr", "employer", "0566988259", "654321")


class Home:
    """A home with two channels: acme-payroll (keys a and b) and beta-hr (key c)."""

    def __init__(self, tmp: Path):
        self.home = SimulatorHome.init(tmp / "sim")
        self.keys: dict[str, asyncssh.SSHKey] = {}
        self.pubs: dict[str, Path] = {}
        for name in "abc":
            key = asyncssh.generate_private_key("ssh-ed25519")
            self.keys[name] = key
            self.pubs[name] = tmp / f"{name}.pub"
            key.write_public_key(str(self.pubs[name]))
        self.home.add_channel(*ACME, [self.line("a"), self.line("b")])
        self.home.add_channel(*BETA, [self.line("c")])

    def line(self, name: str) -> str:
        return self.keys[name].export_public_key().decode().strip()

    @property
    def path(self) -> str:
        return str(self.home.path)


@pytest.fixture
def h(tmp_path: Path) -> Home:
    return Home(tmp_path)


async def _login(port: int, user: str, key: asyncssh.SSHKey) -> None:
    async with asyncssh.connect("127.0.0.1", port, username=user, client_keys=[key],
                                known_hosts=None, agent_path=None) as conn, \
            conn.start_sftp_client() as sftp:
        await sftp.listdir("INTEST")


def logs_in(port: int, user: str, key: asyncssh.SSHKey) -> bool:
    try:
        asyncio.run(_login(port, user, key))
    except asyncssh.PermissionDenied:
        return False
    return True


def _write(path: Path, text: str) -> None:
    """Replace a file in one step: the server polling it never reads it half-written."""
    tmp = path.with_name(path.name + ".edit")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- against a running `fla-sim serve` ---------------------------------------------------------


def test_a_revoked_key_cannot_log_in_to_a_running_serve(
        h: Home, fla_sim_serve: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    served = fla_sim_serve(h.home.path)
    assert logs_in(served.port, "acme-payroll", h.keys["a"])
    code, out, _ = run_cli(capsys, "channel", "key", "revoke", h.path, "--user", "acme-payroll",
                           "--key", str(h.pubs["a"]))
    assert code == 0 and h.keys["a"].get_fingerprint() in out
    assert not logs_in(served.port, "acme-payroll", h.keys["a"])  # no restart
    assert logs_in(served.port, "acme-payroll", h.keys["b"])  # the other key still works
    served.wait_for("stderr", "configuration reloaded")
    served.wait_for("stderr", f"key {h.keys['a'].get_fingerprint()} is not registered")
    assert served.stop() == 0


def test_a_removed_channel_is_refused_and_its_open_session_closed(
        h: Home, fla_sim_serve: Callable[..., Any]) -> None:
    served = fla_sim_serve(h.home.path)

    async def scenario() -> None:
        async with asyncssh.connect("127.0.0.1", served.port, username="acme-payroll",
                                    client_keys=[h.keys["a"]], known_hosts=None,
                                    agent_path=None) as conn:
            sftp = await conn.start_sftp_client()
            await sftp.listdir("INTEST")
            # another process (the command line), as an operator would
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fla_sim.cli", "channel", "remove", h.path,
                "--user", "acme-payroll",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            assert b"kept" in out
            # no login needed: the server sees the change by itself and drops the session
            await asyncio.wait_for(conn.wait_closed(), 15)

    asyncio.run(scenario())
    assert not logs_in(served.port, "acme-payroll", h.keys["a"])
    assert not logs_in(served.port, "acme-payroll", h.keys["b"])
    assert logs_in(served.port, "beta-hr", h.keys["c"])  # another channel still works
    served.wait_for("stderr", "channel acme-payroll removed from the configuration: 1 session")
    assert (h.home.path / "channels" / "acme-payroll" / "INTEST").is_dir()  # files kept
    assert served.stop() == 0


def test_a_bad_edit_while_serving_is_logged_and_the_old_configuration_stays(
        h: Home, fla_sim_serve: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    served = fla_sim_serve(h.home.path)
    good = h.home.config_path.read_text("utf-8")
    # a hand edit that removes acme-payroll but breaks the file: nothing of it may apply
    broken = good.replace('user = "acme-payroll"', 'user = ".."')
    assert broken != good
    _write(h.home.config_path, broken)
    served.wait_for("stderr", "configuration not reloaded")
    assert logs_in(served.port, "acme-payroll", h.keys["a"])
    assert logs_in(served.port, "beta-hr", h.keys["c"])
    line = served.wait_for("stderr", "configuration not reloaded")
    assert "user '..'" in line and "stays in force" in line
    # logged once per change, not at each login or poll
    assert sum("configuration not reloaded" in ln for ln in served.lines()) == 1
    _write(h.home.config_path, good)  # fixed: the next change is taken again
    code, _, err = run_cli(capsys, "channel", "key", "revoke", h.path, "--user",
                           "acme-payroll", "--key", h.keys["a"].get_fingerprint())
    assert code == 0, err
    assert not logs_in(served.port, "acme-payroll", h.keys["a"])
    assert served.stop() == 0


def test_sighup_rereads_the_configuration_at_once(
        h: Home, fla_sim_serve: Callable[..., Any]) -> None:
    served = fla_sim_serve(h.home.path)
    served.proc.send_signal(signal.SIGHUP)
    served.wait_for("stderr", "configuration reloaded")
    assert served.proc.poll() is None
    assert logs_in(served.port, "acme-payroll", h.keys["a"])
    assert served.stop() == 0


# -- the embedded Simulator --------------------------------------------------------------------


def test_simulator_sees_a_revoked_key_and_a_removed_channel_at_the_next_login(h: Home) -> None:
    sim = Simulator(h.home)
    sim.config_poll_s = 0  # only the check at login: the change must be seen right then
    with sim:
        assert sim.port is not None
        assert logs_in(sim.port, "acme-payroll", h.keys["b"])
        h.home.revoke_key("acme-payroll", [h.line("b")])
        assert not logs_in(sim.port, "acme-payroll", h.keys["b"])
        assert logs_in(sim.port, "acme-payroll", h.keys["a"])
        h.home.remove_channel("acme-payroll")
        assert not logs_in(sim.port, "acme-payroll", h.keys["a"])
        assert logs_in(sim.port, "beta-hr", h.keys["c"])
        assert sim.config is not None and [c.user for c in sim.config.channels] == ["beta-hr"]


def test_an_empty_or_broken_file_leaves_the_simulator_as_it_was(
        h: Home, caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(h.home)
    sim.config_poll_s = 0
    with sim:
        assert sim.port is not None and sim.config is not None
        good = h.home.config_path.read_text("utf-8")
        h.home.config_path.write_text("", "utf-8")  # an editor between truncating and writing
        assert sim.check_config() is False
        _write(h.home.config_path, good.replace("[server]", "[server\n"))
        assert sim.check_config() is False
        assert sim.check_config() is False  # the same bad file: not read (nor logged) again
        assert [c.user for c in sim.config.channels] == ["acme-payroll", "beta-hr"]
        assert logs_in(sim.port, "acme-payroll", h.keys["a"])
        refused = [r.getMessage() for r in caplog.records if "not reloaded" in r.getMessage()]
        assert len(refused) == 2 and "is empty" in refused[0]
        assert "not valid TOML" in refused[1]
        _write(h.home.config_path, good)
        assert sim.check_config() is True


# -- the commands: refusals store nothing ------------------------------------------------------


def _stored(h: Home) -> tuple[bytes, list[str]]:
    return (h.home.config_path.read_bytes(),
            sorted(os.listdir(h.home.path / "keys")))


@pytest.mark.parametrize("args, message", [
    (["channel", "remove", "{home}", "--user", "nobody"], "channel 'nobody' is not in"),
    (["channel", "key", "revoke", "{home}", "--user", "nobody", "--key", "{a}"],
     "channel 'nobody' is not in"),
    (["channel", "key", "revoke", "{home}", "--user", "beta-hr", "--key", "{a}"],
     "is not registered for channel 'beta-hr' (its keys: SHA256:"),
    (["channel", "key", "revoke", "{home}", "--user", "acme-payroll", "--key",
      "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "is not registered"),
    (["channel", "key", "revoke", "{home}", "--user", "acme-payroll", "--key", "{a}",
      "--key", "{c}"], "is not registered for channel 'acme-payroll'"),
    (["channel", "key", "revoke", "{home}", "--user", "beta-hr", "--key", "{c}"],
     "is the last key of channel 'beta-hr'"),
    (["channel", "key", "revoke", "{home}", "--user", "beta-hr", "--key", "{missing}"],
     "cannot read the SSH public key"),
    (["channel", "key", "add", "{home}", "--user", "acme-payroll", "--ssh-key", "{b}"],
     "is already registered for channel 'acme-payroll'"),
    (["channel", "key", "add", "{home}", "--user", "nobody", "--ssh-key", "{c}"],
     "channel 'nobody' is not in"),
])
def test_refused_changes_are_exit_2_one_line_and_store_nothing(
        h: Home, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    before = _stored(h)
    values = {"home": h.path, "a": str(h.pubs["a"]), "b": str(h.pubs["b"]),
              "c": str(h.pubs["c"]), "missing": str(h.pubs["a"]) + ".gone"}
    code, out, err = run_cli(capsys, *(a.format(**values) for a in args))
    assert code == 2, out + err
    assert err.startswith("fla-sim: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert _stored(h) == before


def test_remove_is_refused_while_a_set_of_the_channel_awaits_its_answers(
        h: Home, capsys: pytest.CaptureFixture[str]) -> None:
    journal = Journal(h.home.journal_path)
    try:
        journal.update_set("acme-payroll", "INTEST", "FLAC.123456.20260316.00001.T", "k",
                           "PROCESSING", datetime.now(UTC))
        # a GO closed, not taken yet (its set may not even exist)
        journal.add_event("beta-hr", "INTEST", "GO.FLAC.654321.20260316.00001.T.1", "GO",
                          datetime.now(UTC))
    finally:
        journal.close()
    before = _stored(h)
    code, _, err = run_cli(capsys, "channel", "remove", h.path, "--user", "acme-payroll")
    assert code == 2 and "1 set(s) or file(s) still being judged or answered" in err
    assert "INTEST/FLAC.123456.20260316.00001.T" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "channel", "remove", h.path, "--user", "beta-hr")
    assert code == 2 and "(INTEST/GO.FLAC.654321.20260316.00001.T.1)" in err
    assert _stored(h) == before
    h.home.add_channel("gamma", "employer", "0897223670", "111111", [h.line("a")])
    code, _, err = run_cli(capsys, "channel", "remove", h.path, "--user", "gamma")
    assert code == 0, err  # other channels' sets do not hold it back


def test_key_add_then_revoke_by_fingerprint_and_file(
        h: Home, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "channel", "key", "add", h.path, "--user", "beta-hr",
                             "--ssh-key", str(h.pubs["a"]))
    assert code == 0, err
    assert "1 SSH key(s) added" in out
    assert [c.ssh_keys for c in h.home.load().channels if c.user == "beta-hr"] == [
        [h.line("c"), h.line("a")]]
    assert (h.home.path / "keys" / "beta-hr-2.pub").is_file()
    code, out, err = run_cli(capsys, "channel", "key", "revoke", h.path, "--user", "beta-hr",
                             "--key", h.keys["a"].get_fingerprint())
    assert code == 0 and h.keys["a"].get_fingerprint() in out, err
    assert [c.ssh_keys for c in h.home.load().channels if c.user == "beta-hr"] == [
        [h.line("c")]]
    # the revoked key's file does not linger in keys/
    assert not (h.home.path / "keys" / "beta-hr-2.pub").exists()
    code, out, err = run_cli(capsys, "channel", "key", "revoke", h.path, "--user",
                             "acme-payroll", "--key", str(h.pubs["a"]))
    assert code == 0, err
    assert [c.ssh_keys for c in h.home.load().channels if c.user == "acme-payroll"] == [
        [h.line("b")]]
    assert (h.home.path / "keys" / "acme-payroll-1.pub").read_text().strip() == h.line("b")
    assert not (h.home.path / "keys" / "acme-payroll-2.pub").exists()


def test_remove_keeps_the_tree_and_a_channel_added_again_finds_it(
        h: Home, capsys: pytest.CaptureFixture[str]) -> None:
    marker = h.home.path / "channels" / "acme-payroll" / "OUTTEST" / "FO.kept"
    marker.write_text("x")
    code, out, err = run_cli(capsys, "channel", "remove", h.path, "--user", "acme-payroll")
    assert code == 0, err
    assert "channel acme-payroll removed" in out and "kept" in out
    assert [c.user for c in h.home.load().channels] == ["beta-hr"]
    assert marker.exists()
    code, out, _ = run_cli(capsys, "channel", "list", h.path, "--json")
    assert "acme-payroll" not in out
    h.home.add_channel(*ACME, [h.line("a")])
    assert marker.exists()


def test_key_add_and_revoke_write_only_the_key_files_that_change(
        h: Home, capsys: pytest.CaptureFixture[str]) -> None:
    """Each operation writes the key files it changes and no other (a save used to rewrite
    every channel's): key add writes the new key's, revoke moves the keys after it down."""
    keys = h.home.path / "keys"
    old = 1_000_000_000  # an mtime no write could give a file
    for name in os.listdir(keys):
        os.utime(keys / name, (old, old))

    def touched() -> list[str]:
        return sorted(n for n in os.listdir(keys) if (keys / n).stat().st_mtime != old)

    assert run_cli(capsys, "channel", "key", "add", h.path, "--user", "beta-hr",
                   "--ssh-key", str(h.pubs["a"]))[0] == 0
    assert touched() == ["beta-hr-2.pub"]
    assert run_cli(capsys, "channel", "key", "revoke", h.path, "--user", "acme-payroll",
                   "--key", h.keys["b"].get_fingerprint())[0] == 0
    assert touched() == ["beta-hr-2.pub"]  # acme-payroll-1.pub still holds key a
    assert not (keys / "acme-payroll-2.pub").exists()
    assert run_cli(capsys, "channel", "key", "add", h.path, "--user", "acme-payroll",
                   "--ssh-key", str(h.pubs["c"]))[0] == 0
    assert run_cli(capsys, "channel", "key", "revoke", h.path, "--user", "acme-payroll",
                   "--key", str(h.pubs["a"]))[0] == 0
    assert touched() == ["acme-payroll-1.pub", "beta-hr-2.pub"]  # c moved down to 1
    assert (keys / "acme-payroll-1.pub").read_text().strip() == h.line("c")
    assert [c.ssh_keys for c in h.home.load().channels] == [[h.line("c")],
                                                            [h.line("c"), h.line("a")]]
