"""A session can reach its channel's root and nothing else, whatever is put in the tree (spec 3.3).

Links are planted straight on disk *after* the client logged in (at login the whole tree is
checked, see test_server.py), so that only the path policy of every request stands between the
client and the simulator's CA key: ``ChannelSFTPServer.map_path``. The requests are sent raw with
asyncssh's client (no client-side normalisation) and with OpenSSH's ``sftp``; none may return a
byte of the key, follow a link or name anything above the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from fla_core.model import Quality
from fla_sim.config import ChannelConfig, SimulatorHome
from fla_sim.server import start_server

OWNER = "acme-payroll"
FI = "FI.FLAC.123456.20260316.00001.T.1.1"
ANSWER = "FO.ACRF.123456.20260316.00001.T"
NOT_SERVED = "symbolic links are not served"


@dataclass
class Env:
    home: SimulatorHome
    key: asyncssh.SSHKey
    secret: bytes  # the simulator CA's private key: what a planted link would leak
    calls: list[tuple[str, str, str, int]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.home.path / "channels" / OWNER


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, asyncssh.SSHKey]:
    path = tmp_path_factory.mktemp("confinement") / "home"
    home = SimulatorHome.init(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    config = home.load()
    config.channels = [ChannelConfig(OWNER, Quality.SOCIAL_SECRETARIAT, "0123456749", "123456",
                                     [key.export_public_key().decode()])]
    home.save(config)
    return path, key


@pytest.fixture
def env(template: tuple[Path, asyncssh.SSHKey], tmp_path: Path) -> Env:
    shutil.copytree(template[0], tmp_path / "home", symlinks=True)
    home = SimulatorHome(tmp_path / "home")
    env = Env(home, template[1], home.ca_key_path.read_bytes())
    root = home.channel_root(OWNER)
    (root / "OUTTEST" / ANSWER).write_bytes(b"<ACRF/>")
    (root / "INTEST" / FI).write_bytes(b"<FLAFile/>")
    assert len(env.secret) > 100
    return env


@contextlib.asynccontextmanager
async def session(env: Env) -> AsyncIterator[asyncssh.SFTPClient]:
    """A real server on loopback and a logged-in asyncssh SFTP client."""
    async def record(user: str, directory: str, name: str, size: int) -> None:
        env.calls.append((user, directory, name, size))

    acceptor = await start_server(env.home, env.home.load(), record, port=0)
    try:
        async with asyncssh.connect("127.0.0.1", acceptor.get_port(), username=OWNER,
                                    client_keys=[env.key], known_hosts=None,
                                    agent_path=None) as conn, conn.start_sftp_client() as sftp:
            yield sftp
    finally:
        acceptor.close()
        await acceptor.wait_closed()


def plant_links(env: Env) -> None:
    """Links of every kind in the tree of a channel whose session is already running."""
    root, pki = env.root, env.home.path / "pki"
    os.symlink(env.home.ca_key_path, root / "OUTTEST" / "FO.key")      # to the CA key
    os.symlink("/etc/passwd", root / "OUTTEST" / "FO.passwd")           # outside the home
    os.symlink(pki, root / "OUTTEST" / "pki")                           # a directory outside
    os.symlink("../../..", root / "OUTTEST" / "up")                     # relative, climbing
    os.symlink("../INTEST", root / "OUTTEST" / "inside")                # a directory inside
    os.symlink(pki, root / "PKI")                                       # at the root
    os.symlink(env.home.ca_key_path, root / "INTEST" / FI.replace(".00001.", ".00002."))


# every request that takes a path, on each planted link and on paths through one
THROUGH_LINKS = ["OUTTEST/FO.key", "OUTTEST/FO.passwd", "OUTTEST/pki", "OUTTEST/pki/ca-key.pem",
                 "OUTTEST/up", "OUTTEST/up/pki/ca-key.pem", "OUTTEST/inside",
                 f"OUTTEST/inside/{FI}", "PKI", "PKI/ca-key.pem", "/PKI/./ca-key.pem",
                 "INTEST/" + FI.replace(".00001.", ".00002."), "OUTTEST/pki/../pki/ca-key.pem"]


async def outcome(call: Awaitable[Any]) -> Any:
    """The result of a request, or the SFTP error it was refused with."""
    try:
        return await call
    except asyncssh.SFTPError as exc:
        return exc


async def read_all(sftp: asyncssh.SFTPClient, path: str | bytes, mode: str = "rb") -> Any:
    """Open with ``mode`` and read to the end: the bytes, or the SFTP error."""
    try:
        async with sftp.open(path, mode) as f:
            return await f.read()
    except asyncssh.SFTPError as exc:
        return exc


def leaked(env: Env, results: list[Any]) -> list[Any]:
    """The results that carry any part of the CA key or a path above the channel root."""
    secret = env.secret
    chunks = [secret[i:i + 24] for i in range(40, len(secret) - 40, 24)]  # inside the base64
    home = os.fsencode(env.home.path)
    bad = []
    for result in results:
        blob = result if isinstance(result, bytes) else repr(result).encode()
        if any(chunk in blob for chunk in chunks) or home in blob or b"BEGIN" in blob:
            bad.append(result)
    return bad


def refused_as_link(result: Any) -> bool:
    return isinstance(result, asyncssh.SFTPPermissionDenied) and result.reason == NOT_SERVED


# -- links planted in the tree --------------------------------------------------------------------


def test_no_request_follows_or_serves_a_planted_link(env: Env) -> None:
    """open, stat, lstat, opendir, realpath, readlink, remove, setstat, statvfs: all refused."""
    results: dict[str, dict[str, Any]] = {}
    after: dict[str, Any] = {}

    async def scenario() -> None:
        async with session(env) as sftp:
            plant_links(env)
            for path in THROUGH_LINKS:
                results[path] = {
                    "open": await read_all(sftp, path),
                    "stat": await outcome(sftp.stat(path)),
                    "lstat": await outcome(sftp.lstat(path)),
                    # the raw request: the client API never shows a directory handle
                    "opendir": await outcome(sftp._handler.opendir(path.encode())),
                    "listdir": await outcome(sftp.listdir(path)),
                    "realpath": await outcome(sftp.realpath(path)),
                    "readlink": await outcome(sftp.readlink(path)),
                    "remove": await outcome(sftp.remove(path)),
                    "setstat": await outcome(sftp.chmod(path, 0o777)),
                    "statvfs": await outcome(sftp.statvfs(path)),
                    "append": await read_all(sftp, path, "ab"),
                }
            # the session is still fine, and shows none of the links
            for path in ("/", "OUTTEST", "INTEST"):
                after[path] = sorted(await outcome(sftp.listdir(path)))
            after["answer"] = await read_all(sftp, f"OUTTEST/{ANSWER}")

    asyncio.run(scenario())
    assert leaked(env, [r for by_request in results.values() for r in by_request.values()]) == []
    not_refused = {(path, request): result for path, by_request in results.items()
                   for request, result in by_request.items() if not refused_as_link(result)}
    assert not_refused == {}
    assert after == {"/": sorted([".", "..", "IN", "OUT", "INTEST", "OUTTEST", "INTEST-S",
                                  "OUTTEST-S"]),
                     "OUTTEST": [".", "..", ANSWER], "INTEST": [".", "..", FI],
                     "answer": b"<ACRF/>"}
    # nothing was changed through a link: the key, its mode, the links themselves
    assert env.home.ca_key_path.read_bytes() == env.secret
    assert env.home.ca_key_path.stat().st_mode & 0o777 == 0o600
    assert (env.root / "OUTTEST" / "FO.key").is_symlink()
    assert env.calls == []


def test_a_channel_directory_swapped_for_a_link_serves_nothing(env: Env) -> None:
    """OUTTEST itself replaced by a link to the home's pki/ after login."""
    results: list[Any] = []

    async def scenario() -> None:
        async with session(env) as sftp:
            outtest = env.root / "OUTTEST"
            outtest.rename(env.root.parent / "OUTTEST-away")
            os.symlink(env.home.path / "pki", outtest)
            results.extend([await read_all(sftp, "OUTTEST/ca-key.pem"),
                            await outcome(sftp.listdir("OUTTEST")),
                            await outcome(sftp.stat("OUTTEST/ca-key.pem")),
                            await outcome(sftp.lstat("OUTTEST")),
                            await outcome(sftp.realpath("OUTTEST/ca-key.pem")),
                            await outcome(sftp.remove("OUTTEST/ca-key.pem"))])

    asyncio.run(scenario())
    assert leaked(env, results) == []
    assert [r for r in results if not refused_as_link(r)] == []
    assert env.home.ca_key_path.read_bytes() == env.secret


