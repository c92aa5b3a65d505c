"""The simulator journal: SQLite in WAL mode (spec 4.6, 4.8, 5.9, 8.4, 9.4; design 6).

Everything the simulator must remember across a crash lives here: received files, the state of
each set, consumed set keys, the events (GO/TD closes) still to process, the answers planned and
whether their files exist, the answer and ticket counters, and the declaration registry.
Every state change is one transaction, so a crash leaves either the old or the new state.

ONE connection, guarded by a reentrant lock, serves every thread (the processor runs its
blocking work in ``asyncio.to_thread``): threads queue on the lock instead of spinning on
SQLite's busy handler at ``BEGIN IMMEDIATE``, a reader never sees half a transaction, and the
connection's page cache stays valid (with one connection per thread, every write of another
made each reader re-read its pages from disk).

Durability (``[server] durability``): ``"process"`` (default) commits with
``synchronous=NORMAL``: a committed transaction is in the WAL file in the OS page cache, which
survives a SIGKILL of the simulator, not a power cut. ``"power"`` commits with
``synchronous=FULL`` (an fsync per commit).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fla_core.responses import make_ticket

log = logging.getLogger("fla_sim.store")

SET_STATES = ("RECEIVING", "QUEUED", "PROCESSING", "ACCEPTED", "REJECTED", "NOTIFIED",
              "CANCELLED", "ORPHANED")
FINAL_STATES = frozenset({"REJECTED", "NOTIFIED", "CANCELLED", "ORPHANED"})
FILE_STATES = ("present", "archived", "cancelled", "swept")
DURABILITY = {"process": "NORMAL", "power": "FULL"}  # mode -> PRAGMA synchronous

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    channel TEXT NOT NULL, directory TEXT NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL, closed_at TEXT NOT NULL, state TEXT NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0, veto TEXT,
    PRIMARY KEY (channel, directory, name));
CREATE TABLE IF NOT EXISTS sets (
    channel TEXT NOT NULL, directory TEXT NOT NULL, stem TEXT NOT NULL,
    set_key TEXT NOT NULL, go_name TEXT, state TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, ticket TEXT,
    PRIMARY KEY (channel, directory, stem));
CREATE TABLE IF NOT EXISTS consumed (
    channel TEXT NOT NULL, set_key TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (channel, set_key));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, directory TEXT NOT NULL,
    name TEXT NOT NULL, kind TEXT NOT NULL, closed_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending');
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, directory TEXT NOT NULL,
    name TEXT NOT NULL, kind TEXT NOT NULL, trigger TEXT NOT NULL, ticket TEXT NOT NULL,
    result_code TEXT NOT NULL, content BLOB NOT NULL, written INTEGER NOT NULL DEFAULT 0,
    event_id INTEGER, stem TEXT, next_state TEXT, set_directory TEXT,
    created_at TEXT NOT NULL, written_at TEXT,
    UNIQUE (channel, directory, name));
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- what happened to a set besides its states and answers, for the sender to read in
-- `fla-sim status` (e.g. an FS closed after its GO was taken: "late-file")
CREATE TABLE IF NOT EXISTS set_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, directory TEXT NOT NULL,
    stem TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS registry (
    sender TEXT NOT NULL, env TEXT NOT NULL, declaration_ref TEXT NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (sender, env, declaration_ref));
-- The journal keeps every file, event and answer forever (evidence); the per-set lookups must
-- not scan that history (they did: 90 sets/s fell as the tables grew).
CREATE INDEX IF NOT EXISTS files_by_state ON files (state, channel, directory, name);
CREATE INDEX IF NOT EXISTS events_by_state ON events (state, id);
CREATE INDEX IF NOT EXISTS answers_by_event ON answers (event_id, id);
CREATE INDEX IF NOT EXISTS answers_by_written ON answers (written, id);
"""


@dataclass(frozen=True)
class FileRow:
    channel: str
    directory: str
    name: str
    size: int
    closed_at: datetime
    state: str
    claimed: bool
    veto: str | None


