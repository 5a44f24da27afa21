"""Shared test helpers: the repository's paths and running the CLI in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
