"""``actionmap serve`` (issue 6): the Segment-compatible intake, the durable queue, the workers.

The service runs as a real process (``python -m engine.cli serve``) on a free
loopback port, delivering to the Metronome emulator served from this process;
it is killed with SIGKILL and stopped with SIGTERM as an operator's machine
would. The intake's request handling is also fuzzed in-process (Starlette's
TestClient over a real SQLite queue), where thousands of requests are cheap.
"""

from __future__ import annotations

import base64
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as count_case
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():  # Starlette >= 1.x prefers httpx2 for its TestClient; httpx (which the engine uses) still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from destinations.metronome.emulator import Faults, MetronomeEmulator
from engine.errors import ConfigError
from engine.config.mappingfile import load_mapping_file
from engine.runtime.serve.intake import EVENT_LIMIT, REQUEST_LIMIT, create_app
from engine.runtime.serve.queue import CATEGORIES, Queue
from engine.runtime.serve.service import WRITE_KEYS_ENV, write_keys
from engine.runtime.serve.storage import DB_NAME
from tests.conftest import Run, expected_payload, free_port

TOKEN = "mtr-serve-test-token-93b1c7"
WRITE_KEY = "wk-serve-test-4d2a"
FILE_KEY = "wk-from-mapping-file-7e51c0"  # read from ${FILE_WRITE_KEY} by a mapping file's write_keys
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
STARTUP = 60.0  # seconds a service may take to answer /health (generous: a busy machine starts Python slowly)
CONNECTION = "mapping"  # the connection of write_mapping's mapping.yaml: its file's stem


# -- events and payloads ---------------------------------------------------------------


def track(mid: str, user: str = "u1", when: datetime | None = None, **extra: Any) -> dict[str, Any]:
    when = when or datetime.now(timezone.utc)
    return {"type": "track", "messageId": mid, "userId": user, "event": "api_call",
            "timestamp": when.isoformat(), "properties": {"n": mid}, **extra}


# -- the service as a process ---------------------------------------------------------


def write_mapping(path: Path, base_url: str, extra: str = "") -> Path:
    """The default Metronome mapping to ``base_url``; ``extra`` adds top-level YAML (write_keys)."""
    path.write_text(
        "destination: metronome\n"
        "settings:\n  api_token: ${METRONOME_API_TOKEN}\n"
        f"  base_url: {base_url}\n"
        "subscriptions:\n  - name: Usage events\n    action: send_event\n" + extra
    )
    return path


class Service:
    """One ``actionmap serve`` process at a time on a fixed port and data dir; restartable."""

    def __init__(self, tmp: Path, mapping: Path, *options: str, token: str = TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp / "data"
        self.mapping = mapping
        self.args = [sys.executable, "-m", "engine.cli", "serve", "-m", str(mapping), "--port", str(self.port),
                     "--data-dir", str(self.data_dir), "--write-key", WRITE_KEY, *options]
        self.env = {**os.environ, "METRONOME_API_TOKEN": token}
        self.env.pop("ACTIONMAP_WRITE_KEYS", None)
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Service":
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                httpx.get(self.url + "/health", timeout=1.0)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"the service did not answer within {STARTUP} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def logs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.read_bytes().splitlines() if line.startswith(b"{")]

    def post(self, path: str, body: Any, timeout: float = 10.0) -> httpx.Response:
        return httpx.post(self.url + path, content=orjson.dumps(body), headers=AUTH, timeout=timeout)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.url + "/metrics", timeout=5.0).text)

    def drain(self, timeout: float = 60.0) -> dict[str, float]:
        """Wait until the queue is empty; the metrics then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metrics = self.metrics()
            if metrics["actionmap_queue_depth"] == 0:
                return metrics
            time.sleep(0.1)
        raise AssertionError(f"the queue did not drain in {timeout} s: {self.metrics()}")


def metrics_by_connection(text: str) -> dict[str, dict[str, float]]:
    """Samples by connection label, then name (histogram buckets left out), through prometheus_client's own parser."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {"connection", "le"}, sample
            if "le" not in sample.labels:
                out.setdefault(sample.labels["connection"], {})[sample.name] = sample.value
    return out


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample summed over the connections, by name (with one connection: its values); each connection's
    counts checked to add up on the way."""
    total: dict[str, float] = {}
    for samples in metrics_by_connection(text).values():
        assert_adds_up(samples)
        for name, value in samples.items():
            total[name] = total.get(name, 0.0) + value
    return total


def assert_adds_up(metrics: dict[str, float]) -> None:
    accounted = sum(metrics[f"actionmap_events_{c}_total"] for c in CATEGORIES) + metrics["actionmap_queue_depth"]
    assert metrics["actionmap_events_received_total"] == accounted, metrics


@pytest.fixture
def emulator() -> Iterator[MetronomeEmulator]:
    with MetronomeEmulator(tokens={TOKEN}) as emulator:
        yield emulator


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Make services (not started); every one still running at the end is killed."""
    made: list[Service] = []

    def make(base_url: str, *options: str, token: str = TOKEN, extra: str = "") -> Service:
        made.append(Service(tmp_path, write_mapping(tmp_path / "mapping.yaml", base_url, extra), *options, token=token))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- 1. the official Segment library -------------------------------------------------


