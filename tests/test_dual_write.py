"""A dual-write during a migration (issue 15): one ``serve`` feeding Metronome and Orb, two connections of one intake.

Every event must be stored once at each, whatever one of them does: the bulkhead test takes Orb down (every
ingest answered 503) and shows Metronome holds every event while Orb holds none, then lets Orb recover and
shows each event stored there exactly once. Order, not a stopwatch, shows "regardless".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from destinations.metronome.emulator import MetronomeEmulator
from destinations.orb.emulator import OrbEmulator
from engine.tools.emulator import Faults
from tests.conftest import expected_payload, track_events
from tests.test_connections import TOKEN, by_connection, environment, eventually, health, metronome_file, post_all, serving
from tests.test_serve import Service

ORB_KEY = "orb-dual-write-key-" + "3" * 12
EVENTS = 2_000


@pytest.fixture
def orb() -> Iterator[OrbEmulator]:
    with OrbEmulator({ORB_KEY}, grace_period=timedelta(days=40)) as emulator:
        yield emulator


@pytest.fixture
def metronome(emulators: Any) -> MetronomeEmulator:
    emulator: MetronomeEmulator = emulators(tokens={TOKEN})
    return emulator


def orb_file(folder: Path, emulator: OrbEmulator) -> Path:
    path = folder / "orb.yaml"
    path.write_text(f"destination: orb\nsettings:\n  api_key: ${{ORB_API_KEY}}\n  base_url: {emulator.base_url}\n"
                    "subscriptions:\n  - name: Usage events\n    action: send_event\n", encoding="utf-8")
    return path


def orb_payload(event: dict[str, Any]) -> dict[str, Any]:
    """What Orb must hold for a track event: Metronome's payload under Orb's names."""
    sent = expected_payload(event)
    return {"idempotency_key": sent["transaction_id"], "external_customer_id": sent["customer_id"],
            "event_name": sent["event_type"], "timestamp": sent["timestamp"], "properties": sent.get("properties", {})}


def dual(tmp_path: Path, metronome: MetronomeEmulator, orb: OrbEmulator, services: list[Service]) -> Service:
    running = serving(tmp_path, metronome_file(tmp_path, metronome), orb_file(tmp_path, orb),
                      env=environment(ORB_API_KEY=ORB_KEY))
    services.append(running)
    return running


def test_serve_dual_writes_every_event_once_to_metronome_and_to_orb(
        tmp_path: Path, metronome: MetronomeEmulator, orb: OrbEmulator, services: list[Service]) -> None:
    events = track_events(EVENTS, seed=151, prefix="dual")
    running = dual(tmp_path, metronome, orb, services)
    post_all(running, events)
    eventually(lambda: all(m["actionmap_queue_depth"] == 0 for m in by_connection(running).values()), "both lanes drained")
    assert metronome.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert orb.stored == {e["messageId"]: orb_payload(e) for e in events}
    assert metronome.duplicates == orb.duplicates == 0
    metrics = by_connection(running)
    for name in ("metronome", "orb"):
        assert metrics[name]["actionmap_events_delivered_total"] == EVENTS
    assert running.terminate() == 0
    assert ORB_KEY not in running.log.read_text() and TOKEN not in running.log.read_text()


def test_serve_dual_write_with_orb_down_keeps_metronome_flowing_and_orb_catches_up(
        tmp_path: Path, metronome: MetronomeEmulator, orb: OrbEmulator, services: list[Service]) -> None:
    orb.faults = Faults(rate=1.0, kinds=["503"])
    events = track_events(EVENTS, seed=152, prefix="dual-down")
    running = dual(tmp_path, metronome, orb, services)
    post_all(running, events)
    eventually(lambda: metronome.stored.keys() == {e["messageId"] for e in events}, "every event reached Metronome")
    assert orb.stored == {}, "Orb was down all along"
    metrics = by_connection(running)
    assert metrics["metronome"]["actionmap_queue_depth"] == 0 and metrics["orb"]["actionmap_queue_depth"] == EVENTS
    assert health(running)[0] == 200, "a destination that is down does not make the intake unhealthy"
    orb.faults = Faults()  # Orb recovers
    eventually(lambda: by_connection(running)["orb"]["actionmap_queue_depth"] == 0, "Orb's lane drained")
    assert orb.stored == {e["messageId"]: orb_payload(e) for e in events}
    assert metronome.stored == {e["messageId"]: expected_payload(e) for e in events} and metronome.duplicates == 0
    assert running.terminate() == 0