@dataclass(frozen=True)
class SetRow:
    channel: str
    directory: str
    stem: str
    set_key: str
    go_name: str | None
    state: str
    created_at: datetime
    updated_at: datetime
    ticket: str | None


@dataclass(frozen=True)
class EventRow:
    id: int
    channel: str
    directory: str
    name: str
    kind: str  # "GO" or "TD"
    closed_at: datetime
    state: str  # pending | planned | done


@dataclass(frozen=True)
class SetEvent:
    """Something that happened to a set that its state and answers do not show."""

    id: int
    channel: str
    directory: str
    stem: str
    at: datetime
    kind: str  # "late-file": an FI or FS closed after the set's GO
    name: str  # the file it is about
    text: str  # what happened and what the sender should do, in words


@dataclass(frozen=True)
class AnswerRow:
    id: int
    channel: str
    directory: str  # answer directory (OUT, OUTTEST, OUTTEST-S)
    name: str  # FO (or CO) name
    kind: str  # ACRF or NOTI
    trigger: str
    ticket: str
    result_code: str
    content: bytes
    written: bool
    event_id: int | None
    stem: str | None  # stem of the set the answer concerns (None: a lone file)
    next_state: str | None  # state of that set once this answer is written
    set_directory: str | None  # upload directory of that set


