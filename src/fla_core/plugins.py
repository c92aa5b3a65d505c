"""The plugin manager: explicit bootstrap and a typed facade over the hooks.

Order (as tox 4 does it): add the hook specs (the core's, then those of the component that
builds the manager, e.g. the simulator's), block the plugins named in ``FLA_DISABLED_PLUGINS``,
register the built-in plugins (exactly like third-party ones, as datasette does), load the
``fla`` entry points, register extra modules named in ``FLA_PLUGINS``, then ``check_pending()``
so a misspelt hook fails at start-up. ``FLA_TRACE_HOOKS=1`` prints every hook call with its
arguments and results on stderr.

Other packages declare their own hooks (as a pytest plugin does with ``pytest_addhooks``): the
component that owns them adds its spec module (``specs=`` or :meth:`FlaPlugins.add_hookspecs`).
A process that does not run that component (``fla check``) may still load a plugin implementing
one of those hooks: the spec modules listed in the entry point group ``fla.hookspecs`` are
imported then, and only then, so a correctly spelt foreign hook is accepted and a misspelt one
still refused, while the core never imports another package otherwise.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pluggy

from fla_core import hookspecs

if TYPE_CHECKING:
    from pathlib import Path

    from fla_core.anomalies import Anomaly
    from fla_core.applications import Application
    from fla_core.checks.context import CheckContext
    from fla_core.formats import InputFormat, ReadContext
    from fla_core.model import Declaration, FileContent, Quality
    from fla_core.qualities import QualityInfo

PROJECT = "fla"
SPEC_GROUP = "fla.hookspecs"  # entry points: hook spec modules of other packages

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
    """A plugin: name, version, the hooks it implements, built-in or not, blocked or not."""

    name: str
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool
    blocked: bool = False

    @property
    def kind(self) -> str:
        """``blocked``, ``built-in`` or ``external``, as ``fla plugins`` shows it."""
        return "blocked" if self.blocked else "built-in" if self.builtin else "external"


@dataclass(frozen=True)
class PluginRecipe:
    """How a manager was built, with the environment already read: another process (a judge
    worker, a pre-scan follower) builds the same manager from it, never its own default."""

    builtins: tuple[str, ...] = DEFAULT_PLUGINS
    entry_points: bool = True
    modules: tuple[str, ...] = ()  # FLA_PLUGINS
    blocked: tuple[str, ...] = ()  # FLA_DISABLED_PLUGINS
    specs: tuple[str, ...] = ()  # hook spec modules besides the core's

    def build(self, *, trace: bool | None = None) -> FlaPlugins:
        """A manager made exactly as this recipe says (the environment is not read again)."""
        return FlaPlugins(builtins=self.builtins, entry_points=self.entry_points,
                          modules=self.modules, blocked=self.blocked,
                          specs=[importlib.import_module(m) for m in self.specs], trace=trace)


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
    """Owns the pluggy manager; one typed method per hook so callers never touch ``pm.hook``.

    ``modules`` and ``blocked`` default to ``FLA_PLUGINS`` and ``FLA_DISABLED_PLUGINS``;
    ``specs`` are the hook spec modules of the component building the manager.
    """

    def __init__(self, *, builtins: Iterable[str] = DEFAULT_PLUGINS, entry_points: bool = True,
                 extra: Iterable[object] = (), trace: bool | None = None,
                 specs: Iterable[ModuleType] = (), modules: Iterable[str] | None = None,
                 blocked: Iterable[str] | None = None):
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._specs: dict[str, ModuleType] = {}
        for module in specs:
            self._add_specs(module)
        builtins = tuple(builtins)
        modules = tuple(_env_list("FLA_PLUGINS") if modules is None else modules)
        blocked = tuple(_env_list("FLA_DISABLED_PLUGINS") if blocked is None else blocked)
        # blocked first (tox 4): a blocked name is never imported, let alone registered
        for name in (*blocked, *_entry_point_aliases(blocked)):
            self.pm.set_blocked(name)
        self._builtin_names = set(builtins)
        for modname in builtins:
            if not self.pm.is_blocked(modname):
                self.pm.register(importlib.import_module(modname), name=modname)
        if entry_points:
            self.pm.load_setuptools_entrypoints(PROJECT)
        for modname in modules:
            if self.pm.is_blocked(modname):
                continue
            try:
                module = importlib.import_module(modname)
            except ImportError as exc:
                raise PluginError(f"FLA_PLUGINS names {modname!r}, which cannot be imported: "
                                  f"{exc}") from exc
            self.pm.register(module, name=modname)
        extra = tuple(extra)
        for obj in extra:
            self.pm.register(obj)
        # objects registered by the caller cannot be rebuilt in another process
        self.recipe: PluginRecipe | None = None if extra else PluginRecipe(
            builtins=builtins, entry_points=entry_points, modules=modules, blocked=blocked,
            specs=tuple(self._specs))
        self._quality_table: dict[Quality, QualityInfo] | None = None
        self.check_pending()
        if trace if trace is not None else os.environ.get("FLA_TRACE_HOOKS", "") not in ("", "0"):
            _trace(self.pm)

    # --- hook specs of other components --------------------------------------------------------

    def _add_specs(self, module: ModuleType) -> bool:
        if module.__name__ in self._specs:
            return False
        self.pm.add_hookspecs(module)
        self._specs[module.__name__] = module
        return True

    def add_hookspecs(self, module: ModuleType) -> None:
        """Declare the hooks of ``module`` (once), then check every plugin against them."""
        if self._add_specs(module):
            if self.recipe is not None:
                self.recipe = replace(self.recipe, specs=tuple(self._specs))
            self.check_pending()

    def check_pending(self) -> None:
        """Refuse a plugin implementing a hook nobody declares (a misspelt name, usually)."""
        if self._unknown_hooks():
            # a hook of another package (e.g. the simulator's, in ``fla check``): its specs
            for ep in _spec_entry_points():
                module = ep.load()
                if module.__name__ not in self._specs:
                    self._add_specs(module)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc

    def _unknown_hooks(self) -> list[str]:
        return [name for name, caller in vars(self.pm.hook).items()
                if not name.startswith("_") and not caller.has_spec()
                and any(not impl.optionalhook for impl in caller.get_hookimpls())]

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

    def quality_table(self) -> dict[Quality, QualityInfo]:
        """The qualities by name, for a ``CheckContext``; computed once per manager.

        Every quality of spec 2.1 must be declared (a blocked built-in needs a replacement).
        """
        if self._quality_table is None:
            from fla_core.model import Quality

            table = {Quality(info.quality): info for info in self.qualities()}
            missing = [q.value for q in Quality if q not in table]
            if missing:
                raise PluginError(f"no plugin declares quality {', '.join(missing)} "
                                  "(hook fla_qualities)")
            self._quality_table = table
        return self._quality_table

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
        return cast("FileContent", result)

    def write_export(self, content: FileContent, format: str, path: Path) -> None:
        """Write ``content`` as an export in ``format`` with the first plugin that writes it."""
        if self.pm.hook.fla_write_export(content=content, format=format, path=path) is None:
            names = ", ".join(sorted(f.name for f in self.input_formats() if f.writes))
            raise PluginError(f"no installed plugin writes format {format!r}; formats "
                              f"written: {names or 'none'}")

    def check_declaration(self, declaration: Declaration, position: int,
                          context: CheckContext) -> list[Anomaly]:
        """Anomalies of one declaration from every check plugin, unsorted."""
        results = self.pm.hook.fla_check_declaration(
            declaration=declaration, position=position, context=context)
        return [a for group in results if group for a in group]

    def plugins(self) -> list[PluginInfo]:
        """Every plugin with its version and the hooks it implements; blocked ones too."""
        dists = {id(p): d for p, d in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in self.pm.list_name_plugin():
            builtin = name in self._builtin_names
            if plugin is None:  # blocked (pluggy keeps the name with no plugin)
                out.append(PluginInfo(name=name, version=None, hooks=(), builtin=builtin,
                                      blocked=True))
                continue
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            dist = dists.get(id(plugin))
            version = dist.version if dist else (_own_version() if builtin else None)
            out.append(PluginInfo(name=name, version=version, hooks=hooks, builtin=builtin))
        return out


def _own_version() -> str:
    from fla_core import __version__

    return __version__


def _env_list(variable: str) -> list[str]:
    raw = os.environ.get(variable, "")
    return [m.strip() for m in raw.split(",") if m.strip()]


def _entry_point_aliases(blocked: Iterable[str]) -> list[str]:
    """Entry point names of the ``fla`` plugins whose module is blocked by its module name."""
    names = set(blocked)
    if not names:
        return []
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group=PROJECT) if ep.module in names]


def _spec_entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=SPEC_GROUP))


@cache
def get_plugins() -> FlaPlugins:
    """The process-wide manager, for the CLI and the simulator; tests build their own."""
    return FlaPlugins()
