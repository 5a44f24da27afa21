"""A local stand-in for Metronome's ingest API, for delivery tests and the quick start.

It behaves as ``reference/metronome-ingest.md`` describes: auth before the body,
whole-request 400s, the timestamp window by an injectable clock, deduplication by
``transaction_id`` (first accepted payload wins), an optional rate limit, and the
faults a sender must survive, scripted or drawn at random.

It is built on the standard library's ``http.server`` on purpose: the faults need
socket-level control that a framework hides (store the batch and then close the
connection without answering; reset the connection with RST before reading the body).
Each connection is served by its own thread, with HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Final, Iterable, Sequence, TypeVar

__all__ = [
    "FAULT_KINDS",
    "Faults",
    "MetronomeEmulator",
    "RecordedRequest",
    "main",
]

FAULT_KINDS: Final = (
    "429",
    "429_retry_after",
    "500",
    "502",
    "503",
    "504",
    "store_part_then_500",
    "store_all_then_drop",
    "slow",
    "reset_before_read",
)
"""Every fault the emulator can inject; ``None`` in a script means "behave normally"."""

_STATUS_FAULTS: Final = {"429": 429, "429_retry_after": 429, "500": 500, "502": 502, "503": 503, "504": 504}
"""Faults answered with a status alone: the body is read (keep-alive stays usable), nothing is stored."""

MAX_EVENTS: Final = 100
MAX_TRANSACTION_ID: Final = 128
MAX_PROPERTIES: Final = 2000
PAST_WINDOW: Final = timedelta(days=34)
FUTURE_WINDOW: Final = timedelta(hours=24)
_REQUIRED: Final = ("transaction_id", "customer_id", "event_type", "timestamp")
_MAX_ERRORS_SHOWN: Final = 20

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
_BEARER: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+) *\Z")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Faults:
    """What goes wrong, and when: a script consumed one entry per ingest request, then random draws.

    One seeded ``random.Random`` draws both the fault and, for ``store_part_then_500``,
    how much of the batch is stored, so a run with one sequential client repeats exactly.
    Thread-safe: the request threads share it.
    """

    def __init__(
        self,
        script: Iterable[str | None] = (),
        *,
        rate: float = 0.0,
        kinds: Iterable[str] = FAULT_KINDS,
        seed: int | None = None,
        slow_delay: float = 10.0,
        retry_after_ms: int = 1000,
    ) -> None:
        self._script: deque[str | None] = deque(_checked(script, allow_none=True))
        self.kinds: tuple[str, ...] = tuple(_checked(kinds, allow_none=False))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        if rate > 0 and not self.kinds:
            raise ValueError("a fault rate above 0 needs at least one fault kind to draw from")
        if slow_delay < 0 or retry_after_ms < 0:
            raise ValueError("slow_delay and retry_after_ms must not be negative")
        self.rate = rate
        self.slow_delay = slow_delay
        self.retry_after_ms = retry_after_ms
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def extend(self, script: Iterable[str | None]) -> None:
        """Queue more scripted faults after those not yet consumed."""
        checked = _checked(script, allow_none=True)
        with self._lock:
            self._script.extend(checked)

    @property
    def pending(self) -> int:
        """How many scripted entries are not consumed yet."""
        with self._lock:
            return len(self._script)

    def draw(self) -> str | None:
        """The fault for the next ingest request, or None to behave normally."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.rate and self._random.random() < self.rate:
                return self._random.choice(self.kinds)
            return None

    def part_of(self, count: int) -> int:
        """How many of ``count`` valid events ``store_part_then_500`` stores: a non-empty prefix, short of all when it can be."""
        with self._lock:
            return self._random.randint(1, max(1, count - 1))


_Name = TypeVar("_Name", str, str | None)