def test_a_hard_link_to_the_key_is_not_served(env: Env) -> None:
    """A second name of a home file is no answer, though no link check sees it."""
    results: list[Any] = []
    hard = "FO.ACRF.123456.20260316.00009.T"

    async def scenario() -> None:
        async with session(env) as sftp:
            os.link(env.home.ca_key_path, env.root / "OUTTEST" / hard)
            results.extend([await read_all(sftp, f"OUTTEST/{hard}"),
                            await outcome(sftp.stat(f"OUTTEST/{hard}")),
                            await outcome(sftp.remove(f"OUTTEST/{hard}"))])
            assert hard not in await sftp.listdir("OUTTEST")

    asyncio.run(scenario())
    assert all(isinstance(r, asyncssh.SFTPNoSuchFile) for r in results), results
    assert leaked(env, results) == []


def test_other_things_put_in_the_tree_are_not_served(env: Env) -> None:
    """A directory in a channel directory, a file or directory at the root, a FIFO: absent."""
    results: list[Any] = []

    async def scenario() -> None:
        async with session(env) as sftp:
            (env.root / "OUTTEST" / "sub").mkdir()
            (env.root / "OUTTEST" / "sub" / ANSWER).write_bytes(b"<ACRF/>")
            (env.root / "notes.txt").write_bytes(b"root file")
            os.mkfifo(env.root / "OUTTEST" / "FO.fifo")
            for path in ("OUTTEST/sub", f"OUTTEST/sub/{ANSWER}", "notes.txt", "OUTTEST/FO.fifo"):
                results.extend([await read_all(sftp, path), await outcome(sftp.stat(path))])
            assert sorted(await sftp.listdir("OUTTEST")) == [".", "..", ANSWER]
            assert "notes.txt" not in await sftp.listdir("/")

    asyncio.run(scenario())
    assert all(isinstance(r, asyncssh.SFTPNoSuchFile) for r in results), results


