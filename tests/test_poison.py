"""Poison events (issue 12): whatever comes in, every event gets exactly one outcome, in every mode.

A batch of 100 events holds two that nest 251 and 300 levels (past the limit
of ``engine.limits.MAX_DEPTH``) and one on whose path a fault is injected (a
RuntimeError raised from inside the mapping by ``tests/inject/sitecustomize.py``,
loaded into the real ``send``, ``serve`` and ``consume`` processes). The other
97 must all be delivered, the three dead-lettered as invalid with their reason,
and the counts must add up. Then hypothesis throws arbitrary JSON at the
readers, the pipeline, delivery and the service's worker.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from destinations.metronome.emulator import MetronomeEmulator
from engine.delivery import RetryPolicy, Sender
from engine.events import BadInput, Event, read_events
from engine.limits import MAX_DEPTH
from engine.config.mappingfile import MappingFile, load_mapping_file
from engine.runtime.send import send_events
from engine.runtime.observability import Health, Metrics
from engine.runtime.serve.queue import CATEGORIES, Queue
from engine.runtime.serve.workers import CredentialGate, Worker
from tests.conftest import REPO, expected_payload, track_events

TOKEN = "mtr-poison-test-token-5d1e9a"
MARKER = "poison-fault-7c2b"
INJECT = REPO / "tests" / "inject"
MAPPING = REPO / "mappings" / "metronome.yaml"
DEEP = {10: 251, 50: 300}  # event index -> how many levels it nests
FAULTED = 70  # the event whose mapping raises


def nested(levels: int) -> Any:
    """A value that nests ``levels`` levels of objects and arrays."""
    value: Any = {"leaf": 1}
    for level in range(levels - 1):
        value = [value] if level % 2 else {"d": value}
    return value


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def poisoned_batch(prefix: str) -> list[dict[str, Any]]:
    events = track_events(100, seed=12, prefix=prefix)
    for index, levels in DEEP.items():
        events[index]["properties"] = {"deep": nested(levels - 2)}
        assert depth(events[index]) == levels
    events[FAULTED]["properties"]["inject"] = MARKER
    return events


def good(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    skipped = {*DEEP, FAULTED}
    return {e["messageId"]: expected_payload(e) for i, e in enumerate(events) if i not in skipped}


def ndjson(events: list[dict[str, Any]]) -> str:
    """The events as NDJSON; the stdlib writes what orjson refuses to (300 levels)."""
    return "".join(json.dumps(e) + "\n" for e in events)


def injected_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "ACTIONMAP_INJECT_FAULT": MARKER, "METRONOME_API_TOKEN": TOKEN, **extra}


def assert_poison_letters(letters: list[dict[str, Any]], events: list[dict[str, Any]], text_of: Callable[[int], str]) -> None:
    """Three dead letters: two past the depth limit keeping the event's text as it came, one naming the injected fault."""
    assert len(letters) == 3, letters
    deep = sorted((l for l in letters if f"nests deeper than {MAX_DEPTH} levels" in l["reason"]), key=lambda l: l["raw"])
    assert [l["raw"] for l in deep] == sorted(text_of(i) for i in DEEP), "the text that came in is kept"
    assert all(l["event"] is None for l in deep)
    (fault,) = [l for l in letters if "raw" not in l]
    assert "internal error while mapping this event (RuntimeError: injected fault" in fault["reason"]
    assert fault["event"] == events[FAULTED]


@pytest.fixture
def emulator() -> Iterator[MetronomeEmulator]:
    from tests.test_consume import TOKEN as CONSUME_TOKEN  # the tokens the consume and serve helpers give their processes
    from tests.test_serve import TOKEN as SERVE_TOKEN

    with MetronomeEmulator(tokens={TOKEN, CONSUME_TOKEN, SERVE_TOKEN}) as running:
        yield running


# -- one test per mode -------------------------------------------------------------------


def test_send_delivers_the_97_and_dead_letters_the_three_with_their_text(emulator: MetronomeEmulator, tmp_path: Path) -> None:
    events = poisoned_batch("send")
    lines = ndjson(events)
    (tmp_path / "events.ndjson").write_text(lines)
    dead = tmp_path / "dead.ndjson"
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "send", "-m", str(MAPPING), str(tmp_path / "events.ndjson"),
         "--set", f"base_url={emulator.base_url}", "--dead-letter", str(dead)],
        env=injected_env(), capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert summary.pop("connections") == {"metronome": summary}, "one connection: its counts are the totals"
    assert summary == {"events": 100, "delivered": 97, "filtered": 0, "invalid": 3, "dead_lettered": 0, "kept": 0,
                       "requests": summary["requests"]}
    assert emulator.stored == good(events)
    text = lines.splitlines()
    assert_poison_letters([orjson.loads(l) for l in dead.read_bytes().splitlines()], events, lambda i: text[i])
    assert TOKEN not in done.stdout + done.stderr + dead.read_text()