CIO_KEY = "pk_us_7c1e0a9b2d4f4e21a8b3"  # shaped as Customer.io's region API keys, configured as a write key


def _library_client(library: str) -> tuple[Any, str]:
    """The official client class and the key it authenticates with: Segment's (HTTP Basic), Customer.io's (Bearer pk_…)."""
    if library == "segment":
        from segment.analytics.client import Client as SegmentClient

        return SegmentClient, WRITE_KEY
    from customerio.analytics import request as cio_request
    from customerio.analytics.client import Client as CustomerioClient

    assert cio_request._API_KEY_PREFIX.match(CIO_KEY)  # the library sends this key as "Authorization: Bearer <key>"
    return CustomerioClient, CIO_KEY


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("library", ["segment", "customerio"])
def test_the_official_python_libraries_deliver_through_the_service(
    emulator: MetronomeEmulator, service: Callable[..., Service], library: str, compress: bool
) -> None:
    """segment-analytics-python and customerio-cdp-analytics, unchanged but for their host."""
    client_class, key = _library_client(library)
    running = service(emulator.base_url, "--write-key", CIO_KEY).start()
    errors: list[Any] = []
    client = client_class(write_key=key, host=running.url, gzip=compress, on_error=lambda e, batch: errors.append(e),
                          upload_interval=0.05, max_retries=2)
    when = datetime.now(timezone.utc).replace(microsecond=123000)
    sent = []
    for i in range(25):
        mid = f"{library}-{compress}-{i}"
        client.track(user_id=f"user-{i % 4}", event="api_call", properties={"tokens": i, "model": "m1"}, timestamp=when, message_id=mid)
        sent.append({"messageId": mid, "userId": f"user-{i % 4}", "event": "api_call",
                     "timestamp": when.isoformat(), "properties": {"tokens": i, "model": "m1"}})
    client.identify(user_id="user-1", traits={"plan": "pro"}, message_id=f"{library}-{compress}-identify")
    client.flush()
    client.join()
    assert errors == []
    wait_for(lambda: len(emulator.stored) == len(sent), what="the library's events at the emulator")
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in sent}
    metrics = running.drain()
    assert metrics["actionmap_events_received_total"] == 26
    assert metrics["actionmap_events_delivered_total"] == 25
    assert metrics["actionmap_events_filtered_total"] == 1  # the identify call feeds no subscription
    assert_adds_up(metrics)
    assert key not in running.log.read_text()


# -- 2. crash safety -------------------------------------------------------------------


