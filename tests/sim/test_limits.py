"""One client cannot take the simulator down: handle caps, login caps, the file limit, the log.

A session that opened ~20,000 handles once used up the process's file descriptors, after which
no channel could log in; 60 wrong keys and then the right one were accepted on one connection.
Real asyncssh clients against a real server on loopback; the caps are ``[server]`` keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim.config import CAPS, ChannelConfig, ConfigError, SimulatorConfig, SimulatorHome
from fla_sim.limits import FailureWindow, RepeatFilter
from fla_sim.server import start_server

OWNER = "acme-payroll"
OTHER = "other-channel"
FI = "FI.FLAC.654321.20260316.00001.T.1.1"
ANSWER = "FO.ACRF.123456.20260316.00001.T"


@pytest.fixture(scope="module")
def keys() -> dict[str, asyncssh.SSHKey]:
    return {name: asyncssh.generate_private_key("ssh-ed25519") for name in (OWNER, OTHER)}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "home"
    SimulatorHome.init(path)
    return path


@pytest.fixture
def home(template: Path, tmp_path: Path) -> SimulatorHome:
    shutil.copytree(template, tmp_path / "home")
    home = SimulatorHome(tmp_path / "home")
    (home.channel_root(OWNER) / "OUTTEST" / ANSWER).write_bytes(b"<ACRF/>")
    home.channel_root(OTHER)
    return home


@pytest.fixture
def config(home: SimulatorHome, keys: dict[str, asyncssh.SSHKey]) -> SimulatorConfig:
    config = home.load()
    config.channels = [
        ChannelConfig(OWNER, Quality.SOCIAL_SECRETARIAT, "0123456749", "123456",
                      [keys[OWNER].export_public_key().decode()]),
        ChannelConfig(OTHER, Quality.EMPLOYER, "0897223670", "654321",
                      [keys[OTHER].export_public_key().decode()])]
    return config


class Server:
    def __init__(self, port: int):
        self.port = port
        self.calls: list[tuple[str, str, str, int]] = []

    def connect(self, user: str, *client_keys: asyncssh.SSHKey) -> Any:
        return asyncssh.connect("127.0.0.1", self.port, username=user,
                                client_keys=list(client_keys), known_hosts=None,
                                agent_path=None)

    @contextlib.asynccontextmanager
    async def session(self, user: str, key: asyncssh.SSHKey
                      ) -> AsyncIterator[asyncssh.SFTPClient]:
        async with self.connect(user, key) as conn, conn.start_sftp_client() as sftp:
            yield sftp


@contextlib.asynccontextmanager
async def serving(home: SimulatorHome, config: SimulatorConfig) -> AsyncIterator[Server]:
    server: Server | None = None

    async def record(user: str, directory: str, name: str, size: int) -> None:
        assert server is not None
        server.calls.append((user, directory, name, size))

    acceptor = await start_server(home, config, record, port=0)
    server = Server(acceptor.get_port())
    try:
        yield server
    finally:
        acceptor.close()
        await acceptor.wait_closed()


async def outcome(call: Any) -> Any:
    try:
        return await call
    except (asyncssh.SFTPError, asyncssh.DisconnectError) as exc:
        return exc


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for(condition: Any, what: str, timeout: float = 5.0) -> None:
    """Poll a coroutine-returning condition the server reaches asynchronously (a disconnect)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- handles ---------------------------------------------------------------------------------


