"""The SFTP clients people really use, against the simulator (docs/clients.md).

Each client is driven the way its users drive it: OpenSSH ``sftp`` and ``scp``, lftp, curl and
rclone as programs, paramiko and asyncssh as libraries. The matrix is one round trip per client:
connect, list, upload a signed set into INTEST in the channel's order (FI, FS, then GO), wait for
the answers, download and delete them. Then, per client, the cases where its default behaviour
used to lose data, fail or leave a trap: APPEND (curl, paramiko), requests on a GO the simulator
already archived (paramiko, rclone), temporary names (lftp), a GO before its FS (rclone), the exit
status (scp) and mkdir of an existing directory (asyncssh, curl, lftp).

A missing tool skips its tests on a developer's machine and fails them in CI (tests/conftest.py);
``./dev`` installs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncssh
import pytest

from fla_core import pki
from fla_core.model import Quality
from fla_core.responses import Acrf, Noti, parse_answer
from fla_core.triplet import write_fs
from fla_sim.api import Simulator
from fla_sim.config import ChannelConfig, SimulatorHome
from fla_sim.pytest_plugin import ChannelInfo, FixedClock, FlaPki, add_channel
from fla_sim.server import start_server

try:
    import paramiko
except ImportError:  # a developer's venv without the test extra: its tests skip (fail in CI)
    paramiko = None

pytestmark = [pytest.mark.interop]

AT = datetime(2026, 3, 16, 10, 15, tzinfo=ZoneInfo("Europe/Brussels"))
DAY = "20260316"
USER = "acme-payroll"
CHANNEL_DIRS = {"IN", "OUT", "INTEST", "OUTTEST", "INTEST-S", "OUTTEST-S"}
FIXTURE = Path(__file__).parents[2] / "fixtures" / "fla" / "valid-minimal.xml"


def needs(tool: str) -> pytest.MarkDecorator:
    """Skip (fail in CI) when a client program is missing."""
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")


NEEDS_PARAMIKO = pytest.mark.skipif(paramiko is None, reason="paramiko not installed")


def names_of(seq: str) -> tuple[str, str, str]:
    """FI, FS and GO names of the single-part set ``seq`` in INTEST."""
    stem = f"FLAC.123456.{DAY}.{seq}.T"
    return f"FI.{stem}.1.1", f"FS.{stem}.1.1", f"GO.{stem}.1"


def run(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a client program; unless ``ok`` is False a non-zero exit fails with its output."""
    proc = subprocess.run(list(args), cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)
    if ok:
        assert proc.returncode == 0, (f"{args[0]} exited {proc.returncode}\nstdout: "
                                      f"{proc.stdout}\nstderr: {proc.stderr}")
    return proc


def ssh_options(key: Path) -> list[str]:
    """OpenSSH options of an unattended login with one key and no host key check."""
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "PasswordAuthentication=no", "-o", "LogLevel=ERROR"]


# --- the simulator and its channel -------------------------------------------------------------

@dataclass
class World:
    """A running simulator with the spec's example channel, shared by a module's tests."""

    home: SimulatorHome
    sim: Simulator
    channel: ChannelInfo
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def port(self) -> int:
        assert self.sim.port is not None
        return self.sim.port

    @property
    def key(self) -> Path:
        return self.channel.ssh_key

    @property
    def root(self) -> Path:
        return self.home.channel_root(USER)

    def next_seq(self) -> str:
        return f"{next(self.seqs):05d}"

    def write_set(self, folder: Path, seq: str | None = None) -> tuple[Path, Path, Path]:
        """A signed set (the spec 7.2 FI, its FS, its GO) in ``folder``."""
        fi_name, _, go_name = names_of(seq or self.next_seq())
        folder.mkdir(parents=True, exist_ok=True)
        fi = folder / fi_name
        fi.write_bytes(FIXTURE.read_bytes())
        fs = write_fs(fi, self.channel.signer, signing_time=AT)
        go = folder / go_name
        go.write_bytes(b"")
        return fi, fs, go

    def answers_to(self, go: str) -> list[str]:
        """Names of the answer files (FO, FS, GO of its ACRF and NOTI) that name ``go``."""
        names: list[str] = []
        for path in (self.root / "OUTTEST").iterdir():
            if path.name.startswith("FO.") and parse_answer(path.read_bytes()).file_name == go:
                names += [path.name, "FS." + path.name[3:], "GO." + path.name[3:]]
        return sorted(names)


