"""The durable queue of ``actionmap serve``: events between the intake's 200 and their delivery.

One SQLite file in WAL mode with ``synchronous=FULL``: every commit syncs the
write-ahead log, so an event the intake acknowledged survives kill -9 *and* a
power loss (``NORMAL`` would survive kill -9 but may lose the last commits on
power loss, which for billing data is money lost). A batch's fate is written in
one transaction (:meth:`Queue.settle`): after a crash a row is either settled
whole or still queued, and is then sent again, which the destination's
idempotency key makes harmless.

The counters live in the same file and change in the same transactions as the
rows they count, so ``received = delivered + filtered + invalid + dead_lettered +
queued`` holds exactly, across restarts, whenever it is read.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import orjson

from engine.errors import ConfigError

SCHEMA_VERSION = 1
DB_NAME = "queue.sqlite3"
LOCK_NAME = "serve.lock"

Category = Literal["delivered", "filtered", "invalid", "dead_lettered"]
CATEGORIES: tuple[Category, ...] = ("delivered", "filtered", "invalid", "dead_lettered")
COUNTERS = ("received", *CATEGORIES, "retried")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,                 -- the event as received (JSON)
    received REAL NOT NULL,             -- unix time it was committed
    due REAL NOT NULL,                  -- claimable from this time on (a retry sets it later)
    lease REAL NOT NULL DEFAULT 0,      -- claimed until this time; 0 = free
    attempts INTEGER NOT NULL DEFAULT 0,
    settled BLOB                        -- {{subscription: category}} already decided, when some are
);
CREATE INDEX IF NOT EXISTS events_due ON events (due, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,          -- the queue row it came from
    subscription TEXT NOT NULL,
    event BLOB NOT NULL,
    payload BLOB,
    reason TEXT NOT NULL,
    status INTEGER,
    attempts INTEGER NOT NULL,
    time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', {SCHEMA_VERSION});
""" + "".join(f"INSERT OR IGNORE INTO counters VALUES ('{name}', 0);\n" for name in COUNTERS)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row leased to one worker."""

    id: int
    body: bytes
    received: float
    attempts: int
    settled: dict[str, Category]


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to store: one (event, subscription) that will not be delivered."""

    event_id: int
    subscription: str
    event: bytes
    payload: dict[str, Any] | None
    reason: str
    status: int | None
    attempts: int
    time: str


@dataclass(frozen=True, slots=True)
class Later:
    """A row that goes back to the queue: when it is due, what is already decided, whether it counts as a retry."""

    due: float
    settled: Mapping[str, Category] = field(default_factory=dict)
    retried: bool = False


@dataclass(frozen=True)
class Stats:
    """One consistent reading of the counters and the queue."""

    counters: dict[str, int]
    depth: int
    oldest: float | None  # unix time of the oldest queued event


def _unusable(path: Path, problem: object) -> ConfigError:
    return ConfigError(
        f"{path}: cannot be used as the actionmap queue ({problem}). Nothing in it was changed or deleted: "
        f"fix the file's permissions, restore it from a backup, or move it aside (the events in it are then "
        f"not delivered) to start with an empty queue"
    )


def _connect(path: Path) -> sqlite3.Connection:
    """Open and check the queue file; every problem is a ConfigError naming it, never a new empty queue over old data."""
    if path.exists() and not path.is_file():
        raise _unusable(path, "it is not a regular file")
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from None
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise _unusable(path, f"SQLite would not switch it to WAL mode (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=FULL")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise _unusable(path, f"SQLite's integrity check failed: {verdict}")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise _unusable(path, f"it is an SQLite file of something else (tables: {', '.join(sorted(tables))})")
        if "meta" in tables:
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None or version[0] > SCHEMA_VERSION:
                raise _unusable(path, f"it was written by a newer actionmap (schema {version and version[0]}, this one reads {SCHEMA_VERSION})")
        db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
    except sqlite3.Error as exc:
        db.close()
        raise _unusable(path, exc) from None
    except ConfigError:
        db.close()
        raise
    return db


def _lock(data_dir: Path) -> int:
    """Hold the data dir for this process (released by the kernel on any exit, kill -9 included)."""
    path = data_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the lock file of the data dir ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"{data_dir} is in use by another actionmap serve (it holds {path}): stop it, or give this one another --data-dir"
        ) from None
    return fd


