"""Throughput of ``actionmap serve``: events accepted per second, and delivered per second to the emulator.

    .venv/bin/python benchmarks/serve.py [--events N] [--clients N] [--workers N]

The service runs as its own process (``python -m engine.cli serve``, unpaced with
``--rate 0``, on a free port with a fresh data dir), the Metronome emulator in another;
this process is only the client. Two figures, wall clock:

- *accepted*: events per second posted to ``/v1/batch`` in bodies of 100, built and
  serialised before the clock starts, by ``--clients`` threads with a keep-alive
  connection each, from the first post to the last 200. A 200 means the events are
  committed to SQLite (WAL, ``synchronous=FULL``), so every request pays an fsync.
- *delivered*: events per second from the first 200 to the moment the queue is empty,
  which is when the emulator has stored every deliverable event (a worker deletes an
  event only after the emulator's 200). Delivery runs while the intake does, as in
  production: both share the machine's CPUs.

Before timing, other events (another seed) go through the same service, and what the
emulator stored must be exactly the hand-written floor's payloads for them, keyed by
transaction id, with no duplicate; after the timed run the same must hold for all events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from common import (
    DEFAULT_MAPPING,
    ROOT,
    TOKEN,
    Event,
    arguments,
    average_size,
    default_build,
    default_triggered,
    emulator,
    hand_written,
    machine,
    make_events,
)

BATCH = 100
CHECK_EVENTS = 2_000
WRITE_KEY = "benchmark-write-key-not-secret"
STARTUP = 30.0  # seconds the service may take to log that it serves
DRAIN = 300.0  # seconds the queue may take to empty before the benchmark gives up
POLL = 0.02


@contextmanager
def service(emulator_url: str, data_dir: Path, workers: int) -> Iterator[str]:
    """``actionmap serve`` in its own process, delivering unpaced to the emulator; yields its base URL.

    It listens on port 0 and its ``serving`` log line says where, so no port is guessed.
    Its log goes to a file in ``data_dir``'s parent, shown when anything goes wrong.
    """
    log_path = data_dir.parent / "serve.log"
    command = [sys.executable, "-m", "engine.cli", "serve", "-m", str(DEFAULT_MAPPING), "--set", f"base_url={emulator_url}",
               "--port", "0", "--data-dir", str(data_dir), "--rate", "0", "--workers", str(workers)]
    env = {**os.environ, "METRONOME_API_TOKEN": TOKEN, "ACTIONMAP_WRITE_KEYS": WRITE_KEY}
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield _served_url(process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            print(f"serve: the service exited with {code} after SIGTERM; its log:\n{_tail(log_path)}", file=sys.stderr)


def _served_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        for line in log_path.read_bytes().splitlines():
            if line.startswith(b"{") and (entry := orjson.loads(line))["event"] == "serving":
                return str(entry["url"])
        if process.poll() is not None:
            sys.exit(f"serve: the service exited with {process.returncode} at startup:\n{_tail(log_path)}")
        time.sleep(POLL)
    sys.exit(f"serve: the service did not start within {STARTUP:g} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def bodies_of(events: Sequence[Event]) -> list[bytes]:
    """``/v1/batch`` request bodies of up to 100 events each."""
    return [orjson.dumps({"batch": events[start:start + BATCH]}) for start in range(0, len(events), BATCH)]


def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[float, float, float]:
    """Post every body from ``clients`` threads; (clock at the first post, at the first 200, at the last 200)."""
    start = threading.Barrier(clients)

    def share(mine: list[bytes]) -> tuple[float, float, float]:
        with httpx.Client(auth=(WRITE_KEY, ""), timeout=60.0) as client:
            start.wait()
            began, accepted = time.perf_counter(), []
            for body in mine:
                answer = client.post(url + "/v1/batch", content=body, headers={"content-type": "application/json"})
                if answer.status_code != 200:
                    raise RuntimeError(f"the intake answered {answer.status_code}: {answer.text}")
                accepted.append(time.perf_counter())
            return began, accepted[0], accepted[-1]

    with ThreadPoolExecutor(clients) as pool:
        try:
            times = list(pool.map(share, [bodies[n::clients] for n in range(clients)]))
        except (RuntimeError, httpx.HTTPError) as error:
            sys.exit(f"serve: posting failed: {error}")
    return min(t[0] for t in times), min(t[1] for t in times), max(t[2] for t in times)


def metric(text: str, name: str) -> float:
    """A sample of the service's /metrics summed over its connections, read with prometheus_client's parser."""
    values = [float(sample.value) for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == name and "le" not in sample.labels]
    if not values:
        raise KeyError(name)
    return sum(values)


def wait_drained(url: str, received: int) -> float:
    """The clock once the service has received ``received`` events in all and its queue is empty."""
    deadline = time.monotonic() + DRAIN
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < deadline:
            text = client.get(url + "/metrics").text
            if metric(text, "actionmap_events_received_total") == received and metric(text, "actionmap_queue_depth") == 0:
                return time.perf_counter()
            time.sleep(POLL)
    sys.exit(f"serve: the queue did not empty within {DRAIN:g} s")


def expect_stored(emulator_url: str, events: Sequence[Event]) -> int:
    """Stop unless the emulator stored exactly the floor's payloads for ``events``, once each; how many."""
    floor = hand_written(default_triggered, default_build)
    expected = {payload["transaction_id"]: payload for payload in map(floor, events) if type(payload) is dict}
    state = httpx.get(emulator_url + "/_emulator/state", timeout=60.0).json()
    stored: dict[str, Any] = state["stored"]
    if state["duplicates"]:
        sys.exit(f"serve: the emulator got {state['duplicates']} events twice")
    if stored.keys() != expected.keys():
        missing, extra = expected.keys() - stored.keys(), stored.keys() - expected.keys()
        sys.exit(f"serve: {len(missing)} expected transaction ids were not stored (e.g. {sorted(missing)[:3]}), "
                 f"{len(extra)} others were (e.g. {sorted(extra)[:3]})")
    for tid, payload in expected.items():
        if stored[tid] != payload:
            sys.exit(f"serve: the emulator stored another payload for {tid}:\n  stored: {stored[tid]!r}\n  floor:  {payload!r}")
    return len(expected)


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], events=50_000)
    parser.add_argument("--clients", type=int, default=4, help="posting threads, one connection each (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="the service's --workers (default 2)")
    args = parser.parse_args()
    if min(args.events, args.clients, args.workers) < 1:
        parser.error("--events, --clients and --workers must be at least 1")
    check, events = make_events(CHECK_EVENTS, seed=6), make_events(args.events)
    check_bodies, bodies = bodies_of(check), bodies_of(events)
    clients = min(args.clients, len(bodies), len(check_bodies))  # a thread with nothing to post would have no times
    with tempfile.TemporaryDirectory() as folder, emulator() as emulator_url, \
            service(emulator_url, Path(folder) / "data", args.workers) as url:
        post_all(url, check_bodies, clients)
        wait_drained(url, len(check))
        checked = expect_stored(emulator_url, check)
        began, first, last = post_all(url, bodies, clients)
        drained = wait_drained(url, len(check) + len(events))
        stored = expect_stored(emulator_url, check + events) - checked
    print(f"serve: {len(events):,} events ({average_size(events):,.0f} bytes each) in {len(bodies)} /v1/batch posts of up to "
          f"{BATCH} from {clients} client threads; {args.workers} workers, unpaced; {machine()}")
    print(f"  accepted   {len(events) / (last - began):>9,.0f} events/s  (first post to last 200: {last - began:.2f} s)")
    print(f"  delivered  {len(events) / (drained - first):>9,.0f} events/s  (first 200 to an empty queue: {drained - first:.2f} s; "
          f"{stored:,} stored at the emulator, the rest filtered or invalid)")


if __name__ == "__main__":
    main()
