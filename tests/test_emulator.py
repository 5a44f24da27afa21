"""The Metronome emulator, exercised over real sockets as a sender would see it."""

from __future__ import annotations

import gzip
import json
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from destinations.metronome.emulator import FAULT_KINDS, Faults, MetronomeEmulator, main
from tests.conftest import REPO

TOKEN = "emulator-test-token-7f3a"
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(tid: str = "m1", **fields: Any) -> dict[str, Any]:
    """A valid event at NOW; keyword arguments override or (with None) remove fields."""
    base: dict[str, Any] = {"transaction_id": tid, "customer_id": "c1", "event_type": "api_call",
                            "timestamp": "2026-11-26T10:00:00Z", "properties": {"n": "1"}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


Start = Callable[..., MetronomeEmulator]


@pytest.fixture
def start(emulators: Start) -> Start:
    """Start emulators (clock fixed at NOW unless given); they stop after the test."""

    def make(**options: Any) -> MetronomeEmulator:
        options.setdefault("tokens", {TOKEN})
        options.setdefault("clock", lambda: NOW)
        return emulators(**options)

    return make


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[MetronomeEmulator, httpx.Client]]:
    """One emulator and keep-alive client for the many examples of a property test (reset per example)."""
    with MetronomeEmulator(tokens={TOKEN}, clock=lambda: NOW) as emulator, client(emulator) as c:
        yield emulator, c


def plain_http(base_url: str, headers: dict[str, str], timeout: float = 5.0) -> httpx.Client:
    """A client for plain http on loopback (no TLS context to build: that alone costs ~40 ms per client)."""
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout, verify=False)


def client(emulator: MetronomeEmulator, timeout: float = 5.0, **headers: str) -> httpx.Client:
    return plain_http(emulator.base_url, headers or AUTH, timeout)


def ingest(emulator: MetronomeEmulator, body: Any, **headers: str) -> httpx.Response:
    with client(emulator, **headers) as c:
        return c.post("/v1/ingest", json=body)


# -- auth, before anything else ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer wrong-token-1234"}, 403),
    ],
)
def test_a_bad_credential_is_refused_before_the_body_is_looked_at(start: Start, headers: dict[str, str], status: int) -> None:
    emulator = start(faults=["500"])
    with plain_http(emulator.base_url, headers) as c:
        for body in (b"[]", b"not json", json.dumps([event()]).encode()):
            response = c.post("/v1/ingest", content=body)
            assert response.status_code == status
            assert ("Authorization header" if status == 401 else "is not valid") in response.json()["message"]
    assert emulator.stored == {}
    assert emulator.faults.pending == 1, "faults apply only to requests that pass auth"


def test_the_credential_check_an_empty_batch_with_a_valid_token_is_a_400(start: Start) -> None:
    response = ingest(start(), [])
    assert response.status_code == 400
    assert response.json() == {"message": "[array is too short: must have at least 1 elements but instance has 0 elements]"}


def test_the_refused_token_is_masked_in_the_message_and_the_request_log(start: Start) -> None:
    emulator = start()
    response = ingest(emulator, [], Authorization="Bearer secret-guess-9876")
    assert "secret-guess" not in response.text and "9876" in response.text
    ingest(emulator, [event()])
    logged = [r.headers["authorization"] for r in emulator.requests]
    assert logged == ["Bearer ********9876", f"Bearer ********{TOKEN[-4:]}"]
    assert TOKEN not in json.dumps(emulator.state())


# -- whole-request 400s ----------------------------------------------------------------


def _long(n: int) -> str:
    return "x" * n


