"""The HTTP intake of ``actionmap serve``: Segment's HTTP Tracking API in front of the durable queue.

Applications already send with Segment's (or RudderStack's, or Customer.io's)
server libraries; pointed here they must just work: ``POST /v1/track|identify|
page|screen|group|alias|batch``, HTTP Basic auth with a write key as the user
name (or ``writeKey`` in the body, as Segment also accepts), plain or gzip JSON
bodies, Segment's limits (32 KB per event, 500 KB per request). A 200 is sent
only after the events are committed to the queue; anything refused is refused
whole, with a 4xx that says why, and nothing of it is queued.

``GET /health`` and ``GET /metrics`` (Prometheus text) show the service's state.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import sqlite3
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Collection, Iterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.delivery import utc_text
from engine.queue import CATEGORIES, Queue

EVENT_LIMIT = 32 * 1024
REQUEST_LIMIT = 500 * 1024
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
ENDPOINTS = (*EVENT_TYPES, "batch")
BATCH_SHARED = ("context", "integrations")  # a batch's own context and integrations apply to all its events
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


class Refused(Exception):
    """A request refused whole: its status, a short code and the message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _kb(limit: int) -> str:
    return f"{limit // 1024} KB ({limit} bytes)"


async def _read_body(request: Request) -> bytes:
    """The request body, decompressed, refused as soon as it passes the request limit (a gzip bomb included)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > REQUEST_LIMIT:
        raise Refused(400, "request_too_large", f"the request body is {declared} bytes; the limit is {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > REQUEST_LIMIT:
            raise Refused(400, "request_too_large", f"the request body is over the limit of {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding not in ("gzip", "x-gzip"):
        raise Refused(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported: send the body plain or gzip-compressed")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflate.decompress(bytes(raw), REQUEST_LIMIT + 1)
    except zlib.error as exc:
        raise Refused(400, "bad_gzip", f"the body is declared Content-Encoding: gzip but does not decompress ({exc})") from None
    if len(body) > REQUEST_LIMIT or inflate.unconsumed_tail:
        raise Refused(400, "request_too_large", f"the decompressed request body is over the limit of {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
    if not inflate.eof:
        raise Refused(400, "bad_gzip", "the gzip body is truncated: it ends before the end of the compressed stream")
    return body


def _json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise Refused(400, "invalid_json", "the request body is empty: expected a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, "invalid_json", f"the request body is not valid JSON ({exc})") from None
    if type(value) is not dict:
        raise Refused(400, "invalid_json", f"the request body must be a JSON object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null")


def _basic_user(header: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (the write key), or None when it is not one."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


class _Intake:
    """The endpoints, over one queue and one set of write keys."""

    def __init__(self, queue: Queue, write_keys: Collection[str], metrics: Metrics, health: Health) -> None:
        self.queue = queue
        self.keys = tuple(k.encode() for k in write_keys)
        self.metrics = metrics
        self.health = health

    def _known(self, key: object) -> bool:
        if not isinstance(key, str) or not key:
            return False
        given = key.encode()
        return any(hmac.compare_digest(given, k) for k in self.keys)  # constant time per key

    def _authorize(self, request: Request) -> bool | None:
        """True or False from the Authorization header; None when there is none (the body may carry ``writeKey``)."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        return self._known(_basic_user(header))

    async def receive(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        try:
            if kind not in ENDPOINTS:
                raise Refused(404, "not_found", f"no such endpoint: POST /v1/{kind}; the intake serves POST /v1/{{{'|'.join(ENDPOINTS)}}}")
            authorized = self._authorize(request)
            if authorized is False:
                raise Refused(401, "unauthorized", "the write key is not valid: send it as the user name of HTTP Basic auth (password empty)")
            body = _json(await _read_body(request))
            if authorized is None and not self._known(body.get("writeKey")):
                raise Refused(401, "unauthorized", "no valid write key: send it as the user name of HTTP Basic auth, or as writeKey in the body")
            events = _batch_events(body) if kind == "batch" else [_single_event(kind, body)]
            await run_in_threadpool(self.queue.put, events)
        except Refused as refused:
            log("request_refused", path=request.url.path, status=refused.status, code=refused.code, message=refused.message)
            headers = {"WWW-Authenticate": 'Basic realm="actionmap"'} if refused.status == 401 else None
            return JSONResponse({"success": False, "code": refused.code, "message": refused.message}, refused.status, headers)
        except ClientDisconnect:  # the client went away mid-body: nothing was stored, and nobody reads this answer
            log("request_abandoned", path=request.url.path)
            return Response(status_code=400)
        except sqlite3.Error as exc:
            log("queue_error", path=request.url.path, error=str(exc))
            return JSONResponse({"success": False, "code": "queue_unavailable",
                                 "message": "the events could not be stored, nothing was accepted: retry later"}, 503)
        return JSONResponse({"success": True})

    async def health_check(self, request: Request) -> Response:
        problems = {}
        try:
            await run_in_threadpool(self.queue.ping)
        except sqlite3.Error as exc:
            problems["queue"] = f"unreachable: {exc}"
        if self.health.refused:
            problems["credential"] = f"refused: {self.health.refused}"
        if problems:
            return JSONResponse({"status": "unhealthy", **problems}, 503)
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, request: Request) -> Response:
        try:
            return Response(await run_in_threadpool(self.metrics.render), media_type=CONTENT_TYPE_LATEST)
        except sqlite3.Error as exc:
            return Response(f"the queue cannot be read: {exc}\n", 503, media_type="text/plain")


