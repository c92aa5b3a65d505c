"""The simulator home: init, simulator.toml, configuration changes (spec 2.2, 3.1, 5.8)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from fla_core import pki
from fla_core.mandates import MandateRecord
from fla_core.model import Quality
from fla_sim.config import CHANNEL_DIRS, ConfigError, FaultSpec, SimulatorHome

NOW = datetime(2026, 3, 16, 9, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "home"
    SimulatorHome.init(path, at=NOW)
    return path


@pytest.fixture
def home(template: Path, tmp_path: Path) -> SimulatorHome:
    shutil.copytree(template, tmp_path / "home")
    return SimulatorHome(tmp_path / "home")


@pytest.fixture(scope="module")
def ssh_pub() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def add_acme(home: SimulatorHome, ssh_pub: str, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"applications": ["FLAC", "DMFA", "DIMN"]} | kw
    return home.add_channel("acme-payroll", "social-secretariat", "0123456749", "123456",
                            [ssh_pub], **args)  # type: ignore[arg-type]


# -- init -----------------------------------------------------------------------------------------


def test_init_creates_host_key_pki_config_and_directories(home: SimulatorHome) -> None:
    key = asyncssh.read_private_key(home.host_key_path)
    assert key.algorithm == b"ssh-ed25519"
    ca = x509.load_pem_x509_certificate(home.ca_cert_path.read_bytes())
    answer = x509.load_pem_x509_certificate(home.answer_cert_path.read_bytes())
    assert answer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "BATCH simulator 999999"
    answer.verify_directly_issued_by(ca)
    config = home.load()
    assert (config.host, config.port) == ("127.0.0.1", 8022)
    assert config.channels == [] and config.mandates == [] and config.faults == []
    assert config.settings.max_parts == 9 and config.settings.fs_policy["R"] == "required"
    assert config.trust_anchors == ["pki/ca.pem"]
    for sub in ("keys", "certs", "trust", "channels", "archive"):
        assert (home.path / sub).is_dir()


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_accepts_the_answer_certificate_chain(home: SimulatorHome) -> None:
    result = subprocess.run(["openssl", "verify", "-CAfile", str(home.ca_cert_path),
                             str(home.answer_cert_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_answer_signer_pairs_the_answer_key_and_certificate(home: SimulatorHome) -> None:
    signer = home.answer_signer()
    assert signer.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        signer.key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_init_refuses_an_existing_home_unless_forced(home: SimulatorHome) -> None:
    before = home.host_key_path.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        SimulatorHome.init(home.path)
    assert home.host_key_path.read_bytes() == before
    SimulatorHome.init(home.path, force=True)
    assert home.host_key_path.read_bytes() != before


# -- load errors name the file, the key and the fix ------------------------------------------------


def write_config(home: SimulatorHome, text: str) -> None:
    home.config_path.write_text(text, "utf-8")


def test_missing_home_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"simulator\.toml: not found.*fla-sim init"):
        SimulatorHome(tmp_path / "nowhere").load()


@pytest.mark.parametrize(("text", "expected"), [
    ("[server\n", "not valid TOML"),
    ("[server]\nanswer_delay_msec = 5\n", "[server]: unknown key 'answer_delay_msec'; known: "
     "host, port"),
    ("[server]\njudge_worker = 2\n", "'judge_worker'; known: host, port, legacy_ssh_rsa, "
     "durability, ciphers, refuse_unusable_names, prescan_min_bytes, judge_workers"),
    ("[server]\nkeep_uploads = 'yes'\n", "[server] keep_uploads = 'yes': must be true or false"),
    ("[server]\nfs_layout = 'loose'\n", "[server] fs_layout = 'loose': must be 'lenient' or "
     "'strict'"),
    ("[server]\nfs_policy = { R = 'maybe' }\n", "[server] fs_policy = {'R': 'maybe'}: must be a "
     "table of R, T and/or S"),
    ("[server]\ntwo_level_qualities = 'employer'\n", "[server] two_level_qualities = "
     "'employer': must be a list of qualities"),
    ("[server]\ntimezone = 1\n", "[server] timezone = 1: must be a time zone name"),
    ("[server]\nmax_parts = 12\n", "[server] max_parts = 12: must be 1-9"),
    ("[server]\nport = 'x'\n", "[server] port = 'x': must be a number, 0-65535"),
    ("[servers]\n", "unknown table [servers]"),
    ("[[channel]]\nuser = 'a'\nquality = 'employer'\nssh_keys = []\n", "missing key 'company'"),
    ("[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
     "sender = '999999'\nssh_keys = []\n", "#1 (user 'a'): key 'sender': sender 999999: "
     "000000 and 999999 are reserved"),
    ("[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
     "sender = '\u0661\u0662\u0663\u0664\u0665\u0666'\nssh_keys = []\n",
     "key 'sender': sender '\u0661\u0662\u0663\u0664\u0665\u0666': a sender number is 6 "
     "digits 0-9"),
    ("[[channel]]\nuser = '..'\nquality = 'employer'\ncompany = '0123456749'\n"
     "sender = '123456'\nssh_keys = []\n", "[[channel]] #1 (user '..'): key 'user': channel "
     "user '..': not a plain name"),
    ("[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
     "sender = '123456'\nssh_keys = []\n[[channel]]\nuser = 'A'\nquality = 'employer'\n"
     "company = '0897223670'\nsender = '654321'\nssh_keys = []\n",
     "[[channel]] #2: key 'user': channel user 'A' is defined twice as 'a'"),
    ("[[mandate]]\nlevel = 1\nemployer = '0897223607'\nrepresentative = '0123456749'\n"
     "start = '20241'\n", "[[mandate]] #1: employer must be a valid 10-digit enterprise number, "
     "got '0897223607' (wrong check digits)"),
    ("[[mandate]]\nlevel = 2\nemployer = '0897223670'\nrepresentative = '0123456749'\n"
     "sender = '\u0661\u0662\u0663\u0664\u0665\u0666'\n", "6-digit sender number"),
    ("[[channel]]\nuser = 'a'\nquality = 'boss'\ncompany = '0123456749'\nsender = '123456'\n"
     "ssh_keys = []\n", "(user 'a'): key 'quality': unknown quality 'boss'"),
    ("[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
     "sender = '123456'\nssh_keys = ['keys/gone.pub']\n", "cannot read"),
    ("[[mandate]]\nlevel = 1\nemployer = '0897223670'\nrepresentative = '0123456749'\n",
     "start quarter"),
    ("[[fault]]\nwhen = 'upload'\naction = 'explode'\n", "action"),
    ("[server]\nciphers = ['rot13']\n", "key 'ciphers': unknown ['rot13']"),
    ("[server]\nciphers = []\n", "[server]: key 'ciphers': give at least one cipher"),
    ("[server]\njudge_workers = -1\n", "[server] judge_workers = -1: must be 0-64"),
])
def test_bad_configuration_is_reported_with_file_and_key(home: SimulatorHome, text: str,
                                                         expected: str) -> None:
    write_config(home, text)
    with pytest.raises(ConfigError) as err:
        home.load()
    assert str(home.config_path) in str(err.value)
    assert expected in str(err.value)


def test_server_settings_round_trip(home: SimulatorHome) -> None:
    write_config(home, "[server]\nport = 2222\nanswer_delay_ms = 250\nkeep_uploads = true\n"
                       "fs_policy = { T = 'required' }\ndaily_max_hours = '9.50'\n"
                       "legacy_ssh_rsa = true\nciphers = ['aes256-ctr']\njudge_workers = 0\n"
                       "\n[[fault]]\nwhen = 'upload'\n"
                       "action = 'drop-connection'\nmatch = 'FI.*'\ntimes = 1\n")
    config = home.load()
    assert config.port == 2222 and config.legacy_ssh_rsa
    assert config.ciphers == ("aes256-ctr",) and config.judge_workers == 0
    assert config.settings.answer_delay_ms == 250 and config.settings.keep_uploads
    assert config.settings.fs_policy == {"R": "required", "T": "required", "S": "optional"}
    assert config.settings.daily_max_hours == Decimal("9.50")
    assert config.faults == [FaultSpec("upload", "drop-connection", match="FI.*", times=1)]
    home.save(config)
    assert home.load() == config


def test_save_round_trips_any_string(home: SimulatorHome) -> None:
    """Newlines, quotes, backslashes, control and non-ASCII characters survive save + load
    (the hand-written writer before tomli-w wrote a newline raw: the file no longer loaded)."""
    odd = 'l1\nl2 "quoted" back\\slash tab\t bell\x07 \u00e9\u20ac \U0001f600 \'single\''
    config = home.load()
    config.host = odd
    config.crls = [odd]
    config.faults = [FaultSpec("upload", "force-anomaly", match=odd, code=odd, times=2)]
    home.save(config)
    assert home.load() == config
    text = home.config_path.read_text("utf-8")
    assert text.startswith("# fla-sim simulator home")  # the header comment is kept
    assert "[[fault]]" in text and not list(home.path.glob(".simulator.toml.*"))


def _numeric_server_keys() -> list[tuple[str, object]]:
    from fla_core.settings import NUMBER_RANGES
    from fla_sim.config import SERVER_NUMBERS

    keys = [(key, low) for key, (low, _) in NUMBER_RANGES.items()]
    return keys + [(key, low) for key, (_, low, _) in SERVER_NUMBERS.items()]


@pytest.mark.parametrize(("key", "lowest"), _numeric_server_keys())
def test_every_numeric_server_key_refuses_a_value_below_its_lowest(
        home: SimulatorHome, key: str, lowest: int) -> None:
    write_config(home, f"[server]\n{key} = {lowest}\n")
    home.load()  # the lowest itself is fine
    write_config(home, f"[server]\n{key} = {lowest - 1}\n")
    with pytest.raises(ConfigError) as err:
        home.load()
    assert f"simulator.toml [server] {key} = {lowest - 1}: must be {lowest}" in str(err.value)


@pytest.mark.parametrize("key", ["answer_delay_ms", "noti_delay_ms", "orphan_timeout_s",
                                 "max_file_size", "close_grace_ms", "prescan_min_bytes"])
def test_negative_delays_and_sizes_are_refused_naming_the_key(home: SimulatorHome,
                                                             key: str) -> None:
    write_config(home, f"[server]\n{key} = -5\n")
    with pytest.raises(ConfigError, match=rf"\[server\] {key} = -5: must be [01]"):
        home.load()


@pytest.mark.parametrize("value", ["true", "'5'", "1.5"])
def test_an_integer_server_key_refuses_other_types(home: SimulatorHome, value: str) -> None:
    write_config(home, f"[server]\nanswer_delay_ms = {value}\n")
    with pytest.raises(ConfigError, match=r"answer_delay_ms = .*: must be a number, 0 or more"):
        home.load()


def test_a_negative_channel_quota_is_refused(home: SimulatorHome) -> None:
    write_config(home, "[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
                       "sender = '123456'\nssh_keys = []\nquota_bytes = -1\n")
    with pytest.raises(ConfigError, match=r"\(user 'a'\) quota_bytes = -1: must be 0 or more"):
        home.load()


CHANNEL_A = ("[[channel]]\nuser = 'a'\nquality = 'employer'\ncompany = '0123456749'\n"
             "sender = '123456'\nssh_keys = []\n")


@pytest.mark.parametrize(("text", "expected"), [
    # [server], the simulator's own keys: type, choices
    ("[server]\nhost = 5\n", "[server]: key 'host' must be a string, not 5"),
    ("[server]\nlegacy_ssh_rsa = 1\n", "[server]: key 'legacy_ssh_rsa' must be true or false, "
     "not 1"),
    ("[server]\nrefuse_unusable_names = 'no'\n", "[server]: key 'refuse_unusable_names' must be "
     "true or false, not 'no'"),
    ("[server]\ndurability = 'disk'\n", "[server]: key 'durability' must be 'process' or "
     "'power', not 'disk'"),
    ("[server]\nciphers = 'aes128-ctr'\n", "[server]: key 'ciphers' must be a list of strings"),
    ("server = 5\n", "[server]: must be a table of keys, not 5"),
    # [[channel]]: unknown keys, lists that are strings
    (CHANNEL_A + "quota = 5\n", "[[channel]] #1 (user 'a'): unknown key 'quota'; known: user"),
    (CHANNEL_A + "applications = 'FLAC'\n", "[[channel]] #1 (user 'a'): key 'applications' "
     "must be a list of strings, not 'FLAC'"),
    (CHANNEL_A + "certificates = [1]\n", "(user 'a'): key 'certificates' must be a list of "
     "strings, not [1]"),
    ("[[channel]]\nquality = 'employer'\n", "[[channel]] #1: missing key 'user'; add it"),
    ("[[channel]]\nuser = 5\n", "[[channel]] #1: key 'user' must be a string, not 5"),
    ("[channel]\nuser = 'a'\n", "[channel]: must be an array of tables; write [[channel]]"),
    # [trust]
    ("[trust]\nanchors = 'pki/ca.pem'\n", "[trust]: key 'anchors' must be a list of strings, "
     "not 'pki/ca.pem'"),
    ("[trust]\nanchor = []\n", "[trust]: unknown key 'anchor'; known: anchors, crls"),
    ("trust = 5\n", "[trust]: must be a table of keys, not 5"),
    # [[fault]]: the same checks, the numbers as every other number
    ("[[fault]]\nwhen = 'upload'\naction = 'explode'\n", "[[fault]] #1: key 'action' must be "
     "'drop-connection' or 'delay'"),
    ("[[fault]]\naction = 'delay'\n", "[[fault]] #1: missing key 'when'"),
    ("[[fault]]\nwhen = 'upload'\naction = 'delay'\ndelay = 5\n", "[[fault]] #1: unknown key "
     "'delay'; known: when, action, match, delay_ms, code, times"),
    ("[[fault]]\nwhen = 'upload'\naction = 'delay'\ndelay_ms = -5\n", "[[fault]] #1 "
     "delay_ms = -5: must be 0 or more"),
    ("[[fault]]\nwhen = 'upload'\naction = 'delay'\ntimes = '2'\n", "[[fault]] #1 "
     "times = '2': must be a number, 0 or more"),
    ("[[fault]]\nwhen = 'upload'\naction = 'corrupt'\nmatch = ['FI.*']\n", "[[fault]] #1: "
     "key 'match' must be a string"),
    # [[mandate]]: its keys are fla_core.mandates', the table is named as the others
    ("mandate = [1]\n", "[[mandate]] #1: must be a table of keys, not 1"),
])
def test_every_table_is_checked_the_same_way_naming_table_and_key(
        home: SimulatorHome, text: str, expected: str) -> None:
    """[server], [[channel]], [trust] and [[fault]] are read through one schema: a wrong type,
    a value out of range or not among the choices, an unknown or a missing key is refused with
    the file, the table and the key (before, [trust] took a string as a list of characters and
    [[fault]] a negative delay)."""
    write_config(home, text)
    with pytest.raises(ConfigError) as err:
        home.load()
    assert str(err.value).startswith(str(home.config_path) + " [")
    assert expected in str(err.value)


def test_the_schema_defaults_are_the_models() -> None:
    """Reading fills in the schema's defaults: they must be the dataclasses' own."""
    from dataclasses import MISSING, fields

    from fla_sim.config import (
        CHANNEL_KEYS,
        FAULT_KEYS,
        SERVER_KEYS,
        ChannelConfig,
        SimulatorConfig,
    )
    from fla_sim.config.schema import REQUIRED

    config = SimulatorConfig()
    for key in SERVER_KEYS:
        default = getattr(config, key.name)
        assert key.default == (list(default) if isinstance(default, tuple) else default), key
    for keys, model in ((FAULT_KEYS, FaultSpec), (CHANNEL_KEYS, ChannelConfig)):
        assert [k.name for k in keys] == [f.name for f in fields(model)]
        for key, f in zip(keys, fields(model), strict=True):
            if key.default is REQUIRED:
                assert f.default is MISSING and f.default_factory is MISSING, f.name
            elif key.name == "applications":  # a TOML list, a frozenset in the model
                assert frozenset(key.default) == f.default
            elif f.default is not MISSING:
                assert key.default == f.default, f.name


def test_every_server_key_survives_save_and_load(home: SimulatorHome) -> None:
    """Writing takes the keys from the same schema as reading: none is left out or renamed."""
    from fla_sim.config import SERVER_KEYS

    config = home.load()
    for key in SERVER_KEYS:
        if key.kind is int:
            setattr(config, key.name, key.low + 1)
    config.host, config.legacy_ssh_rsa, config.durability = "0.0.0.0", True, "power"
    config.refuse_unusable_names, config.ciphers = False, ("aes256-ctr",)
    home.save(config)
    assert home.load() == config


def test_rendering_is_pure(home: SimulatorHome, ssh_pub: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Turning a configuration into text writes nothing: not the channels' key files."""
    from fla_sim.config import ChannelConfig
    from fla_sim.config.toml_io import _render_config

    config = home.load()
    config.channels.append(ChannelConfig("new", Quality.EMPLOYER, "0123456749", "123456",
                                         [ssh_pub]))
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)
    keys_before = sorted(os.listdir(home.path / "keys"))
    texts = {_render_config(config) for _ in range(2)}
    assert len(texts) == 1 and 'ssh_keys = [\n    "keys/new-1.pub",\n]' in texts.pop()
    assert os.listdir(empty) == [] and sorted(os.listdir(home.path / "keys")) == keys_before


