"""Moving processed uploads out of the sender's view into the home's archive (spec 5.3, 5.5,
5.6): a set's clean-up once its answers are on disk, and at start-up the files a crash left
behind after the journal had archived them.

Files are moved, never deleted (the archive is the simulator's evidence) and never overwrite
one another (``NAME~2``, ...). ``Archive`` decides no answer and writes none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fla_sim.config import SimulatorConfig, SimulatorHome
from fla_sim.store import Journal


class Archive:
    """The archive of one home: moves, and their journal states."""

    def __init__(self, home: SimulatorHome, config: SimulatorConfig, journal: Journal, *,
                 root: Callable[[str], Path], release: Callable[[str, str, str], None]):
        self.home = home
        self.config = config
        self.settings = config.settings
        self.journal = journal
        self.root = root
        # told when a set's clean-up begins (fla_sim.pipeline.Pipeline.release)
        self.release = release
        self._dirs: set[str] = set()

    def clean_up(self, eid: int) -> tuple[str, str, list[str]]:
        """Move the event's set files to the archive; returns what to journal as archived."""
        event = self.journal.event(eid)
        user, directory = event.channel, event.directory
        names = [event.name]
        answers = self.journal.answers(event_id=eid)
        stem = answers[0].stem if answers else None
        if stem is not None:  # passed P1: every file of the stem present now (spec 5.3)
            self.release(user, directory, stem)
            prefixes = (f"FI.{stem}.", f"FS.{stem}.", f"GO.{stem}.")
            names = sorted({f.name for f in self.journal.files(user, directory)
                            if f.name.startswith(prefixes)} | {event.name})
        if not self.settings.keep_uploads:
            self.move(user, directory, names)
        return user, directory, names

    def clean_up_done(self, eid: int, user: str, directory: str, names: list[str]) -> None:
        """Journal the clean-up (call inside a transaction): files archived, event done."""
        unwritten = self.journal.answers(written=False, event_id=eid)
        if unwritten:  # never: an event is done only once every answer of it is on disk
            raise RuntimeError(f"event {eid} cannot be done: {unwritten[0].name} is unwritten")
        if not self.settings.keep_uploads:
            self.journal.set_file_state(user, directory, names, "archived")
        self.journal.set_event_state(eid, "done")

    def store(self, user: str, directory: str, names: Sequence[str], state: str) -> None:
        """Move uploads out of the sender's view into the home's archive, journaled as
        ``state`` (archived, cancelled, swept)."""
        self.move(user, directory, names)
        self.journal.set_file_state(user, directory, names, state)

    def move(self, user: str, directory: str, names: Sequence[str]) -> None:
        """Move the files still in the upload directory to the archive (never overwriting)."""
        # plain strings: three moves per set on the event loop, where Path objects cost more
        # than the renames themselves
        folder = os.path.join(self.root(user), directory)
        target = os.path.join(self.home.archive_dir, user, directory)
        if target not in self._dirs:  # one mkdir per directory, not per set
            os.makedirs(target, exist_ok=True)
            self._dirs.add(target)
        for name in names:
            src = os.path.join(folder, name)
            if not os.path.exists(src):
                continue
            dest, n = os.path.join(target, name), 1
            while os.path.exists(dest):
                n += 1
                dest = os.path.join(target, f"{name}~{n}")
            try:
                os.replace(src, dest)
            except FileNotFoundError:
                if os.path.isdir(target):
                    raise
                os.makedirs(target, exist_ok=True)  # removed while we ran: again
                os.replace(src, dest)

    def leftovers(self) -> None:
        """At start-up: move files the journal already archived, swept or cancelled but that a
        crash left in the sender's view (before the server runs, so no upload races this)."""
        by_key: dict[tuple[str, str, str], list[str]] = {}
        for f in self.journal.files(state=None):
            if f.state == "present" or self.config.channel(f.channel) is None:
                continue
            if (self.root(f.channel) / f.directory / f.name).exists():
                by_key.setdefault((f.channel, f.directory, f.state), []).append(f.name)
        for (user, directory, state), names in by_key.items():
            self.store(user, directory, names, state)