def _checked(names: Iterable[_Name], allow_none: bool) -> list[_Name]:
    """The fault names, or a ValueError naming the bad one and the valid ones."""
    listed = list(names)
    for name in listed:
        if not (name in FAULT_KINDS or (allow_none and name is None)):
            valid = ", ".join(FAULT_KINDS) + (" or None" if allow_none else "")
            raise ValueError(f"unknown fault {name!r}: expected one of {valid}")
    return listed


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, for tests to read back.

    ``status`` is None when no answer was sent (connection dropped or reset);
    ``events`` is the length of the JSON array received, None when there was none;
    ``fault`` is the fault drawn for this request (ingest only); ``received`` is
    ``time.monotonic()`` when the request line arrived, to measure backoff.
    """

    method: str
    path: str
    headers: dict[str, str]
    events: int | None
    status: int | None
    fault: str | None
    body: Any
    received: float


@dataclass(frozen=True)
class _Answer:
    """A response to send: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _message(status: int, text: str, *headers: tuple[str, str]) -> _Answer:
    return _Answer(status, json.dumps({"message": text}).encode(), headers)


_OK: Final = _Answer(200, b"{}")


@dataclass
class _StoredEvent:
    id: str
    payload: dict[str, Any]
    processed_at: str

    def as_search_result(self, is_duplicate: bool) -> dict[str, Any]:
        """The event as ``POST /v1/events/search`` shows it (Metronome's field names)."""
        p = self.payload
        return {
            "id": self.id,
            "transaction_id": p["transaction_id"],
            "customer_id": p["customer_id"],
            "event_type": p["event_type"],
            "timestamp": p["timestamp"],
            "properties": p.get("properties", {}),
            "is_duplicate": is_duplicate,
            "processed_at": self.processed_at,
        }