def test_saving_leaves_key_files_that_hold_their_key_alone(home: SimulatorHome,
                                                           ssh_pub: str) -> None:
    """A save rewrote every key file of every channel; now only the operations that add keys
    write theirs (and a save writes those a hand-built configuration lacks)."""
    add_acme(home, ssh_pub)
    key_file = home.path / "keys" / "acme-payroll-1.pub"
    os.utime(key_file, (1_000_000_000, 1_000_000_000))  # an mtime no write could give it
    home.save(home.load())
    home.add_mandate(level1("0123456749", "20241"))
    assert key_file.stat().st_mtime == 1_000_000_000
    assert home.write_key_files(home.load()) == []


def test_a_hand_built_channel_gets_its_key_files_when_saved(home: SimulatorHome,
                                                            ssh_pub: str) -> None:
    from fla_sim.config import ChannelConfig

    config = home.load()
    config.channels.append(ChannelConfig("hand", Quality.EMPLOYER, "0123456749", "123456",
                                         [ssh_pub]))
    home.save(config)
    assert (home.path / "keys" / "hand-1.pub").read_text() == ssh_pub + "\n"
    assert home.load() == config


# -- channels -------------------------------------------------------------------------------------


def test_add_channel_stores_keys_in_the_home_and_builds_the_profile(home: SimulatorHome,
                                                                     ssh_pub: str,
                                                                     tmp_path: Path) -> None:
    ca = pki.make_ca(not_before=NOW)
    signer = pki.issue_signer(ca, company_id="0123456749", not_before=NOW)
    cert_file = pki.write_pem(tmp_path / "signer.pem", signer.cert)
    add_acme(home, ssh_pub, certificates=[cert_file])
    assert (home.path / "keys" / "acme-payroll-1.pub").read_text().strip() == ssh_pub
    channel = home.load().channel("acme-payroll")
    assert channel is not None
    assert channel.ssh_keys == [ssh_pub] and channel.certificates == ["certs/acme-payroll-1.pem"]
    assert channel.applications == frozenset({"FLAC", "DMFA", "DIMN"})
    profile = channel.profile(home)
    assert profile.quality is Quality.SOCIAL_SECRETARIAT
    assert (profile.user, profile.sender, profile.company_id) == \
        ("acme-payroll", "123456", "0123456749")
    assert profile.certificates == (signer.cert.public_bytes(serialization.Encoding.DER),)
    assert sorted(os.listdir(home.path / "channels" / "acme-payroll")) == sorted(CHANNEL_DIRS)


