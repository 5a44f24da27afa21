"""A local stand-in for Metronome's ingest API, for delivery tests and the quick start.

It behaves as ``reference/metronome-ingest.md`` describes: auth before the body,
whole-request 400s, the timestamp window by an injectable clock, deduplication by
``transaction_id`` (first accepted payload wins), an optional rate limit, and the
faults a sender must survive, scripted or drawn at random.

The pieces, one module each: ``faults`` (what goes wrong, and when), ``rules``
(what Metronome accepts), ``connection`` (the sockets); this module holds the
state, the decisions and the command line, and is the entry point: ``actionmap``
loads this file by path (``engine.config.definitions.load_emulator``), as a module
outside its package, so its sibling modules are imported by absolute name
(``destinations.metronome`` is importable wherever the plugin was found).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Callable, Iterable, Sequence

from destinations.metronome.connection import BEARER, OK, Answer, Handler, RecordedRequest, Server, mask, message
from destinations.metronome.faults import FAULT_KINDS, STATUS_FAULTS, Faults, checked_fault_names
from destinations.metronome.rules import TokenBucket, Validator, bracketed, iso

__all__ = [
    "FAULT_KINDS",
    "Emulator",
    "Faults",
    "MetronomeEmulator",
    "RecordedRequest",
    "main",
]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


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
        self._validator = Validator(property_value_limit)
        self._bucket = TokenBucket(rate_limit) if rate_limit is not None else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.reset()

    # -- lifecycle -----------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; the base URL (``http://host:port``, port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError(f"the emulator is already serving at {self.base_url}")
        self._stopping.clear()
        server = Server((host, port), Handler)
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

    def _authenticate(self, header: str | None) -> Answer | None:
        """401 for a missing or malformed header, 403 for an unknown token, None when it is valid."""
        if header is None:
            return message(401, "missing Authorization header: send 'Authorization: Bearer <your Metronome API token>'")
        m = BEARER.match(header)
        if m is None:
            return message(401, f"malformed Authorization header {mask(header)!r}: "
                                 "expected 'Bearer <your Metronome API token>'")
        if m.group(1) not in self.tokens:
            return message(403, f"the API token {mask(m.group(1))} is not valid: check the token and its environment")
        return None

    def _fault_answer(self, fault: str) -> Answer:
        status = STATUS_FAULTS[fault]
        headers: list[tuple[str, str]] = []
        if status == 429:
            headers.append(("X-Metronome-Rate-Limit-Type", "client"))
        if fault == "429_retry_after":
            ms = self.faults.retry_after_ms
            headers += [("Retry-After", str(math.ceil(ms / 1000))), ("retry-after-ms", str(ms))]
        return message(status, f"{HTTPStatus(status).phrase} (emulated fault {fault})", *headers)

    def _ingest(self, body: Any, fault: str | None) -> Answer | None:
        """Validate, rate-limit and store one parsed ingest body; None means drop the connection."""
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        errors = self._validator.errors(body, now)
        if errors:
            return message(400, bracketed(errors))
        keep = self.faults.part_of(len(body)) if fault == "store_part_then_500" else len(body)
        processed_at = iso(now)
        with self._lock:
            if self._bucket is not None and not self._bucket.take(len(body)):
                return message(
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
            return message(500, f"Internal Server Error (emulated fault {fault}: {keep} of {len(body)} events were stored)")
        if fault == "store_all_then_drop":
            return None
        return OK

    def _search(self, body: Any) -> Answer:
        """Stored events for ``{"transactionIds": [...]}``: each first payload, then its ignored repeats."""
        ids = body.get("transactionIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return message(400, '[#/transactionIds: expected an object {"transactionIds": [<transaction_id>, ...]}]')
        wanted = dict.fromkeys(ids)
        with self._lock:
            found = [self._stored[i].as_search_result(False) for i in wanted if i in self._stored]
            found += [e.as_search_result(True) for e in self._duplicates if e.payload["transaction_id"] in wanted]
        return Answer(200, json.dumps(found).encode())

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if request.events is not None:
                self._max_events = max(self._max_events, request.events)


def _fault_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        return checked_fault_names(names, allow_none=False)
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