class Journal:
    """The SQLite journal of one simulator home."""

    def __init__(self, path: str | Path, *, durability: str = "process"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, "
                             f"not {durability!r}")
        self.durability = durability
        # reentrant: a transaction's own reads (and nested transactions) take it again
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._checkpointer: tuple[threading.Thread, threading.Event] | None = None
        # changes of the registry per (sender, env) made through this object (in memory only):
        # what fla_sim.prescan compares to know no set changed it while it scanned
        self._registry_gen: dict[tuple[str, str], int] = {}
        with self._lock:
            # executescript commits on its own: it must not run inside our transaction
            self._conn().executescript(_SCHEMA)

    # --- the connection -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """The one connection (opened on first use; call with the lock held)."""
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def set_durability(self, durability: str) -> None:
        """``"process"`` (survive a SIGKILL) or ``"power"`` (also a power cut: fsync commits)."""
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, "
                             f"not {durability!r}")
        with self._lock:
            self.durability = durability
            if self._db is not None:
                self._db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; committed on success, rolled back on error."""
        with self._lock:
            conn = self._conn()
            if conn.in_transaction:  # only this thread can be inside: join the outer one
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")  # another process may hold the write lock
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (the next use opens it again)."""
        self.stop_background_checkpoints()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- WAL checkpoints --------------------------------------------------------------------

    def checkpoint_in_background(self, interval: float = 1.0) -> None:
        """Copy committed pages from the WAL into the database in a thread of its own.

        By default SQLite does it inside the commit that takes the WAL past 1000 pages, and a
        checkpoint fsyncs the database even with ``synchronous=NORMAL``: a stall of up to tens
        of milliseconds for whoever commits, here the simulator's event loop, every hundred
        sets or so. A passive checkpoint beside the writer blocks nobody.
        """
        with self._lock:
            if self._checkpointer is not None:
                return
            self._conn().execute("PRAGMA wal_autocheckpoint=0")
            stop = threading.Event()
            thread = threading.Thread(target=self._checkpoint_loop, args=(stop, interval),
                                      daemon=True, name="fla-journal-checkpoint")
            self._checkpointer = (thread, stop)
        thread.start()

    def stop_background_checkpoints(self) -> None:
        """Stop the checkpoint thread (SQLite checkpoints at commit time again)."""
        with self._lock:
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None and self._db is not None:
                self._db.execute("PRAGMA wal_autocheckpoint=1000")
        if checkpointer is not None:
            thread, stop = checkpointer
            stop.set()
            thread.join(10)

    def _checkpoint_loop(self, stop: threading.Event, interval: float) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute(f"PRAGMA synchronous={DURABILITY[self.durability]}")
            while not stop.wait(interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O: the next round tries again
                    log.warning("journal checkpoint failed: %s", exc)
        finally:
            db.close()

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn().execute(sql, tuple(args)).fetchall()

    # --- files ------------------------------------------------------------------------------

    def record_file(self, channel: str, directory: str, name: str, size: int,
                    closed_at: datetime, *, veto: str | None = None) -> None:
        """A file closed in an upload directory; a re-upload of the same name replaces it."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO files (channel, directory, name, size, closed_at, state, claimed,"
                " veto) VALUES (?, ?, ?, ?, ?, 'present', 0, ?)"
                " ON CONFLICT (channel, directory, name) DO UPDATE SET size = excluded.size,"
                " closed_at = excluded.closed_at, state = 'present', claimed = 0,"
                " veto = excluded.veto",
                (channel, directory, name, size, closed_at.isoformat(), veto))

    def files(self, channel: str | None = None, directory: str | None = None,
              state: str | None = "present") -> list[FileRow]:
        """Files, filtered; ordered by name (ASCII)."""
        sql, args = "SELECT * FROM files WHERE 1=1", []
        for col, val in (("channel", channel), ("directory", directory), ("state", state)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        return [_file(r) for r in self._query(sql + " ORDER BY channel, directory, name", args)]

    def file(self, channel: str, directory: str, name: str) -> FileRow | None:
        rows = self._query("SELECT * FROM files WHERE channel=? AND directory=? AND name=?",
                           (channel, directory, name))
        return _file(rows[0]) if rows else None

    def vetoes(self, channel: str, directory: str, names: Sequence[str]) -> dict[str, str]:
        """The plugin vetoes recorded for any of ``names``, by name (one query for a set)."""
        marks = ",".join("?" * len(names))
        rows = self._query(f"SELECT name, veto FROM files WHERE channel=? AND directory=?"
                           f" AND name IN ({marks}) AND veto IS NOT NULL",
                           (channel, directory, *names))
        return {r["name"]: r["veto"] for r in rows}

    def set_file_state(self, channel: str, directory: str, names: Iterable[str],
                       state: str) -> None:
        """Move files to ``state`` (archived, cancelled, swept)."""
        assert state in FILE_STATES
        with self.transaction() as db:
            db.executemany("UPDATE files SET state=? WHERE channel=? AND directory=? AND name=?",
                           [(state, channel, directory, n) for n in names])

    def claim_files(self, channel: str, directory: str, names: Iterable[str]) -> None:
        """Mark files as belonging to a set whose GO/TD arrived: never swept (spec 5.6)."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE files SET claimed=1 WHERE channel=? AND directory=? AND name=?"
                " AND state='present'", [(channel, directory, n) for n in names])

    def is_claimed(self, channel: str, directory: str, name: str) -> bool:
        """True while the file belongs to a set whose GO was taken and is not yet archived."""
        return bool(self._query(
            "SELECT 1 FROM files WHERE channel=? AND directory=? AND name=? AND claimed=1"
            " AND state='present'", (channel, directory, name)))

    # --- sets -------------------------------------------------------------------------------

    def get_set(self, channel: str, directory: str, stem: str) -> SetRow | None:
        rows = self._query("SELECT * FROM sets WHERE channel=? AND directory=? AND stem=?",
                           (channel, directory, stem))
        return _set(rows[0]) if rows else None

    def sets(self, states: Iterable[str] | None = None) -> list[SetRow]:
        """Sets, optionally only those in ``states``."""
        rows = self._query("SELECT * FROM sets ORDER BY created_at, channel, directory, stem")
        wanted = set(states) if states is not None else None
        return [_set(r) for r in rows if wanted is None or r["state"] in wanted]

    def touch_set(self, channel: str, directory: str, stem: str, set_key: str,
                  at: datetime) -> None:
        """A FI/FS of the stem was closed: create the set in RECEIVING if it does not exist."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sets (channel, directory, stem, set_key, state, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 'RECEIVING', ?, ?)"
                " ON CONFLICT (channel, directory, stem) DO NOTHING",
                (channel, directory, stem, set_key, at.isoformat(), at.isoformat()))

    def update_set(self, channel: str, directory: str, stem: str, set_key: str, state: str,
                   at: datetime, *, go_name: str | None = None, ticket: str | None = None,
                   only_from: Iterable[str] | None = None) -> bool:
        """Create or move a set to ``state``; with ``only_from``, only if its state is one of
        them (or it does not exist). Returns whether the change happened."""
        assert state in SET_STATES
        with self.transaction() as db:
            rows = db.execute("SELECT state FROM sets WHERE channel=? AND directory=? AND stem=?",
                              (channel, directory, stem)).fetchall()
            if rows and only_from is not None and rows[0]["state"] not in set(only_from):
                return False
            if rows:
                db.execute(
                    "UPDATE sets SET state=?, updated_at=?, go_name=COALESCE(?, go_name),"
                    " ticket=COALESCE(?, ticket) WHERE channel=? AND directory=? AND stem=?",
                    (state, at.isoformat(), go_name, ticket, channel, directory, stem))
            else:
                db.execute(
                    "INSERT INTO sets (channel, directory, stem, set_key, go_name, state,"
                    " created_at, updated_at, ticket) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (channel, directory, stem, set_key, go_name, state, at.isoformat(),
                     at.isoformat(), ticket))
            return True

    def add_set_event(self, channel: str, directory: str, stem: str, at: datetime, kind: str,
                      name: str, text: str) -> None:
        """Record something that happened to a set (see :class:`SetEvent`)."""
        with self.transaction() as db:
            db.execute("INSERT INTO set_events (channel, directory, stem, at, kind, name, text)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (channel, directory, stem, at.isoformat(), kind, name, text))

    def set_events(self, channel: str | None = None, directory: str | None = None,
                   stem: str | None = None) -> list[SetEvent]:
        """Set events in the order they happened, optionally of one channel, directory, set."""
        sql, args = "SELECT * FROM set_events WHERE 1=1", []
        for col, val in (("channel", channel), ("directory", directory), ("stem", stem)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        return [SetEvent(r["id"], r["channel"], r["directory"], r["stem"], _dt(r["at"]),
                         r["kind"], r["name"], r["text"])
                for r in self._query(sql + " ORDER BY id", args)]

    # --- consumed set keys (spec 4.6) ---------------------------------------------------------

    def is_consumed(self, channel: str, set_key: str) -> bool:
        return bool(self._query("SELECT 1 FROM consumed WHERE channel=? AND set_key=?",
                                (channel, set_key)))

    def consume(self, channel: str, set_key: str, at: datetime) -> bool:
        """Consume a set key; False when it already was."""
        with self.transaction() as db:
            cur = db.execute("INSERT OR IGNORE INTO consumed (channel, set_key, at) VALUES"
                             " (?, ?, ?)", (channel, set_key, at.isoformat()))
            return cur.rowcount == 1

    # --- events (GO / TD closes, in arrival order) ---------------------------------------------

    def add_event(self, channel: str, directory: str, name: str, kind: str,
                  closed_at: datetime) -> EventRow:
        """Journal a GO/TD close (pending); its id orders processing."""
        with self.transaction() as db:
            cur = db.execute("INSERT INTO events (channel, directory, name, kind, closed_at)"
                             " VALUES (?, ?, ?, ?, ?)",
                             (channel, directory, name, kind, closed_at.isoformat()))
            # the row as the table holds it (closed_at through its text form), without a query
            return EventRow(int(cur.lastrowid or 0), channel, directory, name, kind,
                            _dt(closed_at.isoformat()), "pending")

    def event(self, event_id: int) -> EventRow:
        return _event(self._query("SELECT * FROM events WHERE id=?", (event_id,))[0])

    def events(self, states: Iterable[str] = ("pending", "planned")) -> list[EventRow]:
        """Events in arrival order, by state."""
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        return [_event(r) for r in self._query(
            f"SELECT * FROM events WHERE state IN ({marks}) ORDER BY id", wanted)]

    def set_event_state(self, event_id: int, state: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE events SET state=? WHERE id=?", (state, event_id))

    # --- counters (spec 4.8, 9.4) -------------------------------------------------------------

    def next_counter(self, key: str) -> int:
        """Next value of a named counter, starting at 1; never reused."""
        with self.transaction() as db:
            return int(db.execute("INSERT INTO counters (key, value) VALUES (?, 1)"
                                  " ON CONFLICT (key) DO UPDATE SET value = value + 1"
                                  " RETURNING value", (key,)).fetchone()[0])

    def next_answer_seq(self, channel: str, day: str, env: str) -> str:
        """Answer SEQ of spec 4.8: per channel, answer date and ENV, 5 digits from 00001."""
        n = self.next_counter(f"answer:{channel}:{day}:{env}")
        if n > 99999:
            raise OverflowError(f"answer sequence exhausted for {channel} {day} {env}")
        return f"{n:05d}"

    def next_ticket(self, at: datetime) -> str:
        """Ticket of spec 9.4: YY + day of year + 'A' + 7-digit counter per home."""
        return make_ticket(at.date(), self.next_counter("ticket"))

    # --- answers ------------------------------------------------------------------------------

    def add_answer(self, channel: str, directory: str, name: str, kind: str, trigger: str,
                   ticket: str, result_code: str, content: bytes, at: datetime, *,
                   event_id: int | None = None, stem: str | None = None,
                   next_state: str | None = None, set_directory: str | None = None) -> int:
        """Plan an answer: its name and bytes are fixed here, its files are written later."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO answers (channel, directory, name, kind, trigger, ticket,"
                " result_code, content, event_id, stem, next_state, set_directory, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (channel, directory, name, kind, trigger, ticket, result_code, content,
                 event_id, stem, next_state, set_directory, at.isoformat()))
            return int(cur.lastrowid or 0)

    def answers(self, channel: str | None = None, *, written: bool | None = None,
                event_id: int | None = None) -> list[AnswerRow]:
        """Answers in the order they were planned."""
        sql, args = "SELECT * FROM answers WHERE 1=1", list[object]()
        if channel is not None:
            sql += " AND channel=?"
            args.append(channel)
        if written is not None:
            sql += " AND written=?"
            args.append(int(written))
        if event_id is not None:
            sql += " AND event_id=?"
            args.append(event_id)
        return [_answer(r) for r in self._query(sql + " ORDER BY id", args)]

    def answer_written(self, answer_id: int, at: datetime) -> None:
        """The answer's files exist: mark it and move its set to the planned next state."""
        with self.transaction() as db:
            row = db.execute("SELECT next_state, stem, ticket, channel, set_directory FROM"
                             " answers WHERE id=?", (answer_id,)).fetchone()
            db.execute("UPDATE answers SET written=1, written_at=? WHERE id=?",
                       (at.isoformat(), answer_id))
            if row["next_state"] and row["stem"]:
                db.execute("UPDATE sets SET state=?, updated_at=?, ticket=COALESCE(ticket, ?)"
                           " WHERE channel=? AND directory=? AND stem=?",
                           (row["next_state"], at.isoformat(), row["ticket"], row["channel"],
                            row["set_directory"], row["stem"]))

    # --- registry (spec 8.4) ------------------------------------------------------------------

    def registry(self, sender: str, env: str) -> JournalRegistry:
        """A RegistryView for one sender number and environment letter."""
        return JournalRegistry(self, sender, env)

    def registry_status(self, sender: str, env: str, declaration_ref: str) -> str | None:
        rows = self._query(_REGISTRY_STATUS, (sender, env, declaration_ref))
        return str(rows[0]["status"]) if rows else None

    def apply_registry(self, sender: str, env: str, updates: dict[str, str]) -> None:
        """Apply accepted declarations' effects (within the NOTI's transaction)."""
        with self.transaction() as db:
            if updates:
                # counted under the journal lock, which the transaction holds until its commit:
                # a reader of the generation (registry_generation takes the lock) sees either
                # the old count and the old registry, or both new
                key = (sender, env)
                self._registry_gen[key] = self._registry_gen.get(key, 0) + 1
            db.executemany(
                "INSERT INTO registry (sender, env, declaration_ref, status) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sender, env, declaration_ref) DO UPDATE SET status=excluded.status",
                [(sender, env, ref, status) for ref, status in updates.items()])

    def registry_generation(self, sender: str, env: str) -> int:
        """How often this journal changed the registry of (sender, env) since it was opened.

        Equal values read before and after a scan mean the scan saw one state of the registry
        (a change in progress is waited for: the value is read under the journal lock).
        """
        with self._lock:
            return self._registry_gen.get((sender, env), 0)

    def registry_entries(self, sender: str, env: str) -> dict[str, str]:
        return {r["declaration_ref"]: r["status"] for r in self._query(
            "SELECT declaration_ref, status FROM registry WHERE sender=? AND env=?",
            (sender, env))}

    # --- status -----------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """Counts for ``fla-sim status``: files and sets per state, answers, pending events."""
        def counts(sql: str) -> dict[str, int]:
            return {str(r[0]): int(r[1]) for r in self._query(sql)}
        return {
            "files": counts("SELECT state, COUNT(*) FROM files GROUP BY state"),
            "sets": counts("SELECT state, COUNT(*) FROM sets GROUP BY state"),
            "answers": counts("SELECT kind, COUNT(*) FROM answers GROUP BY kind"),
            "answers_unwritten": int(self._query(
                "SELECT COUNT(*) FROM answers WHERE written=0")[0][0]),
            "events_pending": int(self._query(
                "SELECT COUNT(*) FROM events WHERE state != 'done'")[0][0]),
            "consumed_set_keys": int(self._query("SELECT COUNT(*) FROM consumed")[0][0]),
            "registry": int(self._query("SELECT COUNT(*) FROM registry")[0][0]),
            "set_events": counts("SELECT kind, COUNT(*) FROM set_events GROUP BY kind"),
        }


