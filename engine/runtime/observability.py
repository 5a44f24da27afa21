"""What ``actionmap serve`` tells its operator: JSON log lines, the health the runtime reports, Prometheus metrics.

The intake serves them (``/health``, ``/metrics``); the workers feed them. The
counters come from the queue itself, read in one transaction at scrape time,
so they survive restarts and always add up.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.delivery.records import utc_text
from engine.queue import CATEGORIES, Queue

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

_log_lock = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """One JSON line on stderr: what happened and its counts (callers never pass a secret)."""
    line = orjson.dumps({"time": utc_text_now(), "event": event, **fields}, default=str) + b"\n"
    with _log_lock:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


def utc_text_now() -> str:
    return utc_text(datetime.now(timezone.utc))


@dataclass
class Health:
    """What the runtime tells the intake: why the destination refuses delivery, if it does."""

    refused: str | None = None


class _QueueCollector:
    """The queue's durable counters, read in one transaction at scrape time (so they always add up)."""

    def __init__(self, queue: Queue, health: Health) -> None:
        self.queue = queue
        self.health = health

    def collect(self) -> Iterator[Metric]:
        stats = self.queue.stats()
        counts = stats.counters
        yield CounterMetricFamily("actionmap_events_received", "Events committed to the queue (intake, and dead letters replayed)",
                                  counts["received"])
        for category in CATEGORIES:
            yield CounterMetricFamily(f"actionmap_events_{category}", f"Events that left the queue as {category.replace('_', '-')}",
                                      counts[category])
        yield CounterMetricFamily("actionmap_events_retried", "Times an event was put back in the queue for a later attempt",
                                  counts["retried"])
        yield GaugeMetricFamily("actionmap_queue_depth", "Events in the queue (waiting, leased or due for a retry)", stats.depth)
        age = max(0.0, time.time() - stats.oldest) if stats.oldest is not None else 0.0
        yield GaugeMetricFamily("actionmap_queue_oldest_age_seconds", "Age of the oldest queued event (0 when empty)", age)
        yield GaugeMetricFamily("actionmap_credential_refused", "1 while the destination refuses the credential (delivery paused)",
                                1.0 if self.health.refused else 0.0)


class Metrics:
    """The Prometheus registry of one service: the queue's counters and the delivery latency the workers observe."""

    def __init__(self, queue: Queue, health: Health) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_QueueCollector(queue, health))
        self.latency = Histogram(
            "actionmap_delivery_latency_seconds", "Seconds from an event's commit to the queue to its delivery",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
