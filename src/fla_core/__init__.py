"""fla_core: build, sign, check and send BATCH-channel triplets (FLA first, channel-generic)."""

from fla_core.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