MISSING_PROPERTY = '#/1: object has missing required properties (["{}"])'
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("an object", {"events": []}, "#: expected a JSON array"),
    ("101 events", [event(f"m{i}") for i in range(101)], "must have at most 100 elements but instance has 101"),
    ("an item that is not an object", [event(), "m2"], "#/1: expected an event object, got string"),
    ("no transaction_id", [event(), event(transaction_id=None)], MISSING_PROPERTY.format("transaction_id")),
    ("no customer_id", [event(), event(customer_id=None)], MISSING_PROPERTY.format("customer_id")),
    ("no event_type", [event(), event(event_type=None)], MISSING_PROPERTY.format("event_type")),
    ("no timestamp", [event(), event(timestamp=None)], MISSING_PROPERTY.format("timestamp")),
    ("an empty transaction_id", [event(), event("")], "#/1/transaction_id: string is too short"),
    ("an empty customer_id", [event(), event(customer_id="")], "#/1/customer_id: string is too short"),
    ("an empty event_type", [event(), event(event_type="")], "#/1/event_type: string is too short"),
    ("a 129-character transaction_id", [event(), event(_long(129))],
     "#/1/transaction_id: string is too long: must have at most 128 characters but instance has 129"),
    ("a number customer_id", [event(), event(customer_id=42)], "#/1/customer_id: expected type string, got integer"),
    ("a number timestamp", [event(), event(timestamp=1764151200)], "#/1/timestamp: expected type string, got integer"),
    ("array properties", [event(), event(properties=[1])], "#/1/properties: expected type object, got array"),
    ("null properties", [event(), event(properties=None) | {"properties": None}],
     "#/1/properties: expected type object, got null"),
    ("2001 properties", [event(), event(properties={str(i): "v" for i in range(2001)})],
     "must have at most 2000 but instance has 2001"),
    ("a timestamp without offset", [event(), event(timestamp="2026-11-26T10:00:00")],
     '#/1/timestamp: "2026-11-26T10:00:00" is not an RFC 3339'),
    ("a date only", [event(), event(timestamp="2026-11-26")], "#/1/timestamp"),
    ("a 2-digit year", [event(), event(timestamp="26-11-26T10:00:00Z")], "#/1/timestamp"),
    ("an impossible date", [event(), event(timestamp="2026-02-30T10:00:00Z")], "#/1/timestamp"),
    ("an offset with 75 minutes", [event(), event(timestamp="2026-11-26T10:00:00+01:75")], "#/1/timestamp"),
    ("an offset of 24 hours", [event(), event(timestamp="2026-11-26T10:00:00+24:00")], "#/1/timestamp"),
    ("a leap second", [event(), event(timestamp="2026-11-26T09:59:60Z")], "#/1/timestamp"),
    ("non-ASCII digits", [event(), event(timestamp="２０２６-11-26T10:00:00Z")], "#/1/timestamp"),
]


@pytest.mark.parametrize(("body", "expected"), [pytest.param(b, e, id=name) for name, b, e in BAD_BODIES])
def test_a_bad_event_rejects_the_whole_request_and_names_where(start: Start, body: Any, expected: str) -> None:
    emulator = start()
    response = ingest(emulator, body)
    assert response.status_code == 400
    message = response.json()["message"]
    assert message.startswith("[") and message.endswith("]")
    assert expected in message
    assert emulator.stored == {}, "a 400 stores nothing, not even the valid events"


@pytest.mark.parametrize(
    ("content", "headers", "expected"),
    [
        (b"[{", {}, "not valid JSON"),
        (b"", {}, "body is empty"),
        (b"[NaN]", {}, "not valid JSON"),
        (b"[]", {"Content-Encoding": "gzip"}, "does not decompress"),
        (b"[]", {"Content-Encoding": "br"}, "unsupported Content-Encoding 'br'"),
    ],
)
def test_a_body_that_does_not_decode_is_a_400(start: Start, content: bytes, headers: dict[str, str], expected: str) -> None:
    with client(start()) as c:
        response = c.post("/v1/ingest", content=content, headers=headers)
    assert response.status_code == 400
    assert expected in response.json()["message"]


def test_limits_are_inclusive(start: Start) -> None:
    emulator = start()
    batch = [event(_long(128))] + [event(f"m{i}", properties={str(k): k for k in range(2000)}) for i in range(99)]
    assert ingest(emulator, batch).status_code == 200
    assert len(emulator.stored) == 100


def test_many_errors_are_reported_together_but_the_message_stays_bounded(start: Start) -> None:
    message = ingest(start(), [event(customer_id="") for _ in range(100)]).json()["message"]
    assert "#/0/customer_id" in message and "#/19/customer_id" in message and "#/20/" not in message
    assert message.endswith(", ... and 80 more]")