def test_preview_gives_the_three_an_invalid_line_and_maps_the_rest(tmp_path: Path) -> None:
    events = poisoned_batch("preview")
    (tmp_path / "events.ndjson").write_text(ndjson(events))
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "preview", "-m", str(MAPPING), str(tmp_path / "events.ndjson")],
        env=injected_env(), capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2
    lines = [orjson.loads(l) for l in done.stdout.splitlines()]
    assert [l["event"] for l in lines] == list(range(100)), "exactly one line per event"
    assert {l["payload"]["transaction_id"]: l["payload"] for l in lines if l["status"] == "ok"} == good(events)
    bad = {l["event"]: " ".join(l["errors"]) for l in lines if l["status"] != "ok"}
    assert sorted(bad) == sorted([*DEEP, FAULTED])
    assert all(f"nests deeper than {MAX_DEPTH} levels" in bad[i] for i in DEEP)
    assert "RuntimeError: injected fault" in bad[FAULTED]


def test_serve_delivers_the_97_and_its_metrics_add_up(emulator: MetronomeEmulator, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_serve import AUTH, Service, assert_adds_up, write_mapping

    for name, value in injected_env().items():
        monkeypatch.setenv(name, value)
    running = Service(tmp_path, write_mapping(tmp_path / "mapping.yaml", emulator.base_url)).start()
    try:
        events = poisoned_batch("serve")
        answer = httpx.post(running.url + "/v1/batch", content=json.dumps({"batch": events}), headers=AUTH, timeout=30)
        assert answer.status_code == 200, answer.text
        metrics = running.drain(timeout=120)
        assert emulator.stored == good(events)
        assert metrics["actionmap_events_received_total"] == 100
        assert metrics["actionmap_events_delivered_total"] == 97
        assert metrics["actionmap_events_invalid_total"] == 3
        assert_adds_up(metrics)
        listed = subprocess.run([sys.executable, "-m", "engine.cli", "dead-letters", "list", "--data-dir", str(running.data_dir)],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
        letters = [orjson.loads(l) for l in listed.stdout.splitlines()]
        assert len(letters) == 3
        reasons = sorted(l["reason"] for l in letters)
        assert sum(f"nests deeper than {MAX_DEPTH} levels" in r for r in reasons) == 2, reasons
        assert any("RuntimeError: injected fault" in r for r in reasons), reasons
        kept = {json.loads(l["raw"])["messageId"] if l.get("raw") else l["event"]["messageId"] for l in letters}
        assert kept == {events[i]["messageId"] for i in (*DEEP, FAULTED)}, "each dead letter keeps its event"
        assert running.terminate() == 0
    finally:
        running.stop()
    assert TOKEN not in running.log.read_text() and running.env["METRONOME_API_TOKEN"] not in running.log.read_text()


def test_consume_delivers_the_97_commits_everything_and_dead_letters_the_three(
    emulator: MetronomeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests.test_consume import WorkerProcess, committed, ends_of, eventually, new_topic, produce, read_topic

    broker = request.getfixturevalue("broker")
    for name, value in injected_env().items():
        monkeypatch.setenv(name, value)
    events = poisoned_batch("consume")
    topic, dead_topic, group = new_topic(broker, 1), new_topic(broker, 1), "poison-group"
    values = [json.dumps(e).encode() for e in events]
    placed = produce(broker, topic, [(b"k", v, 0) for v in values])
    worker = WorkerProcess(broker, topic, group, emulator, "--dead-letter-topic", dead_topic)
    try:
        eventually(lambda: len(emulator.stored) == 97 or worker.process.poll() is not None, 120, "the 97 good events stored")
        assert worker.process.poll() is None, worker.stderr
        eventually(lambda: committed(broker, topic, group, 1) == ends_of(placed), 60, "the partition committed to its end")
        summary = worker.stop()
    finally:
        if worker.process.poll() is None:
            worker.kill()
    assert emulator.stored == good(events)
    assert summary == {"events": 100, "delivered": 97, "filtered": 0, "invalid": 3, "dead_lettered": 0, "kept": 0,
                       "requests": summary["requests"]}
    letters = [orjson.loads(m.value() or b"") for m in read_topic(broker, dead_topic, 1, expected=3)]
    assert_poison_letters(letters, events, lambda i: values[i].decode())


from tests.test_consume import broker  # noqa: E402,F401  (the Kafka broker fixture, for the consume test above)


# -- arbitrary input ----------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),  # past the 64-bit range both ways
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e-300, max_value=1e-300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),  # lone surrogates
    st.sampled_from(["track", "identify", "api_call", "", "2026-11-30T10:00:00Z", "$.userId", "{{event}}"]),
)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["type", "event", "userId", "anonymousId", "messageId", "timestamp", "properties", "integrations",
                     "context", "traits", "x", ""]) | st.text(max_size=4), inner, max_size=6), max_leaves=20)
