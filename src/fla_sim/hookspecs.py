# mypy: disable-error-code="empty-body"
"""The simulator's hooks, declared by the simulator (as a pytest plugin declares its own).

Same pluggy project as the core (``fla``): plugins implement them with
``@fla_core.hookimpl``. The simulator adds this module to its plugin manager when it starts
(:class:`fla_sim.hooks.SimHooks`); the entry point group ``fla.hookspecs`` names it so that a
process without the simulator (``fla check``) accepts a plugin implementing these hooks.
Both run in a worker thread of the simulator, never on its event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fla_core.hookspecs import hookspec

if TYPE_CHECKING:
    from fla_sim.events import AnswerWritten, FileReceived


# --- simulator events --------------------------------------------------------------------------

@hookspec
def fla_sim_file_received(event: FileReceived) -> str | None:
    """A file was closed in an upload directory of the simulator.

    ``event`` is a :class:`fla_sim.events.FileReceived` (channel user, directory, name, size,
    path). Return a 3-digit code to veto the file (it is rejected with that ACRF code when its
    set is processed), or None to let it through. Every plugin is called; the first non-None
    result wins. A plugin that raises is logged and ignored for that file.
    """


@hookspec
def fla_sim_answer(event: AnswerWritten) -> None:
    """An answer file was written by the simulator.

    ``event`` is a :class:`fla_sim.events.AnswerWritten` (channel, directory, answer name,
    kind ACRF/NOTI, triggering file name, result code). For observation only; a plugin that
    raises is logged, the answer stands.
    """
