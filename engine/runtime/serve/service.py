"""``actionmap serve``: the intake, the durable queue and the workers that deliver from it, in one process.

Each worker claims a batch of queued events with a lease, runs the pipeline,
applies the pre-send checks and hands each subscription's payloads to the
:class:`~engine.delivery.Sender`; then one transaction records every event's
fate. An event is delivered, filtered, invalid or dead-lettered (its dead
letters stored in the queue's table), or goes back to the queue: for a later
attempt when the destination kept failing past the sender's short in-process
retry budget, or at once when the service stops or the credential is refused
(events are kept, never dead-lettered, for that). A crash at any point leaves
an event queued or settled, never lost; it may be sent again, which the
destination's idempotency key (the event's ``messageId``) makes harmless.

SIGTERM or SIGINT: the intake stops accepting and finishes the requests it has;
workers finish their batch or release it, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import httpx
import uvicorn

from engine.delivery import DeadLetter, Outgoing, RetryPolicy, Sender, TokenBucket, Unauthorized, check_credential
from engine.errors import ConfigError
from engine.events import BadInput, decode
from engine.intake import IntakeProtocol, create_app
from engine.observability import Health, Metrics, log, utc_text_now
from engine.config.mappingfile import MappingFile, Subscription
from engine.pipeline import Pipeline
from engine.presend import compile_presend
from engine.queue import Category, Claimed, Later, Letter, Queue

WRITE_KEYS_ENV = "ACTIONMAP_WRITE_KEYS"
IN_PROCESS_RETRY = RetryPolicy(max_duration=30.0)  # past this a batch goes back to the queue, not to the dead letters
LEASE_SECONDS = 600.0  # longer than any batch takes; leases of a dead process are freed at startup anyway
IDLE_POLL = 0.1
ERROR_PAUSE = 5.0
ROW_BACKOFF = (1.0, 300.0)  # first and longest wait between attempts of an event the destination keeps failing
CREDENTIAL_RECHECK = 30.0
_RANK: dict[Category, int] = {"delivered": 0, "dead_lettered": 1, "invalid": 2}


def write_keys(given: Sequence[str], from_file: Sequence[str] = (), env: Mapping[str, str] = os.environ) -> list[str]:
    """Every accepted write key: ``--write-key``, the mapping file's ``write_keys``, ``ACTIONMAP_WRITE_KEYS``
    (comma-separated), all at once, so a key can be rotated in by adding it anywhere; none is an error."""
    env_keys = [k.strip() for k in env.get(WRITE_KEYS_ENV, "").split(",")]
    keys = [k for k in (*given, *from_file, *env_keys) if k]
    if not keys:
        raise ConfigError(
            f"no write key: give one with --write-key KEY (repeatable), {WRITE_KEYS_ENV}=KEY1,KEY2 or write_keys: "
            "in the mapping file (the environment and ${VAR} keep it out of the process list); "
            "clients send it as the user name of HTTP Basic auth"
        )
    return list(dict.fromkeys(keys))


def _category(fates: Iterable[Category]) -> Category:
    """An event counts once: invalid if a subscription found it invalid, else dead-lettered if one did, else delivered;
    filtered when it fed no subscription."""
    return max(fates, key=_RANK.__getitem__, default="filtered")


class _Stopping(Exception):
    """Raised from a sender's wait when the service stops: the batch goes back to the queue unfinished."""


class CredentialGate:
    """Pauses every worker while the destination refuses the credential; rechecks it now and then to resume."""

    def __init__(self, health: Health, check: Callable[[], tuple[str, str]], interval: float = CREDENTIAL_RECHECK) -> None:
        self.health = health
        self.check = check
        self.interval = interval
        self._lock = threading.Lock()

    def refuse(self, message: str) -> None:
        with self._lock:
            if not self.health.refused:
                log("credential_refused", message=message, action="delivery paused; events are kept in the queue")
            self.health.refused = message

    def wait_open(self, stop: threading.Event) -> bool:
        """Block while delivery is paused; False when the service stops."""
        while self.health.refused:
            if stop.wait(self.interval):
                return False
            with self._lock:
                if self.health.refused:
                    verdict, detail = self.check()
                    if verdict == "valid":
                        self.health.refused = None
                        log("credential_accepted", detail=detail, action="delivery resumed")
        return not stop.is_set()


@dataclass
class _Row:
    """One claimed event during a batch: what is decided, what is in flight, what must wait for a later attempt."""

    claimed: Claimed
    event: Any
    fates: dict[str, Category]
    pending: set[str] = field(default_factory=set)
    waiting: dict[str, DeadLetter] = field(default_factory=dict)


