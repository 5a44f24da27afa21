"""The SQLite file under the queue of ``actionmap serve``: opening and checking it, the data dir's lock, commits.

One SQLite file in WAL mode with ``synchronous=FULL``: every commit syncs the
write-ahead log, so an event the intake acknowledged survives kill -9 *and* a
power loss (``NORMAL`` would survive kill -9 but may lose the last commits on
power loss, which for billing data is money lost).

A file that cannot be used is a :class:`ConfigError` naming it, never a new
empty queue over old data; a file of schema 1 (one queue, before connections)
is upgraded in one transaction, its rows becoming the first connection's lane.
A commit that fails (a full disk, an I/O error) is rolled back whole and
remembered, explained for an operator, until one succeeds: what ``/health``
reports. The WAL is checkpointed before it can fill a small volume.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engine.errors import ConfigError

SCHEMA_VERSION = 2
DB_NAME = "queue.sqlite3"
LOCK_NAME = "serve.lock"
BUSY_TIMEOUT = 30.0  # seconds a commit waits for another process's lock (the dead-letters command) before failing
RESERVE_BYTES = 256 * 1024  # put() refuses events while less is free: workers need room to record deliveries, which frees space
PROBE_INTERVAL = 1.0  # at most one write probe a second from /health, and only while commits fail

_EVENTS = """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,                 -- the event as received (JSON), stored once for every connection
    received REAL NOT NULL              -- unix time it was committed
)"""
_DEAD_LETTERS = """CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,          -- the event it came from
    connection TEXT NOT NULL,           -- the connection that will not deliver it
    subscription TEXT NOT NULL,
    event BLOB NOT NULL,
    payload BLOB,
    reason TEXT NOT NULL,
    status INTEGER,
    attempts INTEGER NOT NULL,
    time TEXT NOT NULL
)"""
_COUNTERS = """CREATE TABLE IF NOT EXISTS counters (
    connection TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (connection, name)
)"""
_LANES = """CREATE TABLE IF NOT EXISTS lanes (
    connection TEXT NOT NULL,           -- the connection that delivers the event from this row
    event_id INTEGER NOT NULL,          -- events.id
    due REAL NOT NULL,                  -- claimable from this time on (a retry sets it later)
    lease REAL NOT NULL DEFAULT 0,      -- claimed until this time; 0 = free
    attempts INTEGER NOT NULL DEFAULT 0,
    settled BLOB,                       -- {subscription: category} already decided, when some are
    PRIMARY KEY (connection, event_id)
)"""
# Schema 2, one statement each: an event stored once (events), its delivery state at each connection (lanes),
# and per connection the dead letters and the counters.
_TABLES = (
    _EVENTS,
    _LANES,
    "CREATE INDEX IF NOT EXISTS lanes_due ON lanes (connection, due, event_id)",  # claiming, oldest first
    "CREATE INDEX IF NOT EXISTS lanes_event ON lanes (event_id)",  # is an event still in a lane (else it is deleted)
    _DEAD_LETTERS,
    _COUNTERS,
)


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


def free_bytes(directory: Path) -> int | None:
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


def _upgrade_from_1(db: sqlite3.Connection, connection: str) -> None:
    """Schema 1 (one queue) to 2, inside the caller's transaction: rows, counters and dead letters become ``connection``'s.

    Each table is rebuilt and its AUTOINCREMENT sequence carried over, so no event or dead letter id is ever
    given twice (the dead letters name their event by id, and the operator lists them by theirs).
    """
    sequences = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    db.execute("ALTER TABLE events RENAME TO events_v1")
    db.execute("ALTER TABLE dead_letters RENAME TO dead_letters_v1")
    db.execute("ALTER TABLE counters RENAME TO counters_v1")
    for statement in _TABLES:
        db.execute(statement)
    db.execute("INSERT INTO events (id, body, received) SELECT id, body, received FROM events_v1")
    db.execute("INSERT INTO lanes (connection, event_id, due, lease, attempts, settled) "
               "SELECT ?, id, due, lease, attempts, settled FROM events_v1", (connection,))
    db.execute("INSERT INTO dead_letters (id, event_id, connection, subscription, event, payload, reason, status, attempts, time) "
               "SELECT id, event_id, ?, subscription, event, payload, reason, status, attempts, time FROM dead_letters_v1",
               (connection,))
    db.execute("INSERT INTO counters (connection, name, value) SELECT ?, name, value FROM counters_v1", (connection,))
    for old in ("events_v1", "dead_letters_v1", "counters_v1"):
        db.execute(f"DROP TABLE {old}")
    for table in ("events", "dead_letters"):
        highest = db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
        seq = max(highest, sequences.get(table, 0), sequences.get(f"{table}_v1", 0))
        db.execute("DELETE FROM sqlite_sequence WHERE name IN (?, ?)", (table, f"{table}_v1"))
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq))
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))


def _connect(path: Path, first_connection: str | None) -> tuple[sqlite3.Connection, int | None]:
    """Open, check and if need be create or upgrade the queue file; the connection and the schema it was upgraded from.

    Every problem is a ConfigError naming the file, never a new empty queue over old data.
    """
    if path.exists() and not path.is_file():
        raise _unusable(path, "it is not a regular file")
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from None
    upgraded: int | None = None
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise _unusable(path, f"SQLite would not switch it to WAL mode (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=FULL")
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise _unusable(path, f"SQLite's integrity check failed: {verdict}")
        db.execute("BEGIN IMMEDIATE")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise _unusable(path, f"it is an SQLite file of something else (tables: {', '.join(sorted(tables))})")
        version = SCHEMA_VERSION
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or row[0] > SCHEMA_VERSION:
                raise _unusable(path, f"it was written by a newer actionmap (schema {row and row[0]}, this one reads {SCHEMA_VERSION})")
            version = row[0]
        if version == 1:
            if first_connection is None:
                raise ConfigError(
                    f"{path}: the queue was written by an older actionmap (schema 1, before connections) and must be "
                    f"upgraded first: start `actionmap serve` on this data dir once (its first -m mapping takes the "
                    f"queued events, counters and dead letters), then run this command again. Nothing was changed"
                )
            _upgrade_from_1(db, first_connection)
            upgraded = 1
        else:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            for statement in _TABLES:
                db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.close()
        raise _unusable(path, exc) from None
    except ConfigError:
        db.close()
        raise
    return db, upgraded


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


class Storage:
    """The queue file in ``data_dir``: one SQLite connection behind one lock (SQLite has one writer at a time anyway).

    ``exclusive`` holds the data dir's lock, as the service does: two services on
    one queue would fight over leases. The ``dead-letters`` command opens it
    without the lock, alongside a running service, which SQLite's WAL allows.
    ``first_connection`` takes the rows of a schema-1 file; without one such a
    file is refused.
    """

    def __init__(self, data_dir: str | Path, first_connection: str | None, *, exclusive: bool = True) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--data-dir {self.data_dir}: cannot be used as a directory ({exc.strerror})") from None
        if not self.data_dir.is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: is not a directory")
        self._lock_fd = _lock(self.data_dir) if exclusive else None
        self.path = self.data_dir / DB_NAME
        try:
            self._db, self.upgraded_from = _connect(self.path, first_connection)
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
    def write(self) -> Iterator[sqlite3.Connection]:
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

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: what is read in it is one consistent state of the file."""
        with self._mutex:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the file cannot be read."""
        with self._mutex:
            self._db.execute("SELECT 1 FROM counters LIMIT 1").fetchone()

    def _abort(self, exc: BaseException) -> None:
        """Roll back a failed write, remember why, and give back the WAL's space when the disk is full."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # retried by the next write; the original error is the one to report
        if not isinstance(exc, sqlite3.Error):
            return
        failure = self._failure
        self._failure = _Failure(self.explain(exc), failure.since if failure else time.time())
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            self._checkpoint()

    def explain(self, exc: sqlite3.Error) -> str:
        """What is wrong, for an operator: the cause by SQLite's error code, and what to do."""
        if isinstance(exc, DiskFull):
            return str(exc)
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == sqlite3.SQLITE_FULL:
            free = free_bytes(self.data_dir)
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
        free = free_bytes(self.data_dir)
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

    def check_reserve(self) -> None:
        """Raise DiskFull while less than RESERVE_BYTES are free (called inside a write, before adding events)."""
        free = free_bytes(self.data_dir)
        if free is not None and free < RESERVE_BYTES:
            raise DiskFull(self._reserve_text(free))

    def commit_problem(self) -> str | None:
        """Why the queue cannot commit now, None when it can: what /health reports.

        Cheap enough for every health check: one statvfs; and only while the last commit failed, a one-row
        write probe at most every PROBE_INTERVAL, so health turns ok by itself once commits work again,
        with no traffic. Below the reserve the answer needs no write at all (a probe would eat the room
        kept for deliveries).
        """
        free = free_bytes(self.data_dir)
        failure = self._failure
        if free is not None and free < RESERVE_BYTES:
            return self._reserve_text(free) + (f" (failing since {_utc(failure.since)})" if failure else "")
        if failure is not None and time.monotonic() - self._probed >= PROBE_INTERVAL:
            self._probed = time.monotonic()
            try:
                with self.write() as db:
                    db.execute("INSERT INTO meta VALUES ('health_probe', 1) "
                               "ON CONFLICT (key) DO UPDATE SET value = value + 1")
            except sqlite3.Error:
                pass  # write() remembered why
            failure = self._failure
        return None if failure is None else f"{failure.problem} (failing since {_utc(failure.since)})"

    def _reserve_text(self, free: int) -> str:
        return (f"the disk of {self.data_dir} is full ({_amount(free)} free; new events are refused below "
                f"{_amount(RESERVE_BYTES)} free, so that deliveries can still be recorded): free space on it, "
                f"the queue resumes by itself")