_deep = st.builds(lambda levels, inner: _wrap(levels, inner), st.integers(MAX_DEPTH - 2, 1100), _scalars)


def _wrap(levels: int, inner: Any) -> dict[str, Any]:
    value = inner
    for level in range(levels):
        value = [value] if level % 3 == 0 else {"p": value}
    return {"type": "track", "event": "api_call", "userId": "u", "messageId": f"deep-{levels}", "timestamp": "2026-11-30T10:00:00Z",
            "properties": value}


_event = st.one_of(
    _json,
    st.fixed_dictionaries({"type": st.just("track"), "event": _scalars, "userId": _scalars, "messageId": _scalars,
                           "timestamp": _scalars, "properties": _json}),
    _deep,
)


def _text(value: Any) -> str:
    """JSON text as a careless producer writes it: the stdlib emits NaN, huge integers and lone surrogates."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return '{"unwritable": true'


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(values=st.lists(_event, min_size=1, max_size=12), form=st.sampled_from(["ndjson", "array", "values"]),
       garbage=st.lists(st.binary(max_size=20).map(lambda b: b.decode("latin-1")), max_size=2))
def test_arbitrary_json_gets_exactly_one_outcome_per_event_and_nothing_raises(
    values: list[Any], form: str, garbage: list[str], emulator_for_property: MetronomeEmulator, mapping_for_property: MappingFile,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    mapping = mapping_for_property
    if form == "values":
        items: Any = values  # library mode: Python values, whatever they hold
        count = len(items)
    else:
        lines = [_text(v).replace("\n", " ") for v in values] + [g.replace("\n", " ") for g in garbage if g.strip()]
        if form == "ndjson":  # a first line that opens an array would make the whole input one JSON array
            lines.insert(0, '{"type": "identify", "userId": "first"}')
        text = "\n".join(lines) + "\n" if form == "ndjson" else "[" + ", ".join(lines) + "]"
        items = list(read_events(io.StringIO(text)))
        assert all(isinstance(i, (Event, BadInput)) for i in items)
        count = len(items)
        if form == "ndjson":
            assert count == len(lines), "one item per non-empty line"
    dead = tmp_path_factory.mktemp("dead") / "dead.ndjson"
    before = len(emulator_for_property.stored)
    sender = Sender(mapping, policy=RetryPolicy(max_duration=5.0))
    try:
        summary = send_events(mapping, items, dead_letters=dead, sender=sender)
    finally:
        sender.close()
    assert summary.events == count
    assert summary.delivered + summary.filtered + summary.invalid + summary.dead_lettered == count, summary
    letters = dead.read_bytes().splitlines()
    assert len(letters) == summary.invalid + summary.dead_lettered, "each event not delivered has its dead letter"
    assert all(isinstance(orjson.loads(l), dict) for l in letters)
    assert len(emulator_for_property.stored) - before <= summary.delivered
    if form == "values":  # nothing given is lost: each dead letter keeps the value, or its text when past a limit
        records = [orjson.loads(l) for l in letters]
        assert sum(r["event"] is None and "raw" not in r for r in records) <= sum(v is None for v in values)


@pytest.fixture(scope="module")
def emulator_for_property() -> Iterator[MetronomeEmulator]:
    with MetronomeEmulator(tokens={TOKEN}) as running:
        yield running


@pytest.fixture(scope="module")
def mapping_for_property(emulator_for_property: MetronomeEmulator) -> MappingFile:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("METRONOME_API_TOKEN", TOKEN)
        return load_mapping_file(MAPPING, overrides={"base_url": emulator_for_property.base_url})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies=st.lists(st.one_of(_event.map(lambda v: _text(v).encode()), st.binary(max_size=40)), min_size=1, max_size=12))
def test_the_service_worker_settles_every_queued_row_whatever_it_holds(
    bodies: list[bytes], mapping_for_property: MappingFile, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Rows as a damaged or hostile queue may hold them: each is settled once; none is returned to the queue."""
    mapping = mapping_for_property
    queue = Queue(tmp_path_factory.mktemp("queue"), [mapping.name])
    try:
        queue.put(bodies)
        health = Health([mapping.name])
        stop = threading.Event()
        sender = Sender(mapping, policy=RetryPolicy(max_duration=5.0))
        worker = Worker("worker-test", mapping, queue, sender, Metrics(queue, health),
                        CredentialGate(health, mapping.name, lambda: ("valid", "")), stop, retry_for=0.0)
        try:
            while queue.stats().connections[mapping.name].depth:
                claimed = queue.claim(mapping.name, 100, 60.0)
                assert claimed, "rows are due again at once: nothing may wait"
                worker.process(claimed)
        finally:
            sender.close()
        stats = queue.stats()
        lane = stats.connections[mapping.name]
        assert lane.depth == 0 and stats.events == 0
        assert lane.counters["received"] == len(bodies) == sum(lane.counters[c] for c in CATEGORIES)
        assert lane.counters["retried"] == 0, "no row went back to the queue"
        letters = list(queue.dead_letters())
        assert len(letters) == lane.counters["invalid"] + lane.counters["dead_lettered"], "one dead letter per event not delivered"
    finally:
        queue.close()


