"""Shared by the benchmarks: realistic events, the hand-written floor, timing, the emulator process.

The *floor* is what a competent engineer would write by hand for one mapping, with
the same validation as the action's declared fields (Metronome's Send Event) and the
same output on the generated events. It is split into the stages the engine has
(filter, build, check) so that ``mapping.py`` can time each stage against its own
floor; the whole floor is those stages composed, which costs three more function
calls per event (about 0.2 µs) than one inlined function would.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import random
import signal
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from engine.config.mappingfile import MappingFile, load_mapping_file
from engine.pipeline import Outcome

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAPPING = ROOT / "mappings" / "metronome.yaml"
HEAVY_MAPPING = Path(__file__).resolve().parent / "heavy.yaml"
TOKEN = "benchmark-token-not-secret"

Event = dict[str, Any]
Result = dict[str, Any] | str  # the payload to send, or FILTERED / INVALID
FILTERED, INVALID = "filtered", "invalid"
NAME, SLUG = "Metronome (Actions)", "metronome"


def load(path: Path = DEFAULT_MAPPING, base_url: str | None = None) -> MappingFile:
    """A mapping file compiled with the benchmark's token (and the emulator's URL when given)."""
    overrides = {"base_url": base_url} if base_url else {}
    return load_mapping_file(path, env={"METRONOME_API_TOKEN": TOKEN}, overrides=overrides)


# --- events ------------------------------------------------------------------------------

_EVENTS = ("API Call", "Search Performed", "Report Exported", "Seat Added", "Compute Used", "Storage Written")
_PATHS = ("/app/projects", "/app/reports", "/app/settings/billing", "/app/search", "/app/dashboards")
_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
)
_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")
_BRANDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli")
_CAMPAIGNS = ({"name": "spring_launch", "source": "newsletter", "medium": "email"}, {"name": "retargeting", "source": "google", "medium": "cpc"})
_ZONES = tuple(timezone(timedelta(hours=hours)) for hours in (-8, -5, 1, 2, 5.5, 9))
_INTEGRATIONS = (  # (share, object): most events carry none
    (0.15, {"All": True}),
    (0.02, {"All": False, NAME: True}),
    (0.02, {NAME: False}),  # kept away from Metronome
    (0.01, {SLUG: False}),
)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _stamp(rng: random.Random, instant: datetime) -> str:
    """The timestamp as Segment's libraries write it: mostly analytics.js's toISOString()."""
    draw = rng.random()
    if draw < 0.70:
        return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if draw < 0.90:
        return instant.isoformat(timespec="microseconds")  # analytics-python: +00:00
    if draw < 0.995:
        return instant.astimezone(rng.choice(_ZONES)).isoformat(timespec="seconds")
    return instant.replace(tzinfo=None).isoformat(timespec="seconds")  # no offset: the event is invalid


def _product(rng: random.Random, index: int) -> dict[str, Any]:
    brand = rng.choice(_BRANDS)
    return {
        "product_id": f"prod_{rng.randrange(10_000):05d}",
        "sku": f"SKU-{rng.randrange(100_000):06d}",
        "name": f"Widget {index + 1}",
        "brand": brand,
        "category": rng.choice(("compute", "storage", "seats")),
        "price": round(rng.uniform(1, 200), 2),
        "quantity": rng.randrange(1, 5),
    }


def iter_events(count: int, seed: int = 5, products: int = 0, now: datetime | None = None) -> Iterator[Event]:
    """``count`` Segment track events of 1-2 KB, deterministic for a seed (timestamps follow ``now``).

    The mix is what an ingest stream looks like: about 10% anonymous visitors, 3% numeric
    user ids (coerced to strings), 3% kept away from Metronome by ``integrations``,
    and about 1.5% invalid (no user at all, or a timestamp without an offset).
    ``products`` adds that many items to ``properties.products`` (the heavy mapping's input).
    """
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    for n in range(count):
        instant = now - timedelta(seconds=rng.uniform(60, 2 * 86_400))
        path = f"{rng.choice(_PATHS)}/{rng.randrange(1000)}"
        user = rng.random()
        event: Event = {
            "type": "track",
            "event": rng.choice(_EVENTS),
            "messageId": f"ajs-next-{_hex(rng, 32)}",
            "anonymousId": f"{_hex(rng, 8)}-{_hex(rng, 4)}-4{_hex(rng, 3)}-a{_hex(rng, 3)}-{_hex(rng, 12)}",
            "timestamp": _stamp(rng, instant),
            "originalTimestamp": instant.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sentAt": (instant + timedelta(milliseconds=40)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "receivedAt": (instant + timedelta(milliseconds=90)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "channel": "client",
            "version": 2,
            "context": {
                "library": {"name": "analytics.js", "version": "npm:next-1.74.0"},
                "ip": f"203.0.113.{rng.randrange(256)}",
                "locale": rng.choice(("en-US", "de-DE", "fr-FR", "ja-JP")),
                "timezone": rng.choice(("Europe/Berlin", "America/New_York", "Asia/Tokyo")),
                "userAgent": rng.choice(_AGENTS),
                "page": {
                    "path": path,
                    "referrer": "https://www.google.com/",
                    "search": f"?tab={rng.choice(('usage', 'team', 'api'))}",
                    "title": "Dashboard - Example Cloud",
                    "url": f"https://app.example.com{path}",
                },
                "device": {"type": rng.choice(("desktop", "mobile")), "manufacturer": "Apple", "model": "MacBookPro18,3"},
                "os": {"name": "Mac OS X", "version": "15.1.1"},
                "screen": {"width": 1728, "height": 1117, "density": 2},
                "traits": {"email": f"user{n}@example.com", "plan": rng.choice(("free", "pro", "enterprise")),
                           "company": {"id": f"org_{rng.randrange(500)}", "name": "Example Org"}},
            },
            "properties": {
                "endpoint": rng.choice(("/v1/search", "/v1/embed", "/v1/chat", "/v1/files")),
                "method": "POST",
                "status": 200,
                "region": rng.choice(_REGIONS),
                "tokens": rng.randrange(1, 20_000),
                "latency_ms": round(rng.uniform(5, 900), 1),
                "cached": rng.random() < 0.3,
                "request_id": f"req_{_hex(rng, 24)}",
                "model": rng.choice(("small-2", "large-3")),
                "tags": rng.sample(("batch", "beta", "internal", "eu", "priority"), 2),
                "order_id": f"ord_{rng.randrange(10**8):08d}",
                "currency": "USD",
                "revenue": round(rng.uniform(1, 500), 2),
            },
        }
        if user < 0.86:
            event["userId"] = f"user_{rng.randrange(100_000)}"
        elif user < 0.89:
            event["userId"] = rng.randrange(1, 10**9)  # a numeric id, coerced by number_to_string
        elif user < 0.99:
            event["userId"] = None  # anonymous: customer_id falls back to anonymousId
        else:
            del event["anonymousId"]  # no customer at all: invalid
        if rng.random() < 0.3:
            event["context"]["campaign"] = rng.choice(_CAMPAIGNS)
        draw, cumulative = rng.random(), 0.0
        for share, integrations in _INTEGRATIONS:
            cumulative += share
            if draw < cumulative:
                event["integrations"] = dict(integrations)
                break
        if products:
            event["properties"]["products"] = [_product(rng, i) for i in range(products)]
        yield event


def make_events(count: int, seed: int = 5, products: int = 0) -> list[Event]:
    return list(iter_events(count, seed, products))


def write_ndjson(path: Path, events: Iterable[Event]) -> int:
    """Write events one per line; the number of bytes written."""
    size = 0
    with path.open("wb") as out:
        for event in events:
            size += out.write(orjson.dumps(event) + b"\n")
    return size


def average_size(events: Sequence[Event]) -> float:
    return sum(len(orjson.dumps(event)) for event in events) / len(events)


# --- the hand-written floor --------------------------------------------------------------


def floor_allowed(event: Event) -> bool:
    """Integrations object: an explicit false for Metronome wins, then an explicit yes, then All."""
    integrations = event.get("integrations")
    if type(integrations) is not dict:
        return True
    named, slug = integrations.get(NAME), integrations.get(SLUG)
    if named is False or slug is False:
        return False
    return bool(named or slug) or integrations.get("All") is not False


def utc_millis(value: Any) -> str | None:
    """An RFC 3339 string with an offset as ``YYYY-MM-DDTHH:MM:SS.sssZ`` in UTC; None when it is not one."""
    if type(value) is not str:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def floor_check(raw: dict[str, Any]) -> Result:
    """Send Event's field rules on a built payload (``raw`` holds None for anything absent)."""
    transaction_id = raw["transaction_id"]
    if type(transaction_id) is not str or not 1 <= len(transaction_id) <= 128:
        return INVALID
    customer_id = raw["customer_id"]
    if type(customer_id) is int:
        customer_id = str(customer_id)
    elif type(customer_id) is float:
        customer_id = str(int(customer_id)) if customer_id.is_integer() else repr(customer_id)
    if type(customer_id) is not str or not customer_id:
        return INVALID
    timestamp = utc_millis(raw["timestamp"])
    event_type = raw["event_type"]
    if timestamp is None or type(event_type) is not str or not event_type:
        return INVALID
    payload = {"transaction_id": transaction_id, "customer_id": customer_id, "timestamp": timestamp, "event_type": event_type}
    properties = raw["properties"]
    if properties is not None:
        if type(properties) is not dict or len(properties) > 2000:
            return INVALID
        payload["properties"] = properties
    return payload


def default_triggered(event: Event) -> bool:
    return event.get("type") == "track"


def default_build(event: Event) -> dict[str, Any]:
    """mappings/metronome.yaml: the action's default mappings."""
    customer = event.get("userId")
    if customer is None:
        customer = event.get("anonymousId")
    return {
        "transaction_id": event.get("messageId"),
        "customer_id": customer,
        "timestamp": event.get("timestamp"),
        "event_type": event.get("event"),
        "properties": event.get("properties"),
    }


def heavy_triggered(event: Event) -> bool:
    """``type = "track" and properties.order_id != null``."""
    properties = event.get("properties")
    return event.get("type") == "track" and type(properties) is dict and properties.get("order_id") is not None


def heavy_build(event: Event) -> dict[str, Any]:
    """benchmarks/heavy.yaml by hand (templates render absent values as "")."""
    properties = event.get("properties") or {}
    context = event.get("context") or {}
    page = context.get("page") or {}
    customer = event.get("userId")
    if customer is None:
        customer = (context.get("traits") or {}).get("company", {}).get("id")
    if customer is None:
        customer = event.get("anonymousId")
    products = properties.get("products") or []
    shaped: dict[str, Any] = {
        "order_id": properties.get("order_id"),
        "revenue": properties.get("revenue"),
        "currency": properties.get("currency") or "USD",
        "page": f"{page.get('title') or ''} - {page.get('path') or ''}",
        "products": [
            {"sku": p.get("sku"), "quantity": p.get("quantity"), "price": p.get("price"), "label": f"{p.get('brand') or ''} {p.get('name') or ''}"}
            for p in products
        ],
        "skus": [p["sku"] for p in products if p.get("sku") is not None],
    }
    campaign = (context.get("campaign") or {}).get("name")
    if campaign is not None:
        shaped["campaign"] = campaign
    return {
        "transaction_id": f"{event.get('messageId') or ''}:{properties.get('order_id') or ''}",
        "customer_id": customer,
        "timestamp": event.get("timestamp"),
        "event_type": f"{event.get('event') or ''} ({properties.get('currency') or ''})",
        "properties": shaped,
    }


def hand_written(triggered: Callable[[Event], bool], build: Callable[[Event], dict[str, Any]]) -> Callable[[Event], Result]:
    """The whole floor for one mapping: integrations, trigger, build, check."""

    def run(event: Event) -> Result:
        if not (floor_allowed(event) and triggered(event)):
            return FILTERED
        return floor_check(build(event))

    return run


def engine_result(outcomes: list[Outcome]) -> Result:
    """What Pipeline.run gave for a one-subscription mapping, in the floor's terms."""
    if not outcomes:
        return FILTERED
    (outcome,) = outcomes
    return outcome.payload if outcome.status == "ok" and outcome.payload is not None else INVALID


def assert_same(label: str, engine: Sequence[Any], floor: Sequence[Any]) -> None:
    """Stop before any timing when the engine and the floor disagree on any input."""
    for index, (ours, theirs) in enumerate(zip(engine, floor, strict=True)):
        if ours != theirs:
            sys.exit(f"{label}: the engine and the floor differ on input {index}:\n  engine: {ours!r}\n  floor:  {theirs!r}")


# --- timing ------------------------------------------------------------------------------


def best_of(contenders: Sequence[tuple[Callable[[Any], Any], Sequence[Any]]], repeat: int, chunk: int = 500) -> list[float]:
    """Best seconds per input for each (function, inputs), timeit-style, robust to a noisy machine.

    Each contender's inputs are timed in chunks of ``chunk``; each chunk counts with its
    best of ``repeat`` runs, and the contenders take turns on every chunk, so a burst
    of load from elsewhere costs one run of one chunk, and all contenders share the
    same quiet and busy moments. Garbage collection stays on, as in production, but
    everything alive before timing (the events, the compiled mapping) is frozen out of
    it: a streaming sender does not hold 10,000 events, so scanning them would be an
    artifact of the benchmark.
    """
    parts = [[inputs[start : start + chunk] for start in range(0, len(inputs), chunk)] for _, inputs in contenders]
    best = [[float("inf")] * len(mine) for mine in parts]
    clock = time.perf_counter
    gc.collect()
    gc.freeze()
    try:
        for _ in range(repeat):
            for index in range(max(map(len, parts))):
                for times, chunks, (function, _) in zip(best, parts, contenders):
                    if index < len(chunks):
                        began = clock()
                        run_all(function, chunks[index])
                        times[index] = min(times[index], clock() - began)
    finally:
        gc.unfreeze()
    return [sum(times) / len(inputs) for times, (_, inputs) in zip(best, contenders)]


@dataclass(frozen=True)
class Row:
    """One comparison: seconds per event for the engine and for its floor."""

    label: str
    engine: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.engine / self.floor


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Events per second, µs per event and the ratio, for the engine and its floor on each row."""
    print(title)
    width = max(len(row.label) for row in rows)
    print(f"  {'':{width}}  {'engine events/s':>15} {'µs':>7}  {'floor events/s':>14} {'µs':>7}  {'ratio':>6}")
    for row in rows:
        print(
            f"  {row.label:{width}}  {1 / row.engine:>15,.0f} {row.engine * 1e6:>7.2f}"
            f"  {1 / row.floor:>14,.0f} {row.floor * 1e6:>7.2f}  {row.ratio:>5.2f}x"
        )


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x the floor (target: at most {target:.1f}x, {'met' if ratio <= target else 'NOT met'})"


def machine() -> str:
    """CPUs, CPU model and Python version: figures mean little without them."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()} ({sys.platform})"


def arguments(description: str, events: int, repeat: int | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=events, help=f"how many events to generate (default {events:,})")
    if repeat is not None:
        parser.add_argument("--repeat", type=int, default=repeat, help=f"timed runs per contender; the best counts (default {repeat})")
        parser.add_argument("--profile", action="store_true", help="also profile the engine's per-event path with cProfile")
    return parser


def profile(label: str, function: Callable[..., Any], *args: Any, top: int = 20) -> None:
    """cProfile of one call by CPU time (waiting on a socket is not cost): the functions costing the most of their own."""
    profiler = cProfile.Profile(time.process_time)
    profiler.runcall(function, *args)
    print(f"\nprofile of {label} (sorted by own time; cProfile inflates the cost of small calls):")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(top)


def run_all(function: Callable[[Any], Any], inputs: Iterable[Any]) -> None:
    """Apply ``function`` to every input, keeping nothing (what a timed or profiled run does)."""
    deque(map(function, inputs), maxlen=0)


# --- processes ---------------------------------------------------------------------------


@contextmanager
def emulator(*options: str) -> Iterator[str]:
    """The Metronome emulator in its own process (its CPU is not ours); yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "emulator", "metronome", "--port", "0", "--token", TOKEN, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        sys.exit(f"the emulator did not start: {url} {process.stderr.read()}")
    try:
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
