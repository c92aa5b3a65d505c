"""A set cannot hold a judge worker for ever, eat the machine's memory, or delay other channels.

The cost of a set is made real with a rule plugin (loaded through ``FLA_PLUGINS`` into a real
``fla-sim serve`` and its judge workers) that spins or allocates when a declaration reference
says so: the simulator sees exactly what it would see from a rule whose cost explodes on a
sender's content, and the worker is really stopped.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fla_core.responses import Acrf, parse_answer
from fla_sim.config import SimulatorHome
from fla_sim.pytest_plugin import add_channel

FIXTURES = Path(__file__).parents[2] / "fixtures" / "fla"

HOSTILE_PLUGIN = '''
import pluggy

hookimpl = pluggy.HookimplMarker("fla")


@hookimpl
def fla_check_declaration(declaration, position, context):
    if "SPIN" in declaration.declaration_ref:
        while True:  # a rule that never ends on this content
            pass
    if "HOG" in declaration.declaration_ref:
        hoard = []
        for _ in range(40):  # 2 GB at most, so that without a limit the set is accepted
            hoard.append(bytearray(50 << 20))
    return []
'''


@pytest.fixture
def hostile_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "fla_test_costly_rule.py").write_text(HOSTILE_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    monkeypatch.setenv("FLA_PLUGINS", "fla_test_costly_rule")


def configure(home: SimulatorHome, **values: int) -> None:
    config = home.load()
    for key, value in values.items():
        setattr(config, key, value)
    home.save(config)


def set_files(tmp: Path, seq: str, marker: str = "", sender: str = "123456") -> list[Path]:
    xml = (FIXTURES / "valid-minimal.xml").read_text()
    xml = xml.replace("D-0897223670-2025-01", f"D-0897223670-2025-01{marker}")
    xml = xml.replace("<SenderNbr>123456</SenderNbr>", f"<SenderNbr>{sender}</SenderNbr>")
    folder = tmp / f"set-{sender}-{seq}"
    folder.mkdir()
    # fla-sim serve runs on the real clock: the names carry today's date (spec 4.5, N6)
    day = datetime.now(ZoneInfo("Europe/Brussels")).strftime("%Y%m%d")
    fi = folder / f"FI.FLAC.{sender}.{day}.{seq}.T.1.1"
    fi.write_text(xml)
    return [fi, f"GO.FLAC.{sender}.{day}.{seq}.T.1"]  # type: ignore[list-item]


def wait_acrf(home: SimulatorHome, user: str, timeout: float) -> Acrf:
    """The first ACRF in the channel's OUTTEST, waiting for it."""
    folder = home.channel_root(user) / "OUTTEST"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(folder.glob("FO.ACRF.*")):
            answer = parse_answer(path.read_bytes())
            assert isinstance(answer, Acrf)
            return answer
        time.sleep(0.05)
    raise AssertionError(f"no ACRF for {user} within {timeout} s")


def acrfs(home: SimulatorHome, user: str) -> list[str]:
    return sorted(p.name for p in (home.channel_root(user) / "OUTTEST").glob("FO.ACRF.*"))


def test_a_set_over_its_time_budget_is_stopped_answered_999_and_the_channel_goes_on(
        hostile_env, fla_sim_home, fla_channel, fla_sim_serve, sftp_upload, tmp_path):
    configure(fla_sim_home, judge_time_budget_s=2)
    served = fla_sim_serve(fla_sim_home.path)
    sftp_upload(served.port, fla_channel.user, fla_channel.ssh_key,
                set_files(tmp_path, "00001", "SPIN"))
    acrf = wait_acrf(fla_sim_home, fla_channel.user, 60)
    assert acrf.error_code == "999"
    assert "judge_time_budget_s" in (acrf.description or "")
    # the worker was replaced: the channel's next set is judged as usual
    sftp_upload(served.port, fla_channel.user, fla_channel.ssh_key,
                set_files(tmp_path, "00002"))
    deadline = time.monotonic() + 30
    while len(acrfs(fla_sim_home, fla_channel.user)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = parse_answer((fla_sim_home.channel_root(fla_channel.user) / "OUTTEST" /
                           acrfs(fla_sim_home, fla_channel.user)[1]).read_bytes())
    assert isinstance(second, Acrf) and second.accepted
    assert served.stop() == 0


def test_a_set_over_its_memory_budget_is_answered_999(
        hostile_env, fla_sim_home, fla_channel, fla_sim_serve, sftp_upload, tmp_path):
    configure(fla_sim_home, judge_memory_mb=300)
    served = fla_sim_serve(fla_sim_home.path)
    sftp_upload(served.port, fla_channel.user, fla_channel.ssh_key,
                set_files(tmp_path, "00001", "HOG"))
    acrf = wait_acrf(fla_sim_home, fla_channel.user, 60)
    assert acrf.error_code == "999"
    assert "judge_memory_mb" in (acrf.description or "")
    assert served.stop() == 0


def test_a_costly_set_does_not_delay_another_channels_set(
        hostile_env, fla_sim_home, fla_channel, fla_pki, fla_sim_serve, sftp_upload, tmp_path):
    other = add_channel(fla_sim_home, fla_pki, tmp_path / "other", user="other-payroll",
                        sender="654321", mandates=False)
    # one steady worker, as by default: the costly set holds it for the whole budget
    configure(fla_sim_home, judge_workers=1, judge_time_budget_s=60)
    served = fla_sim_serve(fla_sim_home.path)
    sftp_upload(served.port, fla_channel.user, fla_channel.ssh_key,
                set_files(tmp_path, "00001", "SPIN"))
    sftp_upload(served.port, other.user, other.ssh_key,
                set_files(tmp_path, "00001", sender="654321"))
    acrf = wait_acrf(fla_sim_home, other.user, 30)
    assert acrf.accepted
    assert acrfs(fla_sim_home, fla_channel.user) == []  # the costly set is still judged
    assert served.stop() == 0