@pytest.mark.parametrize(("change", "expected"), [
    ({"sender": "000000"}, "reserved"),
    ({"sender": "999999"}, "reserved"),
    ({"sender": "12345"}, "6 digits"),
    ({"sender": "\u0661\u0662\u0663\u0664\u0665\u0666"}, "6 digits 0-9"),  # no name has them
    ({"user": "acme payroll"}, "A-Z a-z 0-9"),
    ({"user": "../etc"}, "A-Z a-z 0-9"),
    ({"user": "x" * 65}, "A-Z a-z 0-9"),
    ({"user": ".."}, "not a plain name"),  # its root would be the simulator home itself
    ({"user": "."}, "not a plain name"),  # ... or the folder of every channel
    ({"user": ".acme"}, "starting with a letter or a digit"),
    ({"user": "-acme"}, "starting with a letter or a digit"),
    ({"user": "acme..x"}, "without '..'"),
    ({"user": "acme-payroll"}, "already exists"),
    ({"user": "ACME-Payroll"}, "already exists in .* as 'acme-payroll'"),  # one folder on macOS
    ({"company": "0123456748"}, "enterprise number"),
    ({"company": "123"}, "enterprise number"),
    ({"applications": ["FLAC", "XXXX"]}, "unknown application code"),
    ({"applications": ["ACRF"]}, "unknown application code"),
    ({"quality": "boss"}, "unknown quality"),
    ({"ssh_keys": ["not a key"]}, "not an OpenSSH public key"),
    ({"ssh_keys": []}, "at least one SSH public key"),
])
def test_refused_channel_changes_store_nothing(home: SimulatorHome, ssh_pub: str,
                                               change: dict[str, object], expected: str) -> None:
    add_acme(home, ssh_pub)
    before = home.config_path.read_bytes()
    args: dict[str, object] = {"user": "second", "quality": "employer",
                               "company": "0897223670", "sender": "654321",
                               "ssh_keys": [ssh_pub]} | change
    with pytest.raises(ConfigError, match=expected):
        home.add_channel(**args)  # type: ignore[arg-type]
    assert home.config_path.read_bytes() == before