def make_pki(directory: Path) -> FlaPki:
    """A test CA at the fixed clock (what the ``fla_pki`` fixture does, once per module)."""
    directory.mkdir()
    ca = pki.make_ca("fla clients CA", not_before=AT - timedelta(days=1))
    pki.write_pem(directory / "ca.pem", ca.cert)
    return FlaPki(ca=ca, directory=directory, ca_path=directory / "ca.pem", at=AT)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One simulator for the module: each test uses its own sequence number."""
    base = tmp_path_factory.mktemp("clients")
    test_pki = make_pki(base / "pki")
    home = SimulatorHome.init(base / "home", at=AT)
    home.add_trust(test_pki.ca_path)
    channel = add_channel(home, test_pki, base / "channel")
    os.chmod(channel.ssh_key, 0o600)  # OpenSSH ignores a private key others can read
    with Simulator(home.path, clock=FixedClock(AT)) as sim:
        yield World(home, sim, channel)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare simulator home, copied by each test that runs its own listener."""
    path = tmp_path_factory.mktemp("bare") / "home"
    SimulatorHome.init(path)
    return path


class Listener:
    """The SFTP listener alone (``fla_sim.server``) in a thread, for the cases that need an
    extreme processor: it records each announced upload and, with ``archive``, moves the file
    out of the upload directory before the client's CLOSE is answered -- what the processor
    may do with a GO within milliseconds."""

    def __init__(self, home: SimulatorHome, archive: bool):
        self.home, self.archive = home, archive
        self.calls: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._acceptor: Any = None

    async def _closed(self, user: str, directory: str, name: str, size: int) -> None:
        self.calls.append(name)
        if self.archive:
            archive = self.home.path / "archive"
            archive.mkdir(exist_ok=True)
            os.replace(self.home.channel_root(user) / directory / name,
                       archive / f"{name}.{len(self.calls)}")

    def __enter__(self) -> Listener:
        self._thread.start()
        config = self.home.load()
        self._acceptor = self._call(start_server(self.home, config, self._closed, port=0))
        self.port = self._acceptor.get_port()
        return self

    async def _close(self) -> None:
        self._acceptor.close()
        await self._acceptor.wait_closed()

    def __exit__(self, *exc: object) -> None:
        # on the listener's own loop: asyncio's Server is not thread-safe (closing it from
        # this thread raced with the loop, "'NoneType' object is not iterable", once a run)
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)


def listener_home(template: Path, tmp_path: Path, world: World, **server: Any) -> SimulatorHome:
    """A copy of the bare home with the world's channel key and the given ``[server]`` keys."""
    shutil.copytree(template, tmp_path / "home")
    home = SimulatorHome(tmp_path / "home")
    config = home.load()
    quota = server.pop("quota_bytes", 1 << 30)
    config.channels = [ChannelConfig(USER, Quality.SOCIAL_SECRETARIAT, "0123456749", "123456",
                                     [world.channel.ssh_public], quota_bytes=quota)]
    for key, value in server.items():
        setattr(config, key, value)
    home.save(config)
    return home


# --- the clients ---------------------------------------------------------------------------------

class Client:
    """One SFTP client as its users run it. ``listing`` and ``delete`` return None where the
    client cannot do that (scp)."""

    name = ""

    def __init__(self, port: int, key: Path, work: Path):
        self.port, self.key, self.work = port, key, work
        work.mkdir(parents=True, exist_ok=True)

    def listing(self, directory: str) -> list[str] | None:
        raise NotImplementedError

    def upload(self, files: Sequence[Path], directory: str) -> None:
        raise NotImplementedError

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        raise NotImplementedError

    def delete(self, directory: str, names: Sequence[str]) -> bool | None:
        raise NotImplementedError


class OpenSshSftp(Client):
    name = "sftp"

    def batch(self, commands: Sequence[str], cwd: Path | None = None,
              ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["sftp", "-b", "-", "-P", str(self.port), *ssh_options(self.key),
                    f"{USER}@127.0.0.1"], cwd=cwd or self.work, stdin="\n".join(commands) + "\n",
                   ok=ok)

    def listing(self, directory: str) -> list[str]:
        out = self.batch([f"cd {directory}", "ls -1a"]).stdout
        return [line for line in out.splitlines() if not line.startswith("sftp>")]

    def upload(self, files: Sequence[Path], directory: str) -> None:
        self.batch([f"cd {directory}", *(f"put {f}" for f in files)])

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.batch([f"cd {directory}", *(f"get {n}" for n in names)], cwd=target)

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        self.batch([f"cd {directory}", *(f"rm {n}" for n in names)])
        return True