class _TokenBucket:
    """Events per second with a burst of one second's worth, never less than one full batch.

    Runs on the monotonic clock, not the injectable one: the injected clock is the
    calendar the timestamp window is judged by, and tests often freeze it.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate_limit must be a positive number of events per second, got {rate}")
        self.rate = rate
        self.capacity = max(rate, float(MAX_EVENTS))
        self.refill()

    def refill(self) -> None:
        self._tokens = self.capacity
        self._at = time.monotonic()

    def take(self, count: int) -> bool:
        """Spend ``count`` tokens if there are that many; the caller holds the emulator's lock."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _parse_rfc3339(text: str) -> datetime | None:
    """The instant an RFC 3339 date-time names (4-digit year, offset required), or None."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or ".0")[1:7].ljust(6, "0"))
    offset = timedelta(0)
    if m.group(8):
        if int(m.group(10)) > 59:
            return None
        offset = timedelta(hours=int(m.group(9)), minutes=int(m.group(10)))
        if m.group(8) == "-":
            offset = -offset
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    except ValueError:
        return None


def _iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mask(value: str) -> str:
    """A credential as it may be shown: the scheme and at most the last 4 characters (none of a short one)."""
    m = _BEARER.match(value)
    scheme, secret = ("Bearer ", m.group(1)) if m else ("", value)
    return scheme + ("***" + secret[-4:] if len(secret) >= 8 else "***")


class _Validator:
    """Metronome's per-request rules, with messages in its bracketed style naming index and field."""

    def __init__(self, property_value_limit: int | None) -> None:
        self.property_value_limit = property_value_limit

    def errors(self, body: Any, now: datetime) -> list[str]:
        if not isinstance(body, list):
            return [f"#: expected a JSON array of 1 to {MAX_EVENTS} events, got {_json_type(body)}"]
        if not body:
            return ["array is too short: must have at least 1 elements but instance has 0 elements"]
        if len(body) > MAX_EVENTS:
            return [f"array is too long: must have at most {MAX_EVENTS} elements but instance has {len(body)} elements"]
        earliest, latest = now - PAST_WINDOW, now + FUTURE_WINDOW
        found: list[str] = []
        for index, event in enumerate(body):
            found.extend(self._event_errors(f"#/{index}", event, earliest, latest))
        return found

    def _event_errors(self, where: str, event: Any, earliest: datetime, latest: datetime) -> list[str]:
        if not isinstance(event, dict):
            return [f"{where}: expected an event object, got {_json_type(event)}"]
        found: list[str] = []
        absent = [name for name in _REQUIRED if name not in event]
        if absent:
            found.append(f"{where}: object has missing required properties ({json.dumps(absent)})")
        for name in _REQUIRED:
            if name in absent:
                continue
            value = event[name]
            if not isinstance(value, str):
                found.append(f"{where}/{name}: expected type string, got {_json_type(value)}")
            elif name == "timestamp":
                found.extend(self._timestamp_errors(where, value, earliest, latest))
            elif not value:
                found.append(f"{where}/{name}: string is too short: "
                             "must have at least 1 characters but instance has 0 characters")
            elif name == "transaction_id" and len(value) > MAX_TRANSACTION_ID:
                found.append(
                    f"{where}/{name}: string is too long: must have at most {MAX_TRANSACTION_ID} characters "
                    f"but instance has {len(value)} characters"
                )
        if "properties" in event:
            found.extend(self._properties_errors(where, event["properties"], event.get("transaction_id")))
        return found

    @staticmethod
    def _timestamp_errors(where: str, value: str, earliest: datetime, latest: datetime) -> list[str]:
        instant = _parse_rfc3339(value)
        if instant is None:
            return [
                f"{where}/timestamp: {json.dumps(value)} is not an RFC 3339 date-time with a 4-digit year "
                f"and an offset, like 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00"
            ]
        if instant < earliest:
            return [f"{where}/timestamp: {value} is more than 34 days in the past; the earliest accepted now is {_iso(earliest)}"]
        if instant > latest:
            return [f"{where}/timestamp: {value} is more than 24 hours in the future; the latest accepted now is {_iso(latest)}"]
        return []

    def _properties_errors(self, where: str, properties: Any, transaction_id: Any) -> list[str]:
        if not isinstance(properties, dict):
            return [f"{where}/properties: expected type object, got {_json_type(properties)}"]
        if len(properties) > MAX_PROPERTIES:
            return [
                f"{where}/properties: object has too many properties: must have at most {MAX_PROPERTIES} "
                f"but instance has {len(properties)}"
            ]
        limit = self.property_value_limit
        if limit is None:
            return []
        found = []
        for key, value in properties.items():
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
            if size > limit:
                pointer = key.replace("~", "~0").replace("/", "~1")
                found.append(
                    f"{where}/properties/{pointer}: the value of property {json.dumps(key)} of the event with "
                    f"transaction_id {json.dumps(transaction_id)} is {size} bytes as JSON; at most {limit} bytes are accepted"
                )
        return found


def _bracketed(errors: list[str]) -> str:
    shown = errors[:_MAX_ERRORS_SHOWN]
    more = len(errors) - len(shown)
    return "[" + ", ".join(shown) + (f", ... and {more} more" if more else "") + "]"


