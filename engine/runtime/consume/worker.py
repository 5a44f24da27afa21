"""``actionmap consume``: workers in a Kafka consumer group (SPEC 9.4), one per connection.

Each worker reads JSON events from its share of a topic's partitions in its own
consumer group (``<group>.<name>`` when there are several connections), feeds
its connection's :class:`~engine.delivery.batcher.Batcher` (the same batching,
pre-send checks, retries and bisection as ``send``), and commits an offset only
once every message before it in its partition is *finished*: delivered,
filtered or dead-lettered, the dead letter durable. Offsets are never committed
ahead of delivery, so a crash or a rebalance only ever redelivers, and the
destination's deduplication (Metronome's ``transaction_id``) makes that harmless.
One destination that is down never holds another's offsets.

Only plain ``confluent-kafka`` is used: the same code runs against Apache Kafka,
Redpanda or a managed Kafka.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import IO, Callable, Sequence

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from engine.config.connections import Secrets
from engine.config.mappingfile import MappingFile
from engine.delivery.deadletters import Redacts
from engine.delivery import CONNECT_TIMEOUT, RetryPolicy, Sender, TokenBucket
from engine.delivery.batcher import Batcher, Fate
from engine.events import BadInput, decode
from engine.runtime.consume.offsets import Offsets, _Entry
from engine.runtime.consume.options import ConsumeOptions
from engine.runtime.consume.sinks import DeadLetterLines, DeadLetters, DeadLetterTopic
from engine.delivery.accounting import Summary, Tally

READ_BATCH = 500
"""Messages taken from the consumer per call: enough for five full Metronome batches."""
COMMIT_EVERY = 1.0
"""Seconds between two asynchronous commits while running (revocation and shutdown commit at once)."""
DEFAULT_DEAD_LETTER_FILE = "actionmap-dead-letters.ndjson"
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class Worker:
    """One connection's member of its consumer group: read, map, deliver, dead-letter, commit what is finished.

    :meth:`run` runs on the calling thread; :meth:`stop` may be called from a
    signal handler or another thread. Stopping sends what waits in open batches
    if it can go at once (what would wait for a retry is kept: redelivered),
    commits, and leaves the group. A refused credential stops this worker alone.
    """

    def __init__(
        self,
        mapping_file: MappingFile,
        options: ConsumeOptions,
        secrets: Redacts,
        *,
        log: Callable[[str], None] = lambda line: print(f"actionmap consume: {line}", file=sys.stderr, flush=True),
    ) -> None:
        self.connection = mapping_file.name
        self.options = options
        self.secrets = secrets
        self.log = log
        self.tally = Tally()
        self.refused: str | None = None
        self.fatal: str | None = None
        self._stop = threading.Event()
        self._draining = False
        self._offsets = Offsets()
        self._consumer = Consumer(options.consumer_config() | {"error_cb": self._kafka_error, "on_commit": self._committed})
        self._check_topics()
        if options.dead_letter_topic:
            sink: DeadLetters = DeadLetterTopic(secrets, Producer(options.producer_config()), options.dead_letter_topic)
        else:
            sink = DeadLetterLines(secrets, options.dead_letter_file or DEFAULT_DEAD_LETTER_FILE)
        self._dead_letters = sink
        pace = TokenBucket(options.rate) if options.rate > 0 else None
        timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, CONNECT_TIMEOUT))
        self._sender = Sender(mapping_file, pace=pace, timeout=timeout, policy=RetryPolicy(max_duration=options.retry_for),
                              wait=self._retry_wait)
        self.batcher = Batcher(mapping_file, self._sender)

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

    def _retry_wait(self, seconds: float) -> bool:
        """The sender's backoff: cut short by a stop, and refused while draining (what waits is kept, not committed)."""
        return self._draining or self._stop.wait(seconds)

    # -- Kafka callbacks (run inside consume(), on this thread) -------------------

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error.str()
            self._stop.set()
        self.log(f"{self.connection}: kafka: {error.str()}")

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:  # a later commit covers it; the events are safe either way
            self.log(f"{self.connection}: commit failed (will be retried with the next one): {error.str()}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._offsets.assign(self.options.topic, [p.partition for p in partitions])
        self.log(f"{self.connection}: assigned partitions {self._offsets.assigned} of {self.options.topic}")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the open batches, commit what is done, then let the partitions go (when stopping, that was done already)."""
        if not self._draining:
            self._settle(self.batcher.flush())
            self._commit(wait=True)
        self._offsets.drop([p.partition for p in partitions])
        self.log(f"{self.connection}: revoked partitions {sorted(p.partition for p in partitions)}")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group moved on without us: nothing may be committed for these; their open payloads still go (deduplicated)."""
        self._offsets.drop([p.partition for p in partitions])
        self.log(f"{self.connection}: lost partitions {sorted(p.partition for p in partitions)} (session timed out): "
                 "the new owner redelivers them")

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        """Consume until stopped, the credential is refused (``refused``) or Kafka fails for good (``fatal``)."""
        consumer = self._consumer
        consumer.subscribe([self.options.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                for message in consumer.consume(READ_BATCH, self._wait()):
                    self._take(message)
                now = time.monotonic()
                opened = self.batcher.opened
                if opened is not None and now - opened >= self.options.linger:
                    self._settle(self.batcher.flush())
                if now - last_commit >= COMMIT_EVERY:
                    self._commit(wait=False)
                    last_commit = now
            self._draining = True
            self._settle(self.batcher.flush())
        except KafkaException as error:
            self.fatal = _reason(error)
        finally:
            self._draining = True
            self._close()

    def _wait(self) -> float:
        """How long the next read may block: until the oldest open batch's linger is over."""
        opened = self.batcher.opened
        if opened is None:
            return self.options.linger
        return max(0.0, opened + self.options.linger - time.monotonic())

    def _settle(self, fates: list[Fate]) -> None:
        """Count each fate, make its dead letters durable-to-be, and finish its message unless it was kept."""
        for fate in fates:
            self.tally.count(fate)
            entry = self._offsets.entry(fate.position)
            for letter in [*fate.letters, *fate.waiting.values()]:  # no later attempt here: a spent retry budget is final
                self._dead_letters.write(entry, letter)
            if fate.category != "kept":
                self._offsets.finish(fate.position)
        self.tally.requests = self.batcher.requests
        if self.batcher.refused and self.refused is None:
            self.refused = self.batcher.refused
            self.log(self.secrets.redact(f"{self.connection}: {self.refused}; this connection stops, committing only "
                                         "what it delivered; the other connections go on"))
            self._stop.set()

    def _unreadable(self, entry: _Entry, reason: str, value: object, raw: str | None = None) -> None:
        """A message that is not a JSON object (or past a limit): dead-lettered whole, once, and finished."""
        self._settle([self.batcher.unreadable(entry.seq, reason, raw, value)])

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            self.log(f"{self.connection}: kafka: {error.str()}")
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # always set on a consumed message
        entry = self._offsets.read(partition, offset, message.key())
        if entry is None:
            return
        value = message.value()
        if value is None:
            self._unreadable(entry, "the message has no value (a tombstone): expected a JSON object", None)
            return
        item = decode(entry.seq, offset, value)
        if isinstance(item, BadInput):  # kept as text in the dead letter, so the operator sees what was sent
            self._unreadable(entry, f"the message value cannot be taken as an event: {item.message}", None, item.raw)
            return
        event = item.value
        if type(event) is not dict:
            found = _JSON_TYPES.get(type(event), type(event).__name__)
            self._unreadable(entry, f"the message value is JSON but not an object (found {found}): expected a JSON object", event)
            return
        self._settle(self.batcher.add(entry.seq, event))

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
            self.log(f"{self.connection}: commit failed (these events will be redelivered, and deduplicated): {_reason(exc)}")
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


def _reason(error: Exception) -> str:
    """The text of an error; librdkafka's own errors carry a :class:`KafkaError` rather than a message."""
    first = error.args[0] if error.args else error
    return first.str() if isinstance(first, KafkaError) else str(first)


def consume(mappings: Sequence[MappingFile], options: ConsumeOptions, out: IO[str] = sys.stdout) -> int:
    """Run one worker per connection until SIGTERM or SIGINT; print the JSON summary.

    0 on a clean stop; 1 when a worker cannot start, or stopped on a refused
    credential or a Kafka failure (the others went on until the stop).
    """
    secrets = Secrets(mappings)
    try:
        workers = [Worker(m, options.of(m.name, alone=len(mappings) == 1), secrets) for m in mappings]
    except KafkaException as error:
        print(f"actionmap consume: {_reason(error)}", file=sys.stderr)
        return 1
    def stop_all(*_: object) -> None:
        for worker in workers:
            worker.stop()

    previous = {sig: signal.signal(sig, stop_all) for sig in (signal.SIGTERM, signal.SIGINT)}
    threads = [threading.Thread(target=w.run, name=f"actionmap-consume-{w.connection}") for w in workers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short joins: the main thread stays free to run the signal handler
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status = 0
    for worker in workers:
        if worker.refused:
            print(secrets.redact(f"actionmap consume: {worker.connection}: {worker.refused}; this connection stopped. "
                                 "Its offsets were not committed: fix the setting and restart; "
                                 "its group resumes where it stopped."), file=sys.stderr)
            status = 1
        if worker.fatal:
            print(secrets.redact(f"actionmap consume: {worker.connection}: {worker.fatal}"), file=sys.stderr)
            status = 1
    print(Summary({w.connection: w.tally for w in workers}).line(), file=out, flush=True)
    return status
