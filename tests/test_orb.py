"""The Orb plugin and its emulator (issue 15), proven over real sockets with the official ``orb-billing`` SDK as oracle.

The SDK ingests and reads back through the emulator and raises its own exception
classes from the emulator's answers; ``actionmap send`` runs in this process against
the emulator with faults of every kind and with events only Orb rejects. Every output,
dead letter and the emulator's log are searched for the API key: it must appear nowhere.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import orb
from orb.types.event_ingest_params import Event
import pytest

from destinations.orb.emulator import OrbEmulator
from engine.tools.emulator import FAULT_KINDS, Faults
from tests.conftest import DEAD, REPO, Run, in_process, read_dead_letters, sender, started, track_events, utc_ms

KEY = "orb-test-key-7c41d2e9a0b3f5"
MAPPING = REPO / "mappings" / "orb.yaml"
BATCH = 500
CLIENT_TIMEOUT = 0.5  # seconds; the "slow" fault answers just after it
VALIDATION = "https://docs.withorb.com/reference/error-responses#400-request-validation-errors"


def expected(event: dict[str, Any]) -> dict[str, Any]:
    """What the default mapping makes of a tests.conftest track event (a plain reference, not the engine)."""
    return {
        "idempotency_key": event["messageId"],
        "external_customer_id": event["userId"],
        "event_name": event["event"],
        "timestamp": utc_ms(datetime.fromisoformat(event["timestamp"])),
        "properties": event["properties"],
    }


def poison(events: list[dict[str, Any]], seed: int) -> set[str]:
    """One event in each hundred gets a nested object among its properties: only Orb's server refuses it."""
    rng = random.Random(seed)
    bad = set()
    for block in range(0, len(events), 100):
        event = events[block + rng.randrange(100)]
        event["properties"] = {**event["properties"], "plan": {"tier": "pro"}}
        bad.add(event["messageId"])
    return bad


@pytest.fixture
def start() -> Iterator[Callable[..., OrbEmulator]]:
    """Start Orb emulators accepting KEY (``OrbEmulator`` options); stopped, and their logs searched, afterwards."""
    yield from started(OrbEmulator, {KEY}, secrets=[KEY])


def sdk(emulator: OrbEmulator, key: str = KEY, retries: int = 0) -> orb.Orb:
    return orb.Orb(api_key=key, base_url=emulator.base_url + "/v1", max_retries=retries)


