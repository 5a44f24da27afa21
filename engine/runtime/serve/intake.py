"""The HTTP intake of ``actionmap serve``: Segment's HTTP Tracking API in front of the durable queue.

Applications already send with Segment's (or RudderStack's, or Customer.io's)
server libraries; pointed here they must just work: ``POST /v1/track|identify|
page|screen|group|alias|batch``, HTTP Basic auth with a write key as the user
name, or ``Authorization: Bearer <write key>`` (Customer.io's Data Pipelines
library), or ``writeKey`` in the body (as Segment also accepts), plain or gzip
JSON bodies, Segment's limits (32 KB per event, 500 KB per request). A 200 is
sent only after the events are committed to the queue; anything refused is
refused whole, with a 4xx that says why, and nothing of it is queued. No input
gets a 5xx: a 5xx means the queue could not store what was valid.

Hostile clients are bounded: events per request (``MAX_BATCH_EVENTS``),
nesting (``engine.limits.MAX_REQUEST_DEPTH``), the time to send a request head
(``HEAD_TIMEOUT``, in :class:`IntakeProtocol`) and a body (``BODY_TIMEOUT``).

``GET /health`` and ``GET /metrics`` (Prometheus text, from :mod:`engine.runtime.observability`) show the service's
state, each connection's included. ``/health`` is 503 only when the intake cannot accept (the queue cannot be
read or cannot commit), never because a destination is down or refuses its credential: one connection's
trouble must not turn away the events every other connection delivers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import sqlite3
import time
import uuid
import zlib
from typing import Any, Collection

import anyio
import h11
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.limits import EVENT_LIMIT, MAX_BATCH_EVENTS, MAX_DEPTH, MAX_REQUEST_DEPTH, REQUEST_LIMIT, depth_problem
from engine.runtime.observability import Health, Metrics, log, utc_text_now
from engine.runtime.serve.queue import Queue, Stats

HEAD_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head once connected (or once it starts its next request on a
kept-alive connection). uvicorn times out only idle kept-alive connections, so without this a client that
sends half a head keeps its connection, a file descriptor and its buffers forever, and a few thousand such
clients (slowloris) use up the process's descriptors. A library writes its head at once; 10 s is ample."""
BODY_TIMEOUT = 30.0
"""Seconds a client has to send the whole body once its head is in: 500 KB in 30 s is 17 KB/s, far below any
server's link. Past it the answer is 408 and the connection is closed; nothing of the request is kept."""
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
ENDPOINTS = (*EVENT_TYPES, "batch")
BATCH_SHARED = ("context", "integrations")  # a batch's own context and integrations apply to all its events
_GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_CHUNK = 4096  # compressed bytes fed at a time: a member's leftover input is copied once per member, so
                       # this bounds the copying of a body of thousands of tiny members