def test_a_gzip_body_is_accepted(start: Start) -> None:
    emulator = start()
    with client(emulator) as c:
        body = gzip.compress(json.dumps([event("g1"), event("g2")]).encode())
        response = c.post("/v1/ingest", content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 200
    assert list(emulator.stored) == ["g1", "g2"]


def test_a_chunked_body_is_accepted(start: Start) -> None:
    emulator = start()
    raw = json.dumps([event("c1")]).encode()
    with client(emulator) as c:
        response = c.post("/v1/ingest", content=iter([raw[:10], raw[10:]]))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200
    assert list(emulator.stored) == ["c1"]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_size_limit_is_a_413(start: Start, chunked: bool) -> None:
    emulator = start(max_body_bytes=1000)
    raw = json.dumps([event(f"m{i}") for i in range(20)]).encode()
    with client(emulator) as c:
        response = c.post("/v1/ingest", content=iter([raw]) if chunked else raw)
    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["message"]
    assert emulator.stored == {}


# -- the timestamp window, by the injected clock ------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2026-10-23T10:00:00Z", True),  # exactly 34 days back
        ("2026-10-23T09:59:59.999Z", False),
        ("2026-11-27T10:00:00Z", True),  # exactly 24 hours ahead
        ("2026-11-27T10:00:00.001Z", False),
        ("2026-11-27T11:00:00+01:00", True),  # the same instant, another offset
        ("2026-11-27T11:00:00.001+01:00", False),
        ("2026-10-22T23:00:00-11:00", True),
        ("2026-11-26t10:00:00z", True),
    ],
)
def test_the_timestamp_window(start: Start, timestamp: str, accepted: bool) -> None:
    response = ingest(start(), [event(timestamp=timestamp)])
    assert response.status_code == (200 if accepted else 400)
    if not accepted:
        assert "#/0/timestamp" in response.json()["message"]


def test_the_window_moves_with_the_clock(start: Start) -> None:
    now = [NOW]
    emulator = start(clock=lambda: now[0])
    assert ingest(emulator, [event("a", timestamp="2026-10-23T10:00:00Z")]).status_code == 200
    now[0] += timedelta(seconds=1)
    response = ingest(emulator, [event("b", timestamp="2026-10-23T10:00:00Z")])
    assert response.status_code == 400
    assert "more than 34 days in the past; the earliest accepted now is 2026-10-23T10:00:01.000Z" in response.json()["message"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset=st.integers(min_value=-40 * 86400 * 1000, max_value=2 * 86400 * 1000),
    zone_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_window_property_against_datetime_arithmetic(
    shared: tuple[MetronomeEmulator, httpx.Client], offset: int, zone_minutes: int
) -> None:
    """Any instant, written in any offset, is accepted exactly when plain datetime arithmetic says it is in the window."""
    _, c = shared
    instant = NOW + timedelta(milliseconds=offset)
    text = instant.astimezone(timezone(timedelta(minutes=zone_minutes))).isoformat(timespec="milliseconds")
    expected = NOW - timedelta(days=34) <= instant <= NOW + timedelta(hours=24)
    assert (c.post("/v1/ingest", json=[event(f"t{offset}", timestamp=text)]).status_code == 200) == expected


# -- per-property value limit (to poison one event) ------------------------------------------


def test_a_property_value_over_the_limit_names_the_event_and_the_property(start: Start) -> None:
    emulator = start(property_value_limit=16)
    ok = event("fine", properties={"v": "x" * 14})  # "xxxxxxxxxxxxxx" with quotes is 16 bytes
    poisoned = event("poisoned", properties={"v": "1", "a/blob": "é" * 10})  # 2 quotes + 20 bytes of UTF-8
    response = ingest(emulator, [ok, poisoned])
    assert response.status_code == 400
    message = response.json()["message"]
    assert '#/1/properties/a~1blob' in message and 'property "a/blob"' in message
    assert 'transaction_id "poisoned"' in message and "22 bytes" in message
    assert "#/0" not in message
    assert emulator.stored == {}
    assert ingest(emulator, [ok]).status_code == 200


# -- deduplication ----------------------------------------------------------------------


def test_the_first_accepted_payload_wins_across_requests_and_within_one(start: Start) -> None:
    emulator = start()
    assert ingest(emulator, [event("a", customer_id="first"), event("b"), event("a", customer_id="second")]).status_code == 200
    assert ingest(emulator, [event("b", customer_id="later"), event("c")]).status_code == 200
    assert list(emulator.stored) == ["a", "b", "c"]
    assert emulator.stored["a"]["customer_id"] == "first"
    assert emulator.stored["b"]["customer_id"] == "c1"
    assert emulator.duplicates == 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(
    st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 9)), min_size=1, max_size=8), min_size=1, max_size=4))