def test_every_acknowledged_event_is_delivered_exactly_once_through_kill_9_and_faults(
    service: Callable[..., Service],
) -> None:
    faults = Faults(rate=0.15, seed=11, slow_delay=0.3, retry_after_ms=200,
                    kinds=("429", "429_retry_after", "500", "503", "store_part_then_500", "store_all_then_drop",
                           "reset_before_read", "slow"))
    with MetronomeEmulator(tokens={TOKEN}, faults=faults) as emulator:
        running = service(emulator.base_url, "--rate", "0", "--timeout", "2").start()
        batches = [[track(f"crash-{b}-{i}", user=f"c{i % 7}") for i in range(100)] for b in range(200)]
        acked: set[str] = set()
        refused: list[int] = []
        progress = threading.Condition()
        posted = [0]  # batches acknowledged so far
        done = threading.Event()

        def client() -> None:
            """Post each batch until it is acknowledged, as Segment's libraries do, through every restart."""
            with httpx.Client(headers=AUTH, timeout=5.0) as http:
                for batch in batches:
                    body = orjson.dumps({"batch": batch})
                    while True:
                        try:
                            answer = http.post(running.url + "/v1/batch", content=body)
                        except httpx.TransportError:
                            time.sleep(0.05)
                            continue
                        if answer.status_code == 200:
                            acked.update(e["messageId"] for e in batch)
                            break
                        refused.append(answer.status_code)
                        time.sleep(0.05)
                    with progress:
                        posted[0] += 1
                        progress.notify_all()
            done.set()

        poster = threading.Thread(target=client, daemon=True)
        poster.start()
        # each kill lands after a given number of acknowledged batches, so every one lands mid-stream
        # whatever the machine's speed: the kill points are the test's choice, not the scheduler's
        kill_points = [15, 40, 70, 100, 130, 160]
        for point in kill_points:
            with progress:
                assert progress.wait_for(lambda: posted[0] >= point, timeout=600), f"the client stalled at {posted[0]} batches"
            running.kill()
            running.start()
        poster.join(600)
        assert done.is_set() and refused == [], refused
        assert len(acked) == 20_000
        metrics = running.drain(timeout=600)
        faulted = [r.fault for r in emulator.requests if r.fault]
        assert len(set(faulted)) >= 5, faulted  # the faults did happen, of many kinds
        stored = emulator.stored
        assert acked <= set(stored), f"{len(acked - set(stored))} acknowledged events never reached Metronome"
        assert set(stored) <= {e["messageId"] for batch in batches for e in batch}
        by_id = {e["messageId"]: e for batch in batches for e in batch}
        assert all(payload == expected_payload(by_id[tid]) for tid, payload in stored.items())
        assert_adds_up(metrics)
        assert metrics["actionmap_events_invalid_total"] == metrics["actionmap_events_dead_lettered_total"] == 0
        assert sum(1 for e in running.logs() if e["event"] == "serving") == len(kill_points) + 1
        assert running.terminate() == 0
    queue = Queue(running.data_dir)
    try:
        stats = queue.stats()
        assert list(stats.connections) == [CONNECTION] and stats.connections[CONNECTION].depth == 0 and stats.events == 0
    finally:
        queue.close()


# -- 3. restarts, startup errors, SIGTERM ----------------------------------------------


def test_a_restart_resumes_rows_a_dead_worker_left_leased(
    emulator: MetronomeEmulator, service: Callable[..., Service]
) -> None:
    running = service(emulator.base_url)
    events = [track(f"leased-{i}") for i in range(30)]
    queue = Queue(running.data_dir, [CONNECTION])
    queue.put([orjson.dumps(e) for e in events])
    assert len(queue.claim(CONNECTION, 20, lease_seconds=3600)) == 20  # a worker took them, then its process died
    queue.close()
    running.start()
    metrics = running.drain()
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert metrics["actionmap_events_delivered_total"] == 30
    assert [e["resumed_leases"] for e in running.logs() if e["event"] == "serving"] == [20]


