"""``actionmap send``: events in, payloads delivered in batches, a summary out.

Streams: events are read one at a time and batches are flushed as they fill, so
memory holds at most one open batch per subscription whatever the input's size.
Every event ends in exactly one count of the summary (per subscription it feeds):
delivered, invalid (dead-lettered with the mapping or field problem) or
dead-lettered (refused before sending by a window check, or by the server); an
event that feeds no subscription counts once as filtered.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable

import orjson

from engine.deadletters import DeadLetterFile, json_text
from engine.delivery import DeadLetter, Outgoing, Sender
from engine.events import BadInput, Event
from engine.limits import event_problem
from engine.config.mappingfile import MappingFile, Subscription
from engine.pipeline import Pipeline
from engine.presend import compile_presend


@dataclass
class Summary:
    events: int = 0
    delivered: int = 0
    filtered: int = 0
    invalid: int = 0
    dead_lettered: int = 0
    requests: int = 0

    def line(self) -> str:
        return orjson.dumps(asdict(self)).decode()


class Progress:
    """A one-line progress display on a terminal; silent when output is piped."""

    def __init__(self, stream: IO[str] = sys.stderr, every: float = 0.25) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.every = every
        self.last = 0.0

    def show(self, summary: Summary, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        end = "\n" if final else ""
        self.stream.write(
            f"\r{summary.events:,} events: {summary.delivered:,} delivered, {summary.filtered:,} filtered, "
            f"{summary.invalid:,} invalid, {summary.dead_lettered:,} dead-lettered, {summary.requests:,} requests{end}"
        )
        self.stream.flush()


class Delivery:
    """Batches payloads per subscription and hands full batches to the sender (or prints them on a dry run).

    Clock-dependent checks (a timestamp window) run as a batch leaves, against the
    clock of that moment: a payload may wait in an open batch for as long as its
    input takes to fill it, and must be judged when it is sent, not when it was read.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        sender: Sender,
        dead_letters: DeadLetterFile,
        *,
        dry_run: IO[bytes] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        progress: Progress | None = None,
        on_sent: Callable[[list[Outgoing]], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.sender = sender
        self.dead_letters = dead_letters
        self.dry_run = dry_run
        self.now = now
        self.progress = progress
        self.on_sent = on_sent
        self.summary = Summary()
        subs = pipeline.subscriptions
        self._batches: dict[str, list[Outgoing]] = {s.name: [] for s in subs}
        self._subs = {s.name: s for s in subs}
        self._presend = {s.name: compile_presend(s.action) for s in subs}

    def _dead(self, letter: DeadLetter, invalid: bool = False) -> None:
        if invalid:
            self.summary.invalid += 1
        else:
            self.summary.dead_lettered += 1
        self.dead_letters.write(letter)

    @property
    def waiting(self) -> int:
        """Payloads waiting in open batches."""
        return sum(map(len, self._batches.values()))

    def add(self, item: Event | BadInput) -> int:
        """Map one input event and queue its payloads; send every batch that fills.

        Returns how many of the event's payloads still wait in open batches: 0 means
        its fate is settled (delivered, dead-lettered, filtered or invalid).
        """
        self.summary.events += 1
        if isinstance(item, BadInput):
            self._dead(DeadLetter("", item.position, None, None, f"input line {item.line}: {item.message}", raw=item.raw), invalid=True)
            return 0
        outcomes = self.pipeline.run(item.value)
        if not outcomes:
            self.summary.filtered += 1
        waiting = 0
        for outcome in outcomes:
            name = outcome.subscription
            if outcome.status != "ok":
                self._dead(DeadLetter(name, item.position, item.value, outcome.payload, "; ".join(outcome.errors)), invalid=True)
                continue
            batch = self._batches[name]
            batch.append(Outgoing(item.position, item.value, outcome.payload or {}))
            if len(batch) >= self._subs[name].batch_size:
                self._flush(self._subs[name])
            else:
                waiting += 1
        if self.progress:
            self.progress.show(self.summary)
        return waiting

    def _sendable(self, sub: Subscription, items: list[Outgoing]) -> list[Outgoing]:
        """The items that pass the pre-send checks now; the others are dead-lettered with the reason."""
        presend = self._presend[sub.name]
        if presend is None:
            return items
        kept, refused = presend.split(items, self.now())
        for item, reason in refused:
            self._dead(DeadLetter.of(sub.name, item, reason))
        return kept

    def _flush(self, sub: Subscription) -> None:
        """Send one subscription's open batch; then ``on_sent`` learns that its payloads are settled."""
        taken, self._batches[sub.name] = self._batches[sub.name], []
        self._send(sub, self._sendable(sub, taken))
        if self.on_sent is not None and taken:
            self.on_sent(taken)

    def _send(self, sub: Subscription, items: list[Outgoing]) -> None:
        if not items:
            return
        if self.dry_run is not None:
            for request in self.sender.requests_for(sub, items, self._dead):
                self.dry_run.write(orjson.dumps(request) + b"\n")
                self.summary.requests += 1
            return
        requests, delivered = self.sender.requests, self.sender.delivered
        try:
            self.sender.deliver(sub, items, self._dead)
        finally:  # also when delivery stops on a refused credential: what was done is counted
            self.summary.requests += self.sender.requests - requests
            self.summary.delivered += self.sender.delivered - delivered

    def finish(self) -> Summary:
        """Send what is left in every batch."""
        for sub in self._subs.values():
            self._flush(sub)
        if self.progress:
            self.progress.show(self.summary, final=True)
        return self.summary

    def run(self, items: Iterable[Event | BadInput], linger: float | None = None) -> Summary:
        """Map and send every item; with ``linger``, open batches also leave once the input has been quiet that long.

        Linger is for input that trickles in (a pipe, a tail): a reader thread hands
        items over a bounded queue, so memory stays flat, and a pause in the input
        sends what is waiting instead of holding it until a batch fills.
        """
        if linger is None:
            for item in items:
                self.add(item)
            return self.finish()
        handover: queue.Queue[Any] = queue.Queue(maxsize=1024)

        def read() -> None:
            try:
                for item in items:
                    handover.put(item)
                handover.put(_END)
            except BaseException as error:  # reading failed (bad gzip, I/O): raise it where it is awaited
                handover.put(error)

        threading.Thread(target=read, name="actionmap-reader", daemon=True).start()
        while True:
            try:
                item = handover.get(timeout=linger)
            except queue.Empty:
                for sub in self._subs.values():
                    self._flush(sub)
                continue
            if item is _END:
                return self.finish()
            if isinstance(item, BaseException):
                raise item
            self.add(item)


_END = object()
"""Marks the end of the input on the reader's queue."""


def _checked(position: int, value: Any) -> Event | BadInput:
    """A value given in library mode, held to the same limits as events read from text, and kept as text when refused.

    Its orjson text makes the common case one count, as for events read from text;
    only a value orjson refuses (or one with many brackets) is walked.
    """
    try:
        problem = event_problem(value, orjson.dumps(value))
    except TypeError:  # a lone surrogate, an integer past 64 bits, 255+ levels
        problem = event_problem(value) or "the event cannot be encoded as JSON (a lone surrogate in a string?)"
    if problem is None:
        return Event(position, position + 1, value)
    return BadInput(position, position + 1, problem, json_text(value))


def send_events(
    mapping_file: MappingFile,
    events: Iterable[Any],
    *,
    dead_letters: str | Path | None = None,
    sender: Sender | None = None,
) -> Summary:
    """Library mode: map and deliver ``events`` (parsed JSON values, or :class:`Event` s) and return the summary.

    Dead letters are appended to ``dead_letters`` when a path is given; a ``sender``
    may be passed to choose its retry policy, pace or HTTP client (it is not closed).
    """
    own = sender is None
    sender = sender or Sender(mapping_file)
    items = (e if isinstance(e, (Event, BadInput)) else _checked(i, e) for i, e in enumerate(events))
    try:
        with DeadLetterFile(dead_letters, mapping_file.settings) as dead:
            return Delivery(Pipeline(mapping_file), sender, dead).run(items)
    finally:
        if own:
            sender.close()
