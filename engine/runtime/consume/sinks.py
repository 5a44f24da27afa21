"""Where a consumer's dead letters go: a Kafka topic or an NDJSON file, each durable before an offset past it is committed.

A record is the ``send`` dead-letter record with ``index`` replaced by the
message's coordinates (topic, partition, offset), so a dump of the topic or the
file is what ``actionmap replay`` reads. Secrets are masked here, where the record
leaves the process.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from engine.delivery.deadletters import Redacts, json_text
from engine.delivery import DeadLetter
from engine.runtime.consume.offsets import _Entry

DEAD_LETTER_FLUSH = 30.0
"""Seconds to wait for the dead-letter topic to acknowledge before an offset may be committed."""


class DeadLetters(abc.ABC):
    """A consumer's dead letters, each naming its message."""

    def __init__(self, secrets: Redacts) -> None:
        self.secrets = secrets

    def write(self, entry: _Entry, letter: DeadLetter) -> None:
        record = letter.record()
        del record["index"]
        record.update(topic=entry.partition.topic, partition=entry.partition.number, offset=entry.offset)
        self._put(entry, letter, self.secrets.redact(json_text(record)).encode())

    @abc.abstractmethod
    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None: ...

    @abc.abstractmethod
    def durable(self) -> bool:
        """True once every dead letter written so far is safely stored (so offsets up to them may be committed)."""

    def close(self) -> None:
        """Release what the sink holds."""


class DeadLetterTopic(DeadLetters):
    """Dead letters produced to a topic, keyed like the original message; the reason is also in the headers."""

    def __init__(self, secrets: Redacts, producer: Producer, topic: str) -> None:
        super().__init__(secrets)
        self._producer = producer
        self._topic = topic
        self.failure: str | None = None

    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("actionmap-reason", self.secrets.redact(letter.reason).encode()),
            ("actionmap-connection", letter.connection.encode()),
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

    def close(self) -> None:
        self._producer.flush(DEAD_LETTER_FLUSH)


class DeadLetterLines(DeadLetters):
    """Dead letters appended to an NDJSON file, synced to disk before an offset is committed.

    Each record is one ``write`` to a file opened for appending, so the workers of
    several connections may share the file without interleaving their lines.
    """

    def __init__(self, secrets: Redacts, path: str) -> None:
        super().__init__(secrets)
        self._fd = os.open(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._unsynced = False

    def _put(self, entry: _Entry, letter: DeadLetter, record: bytes) -> None:
        line = record + b"\n"
        while line:
            line = line[os.write(self._fd, line):]
        self._unsynced = True

    def durable(self) -> bool:
        if self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False
        return True

    def close(self) -> None:
        os.close(self._fd)