def test_a_session_and_a_channel_at_their_caps_leave_other_channels_working(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey]) -> None:
    config.max_handles_per_session = 8
    config.max_handles_per_channel = 12
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server, \
                server.session(OWNER, keys[OWNER]) as first, \
                server.session(OWNER, keys[OWNER]) as second:
            held = [await first.open(f"OUTTEST/{ANSWER}", "rb") for _ in range(8)]
            seen["session read"] = await outcome(first.open(f"OUTTEST/{ANSWER}", "rb"))
            seen["session upload"] = await outcome(first.open(f"INTEST/{FI}", "wb"))
            seen["session opendir"] = await outcome(first._handler.opendir(b"OUTTEST"))
            # the other session of the channel: 4 more, then the channel's cap
            held += [await second.open(f"OUTTEST/{ANSWER}", "rb") for _ in range(4)]
            seen["channel read"] = await outcome(second.open(f"OUTTEST/{ANSWER}", "rb"))
            # meanwhile another channel logs in, lists and uploads as usual
            async with server.session(OTHER, keys[OTHER]) as other:
                async with other.open(f"INTEST/{FI}", "wb") as f:
                    await f.write(b"<FLAFile/>")
                seen["other listing"] = await other.listdir("INTEST")
            # the refused session still answers, and reads what it holds
            seen["held read"] = await held[0].read()
            seen["session stat"] = (await first.stat(f"OUTTEST/{ANSWER}")).size
            # closing one handle of the first session makes room for the second
            await held.pop(0).close()
            held.append(await second.open(f"OUTTEST/{ANSWER}", "rb"))
            seen["channel again"] = await outcome(second.open(f"OUTTEST/{ANSWER}", "rb"))
            for f in held:
                await f.close()
            async with second.open(f"OUTTEST/{ANSWER}", "rb") as f:
                seen["after close"] = await f.read()
        seen["calls"] = server.calls

    asyncio.run(scenario())
    session_cap = "too many open files in this session (max 8); close some"
    channel_cap = ("too many open files on this channel, all its sessions together (max 12); "
                   "close some")
    for what in ("session read", "session upload", "session opendir"):
        assert isinstance(seen[what], asyncssh.SFTPFailure), (what, seen[what])
        assert seen[what].reason == session_cap
    for what in ("channel read", "channel again"):
        assert isinstance(seen[what], asyncssh.SFTPFailure), (what, seen[what])
        assert seen[what].reason == channel_cap
    assert FI in seen["other listing"]
    assert seen["calls"] == [(OTHER, "INTEST", FI, 10)]
    assert seen["held read"] == b"<ACRF/>" and seen["session stat"] == 7
    assert seen["after close"] == b"<ACRF/>"


def test_the_default_cap_stops_one_session_far_below_the_file_limit(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey]) -> None:
    cap = CAPS["max_handles_per_session"][0]
    assert config.max_handles_per_session == cap == 64
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server, \
                server.session(OWNER, keys[OWNER]) as sftp:
            before = open_fds()
            held = [await sftp.open(f"OUTTEST/{ANSWER}", "rb") for _ in range(cap)]
            refused = [await outcome(sftp.open(f"OUTTEST/{ANSWER}", "rb")) for _ in range(200)]
            seen["grew"] = open_fds() - before
            seen["refused"] = {type(r).__name__ + ": " + r.reason for r in refused}
            async with server.session(OTHER, keys[OTHER]) as other:
                seen["other"] = await other.listdir("/")
            for f in held:
                await f.close()
            seen["released"] = open_fds() - before
            async with sftp.open(f"OUTTEST/{ANSWER}", "rb") as f:
                seen["again"] = await f.read()

    asyncio.run(scenario())
    assert seen["refused"] == {
        "SFTPFailure: too many open files in this session (max 64); close some"}
    assert cap <= seen["grew"] <= cap + 8  # one descriptor per handle, the refused ones none
    assert seen["released"] <= 8
    assert "INTEST" in seen["other"]
    assert seen["again"] == b"<ACRF/>"


def test_directory_handles_count_and_are_given_back_at_close(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey]) -> None:
    config.max_handles_per_session = 3
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server, \
                server.session(OWNER, keys[OWNER]) as sftp:
            handler = sftp._handler  # raw OPENDIR/READDIR/CLOSE: the client API hides handles
            handles = [await handler.opendir(b"OUTTEST") for _ in range(3)]
            seen["fourth"] = await outcome(handler.opendir(b"/"))
            seen["file"] = await outcome(sftp.open(f"OUTTEST/{ANSWER}", "rb"))
            names, _ = await handler.readdir(handles[0])
            seen["names"] = sorted(n.filename for n in names)
            await handler.close(handles.pop())
            handles.append(await handler.opendir(b"/"))
            seen["full again"] = await outcome(handler.opendir(b"/"))
            for handle in handles:
                await handler.close(handle)
            seen["listing"] = sorted(await sftp.listdir("/"))

    asyncio.run(scenario())
    for what in ("fourth", "file", "full again"):
        assert isinstance(seen[what], asyncssh.SFTPFailure), (what, seen[what])
        assert "too many open files in this session (max 3)" in seen[what].reason
    assert seen["names"] == [b".", b"..", ANSWER.encode()]
    assert "OUTTEST" in seen["listing"]


def test_a_session_that_ends_gives_its_handles_back_to_the_channel(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey]) -> None:
    config.max_handles_per_channel = 5
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server, \
                server.session(OWNER, keys[OWNER]) as second:
            conn = await server.connect(OWNER, keys[OWNER])
            first = await conn.start_sftp_client()
            for _ in range(5):
                await first.open(f"OUTTEST/{ANSWER}", "rb")  # never closed by the client
            seen["full"] = await outcome(second.open(f"OUTTEST/{ANSWER}", "rb"))
            conn.abort()

            async def room() -> bool:
                result = await outcome(second.open(f"OUTTEST/{ANSWER}", "rb"))
                if isinstance(result, asyncssh.SFTPError):
                    return False
                await result.close()
                return True

            await wait_for(room, "the ended session's handles to be given back")

    asyncio.run(scenario())
    assert isinstance(seen["full"], asyncssh.SFTPFailure)
    assert "(max 5)" in seen["full"].reason


