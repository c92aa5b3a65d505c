"""The simulator's configuration and home (spec 2, 3, 5.8; design 5), in parts:

* :mod:`~fla_sim.config.model`: what ``simulator.toml`` holds, as dataclasses with their
  defaults and ranges (``SimulatorConfig``, ``ChannelConfig``, ``FaultSpec``, ``CAPS``, ...);
* :mod:`~fla_sim.config.schema`: the keys of each table (type, range or choices, default),
  which reading and writing share;
* :mod:`~fla_sim.config.toml_io`: ``simulator.toml`` text to the model and back (``tomli-w``);
* :mod:`~fla_sim.config.home`, :mod:`~fla_sim.config.ssh_keys`, :mod:`~fla_sim.config.lock`:
  the home on disk (``SimulatorHome``: layout, keys, PKI, trust store, configuration changes;
  the key files; ``HomeLock``, held by the process serving the home).

Everything is importable from ``fla_sim.config`` itself.
"""

from fla_core.model import CHANNEL_DIRS
from fla_sim.config.home import CLOCK_SLACK, CONFIG_NAME, LOCK_NAME, Renewal, SimulatorHome
from fla_sim.config.lock import HomeLock
from fla_sim.config.model import (
    CAPS,
    DEFAULT_CIPHERS,
    DEFAULT_CLOSE_GRACE_MS,
    DEFAULT_PRESCAN_MIN_BYTES,
    DURABILITY_MODES,
    FAULT_ACTIONS,
    FAULT_WHEN,
    JUDGE_LIMITS,
    SERVER_NUMBERS,
    ChannelConfig,
    ConfigError,
    FaultSpec,
    GiB,
    HomeInUse,
    SimulatorConfig,
)
from fla_sim.config.schema import CHANNEL_KEYS, FAULT_KEYS, SERVER_KEYS, TRUST_KEYS, Key
from fla_sim.config.ssh_keys import remove_stale_key_files, write_key_files
from fla_sim.config.toml_io import CONFIG_HEADER, key_file, read_config

__all__ = [
    "CAPS", "CHANNEL_DIRS", "CHANNEL_KEYS", "CLOCK_SLACK", "CONFIG_HEADER", "CONFIG_NAME",
    "DEFAULT_CIPHERS", "DEFAULT_CLOSE_GRACE_MS", "DEFAULT_PRESCAN_MIN_BYTES", "DURABILITY_MODES",
    "FAULT_ACTIONS", "FAULT_KEYS", "FAULT_WHEN", "JUDGE_LIMITS", "LOCK_NAME", "SERVER_KEYS",
    "SERVER_NUMBERS", "TRUST_KEYS", "ChannelConfig", "ConfigError", "FaultSpec", "GiB",
    "HomeInUse", "HomeLock", "Key", "Renewal", "SimulatorConfig", "SimulatorHome", "key_file",
    "read_config", "remove_stale_key_files", "write_key_files",
]