class Refused(Exception):
    """A request refused whole: its status, a short code and the message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _kb(limit: int) -> str:
    return f"{limit // 1024} KB ({limit} bytes)"


async def _read_body(request: Request, timeout: float) -> bytes:
    """The request body, decompressed, refused as soon as it passes the request limit (a gzip bomb included)
    or when it has not all come within ``timeout`` seconds (a client trickling bytes holds a connection)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > REQUEST_LIMIT:
        raise Refused(400, "request_too_large", f"the request body is {declared} bytes; the limit is {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
    raw = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > REQUEST_LIMIT:
                    raise Refused(400, "request_too_large", f"the request body is over the limit of {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
    except TimeoutError:
        raise Refused(408, "body_timeout", f"the request body did not all arrive within {timeout:g} s ({len(raw)} bytes came); "
                                           "nothing of it was kept: send the body at once, and retry") from None
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding not in ("gzip", "x-gzip"):
        raise Refused(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported: send the body plain or gzip-compressed")
    return _gunzip(raw)


def _gunzip(raw: bytearray) -> bytes:
    """Every member of a gzip body (RFC 1952 lets a stream hold several, as ``cat a.gz b.gz`` makes), at most the
    request limit in all. Bytes after the last member that do not start another are refused, never ignored: a
    200 must never stand for events that were not read."""
    data = memoryview(raw)
    out = bytearray()
    position = 0
    while True:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflate.eof:
            if position >= len(data):
                raise Refused(400, "bad_gzip", "the gzip body is truncated: it ends before the end of the compressed stream")
            chunk = data[position:position + _INFLATE_CHUNK]
            position += len(chunk)
            try:
                out += inflate.decompress(chunk, REQUEST_LIMIT + 1 - len(out))
            except zlib.error as exc:
                raise Refused(400, "bad_gzip", f"the body is declared Content-Encoding: gzip but does not decompress ({exc})") from None
            if len(out) > REQUEST_LIMIT or inflate.unconsumed_tail:
                raise Refused(400, "request_too_large", f"the decompressed request body is over the limit of {_kb(REQUEST_LIMIT)} per request: send fewer events per batch")
        position -= len(inflate.unused_data)
        if position == len(data):
            return bytes(out)
        if data[position:position + len(_GZIP_MAGIC)] != _GZIP_MAGIC:
            raise Refused(400, "bad_gzip", f"the body has {len(data) - position} bytes after the end of its gzip stream that are not "
                                           "another gzip member: send only the compressed JSON")


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


def _header_key(header: str) -> bytes | None:
    """The write key an ``Authorization`` header carries, as sent, or None when it carries none.

    HTTP Basic: the user name (Segment's libraries; the password is empty). ``Bearer``: the token
    (Customer.io's Data Pipelines library sends its ``pk_us_…``/``pk_eu_…`` keys so). Starlette decodes
    header values as latin-1, so encoding back gives the bytes on the wire; whatever they hold (non-ASCII,
    broken base64) is at worst a key that does not match, never an error.
    """
    parts = header.split(None, 1)
    if len(parts) != 2:
        return None
    try:
        value = parts[1].strip().encode("latin-1")
    except UnicodeEncodeError:  # not from an HTTP header (an ASGI server other than uvicorn's): not a key
        return None
    scheme = parts[0].lower()
    if scheme == "bearer":
        return value or None
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return decoded.partition(b":")[0] or None


def _body_key(value: object) -> bytes | None:
    """``writeKey`` of a body, as UTF-8, or None when it is not a string."""
    if not isinstance(value, str):
        return None
    try:
        return value.encode()
    except UnicodeEncodeError:  # a lone surrogate: not a key
        return None


class _Intake:
    """The endpoints, over one queue and one set of write keys."""

    def __init__(self, queue: Queue, write_keys: Collection[str], metrics: Metrics, health: Health,
                 body_timeout: float = BODY_TIMEOUT) -> None:
        self.queue = queue
        self.keys = tuple(k.encode() for k in write_keys)
        self.metrics = metrics
        self.health = health
        self.body_timeout = body_timeout

    def _known(self, key: bytes | None) -> bool:
        if not key:
            return False
        return any(hmac.compare_digest(key, k) for k in self.keys)  # constant time per key

    def _authorize(self, request: Request) -> bool | None:
        """True or False from the Authorization header; None when there is none (the body may carry ``writeKey``)."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        return self._known(_header_key(header))

    async def receive(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        try:
            if kind not in ENDPOINTS:
                raise Refused(404, "not_found", f"no such endpoint: POST /v1/{kind}; the intake serves POST /v1/{{{'|'.join(ENDPOINTS)}}}")
            authorized = self._authorize(request)
            if authorized is False:
                raise Refused(401, "unauthorized", "the write key is not valid (Authorization header): send it as the user name "
                                                   "of HTTP Basic auth (password empty) or as a Bearer token")
            body = _json(await _read_body(request, self.body_timeout))
            if authorized is None and not self._known(_body_key(body.get("writeKey"))):
                raise Refused(401, "unauthorized", "no valid write key: send it as the user name of HTTP Basic auth, "
                                                   "as a Bearer token, or as writeKey in the body")
            events = _batch_events(body) if kind == "batch" else [_single_event(kind, body)]
            del body  # only the events' stored texts wait for the queue's lock, not the parsed request
            await run_in_threadpool(self.queue.put, events)
        except Refused as refused:
            log("request_refused", path=request.url.path, status=refused.status, code=refused.code, message=refused.message)
            headers = {}
            if refused.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="actionmap"'
            if refused.status == 408:  # the rest of the body may still come: do not read it as the next request
                headers["Connection"] = "close"
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
        """200 while the intake can accept, 503 naming the cause while the queue cannot be read or cannot commit
        (the intake then answers 503 too); ok again by itself once that has passed. The body gives every
        connection's state either way: delivering, or credential refused (and why), its queued events and
        the age of the oldest."""
        problems = {}
        stats: Stats | None = None
        try:
            await run_in_threadpool(self.queue.ping)
            cannot_commit = await run_in_threadpool(self.queue.commit_problem)
            stats = await run_in_threadpool(self.queue.stats)
        except sqlite3.Error as exc:
            problems["queue"] = f"unreachable: {exc}"
        else:
            if cannot_commit:
                problems["queue"] = f"cannot commit: {cannot_commit}"
        body: dict[str, Any] = {"status": "unhealthy" if problems else "ok", **problems,
                                "connections": self._connections(stats)}
        return JSONResponse(body, 503 if problems else 200)

    def _connections(self, stats: Stats | None) -> dict[str, dict[str, Any]]:
        now = time.time()
        states: dict[str, dict[str, Any]] = {}
        for name in self.health.connections:
            refused = self.health.refused(name)
            state: dict[str, Any] = {"state": "credential refused" if refused else "delivering"}
            lane = stats.connections.get(name) if stats is not None else None
            if lane is not None:  # unknown while the queue cannot be read
                state["queued"] = lane.depth
                state["oldest_age_seconds"] = round(max(0.0, now - lane.oldest), 3) if lane.oldest is not None else 0.0
            if refused:
                state["refused"] = refused
            states[name] = state
        return states

    async def metrics_text(self, request: Request) -> Response:
        try:
            return Response(await run_in_threadpool(self.metrics.render), media_type=CONTENT_TYPE_LATEST)
        except sqlite3.Error as exc:
            return Response(f"the queue cannot be read: {exc}\n", 503, media_type="text/plain")


class _Encoder:
    """The JSON texts of one request's values: orjson's, or the standard library's for a value past orjson's
    255 levels (stored, then dead-lettered as invalid by the worker, so its neighbours are delivered), once
    the request is known to nest no deeper than ``MAX_REQUEST_DEPTH``. The depth is walked only then, at most
    once a request: the common request costs nothing more."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.checked = False

    def __call__(self, value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass
        if not self.checked:
            problem = depth_problem(self.request, MAX_REQUEST_DEPTH)
            if problem is not None:
                raise _too_deep(problem)
            self.checked = True
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except RecursionError:  # not within 512 levels; kept as a refusal all the same, never a 500
            raise _too_deep(f"nests deeper than this process can encode (the limit is {MAX_REQUEST_DEPTH} levels)") from None


def _too_deep(problem: str) -> Refused:
    return Refused(400, "too_deep", f"the request body {problem}; an event is delivered only if it nests at most "
                                    f"{MAX_DEPTH} levels: flatten its properties")


def _stamped(event: dict[str, Any], received_at: str, shared: dict[str, dict[str, Any]], encode: _Encoder) -> bytes:
    """The event as stored: as received, plus ``receivedAt``, a ``messageId`` when it has none, the batch's shared objects.

    The text is copied to its own size: orjson (3.12 on) returns bytes whose buffer is 4 KB or more whatever
    their length, and the event is kept until the queue has it, so 160,000 tiny events held 650 MB that glibc
    then kept for the process (freed small buffers in its heap are not returned to the system).
    """
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
    return bytes(memoryview(encode(event)))


def _single_event(kind: str, body: dict[str, Any]) -> bytes:
    encode = _Encoder(body)
    size = len(encode(body))
    if size > EVENT_LIMIT:
        raise Refused(400, "event_too_large", f"the event is {size} bytes as JSON; the limit is {_kb(EVENT_LIMIT)} per event")
    body["type"] = kind
    return _stamped(body, utc_text_now(), {}, encode)


def _batch_events(body: dict[str, Any]) -> list[bytes]:
    batch = body.get("batch")
    if type(batch) is not list:
        found = "missing" if batch is None and "batch" not in body else _kind(batch)
        raise Refused(400, "invalid_batch", f'"batch" must be a list of event objects, got {found}')
    if len(batch) > MAX_BATCH_EVENTS:
        raise Refused(400, "too_many_events", f"the batch has {len(batch)} events; the limit is {MAX_BATCH_EVENTS} events "
                                              "per request: send fewer events per batch")
    encode = _Encoder(body)
    shared = {key: body[key] for key in BATCH_SHARED if type(body.get(key)) is dict}
    received_at = utc_text_now()
    stored = []
    for index, event in enumerate(batch):
        if type(event) is not dict:
            raise Refused(400, "invalid_batch", f"batch[{index}] is {_kind(event)}: each item of the batch must be an event object")
        size = len(encode(event))
        if size > EVENT_LIMIT:
            raise Refused(400, "event_too_large", f"batch[{index}] is {size} bytes as JSON; the limit is {_kb(EVENT_LIMIT)} per event")
        stored.append(_stamped(event, received_at, shared, encode))
        batch[index] = None  # its stored text is what is kept: the parsed event goes now, not with the whole batch
    return stored


def create_app(queue: Queue, write_keys: Collection[str], metrics: Metrics | None = None, health: Health | None = None,
               body_timeout: float = BODY_TIMEOUT) -> Starlette:
    """The intake's ASGI app; ``metrics`` and ``health`` are shared with the runtime's workers. Serve it with
    ``http=IntakeProtocol`` so that request heads are timed out too."""
    if not write_keys:
        raise ValueError("the intake needs at least one write key")
    health = health if health is not None else Health(queue.connections)
    intake = _Intake(queue, write_keys, metrics or Metrics(queue, health), health, body_timeout)
    return Starlette(routes=[
        Route("/v1/{kind}", intake.receive, methods=["POST"]),
        Route("/health", intake.health_check, methods=["GET"]),
        Route("/metrics", intake.metrics_text, methods=["GET"]),
    ])


class IntakeProtocol(H11Protocol):
    """uvicorn's h11 protocol plus the deadline it lacks: a client must send a whole request head within
    ``head_timeout`` seconds of connecting, or of starting its next request on a kept-alive connection.

    The timer runs while the connection waits for the client with no request in hand (before a head is
    complete, or while the rest of an answered request's body is discarded); a request being served is
    bounded by the app (its body by ``BODY_TIMEOUT``). Set ``head_timeout`` in a subclass to change it.
    """

    head_timeout: float = HEAD_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting():
            self._cancel_head_timer()
        elif self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)  # never re-armed: a byte
            # every few seconds does not buy more time

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_head_timer()

    def _waiting(self) -> bool:
        """No request is being served: whatever the client owes is a head (or a body nobody reads)."""
        return self.cycle is None or self.cycle.response_complete

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self._waiting() or self.transport.is_closing():
            return
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial:  # a client that connects and sends nothing (a pre-opened connection) is closed quietly
            client = "%s:%d" % self.client if self.client else None
            log("request_head_timeout", client=client, seconds=self.head_timeout,
                action="connection closed: the client sent part of a request head and then nothing")
            if self.conn.our_state is h11.IDLE:
                message = f"the request head did not all arrive within {self.head_timeout:g} s; the connection is closed\n".encode()
                try:
                    self.transport.write(self.conn.send(h11.Response(status_code=408, reason=b"Request Timeout", headers=[
                        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(message)).encode()),
                        (b"connection", b"close")])) or b"")
                    self.transport.write(self.conn.send(h11.Data(data=message)) or b"")
                    self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
                except h11.LocalProtocolError:  # h11 will not answer in this state: closing says enough
                    pass
        self.transport.close()