# -- logins ----------------------------------------------------------------------------------


# -- connections -----------------------------------------------------------------------------


async def raw_connection(port: int, source: str = "127.0.0.1"
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that never speaks SSH (a half-open login), from ``source``."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def greeted(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:
    """True when the server sends its SSH banner, False when it drops the connection."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ConnectionResetError:
        return False
    return line.startswith(b"SSH-2.0-")


def test_half_open_logins_from_one_source_cannot_lock_out_the_others(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        caplog: pytest.LogCaptureFixture) -> None:
    config.max_startups_per_source = 4
    config.max_startups = 6
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            flood = [await raw_connection(server.port, "127.0.0.2") for _ in range(4)]
            seen["flood greeted"] = [await greeted(r) for r, _w in flood]
            extra_r, extra_w = await raw_connection(server.port, "127.0.0.2")
            seen["fifth from the source"] = await greeted(extra_r)
            extra_w.close()
            # another source still logs in and works
            async with server.session(OWNER, keys[OWNER]) as sftp:
                seen["other source"] = await sftp.listdir("/")
            # the total cap: two more from a third address fill it, the next is dropped
            more = [await raw_connection(server.port, "127.0.0.3") for _ in range(2)]
            seen["more greeted"] = [await greeted(r) for r, _w in more]
            try:
                async with server.connect(OWNER, keys[OWNER]):
                    seen["past the total"] = "logged in"
            except (OSError, asyncssh.Error) as exc:
                seen["past the total"] = exc
            # a half-open login that ends makes room again
            for _reader, writer in flood:
                writer.close()
                await writer.wait_closed()

            async def logs_in() -> bool:
                try:
                    async with server.connect(OWNER, keys[OWNER]):
                        return True
                except (OSError, asyncssh.Error):
                    return False

            await wait_for(logs_in, "a login once the flood ended")
            for _reader, writer in more:
                writer.close()

    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        asyncio.run(scenario())
    assert seen["flood greeted"] == [True] * 4 and seen["more greeted"] == [True] * 2
    assert seen["fifth from the source"] is False
    assert "INTEST" in seen["other source"]
    assert isinstance(seen["past the total"], (OSError, asyncssh.Error)), seen["past the total"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("4 connections from 127.0.0.2 are logging in (max_startups_per_source)" in m
               for m in messages)
    assert any("6 connections are logging in (max_startups)" in m for m in messages)


def test_a_connection_that_does_not_log_in_in_time_is_closed(
        home: SimulatorHome, config: SimulatorConfig) -> None:
    config.login_timeout_s = 1
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            reader, writer = await raw_connection(server.port)
            seen["greeted"] = await greeted(reader)
            # no more bytes from us: the server must end the connection itself
            try:
                seen["rest"] = await asyncio.wait_for(reader.read(), 15)
            except ConnectionResetError:
                seen["rest"] = b""
            writer.close()

    asyncio.run(scenario())
    assert seen["greeted"] is True and seen["rest"] == b""


def test_a_channel_cannot_hold_more_connections_than_its_cap(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        caplog: pytest.LogCaptureFixture) -> None:
    config.max_connections_per_channel = 2
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            async with server.connect(OWNER, keys[OWNER]), server.connect(OWNER, keys[OWNER]):
                third = await server.connect(OWNER, keys[OWNER])

                # the server disconnects it right after its login (is_closed() is 2.15+)
                await asyncio.wait_for(third.wait_closed(), 10)
                try:
                    await third.start_sftp_client()
                    seen["reason"] = "sftp started"
                except asyncssh.Error as exc:
                    seen["reason"] = exc
                async with server.session(OTHER, keys[OTHER]) as sftp:
                    seen["other channel"] = await sftp.listdir("/")
            async with server.session(OWNER, keys[OWNER]) as sftp:
                seen["after"] = await sftp.listdir("/")

    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        asyncio.run(scenario())
    assert isinstance(seen["reason"], asyncssh.Error), seen["reason"]
    assert any("channel 'acme-payroll' has 2 connections already "
               "(max_connections_per_channel)" in r.getMessage() for r in caplog.records)
    assert "INTEST" in seen["other channel"] and "INTEST" in seen["after"]


def test_the_sftp_limits_extension_advertises_the_handle_cap(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        tmp_path: Path) -> None:
    """OpenSSH's sftp sizes its parallel requests by the handle limit the server advertises."""
    if shutil.which("sftp") is None:
        pytest.skip("OpenSSH sftp not installed")
    config.max_handles_per_session = 9
    key = tmp_path / "id_ed25519"
    keys[OWNER].write_private_key(str(key))
    key.chmod(0o600)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            proc = await asyncio.create_subprocess_exec(
                "sftp", "-vvv", "-b", "-", "-P", str(server.port), "-i", str(key),
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", f"{OWNER}@127.0.0.1",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            _out, err = await proc.communicate(b"ls\n")
            seen["code"], seen["log"] = proc.returncode, err.decode()

    asyncio.run(scenario())
    assert seen["code"] == 0, seen["log"]
    offered = b"limits@openssh.com" in getattr(asyncssh.sftp.SFTPServerHandler,
                                               "_packet_handlers", {})
    if offered:  # asyncssh 2.15+ serves limits@openssh.com
        assert "server handle limit 9;" in seen["log"], seen["log"]
    else:  # an older asyncssh offers no such extension: nothing to advertise wrongly
        assert "handle limit" not in seen["log"]


def test_sixty_wrong_keys_then_the_right_one_end_the_connection_at_the_sixth(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        caplog: pytest.LogCaptureFixture) -> None:
    wrong = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(60)]
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            seen["sixty"] = await outcome(server.connect(OWNER, *wrong, keys[OWNER]))
            seen["refused keys"] = sum("is not registered" in r.getMessage()
                                       for r in caplog.records)
            # five wrong keys leave the sixth attempt: the right key logs in (OpenSSH alike)
            async with server.connect(OWNER, *wrong[:5], keys[OWNER]) as conn:
                seen["five"] = conn.get_extra_info("username")
            async with server.session(OWNER, keys[OWNER]) as sftp:
                seen["after"] = await sftp.listdir("/")

    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        asyncio.run(scenario())
    assert isinstance(seen["sixty"], asyncssh.PermissionDenied), seen["sixty"]
    assert seen["sixty"].reason == "Too many authentication failures"
    assert seen["refused keys"] == 6
    assert any("too many authentication failures (max 6 per connection)" in r.getMessage()
               for r in caplog.records)
    assert seen["five"] == OWNER and "INTEST" in seen["after"]


def test_a_bad_signature_is_a_failed_attempt(home: SimulatorHome, config: SimulatorConfig
                                             ) -> None:
    """SHA-1 "ssh-rsa" signatures are refused (legacy_ssh_rsa off) and count against the cap."""
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    config.channels.append(ChannelConfig("legacy", Quality.EMPLOYER, "0123456749", "111111",
                                         [rsa.export_public_key().decode()]))
    config.max_auth_attempts = 1

    async def scenario() -> Any:
        async with serving(home, config) as server:
            return await outcome(asyncssh.connect(
                "127.0.0.1", server.port, username="legacy", client_keys=[rsa],
                known_hosts=None, agent_path=None, signature_algs=["ssh-rsa"]))

    result = asyncio.run(scenario())
    assert isinstance(result, asyncssh.PermissionDenied)
    assert result.reason == "Too many authentication failures"


def test_a_source_with_too_many_failed_logins_must_wait(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        caplog: pytest.LogCaptureFixture) -> None:
    config.max_auth_failures_per_source = 4
    config.auth_failure_window_s = 600
    wrong = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(4)]
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with serving(home, config) as server:
            # an agent that offers three other keys first: the login succeeds, nothing counts
            async with server.connect(OWNER, *wrong[:3], keys[OWNER]):
                pass
            # four failed attempts without a login: the address has had its share
            seen["failing"] = await outcome(server.connect(OWNER, *wrong))
            seen["right key"] = await outcome(server.connect(OWNER, keys[OWNER]))
            seen["other channel"] = await outcome(server.connect(OTHER, keys[OTHER]))

    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        asyncio.run(scenario())
    # the client ran out of keys (the window was not full before its fourth)
    assert isinstance(seen["failing"], asyncssh.PermissionDenied)
    assert "too many failed logins" not in seen["failing"].reason
    for what in ("right key", "other channel"):
        assert isinstance(seen[what], asyncssh.PermissionDenied), (what, seen[what])
        assert seen[what].reason.startswith(
            "too many failed logins from 127.0.0.1 (max 4 in 600 s); try again in "), seen[what]
    assert any("too many failed logins" in r.getMessage() for r in caplog.records)


