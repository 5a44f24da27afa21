"""``actionmap consume``: one Kafka consumer-group worker per connection (``worker``), the offsets it may commit
(``offsets``), where its dead letters go (``sinks``) and what it is told (``options``)."""

from __future__ import annotations

from engine.runtime.consume.offsets import Offsets
from engine.runtime.consume.options import ConsumeOptions, kafka_properties
from engine.runtime.consume.worker import Worker, consume

__all__ = ["ConsumeOptions", "Offsets", "Worker", "consume", "kafka_properties"]