def _decode(raw: bytes, encoding: str) -> tuple[Any, str | None]:
    """The JSON value of a request body and None, or None and what is wrong with the body."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            return None, f"the body is declared Content-Encoding: gzip but does not decompress ({error})"
    elif encoding not in ("", "identity"):
        return None, f"unsupported Content-Encoding {encoding!r}: send the body plain or gzip-compressed"
    if not raw.strip():
        return None, f"the request body is empty: expected a JSON array of 1 to {MAX_EVENTS} events"
    try:
        return json.loads(raw, parse_constant=_reject_constant), None
    except (ValueError, RecursionError) as error:
        return None, f"the request body is not valid JSON ({error})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


class MetronomeEmulator:
    """Metronome's ingest API on loopback, with its state readable by tests.

    ``tokens`` are the valid API tokens; ``clock`` gives the current time (aware
    UTC) that the timestamp window is judged by; ``faults`` is a :class:`Faults`
    or a plain script of fault names; ``rate_limit`` is events per second (off
    when None); ``property_value_limit`` rejects an event with a property whose
    JSON encoding is longer than that many bytes, so a test can poison one event.
    Read-back (``requests``, ``stored``, ``duplicates``, ``max_events_in_a_request``)
    is thread-safe and also served as JSON at ``GET /_emulator/state``.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        clock: Callable[[], datetime] = _utc_now,
        faults: Faults | Iterable[str | None] | None = None,
        rate_limit: float | None = None,
        property_value_limit: int | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.tokens = frozenset(tokens)
        if not self.tokens or not all(self.tokens):
            raise ValueError("the emulator needs at least one API token, and tokens must not be empty")
        self.clock = clock
        self.faults = faults if isinstance(faults, Faults) else Faults(faults or ())
        self.max_body_bytes = max_body_bytes
        self._validator = _Validator(property_value_limit)
        self._bucket = _TokenBucket(rate_limit) if rate_limit is not None else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.reset()

    # -- lifecycle -----------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; the base URL (``http://host:port``, port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError(f"the emulator is already serving at {self.base_url}")
        self._stopping.clear()
        server = _Server((host, port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                                        name="metronome-emulator")
        self._thread.start()
        self.base_url = f"http://{host}:{server.server_address[1]}"
        return self.base_url

    def stop(self) -> None:
        """Stop serving: wake slow answers, close open keep-alive connections, free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> MetronomeEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- read-back -----------------------------------------------------------

    def reset(self) -> None:
        """Forget every request and stored event and refill the rate limit; the fault plan is kept."""
        with self._lock:
            self._requests: list[RecordedRequest] = []
            self._stored: dict[str, _StoredEvent] = {}
            self._duplicates: list[_StoredEvent] = []
            self._max_events = 0
            if self._bucket is not None:
                self._bucket.refill()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received (except ``/_emulator/*``), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def stored(self) -> dict[str, dict[str, Any]]:
        """transaction_id -> the first accepted payload, in first-accepted order."""
        with self._lock:
            return {tid: event.payload for tid, event in self._stored.items()}

    @property
    def duplicates(self) -> int:
        """How many events were ignored because their transaction_id was already stored."""
        with self._lock:
            return len(self._duplicates)

    @property
    def max_events_in_a_request(self) -> int:
        """The longest JSON array any request carried (rejected ones included): it must stay <= 100."""
        with self._lock:
            return self._max_events

    def state(self) -> dict[str, Any]:
        """All of the read-back as one JSON-ready document (what ``GET /_emulator/state`` answers)."""
        with self._lock:
            return {
                "requests": [asdict(r) for r in self._requests],
                "stored": {tid: event.payload for tid, event in self._stored.items()},
                "duplicates": len(self._duplicates),
                "max_events_in_a_request": self._max_events,
            }

    def summary(self) -> dict[str, Any]:
        """Counts of what happened, for the command line's last line."""
        with self._lock:
            return {
                "requests": len(self._requests),
                "statuses": dict(Counter(str(r.status) if r.status else "no answer" for r in self._requests)),
                "faults": dict(Counter(r.fault for r in self._requests if r.fault)),
                "stored": len(self._stored),
                "duplicates": len(self._duplicates),
                "max_events_in_a_request": self._max_events,
            }

    # -- behaviour (called by the request threads) -----------------------------

    def _authenticate(self, header: str | None) -> _Answer | None:
        """401 for a missing or malformed header, 403 for an unknown token, None when it is valid."""
        if header is None:
            return _message(401, "missing Authorization header: send 'Authorization: Bearer <your Metronome API token>'")
        m = _BEARER.match(header)
        if m is None:
            return _message(401, f"malformed Authorization header {_mask(header)!r}: "
                                 "expected 'Bearer <your Metronome API token>'")
        if m.group(1) not in self.tokens:
            return _message(403, f"the API token {_mask(m.group(1))} is not valid: check the token and its environment")
        return None

    def _fault_answer(self, fault: str) -> _Answer:
        status = _STATUS_FAULTS[fault]
        headers: list[tuple[str, str]] = []
        if status == 429:
            headers.append(("X-Metronome-Rate-Limit-Type", "client"))
        if fault == "429_retry_after":
            ms = self.faults.retry_after_ms
            headers += [("Retry-After", str(math.ceil(ms / 1000))), ("retry-after-ms", str(ms))]
        return _message(status, f"{HTTPStatus(status).phrase} (emulated fault {fault})", *headers)

    def _ingest(self, body: Any, fault: str | None) -> _Answer | None:
        """Validate, rate-limit and store one parsed ingest body; None means drop the connection."""
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        errors = self._validator.errors(body, now)
        if errors:
            return _message(400, _bracketed(errors))
        keep = self.faults.part_of(len(body)) if fault == "store_part_then_500" else len(body)
        processed_at = _iso(now)
        with self._lock:
            if self._bucket is not None and not self._bucket.take(len(body)):
                return _message(
                    429,
                    f"rate limit exceeded: this client may send {self._bucket.rate:g} events per second; back off and retry",
                    ("X-Metronome-Rate-Limit-Type", "client"),
                )
            for payload in body[:keep]:
                event = _StoredEvent(str(uuid.uuid4()), payload, processed_at)
                if payload["transaction_id"] in self._stored:
                    self._duplicates.append(event)
                else:
                    self._stored[payload["transaction_id"]] = event
        if fault == "store_part_then_500":
            return _message(500, f"Internal Server Error (emulated fault {fault}: {keep} of {len(body)} events were stored)")
        if fault == "store_all_then_drop":
            return None
        return _OK

    def _search(self, body: Any) -> _Answer:
        """Stored events for ``{"transactionIds": [...]}``: each first payload, then its ignored repeats."""
        ids = body.get("transactionIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _message(400, '[#/transactionIds: expected an object {"transactionIds": [<transaction_id>, ...]}]')
        wanted = dict.fromkeys(ids)
        with self._lock:
            found = [self._stored[i].as_search_result(False) for i in wanted if i in self._stored]
            found += [e.as_search_result(True) for e in self._duplicates if e.payload["transaction_id"] in wanted]
        return _Answer(200, json.dumps(found).encode())

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if request.events is not None:
                self._max_events = max(self._max_events, request.events)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop()`` can end idle keep-alive threads at once."""

    daemon_threads = True
    emulator: MetronomeEmulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Socket-level I/O for one connection; the decisions are the emulator's."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs add 40 ms per answer
    server: _Server
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is ``requests`` / ``GET /_emulator/state``, not stderr."""

    def do_GET(self) -> None:
        if self.path == "/_emulator/state":
            self._send(_Answer(200, json.dumps(self.server.emulator.state()).encode()))
        else:
            self._not_found()

    def do_POST(self) -> None:
        if self.path == "/v1/ingest":
            self._ingest()
        elif self.path == "/v1/events/search":
            self._search()
        else:
            self._not_found()

    def _ingest(self) -> None:
        emulator = self.server.emulator
        received = time.monotonic()
        refusal = emulator._authenticate(self.headers.get("Authorization"))
        fault = None if refusal else emulator.faults.draw()
        if fault == "reset_before_read":
            self._record(received, None, None, fault)
            self._reset()
            return
        body, trouble = self._receive()
        answer: _Answer | None
        if refusal:
            answer = refusal
        elif fault in _STATUS_FAULTS:
            answer = emulator._fault_answer(fault)  # a failing server answers whatever the body
        else:
            answer = trouble or emulator._ingest(body, fault)
        self._record(received, body, answer.status if answer else None, fault)
        if fault == "slow":
            emulator._stopping.wait(emulator.faults.slow_delay)
        if answer is None:
            self.close_connection = True  # stored everything, then the connection closes without an answer
        else:
            self._send(answer)

    def _search(self) -> None:
        emulator = self.server.emulator
        received = time.monotonic()
        refusal = emulator._authenticate(self.headers.get("Authorization"))
        body, trouble = self._receive()
        answer = refusal or trouble or emulator._search(body)
        emulator._record(self._recorded(received, None, answer.status, None))
        self._send(answer)

    def _not_found(self) -> None:
        self.close_connection = True  # the body, if any, is not read
        self._send(_message(404, f"no such endpoint: {self.command} {self.path}; the emulator serves POST /v1/ingest, "
                                 "POST /v1/events/search and GET /_emulator/state"))

    def _receive(self) -> tuple[Any, _Answer | None]:
        """The body's JSON value, and the 413 or 400 answer when there is none."""
        raw = self._read_body()
        if raw is None:
            limit = self.server.emulator.max_body_bytes
            return None, _message(413, f"the request body is larger than {limit} bytes: send fewer events per request")
        body, problem = _decode(raw, self.headers.get("Content-Encoding", ""))
        return body, _message(400, f"[{problem}]") if problem else None

    def _read_body(self) -> bytes | None:
        """The raw body (Content-Length or chunked), or None when it is over the size limit (left unread)."""
        limit = self.server.emulator.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        size_so_far = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: ignored
                return b"".join(parts)
            size_so_far += size
            if size_so_far > limit:
                self.close_connection = True
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0) at once, before the body is read."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()  # drops the last reference to the socket's file descriptor, so close() is the real one
        self.connection.close()

    def _send(self, answer: _Answer) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True  # the client gave up (e.g. timed out on a slow answer)

    def _recorded(self, received: float, body: Any, status: int | None, fault: str | None) -> RecordedRequest:
        return RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): (_mask(v) if k.lower() == "authorization" else v) for k, v in self.headers.items()},
            events=len(body) if isinstance(body, list) else None,
            status=status,
            fault=fault,
            body=body,
            received=received,
        )

    def _record(self, received: float, body: Any, status: int | None, fault: str | None) -> None:
        self.server.emulator._record(self._recorded(received, body, status, fault))