SUMMING = """
destination: metronome
settings:
  api_token: ${METRONOME_API_TOKEN}
  base_url: BASE
subscriptions:
  - name: Usage events
    action: send_event
    mapping:
      properties: {total: {"@jmespath": "sum(properties.n)"}}
"""


def test_a_payload_that_cannot_be_encoded_is_dead_lettered_and_its_batch_settles(
    emulator: MetronomeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapping may compute what no JSON encoder keeps (a sum past 64 bits): that payload alone is dead-lettered."""
    monkeypatch.setenv("METRONOME_API_TOKEN", TOKEN)
    path = tmp_path / "summing.yaml"
    path.write_text(SUMMING.replace("BASE", emulator.base_url))
    mapping = load_mapping_file(path)
    events = track_events(20, seed=14, prefix="sum")
    for i, event in enumerate(events):
        event["properties"] = {"n": [9 * 10**18] * 3 if i == 7 else [1, 2]}  # 2.7e19: past the 64-bit range
    queue = Queue(tmp_path / "queue", [mapping.name])
    try:
        queue.put([orjson.dumps(e) for e in events])
        health = Health([mapping.name])
        sender = Sender(mapping, policy=RetryPolicy(max_duration=5.0))
        worker = Worker("worker-test", mapping, queue, sender, Metrics(queue, health),
                        CredentialGate(health, mapping.name, lambda: ("valid", "")), threading.Event(), retry_for=0.0)
        try:
            worker.process(queue.claim(mapping.name, 100, 60.0))
        finally:
            sender.close()
        lane = queue.stats().connections[mapping.name]
        assert lane.depth == 0 and lane.counters["retried"] == 0
        assert (lane.counters["delivered"], lane.counters["dead_lettered"]) == (19, 1)
        (letter,) = queue.dead_letters()
        assert "could not be encoded" in letter["reason"] and letter["event"]["messageId"] == "sum-7"
        assert letter["payload"]["transaction_id"] == "sum-7", "the payload is kept, though orjson cannot encode it"
    finally:
        queue.close()
    assert sorted(emulator.stored) == sorted(e["messageId"] for i, e in enumerate(events) if i != 7)


def test_a_header_http_cannot_carry_is_a_startup_error_not_a_traceback(tmp_path: Path) -> None:
    mapping = tmp_path / "webhook.yaml"
    mapping.write_text('destination: webhook\nsettings:\n  url: http://127.0.0.1:9/hook\n  headers: {X-Api-Key: "cl\u00e9-secret"}\n'
                       "subscriptions:\n  - name: all\n    action: send\n")
    (tmp_path / "events.ndjson").write_text('{"type": "track", "event": "x", "userId": "u", "messageId": "m1"}\n')
    done = subprocess.run([sys.executable, "-m", "engine.cli", "send", "-m", str(mapping), str(tmp_path / "events.ndjson")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "header 'X-Api-Key' holds characters HTTP headers cannot carry" in done.stderr
    assert "secret" not in done.stderr, "the header's value (a secret) is never printed"