def test_dedup_property_against_a_dictionary(
    shared: tuple[MetronomeEmulator, httpx.Client], batches: list[list[tuple[str, int]]]
) -> None:
    """What is stored is what a plain first-wins dictionary holds after the same batches."""
    emulator, c = shared
    emulator.reset()
    reference: dict[str, str] = {}
    repeats = 0
    for batch in batches:
        assert c.post("/v1/ingest", json=[event(tid, customer_id=str(n)) for tid, n in batch]).status_code == 200
        for tid, n in batch:
            repeats += tid in reference
            reference.setdefault(tid, str(n))
    assert {tid: p["customer_id"] for tid, p in emulator.stored.items()} == reference
    assert list(emulator.stored) == list(reference)
    assert emulator.duplicates == repeats


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "502", "503", "504"])
def test_a_5xx_fault_stores_nothing(start: Start, kind: str) -> None:
    emulator = start(faults=[kind])
    response = ingest(emulator, [event()])
    assert response.status_code == int(kind)
    assert f"emulated fault {kind}" in response.json()["message"]
    assert emulator.stored == {}
    assert ingest(emulator, [event()]).status_code == 200, "the script is consumed one entry per request"
    assert [(r.status, r.fault) for r in emulator.requests] == [(int(kind), kind), (200, None)]


def test_429_faults_with_and_without_retry_after(start: Start) -> None:
    emulator = start(faults=Faults(["429", "429_retry_after"], retry_after_ms=1500))
    plain = ingest(emulator, [event()])
    assert plain.status_code == 429
    assert plain.headers["X-Metronome-Rate-Limit-Type"] == "client"
    assert "Retry-After" not in plain.headers and "retry-after-ms" not in plain.headers
    timed = ingest(emulator, [event()])
    assert timed.status_code == 429
    assert (timed.headers["Retry-After"], timed.headers["retry-after-ms"]) == ("2", "1500")
    assert emulator.stored == {}


def test_store_part_then_500_stores_a_non_empty_proper_prefix(start: Start) -> None:
    emulator = start(faults=Faults(["store_part_then_500"] * 20, seed=7))
    sizes = []
    for i in range(20):
        emulator.reset()
        batch = [event(f"r{i}-{k}") for k in range(10)]
        response = ingest(emulator, batch)
        assert response.status_code == 500
        stored = list(emulator.stored)
        assert 1 <= len(stored) <= 9
        assert stored == [e["transaction_id"] for e in batch[: len(stored)]]
        sizes.append(len(stored))
    assert len(set(sizes)) > 1, "the prefix length is drawn at random"


def test_store_part_of_a_single_event_stores_it(start: Start) -> None:
    emulator = start(faults=["store_part_then_500"])
    assert ingest(emulator, [event("only")]).status_code == 500
    assert list(emulator.stored) == ["only"]


def test_store_all_then_drop_stores_everything_and_answers_nothing(start: Start) -> None:
    emulator = start(faults=["store_all_then_drop"])
    with pytest.raises(httpx.RemoteProtocolError):
        ingest(emulator, [event("a"), event("b")])
    assert list(emulator.stored) == ["a", "b"]
    assert emulator.requests[0].status is None
    assert ingest(emulator, [event("a"), event("b")]).status_code == 200
    assert emulator.duplicates == 2


def test_slow_answers_after_the_client_timeout_but_stores(start: Start) -> None:
    emulator = start(faults=Faults(["slow", "slow"], slow_delay=0.5))
    with pytest.raises(httpx.ReadTimeout):
        with client(emulator, timeout=0.1) as c:
            c.post("/v1/ingest", json=[event("s1")])
    deadline = time.monotonic() + 5
    while not emulator.requests and time.monotonic() < deadline:
        time.sleep(0.01)  # on a loaded machine the client may give up before the server has even read the body
    assert list(emulator.stored) == ["s1"], "the events are stored before the slow answer"
    began = time.monotonic()
    with client(emulator, timeout=5) as c:
        assert c.post("/v1/ingest", json=[event("s2")]).status_code == 200
    assert time.monotonic() - began >= 0.5


