"""CPU per delivered event, end to end from an NDJSON file to the Metronome emulator.

    .venv/bin/python benchmarks/send.py [--events N] [--repeat N]

The emulator runs in its own process, so only the sending process's CPU
(``time.process_time``) is counted. Contenders, on the same generated file:

- *engine*: what ``actionmap send`` does (read and parse the file, integrations,
  trigger, mapping, field checks, window check, batches of 100, orjson, httpx, retry
  handling), through the library API, unpaced;
- *floor*: a plain httpx loop posting the same batches of 100, built and serialised
  before the clock starts (the cost of delivery alone, as issue 5 defines it);
- *hand-written*: the same work as the engine written by hand (read, orjson, the
  hand-written payload function, batches, httpx), for context.

Before timing, a dry run of the engine must give exactly the floor's batches.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson

from common import (TOKEN, Row, arguments, default_build, default_triggered, emulator, hand_written,
    iter_events, load, machine, profile, print_table, verdict, write_ndjson)
from engine.delivery.deadletters import DeadLetterFile
from engine.delivery import Sender
from engine.delivery.batcher import Batcher
from engine.events import open_input, read_events
from engine.runtime.send import deliver

TARGET = 1.5
BATCH = 100
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}


def engine_send(path: Path, url: str, dry_run: io.BytesIO | None = None) -> tuple[float, int]:
    """CPU seconds and events delivered by the engine for one pass over ``path``."""
    mapping = load(base_url=url)
    sender = Sender(mapping)
    try:
        with DeadLetterFile(None, mapping.settings) as dead:
            batcher = Batcher(mapping, sender, dry_run=dry_run)
            start = time.process_time()
            with open_input(str(path)) as stream:
                summary = deliver([batcher], dead, items=read_events(stream))
            return time.process_time() - start, summary.kept if dry_run is not None else summary.delivered
    finally:
        sender.close()


def poster(client: httpx.Client, url: str) -> Callable[[bytes], None]:
    """Post one batch body; anything but 200 ends the benchmark (the floor has no retries)."""
    ingest = url + "/v1/ingest"

    def post(body: bytes) -> None:
        response = client.post(ingest, content=body, headers=HEADERS)
        if response.status_code != 200:
            sys.exit(f"the emulator answered {response.status_code}: {response.text}")

    return post


def floor_send(bodies: list[bytes], url: str) -> float:
    """CPU seconds to post pre-built batch bodies."""
    with httpx.Client(timeout=30.0) as client:
        post = poster(client, url)
        start = time.process_time()
        for body in bodies:
            post(body)
        return time.process_time() - start


def hand_written_send(path: Path, url: str) -> tuple[float, int]:
    """CPU seconds and events delivered by a hand-written reader, mapper and batcher."""
    floor = hand_written(default_triggered, default_build)
    delivered = 0
    with httpx.Client(timeout=30.0) as client, path.open("rb") as lines:
        post = poster(client, url)
        start = time.process_time()
        batch: list[Any] = []
        for line in lines:
            payload = floor(orjson.loads(line))
            if type(payload) is dict:
                batch.append(payload)
                if len(batch) == BATCH:
                    post(orjson.dumps(batch))
                    delivered, batch = delivered + BATCH, []
        if batch:
            post(orjson.dumps(batch))
            delivered += len(batch)
        return time.process_time() - start, delivered


def prebuilt_batches(path: Path) -> list[bytes]:
    floor = hand_written(default_triggered, default_build)
    with path.open("rb") as lines:
        payloads = [p for p in map(floor, map(orjson.loads, lines)) if type(p) is dict]
    return [orjson.dumps(payloads[start : start + BATCH]) for start in range(0, len(payloads), BATCH)]


def check_batches(path: Path, url: str, bodies: list[bytes]) -> None:
    """The engine's dry run must hold exactly the floor's batches, in order, for the same URL."""
    printed = io.BytesIO()
    engine_send(path, url, dry_run=printed)
    requests = [orjson.loads(line) for line in printed.getvalue().splitlines()]
    if [r["url"] for r in requests] != [url + "/v1/ingest"] * len(bodies):
        sys.exit(f"send: the engine's requests go elsewhere or are not {len(bodies)}: {[r['url'] for r in requests][:3]}")
    for index, (request, body) in enumerate(zip(requests, bodies)):
        if request["body"] != orjson.loads(body):
            sys.exit(f"send: batch {index} differs between the engine and the floor")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], events=20_000, repeat=3).parse_args()
    with tempfile.TemporaryDirectory() as folder, emulator() as url:
        path = Path(folder) / "events.ndjson"
        size = write_ndjson(path, iter_events(args.events))
        bodies = prebuilt_batches(path)
        check_batches(path, url, bodies)
        expected = sum(len(orjson.loads(body)) for body in bodies)
        engine_cpu = floor_cpu = written_cpu = float("inf")
        for _ in range(args.repeat):
            cpu, delivered = engine_send(path, url)
            assert delivered == expected, f"the engine delivered {delivered} of {expected} events"
            engine_cpu = min(engine_cpu, cpu)
            floor_cpu = min(floor_cpu, floor_send(bodies, url))
            cpu, delivered = hand_written_send(path, url)
            assert delivered == expected, f"the hand-written sender delivered {delivered} of {expected} events"
            written_cpu = min(written_cpu, cpu)
        if args.profile:
            profile(f"one engine send of {args.events:,} events", engine_send, path, url)
    engine, floor, written = (cpu / expected for cpu in (engine_cpu, floor_cpu, written_cpu))
    print_table(
        f"send: {args.events:,} events ({size / args.events:,.0f} bytes a line), {expected:,} delivered in "
        f"{len(bodies)} requests of up to {BATCH}; CPU of the sending process (events per CPU second, CPU µs per "
        f"delivered event), best of {args.repeat}; {machine()}",
        [Row("engine vs posting pre-built batches", engine, floor), Row("engine vs hand-written end to end", engine, written)],
    )
    print(f"send: {verdict(engine / floor, TARGET)}")


if __name__ == "__main__":
    main()
