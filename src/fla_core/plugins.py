"""The plugin manager: explicit bootstrap and a typed facade over the hooks.

Order (as tox 4 does it): add the hook specs, register the built-in plugins (exactly like
third-party ones, as datasette does), load the ``fla`` entry points, register extra modules
named in ``FLA_PLUGINS``, then ``check_pending()`` so a misspelt hook fails at start-up.
``FLA_TRACE_HOOKS=1`` prints every hook call with its arguments and results on stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import pluggy

from fla_core import hookspecs

if TYPE_CHECKING:
    from pathlib import Path

    from fla_core.anomalies import Anomaly
    from fla_core.applications import Application
    from fla_core.checks.context import CheckContext
    from fla_core.formats import InputFormat, ReadContext
    from fla_core.model import Declaration, FileContent
    from fla_core.qualities import QualityInfo

PROJECT = "fla"

# Built-in plugins, registered like any third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "fla_core.formats.csv_format",
    "fla_core.formats.json_format",
    "fla_core.qualities.builtin",
    "fla_core.applications.builtin",
    "fla_core.checks.references",
    "fla_core.checks.years",
    "fla_core.checks.employer",
    "fla_core.checks.workers",
    "fla_core.checks.trainings",
)


class PluginError(Exception):
    """A plugin could not be loaded or declares something inconsistent."""


@dataclass(frozen=True)
class PluginInfo:
    """A registered plugin: name, version, the hooks it implements, built-in or not."""

    name: str
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, hook_impls: Sequence[pluggy.HookImpl],
               kwargs: Mapping[str, Any]) -> None:
        names = ", ".join(impl.plugin_name for impl in hook_impls)
        print(f"fla-hook> {hook_name}({_short(kwargs)}) -> [{names}]", file=sys.stderr)

    def after(outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[pluggy.HookImpl],
              kwargs: Mapping[str, Any]) -> None:
        try:
            result = outcome.get_result()
        except BaseException as exc:
            print(f"fla-hook< {hook_name} raised {exc!r}", file=sys.stderr)
            return
        print(f"fla-hook< {hook_name} = {_short(result)}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FlaPlugins:
    """Owns the pluggy manager; one typed method per hook so callers never touch ``pm.hook``."""

    def __init__(self, *, builtins: Iterable[str] = DEFAULT_PLUGINS, entry_points: bool = True,
                 extra: Iterable[object] = (), trace: bool | None = None):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._builtin_names: set[str] = set()
        for modname in builtins:
            self.pm.register(importlib.import_module(modname), name=modname)
            self._builtin_names.add(modname)
        if entry_points:
            self.pm.load_setuptools_entrypoints(PROJECT)
        for modname in _env_plugins():
            try:
                module = importlib.import_module(modname)
            except ImportError as exc:
                raise PluginError(f"FLA_PLUGINS names {modname!r}, which cannot be imported: "
                                  f"{exc}") from exc
            self.pm.register(module, name=modname)
        for obj in extra:
            self.pm.register(obj)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
        if trace if trace is not None else os.environ.get("FLA_TRACE_HOOKS", "") not in ("", "0"):
            _trace(self.pm)

    # --- facade -------------------------------------------------------------------------------

    def input_formats(self) -> list[InputFormat]:
        """Every input format, in registration order."""
        return [fmt for group in self.pm.hook.fla_input_formats() for fmt in group or ()]

    def qualities(self) -> list[QualityInfo]:
        """Every quality; a quality declared twice is a PluginError."""
        found: dict[str, QualityInfo] = {}
        for group in self.pm.hook.fla_qualities():
            for info in group or ():
                if info.quality in found:
                    raise PluginError(f"quality {info.quality} is declared by two plugins")
                found[info.quality] = info
        return list(found.values())

    def applications(self) -> list[Application]:
        """Every application with a plugin; a code declared twice is a PluginError."""
        found: dict[str, Application] = {}
        for group in self.pm.hook.fla_applications():
            for app in group or ():
                if app.code in found:
                    raise PluginError(f"application {app.code} is declared by two plugins")
                found[app.code] = app
        return list(found.values())

    def read_declarations(self, path: Path, format: str, context: ReadContext) -> FileContent:
        """Read an input file with the first plugin that handles ``format``."""
        result = self.pm.hook.fla_read_declarations(path=path, format=format, context=context)
        if result is None:
            names = ", ".join(sorted(f.name for f in self.input_formats()))
            raise PluginError(f"no installed plugin reads format {format!r}; "
                              f"installed formats: {names}")
        return result

    def check_declaration(self, declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
        """Anomalies of one declaration from every check plugin, unsorted."""
        results = self.pm.hook.fla_check_declaration(
            declaration=declaration, position=position, context=context)
        return [a for group in results if group for a in group]

    def sim_file_received(self, event: object) -> str | None:
        """First veto code returned by a plugin, or None."""
        for code in self.pm.hook.fla_sim_file_received(event=event):
            if code:
                return str(code)
        return None

    def sim_answer(self, event: object) -> None:
        """Tell every plugin that the simulator wrote an answer (``fla_sim_answer``)."""
        self.pm.hook.fla_sim_answer(event=event)

    def plugins(self) -> list[PluginInfo]:
        """Every registered plugin with its version and the hooks it implements."""
        dists = {id(p): d for p, d in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            dist = dists.get(id(plugin))
            builtin = name in self._builtin_names
            version = dist.version if dist else (_own_version() if builtin else None)
            out.append(PluginInfo(name=name, version=version, hooks=hooks, builtin=builtin))
        return out


def _own_version() -> str:
    from fla_core import __version__

    return __version__


def _env_plugins() -> list[str]:
    raw = os.environ.get("FLA_PLUGINS", "")
    return [m.strip() for m in raw.split(",") if m.strip()]


@cache
def get_plugins() -> FlaPlugins:
    """The process-wide manager, for the CLI and the simulator; tests build their own."""
    return FlaPlugins()
