"""The Lago plugin and its emulator (issue 15), proven over real sockets with the official ``lago-python-client`` as oracle.

The SDK ingests and reads back through the emulator and raises its own exception classes
from the emulator's answers; ``actionmap send`` runs in this process against the emulator
with faults of every kind and with events only Lago rejects (a billable metric's expression
that cannot use their properties). Every output, dead letter and the emulator's log are
searched for the API key: it must appear nowhere.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError, LagoRateLimitError
from lago_python_client.models.event import BatchEvent, Event

from destinations.lago.emulator import LagoEmulator, Metric
from engine.tools.emulator import FAULT_KINDS, Faults
from tests.conftest import DEAD, REPO, Run, in_process, read_dead_letters, sender, started, track_events

KEY = "lago-test-key-3e9b51c07d2a48"
MAPPING = REPO / "mappings" / "lago.yaml"
BATCH = 100
CLIENT_TIMEOUT = 0.3  # seconds; the "slow" fault answers just after it
CODES = ("api_call", "tokens_used", "page_render")  # the event names of tests.conftest.track_events
METRICS = [Metric(code, "units", "event.properties.n * 2") for code in CODES]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def seconds(timestamp: str) -> int:
    return (datetime.fromisoformat(timestamp) - _EPOCH) // timedelta(seconds=1)


def expected(event: dict[str, Any]) -> dict[str, Any]:
    """What the default mapping makes of a tests.conftest track event (a plain reference, not the engine)."""
    return {
        "transaction_id": event["messageId"],
        "external_subscription_id": event["userId"],
        "code": event["event"],
        "timestamp": seconds(event["timestamp"]),
        "properties": event["properties"],
    }


def poison(events: list[dict[str, Any]], seed: int) -> set[str]:
    """One event in each hundred loses property ``n``, which its metric's expression needs: only Lago's server knows."""
    rng = random.Random(seed)
    bad = set()
    for block in range(0, len(events), BATCH):
        event = events[block + rng.randrange(BATCH)]
        event["properties"] = {k: v for k, v in event["properties"].items() if k != "n"}
        bad.add(event["messageId"])
    return bad


@pytest.fixture
def start() -> Iterator[Callable[..., LagoEmulator]]:
    """Start Lago emulators accepting KEY (``LagoEmulator`` options); stopped, and their logs searched, afterwards."""
    yield from started(LagoEmulator, {KEY}, secrets=[KEY])


def sdk(emulator: LagoEmulator, key: str = KEY, retries: int = 0) -> Client:
    return Client(api_key=key, api_url=emulator.base_url, max_retries=retries)


@pytest.fixture
def actionmap(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``actionmap ARGS`` in this process with KEY in the environment; its output must never hold KEY."""
    return in_process(capsys, monkeypatch, {"LAGO_API_KEY": KEY}, [KEY])


@pytest.fixture
def send(actionmap: Callable[..., Run], tmp_path: Path) -> Callable[..., Run]:
    return sender(actionmap, tmp_path, MAPPING, "--backoff", "0.01")


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return read_dead_letters(tmp_path / DEAD, [KEY])


