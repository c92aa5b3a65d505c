"""OpenSSH's ``sftp -b`` against the simulator's SFTP server (spec 3.2, 3.3)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim.config import ChannelConfig, SimulatorHome
from fla_sim.server import start_server

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH sftp client not installed"),
]

USER = "acme-payroll"
FI = "FI.FLAC.123456.20260316.00001.T.1.1"
GO = "GO.FLAC.123456.20260316.00001.T.1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatorHome, Path, Path]:
    base = tmp_path_factory.mktemp("openssh")
    home = SimulatorHome.init(base / "home")
    keys = []
    for name in ("owner", "stranger"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        path = base / name
        key.write_private_key(str(path))
        os.chmod(path, 0o600)  # OpenSSH ignores a private key others can read
        keys.append((key, path))
    config = home.load()
    config.channels = [ChannelConfig(USER, Quality.SOCIAL_SECRETARIAT, "0123456749", "123456",
                                     [keys[0][0].export_public_key().decode()])]
    home.save(config)
    (base / FI).write_bytes(b"<FLAFile/>" * 1000)
    (base / GO).write_bytes(b"")
    return home, keys[0][1], keys[1][1]


def sftp_batch(home: SimulatorHome, identity: Path, batch: str, cwd: Path
               ) -> tuple[int, str, str, list[tuple[str, str, str, int]]]:
    """Run ``sftp -b`` against a fresh server; return exit code, stdout, stderr, uploads."""
    calls: list[tuple[str, str, str, int]] = []

    async def record(user: str, directory: str, name: str, size: int) -> None:
        calls.append((user, directory, name, size))

    async def main() -> tuple[int, str, str]:
        acceptor = await start_server(home, home.load(), record, port=0)
        try:
            proc = await asyncio.create_subprocess_exec(
                "sftp", "-b", "-", "-P", str(acceptor.get_port()), "-i", str(identity),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR",
                f"{USER}@127.0.0.1", cwd=cwd, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(batch.encode()), 60)
            return proc.returncode or 0, out.decode(), err.decode()
        finally:
            acceptor.close()
            await acceptor.wait_closed()

    code, out, err = asyncio.run(main())
    return code, out, err, calls


def test_key_login_upload_into_intest_and_listing(setup: tuple[SimulatorHome, Path, Path]
                                                  ) -> None:
    home, owner, _ = setup
    code, out, err, calls = sftp_batch(
        home, owner, f"put {FI} INTEST/\nput {GO} INTEST/\nls -1 INTEST\n", owner.parent)
    assert code == 0, err
    assert FI in out and GO in out and ".upload-" not in out
    assert calls == [(USER, "INTEST", FI, 10_000), (USER, "INTEST", GO, 0)]
    root = home.channel_root(USER)
    assert (root / "INTEST" / FI).read_bytes() == (owner.parent / FI).read_bytes()


def test_write_in_out_is_refused_with_permission_denied(setup: tuple[SimulatorHome, Path, Path]
                                                        ) -> None:
    home, owner, _ = setup
    code, _, err, calls = sftp_batch(home, owner, f"put {FI} OUT/\n", owner.parent)
    assert code != 0
    assert "Permission denied" in err
    assert calls == []
    assert os.listdir(home.channel_root(USER) / "OUT") == []


def test_mkdir_and_rename_are_refused(setup: tuple[SimulatorHome, Path, Path]) -> None:
    home, owner, _ = setup
    code, _, err, _ = sftp_batch(home, owner, "-mkdir INTEST/sub\n-rename INTEST OTHER\n"
                                              "ls -1 /\n", owner.parent)
    assert code == 0  # "-" lets the batch go on after the refusals
    assert err.count("Permission denied") == 2
    assert sorted(os.listdir(home.channel_root(USER))) == sorted(
        ["IN", "OUT", "INTEST", "OUTTEST", "INTEST-S", "OUTTEST-S"])


def test_answers_can_be_fetched_and_removed(setup: tuple[SimulatorHome, Path, Path],
                                            tmp_path: Path) -> None:
    home, owner, _ = setup
    answer = home.channel_root(USER) / "OUTTEST" / "FO.ACRF.20260316.00001.T"
    answer.write_bytes(b"<ACRF/>")
    code, _, err, _ = sftp_batch(home, owner, f"get OUTTEST/{answer.name}\n"
                                              f"rm OUTTEST/{answer.name}\n", tmp_path)
    assert code == 0, err
    assert (tmp_path / answer.name).read_bytes() == b"<ACRF/>"
    assert not answer.exists()


def test_unregistered_key_cannot_log_in(setup: tuple[SimulatorHome, Path, Path]) -> None:
    home, _, stranger = setup
    code, _, err, _ = sftp_batch(home, stranger, "ls\n", stranger.parent)
    assert code != 0
    assert "Permission denied (publickey)" in err