@pytest.fixture
def actionmap(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``actionmap ARGS`` in this process with KEY in the environment; its output must never hold KEY."""
    return in_process(capsys, monkeypatch, {"ORB_API_KEY": KEY}, [KEY])


@pytest.fixture
def send(actionmap: Callable[..., Run], tmp_path: Path) -> Callable[..., Run]:
    return sender(actionmap, tmp_path, MAPPING, "--backoff", "0.01")


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return read_dead_letters(tmp_path / DEAD, [KEY])


def read_back(emulator: OrbEmulator, keys: list[str]) -> dict[str, dict[str, Any]]:
    """What the official SDK finds for ``keys`` (500 ids per search), in the plugin's payload shape."""
    found: dict[str, dict[str, Any]] = {}
    with sdk(emulator) as client:
        for at in range(0, len(keys), 500):
            for item in client.events.search(event_ids=keys[at:at + 500]).data:
                assert item.customer_id is None and item.deprecated is False
                found[item.id] = {"idempotency_key": item.id, "external_customer_id": item.external_customer_id,
                                  "event_name": item.event_name, "timestamp": utc_ms(item.timestamp),
                                  "properties": item.properties}
    return found


def ingest_bodies(emulator: OrbEmulator) -> list[Any]:
    return [r.body for r in emulator.requests if r.path == "/v1/ingest"]


# -- 1. the official SDK against the emulator ------------------------------------------


def sdk_event(key: str, when: datetime, **properties: Any) -> Event:
    return Event(event_name="api_call", idempotency_key=key, timestamp=when, external_customer_id="cust-1",
                 properties=properties)


def test_the_sdk_ingests_and_reads_back_through_the_emulator(start: Callable[..., OrbEmulator]) -> None:
    now = datetime.now(timezone.utc)
    emulator = start(grace_period=timedelta(days=10))
    with sdk(emulator) as client:
        assert client.top_level.ping().response == "pong"
        answer = client.events.ingest(events=[sdk_event("e-1", now, tokens=5, model="m1", cached=True),
                                              sdk_event("e-2", now - timedelta(days=8))])
        assert answer.validation_failed == []
        assert client.events.ingest(events=[sdk_event("e-1", now, tokens=99)]).validation_failed == [], "a repeat is ignored"
        (first,) = client.events.search(event_ids=["e-1", "e-2", "never-sent"]).data  # e-2 is before the default week
        older = client.events.search(event_ids=["e-2"], timeframe_start=now - timedelta(days=9)).data
    assert (first.id, first.external_customer_id, first.event_name) == ("e-1", "cust-1", "api_call")
    assert first.properties == {"tokens": 5, "model": "m1", "cached": True}, "the first body wins"
    assert utc_ms(first.timestamp) == utc_ms(now) and first.customer_id is None
    assert [e.id for e in older] == ["e-2"]
    assert emulator.duplicates == 1 and list(emulator.stored) == ["e-1", "e-2"]


def test_the_sdk_raises_its_own_exception_classes_from_the_emulators_answers(start: Callable[..., OrbEmulator]) -> None:
    now = datetime.now(timezone.utc)
    emulator = start(faults=["429", "500"])
    with sdk(emulator) as client:
        with pytest.raises(orb.TooManyRequests) as limited:
            client.events.ingest(events=[sdk_event("e-1", now)])
        with pytest.raises(orb.OrbInternalServerError) as failed:
            client.events.ingest(events=[sdk_event("e-1", now)])
        with pytest.raises(orb.RequestValidationError) as invalid:
            client.events.ingest(events=[sdk_event("e-1", now), sdk_event("e-2", now, plan={"tier": "pro"}),
                                         sdk_event("e-3", now + timedelta(minutes=6))])
    assert isinstance(limited.value, orb.RateLimitError) and limited.value.status_code == 429
    assert failed.value.response.headers["Transient-Error"] == "true"
    entries: list[dict[str, Any]] = invalid.value.validation_errors  # type: ignore[assignment]  # the SDK types them "object"
    assert invalid.value.type == VALIDATION and [e["idempotency_key"] for e in entries] == ["e-2", "e-3"]
    (nested,), (ahead,) = (e["validation_errors"] for e in entries)
    assert "property 'plan' is object" in nested and "at most 5 minutes in the future" in ahead
    assert emulator.stored == {}, "nothing of a refused request is ingested"

    with sdk(emulator, key="orb-not-the-key-0000") as stranger, pytest.raises(orb.OrbAuthenticationError) as refused:
        stranger.top_level.ping()
    assert isinstance(refused.value, orb.AuthenticationError) and "********0000" in str(refused.value.body)


def test_the_sdk_retries_with_its_idempotency_key_and_a_reused_key_with_another_body_conflicts(
    start: Callable[..., OrbEmulator],
) -> None:
    now = datetime.now(timezone.utc)
    emulator = start(faults=["store_all_then_drop"])
    with sdk(emulator, retries=2) as client:
        client.with_options(timeout=5).events.ingest(events=[sdk_event("e-1", now)], idempotency_key="req-1")
        with pytest.raises(orb.ResourceConflict):
            client.with_options(max_retries=0).events.ingest(events=[sdk_event("e-2", now)], idempotency_key="req-1")
    replayed = [r for r in emulator.requests if r.headers.get("idempotency-key") == "req-1"]
    assert [r.status for r in replayed[:2]] == [None, 200], "stored, dropped; the retry is answered as the first"
    assert emulator.summary()["idempotent_replays"] == 1 and list(emulator.stored) == ["e-1"]
    assert [r.status for r in replayed[2:]] == [409]


# -- 2. actionmap send: faults of every kind, and events only Orb rejects --------------


def test_five_thousand_events_survive_twenty_percent_faults_of_every_kind_with_poison_dead_lettered(
    start: Callable[..., OrbEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(5_000, seed=15)
    bad = poison(events, seed=15)
    every_kind_once = [entry for kind in FAULT_KINDS for entry in (kind, None)]
    faults = Faults(every_kind_once, rate=0.2, kinds=FAULT_KINDS, seed=20261201, slow_delay=CLIENT_TIMEOUT + 0.2,
                    retry_after_ms=50)
    emulator = start(faults=faults, grace_period=timedelta(days=2))
    run = send(emulator, events, "--timeout", str(CLIENT_TIMEOUT))
    assert run.code == 2, run.err
    assert set(emulator.summary()["faults"]) == set(FAULT_KINDS), "every kind of fault was met"
    good = {e["messageId"]: expected(e) for e in events if e["messageId"] not in bad}
    assert emulator.stored == good, "every good event stored exactly once"
    assert emulator.max_events_in_a_request <= BATCH
    keys = sorted(good)
    assert read_back(emulator, keys + sorted(bad)) == good, "the official SDK reads back every one, and no poison"
    records = dead_letters(tmp_path)
    assert sorted(r["payload"]["idempotency_key"] for r in records) == sorted(bad)
    assert all("property 'plan' is object" in r["reason"] and r["status"] == 400 for r in records)
    summary = run.summary
    assert (summary["delivered"], summary["dead_lettered"], summary["invalid"]) == (len(good), len(bad), 0)


def test_events_only_the_server_rejects_are_dead_lettered_alone_at_about_one_request_each(
    start: Callable[..., OrbEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(5_000, seed=16)
    bad = poison(events, seed=16)
    emulator = start(grace_period=timedelta(days=2))
    run = send(emulator, events)
    assert run.code == 2, run.err
    by_id = {e["messageId"]: e for e in events}
    assert emulator.stored == {k: expected(e) for k, e in by_id.items() if k not in bad}
    records = dead_letters(tmp_path)
    assert sorted(r["payload"]["idempotency_key"] for r in records) == sorted(bad) and len(records) == len(bad)
    for record in records:
        key = record["payload"]["idempotency_key"]
        assert record["event"] == by_id[key] and record["payload"] == expected(by_id[key])
        assert (record["status"], record["attempts"]) == (400, 1)
        assert "property 'plan' is object: property values must be numbers, booleans or strings" in record["reason"]

    batches = math.ceil(len(events) / BATCH)
    requests = len(ingest_bodies(emulator))
    extra = (requests - batches) / len(bad)
    print(f"\nOrb: {requests} requests for {len(events)} events in {batches} batches with {len(bad)} poison events: "
          f"{extra:.2f} extra requests per poison event (a bisection would need up to {2 * math.ceil(math.log2(BATCH))})")
    assert requests == 2 * batches, "each batch: one request refused naming its poison events, one without them"
    assert extra <= 1
    assert run.summary["requests"] == requests


def test_the_window_refuses_locally_what_no_account_takes_and_orb_names_what_this_account_does_not(
    start: Callable[..., OrbEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    now = datetime.now(timezone.utc)
    good = track_events(20, seed=17)

    def at(key: str, when: datetime) -> dict[str, Any]:
        return {**good[0], "messageId": key, "timestamp": when.isoformat()}

    local = [at("too-old", now - timedelta(days=31)), at("ahead", now + timedelta(minutes=3))]
    past_grace = at("past-grace", now - timedelta(days=3))
    emulator = start(grace_period=timedelta(days=2))
    run = send(emulator, good[:10] + local + [past_grace] + good[10:])
    assert run.code == 2, run.err
    sent = {e["idempotency_key"] for body in ingest_bodies(emulator) for e in body["events"]}
    assert not sent & {"too-old", "ahead"}, "refused before sending"
    assert set(emulator.stored) == {e["messageId"] for e in good}
    records = {r["event"]["messageId"]: r for r in dead_letters(tmp_path)}
    assert set(records) == {"too-old", "ahead", "past-grace"}
    assert records["too-old"]["status"] is None and "30d back to 5m ahead" in records["too-old"]["reason"]
    assert records["ahead"]["status"] is None and "later than the destination accepts" in records["ahead"]["reason"]
    reason = records["past-grace"]["reason"]
    assert records["past-grace"]["status"] == 400 and "based on account grace period" in reason and "backfill" in reason


def test_a_key_repeated_with_another_body_in_one_request_is_refused_by_orb_and_both_dead_lettered(
    start: Callable[..., OrbEmulator], send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(10, seed=19)
    events[5] = {**events[1], "properties": {"n": "another body"}}  # Orb refuses the whole batch for this
    events[7] = dict(events[2])  # the same body again: one is stored, the other is a duplicate
    emulator = start(grace_period=timedelta(days=2))
    run = send(emulator, events)
    assert run.code == 2, run.err
    assert [(r.status, r.events) for r in emulator.requests] == [(400, 10), (200, 8)]
    assert emulator.stored == {e["messageId"]: expected(e) for e in events if e["messageId"] != "m-1"}
    assert emulator.duplicates == 1
    records = dead_letters(tmp_path)
    assert [r["index"] for r in records] == [1, 5]
    assert all("'m-1' appears more than once in this request with different event bodies" in r["reason"] for r in records)


# -- 3. credentials ------------------------------------------------------------------------


def test_check_and_send_tell_a_valid_key_from_a_refused_one(
    start: Callable[..., OrbEmulator], send: Callable[..., Run], actionmap: Callable[..., Run], tmp_path: Path
) -> None:
    emulator = start()
    valid = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert valid.code == 0 and "the credential was accepted (200 from" in valid.out
    assert [(r.method, r.path, r.status) for r in emulator.requests] == [("GET", "/v1/ping", 200)]

    other = start(tokens={"orb-another-key-0000"})
    refused = actionmap("check", "-m", MAPPING, "--set", f"base_url={other.base_url}")
    assert refused.code == 1 and "the credential was refused (401 from" in refused.out
    run = send(other, track_events(30, seed=18))
    assert run.code == 1 and "Orb (Actions) refused the credential (401" in run.err
    assert run.summary["kept"] == 30 and other.stored == {} and dead_letters(tmp_path) == []


# -- 4. the plugin's own checks and the emulator's command line ------------------------------


def test_docs_validate_and_the_plugin_cases_pass(actionmap: Callable[..., Run]) -> None:
    docs = actionmap("docs", "orb")
    assert docs.code == 0 and "Orb (Actions)" in docs.out and "idempotency_key" in docs.out
    assert actionmap("validate", REPO / "destinations" / "orb").code == 0
    assert actionmap("validate", MAPPING).code == 0
    tested = actionmap("test", REPO / "destinations" / "orb")
    assert tested.code == 0, tested.out + tested.err
    assert actionmap("test", MAPPING).code == 0

    from tests.test_plugin_cases import CASES  # what pytest collects for every plugin

    ours = [result for slug, result in CASES if slug == "orb"]
    assert len(ours) >= 6 and all(result.passed for result in ours)


def test_the_emulator_command_serves_the_sdk_and_prints_a_summary() -> None:
    command = [sys.executable, "-m", "engine.cli", "emulator", "orb", "--port", "0", "--token", KEY, "--grace-period", "1d"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) as process:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        try:
            with orb.Orb(api_key=KEY, base_url=base_url + "/v1", max_retries=0) as client:
                client.events.ingest(events=[sdk_event("cli-1", datetime.now(timezone.utc))])
                assert [e.id for e in client.events.search(event_ids=["cli-1"]).data] == ["cli-1"]
        finally:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["stored"], summary["statuses"]) == (1, {"200": 2})
    assert KEY not in out + err