class Scp(Client):
    name = "scp"

    def scp(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["scp", "-P", str(self.port), *ssh_options(self.key), *args], cwd=self.work,
                   ok=ok)

    def listing(self, directory: str) -> None:
        return None  # scp has no listing

    def upload(self, files: Sequence[Path], directory: str) -> None:
        self.scp(*map(str, files), f"{USER}@127.0.0.1:{directory}/")  # one at a time, in order

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.scp(*(f"{USER}@127.0.0.1:{directory}/{n}" for n in names), f"{target}/")

    def delete(self, directory: str, names: Sequence[str]) -> None:
        return None  # scp cannot delete


class Paramiko(Client):
    name = "paramiko"

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        assert paramiko is not None
        transport = paramiko.Transport(("127.0.0.1", self.port))
        try:
            transport.connect(username=USER,
                              pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key)))
            yield paramiko.SFTPClient.from_transport(transport)
        finally:
            transport.close()

    def listing(self, directory: str) -> list[str]:
        with self.session() as sftp:
            return list(sftp.listdir(directory))

    def upload(self, files: Sequence[Path], directory: str) -> None:
        with self.session() as sftp:
            for f in files:
                sftp.put(str(f), f"{directory}/{f.name}")  # stats the file after CLOSE

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        with self.session() as sftp:
            for n in names:
                sftp.get(f"{directory}/{n}", str(target / n))

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        with self.session() as sftp:
            for n in names:
                sftp.remove(f"{directory}/{n}")
        return True


