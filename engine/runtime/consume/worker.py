"""``actionmap consume``: workers in a Kafka consumer group (SPEC 9.4).

Each worker reads JSON events from its share of a topic's partitions, maps and
batches them exactly as ``send`` does (the same :class:`~engine.send.Delivery`,
so the same batching, pre-send checks, retries and bisection), and commits an
offset only once every message before it in its partition is *finished*:
delivered, filtered or dead-lettered, the dead letter durable. Offsets are never
committed ahead of delivery, so a crash or a rebalance only ever redelivers, and
Metronome's deduplication by ``transaction_id`` makes a redelivery harmless.

Only plain ``confluent-kafka`` is used: the same code runs against Apache Kafka,
Redpanda or a managed Kafka.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine.deadletters import DeadLetterFile, json_text
from engine.delivery import CONNECT_TIMEOUT, DeadLetter, Outgoing, RetryPolicy, Sender, TokenBucket, Unauthorized
from engine.errors import ConfigError
from engine.events import BadInput, Event, decode
from engine.config.mappingfile import MappingFile
from engine.pipeline import Pipeline
from engine.send import Delivery, Summary

READ_BATCH = 500
"""Messages taken from the consumer per call: enough for five full Metronome batches."""
COMMIT_EVERY = 1.0
"""Seconds between two asynchronous commits while running (revocation and shutdown commit at once)."""
DEAD_LETTER_FLUSH = 30.0
"""Seconds to wait for the dead-letter topic to acknowledge before an offset may be committed."""
DEFAULT_DEAD_LETTER_FILE = "actionmap-dead-letters.ndjson"
MAX_POLL_INTERVAL_LIMIT_MS = 86_400_000  # librdkafka's upper bound for max.poll.interval.ms
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class ConsumeOptions:
    """Where to read, where dead letters go, and the delivery knobs shared with ``send``."""

    brokers: str
    topic: str
    group: str
    dead_letter_topic: str | None = None
    dead_letter_file: str | None = None
    rate: float = 5000.0
    timeout: float = 30.0
    retry_for: float = RetryPolicy.max_duration
    linger: float = 0.5
    session_timeout: float | None = None
    kafka: dict[str, str] = field(default_factory=dict)

    def client_config(self) -> dict[str, Any]:
        """Properties both clients share (brokers, security), with the operator's ``-X`` overrides."""
        return {"bootstrap.servers": self.brokers, "client.id": f"actionmap-{self.group}", **self.kafka}

    def consumer_config(self) -> dict[str, Any]:
        """Tunable defaults, the operator's properties, then what the guarantee rests on (manual offsets), which ``-X`` cannot change.

        ``max.poll.interval.ms`` outlasts a batch's whole retry budget: a worker
        blocked in delivery does not poll, and a shorter interval would make every
        worker leave the group in turn during an outage, rebalancing for nothing.
        """
        budget = (self.retry_for + self.timeout) * 2 + 60
        tunable: dict[str, Any] = {
            "auto.offset.reset": "earliest",  # a new group bills from the first event kept, never skips one
            "max.poll.interval.ms": min(int(budget * 1000), MAX_POLL_INTERVAL_LIMIT_MS),
        }
        if self.session_timeout is not None:
            tunable["session.timeout.ms"] = int(self.session_timeout * 1000)
        return {**tunable, **self.client_config(), "group.id": self.group, "enable.auto.commit": False,
                "enable.auto.offset.store": False}

    def producer_config(self) -> dict[str, Any]:
        """The dead-letter producer: a record counts as kept only once every in-sync replica has it."""
        return {"linger.ms": 5, **self.client_config(), "acks": "all", "enable.idempotence": True}


def kafka_properties(pairs: list[str]) -> dict[str, str]:
    """``-X PROPERTY=VALUE`` pairs, passed to librdkafka as text (it parses them itself)."""
    properties: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"-X expects PROPERTY=VALUE (a librdkafka property such as security.protocol=SASL_SSL), got {pair!r}")
        properties[name.strip()] = value
    return properties


class Abandoned(Exception):
    """A retry wait was cut short because the worker is stopping: the batch stays uncommitted and is redelivered."""


class _Partition:
    """One assigned partition: its messages in reading order, and how far they are finished."""

    __slots__ = ("topic", "number", "entries", "done", "sent")

    def __init__(self, topic: str, number: int) -> None:
        self.topic = topic
        self.number = number
        self.entries: deque[_Entry] = deque()
        self.done = -1  # the offset to commit: one past the highest contiguous finished message
        self.sent = -1  # the offset last handed to a commit

    def advance(self) -> None:
        entries = self.entries
        while entries and entries[0].pending == 0:
            self.done = entries.popleft().offset + 1


_HELD = 1 << 62
"""The pending count of a message being mapped: batches sent meanwhile (one may fill with its payload) count it down, never to 0."""


