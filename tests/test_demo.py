"""The README's first command: `actionmap demo` delivers the examples once, and a re-run bills nothing twice."""

from __future__ import annotations

import json

from tests.conftest import REPO


def test_demo_runs_the_main_job_end_to_end(cli) -> None:
    run = cli("demo")
    assert run.code == 0, run.err
    first, second, emulator = (json.loads(line) for line in run.out.strip().splitlines())
    examples = (REPO / "examples" / "track.ndjson").read_text().splitlines()
    tracks = sum(1 for line in examples if json.loads(line)["type"] == "track")
    counts = {"events": len(examples), "delivered": tracks, "filtered": len(examples) - tracks,
              "invalid": 0, "dead_lettered": 0, "kept": 0, "requests": 1}
    assert first == {**counts, "connections": {"metronome": counts}}
    assert second == first
    assert emulator["emulator"] == {"stored": tracks, "duplicates_ignored": tracks, "max_events_in_a_request": tracks}
    assert "demo ok" in run.err
