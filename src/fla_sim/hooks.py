"""The typed facade over the simulator's hooks (``fla_sim.hookspecs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fla_sim import hookspecs

if TYPE_CHECKING:
    from fla_core.plugins import FlaPlugins
    from fla_sim.events import AnswerWritten, FileReceived


class SimHooks:
    """The simulator's hooks on a plugin manager; declares them there first.

    Adding the specs re-runs ``check_pending()``: a plugin implementing a misspelt simulator
    hook (``fla_sim_file_recieved``) is refused here, when the simulator starts.
    """

    def __init__(self, plugins: FlaPlugins):
        plugins.add_hookspecs(hookspecs)
        self.plugins = plugins

    def file_received(self, event: FileReceived) -> str | None:
        """First veto code returned by a plugin, or None."""
        for code in self.plugins.pm.hook.fla_sim_file_received(event=event):
            if code:
                return str(code)
        return None

    def answer(self, event: AnswerWritten) -> None:
        """Tell every plugin that the simulator wrote an answer."""
        self.plugins.pm.hook.fla_sim_answer(event=event)

    def watches_uploads(self) -> bool:
        """Whether a plugin implements ``fla_sim_file_received`` (it may block)."""
        return bool(self.plugins.pm.hook.fla_sim_file_received.get_hookimpls())

    def watches_answers(self) -> bool:
        """Whether a plugin implements ``fla_sim_answer`` (it may block)."""
        return bool(self.plugins.pm.hook.fla_sim_answer.get_hookimpls())
