"""What the fork server loads once for every judge worker and pre-scan follower it forks.

Imported by the fork server only (``fla_sim.judging._context``), never by the simulator
itself. Everything a child would otherwise load after the fork is loaded here, before it, so
that the children share those pages with the fork server instead of each holding a copy:
the modules, the built-in and entry-point plugins, the compiled XSD and the anomaly
catalogue. Then ``gc.freeze()`` moves every object made so far out of the collector's reach:
a child's first collection would otherwise write to the header of each of them and copy
every page they live on (an idle judge worker held 19 MB of private pages).
"""

from __future__ import annotations

import gc
import logging

from fla_core import judge, mandates, signing, xsdstream  # noqa: F401  (for the children)
from fla_core.anomalies import default_catalogue
from fla_core.applications import fla
from fla_core.plugins import get_plugins
from fla_sim import (  # noqa: F401  (for the children)
    hookspecs,
    judging,
    prescan_follower,
    prescan_messages,
    prescan_process,
    store,
)

log = logging.getLogger("fla_sim.preload")


def _warm() -> None:
    """Load what the children use; a failure here is only a lost saving, never an error
    (each child loads what it needs again and reports a real problem itself)."""
    try:
        fla.schema()
        xsdstream.validator_for(fla.SCHEMA)  # the validating follower's tree-less validator
        default_catalogue()
        # imports the built-in and entry-point plugin modules; a follower builds its manager
        # from the simulator's recipe (fla_core.plugins.PluginRecipe) over these imports
        get_plugins()
    except Exception:
        log.debug("fork server preload incomplete", exc_info=True)


_warm()
gc.freeze()