class _Entry:
    """One message read: where it came from, and how many of its payloads still wait in a batch."""

    __slots__ = ("seq", "partition", "offset", "key", "pending")

    def __init__(self, seq: int, partition: _Partition, offset: int, key: bytes | None) -> None:
        self.seq = seq
        self.partition = partition
        self.offset = offset
        self.key = key
        self.pending = _HELD


class Offsets:
    """Which messages are finished, per partition; the offsets that may be committed.

    A message is registered when read and finished when its last payload is
    delivered or dead-lettered (at once when it feeds nothing). The committable
    offset of a partition only moves past a message once it and every message
    before it are finished, however the batches interleave.
    """

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}
        self._open: dict[int, _Entry] = {}
        self._seq = 0

    def assign(self, topic: str, numbers: list[int]) -> None:
        for number in numbers:
            self._partitions[number] = _Partition(topic, number)

    def drop(self, numbers: list[int]) -> None:
        """Forget revoked or lost partitions: their unfinished messages are the next owner's to read."""
        for number in numbers:
            self._partitions.pop(number, None)

    @property
    def assigned(self) -> list[int]:
        return sorted(self._partitions)

    def read(self, partition: int, offset: int, key: bytes | None) -> _Entry | None:
        """Register a message; None when its partition is no longer ours (it was revoked while being fetched)."""
        owner = self._partitions.get(partition)
        if owner is None:
            return None
        self._seq += 1
        entry = _Entry(self._seq, owner, offset, key)
        owner.entries.append(entry)
        self._open[self._seq] = entry
        return entry

    def entry(self, seq: int) -> _Entry:
        return self._open[seq]

    def hold(self, entry: _Entry, pending: int) -> None:
        """The message was mapped: ``pending`` of its payloads still wait in open batches (0: it is finished)."""
        entry.pending = pending
        if not pending:
            self._finish(entry)

    def settle(self, seq: int) -> None:
        """One payload of message ``seq`` was delivered or dead-lettered (a message read before a drop is ignored)."""
        entry = self._open.get(seq)
        if entry is None:
            return
        entry.pending -= 1
        if not entry.pending:
            self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        del self._open[entry.seq]
        entry.partition.advance()

    def committable(self, changed_only: bool) -> list[TopicPartition]:
        """The owned partitions' finished positions: all of them, or those that moved since the last commit."""
        return [
            TopicPartition(p.topic, p.number, p.done)
            for p in self._partitions.values()
            if p.done >= 0 and (p.done != p.sent or not changed_only)
        ]

    def sent(self, offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            owner = self._partitions.get(tp.partition)
            if owner is not None:
                owner.sent = tp.offset


class _DeadLetters(DeadLetterFile):
    """A consumer's dead letters: each record names its message (topic, partition, offset) and must be durable before that offset is committed.

    The record is the ``send`` dead-letter record with ``index`` replaced by the
    message's coordinates, so a dump of the topic or the file is what
    ``actionmap replay`` reads.
    """

    def __init__(self, mapping_file: MappingFile, offsets: Offsets) -> None:
        super().__init__(None, mapping_file.settings)
        self._offsets = offsets

    def write(self, letter: DeadLetter) -> None:
        self.count += 1
        entry = self._offsets.entry(letter.index)
        record = letter.record()
        del record["index"]
        record.update(topic=entry.partition.topic, partition=entry.partition.number, offset=entry.offset)
        self._put(entry, letter, self.settings.redact(json_text(record)).encode())

    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None:
        raise NotImplementedError

    def durable(self) -> bool:
        """True once every dead letter written so far is safely stored (so offsets up to them may be committed)."""
        raise NotImplementedError


class _DeadLetterTopic(_DeadLetters):
    """Dead letters produced to a topic, keyed like the original message; the reason is also in the headers."""

    def __init__(self, mapping_file: MappingFile, offsets: Offsets, producer: Producer, topic: str) -> None:
        super().__init__(mapping_file, offsets)
        self._producer = producer
        self._topic = topic
        self.failure: str | None = None

    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("actionmap-reason", self.settings.redact(letter.reason).encode()),
            ("actionmap-subscription", letter.subscription.encode()),
            ("actionmap-status", str(letter.status or "").encode()),
            ("actionmap-source", f"{entry.partition.topic}/{entry.partition.number}/{entry.offset}".encode()),
        ]
        while True:
            try:
                self._producer.produce(self._topic, record, entry.key, headers=headers, on_delivery=self._acked)
                break
            except BufferError:  # the producer's queue is full: let it drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _acked(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self.failure is None:
            self.failure = f"the dead-letter topic {self._topic!r} refused a record: {error.str()}"

    def durable(self) -> bool:
        left = self._producer.flush(DEAD_LETTER_FLUSH)
        if self.failure is not None:
            raise KafkaException(self.failure)
        return left == 0