def test_the_failure_window_slides_and_forgives() -> None:
    now = [1000.0]
    window = FailureWindow(clock=lambda: now[0])
    stamps = [window.add("10.0.0.1") for _ in range(3)]
    assert window.blocked_for("10.0.0.1", 3, 60) == pytest.approx(60)
    assert window.blocked_for("10.0.0.1", 4, 60) == 0
    assert window.blocked_for("10.0.0.2", 3, 60) == 0  # per source
    assert window.blocked_for("10.0.0.1", 0, 60) == 0  # 0: no limit
    now[0] += 45
    assert window.blocked_for("10.0.0.1", 3, 60) == pytest.approx(15)
    now[0] += 15
    assert window.blocked_for("10.0.0.1", 3, 60) == 0  # aged out
    stamps = [window.add("10.0.0.1") for _ in range(3)]
    window.forgive("10.0.0.1", stamps[:2])  # that connection logged in after all
    assert window.blocked_for("10.0.0.1", 2, 60) == 0
    assert window.blocked_for("10.0.0.1", 1, 60) == pytest.approx(60)


# -- the file limit and the log --------------------------------------------------------------


def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start(
        home: SimulatorHome, config: SimulatorConfig) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= open_fds() + 64:
        pytest.skip(f"hard limit {hard}: nothing to raise here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 64, hard))
    try:
        async def scenario() -> int:
            async with serving(home, config):
                return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

        assert asyncio.run(scenario()) == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_refusals_is_logged_at_a_bounded_rate(
        home: SimulatorHome, config: SimulatorConfig, keys: dict[str, asyncssh.SSHKey],
        caplog: pytest.LogCaptureFixture) -> None:
    refused: list[Any] = []

    async def scenario() -> None:
        async with serving(home, config) as server, \
                server.session(OWNER, keys[OWNER]) as sftp:
            for n in range(200):
                refused.append(await outcome(sftp.open(f"OUTTEST/{FI}.{n}", "wb")))

    with caplog.at_level(logging.WARNING, logger="fla_sim.server"):
        asyncio.run(scenario())
    assert all(isinstance(r, asyncssh.SFTPPermissionDenied) for r in refused)  # every one
    lines = [r for r in caplog.records if "refused: uploads go directly" in r.getMessage()]
    assert len(lines) == RepeatFilter().burst == 50


def test_the_repeat_filter_says_how_many_it_dropped() -> None:
    now = [0.0]
    repeats = RepeatFilter(burst=2, window=10, clock=lambda: now[0])
    logger = logging.getLogger("fla_sim.test_limits.repeats")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    logger.addHandler(Keep())
    repeats.install([logger])
    repeats.install([logger])  # once per logger
    assert logger.filters.count(repeats) == 1
    try:
        for n in range(5):
            logger.warning("refused %d", n)
        logger.info("received %d", 1)  # below WARNING: never limited
        logger.warning("another kind")
        now[0] = 10
        logger.warning("refused %d", 5)
        logger.warning("refused %d", 6)
    finally:
        logger.removeFilter(repeats)
    assert kept == ["refused 0", "refused 1", "received 1", "another kind",
                    "refused 5 (3 similar messages suppressed)", "refused 6"]


# -- configuration ---------------------------------------------------------------------------


def test_the_caps_are_server_keys_with_defaults_and_bounds(home: SimulatorHome) -> None:
    config = home.load()
    assert {key: getattr(config, key) for key in CAPS} == {
        "max_handles_per_session": 64, "max_handles_per_channel": 256, "max_auth_attempts": 6,
        "max_auth_failures_per_source": 30, "auth_failure_window_s": 60,
        "max_files_per_channel": 10_000, "max_startups": 256, "max_startups_per_source": 128,
        "login_timeout_s": 120, "max_connections_per_channel": 64}
    config.max_handles_per_session = 10
    config.auth_failure_window_s = 5
    home.save(config)
    again = home.load()
    assert again.max_handles_per_session == 10 and again.auth_failure_window_s == 5
    text = home.config_path.read_text("utf-8")
    for bad, message in (("max_auth_attempts = 0",
                          r"\[server\] max_auth_attempts = 0: must be 1-100"),
                         ("max_handles_per_channel = true",
                          r"max_handles_per_channel = true: must be a number, 1-1000000"),
                         ("auth_failure_window_s = 0.5",
                          r"auth_failure_window_s = 0\.5: must be a number, 1-86400")):
        key = bad.split(" = ")[0]
        home.config_path.write_text(
            "\n".join(bad if line.startswith(key + " =") else line
                      for line in text.splitlines()) + "\n", "utf-8")
        with pytest.raises(ConfigError, match=message):
            home.load()
