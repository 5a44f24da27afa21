"""The durable queue of ``actionmap serve``: events between the intake's 200 and their delivery, one lane per connection.

An event is committed once (``events``) with one lane row per connection of the
deployment (``lanes``): each connection claims, retries and settles its own rows,
so a destination that is down never delays another (bulkheads). The event is
deleted in the transaction that settles its last lane row. A batch's fate is
written in one transaction (:meth:`Queue.settle`): after a crash a lane row is
either settled whole or still queued, and is then sent again, which the
destination's idempotency key makes harmless.

The counters live in the same file, per connection, and change in the same
transactions as the rows they count, so for every connection ``received =
delivered + filtered + invalid + dead_lettered + queued`` holds exactly, across
restarts, whenever it is read. A connection the file holds rows of but the
deployment does not name keeps them, never delivered by another
(:meth:`Queue.orphans`). The file itself (opening, checking, upgrading, the
lock, commits and a full disk) is :mod:`engine.runtime.serve.storage`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson

from engine.delivery.deadletters import json_text
from engine.delivery import DeadLetter
from engine.delivery.accounting import Final, Settled
from engine.errors import ConfigError
from engine.events import Event, decode
from engine.runtime.serve.storage import Storage

Category = Final
CATEGORIES: tuple[Category, ...] = ("delivered", "filtered", "invalid", "dead_lettered")
COUNTERS = ("received", *CATEGORIES, "retried")
_CHUNK = 500  # ids per statement (SQLite binds at most 32,766 parameters; 500 keeps statements small)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A lane row leased to one worker of its connection: the event (``id`` is the event's) and its state there."""

    id: int
    body: bytes
    received: float
    attempts: int
    settled: dict[str, Settled]


@dataclass(frozen=True, slots=True)
class Later:
    """A row that goes back to its lane: when it is due, what is already decided, whether it counts as a retry."""

    due: float
    settled: Mapping[str, Settled] = field(default_factory=dict)
    retried: bool = False


@dataclass(frozen=True)
class LaneStats:
    """One connection: its counters (every name of COUNTERS), its lane rows, the commit time of its oldest event."""

    counters: dict[str, int]
    depth: int
    oldest: float | None  # unix time the oldest event of the lane was committed; None when the lane is empty


@dataclass(frozen=True)
class Stats:
    """One consistent reading of the counters and the lanes.

    ``connections``: the deployment's, in its order, then any other the file
    holds counters or rows of (every connection, opened with none); ``events``:
    the events stored (each once, however many lanes hold it).
    """

    connections: dict[str, LaneStats]
    events: int


def _chunks(ids: Sequence[int]) -> Iterator[tuple[list[int], str]]:
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start:start + _CHUNK])
        yield chunk, ",".join("?" * len(chunk))