class _DeadLetterLines(_DeadLetters):
    """Dead letters appended to an NDJSON file, synced to disk before an offset is committed."""

    def __init__(self, mapping_file: MappingFile, offsets: Offsets, path: str) -> None:
        super().__init__(mapping_file, offsets)
        self._lines: IO[bytes] = Path(path).open("ab")
        self._unsynced = False

    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None:
        self._lines.write(record + b"\n")
        self._unsynced = True

    def durable(self) -> bool:
        if self._unsynced:
            self._lines.flush()
            os.fsync(self._lines.fileno())
            self._unsynced = False
        return True

    def close(self) -> None:
        self._lines.close()


class _GroupDelivery(Delivery):
    """``send``'s delivery, telling the offsets which messages each finished batch settles."""

    def __init__(self, pipeline: Pipeline, sender: Sender, dead_letters: _DeadLetters, offsets: Offsets) -> None:
        super().__init__(pipeline, sender, dead_letters, on_sent=self._settle)
        self._offsets = offsets
        self.opened: float | None = None  # when the oldest payload waiting in an open batch arrived

    def accept(self, entry: _Entry, event: dict[str, Any]) -> None:
        """Map one event; the message stays unfinished while any of its payloads waits in a batch."""
        waiting = self.add(Event(entry.seq, entry.offset, event))
        self._offsets.hold(entry, waiting)
        if waiting and self.opened is None:
            self.opened = time.monotonic()

    def malformed(self, entry: _Entry, reason: str, value: Any, raw: str | None = None) -> None:
        """A message that is not a JSON object (or past a limit): dead-lettered whole, once, and finished."""
        self.summary.events += 1
        self._dead(DeadLetter("", entry.seq, value, None, reason, raw=raw), invalid=True)
        self._offsets.hold(entry, 0)

    def _settle(self, items: list[Outgoing]) -> None:
        for item in items:
            self._offsets.settle(item.position)
        if not self.waiting:
            self.opened = None


