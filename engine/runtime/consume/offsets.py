"""Which messages of a consumer's partitions are finished, and the offsets that may be committed."""

from __future__ import annotations

from collections import deque

from confluent_kafka import TopicPartition


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
        while entries and entries[0].finished:
            self.done = entries.popleft().offset + 1


class _Entry:
    """One message read: where it came from, and whether its fate is known."""

    __slots__ = ("seq", "partition", "offset", "key", "finished")

    def __init__(self, seq: int, partition: _Partition, offset: int, key: bytes | None) -> None:
        self.seq = seq
        self.partition = partition
        self.offset = offset
        self.key = key
        self.finished = False


class Offsets:
    """Which messages are finished, per partition; the offsets that may be committed.

    A message is registered when read and finished when its fate is known
    (delivered, filtered or dead-lettered, at once or when its batch left). The committable
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

    def finish(self, seq: int) -> None:
        """Message ``seq`` is delivered, filtered or dead-lettered (a message read before a drop is ignored)."""
        entry = self._open.pop(seq, None)
        if entry is None:
            return
        entry.finished = True
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