def test_sigterm_releases_in_flight_work_and_exits_0(emulator: MetronomeEmulator, service: Callable[..., Service]) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: every send fails and waits to retry
    running = service(down).start()
    events = [track(f"term-{i}") for i in range(50)]
    assert running.post("/v1/batch", {"batch": events}).status_code == 200
    wait_for(lambda: _leased(running.data_dir), what="a worker to take the batch")
    started = time.monotonic()
    assert running.terminate() == 0
    assert time.monotonic() - started < 15
    logs = running.logs()
    stopping = [e["event"] for e in logs].index("stopping")
    assert [(e["event"], e.get("released")) for e in logs[stopping + 1:]] == [("batch", 50), ("stopped", None)]
    running.args += ["--set", f"base_url={emulator.base_url}"]
    running.start()
    running.drain()
    assert set(emulator.stored) == {e["messageId"] for e in events}


def _leased(data_dir: Path) -> bool:
    with sqlite3.connect(data_dir / DB_NAME) as db:
        return db.execute("SELECT COUNT(*) FROM lanes WHERE lease > 0").fetchone()[0] > 0


def test_a_corrupted_queue_file_is_a_clear_startup_error_and_is_left_untouched(cli: Callable[..., Run], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"this is not an SQLite database, but it may be somebody's only copy of their events\n" * 50
    (data / DB_NAME).write_bytes(garbage)
    mapping = write_mapping(tmp_path / "m.yaml", "http://127.0.0.1:9")
    run = cli("serve", "-m", str(mapping), "--data-dir", str(data), "--write-key", WRITE_KEY, "--port", "0")
    assert run.code == 1
    assert str(data / DB_NAME) in run.err and "cannot be used as the actionmap queue" in run.err
    assert "Nothing in it was changed" in run.err
    assert (data / DB_NAME).read_bytes() == garbage


@pytest.mark.parametrize("problem", ["data dir is a file", "queue is a directory", "foreign database", "in use"])
def test_an_unusable_data_dir_is_a_clear_startup_error(cli: Callable[..., Run], tmp_path: Path, problem: str) -> None:
    data = tmp_path / "data"
    holder: Queue | None = None
    if problem == "data dir is a file":
        data.write_text("not a directory")
        expected = f"--data-dir {data}"
    elif problem == "queue is a directory":
        (data / DB_NAME).mkdir(parents=True)
        expected = "it is not a regular file"
    elif problem == "foreign database":
        data.mkdir()
        with sqlite3.connect(data / DB_NAME) as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
        expected = "SQLite file of something else (tables: invoices)"
    else:
        holder = Queue(data)
        expected = "in use by another actionmap serve"
    mapping = write_mapping(tmp_path / "m.yaml", "http://127.0.0.1:9")
    try:
        run = cli("serve", "-m", str(mapping), "--data-dir", str(data), "--write-key", WRITE_KEY, "--port", "0")
    finally:
        if holder is not None:
            holder.close()
    assert run.code == 1 and expected in run.err, run.err


def test_the_service_will_not_start_without_a_write_key(cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTIONMAP_WRITE_KEYS", raising=False)
    mapping = write_mapping(tmp_path / "m.yaml", "http://127.0.0.1:9")
    run = cli("serve", "-m", str(mapping), "--data-dir", str(tmp_path / "data"), "--port", "0")
    assert run.code == 1 and "no write key" in run.err and "ACTIONMAP_WRITE_KEYS" in run.err


# -- write keys from the mapping file ---------------------------------------------------


def test_a_write_key_from_the_mapping_file_is_accepted_and_never_shown(
    emulator: MetronomeEmulator, service: Callable[..., Service], cli: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    running = service(emulator.base_url, extra='write_keys: ["${FILE_WRITE_KEY}"]\n')
    running.env["FILE_WRITE_KEY"] = FILE_KEY
    running.start()
    events = [track(f"file-key-{i}") for i in range(3)]
    post = running.url + "/v1/batch"
    assert httpx.post(post, content=orjson.dumps({"batch": events}), auth=(FILE_KEY, "")).status_code == 200
    assert httpx.post(post, content=orjson.dumps({"batch": [track("wrong")]}), auth=(FILE_KEY + "x", "")).status_code == 401
    assert running.post("/v1/batch", {"batch": [track("flag-key")]}).status_code == 200  # --write-key still counts
    running.drain()
    assert set(emulator.stored) == {e["messageId"] for e in events} | {"flag-key"}
    assert running.terminate() == 0
    monkeypatch.setenv("FILE_WRITE_KEY", FILE_KEY)
    validated = cli("validate", str(running.mapping))
    assert validated.code == 0
    assert FILE_KEY not in running.log.read_text() + validated.out + validated.err


def test_an_unset_variable_in_write_keys_is_a_located_startup_error(
    cli: Callable[..., Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FILE_WRITE_KEY", raising=False)
    entry = "  - wk_live_${FILE_WRITE_KEY}"
    mapping = write_mapping(tmp_path / "m.yaml", "http://127.0.0.1:9", extra=f"write_keys:\n{entry}\n")
    line = mapping.read_text().splitlines().index(entry) + 1
    run = cli("serve", "-m", str(mapping), "--data-dir", str(tmp_path / "data"), "--write-key", WRITE_KEY, "--port", "0")
    assert run.code == 1
    assert f"{mapping}:{line}:{entry.index('$') + 1}: the environment variable FILE_WRITE_KEY is not set" in run.err
    assert "write_keys[0]" in run.err
    assert not (tmp_path / "data").exists()  # refused before the queue is touched


def test_write_keys_are_every_source_at_once_secret_and_never_empty(tmp_path: Path) -> None:
    mapping = write_mapping(tmp_path / "m.yaml", "http://127.0.0.1:9", extra='write_keys: ["${A}", "lit-${A}", "${A}"]\n')
    loaded = load_mapping_file(mapping, env={"METRONOME_API_TOKEN": TOKEN, "A": FILE_KEY})
    assert loaded.write_keys == (FILE_KEY, f"lit-{FILE_KEY}")
    assert FILE_KEY not in repr(loaded)
    assert write_keys(["flag", ""], loaded.write_keys, env={WRITE_KEYS_ENV: f" env , ,{FILE_KEY}"}) == [
        "flag", FILE_KEY, f"lit-{FILE_KEY}", "env"]
    with pytest.raises(ConfigError, match="no write key.*write_keys"):
        write_keys([], (), env={})
    with pytest.raises(ConfigError) as empty:
        load_mapping_file(mapping, env={"METRONOME_API_TOKEN": TOKEN, "A": ""})
    assert [(e.pointer, e.location is not None) for e in empty.value.errors] == [("/write_keys/0", True), ("/write_keys/2", True)]
    assert "write_keys[0] is empty" in str(empty.value)


# -- 4. bad requests, in-process -------------------------------------------------------


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[tuple[TestClient, Queue]]:
    queue = Queue(tmp_path / "intake", [CONNECTION])
    with TestClient(create_app(queue, [WRITE_KEY, "second-key"]), raise_server_exceptions=False) as client:
        yield client, queue
    queue.close()


def received(queue: Queue) -> int:
    return queue.stats().connections[CONNECTION].counters["received"]


def stored_events(queue: Queue) -> list[dict[str, Any]]:
    claimed = queue.claim(CONNECTION, 10_000, 60)
    return [orjson.loads(row.body) for row in claimed]


def big_event(size: int) -> dict[str, Any]:
    return track("big", properties={"blob": "x" * size})


BAD_REQUESTS = {
    "wrong write key": ("/v1/track", {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}, orjson.dumps(track("a")), 401, "write key is not valid"),
    "no credential": ("/v1/track", {}, orjson.dumps(track("a")), 401, "no valid write key"),
    "an unknown scheme": ("/v1/track", {"Authorization": f"Digest {WRITE_KEY}"}, orjson.dumps(track("a")), 401, "write key is not valid"),
    "malformed JSON": ("/v1/track", AUTH, b'{"type": "track", ', 400, "not valid JSON"),
    "a JSON array body": ("/v1/track", AUTH, b"[1, 2]", 400, "must be a JSON object, got a list"),
    "empty body": ("/v1/batch", AUTH, b"", 400, "body is empty"),
    "oversized event": ("/v1/track", AUTH, orjson.dumps(big_event(EVENT_LIMIT)), 400, "limit is 32 KB (32768 bytes) per event"),
    "oversized event in a batch": ("/v1/batch", AUTH, orjson.dumps({"batch": [track("ok"), big_event(EVENT_LIMIT)]}), 400, "batch[1] is"),
    "batch not a list": ("/v1/batch", AUTH, orjson.dumps({"batch": {"type": "track"}}), 400, '"batch" must be a list of event objects, got an object'),
    "batch missing": ("/v1/batch", AUTH, orjson.dumps({"events": []}), 400, "got missing"),
    "batch item not an object": ("/v1/batch", AUTH, orjson.dumps({"batch": [track("ok"), "track"]}), 400, "batch[1] is a string"),
    "body over the limit": ("/v1/batch", AUTH, orjson.dumps({"batch": [big_event(20_000) for _ in range(30)]}), 400, "500 KB (512000 bytes) per request"),
    "gzip bomb": ("/v1/batch", {**AUTH, "Content-Encoding": "gzip"}, gzip.compress(b'{"batch": [' + b" " * (REQUEST_LIMIT + 10) + b"]}"), 400, "decompressed request body is over the limit"),
    "broken gzip": ("/v1/track", {**AUTH, "Content-Encoding": "gzip"}, b"\x1f\x8b not really", 400, "does not decompress"),
    "unknown encoding": ("/v1/track", {**AUTH, "Content-Encoding": "br"}, orjson.dumps(track("a")), 400, "'br' is not supported"),
    "unknown endpoint": ("/v1/purchase", AUTH, orjson.dumps(track("a")), 404, "no such endpoint"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_a_message_and_queues_nothing(intake: tuple[TestClient, Queue], case: str) -> None:
    client, queue = intake
    path, headers, body, status, message = BAD_REQUESTS[case]
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["message"]
    assert response.json()["success"] is False
    assert received(queue) == 0 and queue.stats().connections[CONNECTION].depth == 0 and queue.stats().events == 0


def test_the_limits_are_segments_exactly(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    event = track("edge", properties={"blob": ""})
    event["properties"]["blob"] = "x" * (EVENT_LIMIT - len(orjson.dumps(event)))
    assert len(orjson.dumps(event)) == EVENT_LIMIT
    assert client.post("/v1/track", content=orjson.dumps(event), headers=AUTH).status_code == 200
    event["properties"]["blob"] += "x"
    assert client.post("/v1/track", content=orjson.dumps(event), headers=AUTH).status_code == 400
    assert received(queue) == 1


def test_events_are_stored_as_received_with_type_message_id_and_received_at(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    single = {"userId": "u1", "event": "e", "type": "identify", "context": {"ip": "1.2.3.4"}}
    assert client.post("/v1/track", json=single, headers=AUTH).status_code == 200
    batch = {"batch": [{"type": "page", "userId": "u2", "messageId": "given", "context": {"locale": "fr"}},
                       {"type": "track", "userId": "u3", "event": "e", "integrations": {"All": False}}],
             "context": {"ip": "5.6.7.8", "locale": "en"}, "integrations": {"Metronome (Actions)": True},
             "writeKey": WRITE_KEY}
    body = gzip.compress(orjson.dumps(batch))
    assert client.post("/v1/batch", content=body, headers={**AUTH, "Content-Encoding": "gzip"}).status_code == 200
    key_in_body = {**track("k1"), "writeKey": "second-key"}
    assert client.post("/v1/track", content=orjson.dumps(key_in_body)).status_code == 200
    first, page, second, third = stored_events(queue)
    for event in (first, page, second, third):
        assert datetime.fromisoformat(event.pop("receivedAt")) > datetime.now(timezone.utc) - timedelta(minutes=1)
    generated = first.pop("messageId")
    assert generated.startswith("api-") and len(generated) > 20
    assert first == {**single, "type": "track"}  # the path says what it is
    assert page == {"type": "page", "userId": "u2", "messageId": "given", "context": {"ip": "5.6.7.8", "locale": "fr"},
                    "integrations": {"Metronome (Actions)": True}}
    assert second["context"] == {"ip": "5.6.7.8", "locale": "en"}
    assert second["integrations"] == {"Metronome (Actions)": True, "All": False}  # the event's own keys win
    assert "writeKey" not in third and third["messageId"] == "k1"


def test_health_and_metrics_of_an_idle_intake(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    assert client.get("/health").json() == {
        "status": "ok", "connections": {CONNECTION: {"state": "delivering", "queued": 0, "oldest_age_seconds": 0.0}}}
    metrics = parse_metrics(client.get("/metrics").text)
    assert metrics["actionmap_queue_depth"] == 0 and metrics["actionmap_credential_refused"] == 0
    assert_adds_up(metrics)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EVENTS = st.dictionaries(st.sampled_from(["type", "userId", "messageId", "event", "context", "writeKey", "properties", "x"]),
                         JSON, max_size=6)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON.map(orjson.dumps),
    EVENTS.map(orjson.dumps),
    st.fixed_dictionaries({"batch": st.lists(EVENTS | JSON, max_size=5)},
                          optional={"context": JSON, "integrations": JSON, "writeKey": st.just(WRITE_KEY)}).map(orjson.dumps),
)
HEADERS = st.fixed_dictionaries({}, optional={
    "Authorization": st.sampled_from([AUTH["Authorization"], "Basic", "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe").decode(),
                                      "Basic " + base64.b64encode(b"second-key").decode()])
                     | st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=30).map(lambda t: t.encode("latin-1")),
    "Content-Encoding": st.sampled_from(["gzip", "identity", "deflate", "GZIP"]),
    "Content-Type": st.sampled_from(["application/json", "text/plain"]),
})
PATHS = st.sampled_from(["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/v1/batch",
                         "/v1/other", "/health", "/v1/"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, headers=HEADERS, body=BODIES, compress=st.booleans())
def test_fuzzed_requests_never_get_a_500_and_a_200_queues_exactly_the_events_sent(
    intake: tuple[TestClient, Queue], path: str, headers: dict[str, str], body: bytes, compress: bool
) -> None:
    client, queue = intake
    if compress and headers.get("Content-Encoding", "").lower() == "gzip":
        body = gzip.compress(body)
    before = received(queue)
    response = client.post(path, content=body, headers=headers)
    count_case(f"status {response.status_code}")
    assert response.status_code in (200, 400, 401, 404, 405), response.text
    if response.status_code != 200:
        assert received(queue) == before
        return
    sent = orjson.loads(gzip.decompress(body) if compress and headers.get("Content-Encoding", "").lower() == "gzip" else body)
    assert received(queue) - before == (len(sent["batch"]) if path == "/v1/batch" else 1)


# -- 5. metrics add up; dead letters ---------------------------------------------------


def test_metrics_add_up_across_every_fate_and_dead_letters_can_be_listed_and_replayed(
    emulator: MetronomeEmulator, service: Callable[..., Service], cli: Callable[..., Run], tmp_path: Path
) -> None:
    running = service(emulator.base_url).start()
    old = datetime.now(timezone.utc) - timedelta(days=40)
    events = [track("ok-1"), track("ok-2"), {"type": "identify", "userId": "u1", "messageId": "filtered-1"},
              {"type": "track", "event": "api_call", "messageId": "invalid-1", "timestamp": datetime.now(timezone.utc).isoformat()},
              track("too-old-1", when=old)]
    assert running.post("/v1/batch", {"batch": events}).status_code == 200
    metrics = running.drain()
    assert_adds_up(metrics)
    assert {c: metrics[f"actionmap_events_{c}_total"] for c in CATEGORIES} == {
        "delivered": 2, "filtered": 1, "invalid": 1, "dead_lettered": 1}
    assert set(emulator.stored) == {"ok-1", "ok-2"}
    assert metrics["actionmap_delivery_latency_seconds_count"] == 2
    assert metrics["actionmap_queue_oldest_age_seconds"] == 0

    listed = cli("dead-letters", "list", "--data-dir", str(running.data_dir))  # alongside the running service
    letters = [orjson.loads(line) for line in listed.out.splitlines()]
    assert listed.code == 0 and {l["event"]["messageId"]: (l["connection"], l["subscription"]) for l in letters} == {
        "invalid-1": (CONNECTION, "Usage events"), "too-old-1": (CONNECTION, "Usage events")}
    reasons = {l["event"]["messageId"]: l["reason"] for l in letters}
    assert "customer_id" in reasons["invalid-1"] and "older than the destination accepts" in reasons["too-old-1"]
    assert TOKEN not in listed.out

    # the mapping still cannot bill an event without a customer: only the old one is queued again
    mapping = tmp_path / "mapping.yaml"
    replayed = cli("dead-letters", "replay", "--data-dir", str(running.data_dir), "-m", str(mapping))
    assert replayed.code == 0 and orjson.loads(replayed.out) == {"dead_letters": 1, "events_queued": 1, "connections": {CONNECTION: 1}}
    metrics = running.drain()
    assert_adds_up(metrics)
    assert metrics["actionmap_events_received_total"] == 6 and metrics["actionmap_events_dead_lettered_total"] == 2
    remaining = cli("dead-letters", "list", "--data-dir", str(running.data_dir)).out.splitlines()
    assert [orjson.loads(line)["event"]["messageId"] for line in remaining] == ["invalid-1", "too-old-1"]


def _state(running: Service) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(running.url + "/health", timeout=10.0)
    return answer.status_code, answer.json()["connections"][CONNECTION]


def test_a_refused_credential_pauses_delivery_keeps_the_events_and_shows_in_health(
    emulator: MetronomeEmulator, service: Callable[..., Service]
) -> None:
    """Health stays 200 (the intake still accepts: one connection's credential must not turn clients away) and
    its body says which connection is refused and why."""
    running = service(emulator.base_url, token="not-the-right-token-0000").start()
    events = [track(f"kept-{i}") for i in range(10)]
    assert running.post("/v1/batch", {"batch": events}).status_code == 200
    wait_for(lambda: _state(running)[1]["state"] == "credential refused", what="health to report the refusal")
    status, state = _state(running)
    assert status == 200 and state["queued"] == 10 and state["oldest_age_seconds"] > 0
    assert "refused the credential" in state["refused"] and "not-the-right-token" not in running.log.read_text() + str(state)
    assert running.post("/v1/batch", {"batch": [track("accepted-while-refused")]}).status_code == 200
    metrics = running.metrics()
    assert metrics["actionmap_credential_refused"] == 1 and metrics["actionmap_queue_depth"] == 11
    assert metrics["actionmap_events_dead_lettered_total"] == 0 and metrics["actionmap_queue_oldest_age_seconds"] > 0
    assert_adds_up(metrics)
    assert emulator.stored == {}
    assert "not-the-right-token" not in running.log.read_text()
    assert running.terminate() == 0