class Worker:
    """One member of the consumer group: read, map, deliver, dead-letter, commit what is finished.

    Runs on the calling thread; :meth:`stop` may be called from a signal handler
    or another thread. Stopping sends what waits in open batches if it can go at
    once (a retry wait abandons it: it is redelivered), commits, and leaves the group.
    """

    def __init__(
        self,
        mapping_file: MappingFile,
        options: ConsumeOptions,
        *,
        log: Callable[[str], None] = lambda line: print(f"actionmap consume: {line}", file=sys.stderr, flush=True),
    ) -> None:
        self.options = options
        self.log = log
        self._stop = threading.Event()
        self._draining = False
        self._offsets = Offsets()
        self._consumer = Consumer(options.consumer_config() | {"error_cb": self._kafka_error, "on_commit": self._committed})
        self._producer: Producer | None = None
        self._check_topics()
        if options.dead_letter_topic:
            self._producer = Producer(options.producer_config())
            sink: _DeadLetters = _DeadLetterTopic(mapping_file, self._offsets, self._producer, options.dead_letter_topic)
        else:
            sink = _DeadLetterLines(mapping_file, self._offsets, options.dead_letter_file or DEFAULT_DEAD_LETTER_FILE)
        self._dead_letters = sink
        pace = TokenBucket(options.rate) if options.rate > 0 else None
        timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, CONNECT_TIMEOUT))
        self._sender = Sender(mapping_file, pace=pace, timeout=timeout, policy=RetryPolicy(max_duration=options.retry_for),
                              sleep=self._retry_wait)
        self.delivery = _GroupDelivery(Pipeline(mapping_file), self._sender, sink, self._offsets)
        self._fatal: str | None = None

    @property
    def summary(self) -> Summary:
        return self.delivery.summary

    def _check_topics(self) -> None:
        """Fail at start, with the fix, when a topic is missing, rather than wait silently for it."""
        try:
            topics = self._consumer.list_topics(timeout=15).topics
        except KafkaException as exc:
            self._consumer.close()
            raise KafkaException(f"cannot reach the Kafka brokers {self.options.brokers}: {_reason(exc)}") from exc
        for role, name in (("events", self.options.topic), ("dead-letter", self.options.dead_letter_topic)):
            if name and name not in topics:
                self._consumer.close()
                raise KafkaException(
                    f"the {role} topic {name!r} does not exist on {self.options.brokers}: create it first "
                    "(partitioned by customer id, see the README's 'Running at scale')"
                )

    def stop(self) -> None:
        """Ask the worker to finish: safe from a signal handler."""
        self._stop.set()

    def _retry_wait(self, seconds: float) -> None:
        """The sender's backoff: interrupted by a stop, and refused while draining (the batch is abandoned, not committed)."""
        if self._draining or self._stop.wait(seconds):
            raise Abandoned()

    # -- Kafka callbacks (run inside consume(), on this thread) -------------------

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error.str()
            self._stop.set()
        self.log(f"kafka: {error.str()}")

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:  # a later commit covers it; the events are safe either way
            self.log(f"commit failed (will be retried with the next one): {error.str()}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._offsets.assign(self.options.topic, [p.partition for p in partitions])
        self.log(f"assigned partitions {self._offsets.assigned} of {self.options.topic}")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the open batches, commit what is done, then let the partitions go (when stopping, that was done already)."""
        if not self._draining:
            self.delivery.finish()
            self._commit(wait=True)
        self._offsets.drop([p.partition for p in partitions])
        self.log(f"revoked partitions {sorted(p.partition for p in partitions)}")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: nothing may be committed for these; their open payloads still go (deduplicated)."""
        self._offsets.drop([p.partition for p in partitions])
        self.log(f"lost partitions {sorted(p.partition for p in partitions)} (session timed out): the new owner redelivers them")

    # -- the loop --------------------------------------------------------------

    def run(self) -> Summary:
        """Consume until stopped; raises :class:`Unauthorized` or :class:`KafkaException` when it cannot go on."""
        consumer = self._consumer
        consumer.subscribe([self.options.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        last_commit = time.monotonic()
        try:
            try:
                while not self._stop.is_set():
                    for message in consumer.consume(READ_BATCH, self._wait()):
                        self._take(message)
                    now = time.monotonic()
                    opened = self.delivery.opened
                    if opened is not None and now - opened >= self.options.linger:
                        self.delivery.finish()
                    if now - last_commit >= COMMIT_EVERY:
                        self._commit(wait=False)
                        last_commit = now
                self._draining = True
                self.delivery.finish()
            except Abandoned:
                pass
            if self._fatal:
                raise KafkaException(self._fatal)
        finally:
            self._draining = True
            self._close()
        return self.summary

    def _wait(self) -> float:
        """How long the next read may block: until the oldest open batch's linger is over."""
        opened = self.delivery.opened
        if opened is None:
            return self.options.linger
        return max(0.0, opened + self.options.linger - time.monotonic())

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            self.log(f"kafka: {error.str()}")
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # always set on a consumed message
        entry = self._offsets.read(partition, offset, message.key())
        if entry is None:
            return
        value = message.value()
        if value is None:
            self.delivery.malformed(entry, "the message has no value (a tombstone): expected a JSON object", None)
            return
        item = decode(entry.seq, offset, value)
        if isinstance(item, BadInput):  # kept as text in the dead letter, so the operator sees what was sent
            self.delivery.malformed(entry, f"the message value cannot be taken as an event: {item.message}", None, item.raw)
            return
        event = item.value
        if type(event) is not dict:
            found = _JSON_TYPES.get(type(event), type(event).__name__)
            self.delivery.malformed(entry, f"the message value is JSON but not an object (found {found}): expected a JSON object", event)
            return
        self.delivery.accept(entry, event)

    def _commit(self, wait: bool) -> None:
        """Commit the finished positions once the dead letters before them are durable; a failed commit only means a redelivery."""
        offsets = self._offsets.committable(changed_only=not wait)
        if not offsets or not self._dead_letters.durable():
            return
        try:
            if wait:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            self.log(f"commit failed (these events will be redelivered, and deduplicated): {_reason(exc)}")
            return
        self._offsets.sent(offsets)

    def _close(self) -> None:
        """Commit what is finished, leave the group, release the clients."""
        try:
            self._commit(wait=True)
        finally:
            self._consumer.close()  # leaves the group
            self._sender.close()
            self._dead_letters.close()
            if self._producer is not None:
                self._producer.flush(DEAD_LETTER_FLUSH)


def _reason(error: Exception) -> str:
    """The text of an error; librdkafka's own errors carry a :class:`KafkaError` rather than a message."""
    first = error.args[0] if error.args else error
    return first.str() if isinstance(first, KafkaError) else str(first)


def consume(mapping_file: MappingFile, options: ConsumeOptions, out: IO[str] = sys.stdout) -> int:
    """Run one worker until SIGTERM or SIGINT; print the JSON summary; 0 on a clean stop, 1 when it cannot start or go on."""
    try:
        worker = Worker(mapping_file, options)
    except KafkaException as error:
        print(f"actionmap consume: {_reason(error)}", file=sys.stderr)
        return 1
    previous = {sig: signal.signal(sig, lambda *_: worker.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        worker.run()
    except Unauthorized as error:
        print(f"actionmap consume: {error} Their offsets were not committed: fix the setting and restart; "
              "the group resumes where it stopped.", file=sys.stderr)
        status = 1
    except KafkaException as error:
        print(f"actionmap consume: {_reason(error)}", file=sys.stderr)
        status = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(worker.summary.line(), file=out, flush=True)
    return status