class Queue:
    """The queue in ``data_dir`` for the deployment's ``connections`` (their names); thread-safe.

    ``exclusive`` holds the data dir's lock, as the service does; the
    ``dead-letters`` command opens the queue without it and without connections,
    alongside a running service. A file of schema 1 is upgraded when opened with
    connections (its rows become the first one's), refused without.
    """

    def __init__(self, data_dir: str | Path, connections: Sequence[str] = (), *, exclusive: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        names = tuple(connections)
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"connections must be distinct non-empty names, got {list(names)}")
        self.connections = names
        self.clock = clock
        self._store = Storage(data_dir, names[0] if names else None, exclusive=exclusive)
        self.data_dir = self._store.data_dir
        self.path = self._store.path
        self.upgraded_from = self._store.upgraded_from  # 1 when this open upgraded a schema-1 file, else None

    def close(self) -> None:
        self._store.close()

    def commit_problem(self) -> str | None:
        """Why the queue cannot commit now, None when it can (see :meth:`Storage.commit_problem`)."""
        return self._store.commit_problem()

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the queue cannot be read."""
        self._store.ping()

    def _served(self, connection: str) -> None:
        if connection not in self.connections:
            raise ValueError(f"connection {connection!r} is not one of this queue's ({', '.join(self.connections) or 'none'})")

    @staticmethod
    def _count(db: sqlite3.Connection, connection: str, name: str, amount: int) -> None:
        if amount:
            db.execute("INSERT INTO counters (connection, name, value) VALUES (?, ?, ?) "
                       "ON CONFLICT (connection, name) DO UPDATE SET value = value + excluded.value", (connection, name, amount))

    def put(self, bodies: Sequence[bytes]) -> None:
        """Store events (JSON texts), each once with a lane row per connection, in one transaction: when this
        returns, they are on disk, and counted ``received`` at every connection."""
        if not self.connections:
            raise ValueError("put() needs the deployment's connections: this queue was opened with none")
        if not bodies:
            return
        now = self.clock()
        with self._store.write() as db:
            self._store.check_reserve()
            (last,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
            db.executemany("INSERT INTO events (body, received) VALUES (?, ?)", [(b, now) for b in bodies])
            for connection in self.connections:  # the write lock is held: every event past ``last`` was just inserted
                db.execute("INSERT INTO lanes (connection, event_id, due) SELECT ?, id, ? FROM events WHERE id > ?",
                           (connection, now, last))
                self._count(db, connection, "received", len(bodies))

    def claim(self, connection: str, limit: int, lease_seconds: float) -> list[Claimed]:
        """Lease up to ``limit`` due rows of ``connection``'s lane, oldest first; a lease that runs out makes its
        rows claimable again."""
        self._served(connection)
        now = self.clock()
        with self._store.write() as db:
            leased = db.execute(
                "UPDATE lanes SET lease = ?, attempts = attempts + 1 WHERE connection = ? AND event_id IN "
                "(SELECT event_id FROM lanes WHERE connection = ? AND due <= ? AND lease <= ? ORDER BY due, event_id LIMIT ?) "
                "RETURNING event_id, attempts, settled",
                (now + lease_seconds, connection, connection, now, now, limit),
            ).fetchall()
            events: dict[int, tuple[bytes, float]] = {}
            for chunk, marks in _chunks([row[0] for row in leased]):
                for event_id, body, received in db.execute(f"SELECT id, body, received FROM events WHERE id IN ({marks})", chunk):
                    events[event_id] = (body, received)
        leased.sort()
        return [Claimed(event_id, *events[event_id], attempts, orjson.loads(settled) if settled else {})
                for event_id, attempts, settled in leased]

    def settle(
        self,
        connection: str,
        finished: Mapping[int, Category] = {},
        letters: Sequence[tuple[bytes, DeadLetter]] = (),
        later: Mapping[int, Later] = {},
    ) -> None:
        """Record what became of claimed rows of ``connection``'s lane, in one transaction.

        ``finished`` rows are deleted and counted under their category (a row
        already gone, settled by someone else after its lease ran out, is not
        counted twice), and an event no lane holds any more is deleted;
        ``letters`` (the event as it was received, and its dead letter, whose
        ``index`` is the event's id) are stored as this connection's; ``later`` rows go back to
        the lane, free, due at the time given, with what is already decided.
        """
        self._served(connection)
        with self._store.write() as db:
            db.executemany(
                "INSERT INTO dead_letters (event_id, connection, subscription, event, payload, reason, status, attempts, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(l.index, connection, l.subscription, body, None if l.payload is None else json_text(l.payload).encode(),
                  l.reason, l.status, l.attempts, l.time) for body, l in letters],
            )
            by_category: dict[Category, list[int]] = {}
            for event_id, category in finished.items():
                by_category.setdefault(category, []).append(event_id)
            for category, ids in by_category.items():
                for chunk, marks in _chunks(ids):
                    deleted = db.execute(f"DELETE FROM lanes WHERE connection = ? AND event_id IN ({marks})",
                                         [connection, *chunk]).rowcount
                    self._count(db, connection, category, deleted)
                    db.execute(f"DELETE FROM events WHERE id IN ({marks}) "
                               "AND NOT EXISTS (SELECT 1 FROM lanes WHERE lanes.event_id = events.id)", chunk)
            db.executemany(
                "UPDATE lanes SET due = ?, lease = 0, settled = ? WHERE connection = ? AND event_id = ?",
                [(l.due, orjson.dumps(dict(l.settled)) if l.settled else None, connection, event_id)
                 for event_id, l in later.items()],
            )
            self._count(db, connection, "retried", sum(l.retried for l in later.values()))

    def release_all(self) -> int:
        """Free every lease of every lane: at startup, the leases of a process that died are held by no one."""
        try:
            with self._store.write() as db:
                return int(db.execute("UPDATE lanes SET lease = 0 WHERE lease > 0").rowcount)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot free the batches the previous run left leased in {self.path}: "
                              f"{self._store.explain(exc)}; then start the service again") from None

    def stats(self) -> Stats:
        """Every connection's counters, depth and oldest event, and the events stored, read in one transaction.

        The oldest event of a lane is its first by id: ids are given in commit order, so this is one index
        lookup, not a scan (it could only differ from the smallest commit time if the clock went back).
        """
        with self._store.read() as db:
            counts: dict[str, dict[str, int]] = {name: {} for name in self.connections}
            for connection, name, value in db.execute("SELECT connection, name, value FROM counters"):
                counts.setdefault(connection, {})[name] = value
            depths = dict(db.execute("SELECT connection, COUNT(*) FROM lanes GROUP BY connection").fetchall())
            for connection in depths:
                counts.setdefault(connection, {})
            lanes = {}
            for connection, values in counts.items():
                oldest = None
                if depths.get(connection):
                    oldest = db.execute(
                        "SELECT received FROM events WHERE id = (SELECT MIN(event_id) FROM lanes WHERE connection = ?)",
                        (connection,)).fetchone()[0]
                lanes[connection] = LaneStats({name: values.get(name, 0) for name in COUNTERS}, depths.get(connection, 0), oldest)
            (events,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        return Stats(lanes, events)

    def orphans(self) -> dict[str, int]:
        """Connections the file holds lane rows of that the deployment does not name, and how many rows each.

        Their rows stay where they are, never deleted nor delivered by another connection: starting the service
        with that connection's mapping again delivers them. Opened with no connections, nothing is an orphan.
        """
        if not self.connections:
            return {}
        marks = ",".join("?" * len(self.connections))
        with self._store.read() as db:
            return dict(db.execute(f"SELECT connection, COUNT(*) FROM lanes WHERE connection NOT IN ({marks}) "
                                   "GROUP BY connection ORDER BY connection", self.connections).fetchall())

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        """Every stored dead letter, oldest first, as a JSON-ready record naming its connection."""
        with self._store.read() as db:
            rows = db.execute(
                "SELECT id, event_id, connection, subscription, event, payload, reason, status, attempts, time "
                "FROM dead_letters ORDER BY id"
            ).fetchall()
        for row_id, event_id, connection, subscription, event, payload, reason, status, attempts, when in rows:
            stored = decode(event_id, 0, event)  # a row that was not JSON, or past a limit, is shown as its text
            kept = {"event": stored.value} if isinstance(stored, Event) else {"event": None, "raw": stored.raw}
            yield {
                "id": row_id, "event_id": event_id, "connection": connection, "subscription": subscription, **kept,
                "payload": None if payload is None else orjson.loads(payload), "reason": reason,
                "status": status, "attempts": attempts, "time": when,
            }

    def requeue(self, dead_letter_ids: Sequence[int]) -> dict[str, int]:
        """Put dead letters' events back in the queue for the connection each was dead-lettered at; the events
        queued per connection (counted ``received`` there).

        Each original event is stored once again, with a lane row at every
        connection one of its dead letters names: an event dead-lettered for two
        subscriptions of one connection is queued once there, and is then offered
        to every subscription of that connection again (destinations deduplicate
        by the event's id, so one that already has it ignores the repeat).
        """
        now = self.clock()
        with self._store.write() as db:
            ids = list(dead_letter_ids)
            events: dict[int, tuple[bytes, dict[str, None]]] = {}
            for chunk, marks in _chunks(ids):
                for event_id, connection, event in db.execute(
                        f"SELECT event_id, connection, event FROM dead_letters WHERE id IN ({marks}) ORDER BY id", chunk):
                    events.setdefault(event_id, (event, {}))[1][connection] = None
                db.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", chunk)
            queued: dict[str, int] = {}
            for body, connections in events.values():
                event_id = db.execute("INSERT INTO events (body, received) VALUES (?, ?)", (body, now)).lastrowid
                for connection in connections:
                    db.execute("INSERT INTO lanes (connection, event_id, due) VALUES (?, ?, ?)", (connection, event_id, now))
                    queued[connection] = queued.get(connection, 0) + 1
            for connection, count in queued.items():
                self._count(db, connection, "received", count)
        return queued
