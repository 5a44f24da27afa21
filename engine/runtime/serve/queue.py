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
from engine.deadletters import json_text
from engine.events import Event, decode

SCHEMA_VERSION = 1
DB_NAME = "queue.sqlite3"
LOCK_NAME = "serve.lock"
BUSY_TIMEOUT = 30.0  # seconds a commit waits for another process's lock (the dead-letters command) before failing
RESERVE_BYTES = 256 * 1024  # put() refuses events while less is free: workers need room to record deliveries, which frees space
PROBE_INTERVAL = 1.0  # at most one write probe a second from /health, and only while commits fail

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


class DiskFull(sqlite3.OperationalError):
    """put() refused the events: less than RESERVE_BYTES are free. A queue that fills its disk to the last byte
    cannot drain any more (a delivery is a commit, and a commit needs room in the WAL), so the rest is kept for
    the workers. A ``sqlite3.Error``, so the intake answers 503 as for any commit that failed."""

    sqlite_errorcode = sqlite3.SQLITE_FULL


@dataclass(frozen=True, slots=True)
class _Failure:
    """The last commit that failed, until one succeeds: what /health reports."""

    problem: str
    since: float  # unix time of the first failure of this run of failures


def _free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory``; None when it cannot be told."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _amount(size: int) -> str:
    return f"{size} bytes" if size < 10 * 1024 else f"{size // 1024} KB"


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _connect(path: Path) -> sqlite3.Connection:
    """Open and check the queue file; every problem is a ConfigError naming it, never a new empty queue over old data."""
    if path.exists() and not path.is_file():
        raise _unusable(path, "it is not a regular file")
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
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
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._failure: _Failure | None = None
        self._probed = 0.0  # time.monotonic() of the last write probe

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
        """One write transaction (committed, synced, before this returns).

        A failure is rolled back whatever failed, the COMMIT included (SQLite may leave the transaction open
        after SQLITE_FULL or an I/O error, and every later BEGIN would then fail), and remembered for /health
        until a commit that changed something succeeds (a claim that found nothing writes nothing, so it
        proves nothing).
        """
        with self._mutex:
            db = self._db
            if db.in_transaction:  # a ROLLBACK that failed last time: try again before anything else
                db.execute("ROLLBACK")
            changes = db.total_changes
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                self._abort(exc)
                raise
            if db.total_changes != changes:
                self._failure = None
            self._keep_wal_small()

    def _abort(self, exc: BaseException) -> None:
        """Roll back a failed write, remember why, and give back the WAL's space when the disk is full."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # retried by the next _write; the original error is the one to report
        if not isinstance(exc, sqlite3.Error):
            return
        failure = self._failure
        self._failure = _Failure(self._explain(exc), failure.since if failure else time.time())
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            self._checkpoint()

    def _explain(self, exc: sqlite3.Error) -> str:
        """What is wrong, for an operator: the cause by SQLite's error code, and what to do."""
        if isinstance(exc, DiskFull):
            return str(exc)
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            free = _free_bytes(self.data_dir)
            room = "" if free is None else f"{_amount(free)} free; "
            return (f"the disk of {self.data_dir} is full ({room}SQLite: {exc}): free space on it, "
                    f"the queue resumes by itself")
        if code == sqlite3.SQLITE_IOERR:
            return f"disk I/O error on {self.path} (SQLite: {exc}): check the disk and the kernel log (dmesg)"
        if code == sqlite3.SQLITE_READONLY:
            return (f"{self.path} cannot be written (SQLite: {exc}): check its permissions and that "
                    f"its filesystem is mounted read-write")
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return f"{self.path} is damaged (SQLite: {exc}): stop the service and restore the file from a backup"
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return (f"{self.path} is locked by another program for over {BUSY_TIMEOUT:g} s (SQLite: {exc}): "
                    f"find it (fuser {self.path}) and stop it")
        if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
            return f"{self.path} or its directory cannot be opened (SQLite: {exc}): check they exist and their permissions"
        return f"{exc} ({self.path})"

    def _keep_wal_small(self) -> None:
        """Checkpoint when the WAL is larger than the free space left.

        SQLite checkpoints on its own only once the WAL holds 1000 pages (4 MB), and until a checkpoint the
        WAL only grows: on a volume of a few MB it alone fills the disk, after which no commit (a delivery's
        included) succeeds again, even with the queue empty. Checkpointing while the free space still exceeds the WAL also
        means the database file has room to take the WAL's pages. Two system calls a commit; on a roomy
        disk the condition never holds.
        """
        free = _free_bytes(self.data_dir)
        if free is None:
            return
        try:
            wal = self._wal.stat().st_size
        except OSError:
            return
        if wal > free:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file and truncate it to zero bytes, giving its space back.

        Never waits: with another process reading (the dead-letters command) it gives up, and is tried again
        after a later commit.
        """
        db = self._db
        try:
            db.execute("PRAGMA busy_timeout = 0")
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        except sqlite3.Error:
            pass  # no room for the database file to take the WAL's pages yet: the WAL stays as it is

    def commit_problem(self) -> str | None:
        """Why the queue cannot commit now, None when it can: what /health reports.

        Cheap enough for every health check: one statvfs; and only while the last commit failed, a one-row
        write probe at most every PROBE_INTERVAL, so health turns ok by itself once commits work again,
        with no traffic. Below the reserve the answer needs no write at all (a probe would eat the room
        kept for deliveries).
        """
        free = _free_bytes(self.data_dir)
        failure = self._failure
        if free is not None and free < RESERVE_BYTES:
            return self._reserve_text(free) + (f" (failing since {_utc(failure.since)})" if failure else "")
        if failure is not None and time.monotonic() - self._probed >= PROBE_INTERVAL:
            self._probed = time.monotonic()
            try:
                with self._write() as db:
                    db.execute("INSERT INTO meta VALUES ('health_probe', 1) "
                               "ON CONFLICT (key) DO UPDATE SET value = value + 1")
            except sqlite3.Error:
                pass  # _write remembered why
            failure = self._failure
        return None if failure is None else f"{failure.problem} (failing since {_utc(failure.since)})"

    def _reserve_text(self, free: int) -> str:
        return (f"the disk of {self.data_dir} is full ({_amount(free)} free; new events are refused below "
                f"{_amount(RESERVE_BYTES)} free, so that deliveries can still be recorded): free space on it, "
                f"the queue resumes by itself")

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, amount: int) -> None:
        if amount:
            db.execute("UPDATE counters SET value = value + ? WHERE name = ?", (amount, name))

    def put(self, bodies: Sequence[bytes]) -> None:
        """Store events (JSON texts) in one transaction: when this returns, they are on disk."""
        now = self.clock()
        with self._write() as db:
            free = _free_bytes(self.data_dir)
            if free is not None and free < RESERVE_BYTES:
                raise DiskFull(self._reserve_text(free))
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
                [(l.event_id, l.subscription, l.event, None if l.payload is None else json_text(l.payload).encode(),
                  l.reason, l.status, l.attempts, l.time) for l in letters],
            )
            db.executemany(
                "UPDATE events SET due = ?, lease = 0, settled = ? WHERE id = ?",
                [(l.due, orjson.dumps(dict(l.settled)) if l.settled else None, row_id) for row_id, l in later.items()],
            )
            self._count(db, "retried", sum(l.retried for l in later.values()))

    def release_all(self) -> int:
        """Free every lease: at startup, the leases of a process that died are held by no one."""
        try:
            with self._write() as db:
                return db.execute("UPDATE events SET lease = 0 WHERE lease > 0").rowcount
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot free the batches the previous run left leased in {self.path}: "
                              f"{self._explain(exc)}; then start the service again") from None

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
            stored = decode(event_id, 0, event)  # a row that was not JSON, or past a limit, is shown as its text
            kept = {"event": stored.value} if isinstance(stored, Event) else {"event": None, "raw": stored.raw}
            yield {
                "id": row_id, "event_id": event_id, "subscription": subscription, **kept,
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
