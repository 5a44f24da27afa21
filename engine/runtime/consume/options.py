"""What ``actionmap consume`` is told: where to read, where dead letters go, the delivery knobs shared with ``send``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from engine.delivery import RetryPolicy
from engine.errors import ConfigError

MAX_POLL_INTERVAL_LIMIT_MS = 86_400_000  # librdkafka's upper bound for max.poll.interval.ms


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

    def of(self, connection: str, alone: bool) -> ConsumeOptions:
        """The options of one connection's worker: its own consumer group, ``<group>.<name>``, unless it is the only one.

        Alone, a connection keeps ``--group`` as given, so a deployment of one
        mapping file resumes where it was; with several, one destination's outage
        never holds another's offsets.
        """
        return self if alone else replace(self, group=f"{self.group}.{connection}")

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