class Lftp(Client):
    name = "lftp"

    def lftp(self, commands: Sequence[str], *, settings: Sequence[str] = (), ok: bool = True,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        connect = " ".join(["ssh", "-a", "-x", *ssh_options(self.key)])
        script = [f'set sftp:connect-program "{connect}"',
                  # fail fast: by default lftp retries a failed command for ever
                  "set net:max-retries 2", "set net:reconnect-interval-base 1",
                  "set cmd:fail-exit yes", *settings,
                  f"open -u {USER}, -p {self.port} sftp://127.0.0.1", *commands]
        return run(["lftp", "-c", "; ".join(script)], cwd=cwd or self.work, ok=ok)

    def listing(self, directory: str) -> list[str]:
        out = self.lftp([f"cls -1a {directory}"]).stdout
        return [line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines()]

    def upload(self, files: Sequence[Path], directory: str) -> None:
        self.lftp([f"cd {directory}", *(f"put {f}" for f in files)])

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.lftp([f"cd {directory}", *(f"get {n}" for n in names)], cwd=target)

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        self.lftp([f"cd {directory}", f"rm {' '.join(names)}"])
        return True


class Curl(Client):
    name = "curl"

    @property
    def url(self) -> str:
        return f"sftp://127.0.0.1:{self.port}"

    def curl(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        # -k: no known_hosts check (curl's SFTP reads ~/.ssh/known_hosts otherwise)
        return run(["curl", "-sS", "-k", "--key", str(self.key), "-u", f"{USER}:", *args],
                   cwd=self.work, ok=ok)

    def listing(self, directory: str) -> list[str]:
        path = directory.strip("/")
        out = self.curl(f"{self.url}/{path}/" if path else f"{self.url}/").stdout
        return [line.split()[-1] for line in out.splitlines() if line.strip()]

    def upload(self, files: Sequence[Path], directory: str) -> None:
        for f in files:  # one file per invocation: the order is the order of the calls
            self.curl("-T", str(f), f"{self.url}/{directory}/")

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.curl("--output-dir", str(target),
                  *itertools.chain.from_iterable(("-o", n, f"{self.url}/{directory}/{n}")
                                                 for n in names))

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        # quote commands run before the listing of the directory URL
        self.curl(*itertools.chain.from_iterable(("-Q", f"rm /{directory}/{n}")
                                                 for n in names), f"{self.url}/{directory}/")
        return True


class Rclone(Client):
    name = "rclone"

    def rclone(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RCLONE_CONFIG": str(self.work / "rclone.conf"),
               "RCLONE_CONFIG_SIM_TYPE": "sftp", "RCLONE_CONFIG_SIM_HOST": "127.0.0.1",
               "RCLONE_CONFIG_SIM_PORT": str(self.port), "RCLONE_CONFIG_SIM_USER": USER,
               "RCLONE_CONFIG_SIM_KEY_FILE": str(self.key)}
        return run(["rclone", *args], cwd=self.work, env=env, ok=ok)

    def _names_file(self, names: Sequence[str]) -> str:
        path = self.work / "names.txt"
        path.write_text("".join(f"{n}\n" for n in names))
        return str(path)

    def listing(self, directory: str) -> list[str]:
        out = self.rclone("lsf", f"sim:{directory.strip('/')}").stdout
        return [line.rstrip("/") for line in out.splitlines()]

    def upload(self, files: Sequence[Path], directory: str) -> None:
        (folder,) = {f.parent for f in files}
        # one file at a time, all listed first, in name order: FI < FS < GO (docs/clients.md)
        self.rclone("copy", str(folder), f"sim:{directory}", "--transfers", "1",
                    "--check-first", "--order-by", "name,ascending",
                    "--files-from-raw", self._names_file([f.name for f in files]))

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        self.rclone("copy", f"sim:{directory}", str(target), "--files-from-raw",
                    self._names_file(names))

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        self.rclone("delete", f"sim:{directory}", "--files-from-raw", self._names_file(names))
        return True


class AsyncSsh(Client):
    name = "asyncssh"

    @contextlib.asynccontextmanager
    async def session(self) -> Any:
        async with (asyncssh.connect("127.0.0.1", self.port, username=USER,
                                     client_keys=[str(self.key)], known_hosts=None,
                                     agent_path=None) as conn,
                    conn.start_sftp_client() as sftp):
            yield sftp

    def listing(self, directory: str) -> list[str]:
        async def go() -> list[str]:
            async with self.session() as sftp:
                return list(await sftp.listdir(directory))
        return asyncio.run(go())

    def upload(self, files: Sequence[Path], directory: str) -> None:
        async def go() -> None:
            async with self.session() as sftp:
                for f in files:
                    await sftp.put(str(f), f"{directory}/{f.name}")
        asyncio.run(go())

    def download(self, directory: str, names: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)

        async def go() -> None:
            async with self.session() as sftp:
                for n in names:
                    await sftp.get(f"{directory}/{n}", str(target / n))
        asyncio.run(go())

    def delete(self, directory: str, names: Sequence[str]) -> bool:
        async def go() -> None:
            async with self.session() as sftp:
                for n in names:
                    await sftp.remove(f"{directory}/{n}")
        asyncio.run(go())
        return True


CLIENTS = [
    pytest.param(OpenSshSftp, id="sftp", marks=needs("sftp")),
    pytest.param(Scp, id="scp", marks=needs("scp")),
    pytest.param(Paramiko, id="paramiko", marks=NEEDS_PARAMIKO),
    pytest.param(Lftp, id="lftp", marks=needs("lftp")),
    pytest.param(Curl, id="curl", marks=needs("curl")),
    pytest.param(Rclone, id="rclone", marks=needs("rclone")),
    pytest.param(AsyncSsh, id="asyncssh"),
]


# --- the matrix: one round trip per client --------------------------------------------------------

@pytest.mark.parametrize("kind", CLIENTS)
def test_round_trip(world: World, kind: type[Client], tmp_path: Path) -> None:
    """Connect, list, upload FI, FS, GO, wait, download and delete the answers."""
    client = kind(world.port, world.key, tmp_path / "work")
    listed = client.listing("/")
    assert listed is None or set(listed) >= CHANNEL_DIRS, listed
    fi, fs, go = world.write_set(tmp_path / "outbox")
    client.upload([fi, fs, go], "INTEST")
    world.sim.drain()

    names = world.answers_to(go.name)
    assert len(names) == 6, names  # FO, FS, GO of the ACRF and of the NOTI
    listed = client.listing("OUTTEST")
    assert listed is None or set(names) <= set(listed), listed
    inbox = tmp_path / "inbox"
    client.download("OUTTEST", names, inbox)
    for n in names:
        assert (inbox / n).read_bytes() == (world.root / "OUTTEST" / n).read_bytes(), n
    answers = [parse_answer((inbox / n).read_bytes()) for n in names if n.startswith("FO.")]
    assert any(isinstance(a, Acrf) and a.accepted for a in answers), answers
    assert any(isinstance(a, Noti) for a in answers), answers

    if client.delete("OUTTEST", names) is None:  # scp: the sender deletes with another client
        for n in names:
            (world.root / "OUTTEST" / n).unlink()
    assert not set(names) & {p.name for p in (world.root / "OUTTEST").iterdir()}
    # the set was judged whole and archived (spec 5.3): nothing of it is left to sweep
    assert not {fi.name, fs.name, go.name} & {p.name for p in (world.root / "INTEST").iterdir()}


# --- item 2: APPEND appends (curl --append, paramiko mode "a") ----------------------------------

@needs("curl")
def test_curl_append_appends_to_an_unprocessed_upload(world: World, tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()
    head, tail = tmp_path / "head", tmp_path / "tail"
    head.write_bytes(data[:1000])
    tail.write_bytes(data[1000:])
    fi, _, _ = names_of(world.next_seq())
    curl = Curl(world.port, world.key, tmp_path / "work")
    curl.curl("-T", str(head), f"{curl.url}/INTEST/{fi}")
    curl.curl("--append", "-T", str(tail), f"{curl.url}/INTEST/{fi}")  # writes at offset 0
    assert (world.root / "INTEST" / fi).read_bytes() == data


@NEEDS_PARAMIKO
def test_paramiko_append_mode_appends(world: World, tmp_path: Path) -> None:
    data = FIXTURE.read_bytes()
    fi, _, _ = names_of(world.next_seq())
    with Paramiko(world.port, world.key, tmp_path).session() as sftp:
        with sftp.open(f"INTEST/{fi}", "w") as f:
            f.write(data[:1000])
        with sftp.open(f"INTEST/{fi}", "a") as f:  # paramiko writes from offset 0
            f.write(data[1000:1500])
            f.write(data[1500:])
    assert (world.root / "INTEST" / fi).read_bytes() == data


@needs("scp")
def test_scp_over_a_longer_unprocessed_upload_leaves_no_old_tail(world: World,
                                                                 tmp_path: Path) -> None:
    # scp (SFTP mode) opens without TRUNC and sets the size at the end: the size must count
    fi, _, _ = names_of(world.next_seq())
    local = tmp_path / fi
    local.write_bytes(b"x" * 5000)
    scp = Scp(world.port, world.key, tmp_path / "work")
    scp.upload([local], "INTEST")
    local.write_bytes(b"y" * 100)
    scp.upload([local], "INTEST")
    assert (world.root / "INTEST" / fi).read_bytes() == b"y" * 100


# --- item 3: a client's requests on a GO just closed and already archived ----------------------

@NEEDS_PARAMIKO
def test_paramiko_put_of_a_go_archived_at_once_succeeds(world: World, template: Path,
                                                        tmp_path: Path) -> None:
    go = tmp_path / names_of("00001")[2]
    go.write_bytes(b"")
    with Listener(listener_home(template, tmp_path, world), archive=True) as listener, \
            Paramiko(listener.port, world.key, tmp_path).session() as sftp:
        attrs = sftp.put(str(go), f"INTEST/{go.name}")  # its stat comes after the archiving
    assert attrs.st_size == 0
    assert listener.calls == [go.name]


@needs("rclone")
def test_rclone_copy_of_a_go_archived_at_once_succeeds_once(world: World, template: Path,
                                                            tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    go = outbox / names_of("00001")[2]
    go.write_bytes(b"")
    with Listener(listener_home(template, tmp_path, world), archive=True) as listener:
        # rclone's defaults: after the upload it sets the modification time, then reads it back
        Rclone(listener.port, world.key, tmp_path / "work").rclone("copy", str(outbox),
                                                                   "sim:INTEST")
    assert listener.calls == [go.name]  # one upload: no failure, no retry (ACRF-133)


@needs("rclone")
@NEEDS_PARAMIKO
def test_without_the_grace_those_clients_fail(world: World, template: Path,
                                              tmp_path: Path) -> None:
    """``close_grace_ms = 0``: the failures of the two tests above, for the record."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    go = outbox / names_of("00001")[2]
    go.write_bytes(b"")
    home = listener_home(template, tmp_path, world, close_grace_ms=0)
    with Listener(home, archive=True) as listener:
        with Paramiko(listener.port, world.key, tmp_path).session() as sftp, \
                pytest.raises(FileNotFoundError):
            sftp.put(str(go), f"INTEST/{go.name}")
        proc = Rclone(listener.port, world.key, tmp_path / "work").rclone(
            "copy", str(outbox), "sim:INTEST", "--retries", "2", ok=False)
    assert proc.returncode != 0
    assert listener.calls == [go.name] * 3  # paramiko's, then rclone's upload and its retry


def test_the_grace_is_for_the_session_that_closed_the_file_and_ends(
        world: World, template: Path, tmp_path: Path) -> None:
    go = names_of("00001")[2]
    home = listener_home(template, tmp_path, world, close_grace_ms=300)
    ran = time.monotonic()

    async def scenario(port: int) -> None:
        client = AsyncSsh(port, world.key, tmp_path)
        async with client.session() as mine, client.session() as other:
            async with mine.open(f"INTEST/{go}", "wb"):
                pass
            assert (await mine.stat(f"INTEST/{go}")).size == 0
            await mine.chmod(f"INTEST/{go}", 0o644)  # SETSTAT: accepted, changes nothing
            await mine.utime(f"INTEST/{go}", (0, 0))
            for attempt in (other.stat(f"INTEST/{go}"), other.chmod(f"INTEST/{go}", 0o644)):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await attempt
            # the grace ends: poll the condition (bounded), never sleep for luck
            while True:
                try:
                    await mine.stat(f"INTEST/{go}")
                except asyncssh.SFTPNoSuchFile:
                    break
                assert time.monotonic() - ran < 10, "the grace never ended"
                await asyncio.sleep(0.05)
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await mine.chmod(f"INTEST/{go}", 0o644)

    with Listener(home, archive=True) as listener:
        asyncio.run(scenario(listener.port))
    assert listener.calls == [go]  # SETSTAT announced nothing
    (archived,) = (home.path / "archive").iterdir()
    assert archived.read_bytes() == b"" and archived.stat().st_mode & 0o777 == 0o600


# --- item 4: temporary names (lftp, WinSCP's NAME.filepart) ------------------------------------

@needs("lftp")
@pytest.mark.parametrize("pattern", [".in.*", "*.filepart"])
def test_lftp_temporary_names_are_refused_at_open_with_the_fix(
        world: World, tmp_path: Path, pattern: str, caplog: pytest.LogCaptureFixture) -> None:
    fi, _, _ = world.write_set(tmp_path / "outbox")
    before = sorted(p.name for p in (world.root / "INTEST").iterdir())
    lftp = Lftp(world.port, world.key, tmp_path / "work")
    with caplog.at_level(logging.WARNING, "fla_sim.server"):
        proc = lftp.lftp(["cd INTEST", f"put {fi}"], ok=False,
                         settings=["set xfer:use-temp-file yes",
                                   f'set xfer:temp-file-name "{pattern}"'])
    assert proc.returncode != 0
    temp = pattern.replace("*", fi.name)
    # lftp shows the server's reason; OpenSSH's clients do not, hence the log line too
    assert "upload under the final name" in proc.stderr and "xfer:use-temp-file no" \
        in proc.stderr, proc.stderr
    assert any(temp in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in (world.root / "INTEST").iterdir()) == before  # no leftover
    lftp.lftp(["cd INTEST", f"put {fi}"])  # the user's fix: no temporary name
    assert (world.root / "INTEST" / fi.name).read_bytes() == fi.read_bytes()


@needs("lftp")
def test_with_names_accepted_a_leftover_never_blocks_the_quota(world: World, template: Path,
                                                               tmp_path: Path) -> None:
    """``refuse_unusable_names = false`` (spec 5.6 as written): the leftover of a refused
    rename stays until the orphan sweep, but does not count against the channel quota."""
    fi, _, _ = world.write_set(tmp_path / "outbox")
    size = fi.stat().st_size
    home = listener_home(template, tmp_path, world, refuse_unusable_names=False,
                         quota_bytes=size + size // 2)
    with Listener(home, archive=False) as listener:
        lftp = Lftp(listener.port, world.key, tmp_path / "work")
        proc = lftp.lftp(["cd INTEST", f"put {fi}"], ok=False,
                         settings=["set xfer:use-temp-file yes",
                                   'set xfer:temp-file-name "*.filepart"'])
        assert proc.returncode != 0 and "rename is not allowed" in proc.stderr, proc.stderr
        assert listener.calls == [f"{fi.name}.filepart"]
        lftp.lftp(["cd INTEST", f"put {fi}"])  # leftover + this file exceed the quota
    intest = home.channel_root(USER) / "INTEST"
    assert sorted(p.name for p in intest.iterdir()) == [fi.name, f"{fi.name}.filepart"]


# --- item 5: a GO before its FS (rclone's parallel transfers) ----------------------------------

@needs("rclone")
def test_an_fs_after_its_go_is_reported_in_log_events_and_status(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    from fla_sim import cli

    fi, fs, go = world.write_set(tmp_path / "outbox")
    stem = go.name[3:-2]
    rclone = Rclone(world.port, world.key, tmp_path / "work")
    with caplog.at_level(logging.WARNING, "fla_sim.processor"):
        for f in (fi, go):  # what rclone's 4 parallel transfers may do: the FS comes last
            rclone.rclone("copyto", str(f), f"sim:INTEST/{f.name}")
        world.sim.drain()
        rclone.rclone("copyto", str(fs), f"sim:INTEST/{fs.name}")
    world.sim.drain()

    # the verdict is the spec's: the set was judged with the files present at its GO
    (acrf,) = [a for a in (parse_answer((world.root / "OUTTEST" / n).read_bytes())
                           for n in world.answers_to(go.name) if n.startswith("FO."))
               if isinstance(a, Acrf)]
    assert acrf.accepted
    warning = [r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING and fs.name in r.getMessage()]
    assert len(warning) == 1 and "judged without it" in warning[0] and "GO last" in warning[0]
    assert world.sim.journal is not None
    (event,) = world.sim.journal.set_events(stem=stem)
    assert (event.kind, event.name, event.directory) == ("late-file", fs.name, "INTEST")
    assert cli.main(["status", str(world.home.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["text"] for e in report["set_events"] if e["stem"] == stem] == [event.text]
    assert cli.main(["status", str(world.home.path)]) == 0
    assert "set events" in capsys.readouterr().out


# --- item 6: scp's exit status ---------------------------------------------------------------

@needs("scp")
def test_scp_exits_0_after_a_successful_upload(world: World, tmp_path: Path) -> None:
    fi, _, _ = world.write_set(tmp_path / "outbox")
    proc = Scp(world.port, world.key, tmp_path).scp(str(fi), f"{USER}@127.0.0.1:INTEST/",
                                                    ok=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert (world.root / "INTEST" / fi.name).read_bytes() == fi.read_bytes()


# --- item 7: mkdir of a directory that exists ---------------------------------------------------

def test_asyncssh_makedirs_exist_ok_goes_on(world: World, tmp_path: Path) -> None:
    fi, _, _ = world.write_set(tmp_path / "outbox")

    async def scenario() -> None:
        async with AsyncSsh(world.port, world.key, tmp_path).session() as sftp:
            await sftp.makedirs("INTEST", exist_ok=True)
            await sftp.makedirs("/INTEST", exist_ok=True)
            await sftp.put(str(fi), f"INTEST/{fi.name}")
            with pytest.raises(asyncssh.SFTPFailure):  # as OpenSSH: FAILURE, not DENIED
                await sftp.mkdir("INTEST")
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="cannot be created"):
                await sftp.makedirs("INTEST/sub", exist_ok=True)

    asyncio.run(scenario())
    assert (world.root / "INTEST" / fi.name).is_file()
    assert not (world.root / "INTEST" / "sub").exists()


@needs("curl")
def test_curl_ftp_create_dirs_uploads(world: World, tmp_path: Path) -> None:
    fi, _, _ = world.write_set(tmp_path / "outbox")
    curl = Curl(world.port, world.key, tmp_path / "work")
    curl.curl("--ftp-create-dirs", "-T", str(fi), f"{curl.url}/INTEST/")
    assert (world.root / "INTEST" / fi.name).read_bytes() == fi.read_bytes()


@needs("lftp")
def test_lftp_mirror_reverse_uploads_the_set_in_order(world: World, tmp_path: Path) -> None:
    fi, _, go = world.write_set(tmp_path / "outbox")
    Lftp(world.port, world.key, tmp_path / "work").lftp([f"mirror -R {fi.parent} INTEST"])
    world.sim.drain()
    (acrf,) = [a for a in (parse_answer((world.root / "OUTTEST" / n).read_bytes())
                           for n in world.answers_to(go.name) if n.startswith("FO."))
               if isinstance(a, Acrf)]
    assert acrf.accepted
    assert world.sim.journal is not None
    assert world.sim.journal.set_events(stem=go.name[3:-2]) == []  # FI and FS came first
