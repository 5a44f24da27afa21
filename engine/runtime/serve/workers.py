"""The workers of ``actionmap serve``: each claims batches from its connection's lane and settles their fates.

A worker is a thin adapter around the delivery core: it decodes the claimed
rows, feeds them to its connection's :class:`~engine.delivery.batcher.Batcher`
and records the fates it returns in one transaction. An event is delivered,
filtered, invalid or dead-lettered (its dead letters stored in the queue), or
goes back to its lane: for a later attempt when the destination kept failing
past the sender's short in-process retry budget, or at once when the service
stops or the credential is refused (events are kept, never dead-lettered, for
that). A crash at any point leaves an event queued or settled, never lost.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from dataclasses import replace
from typing import Callable

from engine.config.mappingfile import MappingFile
from engine.delivery.deadletters import Redacts
from engine.delivery import DeadLetter, RetryPolicy, Sender
from engine.delivery.accounting import Fate
from engine.delivery.batcher import Batcher
from engine.events import BadInput, decode
from engine.runtime.observability import Health, Metrics, log
from engine.runtime.serve.queue import Category, Claimed, Later, Queue

IN_PROCESS_RETRY = RetryPolicy(max_duration=30.0)  # past this a batch goes back to the queue, not to the dead letters
LEASE_SECONDS = 600.0  # longer than any batch takes; leases of a dead process are freed at startup anyway
IDLE_POLL = 0.1
ERROR_PAUSE = 5.0
ROW_RETRY = RetryPolicy(base=1.0, cap=300.0)
"""The waits between attempts of an event the destination keeps failing: the send backoff (exponential, full jitter),
from 1 s up to 5 minutes, for --retry-for in all."""
CREDENTIAL_RECHECK = 30.0


class CredentialGate:
    """Pauses every worker of one connection while its destination refuses the credential; rechecks it now and
    then to resume. Other connections deliver on."""

    def __init__(self, health: Health, connection: str, check: Callable[[], tuple[str, str]],
                 interval: float = CREDENTIAL_RECHECK) -> None:
        self.health = health
        self.connection = connection
        self.check = check
        self.interval = interval
        self._lock = threading.Lock()

    def refuse(self, message: str) -> None:
        with self._lock:
            if self.health.refuse(self.connection, message):
                log("credential_refused", connection=self.connection, message=message,
                    action="delivery to this connection paused; its events are kept in the queue")

    def wait_open(self, stop: threading.Event) -> bool:
        """Block while delivery is paused; False when the service stops."""
        while self.health.refused(self.connection):
            if stop.wait(self.interval):
                return False
            with self._lock:
                if self.health.refused(self.connection):
                    verdict, detail = self.check()
                    if verdict == "valid":
                        self.health.accept(self.connection)
                        log("credential_accepted", connection=self.connection, detail=detail, action="delivery resumed")
        return not stop.is_set()


class Worker(threading.Thread):
    """Claims batches from its connection's lane (``mapping.name``) and settles them until the service stops."""

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
        secrets: Redacts | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.connection = mapping.name
        self.secrets: Redacts = secrets or mapping.settings
        self.queue = queue
        self.sender = sender
        self.batcher = Batcher(mapping, sender)
        self.metrics = metrics
        self.gate = gate
        self.stop = stop
        self.retry_for = retry_for
        self.limit = max((s.batch_size for s in mapping.subscriptions), default=1)
        self.rng = random.Random()

    def run(self) -> None:
        failing: str | None = None  # the claim error last logged: an outage of hours logs once, not every 5 s
        while self.gate.wait_open(self.stop):
            try:
                rows = self.queue.claim(self.connection, self.limit, LEASE_SECONDS)
            except sqlite3.Error as exc:
                if str(exc) != failing:
                    failing = str(exc)
                    log("queue_error", worker=self.name, connection=self.connection, error=failing,
                        action=f"cannot claim events; trying again every {ERROR_PAUSE:g} s, the events stay queued")
                self.stop.wait(ERROR_PAUSE)
                continue
            if failing is not None:
                failing = None
                log("queue_recovered", worker=self.name, connection=self.connection, action="claiming events again")
            if not rows:
                self.stop.wait(IDLE_POLL)
                continue
            try:
                self.process(rows)
            except Exception as exc:  # a bug or a broken disk must not lose the batch: it goes back to the queue
                log("worker_error", worker=self.name, connection=self.connection,
                    error=self.secrets.redact(f"{type(exc).__name__}: {exc}"), events=len(rows))
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
                self.queue.settle(self.connection, later={r.id: Later(time.time() + ERROR_PAUSE, r.settled) for r in rows})
            except sqlite3.Error as exc:
                if not failing:
                    failing = True
                    log("queue_error", worker=self.name, connection=self.connection, error=str(exc), events=len(rows),
                        action=f"cannot give the batch back to the queue; trying again every {ERROR_PAUSE:g} s")
                if self.stop.wait(ERROR_PAUSE):
                    log("release_abandoned", worker=self.name, connection=self.connection, events=len(rows),
                        action="the service is stopping: the batch stays queued, leased; the next start frees it")
                    return
                continue
            if failing:
                log("queue_recovered", worker=self.name, connection=self.connection, events=len(rows),
                    action="the batch is back in the queue")
            return

    def process(self, claimed: list[Claimed]) -> None:
        """Map, check and deliver one claimed batch; record every event's fate in one transaction."""
        fates: list[Fate] = []
        self.batcher.resume()  # the gate is open: a refusal or a stop of the last batch is over
        for one in claimed:
            item = decode(one.id, 0, one.body)  # a queued row has no line
            if isinstance(item, BadInput):  # not JSON, or past a limit: invalid once, kept as stored
                fates.append(self.batcher.unreadable(one.id, item.message))
            else:
                fates.extend(self.batcher.add(one.id, item.value, one.settled))
        fates.extend(self.batcher.flush())
        if self.batcher.refused is not None:  # its payloads are kept: back to the lane, not dead-lettered
            self.gate.refuse(self.secrets.redact(self.batcher.refused))
        self._settle({one.id: one for one in claimed}, fates)

    def _settle(self, rows: dict[int, Claimed], fates: list[Fate]) -> None:
        now = time.time()
        finished: dict[int, Category] = {}
        later: dict[int, Later] = {}
        letters: list[tuple[bytes, DeadLetter]] = []
        for fate in fates:
            row = rows[fate.position]
            decided = {**row.settled, **fate.settled()}
            if fate.category == "kept":  # not tried: the service is stopping or the credential was refused
                later[row.id] = Later(now, decided)
                continue
            if fate.waiting and now - row.received < self.retry_for:
                later[row.id] = Later(now + ROW_RETRY.delay(row.attempts, self.rng), decided, retried=True)
                letters.extend(self._stored(row, letter) for letter in fate.letters)
                continue
            gave_up = [replace(letter, reason=f"gave up after {row.attempts} attempts over {now - row.received:.0f} s "
                                              f"(--retry-for {self.retry_for:g}); last: {letter.reason}")
                       for letter in fate.waiting.values()]
            letters.extend(self._stored(row, letter) for letter in [*fate.letters, *gave_up])
            finished[row.id] = Fate(row.id, None, {**decided, **fate.results}).final()
        self.queue.settle(self.connection, finished, letters, later)
        for row_id, category in finished.items():
            if category == "delivered":
                self.metrics.observe_latency(self.connection, now - rows[row_id].received)
        counts = {c: sum(1 for f in finished.values() if f == c) for c in set(finished.values())}
        log("batch", worker=self.name, connection=self.connection, events=len(rows), **counts,
            retried=sum(l.retried for l in later.values()), released=sum(not l.retried for l in later.values()))

    def _stored(self, row: Claimed, letter: DeadLetter) -> tuple[bytes, DeadLetter]:
        """The dead letter as the queue keeps it: the event as received, the reason masked, the attempts through the queue."""
        return row.body, replace(letter, reason=self.secrets.redact(letter.reason), attempts=row.attempts)