def _fault_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        return _checked(names, allow_none=False)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionmap emulator metronome",
        description="Serve a local stand-in for Metronome's ingest API until SIGINT or SIGTERM, "
        "then print a JSON summary of what it stored.",
    )
    parser.add_argument("--port", type=int, default=8089, help="port on 127.0.0.1 (0 picks a free one; default 8089)")
    parser.add_argument("--token", action="append", required=True, help="a valid API token (repeatable)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of ingest requests that get a random fault (0..1)")
    parser.add_argument("--faults", type=_fault_names, default=list(FAULT_KINDS),
                        help=f"comma-separated fault kinds to draw from (default: all of {','.join(FAULT_KINDS)})")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults, to repeat a run")
    parser.add_argument("--slow-delay", type=float, default=10.0, help="seconds the 'slow' fault waits before answering")
    parser.add_argument("--property-value-limit", type=int, default=None,
                        help="reject events with a property value longer than this many bytes as JSON")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="events per second before answering 429 (default: no limit)")
    return parser


Emulator = MetronomeEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator metronome``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = Faults(rate=args.fault_rate, kinds=args.faults, seed=args.seed, slow_delay=args.slow_delay)
        emulator = MetronomeEmulator(args.token, faults=faults, rate_limit=args.rate_limit,
                                     property_value_limit=args.property_value_limit)
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            print(emulator.start(port=args.port), flush=True)
        except OSError as error:
            print(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}; choose another --port", file=sys.stderr)
            return 1
        while not stop.wait(0.5):
            pass
        emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(emulator.summary(), sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