def test_reset_before_read_resets_the_connection_and_stores_nothing(start: Start) -> None:
    emulator = start(faults=["reset_before_read"])
    # no answer comes: the client sees the reset, or (when the close wins the race on a loaded machine) an end of stream
    with pytest.raises((httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        ingest(emulator, [event()])
    assert emulator.stored == {}
    assert [(r.status, r.fault, r.events) for r in emulator.requests] == [(None, "reset_before_read", None)]


def test_a_fault_that_stores_still_validates_first(start: Start) -> None:
    emulator = start(faults=["store_all_then_drop"])
    assert ingest(emulator, [event(customer_id="")]).status_code == 400
    assert emulator.stored == {}


def test_none_in_a_script_means_normal_and_faults_can_be_queued_later(start: Start) -> None:
    emulator = start(faults=[None, "503"])
    emulator.faults.extend(["500"])
    statuses = [ingest(emulator, [event()]).status_code for _ in range(4)]
    assert statuses == [200, 503, 500, 200]


def test_random_faults_follow_the_seed(start: Start) -> None:
    kinds = ["500", "503", "429"]
    emulator = start(faults=Faults(rate=0.5, kinds=kinds, seed=42))
    with client(emulator) as c:
        observed = [c.post("/v1/ingest", json=[event(f"x{i}")]).status_code for i in range(60)]
    reference = random.Random(42)
    expected = [int(reference.choice(kinds)) if reference.random() < 0.5 else 200 for _ in range(60)]
    assert observed == expected
    assert len(emulator.stored) == observed.count(200)


@pytest.mark.parametrize("bad", [{"script": ["404"]}, {"kinds": ["slowly"]}, {"rate": 1.5}, {"rate": 0.5, "kinds": []}])
def test_a_bad_fault_plan_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fault"):
        Faults(**bad)


def test_keep_alive_survives_refusals_and_status_faults(start: Start) -> None:
    """Several requests on one socket: each answer is read, the connection stays open."""
    emulator = start(faults=["500"])
    body = json.dumps([event()]).encode()

    def request(token: str) -> bytes:
        return (f"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    host, port = emulator.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        reader = sock.makefile("rb")
        statuses = []
        for token in ("nope-nope-nope", TOKEN, TOKEN):
            sock.sendall(request(token))
            status_line = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, value = line.decode().split(":", 1)
                headers[name.lower()] = value.strip()
            reader.read(int(headers["content-length"]))
            statuses.append(int(status_line.split()[1]))
    assert statuses == [403, 500, 200]


# -- rate limiting ----------------------------------------------------------------------


def test_the_rate_limit_answers_429_with_the_header_and_refills(start: Start) -> None:
    emulator = start(rate_limit=50)
    with client(emulator) as c:
        assert c.post("/v1/ingest", json=[event(f"a{i}") for i in range(100)]).status_code == 200
        limited = c.post("/v1/ingest", json=[event(f"over{i}") for i in range(50)])  # a second's worth of refill
        assert limited.status_code == 429
        assert limited.headers["X-Metronome-Rate-Limit-Type"] == "client"
        assert "over0" not in emulator.stored
        time.sleep(0.12)  # at 50 events/s, at least 6 tokens come back
        assert c.post("/v1/ingest", json=[event(f"b{i}") for i in range(5)]).status_code == 200
    assert len(emulator.stored) == 105


def test_rate_limit_is_off_by_default(start: Start) -> None:
    emulator = start()
    with client(emulator) as c:
        statuses = {c.post("/v1/ingest", json=[event(f"r{j}-{i}") for i in range(100)]).status_code for j in range(30)}
    assert statuses == {200}


# -- read-back -------------------------------------------------------------------------


def test_events_search_reads_back_as_metronome_does(start: Start) -> None:
    emulator = start()
    ingest(emulator, [event("a", properties={"tokens": "12"}), event("b", properties=None)])
    ingest(emulator, [event("a", customer_id="again")])
    with client(emulator) as c:
        response = c.post("/v1/events/search", json={"transactionIds": ["b", "a", "unknown"]})
    assert response.status_code == 200
    found = response.json()
    assert [(e["transaction_id"], e["is_duplicate"], e["customer_id"]) for e in found] == [
        ("b", False, "c1"), ("a", False, "c1"), ("a", True, "again")]
    first = found[1]
    assert set(first) >= {"id", "transaction_id", "customer_id", "event_type", "timestamp", "properties", "is_duplicate"}
    assert first["properties"] == {"tokens": "12"} and found[0]["properties"] == {}
    assert first["event_type"] == "api_call" and first["timestamp"] == "2026-11-26T10:00:00Z"
    assert len({e["id"] for e in found}) == 3


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Authorization": "Bearer unknown-token"}, {"transactionIds": []}, 403),
    (AUTH, {"transaction_ids": ["a"]}, 400),
    (AUTH, {"transactionIds": "a"}, 400),
])
def test_events_search_checks_auth_and_its_body(start: Start, headers: dict[str, str], body: Any, status: int) -> None:
    with plain_http(start().base_url, headers) as c:
        assert c.post("/v1/events/search", json=body).status_code == status


def test_the_request_log_and_state(start: Start) -> None:
    emulator = start()
    ingest(emulator, [event(f"m{i}") for i in range(101)])
    ingest(emulator, [event("m1"), event("m2")])
    requests = emulator.requests
    assert [(r.method, r.path, r.events, r.status, r.fault) for r in requests] == [
        ("POST", "/v1/ingest", 101, 400, None), ("POST", "/v1/ingest", 2, 200, None)]
    assert requests[1].body == [event("m1"), event("m2")]
    assert requests[0].received <= requests[1].received
    assert emulator.max_events_in_a_request == 101, "an oversized request is seen even when rejected"
    with plain_http(emulator.base_url, {}) as c:
        state = c.get("/_emulator/state").json()
        assert c.get("/nowhere").status_code == 404
    assert state == json.loads(json.dumps(emulator.state()))
    assert state["stored"] == {"m1": event("m1"), "m2": event("m2")}
    assert len(emulator.requests) == 2, "the emulator's own endpoints are not logged"
    emulator.reset()
    assert (emulator.requests, emulator.stored, emulator.duplicates, emulator.max_events_in_a_request) == ([], {}, 0, 0)


def test_lifecycle(start: Start) -> None:
    emulator = start()
    with pytest.raises(RuntimeError, match="already serving"):
        emulator.start()
    with pytest.raises(ValueError, match="token"):
        MetronomeEmulator(tokens=[])
    with MetronomeEmulator(tokens={TOKEN}) as own:
        url = own.base_url
        assert ingest(own, [event(timestamp=datetime.now(timezone.utc).isoformat())]).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "/v1/ingest", json=[], headers=AUTH)