class Worker(threading.Thread):
    """Claims batches from the queue and settles them until the service stops."""

    def __init__(
        self,
        name: str,
        mapping: MappingFile,
        queue: Queue,
        sender: Sender,
        metrics: Metrics,
        gate: CredentialGate,
        stop: threading.Event,
        retry_for: float,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.pipeline = Pipeline(mapping)
        self.settings = mapping.settings
        self.queue = queue
        self.sender = sender
        self.metrics = metrics
        self.gate = gate
        self.stop = stop
        self.retry_for = retry_for
        self.limit = max((s.batch_size for s in mapping.subscriptions), default=1)
        self.presend = {s.name: compile_presend(s.action) for s in mapping.subscriptions}
        self.rng = random.Random()

    def run(self) -> None:
        failing: str | None = None  # the claim error last logged: an outage of hours logs once, not every 5 s
        while self.gate.wait_open(self.stop):
            try:
                rows = self.queue.claim(self.limit, LEASE_SECONDS)
            except sqlite3.Error as exc:
                if str(exc) != failing:
                    failing = str(exc)
                    log("queue_error", worker=self.name, error=failing,
                        action=f"cannot claim events; trying again every {ERROR_PAUSE:g} s, the events stay queued")
                self.stop.wait(ERROR_PAUSE)
                continue
            if failing is not None:
                failing = None
                log("queue_recovered", worker=self.name, action="claiming events again")
            if not rows:
                self.stop.wait(IDLE_POLL)
                continue
            try:
                self.process(rows)
            except Exception as exc:  # a bug or a broken disk must not lose the batch: it goes back to the queue
                log("worker_error", worker=self.name, error=self.settings.redact(f"{type(exc).__name__}: {exc}"), events=len(rows))
                self._release(rows)

    def _release(self, rows: list[Claimed]) -> None:
        """Give a batch back to the queue, retrying every ERROR_PAUSE until that commits (a full disk) or the service stops.

        Retrying, rather than leaving the rows leased for LEASE_SECONDS, lets the queue drain as soon as the disk
        has room again. Their events may have been delivered already: sent again, the destination ignores them
        by messageId, and they are counted once, when a later settle deletes them.
        """
        failing = False
        while True:
            try:
                self.queue.settle(later={r.id: Later(time.time() + ERROR_PAUSE, r.settled) for r in rows})
            except sqlite3.Error as exc:
                if not failing:
                    failing = True
                    log("queue_error", worker=self.name, error=str(exc), events=len(rows),
                        action=f"cannot give the batch back to the queue; trying again every {ERROR_PAUSE:g} s")
                if self.stop.wait(ERROR_PAUSE):
                    log("release_abandoned", worker=self.name, events=len(rows),
                        action="the service is stopping: the batch stays queued, leased; the next start frees it")
                    return
                continue
            if failing:
                log("queue_recovered", worker=self.name, events=len(rows), action="the batch is back in the queue")
            return

    def process(self, claimed: list[Claimed]) -> None:
        """Map, check and deliver one claimed batch; record every event's fate in one transaction."""
        rows: dict[int, _Row] = {}
        letters: list[Letter] = []
        batches: dict[str, list[Outgoing]] = {}
        for one in claimed:
            item = decode(one.id, 0, one.body)  # a queued row has no line
            if isinstance(item, BadInput):  # not JSON, or past a limit: invalid once, kept as stored
                row = rows[one.id] = _Row(one, None, dict(one.settled))
                letters.append(self._decide(row, "", None, item.message, None, "invalid"))
                continue
            row = rows[one.id] = _Row(one, item.value, dict(one.settled))
            for outcome in self.pipeline.run(row.event):
                name = outcome.subscription
                if name in row.fates:
                    continue
                if outcome.status == "ok":
                    row.pending.add(name)
                    batches.setdefault(name, []).append(Outgoing(one.id, row.event, outcome.payload or {}))
                else:
                    letters.append(self._decide(row, name, outcome.payload, "; ".join(outcome.errors), None, "invalid"))
        for sub in self.pipeline.subscriptions:
            items = batches.get(sub.name, [])
            for start in range(0, len(items), sub.batch_size):
                if not self._deliver(sub, items[start:start + sub.batch_size], rows, letters):
                    break
        self._settle(rows, letters)

    def _decide(self, row: _Row, sub: str, payload: dict[str, Any] | None, reason: str, status: int | None,
                category: Category) -> Letter:
        row.fates[sub] = category
        row.pending.discard(sub)
        return Letter(row.claimed.id, sub, row.claimed.body, payload, self.settings.redact(reason), status,
                      row.claimed.attempts, utc_text_now())

    def _deliver(self, sub: Subscription, items: list[Outgoing], rows: dict[int, _Row], letters: list[Letter]) -> bool:
        """Send one batch of one subscription; False when delivery must stop (service stopping, credential refused)."""
        presend = self.presend[sub.name]
        if presend is not None:
            items, refused = presend.split(items, datetime.now(timezone.utc))
            for item, reason in refused:
                letters.append(self._decide(rows[item.position], sub.name, item.payload, reason, None, "dead_lettered"))
        if self.stop.is_set():
            return False
        if not items:
            return True

        def dead_letter(letter: DeadLetter) -> None:
            row = rows[letter.index]
            if letter.exhausted:  # a later attempt may still deliver it
                row.pending.discard(sub.name)
                row.waiting[sub.name] = letter
            else:
                letters.append(self._decide(row, sub.name, letter.payload, letter.reason, letter.status, "dead_lettered"))

        try:
            self.sender.deliver(sub, items, dead_letter)
        except Unauthorized as refused:
            self.gate.refuse(str(refused))
            return False
        except _Stopping:
            return False
        for item in items:
            row = rows[item.position]
            if sub.name in row.pending:
                row.pending.discard(sub.name)
                row.fates[sub.name] = "delivered"
        return True

    def _settle(self, rows: dict[int, _Row], letters: list[Letter]) -> None:
        now = time.time()
        finished: dict[int, Category] = {}
        later: dict[int, Later] = {}
        for row_id, row in rows.items():
            claimed = row.claimed
            if row.pending:  # not tried: the service is stopping or the credential was refused
                later[row_id] = Later(now, row.fates)
                continue
            if row.waiting and now - claimed.received < self.retry_for:
                low, high = ROW_BACKOFF
                wait = min(high, low * 2 ** (claimed.attempts - 1))
                later[row_id] = Later(now + self.rng.uniform(wait / 2, wait), row.fates, retried=True)
                continue
            for name, letter in row.waiting.items():
                reason = f"gave up after {claimed.attempts} attempts over {now - claimed.received:.0f} s (--retry-for {self.retry_for:g}); last: {letter.reason}"
                letters.append(self._decide(row, name, letter.payload, reason, letter.status, "dead_lettered"))
            finished[row_id] = _category(row.fates.values())
        self.queue.settle(finished, letters, later)
        for row_id, category in finished.items():
            if category == "delivered":
                self.metrics.latency.observe(now - rows[row_id].claimed.received)
        counts = {c: sum(1 for f in finished.values() if f == c) for c in set(finished.values())}
        log("batch", worker=self.name, events=len(rows), **counts, retried=sum(l.retried for l in later.values()),
            released=sum(not l.retried for l in later.values()))


class _JsonLogHandler(logging.Handler):
    """uvicorn's own warnings and errors as JSON lines, like everything else the service logs."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        log(f"server_{record.levelname.lower()}", **fields)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a taken port is a clear startup error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port") from None
    return sock


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "actionmap-data"
    workers: int = 2
    rate: float = 5000.0  # events per second to the destination, shared by the workers; 0 = unpaced
    timeout: float = 10.0
    retry_for: float = 86400.0


def serve(mapping: MappingFile, keys: Sequence[str], options: ServeOptions) -> int:
    """Run the service until SIGTERM or SIGINT; 0 after a clean stop."""
    if options.workers < 1:
        raise ConfigError(f"--workers {options.workers}: at least one worker is needed to deliver")
    queue = Queue(options.data_dir)
    try:
        sock = _listen(options.host, options.port)
        resumed = queue.release_all()
        health = Health()
        metrics = Metrics(queue, health)
        stop = threading.Event()
        gate = CredentialGate(health, lambda: check_credential(mapping))

        def wait(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Stopping()

        workers = []
        for number in range(options.workers):
            pace = TokenBucket(options.rate / options.workers, sleep=wait) if options.rate > 0 else None
            timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, 5.0))
            sender = Sender(mapping, pace=pace, sleep=wait, timeout=timeout, policy=IN_PROCESS_RETRY)
            workers.append(Worker(f"worker-{number + 1}", mapping, queue, sender, metrics, gate, stop, options.retry_for))
        uvicorn_log = logging.getLogger("uvicorn")
        uvicorn_log.handlers[:] = [_JsonLogHandler(logging.WARNING)]
        uvicorn_log.propagate = False
        server = uvicorn.Server(uvicorn.Config(
            create_app(queue, keys, metrics, health), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=10, http=IntakeProtocol,  # h11 with a deadline on request heads (slow clients)
        ))
        # uvicorn handles the signals while it serves and raises them again once it has stopped: this
        # handler takes that second delivery (and a signal during startup) instead of the default exit
        previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True)) for sig in (signal.SIGTERM, signal.SIGINT)}
        host, port = sock.getsockname()[:2]
        stats = queue.stats()
        log("serving", url=f"http://{host}:{port}", data_dir=str(queue.data_dir), destination=mapping.destination.name,
            subscriptions=[s.name for s in mapping.subscriptions], workers=options.workers, queued=stats.depth,
            resumed_leases=resumed)
        for worker in workers:
            worker.start()
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log("stopping", action="intake closed; workers finish or release their batch")
            stop.set()
            for worker in workers:
                worker.join()
                worker.sender.close()
        log("stopped", queued=queue.stats().depth)
    finally:
        queue.close()
    return 0
