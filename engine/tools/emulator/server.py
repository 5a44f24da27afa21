"""The emulators' HTTP side: one thread per connection reading requests and sending answers.

It is built on the standard library's ``http.server`` on purpose: the faults need
socket-level control that a framework hides (store the batch and then close the
connection without answering; reset the connection with RST before reading the body).
Each connection is served by its own thread, with HTTP/1.1 keep-alive. The decisions
(which route, what answer) are the emulator's; this module only moves bytes.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from engine.tools.emulator.faults import STATUS_FAULTS
from engine.tools.emulator.wire import Answer, Call, Headers, Problem, decompress, json_answer

if TYPE_CHECKING:
    from engine.tools.emulator.base import Emulator


class Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop()`` can end idle keep-alive threads at once."""

    daemon_threads = True
    emulator: Emulator

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
    """Socket-level I/O for one connection, in the order a real API works: route, credential, fault, body, answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, delayed ACKs add 40 ms per answer
    server: Server
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request log is ``requests`` / ``GET /_emulator/state``, not stderr."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        emulator = self.server.emulator
        received = time.monotonic()
        target = urlsplit(self.path)
        bare = Call(self.command, target.path, parse_qs(target.query, keep_blank_values=True),
                    Headers(self.headers.items()))
        if self.command == "GET" and target.path == "/_emulator/state":
            self._send(json_answer(200, emulator.state()))
            return
        found = emulator._route(self.command, target.path)
        if found is None:
            self.close_connection = True  # the body, if any, is not read
            self._send(emulator.not_found(self.command, self.path))
            return
        route, match = found
        refusal = emulator.authenticate(bare) if route.authenticated else None
        fault = emulator.faults.draw() if route.ingest and refusal is None else None
        if fault == "reset_before_read":
            emulator._record(bare, None, fault, received, read=False)
            self._reset()
            return
        call, trouble = self._receive(bare)
        answer: Answer | None
        if refusal is not None:
            answer = refusal
        elif fault in STATUS_FAULTS:
            answer = emulator.fault_answer(fault)  # a failing server answers whatever the body
        else:
            answer = trouble or emulator._dispatch(route, call, fault, match)
        emulator._record(call, answer.status if answer else None, fault, received, read=trouble is None)
        if fault == "slow":
            emulator._stopping.wait(emulator.faults.slow_delay)
        if answer is None:
            self.close_connection = True  # stored everything, then the connection closes without an answer
        else:
            self._send(answer)

    def _receive(self, bare: Call) -> tuple[Call, Answer | None]:
        """The call with its body decompressed, or the bare call and the 413 or 400 answer."""
        emulator = self.server.emulator
        raw = self._read_body(emulator.max_body_bytes)
        if raw is None:
            return bare, emulator.error(
                413, f"the request body is larger than {emulator.max_body_bytes} bytes: send fewer events per request")
        try:
            return replace(bare, raw=decompress(raw, self.headers.get("Content-Encoding", ""))), None
        except Problem as problem:
            return bare, emulator.error(problem.status, problem.text)

    def _read_body(self, limit: int) -> bytes | None:
        """The raw body (Content-Length or chunked), or None when it is over the size limit (left unread)."""
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
            if answer.content_type is not None:
                self.send_header("Content-Type", answer.content_type)
            if answer.status >= 200 and answer.status not in (204, 304):
                self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if answer.status not in (204, 304):
                self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True  # the client gave up (e.g. timed out on a slow answer)