# -- ".." and other tricks ------------------------------------------------------------------------

TRICKS = [b"../../pki/ca-key.pem", b"/../../pki/ca-key.pem", b"//pki/ca-key.pem",
          b"///pki/ca-key.pem", b"OUTTEST/../../pki/ca-key.pem", b"OUTTEST/../../../../etc/passwd",
          b"/etc/passwd", b"../../simulator.toml", b"../acme-payroll/../../pki/ca-key.pem",
          b"OUTTEST/./../.././pki/ca-key.pem", b"%2e%2e/%2e%2e/pki/ca-key.pem",
          b"..%2f..%2fpki%2fca-key.pem", b"..\\..\\pki\\ca-key.pem",
          b"\xc0\xae\xc0\xae/\xc0\xae\xc0\xae/pki/ca-key.pem",             # overlong UTF-8 "."
          "．．/．．/pki/ca-key.pem".encode(),                             # full-width dots
          b"OUTTEST/\x00/../../../pki/ca-key.pem", b"OUTTEST/..\x00/pki/ca-key.pem",
          b"OUTTEST/\xff/../../pki/ca-key.pem"]


def test_dotdot_and_encoded_paths_never_leave_the_root(env: Env) -> None:
    results: list[Any] = []
    answered: list[tuple[bytes, str, Any]] = []

    async def scenario() -> None:
        async with session(env) as sftp:
            for path in TRICKS:
                for request, result in (
                        ("open", await read_all(sftp, path)),
                        ("stat", await outcome(sftp.stat(path))),
                        ("lstat", await outcome(sftp.lstat(path))),
                        ("listdir", await outcome(sftp.listdir(path))),
                        ("remove", await outcome(sftp.remove(path))),
                        ("realpath", await outcome(sftp.realpath(path)))):
                    results.append(result)
                    if not isinstance(result, asyncssh.SFTPError):
                        answered.append((path, request, result))

    asyncio.run(scenario())
    assert leaked(env, results) == []
    # only REALPATH answers: a path in the root's own view, which holds no such file
    assert {request for _, request, _ in answered} <= {"realpath"}
    for path, _, real in answered:
        assert isinstance(real, bytes) and real.startswith(b"/"), (path, real)
        assert b"/../" not in real + b"/", (path, real)
    assert [r for r in results if isinstance(r, asyncssh.SFTPError)
            and "Uncaught" in str(r.reason)] == []
    assert env.calls == []


