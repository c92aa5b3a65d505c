"""One home per concept (the issue "Keep the promises and make the code carryable").

Each test fails when a second copy of a concept reappears: the modules that use it must take
it from its home, so they can never disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from fla_core import model, names, transport
from fla_core.model import ANSWER_DIRS, CHANNEL_DIRS, UPLOAD_DIRS, Environment

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_directory_environment_mapping_of_spec_4_4() -> None:
    assert {env: (env.upload_dir, env.answer_dir) for env in Environment} == {
        "R": ("IN", "OUT"), "T": ("INTEST", "OUTTEST"), "S": ("INTEST-S", "OUTTEST-S")}
    for env in Environment:
        assert Environment.of_dir(env.upload_dir) is env is Environment.of_dir(env.answer_dir)
        assert Environment.of_upload_dir(env.upload_dir) is env
        assert Environment.of_upload_dir(env.answer_dir) is None
    assert Environment.of_dir("in") is None and Environment.of_upload_dir("NEW") is None
    assert set(CHANNEL_DIRS) == {*UPLOAD_DIRS, *ANSWER_DIRS} and len(CHANNEL_DIRS) == 6
    assert tuple(Environment) == names.ENVIRONMENTS


def test_every_module_takes_the_directories_from_model() -> None:
    from fla_sim import config, sftp_session, uploads

    assert transport.ANSWER_DIRS is model.ANSWER_DIRS
    assert config.CHANNEL_DIRS is model.CHANNEL_DIRS
    assert frozenset(UPLOAD_DIRS) == uploads.UPLOAD_DIRS
    assert frozenset(ANSWER_DIRS) == sftp_session.ANSWER_DIRS


def test_no_other_table_of_directory_names() -> None:
    """A literal holding two directory names is a table: only ``fla_core.model`` has one."""
    table = re.compile(r'"(?:IN|OUT)(?:TEST)?(?:-S)?"\s*[,:]\s*"(?:IN|OUT|R|T|S)')
    found = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if table.search(line) and p.name != "model.py"]
    assert found == []


def test_names_owns_the_splitting_of_file_names() -> None:
    """Stems, set keys and prefixes come from ``fla_core.names``, not from a local ``split``.

    The exceptions left: the transport orders the parts of a set by their last element, and
    the CLI splits a dotted *module* path (not a file name).
    """
    pattern = re.compile(r'(split|partition)\("\."|name\[(3:|:2|:3)\]|go\[3:\]')
    allowed = {"fla_core/names.py": None, "fla_core/cli.py": 1, "fla_core/transport.py": 1}
    found: dict[str, int] = {}
    for p in SRC.rglob("*.py"):
        hits = sum(bool(pattern.search(line)) for line in p.read_text().splitlines())
        if hits:
            found[str(p.relative_to(SRC))] = hits
    for path, count in found.items():
        assert path in allowed, f"{path}: split a file name with fla_core.names"
        assert allowed[path] is None or count <= allowed[path], path


def test_one_builder_of_the_name_check_context() -> None:
    """The simulator (P1, pre-scan) and ``fla check`` see a channel through the same builder."""
    from datetime import date

    from fla_core.model import Quality
    from fla_core.names import ChannelNameContext, NameRules
    from fla_core.settings import ChannelProfile, Settings
    from fla_sim.config import ChannelConfig

    profile = ChannelProfile(user="acme", sender="123456", quality=Quality.SOCIAL_SECRETARIAT,
                             company_id="0123456749", applications=frozenset({"FLAC", "DMFA"}))
    config = ChannelConfig(user="acme", quality=Quality.SOCIAL_SECRETARIAT,
                           company="0123456749", sender="123456", ssh_keys=[],
                           applications=frozenset({"DMFA", "FLAC"}))
    expected = ChannelNameContext("123456", "INTEST", frozenset({"FLAC", "DMFA"}))
    assert ChannelNameContext.of(profile, "INTEST") == expected
    assert ChannelNameContext.of(config, "INTEST") == expected
    settings = Settings.from_mapping({"max_age_days": 30, "max_parts": 3})
    assert NameRules.of(settings, date(2026, 3, 16)) == NameRules(date(2026, 3, 16), 30, 3)
    built = [f"{p.relative_to(SRC)}" for p in SRC.rglob("*.py")
             if re.search(r"ChannelNameContext\(|NameRules\(today=\w+, max", p.read_text())]
    assert built == []  # only ChannelNameContext.of and NameRules.of build them