def _stamped(event: dict[str, Any], received_at: str, shared: dict[str, dict[str, Any]]) -> bytes:
    """The event as stored: as received, plus ``receivedAt``, a ``messageId`` when it has none, the batch's shared objects."""
    event.pop("writeKey", None)  # a credential, not event data
    for key, common in shared.items():
        own = event.get(key)
        if own is None:
            event[key] = common
        elif type(own) is dict:
            event[key] = {**common, **own}
    if event.get("messageId") in (None, ""):
        event["messageId"] = f"api-{uuid.uuid4()}"
    event["receivedAt"] = received_at
    return orjson.dumps(event)


def _single_event(kind: str, body: dict[str, Any]) -> bytes:
    size = len(orjson.dumps(body))
    if size > EVENT_LIMIT:
        raise Refused(400, "event_too_large", f"the event is {size} bytes as JSON; the limit is {_kb(EVENT_LIMIT)} per event")
    body["type"] = kind
    return _stamped(body, utc_text_now(), {})


def _batch_events(body: dict[str, Any]) -> list[bytes]:
    batch = body.get("batch")
    if type(batch) is not list:
        found = "missing" if batch is None and "batch" not in body else _kind(batch)
        raise Refused(400, "invalid_batch", f'"batch" must be a list of event objects, got {found}')
    for index, event in enumerate(batch):
        if type(event) is not dict:
            raise Refused(400, "invalid_batch", f"batch[{index}] is {_kind(event)}: each item of the batch must be an event object")
        size = len(orjson.dumps(event))
        if size > EVENT_LIMIT:
            raise Refused(400, "event_too_large", f"batch[{index}] is {size} bytes as JSON; the limit is {_kb(EVENT_LIMIT)} per event")
    shared = {key: body[key] for key in BATCH_SHARED if type(body.get(key)) is dict}
    received_at = utc_text_now()
    return [_stamped(event, received_at, shared) for event in batch]


def create_app(queue: Queue, write_keys: Collection[str], metrics: Metrics | None = None, health: Health | None = None) -> Starlette:
    """The intake's ASGI app; ``metrics`` and ``health`` are shared with the runtime's workers."""
    if not write_keys:
        raise ValueError("the intake needs at least one write key")
    health = health or Health()
    intake = _Intake(queue, write_keys, metrics or Metrics(queue, health), health)
    return Starlette(routes=[
        Route("/v1/{kind}", intake.receive, methods=["POST"]),
        Route("/health", intake.health_check, methods=["GET"]),
        Route("/metrics", intake.metrics_text, methods=["GET"]),
    ])
