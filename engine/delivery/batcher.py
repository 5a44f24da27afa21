"""The one way from events to outcomes for one connection: pipeline, batches, pre-send checks, the sender, the accounting.

Every mode feeds a :class:`Batcher` and settles the :class:`Fate` s it returns
(``send`` counts and writes them, ``serve`` records them in its queue,
``consume`` commits offsets): batching, the pre-send split, sending and the
decision of what each event became exist only here.

Memory holds at most one open batch per subscription: an event's fate is known
once its last payload leaves, and the batcher forgets it then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import IO, Any, Callable, Iterable, Mapping

import orjson

from engine.config.mappingfile import MappingFile, Subscription
from engine.delivery.accounting import Fate, Result
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.transport import Sender, Sent
from engine.pipeline import Pipeline
from engine.presend import compile_presend

@dataclass(slots=True)
class _Open:
    """An event with payloads still in open batches."""

    fate: Fate
    pending: int


class Batcher:
    """Maps events, batches their payloads per subscription, checks and sends each batch as it leaves.

    Clock-dependent checks (a timestamp window) run as a batch leaves, against the
    clock of that moment. A dry run renders the requests to ``dry_run`` and sends
    nothing (its payloads are ``kept``). After a refused credential nothing more is
    sent (payloads are ``kept``) until :meth:`resume`.
    """

    def __init__(
        self,
        mapping: MappingFile,
        sender: Sender,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        dry_run: IO[bytes] | None = None,
    ) -> None:
        self.connection = mapping.name
        self.pipeline = Pipeline(mapping)
        self.sender = sender
        self.now = now
        self.dry_run = dry_run
        self.requests = 0
        self.refused: str | None = None
        self.stopped = False
        self.opened: float | None = None  # time.monotonic() when the oldest payload waiting in a batch arrived
        subs = mapping.subscriptions
        self._subs = {s.name: s for s in subs}
        self._batches: dict[str, list[Outgoing]] = {s.name: [] for s in subs}
        self._presend = {s.name: compile_presend(s.action) for s in subs}
        self._open: dict[int, _Open] = {}

    @property
    def waiting(self) -> int:
        """Payloads waiting in open batches."""
        return sum(map(len, self._batches.values()))

    def resume(self) -> None:
        """The credential is accepted again (or the stop is over): send again."""
        self.refused = None
        self.stopped = False

    def unreadable(self, position: int, reason: str, raw: str | None = None, value: Any = None) -> Fate:
        """Input that is not an event (not JSON, past a limit): invalid, dead-lettered whole, kept as it came."""
        letter = DeadLetter("", position, value, None, reason, raw=raw, connection=self.connection)
        return Fate(position, value, {"": "invalid"}, [letter])

    def add(self, position: int, event: Any, done: Mapping[str, str] = {}) -> list[Fate]:
        """Map one event (skipping the subscriptions in ``done``) and batch its payloads; send every batch that fills.

        Returns the fates decided meanwhile: this event's when nothing of it waits,
        and those of the events in batches that filled and left.
        """
        fate = Fate(position, event)
        pending = 0
        full: list[Subscription] = []
        for outcome in self.pipeline.run(event):
            name = outcome.subscription
            if name in done:
                continue
            if outcome.status != "ok":
                fate.results[name] = "invalid"
                fate.letters.append(DeadLetter(name, position, event, outcome.payload, "; ".join(outcome.errors),
                                               connection=self.connection))
                continue
            batch = self._batches[name]
            batch.append(Outgoing(position, event, outcome.payload or {}))
            pending += 1
            if len(batch) >= self._subs[name].batch_size:
                full.append(self._subs[name])
        if not pending:
            return [fate, *self._send(full)] if full else [fate]
        self._open[position] = _Open(fate, pending)
        if self.opened is None:
            self.opened = time.monotonic()
        return self._send(full) if full else []

    def flush(self) -> list[Fate]:
        """Send every open batch: the fates of every event waiting."""
        return self._send(list(self._subs.values()))

    def _send(self, subs: Iterable[Subscription]) -> list[Fate]:
        decided: list[Fate] = []
        for sub in subs:
            taken, self._batches[sub.name] = self._batches[sub.name], []
            if taken:
                decided.extend(self._record(sub.name, self._leave(sub, taken)))
        if not self.waiting:
            self.opened = None
        return decided

    def _leave(self, sub: Subscription, items: list[Outgoing]) -> Sent:
        """One batch leaves: the pre-send checks at this moment, then the sender (or the dry run, or nothing when halted)."""
        presend = self._presend[sub.name]
        refused: list[DeadLetter] = []
        if presend is not None:
            items, late = presend.split(items, self.now())
            refused = [DeadLetter.of(sub.name, item, reason) for item, reason in late]
        if not items:
            sent = Sent()
        elif self.refused is not None or self.stopped:
            sent = Sent(kept=items)
        elif self.dry_run is not None:
            requests, sent = self.sender.preview(sub, items)
            for request in requests:
                self.dry_run.write(orjson.dumps(request) + b"\n")
            sent.requests = len(requests)
        else:
            sent = self.sender.send(sub, items)
            self.refused = self.refused or sent.refused
            self.stopped = self.stopped or sent.stopped
        sent.dead[:0] = refused
        self.requests += sent.requests
        return sent

    def _record(self, name: str, sent: Sent) -> list[Fate]:
        """Give each payload of a batch its result; the fates of the events that have no payload left waiting."""
        decided: list[Fate] = []

        def result(position: int, outcome: Result, letter: DeadLetter | None = None) -> None:
            entry = self._open[position]
            entry.fate.results[name] = outcome
            if letter is not None:
                letter = replace(letter, connection=self.connection)
                if outcome == "exhausted":
                    entry.fate.waiting[name] = letter
                else:
                    entry.fate.letters.append(letter)
            entry.pending -= 1
            if not entry.pending:
                del self._open[position]
                decided.append(entry.fate)

        for item in sent.delivered:
            result(item.position, "delivered")
        for item in sent.kept:
            result(item.position, "kept")
        for letter in sent.dead:
            result(letter.index, "dead_lettered", letter)
        for letter in sent.exhausted:
            result(letter.index, "exhausted", letter)
        return decided