# -- mandates and trust ---------------------------------------------------------------------------


def level1(representative: str, start: str, end: str | None = None) -> MandateRecord:
    return MandateRecord(level=1, employer="0897223670", representative=representative,
                         application="FLAC", start=start, end=end)


def test_overlapping_level1_mandate_is_refused_and_nothing_stored(home: SimulatorHome) -> None:
    home.add_mandate(level1("0123456749", "20241", "20244"))
    home.add_mandate(MandateRecord(level=2, employer="0897223670",
                                   representative="0123456749", sender="123456"))
    before = home.config_path.read_bytes()
    with pytest.raises(ConfigError, match="M4"):
        home.add_mandate(level1("0477472701", "20243"))
    assert home.config_path.read_bytes() == before
    home.add_mandate(level1("0477472701", "20251"))  # after the first one ends: allowed
    assert [m.representative for m in home.load().mandates] == \
        ["0123456749", "0123456749", "0477472701"]


def test_trust_anchors_and_crls_feed_the_trust_store(home: SimulatorHome, tmp_path: Path) -> None:
    ca = pki.make_ca("Sender CA", not_before=NOW)
    crl = pki.make_crl(ca, [12345], this_update=NOW)
    assert home.add_trust(pki.write_pem(tmp_path / "sender-ca.pem", ca.cert)) == \
        "trust/sender-ca.pem"
    assert home.add_trust(pki.write_pem(tmp_path / "sender.crl", crl)) == "trust/sender.crl"
    assert home.add_trust(home.ca_cert_path) == "pki/ca.pem"  # already trusted: no copy
    store = home.trust_store()
    assert {c.subject.rfc4514_string() for c in store.anchors} == {
        ca.cert.subject.rfc4514_string(),
        x509.load_pem_x509_certificate(home.ca_cert_path.read_bytes()).subject.rfc4514_string()}
    assert [c.get_revoked_certificate_by_serial_number(12345) is not None
            for c in store.crls] == [True]


