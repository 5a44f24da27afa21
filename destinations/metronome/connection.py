"""The Metronome emulator's HTTP side: one thread per connection reading requests and sending answers.

It is built on the standard library's ``http.server`` on purpose: the faults need
socket-level control that a framework hides (store the batch and then close the
connection without answering; reset the connection with RST before reading the body).
Each connection is served by its own thread, with HTTP/1.1 keep-alive. Its own module
so that the socket-level I/O stays apart from the decisions, which are the emulator's.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

from destinations.metronome.faults import STATUS_FAULTS
from destinations.metronome.rules import decode

if TYPE_CHECKING:
    from destinations.metronome.emulator import MetronomeEmulator

BEARER: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+) *\Z")


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
class Answer:
    """A response to send: status, JSON body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def message(status: int, text: str, *headers: tuple[str, str]) -> Answer:
    return Answer(status, json.dumps({"message": text}).encode(), headers)


OK: Final = Answer(200, b"{}")


def mask(value: str) -> str:
    """A credential as it may be shown: the scheme and at most the last 4 characters (none of a short one)."""
    m = BEARER.match(value)
    scheme, secret = ("Bearer ", m.group(1)) if m else ("", value)
    return scheme + ("***" + secret[-4:] if len(secret) >= 8 else "***")


class Server(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
    """Socket-level I/O for one connection; the decisions are the emulator's."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs add 40 ms per answer
    server: Server
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is ``requests`` / ``GET /_emulator/state``, not stderr."""

    def do_GET(self) -> None:
        if self.path == "/_emulator/state":
            self._send(Answer(200, json.dumps(self.server.emulator.state()).encode()))
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
        answer: Answer | None
        if refusal:
            answer = refusal
        elif fault in STATUS_FAULTS:
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
        self._send(message(404, f"no such endpoint: {self.command} {self.path}; the emulator serves POST /v1/ingest, "
                                 "POST /v1/events/search and GET /_emulator/state"))

    def _receive(self) -> tuple[Any, Answer | None]:
        """The body's JSON value, and the 413 or 400 answer when there is none."""
        raw = self._read_body()
        if raw is None:
            limit = self.server.emulator.max_body_bytes
            return None, message(413, f"the request body is larger than {limit} bytes: send fewer events per request")
        body, problem = decode(raw, self.headers.get("Content-Encoding", ""))
        return body, message(400, f"[{problem}]") if problem else None

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

    def _send(self, answer: Answer) -> None:
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
            headers={k.lower(): (mask(v) if k.lower() == "authorization" else v) for k, v in self.headers.items()},
            events=len(body) if isinstance(body, list) else None,
            status=status,
            fault=fault,
            body=body,
            received=received,
        )

    def _record(self, received: float, body: Any, status: int | None, fault: str | None) -> None:
        self.server.emulator._record(self._recorded(received, body, status, fault))
