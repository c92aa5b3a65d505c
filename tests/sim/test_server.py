"""The SFTP listener against real asyncssh clients on loopback (spec 3.2, 3.3, 5.7; design 6)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim.config import ChannelConfig, SimulatorConfig, SimulatorHome
from fla_sim.server import TEMP_PREFIX, start_server

OWNER = "acme-payroll"
OTHER = "other-channel"
FI = "FI.FLAC.123456.20260316.00001.T.1.1"
GO = "GO.FLAC.123456.20260316.00001.T.1"


@dataclass
class Env:
    home: SimulatorHome
    config: SimulatorConfig
    keys: dict[str, asyncssh.SSHKey]
    calls: list[tuple[str, str, str, int]] = field(default_factory=list)

    def root(self, user: str = OWNER) -> Path:
        return self.home.path / "channels" / user


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "home"
    SimulatorHome.init(path)
    return path


@pytest.fixture(scope="module")
def keys() -> dict[str, asyncssh.SSHKey]:
    return {name: asyncssh.generate_private_key("ssh-ed25519")
            for name in (OWNER, OTHER, "stranger")}


@pytest.fixture
def env(template: Path, keys: dict[str, asyncssh.SSHKey], tmp_path: Path) -> Env:
    shutil.copytree(template, tmp_path / "home")
    home = SimulatorHome(tmp_path / "home")
    config = home.load()

    def channel(user: str, sender: str, quota: int) -> ChannelConfig:
        return ChannelConfig(user=user, quality=Quality.SOCIAL_SECRETARIAT, company="0123456749",
                             sender=sender, ssh_keys=[keys[user].export_public_key().decode()],
                             quota_bytes=quota)

    config.channels = [channel(OWNER, "123456", 1 << 30), channel(OTHER, "654321", 1000)]
    return Env(home, config, keys)


@contextlib.asynccontextmanager
async def serving(env: Env, on_closed=None) -> AsyncIterator[int]:  # type: ignore[no-untyped-def]
    async def record(user: str, directory: str, name: str, size: int) -> None:
        env.calls.append((user, directory, name, size))

    acceptor = await start_server(env.home, env.config, on_closed or record, port=0)
    try:
        yield acceptor.get_port()
    finally:
        acceptor.close()
        await acceptor.wait_closed()


def connect(port: int, user: str, key: asyncssh.SSHKey | None, **kw):  # type: ignore[no-untyped-def]
    return asyncssh.connect("127.0.0.1", port, username=user,
                            client_keys=[key] if key else None, known_hosts=None,
                            agent_path=None, **kw)


@contextlib.asynccontextmanager
async def session(env: Env, port: int, user: str = OWNER) -> AsyncIterator[asyncssh.SFTPClient]:
    async with connect(port, user, env.keys[user]) as conn, conn.start_sftp_client() as sftp:
        yield sftp


async def upload(sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(data)


def run(coro) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(coro)


async def wait_until(condition, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition the server reaches asynchronously (after a disconnect)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def status_of(excinfo: pytest.ExceptionInfo[asyncssh.SFTPError]) -> int:
    return excinfo.value.code


# -- authentication (spec 3.2) ------------------------------------------------------------------


def test_registered_key_logs_in_and_sees_the_six_channel_directories(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            assert sorted(await sftp.listdir("/")) == sorted(
                [".", "..", "IN", "OUT", "INTEST", "OUTTEST", "INTEST-S", "OUTTEST-S"])
            assert await sftp.realpath("..") == "/"
    run(scenario())


def test_password_and_keyboard_interactive_are_refused(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    def logged() -> bool:
        return any("login failed" in r.getMessage() and OWNER in r.getMessage()
                   for r in caplog.records)

    async def scenario() -> None:
        async with serving(env) as port:
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(port, OWNER, None, password="secret",
                              preferred_auth="password,keyboard-interactive")
            await wait_until(logged, "the failed login to be logged")
    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        run(scenario())


def test_unknown_key_is_refused_and_logged_with_its_fingerprint(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    stranger = env.keys["stranger"]

    async def scenario() -> None:
        async with serving(env) as port:
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(port, OWNER, stranger)
    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        run(scenario())
    assert any(stranger.get_fingerprint() in r.getMessage() and OWNER in r.getMessage()
               for r in caplog.records)


def test_another_channels_key_is_refused(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port:
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(port, OWNER, env.keys[OTHER])
            async with connect(port, OTHER, env.keys[OTHER]):
                pass  # the key itself is fine on its own channel
    run(scenario())


def test_unknown_user_is_refused(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port:
            with pytest.raises(asyncssh.PermissionDenied):
                await connect(port, "nobody", env.keys[OWNER])
    run(scenario())


def test_a_channel_added_while_serving_can_log_in(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port:
            key = env.keys["stranger"]
            env.config.channels.append(ChannelConfig(
                user="late", quality=Quality.EMPLOYER, company="0123456749", sender="111111",
                ssh_keys=[key.export_public_key().decode()]))
            async with connect(port, "late", key) as conn, conn.start_sftp_client() as sftp:
                assert "INTEST" in await sftp.listdir("/")
    run(scenario())


@pytest.fixture(scope="module")
def rsa_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-rsa", key_size=2048)


@pytest.mark.parametrize("legacy", [False, True])
def test_sha1_ssh_rsa_signatures_only_in_legacy_mode(env: Env, rsa_key: asyncssh.SSHKey,
                                                     legacy: bool) -> None:
    env.config.channels.append(ChannelConfig(
        user="legacy", quality=Quality.EMPLOYER, company="0123456749", sender="111111",
        ssh_keys=[rsa_key.export_public_key().decode()]))
    env.config.legacy_ssh_rsa = legacy

    async def scenario() -> None:
        async with serving(env) as port:
            async with connect(port, "legacy", rsa_key, signature_algs=["rsa-sha2-256"]):
                pass  # SHA-2 RSA signatures are always fine
            sha1 = connect(port, "legacy", rsa_key, signature_algs=["ssh-rsa"])
            if legacy:
                async with sha1:
                    pass
            else:
                with pytest.raises(asyncssh.PermissionDenied):
                    await sha1
    run(scenario())


def test_only_the_configured_ciphers_are_negotiated(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port:
            # the default leaves chacha20-poly1305 out (its per-packet cost in asyncssh)
            with pytest.raises(asyncssh.KeyExchangeFailed):
                await connect(port, OWNER, env.keys[OWNER],
                              encryption_algs=["chacha20-poly1305@openssh.com"])
            async with connect(port, OWNER, env.keys[OWNER]) as conn:
                assert conn.get_extra_info("send_cipher").endswith("-gcm@openssh.com")
        env.config.ciphers = ("chacha20-poly1305@openssh.com",)
        async with serving(env) as port, connect(port, OWNER, env.keys[OWNER]) as conn:
            assert conn.get_extra_info("send_cipher") == "chacha20-poly1305@openssh.com"
    run(scenario())


def test_shell_and_exec_are_not_offered(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, connect(port, OWNER, env.keys[OWNER]) as conn:
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.run("cat /etc/passwd", check=True)
    run(scenario())


# -- confinement (spec 3.3) ---------------------------------------------------------------------


def test_dotdot_and_absolute_paths_stay_inside_the_channel_root(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            for path in ("../../simulator.toml", "/../../simulator.toml", "/etc/passwd",
                         "OUTTEST/../../../pki/ca-key.pem"):
                with pytest.raises(asyncssh.SFTPError) as err:
                    await sftp.get(path, os.devnull)
                assert status_of(err) in (asyncssh.FX_PERMISSION_DENIED, asyncssh.FX_NO_SUCH_FILE)
            with pytest.raises(asyncssh.SFTPError) as err:
                await upload(sftp, "../../evil", b"x")
            assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
            # ".." at the root is the root, as in a real chroot: this lands in INTEST
            await upload(sftp, "../../INTEST/" + FI, b"<x/>")
    run(scenario())
    assert not (env.home.path / "evil").exists() and not (env.home.path.parent / "evil").exists()
    assert (env.root() / "INTEST" / FI).read_bytes() == b"<x/>"


def test_symlink_and_link_requests_are_refused(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            with pytest.raises(asyncssh.SFTPError) as err:
                await sftp.symlink("/OUTTEST", "/INTEST/link")
            assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
            await upload(sftp, "INTEST/" + FI, b"x")
            with pytest.raises(asyncssh.SFTPError) as err:
                await sftp.link("INTEST/" + FI, "INTEST/hard")
            assert status_of(err) in (asyncssh.FX_PERMISSION_DENIED, asyncssh.FX_OP_UNSUPPORTED)
    run(scenario())
    assert sorted(os.listdir(env.root() / "INTEST")) == [FI]


def test_a_link_planted_in_the_tree_is_never_followed(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            os.symlink(env.home.ca_key_path, env.root() / "OUTTEST" / "leak.pem")
            with pytest.raises(asyncssh.SFTPError) as err:
                await sftp.get("OUTTEST/leak.pem", os.devnull)
            assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
    run(scenario())


def test_a_tree_holding_a_link_is_not_served_at_all(env: Env) -> None:
    os.symlink("/etc", env.home.channel_root(OWNER) / "OUT" / "etc")

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            for attempt in (sftp.listdir("/"), sftp.listdir("OUT"), sftp.stat("INTEST")):
                with pytest.raises(asyncssh.SFTPError) as err:
                    await attempt
                assert status_of(err) == asyncssh.FX_FAILURE
    run(scenario())


def test_mkdir_rmdir_rename_are_refused(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            await upload(sftp, "INTEST/" + FI, b"x")
            attempts = [sftp.mkdir("INTEST/sub"), sftp.mkdir("NEW"), sftp.rmdir("OUT"),
                        sftp.rename("INTEST/" + FI, "INTEST/other"),
                        sftp.posix_rename("INTEST/" + FI, "OUTTEST/" + FI)]
            for attempt in attempts:
                with pytest.raises(asyncssh.SFTPError) as err:
                    await attempt
                assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
    run(scenario())
    assert sorted(os.listdir(env.root())) == sorted(
        ["IN", "OUT", "INTEST", "OUTTEST", "INTEST-S", "OUTTEST-S"])
    assert os.listdir(env.root() / "INTEST") == [FI]


@pytest.mark.parametrize("path", ["OUT/" + FI, "OUTTEST/" + FI, FI, "INTEST/sub/" + FI,
                                  "NEW/" + FI, "INTEST/" + TEMP_PREFIX + "x", "INTEST/.x"])
def test_writes_outside_the_upload_directories_are_permission_denied(env: Env, path: str) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            with pytest.raises(asyncssh.SFTPError) as err:
                await upload(sftp, path, b"data")
            assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
    run(scenario())
    assert env.calls == []
    assert all(not files for _, _, files in os.walk(env.root()))


def test_answers_being_written_are_invisible(env: Env) -> None:
    outtest = env.home.channel_root(OWNER) / "OUTTEST"
    (outtest / ".answer-ACRF.FLAC.20260316.00001.T").write_bytes(b"<half")

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            assert await sftp.listdir("OUTTEST") == [".", ".."]
            with pytest.raises(asyncssh.SFTPError) as err:
                await sftp.get("OUTTEST/.answer-ACRF.FLAC.20260316.00001.T", os.devnull)
            assert status_of(err) == asyncssh.FX_NO_SUCH_FILE
    run(scenario())


def test_uploads_are_not_readable_or_removable_but_answers_are(env: Env) -> None:
    answer = env.home.channel_root(OWNER) / "OUTTEST" / "ACRF.FLAC.20260316.00001.T"
    answer.write_bytes(b"<ACRF/>")

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            await upload(sftp, "INTEST/" + FI, b"x")
            for attempt in (sftp.get("INTEST/" + FI, os.devnull), sftp.remove("INTEST/" + FI)):
                with pytest.raises(asyncssh.SFTPError) as err:
                    await attempt
                assert status_of(err) == asyncssh.FX_PERMISSION_DENIED
            assert "ACRF.FLAC.20260316.00001.T" in await sftp.listdir("OUTTEST")
            async with sftp.open("OUTTEST/ACRF.FLAC.20260316.00001.T", "rb") as f:
                assert await f.read() == b"<ACRF/>"
            await sftp.remove("OUTTEST/ACRF.FLAC.20260316.00001.T")
            assert await sftp.listdir("OUTTEST") == [".", ".."]
    run(scenario())
    assert (env.root() / "INTEST" / FI).exists()


# -- uploads (design 6) ---------------------------------------------------------------------------


def test_temp_name_is_invisible_while_uploading_and_real_name_appears_on_close(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            f = await sftp.open("INTEST/" + FI, "wb")
            await f.write(b"<FLAFile>")
            on_disk = os.listdir(env.root() / "INTEST")
            assert len(on_disk) == 1 and on_disk[0].startswith(TEMP_PREFIX)
            assert await sftp.listdir("INTEST") == [".", ".."]
            assert not await sftp.exists("INTEST/" + FI)
            with pytest.raises(asyncssh.SFTPError):
                await sftp.stat("INTEST/" + on_disk[0])
            assert env.calls == []
            await f.close()
            assert env.calls == [(OWNER, "INTEST", FI, 9)]
            assert sorted(await sftp.listdir("INTEST")) == [".", "..", FI]
            assert (await sftp.stat("INTEST/" + FI)).size == 9
    run(scenario())
    assert os.listdir(env.root() / "INTEST") == [FI]


def test_on_file_closed_is_called_once_per_upload_in_upload_order(env: Env) -> None:
    names = ["FI.FLAC.123456.20260316.00001.R.2.1", "FI.FLAC.123456.20260316.00001.R.2.2",
             "FS.FLAC.123456.20260316.00001.R.2.1", "FS.FLAC.123456.20260316.00001.R.2.2",
             "GO.FLAC.123456.20260316.00001.R.2"]

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            for i, name in enumerate(names):
                await upload(sftp, "IN/" + name, b"x" * i)
            await upload(sftp, "INTEST-S/" + GO.replace(".T.", ".S."), b"")
    run(scenario())
    assert env.calls == [(OWNER, "IN", n, i) for i, n in enumerate(names)] + [
        (OWNER, "INTEST-S", GO.replace(".T.", ".S."), 0)]


def test_disconnect_mid_upload_discards_the_temp_file_and_announces_nothing(env: Env) -> None:
    intest = env.root() / "INTEST"

    async def scenario() -> None:
        async with serving(env) as port:
            conn = await connect(port, OWNER, env.keys[OWNER])
            sftp = await conn.start_sftp_client()
            f = await sftp.open("INTEST/" + FI, "wb")
            await f.write(b"half a file")
            assert len(os.listdir(intest)) == 1
            conn.abort()
            await wait_until(lambda: not os.listdir(intest), "the temp file to be removed")
    run(scenario())
    assert env.calls == []
    assert os.listdir(intest) == []


def test_session_ended_without_close_discards_the_upload(env: Env) -> None:
    intest = env.root() / "INTEST"

    async def scenario() -> None:
        async with serving(env) as port, connect(port, OWNER, env.keys[OWNER]) as conn:
            sftp = await conn.start_sftp_client()
            f = await sftp.open("INTEST/" + FI, "wb")
            await f.write(b"never closed")
            sftp.exit()  # clean end of the SFTP session, the handle still open
            await sftp.wait_closed()
            await wait_until(lambda: not os.listdir(intest), "the temp file to be removed")
    run(scenario())
    assert env.calls == []


def test_overwrite_before_go_keeps_the_last_upload(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            await upload(sftp, "INTEST/" + FI, b"first version")
            await upload(sftp, "INTEST/" + FI, b"second")
            assert sorted(await sftp.listdir("INTEST")) == [".", "..", FI]
    run(scenario())
    assert (env.root() / "INTEST" / FI).read_bytes() == b"second"
    assert env.calls == [(OWNER, "INTEST", FI, 13), (OWNER, "INTEST", FI, 6)]


def test_quota_exceeded_is_a_failure_and_the_partial_file_is_dropped(env: Env) -> None:
    async def scenario() -> None:
        async with serving(env) as port, session(env, port, OTHER) as sftp:
            await upload(sftp, "INTEST/" + FI, b"a" * 600)  # quota of OTHER is 1000 bytes
            with pytest.raises(asyncssh.SFTPError) as err:
                await upload(sftp, "INTEST/" + FI.replace(".1.1", ".2.1"), b"b" * 600)
            assert status_of(err) == asyncssh.FX_FAILURE
            assert "quota" in err.value.reason
            # replacing the file already there frees its bytes: this fits
            await upload(sftp, "INTEST/" + FI, b"c" * 900)
    run(scenario())
    assert os.listdir(env.root(OTHER) / "INTEST") == [FI]
    assert [c[3] for c in env.calls] == [600, 900]


def test_an_sftp_error_from_on_file_closed_reaches_the_client(env: Env) -> None:
    async def refuse(user: str, directory: str, name: str, size: int) -> None:
        raise asyncssh.SFTPFailure("disk full (injected)")

    async def scenario() -> None:
        async with serving(env, refuse) as port, session(env, port) as sftp:
            with pytest.raises(asyncssh.SFTPError) as err:
                await upload(sftp, "INTEST/" + FI, b"x")
            assert "disk full" in err.value.reason
    run(scenario())


def test_connection_lost_from_on_file_closed_drops_the_connection(env: Env) -> None:
    async def drop(user: str, directory: str, name: str, size: int) -> None:
        raise asyncssh.SFTPConnectionLost("connection dropped (injected fault)")

    async def scenario() -> None:
        async with serving(env, drop) as port, connect(port, OWNER, env.keys[OWNER]) as conn:
            sftp = await conn.start_sftp_client()
            with pytest.raises((asyncssh.SFTPError, asyncssh.DisconnectError)):
                await upload(sftp, "INTEST/" + FI, b"x")
            await asyncio.wait_for(conn.wait_closed(), 5)
    run(scenario())


def test_setstat_is_accepted_and_ignored(env: Env, tmp_path: Path) -> None:
    local = tmp_path / FI
    local.write_bytes(b"<x/>")
    os.chmod(local, 0o600)

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            await sftp.put(str(local), "INTEST/" + FI, preserve=True)
            await sftp.chmod("INTEST/" + FI, 0o777)
    run(scenario())
    assert env.calls == [(OWNER, "INTEST", FI, 4)]
    assert os.stat(env.root() / "INTEST" / FI).st_mode & 0o777 != 0o777


def test_partial_uploads_of_an_earlier_run_are_discarded_at_start(env: Env) -> None:
    """A server killed mid-upload leaves a temp file: the next start removes it (spec 5.7)."""
    leftover = env.root() / "INTEST" / f"{TEMP_PREFIX}crashed"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"x" * 1000)
    kept = env.root() / "INTEST" / "FI.FLAC.123456.20260316.00001.T.1.1"
    kept.write_bytes(b"<a/>")

    async def scenario() -> None:
        async with serving(env) as port, session(env, port) as sftp:
            assert [n for n in await sftp.listdir("INTEST") if n not in (".", "..")] == [
                kept.name]

    run(scenario())
    assert not leftover.exists()
    assert kept.read_bytes() == b"<a/>"