def test_realpath_is_lexical_inside_the_root(env: Env) -> None:
    async def scenario() -> None:
        async with session(env) as sftp:
            plant_links(env)
            assert await sftp.realpath(b"../../..") == b"/"
            assert await sftp.realpath(b"OUTTEST/../../INTEST") == b"/INTEST"
            # ".." after a link is taken lexically: the link is never entered
            assert await sftp.realpath(b"OUTTEST/pki/..") == b"/OUTTEST"
            assert await sftp.realpath(b"OUTTEST/up/../" + ANSWER.encode()) == (
                b"/OUTTEST/" + ANSWER.encode())
            assert await read_all(sftp, b"OUTTEST/up/../" + ANSWER.encode()) == b"<ACRF/>"

    asyncio.run(scenario())


# -- the same through OpenSSH's sftp ---------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH sftp client not installed")
def test_openssh_sftp_cannot_reach_a_planted_link(env: Env, tmp_path: Path) -> None:
    """The links appear during the session: the first upload's hand-off plants them."""
    identity = tmp_path / "id"
    env.key.write_private_key(str(identity))
    os.chmod(identity, 0o600)
    work = tmp_path / "work"
    work.mkdir()
    go = "GO.FLAC.123456.20260316.00001.T.1"
    (work / go).write_bytes(b"")

    async def plant(user: str, directory: str, name: str, size: int) -> None:
        env.calls.append((user, directory, name, size))
        plant_links(env)
        (env.root / "OUT").rename(env.root.parent / "OUT-away")  # a channel directory, too
        os.symlink(env.home.path / "pki", env.root / "OUT")

    batch = "\n".join([
        f"put {go} INTEST/",  # plants the links
        "-get OUTTEST/FO.key got1", "-get OUTTEST/pki/ca-key.pem got2",
        "-get OUTTEST/up/pki/ca-key.pem got3", "-get PKI/ca-key.pem got4",
        "-get ../../pki/ca-key.pem got5", "-get /../../pki/ca-key.pem got6",
        "-ls -l OUTTEST/pki", "-ls -l PKI", "-cd OUTTEST/pki", "-get ca-key.pem got7",
        "-ls -l OUTTEST/inside", "-rm OUTTEST/FO.key", "-chmod 777 OUTTEST/FO.key",
        "-get OUT/ca-key.pem got8", "-ls -l OUT", "-rm OUT/ca-key.pem",
        "ls -1 OUTTEST", "get OUTTEST/" + ANSWER + " answer", ""])

    async def main() -> tuple[int, str, str]:
        acceptor = await start_server(env.home, env.home.load(), plant, port=0)
        try:
            proc = await asyncio.create_subprocess_exec(
                "sftp", "-b", "-", "-P", str(acceptor.get_port()), "-i", str(identity),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{OWNER}@127.0.0.1", cwd=work,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(batch.encode()), 60)
            return proc.returncode or 0, out.decode(), err.decode()
        finally:
            acceptor.close()
            await acceptor.wait_closed()

    code, out, err = asyncio.run(main())
    assert code == 0, err
    assert env.calls == [(OWNER, "INTEST", go, 0)]  # the links were there for every command
    fetched = sorted(p.name for p in work.iterdir())
    assert leaked(env, [out.encode(), err.encode(), *((work / n).read_bytes() for n in fetched)]) \
        == []
    assert fetched == sorted([go, "answer"]), fetched
    assert (work / "answer").read_bytes() == b"<ACRF/>"
    listing = out.split("ls -1 OUTTEST", 1)[1]
    assert ANSWER in listing and "FO.key" not in listing and "pki" not in listing.lower()
    assert (env.root / "OUTTEST" / "FO.key").is_symlink()
    assert env.home.ca_key_path.read_bytes() == env.secret


# -- requests on an upload's handle ------------------------------------------------------------


def test_an_upload_handle_answers_every_request_with_a_proper_status(env: Env) -> None:
    """READ and ranges are refused (write-only, as on OpenSSH); FSTAT and fsync work."""
    seen: dict[str, Any] = {}
    name = FI.replace(".00001.", ".00003.")

    async def scenario() -> None:
        async with session(env) as sftp:
            for mode in ("wb", "r+b", "ab"):
                f = await sftp.open(f"INTEST/{name}", mode)
                await f.write(b"<FLAFile>")
                seen[f"{mode} read"] = await outcome(f.read(4, 0))
                seen[f"{mode} fstat"] = await outcome(f.stat())
                seen[f"{mode} fsync"] = await outcome(f.fsync())
                # the client side of the ranges extension came with asyncssh 2.15
                if hasattr(f, "request_ranges"):
                    seen[f"{mode} ranges"] = await outcome(_ranges(f))
                seen[f"{mode} statvfs"] = await outcome(f.statvfs())
                await f.close()

    asyncio.run(scenario())
    for mode in ("wb", "r+b", "ab"):
        read = seen[f"{mode} read"]
        assert isinstance(read, asyncssh.SFTPPermissionDenied), read
        assert read.reason.startswith("uploads cannot be read back")
        ranges = seen.get(f"{mode} ranges", asyncssh.SFTPPermissionDenied(""))
        assert isinstance(ranges, asyncssh.SFTPPermissionDenied), ranges
        fstat = seen[f"{mode} fstat"]
        assert isinstance(fstat, asyncssh.SFTPAttrs), fstat
        assert seen[f"{mode} fsync"] is None
        assert isinstance(seen[f"{mode} statvfs"], asyncssh.SFTPVFSAttrs)
    assert seen["wb fstat"].size == 9
    assert seen["r+b fstat"].size == 9  # over the first upload's 9 bytes, from offset 0
    assert seen["ab fstat"].size == 18  # appended to them
    assert all("Uncaught" not in str(getattr(r, "reason", "")) for r in seen.values())
    assert [c[2] for c in env.calls] == [name] * 3  # each upload completed normally


async def _ranges(f: asyncssh.SFTPClientFile) -> list[tuple[int, int]]:
    return [r async for r in f.request_ranges(0, 100)]


def test_an_answer_handle_cannot_be_written(env: Env) -> None:
    async def scenario() -> Any:
        async with session(env) as sftp, sftp.open(f"OUTTEST/{ANSWER}", "rb") as f:
            assert (await f.stat()).size == 7
            return await outcome(f.write(b"x", 0))

    result = asyncio.run(scenario())
    assert isinstance(result, asyncssh.SFTPPermissionDenied)
    assert (env.root / "OUTTEST" / ANSWER).read_bytes() == b"<ACRF/>"

