"""The emulator base class: credentials, clock, faults, rate limit, lifecycle, the request log and a first-wins store.

A platform subclasses :class:`Emulator` and says only what is its own: the routes, the
error envelope, how it authenticates when not by Bearer token, and what it validates and
stores. Everything a delivery test reads back the same way on every platform lives here.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import traceback
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Callable, ClassVar, Iterable, Self

from engine.tools.emulator.faults import STATUS_FAULTS, Faults
from engine.tools.emulator.ratelimit import TokenBucket
from engine.tools.emulator.server import Handler, Server
from engine.tools.emulator.wire import BEARER, Answer, Call, Problem, RecordedRequest, Route, json_answer, mask


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Stored:
    """One accepted item: its key, the payload, an id the platform may show, when it was stored."""

    key: str
    payload: Any
    id: str
    at: datetime
    duplicate: bool


class Emulator:
    """A platform's API on loopback, with its state readable by tests (thread-safe) and at ``GET /_emulator/state``.

    ``tokens`` are the valid credentials; ``clock`` gives the current time (aware UTC) that
    timestamp windows are judged by; ``faults`` is a :class:`Faults` or a plain script of fault
    names; ``rate_limit`` is items per second (off when None), spent with :meth:`take`.
    """

    slug: ClassVar[str] = "emulator"
    name: ClassVar[str] = "the platform"
    """The platform's name in messages ("<your {name} {credential}>") and the command line's help."""
    default_port: ClassVar[int] = 8089
    rate_burst: ClassVar[int] = 100
    """The rate limit's bucket holds at least this many items: one full batch always fits."""
    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})
    """Lower-case header names masked in the request log."""
    credential: ClassVar[str] = "API token"
    """What the platform calls the Bearer credential, in messages ("<your {name} {credential}>")."""
    unknown_status: ClassVar[int] = 403
    """The answer to a well-formed credential that is not one of ``tokens`` (some platforms answer 401)."""

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        clock: Callable[[], datetime] = utc_now,
        faults: Faults | Iterable[str | None] | None = None,
        rate_limit: float | None = None,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.tokens = frozenset(tokens)
        if not self.tokens or not all(self.tokens):
            raise ValueError("the emulator needs at least one API token, and tokens must not be empty")
        self.clock = clock
        self.faults = faults if isinstance(faults, Faults) else Faults(faults or ())
        self.max_body_bytes = max_body_bytes
        self.rate_limit = rate_limit
        self.lock = threading.RLock()
        """Guards the request log, the store and the platform's own state; re-entrant, so a handler may hold it around calls."""
        self._bucket = TokenBucket(rate_limit, self.rate_burst) if rate_limit is not None else None
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._table: list[tuple[Route, re.Pattern[str]]] = []
        self.base_url = ""
        self.reset()

    # -- what a platform says ---------------------------------------------------

    def routes(self) -> list[Route]:
        """The platform's endpoints, tried in order."""
        return []

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        """The platform's error envelope; this default is ``{"message": text}``."""
        return json_answer(status, {"message": text}, *headers)

    def authenticate(self, call: Call) -> Answer | None:
        """None when the Bearer credential is valid; 401 when missing or malformed, ``unknown_status`` when unknown."""
        header = call.headers.get("authorization")
        expected = f"Bearer <your {self.name} {self.credential}>"
        if header is None:
            return self.error(401, f"missing Authorization header: send 'Authorization: {expected}'")
        m = BEARER.match(header)
        if m is None:
            return self.error(401, f"malformed Authorization header {mask(header)!r}: expected '{expected}'")
        if m.group(1) not in self.tokens:
            noun = self.credential.split()[-1]
            return self.error(self.unknown_status, f"the {self.credential} {mask(m.group(1))} is not valid: "
                                                   f"check the {noun} and its environment")
        return None

    def fault_answer(self, fault: str) -> Answer:
        """The answer to a status fault (``Retry-After`` and ``retry-after-ms`` for ``429_retry_after``)."""
        status = STATUS_FAULTS[fault]
        return self.error(status, f"{HTTPStatus(status).phrase} (emulated fault {fault})", *self.retry_headers(fault))

    def retry_headers(self, fault: str) -> tuple[tuple[str, str], ...]:
        if fault != "429_retry_after":
            return ()
        ms = self.faults.retry_after_ms
        return (("Retry-After", str(math.ceil(ms / 1000))), ("retry-after-ms", str(ms)))

    def count(self, call: Call, body: Any) -> int | None:
        """How many items a request carries, for the log; this default: the length of a JSON array body."""
        return len(body) if isinstance(body, list) else None

    def not_found(self, method: str, target: str) -> Answer:
        listed = [route.shown for route in self.routes()] + ["GET /_emulator/state"]
        served = ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]
        return self.error(404, f"no such endpoint: {method} {target}; the emulator serves {served}")

    def clear(self) -> None:
        """Forget the platform's own state (called by :meth:`reset`, also from ``__init__``)."""

    def more_state(self) -> dict[str, Any]:
        """The platform's additions to :meth:`state` (called with the lock held)."""
        return {}

    def more_summary(self) -> dict[str, Any]:
        """The platform's additions to :meth:`summary` (called with the lock held)."""
        return {}

    # -- helpers for handlers -----------------------------------------------------

    def now(self) -> datetime:
        """The injected clock's time, aware (a naive one is taken as UTC)."""
        now = self.clock()
        return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now

    def take(self, count: int) -> bool:
        """Spend ``count`` items of the rate limit; False means answer 429. Always True without a limit."""
        with self.lock:
            return self._bucket is None or self._bucket.take(count)

    def store(self, key: str, payload: Any, at: datetime | None = None) -> Stored:
        """Keep ``payload`` under ``key``, first accepted wins; a repeat is kept apart as a duplicate."""
        with self.lock:
            item = Stored(key, payload, str(uuid.uuid4()), at or self.now(), key in self._stored)
            if item.duplicate:
                self._duplicates.append(item)
            else:
                self._stored[key] = item
            return item

    def first(self, key: str) -> Stored | None:
        """The item stored under ``key``, if any."""
        with self.lock:
            return self._stored.get(key)

    def repeats(self) -> list[Stored]:
        """The duplicates, in arrival order."""
        with self.lock:
            return list(self._duplicates)

    # -- lifecycle -----------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; the base URL (``http://host:port``, port 0 picks a free one)."""
        if self._server is not None:
            raise RuntimeError(f"the emulator is already serving at {self.base_url}")
        self._table = [(route, re.compile(route.path)) for route in self.routes()]
        self._stopping.clear()
        server = Server((host, port), Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                                        name=f"{self.slug}-emulator")
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

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- read-back -----------------------------------------------------------

    def reset(self) -> None:
        """Forget every request and stored item and refill the rate limit; the fault plan is kept."""
        with self.lock:
            self._requests: list[RecordedRequest] = []
            self._stored: dict[str, Stored] = {}
            self._duplicates: list[Stored] = []
            self._max_events = 0
            if self._bucket is not None:
                self._bucket.refill()
            self.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every routed request received (not ``/_emulator/*``, not unknown paths), in arrival order."""
        with self.lock:
            return list(self._requests)

    @property
    def stored(self) -> dict[str, Any]:
        """key -> the first accepted payload, in first-accepted order."""
        with self.lock:
            return {key: item.payload for key, item in self._stored.items()}

    @property
    def duplicates(self) -> int:
        """How many items were ignored because their key was already stored."""
        with self.lock:
            return len(self._duplicates)

    @property
    def max_events_in_a_request(self) -> int:
        """The most items any request carried (rejected ones included), by :meth:`count`."""
        with self.lock:
            return self._max_events

    def state(self) -> dict[str, Any]:
        """All of the read-back as one JSON-ready document (what ``GET /_emulator/state`` answers)."""
        with self.lock:
            return {
                "requests": [asdict(r) for r in self._requests],
                "stored": {key: item.payload for key, item in self._stored.items()},
                "duplicates": len(self._duplicates),
                "max_events_in_a_request": self._max_events,
                **self.more_state(),
            }

    def summary(self) -> dict[str, Any]:
        """Counts of what happened, for the command line's last line."""
        with self.lock:
            return {
                "requests": len(self._requests),
                "statuses": dict(Counter(str(r.status) if r.status else "no answer" for r in self._requests)),
                "faults": dict(Counter(r.fault for r in self._requests if r.fault)),
                "stored": len(self._stored),
                "duplicates": len(self._duplicates),
                "max_events_in_a_request": self._max_events,
                **self.more_summary(),
            }

    # -- called by the request threads ----------------------------------------------

    def _route(self, method: str, path: str) -> tuple[Route, re.Match[str]] | None:
        for route, pattern in self._table:
            if route.method == method and (m := pattern.fullmatch(path)) is not None:
                return route, m
        return None

    def _dispatch(self, route: Route, call: Call, fault: str | None, match: re.Match[str]) -> Answer | None:
        """The route's answer; a :class:`Problem` becomes the platform's error, a crash a 500 (traceback on stderr)."""
        try:
            return route.handle(call, fault, match)
        except Problem as problem:
            return self.error(problem.status, problem.text)
        except Exception as crash:  # a bug in the emulator must not look like a dropped connection
            traceback.print_exc(file=sys.stderr)
            return self.error(500, f"the emulator failed: {type(crash).__name__}: {crash}")

    def _record(self, call: Call, status: int | None, fault: str | None, received: float, read: bool = True) -> None:
        body = call.parsed() if read else None
        request = RecordedRequest(
            method=call.method,
            path=call.path,
            query=call.query,
            headers={k: (mask(v) if k in self.secret_headers else v) for k, v in call.headers.items()},
            events=self.count(call, body) if read else None,
            status=status,
            fault=fault,
            body=body,
            received=received,
        )
        with self.lock:
            self._requests.append(request)
            if request.events is not None:
                self._max_events = max(self._max_events, request.events)