def batches_of(emulator: LagoEmulator, events: list[dict[str, Any]]) -> Counter[int]:
    """How many requests each batch of BATCH input events took (requests reset before reading carry no body)."""
    index = {e["messageId"]: i for i, e in enumerate(events)}
    per_batch: Counter[int] = Counter()
    for request in emulator.requests:
        if request.body is not None:
            (batch, *others) = {index[e["transaction_id"]] // BATCH for e in request.body["events"]}
            assert not others, "a request never mixes two batches"
            per_batch[batch] += 1
    return per_batch


# -- the official SDK against the emulator -----------------------------------------------------------


def test_the_sdk_ingests_and_reads_back_through_the_emulator(start: Callable[..., LagoEmulator]) -> None:
    emulator = start(metrics=METRICS)
    client = sdk(emulator)
    one = client.events.create(Event(transaction_id="sdk-1", external_subscription_id="sub-1", code="api_call",
                                     timestamp=1767225600, properties={"n": "21", "region": "eu"}))
    assert one is not None and one.lago_id and one.timestamp == "2026-01-01T00:00:00.000Z"
    assert client.events.batch_create(BatchEvent(events=[
        Event(transaction_id=f"sdk-{i}", external_subscription_id="sub-1", code="seats", timestamp=f"{1767225600 + i}.25",
              properties={"count": i}) for i in range(2, 5)])) is None
    found = client.events.find("sdk-1")
    assert (found.transaction_id, found.external_subscription_id, found.code) == ("sdk-1", "sub-1", "api_call")
    assert found.properties == {"n": "21", "region": "eu", "units": "42.0"}, "the metric's expression was evaluated at ingest"
    assert found.lago_id == one.lago_id and found.lago_customer_id is None
    assert [client.events.find(f"sdk-{i}").timestamp for i in range(2, 5)] == [
        f"2026-01-01T00:00:0{i}.250Z" for i in range(2, 5)], "a decimal timestamp keeps its milliseconds"

    with pytest.raises(LagoApiError) as again:
        client.events.batch_create(BatchEvent(events=[
            Event(transaction_id="sdk-9", external_subscription_id="sub-1", code="seats"),
            Event(transaction_id="sdk-2", external_subscription_id="sub-1", code="seats")]))
    assert again.value.status_code == 422 and again.value.response == {
        "status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
        "error_details": {"1": {"transaction_id": ["value_already_exist"]}}}
    with pytest.raises(LagoApiError) as iso:
        client.events.batch_create(BatchEvent(events=[
            Event(transaction_id="sdk-10", external_subscription_id="sub-1", code="seats"),
            Event(transaction_id="sdk-11", external_subscription_id="sub-1", code="seats", timestamp="2026-01-01T00:00:00Z"),
            Event(transaction_id="sdk-12", external_subscription_id="sub-1", code="api_call", properties={"n": "x"})]))
    assert iso.value.response["error_details"] == {"1": {"timestamp": ["invalid_format"]},
                                                   "2": "expression_evaluation_failed: Expected a decimal"}
    assert set(emulator.stored) == {f"sdk-{i}" for i in range(1, 5)}, "a refused batch stores none of its events"

    with pytest.raises(LagoApiError) as missing:
        client.events.find("sdk-10")
    assert (missing.value.status_code, missing.value.response) == (
        404, {"status": 404, "error": "Not Found", "code": "event_not_found"})
    with pytest.raises(LagoApiError) as refused:
        sdk(emulator, key="lago-wrong-key-000000").events.find("sdk-1")
    assert (refused.value.status_code, refused.value.response) == (401, {"status": 401, "error": "Unauthorized"})
    assert not isinstance(refused.value, LagoRateLimitError)


def test_the_sdk_reads_the_rate_limit_headers_of_a_429(start: Callable[..., LagoEmulator]) -> None:
    """Lago sends no Retry-After: the SDK retries after X-RateLimit-Reset seconds, or raises LagoRateLimitError."""
    emulator = start(faults=["429"], rate_limit=1)
    assert sdk(emulator).events.create(Event(transaction_id="rl-1", external_subscription_id="s", code="seats")) is not None
    with pytest.raises(LagoRateLimitError) as limited:
        sdk(emulator).events.find("rl-1")  # the one request a second was spent by the retried create
    assert (limited.value.status_code, limited.value.limit, limited.value.remaining, limited.value.reset) == (429, 1, 0, 1)
    assert [r.status for r in emulator.requests] == [429, 200, 429] and list(emulator.stored) == ["rl-1"]
    emulator.faults.extend(["429_retry_after"])
    fault = httpx.post(f"{emulator.base_url}/api/v1/events/batch", json={"events": []}, headers={"Authorization": f"Bearer {KEY}"})
    assert fault.status_code == 429 and "retry-after" not in fault.headers and fault.headers["x-ratelimit-reset"] == "1"


# -- the emulator's own rules ---------------------------------------------------------------------------


def test_lago_rules_at_the_edges(start: Callable[..., LagoEmulator]) -> None:
    emulator = start(read_only={"lago-read-only-key-42"})
    http = httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Bearer {KEY}"})

    def batch(*events: dict[str, Any], **options: Any) -> httpx.Response:
        return http.post("/api/v1/events/batch", json={"events": list(events)}, **options)

    assert batch().json()["error_details"] == {"events": ["no_events"]}
    assert batch(*[{"transaction_id": f"t{i}", "code": "c"} for i in range(101)]).json()["error_details"] == {
        "events": ["too_many_events"]}
    blank = batch({"transaction_id": " ", "code": ""}).json()["error_details"]
    assert blank == {"0": {"transaction_id": ["value_is_mandatory"], "code": ["value_is_mandatory"]}}
    ok = batch({"transaction_id": "n1", "code": "c", "timestamp": 1767225600},
               {"transaction_id": "n2", "code": "c", "timestamp": "1767225601.5", "external_subscription_id": "s"})
    assert ok.status_code == 200 and [e["timestamp"] for e in ok.json()["events"]] == [
        "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z"]
    no_subscription = batch({"transaction_id": "n1", "code": "c"})
    assert no_subscription.status_code == 200, "without a subscription the unique index cannot collide (NULLs differ)"
    assert batch({"transaction_id": "n2", "code": "c", "external_subscription_id": "other"}).status_code == 200
    assert emulator.duplicates == 2 and list(emulator.stored) == ["n1", "n2"], "the first of each transaction_id is shown"
    form = http.post("/api/v1/events/batch", content=b"events=1", headers={"Content-Type": "text/plain"})
    assert form.json()["error_details"] == {"events": ["no_events"]}, "a body not declared JSON is no parameters"
    broken = http.post("/api/v1/events", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"].startswith("BadRequest: ")
    bare = http.post("/api/v1/events", json={"events": []})
    assert bare.json() == {"status": 400, "error": "BadRequest: param is missing or the value is empty: event"}
    read_only = {"Authorization": "Bearer lago-read-only-key-42"}
    assert http.post("/api/v1/events/batch", json={"events": []}, headers=read_only).json() == {
        "status": 403, "error": "Forbidden", "code": "write_action_not_allowed_for_event"}
    assert http.get("/api/v1/events/n1", headers=read_only).status_code == 200
    assert http.get("/api/v1/events/n1", headers={"Authorization": "Token " + KEY}).status_code == 200, "any scheme word"


def test_the_emulator_command_serves_until_sigterm_and_prints_its_summary(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "engine.cli", "emulator", "lago", "--port", "0", "--token", KEY,
               "--metric", "api_call:units=round(event.properties.n / 3, 1)"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        client = Client(api_key=KEY, api_url=base_url, max_retries=0)
        client.events.create(Event(transaction_id="cli-1", external_subscription_id="s", code="api_call",
                                   properties={"n": 10}))
        assert client.events.find("cli-1").properties == {"n": 10, "units": "3.3"}
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["stored"], summary["statuses"], summary["already_exist"]) == (1, {"200": 2}, 0)


# -- actionmap send against the emulator ----------------------------------------------------------------


def test_five_thousand_events_survive_faults_of_every_kind_and_poison_is_dead_lettered_alone(
    start: Callable[..., LagoEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(5_000, seed=15)
    bad = poison(events, seed=15)
    every_kind_once = [entry for kind in FAULT_KINDS for entry in (kind, None, None, None)]
    faults = Faults(every_kind_once, rate=0.2, kinds=FAULT_KINDS, seed=20261201, slow_delay=CLIENT_TIMEOUT + 0.2,
                    retry_after_ms=1000)
    emulator = start(faults=faults, metrics=METRICS)
    run = send(emulator, events, "--timeout", str(CLIENT_TIMEOUT))
    assert run.code == 2, run.err
    summary = emulator.summary()
    assert set(summary["faults"]) == set(FAULT_KINDS), "every kind of fault was met"
    good = [e for e in events if e["messageId"] not in bad]
    assert emulator.stored == {e["messageId"]: expected(e) for e in good}, "every good event stored, with its payload"
    assert emulator.duplicates == 0, "no event was stored twice"
    assert emulator.already_exist > 0, "resends after lost answers were refused as already stored, and counted delivered"
    assert emulator.max_events_in_a_request <= BATCH

    records = dead_letters(tmp_path)
    assert sorted(r["payload"]["transaction_id"] for r in records) == sorted(bad), "each poison event alone"
    by_id = {e["messageId"]: e for e in events}
    for record in records:
        event = by_id[record["payload"]["transaction_id"]]
        assert record["event"] == event and record["payload"] == expected(event) and record["status"] == 422
        assert record["reason"] == "rejected by the server: expression_evaluation_failed: Variable: n not found"
    assert run.summary | {"requests": 0} == {"events": 5_000, "delivered": len(good), "filtered": 0, "invalid": 0,
                                             "dead_lettered": len(bad), "kept": 0, "requests": 0}
    faulted = sum(summary["faults"].values())
    print(f"requests per poison event (one in each batch of {BATCH}): {len(emulator.requests) / len(bad):.2f}, "
          f"with {faulted} faults among {len(emulator.requests)} requests")
    assert run.summary["requests"] == len(emulator.requests) <= len(events) // BATCH + len(bad) + 2 * faulted, \
        "a poison event costs one request more, a fault at most two (the resend, and the rest after 'already stored')"

    client = sdk(emulator)
    for tid in sorted(random.Random(15).sample(sorted(e["messageId"] for e in good), 200)):
        found, event = client.events.find(tid), by_id[tid]
        assert (found.transaction_id, found.external_subscription_id, found.code) == (tid, event["userId"], event["event"])
        assert found.timestamp == datetime.fromtimestamp(seconds(event["timestamp"]), timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z")
        assert found.properties == {**event["properties"], "units": f"{2 * int(event['properties']['n'])}.0"}
    for tid in sorted(bad)[:10]:
        with pytest.raises(LagoApiError) as missing:
            client.events.find(tid)
        assert missing.value.status_code == 404


def test_a_poison_event_costs_one_request_more_where_bisection_would_cost_many(
    start: Callable[..., LagoEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(2_000, seed=16)
    bad = poison(events, seed=16)
    emulator = start(metrics=METRICS)
    run = send(emulator, events)
    assert run.code == 2 and run.summary["dead_lettered"] == len(bad)
    per_batch = batches_of(emulator, events)
    per_poison = (len(emulator.requests) - len(per_batch)) / len(bad)
    print(f"requests per poison event: {per_poison:.2f} more than one per batch "
          f"({len(emulator.requests)} requests for {len(per_batch)} batches and {len(bad)} poison events)")
    assert per_poison <= 1 and all(count == 2 for count in per_batch.values()), per_batch
    assert set(emulator.stored) == {e["messageId"] for e in events} - bad


def test_the_wait_lago_asks_for_in_x_ratelimit_reset_is_honoured(
    start: Callable[..., LagoEmulator], send: Callable[..., Run]
) -> None:
    emulator = start(faults=Faults(["429_retry_after"], retry_after_ms=1000))
    run = send(emulator, track_events(10, seed=17))
    assert run.code == 0 and [r.status for r in emulator.requests] == [429, 200]
    first, second = emulator.requests
    assert second.received - first.received >= 1.0, "X-RateLimit-Reset: 1 was waited out (the backoff alone is 0.01 s)"


def test_a_refused_key_keeps_the_events_and_check_tells_valid_from_refused(
    start: Callable[..., LagoEmulator], send: Callable[..., Run], actionmap: Callable[..., Run], tmp_path: Path
) -> None:
    emulator = start(tokens={"lago-other-key-000000"}, read_only={KEY})
    run = send(emulator, track_events(150, seed=18))
    assert run.code == 1 and "Lago (Actions) refused the credential (403" in run.err
    assert run.summary["kept"] == 150 and emulator.stored == {} and dead_letters(tmp_path) == []
    read_only = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert read_only.code == 1 and "the credential was refused (403 from" in read_only.out

    valid = start()
    check = actionmap("check", "-m", MAPPING, "--set", f"base_url={valid.base_url}")
    assert check.code == 0 and "the credential was accepted (422 from" in check.out
    assert [(r.path, r.body, r.status) for r in valid.requests] == [("/api/v1/events/batch", {"events": []}, 422)]
    unknown = start(tokens={"lago-other-key-000000"})
    refused = actionmap("check", "-m", MAPPING, "--set", f"base_url={unknown.base_url}")
    assert refused.code == 1 and "the credential was refused (401 from" in refused.out


# -- the plugin's own checks ------------------------------------------------------------------------------


def test_docs_validate_and_the_plugin_cases_pass(actionmap: Callable[..., Run]) -> None:
    docs = actionmap("docs", "lago")
    assert docs.code == 0 and "# Lago (Actions)" in docs.out and "`external_subscription_id`" in docs.out
    assert "/api/v1/events/batch`, up to 100 payloads per request" in docs.out
    assert actionmap("validate", REPO / "destinations" / "lago").code == 0
    cases = actionmap("test", REPO / "destinations" / "lago")
    assert cases.code == 0 and "7 passed, 0 failed" in cases.out
    assert actionmap("test", MAPPING).code == 0
    from tests.test_plugin_cases import CASES

    lago = [result for slug, result in CASES if slug == "lago"]
    assert len(lago) == 7 and all(result.passed for result in lago), "pytest collects the plugin's cases too"
