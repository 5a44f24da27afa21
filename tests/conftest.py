"""Shared test helpers: the repository's paths, running the CLI in-process, emulators, track events and their payloads."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

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
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``actionmap ARGS`` in this process; the Metronome token is set unless a test unsets it."""
    from engine.cli import main

    monkeypatch.setenv("METRONOME_API_TOKEN", "test-token-not-secret-4242")

    def run(*args: str) -> Run:
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def emulators() -> Iterator[Callable[..., Any]]:
    """Start Metronome emulators on free loopback ports (``MetronomeEmulator`` options) and stop them all afterwards."""
    from destinations.metronome.emulator import MetronomeEmulator

    started: list[MetronomeEmulator] = []

    def make(**options: Any) -> MetronomeEmulator:
        emulator = MetronomeEmulator(**options)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


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
