"""Shared test helpers: the repository's paths, running the CLI in-process, emulators, track events and their payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import pytest

if TYPE_CHECKING:
    from destinations.metronome.emulator import MetronomeEmulator
    from engine.tools.emulator import Emulator
    from tests.test_serve import Service

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

USAGE_EVENTS = """destination: metronome
settings:
  api_token: ${METRONOME_API_TOKEN}
subscriptions:
  - name: Usage events
    action: send_event
"""
"""A Metronome mapping file's head: one subscription, its mapping (if any) indented below it."""


@dataclass
class Run:
    """One in-process run of ``actionmap``: its exit status and what it printed."""

    code: int
    out: str
    err: str

    @property
    def summary(self) -> dict[str, int]:
        """The totals of the last line (the per-connection counts, ``connections``, left out)."""
        totals: dict[str, int] = orjson.loads(self.out.strip().splitlines()[-1])
        totals.pop("connections", None)
        return totals


def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str],
               secrets: Iterable[str] = ()) -> Callable[..., Run]:
    """``run(*args)``: ``actionmap ARGS`` (strings or paths) in this process with ``env`` set.

    No secret may appear in what it prints.
    """
    from engine.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    hidden = tuple(secrets)

    def run(*args: str | Path) -> Run:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        for secret in hidden:
            assert secret not in captured.out and secret not in captured.err, "a secret leaked into the output"
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """Run ``actionmap ARGS`` in this process; the Metronome token is set unless a test unsets it."""
    return in_process(capsys, monkeypatch, {"METRONOME_API_TOKEN": "test-token-not-secret-4242"})


DEAD = "dead.ndjson"
"""The dead-letter file a :func:`sender` run writes, in the test's ``tmp_path``."""


def write_ndjson(path: Path, events: Iterable[Mapping[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def read_dead_letters(path: Path, secrets: Iterable[str]) -> list[dict[str, Any]]:
    """The records of a dead-letter file (none when it was never written); the file must hold none of ``secrets``."""
    if not path.exists():
        return []
    text = path.read_text()
    for secret in secrets:
        assert secret not in text, "a secret leaked into a dead-letter file"
    return [orjson.loads(line) for line in text.splitlines()]


def sender(run: Callable[..., Run], tmp_path: Path, mapping: Path, *fixed: str) -> Callable[..., Run]:
    """``send(emulator, events, *options)``: ``actionmap send`` of ``events`` through ``run`` to an emulator.

    The events are written to ``tmp_path / "events.ndjson"`` and the dead letters to
    ``tmp_path / DEAD``; ``--set base_url=`` names the emulator's. The ``fixed`` options go
    before each call's own, and a call may name another mapping file (``mapping=``).
    """

    def send(emulator: Emulator, events: Iterable[Mapping[str, Any]], *options: str, mapping: Path = mapping) -> Run:
        path = write_ndjson(tmp_path / "events.ndjson", events)
        return run("send", "-m", mapping, path, "--set", f"base_url={emulator.base_url}",
                   "--dead-letter", tmp_path / DEAD, *fixed, *options)

    return send


E = TypeVar("E", bound="Emulator")


def started(cls: Callable[..., E], tokens: Iterable[str] | None = None,
            secrets: Iterable[str] = ()) -> Iterator[Callable[..., E]]:
    """An emulator fixture's body (``yield from started(...)``): ``make(**options)`` starts ``cls(**options)``.

    Each serves on a free loopback port; ``tokens`` are its credentials unless the options
    name theirs. After the test every emulator made is stopped, then its state (the request
    log too) must hold none of ``secrets``.
    """
    running: list[E] = []
    hidden = tuple(secrets)

    def make(**options: Any) -> E:
        if tokens is not None:
            options.setdefault("tokens", tokens)
        emulator = cls(**options)
        emulator.start()
        running.append(emulator)
        return emulator

    yield make
    for emulator in running:
        emulator.stop()
    for emulator in running:
        log = json.dumps(emulator.state()) if hidden else ""
        assert all(secret not in log for secret in hidden), "a secret leaked into the emulator's log"


@pytest.fixture
def emulators() -> Iterator[Callable[..., MetronomeEmulator]]:
    """Start Metronome emulators on free loopback ports (``MetronomeEmulator`` options) and stop them all afterwards."""
    from destinations.metronome.emulator import MetronomeEmulator

    yield from started(MetronomeEmulator)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """The ``actionmap serve`` processes a test appends here; every one still running at its end is stopped."""
    made: list[Service] = []
    yield made
    for one in made:
        one.stop()


# -- events and the payloads they must become ---------------------------------------


def utc_ms(instant: datetime) -> str:
    """Metronome's timestamp as actionmap sends it: UTC, milliseconds (truncated), Z."""
    utc = instant.astimezone(timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def track_events(count: int, seed: int = 0, prefix: str = "m") -> list[dict[str, Any]]:
    """Track events timestamped within the last day, in assorted offsets."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    zones = [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    return [
        {
            "type": "track",
            "messageId": f"{prefix}-{i}",
            "userId": f"user-{rng.randrange(50)}",
            "event": rng.choice(["api_call", "tokens_used", "page_render"]),
            "timestamp": (now - timedelta(seconds=rng.uniform(120, 86_000))).astimezone(rng.choice(zones)).isoformat(),
            "properties": {"n": str(i), "region": rng.choice(["eu", "us"])},
        }
        for i in range(count)
    ]


def expected_payload(event: dict[str, Any]) -> dict[str, Any]:
    """What the default mapping makes of one of these events (a plain reference, not the engine)."""
    return {
        "transaction_id": event["messageId"],
        "customer_id": event["userId"],
        "timestamp": utc_ms(datetime.fromisoformat(event["timestamp"])),
        "event_type": event["event"],
        "properties": event["properties"],
    }


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a webhook's receiving side -----------------------------------------------------


WEBHOOK_SECRET = "whsec-test-8c1f"
"""The signing secret of the webhook receivers: a request not signed with it is marked unsigned."""
WEBHOOK_KEY = "key-test-77aa"


@dataclass
class Receiver:
    """What a webhook's receiving side saw; ``fail_first`` answers 503 that many times; events with bad=true get 400."""

    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def items(self) -> list[dict[str, Any]]:
        """Every event it accepted (answered 200), in order."""
        with self.lock:
            bodies = [r["body"] for r in self.received if r["status"] == 200]
        return [item for body in bodies for item in (body if isinstance(body, list) else [body])]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(self.headers.get("X-Signature-SHA256", ""), expected)
        with receiver.lock:
            record = {"method": self.command, "body": json.loads(body), "signed": signed,
                      "key": self.headers.get("X-Api-Key"), "content_type": self.headers.get("Content-Type"),
                      "user_agent": self.headers.get("User-Agent")}
            if receiver.fail_first > 0:
                receiver.fail_first -= 1
                status = 503
            else:
                items = record["body"] if isinstance(record["body"], list) else [record["body"]]
                status = 400 if any(item.get("bad") for item in items) else 200
            record["status"] = status
            receiver.received.append(record)
        answer = b'{"message": "bad event in the batch"}' if status == 400 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = do_PATCH = _handle


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"  # type: ignore[attr-defined]
    yield server.receiver  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()