def test_add_trust_refuses_what_is_not_a_pem_certificate(home: SimulatorHome,
                                                         tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        home.add_trust(junk)
    with pytest.raises(ConfigError, match="cannot read"):
        home.add_trust(tmp_path / "missing.pem")


# -- channel roots --------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["..", ".", "a..b", ".hidden"])
def test_channel_root_is_never_the_home_or_the_channels_folder(home: SimulatorHome,
                                                               user: str) -> None:
    before = sorted(os.listdir(home.path))
    with pytest.raises(ConfigError, match="not a plain name"):
        home.channel_root(user)
    assert sorted(os.listdir(home.path)) == before  # no IN, OUT, ... made in the home
    assert not any(d in os.listdir(home.path / "channels") for d in CHANNEL_DIRS)


def test_channel_root_refuses_a_symlink_anywhere_in_the_tree(home: SimulatorHome) -> None:
    root = home.channel_root("acme-payroll")
    assert sorted(os.listdir(root)) == sorted(CHANNEL_DIRS)
    os.symlink("/etc", root / "OUTTEST" / "escape")
    with pytest.raises(ConfigError, match="symbolic link"):
        home.channel_root("acme-payroll")


def test_channel_root_refuses_a_symlinked_root(home: SimulatorHome, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", home.path / "channels" / "linked")
    with pytest.raises(ConfigError, match="symbolic link"):
        home.channel_root("linked")