class Queue:
    """The queue in ``data_dir``; thread-safe (one connection, one lock: SQLite has one writer at a time anyway).

    ``exclusive`` holds the data dir's lock, as the service does: two services on
    one queue would fight over leases. The ``dead-letters`` command opens it
    without the lock, alongside a running service, which SQLite's WAL allows.
    """

    def __init__(self, data_dir: str | Path, *, exclusive: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.clock = clock
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--data-dir {self.data_dir}: cannot be used as a directory ({exc.strerror})") from None
        if not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: is not a directory")
        self._lock_fd = _lock(self.data_dir) if exclusive else None
        self.path = self.data_dir / DB_NAME
        try:
            self._db = _connect(self.path)
        except ConfigError:
            self._unlock()
            raise
        self._mutex = threading.Lock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._unlock()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (committed, synced, before this returns)."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, amount: int) -> None:
        if amount:
            db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (amount, name))

    def put(self, bodies: Sequence[bytes]) -> None:
        """Store events (JSON texts) in one transaction: when this returns, they are on disk."""
        now = self.clock()
        with self._write() as db:
            db.executemany("INSERT INTO events (body, received, due) VALUES (?, ?, ?)", [(b, now, now) for b in bodies])
            self._count(db, "received", len(bodies))

    def claim(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Lease up to ``limit`` due rows, oldest first; a lease that runs out makes its rows claimable again."""
        now = self.clock()
        with self._write() as db:
            rows = db.execute(
                "UPDATE events SET lease = ?, attempts = attempts + 1 WHERE id IN "
                "(SELECT id FROM events WHERE due <= ? AND lease <= ? ORDER BY due, id LIMIT ?) "
                "RETURNING id, body, received, attempts, settled",
                (now + lease_seconds, now, now, limit),
            ).fetchall()
        rows.sort()
        return [Claimed(i, body, received, attempts, orjson.loads(settled) if settled else {})
                for i, body, received, attempts, settled in rows]

    def settle(
        self,
        finished: Mapping[int, Category] = {},
        letters: Sequence[Letter] = (),
        later: Mapping[int, Later] = {},
    ) -> None:
        """Record what became of claimed rows, in one transaction.

        ``finished`` rows are deleted and counted under their category (a row
        already gone, settled by someone else after its lease ran out, is not
        counted twice); ``letters`` are stored; ``later`` rows go back to the
        queue, free, due at the time given, with what is already decided.
        """
        with self._write() as db:
            by_category: dict[Category, list[int]] = {}
            for row_id, category in finished.items():
                by_category.setdefault(category, []).append(row_id)
            for category, ids in by_category.items():
                deleted = db.execute(f"DELETE FROM events WHERE id IN ({','.join('?' * len(ids))})", ids).rowcount
                self._count(db, category, deleted)
            db.executemany(
                "INSERT INTO dead_letters (event_id, subscription, event, payload, reason, status, attempts, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(l.event_id, l.subscription, l.event, None if l.payload is None else orjson.dumps(l.payload),
                  l.reason, l.status, l.attempts, l.time) for l in letters],
            )
            db.executemany(
                "UPDATE events SET due = ?, lease = 0, settled = ? WHERE id = ?",
                [(l.due, orjson.dumps(dict(l.settled)) if l.settled else None, row_id) for row_id, l in later.items()],
            )
            self._count(db, "retried", sum(l.retried for l in later.values()))

    def release_all(self) -> int:
        """Free every lease: at startup, the leases of a process that died are held by no one."""
        with self._write() as db:
            return db.execute("UPDATE events SET lease = 0 WHERE lease > 0").rowcount

    def stats(self) -> Stats:
        with self._mutex:
            self._db.execute("BEGIN")
            try:
                counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
                depth, oldest = self._db.execute("SELECT COUNT(*), MIN(received) FROM events").fetchone()
            finally:
                self._db.execute("COMMIT")
        return Stats(counters, depth, oldest)

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the queue cannot be read."""
        with self._mutex:
            self._db.execute("SELECT 1 FROM counters LIMIT 1").fetchone()

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        """Every stored dead letter, oldest first, as a JSON-ready record."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT id, event_id, subscription, event, payload, reason, status, attempts, time FROM dead_letters ORDER BY id"
            ).fetchall()
        for row_id, event_id, subscription, event, payload, reason, status, attempts, when in rows:
            yield {
                "id": row_id, "event_id": event_id, "subscription": subscription, "event": orjson.loads(event),
                "payload": None if payload is None else orjson.loads(payload), "reason": reason,
                "status": status, "attempts": attempts, "time": when,
            }

    def requeue(self, dead_letter_ids: Sequence[int]) -> int:
        """Move dead letters' events back into the queue (one row per original event); how many events were queued.

        An event dead-lettered for two subscriptions is queued once, and is then
        offered to every subscription again: destinations deduplicate by the
        event's id, so one that already has it ignores the repeat.
        """
        now = self.clock()
        with self._write() as db:
            ids = list(dead_letter_ids)
            events: dict[int, bytes] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for event_id, event in db.execute(f"SELECT event_id, event FROM dead_letters WHERE id IN ({marks}) ORDER BY id", chunk):
                    events.setdefault(event_id, event)
                db.execute(f"DELETE FROM dead_letters WHERE id IN ({marks})", chunk)
            db.executemany("INSERT INTO events (body, received, due) VALUES (?, ?, ?)", [(e, now, now) for e in events.values()])
            self._count(db, "received", len(events))
        return len(events)