def test_stop_is_prompt_with_idle_keep_alive_connections_and_slow_answers(start: Start) -> None:
    emulator = MetronomeEmulator(tokens={TOKEN}, clock=lambda: NOW, faults=Faults([None, "slow"], slow_delay=30))
    emulator.start()
    idle = client(emulator)
    assert idle.post("/v1/ingest", json=[event("k")]).status_code == 200  # the connection stays open
    slow = client(emulator, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        slow.post("/v1/ingest", json=[event("s")])
    began = time.monotonic()
    emulator.stop()
    assert time.monotonic() - began < 5
    idle.close()
    slow.close()


# -- the command line -------------------------------------------------------------------


def test_the_command_line_serves_until_sigterm_and_prints_a_summary() -> None:
    code = "import sys; from destinations.metronome.emulator import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--token", TOKEN, "--token", "second-token-0000"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        now = datetime.now(timezone.utc).isoformat()
        with plain_http(url, AUTH) as c:
            assert c.post("/v1/ingest", json=[event("cli-1", timestamp=now), event("cli-2", timestamp=now)]).status_code == 200
            assert c.post("/v1/ingest", json=[event("cli-1", timestamp=now)]).status_code == 200
            assert c.post("/v1/ingest", json=[], headers={"Authorization": "Bearer bad-token-xyz"}).status_code == 403
            assert sorted(c.get("/_emulator/state").json()["stored"]) == ["cli-1", "cli-2"]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"requests": 3, "statuses": {"200": 2, "403": 1}, "faults": {}, "stored": 2,
                       "duplicates": 1, "max_events_in_a_request": 2}


def test_the_command_line_says_when_the_port_is_taken(start: Start, capsys: pytest.CaptureFixture[str]) -> None:
    port = start().base_url.rsplit(":", 1)[1]
    assert main(["--port", port, "--token", TOKEN]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--faults", "429,teapot"], ["--fault-rate", "2"], []])
def test_the_command_line_refuses_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "0"] + (["--token", TOKEN] if args else []) + args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert ("teapot" in err and all(k in err for k in FAULT_KINDS)) or "rate" in err or "--token" in err