_REGISTRY_STATUS = ("SELECT status FROM registry WHERE sender=? AND env=? AND"
                    " declaration_ref=?")


class RegistryReader:
    """Registry lookups from another process (a judge worker), on its own read-only connection.

    WAL mode lets it read while the simulator writes; each lookup sees the last commit, and the
    simulator commits a set's registry changes before the next set of that channel is judged.
    """

    def __init__(self, path: str | Path):
        uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None,
                                   check_same_thread=False)

    def registry(self, sender: str, env: str) -> JournalRegistry:
        """A RegistryView for one sender number and environment letter."""
        return JournalRegistry(self, sender, env)

    def registry_status(self, sender: str, env: str, declaration_ref: str) -> str | None:
        """The registry status of one declaration reference, None when unknown."""
        row = self._db.execute(_REGISTRY_STATUS, (sender, env, declaration_ref)).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


class JournalRegistry:
    """``RegistryView`` (checks/context.py) backed by the journal (or a RegistryReader)."""

    def __init__(self, journal: Journal | RegistryReader, sender: str, env: str):
        self.journal, self.sender, self.env = journal, sender, env

    def status(self, declaration_ref: str) -> str | None:
        return self.journal.registry_status(self.sender, self.env, declaration_ref)


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _file(r: sqlite3.Row) -> FileRow:
    return FileRow(r["channel"], r["directory"], r["name"], r["size"], _dt(r["closed_at"]),
                   r["state"], bool(r["claimed"]), r["veto"])


def _set(r: sqlite3.Row) -> SetRow:
    return SetRow(r["channel"], r["directory"], r["stem"], r["set_key"], r["go_name"], r["state"],
                  _dt(r["created_at"]), _dt(r["updated_at"]), r["ticket"])


def _event(r: sqlite3.Row) -> EventRow:
    return EventRow(r["id"], r["channel"], r["directory"], r["name"], r["kind"],
                    _dt(r["closed_at"]), r["state"])


def _answer(r: sqlite3.Row) -> AnswerRow:
    return AnswerRow(r["id"], r["channel"], r["directory"], r["name"], r["kind"], r["trigger"],
                     r["ticket"], r["result_code"], bytes(r["content"]), bool(r["written"]),
                     r["event_id"], r["stem"], r["next_state"], r["set_directory"])
