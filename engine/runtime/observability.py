"""What ``actionmap serve`` tells its operator: JSON log lines, each connection's health, Prometheus metrics.

The intake serves them (``/health``, ``/metrics``); the workers feed them. The
counters come from the queue itself, read in one transaction at scrape time,
so they survive restarts and always add up, per connection. Every metric
carries a ``connection`` label (the mapping file's name).
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.delivery.records import utc_text
from engine.runtime.serve.queue import CATEGORIES, Queue

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LABEL = "connection"

_log_lock = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """One JSON line on stderr: what happened and its counts (callers never pass a secret)."""
    line = orjson.dumps({"time": utc_text_now(), "event": event, **fields}, default=str) + b"\n"
    with _log_lock:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


def utc_text_now() -> str:
    return utc_text(datetime.now(timezone.utc))


class Health:
    """What the runtime tells the intake about each connection: why its destination refuses the credential, if it does.

    Thread-safe. The message is shown as given (in ``/health``): whoever calls
    :meth:`refuse` passes it redacted.
    """

    def __init__(self, connections: Iterable[str]) -> None:
        self.connections = tuple(connections)
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()

    def _known(self, name: str) -> None:
        if name not in self.connections:
            raise KeyError(f"no connection {name!r} (connections: {', '.join(self.connections) or 'none'})")

    def refuse(self, name: str, message: str) -> bool:
        """Delivery to ``name`` is paused: its destination refuses the credential; True when it was not already."""
        self._known(name)
        with self._lock:
            first = name not in self._refused
            self._refused[name] = message
        return first

    def accept(self, name: str) -> None:
        """``name``'s credential is accepted again: delivery resumes."""
        self._known(name)
        with self._lock:
            self._refused.pop(name, None)

    def refused(self, name: str) -> str | None:
        """Why ``name``'s destination refuses the credential, None while it does not."""
        with self._lock:
            return self._refused.get(name)


class _QueueCollector:
    """The queue's durable counters, read in one transaction at scrape time (so they always add up)."""

    def __init__(self, queue: Queue, health: Health) -> None:
        self.queue = queue
        self.health = health

    def collect(self) -> Iterator[Metric]:
        stats = self.queue.stats()
        lanes = stats.connections
        now = time.time()

        def family(kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, help: str,
                   value: Any) -> Metric:
            metric = kind(name, help, labels=[LABEL])
            for connection, lane in lanes.items():
                metric.add_metric([connection], value(connection, lane))
            return metric

        yield family(CounterMetricFamily, "actionmap_events_received",
                     "Events committed to the queue for the connection (intake, and dead letters replayed)",
                     lambda _, lane: lane.counters["received"])
        for category in CATEGORIES:
            yield family(CounterMetricFamily, f"actionmap_events_{category}",
                         f"Events that left the connection's lane as {category.replace('_', '-')}",
                         lambda _, lane, category=category: lane.counters[category])
        yield family(CounterMetricFamily, "actionmap_events_retried",
                     "Times an event was put back in the connection's lane for a later attempt",
                     lambda _, lane: lane.counters["retried"])
        yield family(GaugeMetricFamily, "actionmap_queue_depth",
                     "Events in the connection's lane (waiting, leased or due for a retry)", lambda _, lane: lane.depth)
        yield family(GaugeMetricFamily, "actionmap_queue_oldest_age_seconds",
                     "Age of the oldest event in the connection's lane (0 when empty)",
                     lambda _, lane: max(0.0, now - lane.oldest) if lane.oldest is not None else 0.0)
        yield family(GaugeMetricFamily, "actionmap_credential_refused",
                     "1 while the connection's destination refuses the credential (its delivery paused)",
                     lambda connection, _: 1.0 if connection in self.health.connections and self.health.refused(connection) else 0.0)


class Metrics:
    """The Prometheus registry of one service: the queue's counters and the delivery latency the workers observe,
    each per connection."""

    def __init__(self, queue: Queue, health: Health) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_QueueCollector(queue, health))
        self.latency = Histogram(
            "actionmap_delivery_latency_seconds", "Seconds from an event's commit to the queue to its delivery by the connection",
            labelnames=[LABEL], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        for connection in health.connections:  # every connection's histogram is shown, at 0 until a delivery
            self.latency.labels(connection)

    def observe_latency(self, connection: str, seconds: float) -> None:
        """One event delivered by ``connection``, ``seconds`` after it was committed."""
        self.latency.labels(connection).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
