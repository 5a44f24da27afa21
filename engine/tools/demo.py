"""``actionmap demo``: the main job end to end on embedded defaults.

Starts the Metronome emulator on a free loopback port, sends the example events
through the default mapping, prints the summary, then sends them all again to show
that a re-run bills nothing twice. The examples carry fixed dates; Metronome only
accepts the last 34 days, so the demo moves their timestamps by whole days to
today (times of day unchanged) and says so.
"""

from __future__ import annotations

import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from engine.config.definitions import load_emulator
from engine.config.mappingfile import load_mapping_file
from engine.events import Event, Item, open_input, read_events
from engine.resources import data_path
from engine.runtime.send import Summary, send_events


def _moved_to_today(items: list[Item], today: datetime) -> list[Item]:
    stamps = [
        datetime.fromisoformat(i.value["timestamp"])
        for i in items
        if isinstance(i, Event) and isinstance(i.value, dict) and isinstance(i.value.get("timestamp"), str)
    ]
    if not stamps:
        return items
    shift = today.date() - max(stamps).astimezone(timezone.utc).date()
    moved: list[Item] = []
    for item in items:
        if isinstance(item, Event) and isinstance(item.value, dict) and isinstance(item.value.get("timestamp"), str):
            event: dict[str, Any] = dict(item.value)
            when = datetime.fromisoformat(event["timestamp"]) + shift
            event["timestamp"] = min(when, today).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
            item = Event(item.position, item.line, event)
        moved.append(item)
    return moved


def _send(mapping_path: Path, url: str, token: str, items: list[Item]) -> Summary:
    mapping = load_mapping_file(mapping_path, env={"METRONOME_API_TOKEN": token}, overrides={"base_url": url})
    return send_events(mapping, items)


def say(text: str) -> None:
    """Narration goes to stderr; the summaries on stdout stay machine-readable."""
    print(text, file=sys.stderr)


def run_demo(events: str | None = None, mapping: str | None = None) -> int:
    mapping_path = Path(mapping) if mapping else data_path("mappings") / "metronome.yaml"
    events_path = events or str(data_path("examples") / "track.ndjson")
    with open_input(events_path) as stream:
        items = list(read_events(stream))
    now = datetime.now(timezone.utc)
    items = _moved_to_today(items, now)
    token = "demo-" + secrets.token_hex(12)
    with load_emulator("metronome").Emulator({token}) as emulator:
        say(f"Metronome emulator on {emulator.base_url}")
        say(f"sending {len(items)} example events from {events_path} through {mapping_path}")
        say("(example timestamps moved by whole days to today, inside Metronome's 34-day window)")
        first = _send(mapping_path, emulator.base_url, token, items)
        print(first.line())
        stored = len(emulator.stored)
        say(f"emulator stored {stored} usage events in {first.requests} requests")
        say("sending the same events again: transaction ids are stable, so nothing is billed twice")
        second = _send(mapping_path, emulator.base_url, token, items)
        print(second.line())
        again = len(emulator.stored)
        report = {"stored": again, "duplicates_ignored": emulator.duplicates, "max_events_in_a_request": emulator.max_events_in_a_request}
        print(orjson.dumps({"emulator": report}).decode())
    ok = stored == first.delivered and again == stored and not first.invalid and not first.dead_lettered
    say("demo ok: every delivered event stored exactly once" if ok else "demo FAILED: stored and delivered counts disagree")
    return 0 if ok else 1

