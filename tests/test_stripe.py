"""Stripe meter events (issue 15): the emulator against the official SDK, and delivery through it over real sockets.

The ``stripe`` SDK is the oracle: it ingests through the emulator (v1 events, v2 sessions and
the stream) and reads back through it (meters, event summaries), and its error classes must
come out right. The delivery runs are ``actionmap send`` in this process; every output, dead
letter and the emulator's log are searched for the API key and every session token.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import stripe

from destinations.stripe.emulator import StripeEmulator
from engine.tools.emulator import FAULT_KINDS, Faults
from tests.conftest import (
    DEAD,
    REPO,
    Run,
    in_process,
    read_dead_letters,
    sender,
    started,
    track_events,
    utc_ms,
    write_ndjson,
)

KEY = "sk_test_stripe_helper_7c1e5a90d3b24f68"
MAPPING = REPO / "mappings" / "stripe.yaml"
STREAM_MAPPING = """destination: stripe
settings: {api_key: "${STRIPE_API_KEY}"}
subscriptions:
  - {name: Meter events, action: send_event_stream}
"""
DIGITS = 9  # the emulator's poison option: a payload[value] with more digits is refused at once


@pytest.fixture
def emulator_factory() -> Iterator[Any]:
    """Start Stripe emulators (accepting KEY unless told otherwise) and stop them after the test."""
    yield from started(StripeEmulator, {KEY})


def sdk(emulator: StripeEmulator, key: str = KEY) -> stripe.StripeClient:
    """The official client, both of its hosts pointed at the emulator, without the SDK's own retries."""
    url = emulator.base_url
    return stripe.StripeClient(key, base_addresses={"api": url, "meter_events": url}, max_network_retries=0)


def hour_start(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600 * 3600


def rfc3339_ms(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- 1. the SDK against the emulator ----------------------------------------------------------


def test_the_sdk_ingests_and_reads_back_through_the_emulator(emulator_factory: Any) -> None:
    emulator = emulator_factory(meters={"api_call": "mtr_api", "tokens": "mtr_tok"})
    client = sdk(emulator)
    start = hour_start(datetime.now(timezone.utc)) - 3600
    created = client.v1.billing.meter_events.create(
        {"event_name": "api_call", "identifier": "v1-a", "timestamp": start + 10,
         "payload": {"stripe_customer_id": "cus_1", "value": "5"}})
    assert (created.object, created.identifier, created.timestamp, created.payload["value"]) == (
        "billing.meter_event", "v1-a", start + 10, "5")
    client.v1.billing.meter_events.create(
        {"event_name": "tokens", "identifier": "v1-b", "timestamp": start + 20,
         "payload": {"stripe_customer_id": "cus_1", "value": "120"}})

    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    lifetime = datetime.fromisoformat(session.expires_at) - datetime.fromisoformat(session.created)
    assert lifetime == timedelta(minutes=15)
    stream = stripe.StripeClient(session.authentication_token, base_addresses={"meter_events": emulator.base_url},
                                 max_network_retries=0)
    events = [{"event_name": "api_call", "identifier": f"s-{i}", "timestamp": rfc3339_ms(start + 3600 + i),
               "payload": {"stripe_customer_id": "cus_1" if i % 2 else "cus_2", "value": str(i)}} for i in range(10)]
    assert stream.v2.billing.meter_event_stream.create({"events": events}) is None
    stream.v2.billing.meter_event_stream.create({"events": events[:3]})  # repeats: dropped, as Stripe's stream does

    assert sorted(m.id for m in client.v1.billing.meters.list().data) == ["mtr_api", "mtr_tok"]
    assert client.v1.billing.meters.retrieve("mtr_tok").event_name == "tokens"
    summaries = client.v1.billing.meters.event_summaries.list(
        "mtr_api", {"customer": "cus_1", "start_time": start, "end_time": start + 7200, "value_grouping_window": "hour"})
    assert [(s.start_time, s.aggregated_value) for s in summaries.auto_paging_iter()] == [
        (start, 5), (start + 3600, 1 + 3 + 5 + 7 + 9)]
    paged = client.v1.billing.meters.event_summaries.list(
        "mtr_api", {"customer": "cus_2", "start_time": start, "end_time": start + 7200,
                    "value_grouping_window": "hour", "limit": 1})
    assert paged.has_more and [s.aggregated_value for s in paged.auto_paging_iter()] == [0, 0 + 2 + 4 + 6 + 8]
    whole = client.v1.billing.meters.event_summaries.list(
        "mtr_tok", {"customer": "cus_1", "start_time": start, "end_time": start + 7200})
    assert [s.aggregated_value for s in whole.data] == [120]
    assert set(emulator.stored) == {"v1-a", "v1-b"} | {e["identifier"] for e in events}
    assert emulator.duplicates == 3 and emulator.reports == {}


def test_the_sdk_raises_the_right_error_classes(emulator_factory: Any) -> None:
    emulator = emulator_factory(max_value_digits=6, faults=["429", "500"])
    client = sdk(emulator)
    event = {"event_name": "api_call", "identifier": "e-1", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}
    with pytest.raises(stripe.RateLimitError) as limited:
        client.v1.billing.meter_events.create(event)
    assert limited.value.http_status == 429 and limited.value.json_body["error"]["code"] == "rate_limit"
    with pytest.raises(stripe.APIError) as failed:
        client.v1.billing.meter_events.create(event)
    assert failed.value.http_status == 500 and emulator.stored == {}
    client.v1.billing.meter_events.create(event)
    with pytest.raises(stripe.InvalidRequestError) as repeated:
        client.v1.billing.meter_events.create(event)
    assert (repeated.value.http_status, repeated.value.code, repeated.value.param) == (
        400, "resource_already_exists", "identifier")
    assert repeated.value.user_message == "An event already exists with identifier e-1."
    assert repeated.value.headers["stripe-should-retry"] == "false"
    with pytest.raises(stripe.InvalidRequestError) as poison:
        client.v1.billing.meter_events.create({**event, "identifier": "e-2",
                                               "payload": {"stripe_customer_id": "cus_1", "value": "12345678"}})
    assert poison.value.code == "meter_event_value_too_many_digits" and poison.value.param == "payload[value]"
    with pytest.raises(stripe.InvalidRequestError) as unnamed:
        client.v1.billing.meter_events.create({"payload": {"stripe_customer_id": "cus_1"}})
    assert unnamed.value.code == "parameter_missing" and unnamed.value.param == "event_name"
    with pytest.raises(stripe.AuthenticationError) as refused:
        sdk(emulator, "sk_test_not_a_key_0000").v1.billing.meter_events.create(event)
    assert refused.value.http_status == 401 and "sk_test_not_a_key" not in str(refused.value)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meters.retrieve("mtr_none")

    session = client.v2.billing.meter_event_session.create()
    stream = sdk(emulator, session.authentication_token)
    emulator.expire_sessions()
    with pytest.raises(stripe.TemporarySessionExpiredError) as expired:
        stream.v2.billing.meter_event_stream.create({"events": [{**event, "identifier": "e-3"}]})
    assert (expired.value.http_status, expired.value.code) == (401, "billing_meter_event_session_expired")
    with pytest.raises(stripe.AuthenticationError):
        sdk(emulator).v2.billing.meter_event_stream.create({"events": [event]})  # the API key is no session token
    assert [(use.session, use.verdict) for use in emulator.stream_sessions] == [(session.id, "expired"), (None, "unknown")]
    assert set(emulator.stored) == {"e-1"}
    log = json.dumps(emulator.state())
    assert KEY not in log and session.authentication_token not in log


def test_the_session_lifetime_follows_the_injected_clock(emulator_factory: Any) -> None:
    moment = [datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)]
    emulator = emulator_factory(clock=lambda: moment[0], session_lifetime=timedelta(minutes=2))
    session = sdk(emulator).v2.billing.meter_event_session.create()
    assert session.expires_at == "2026-11-26T12:02:00.000Z"
    stream = sdk(emulator, session.authentication_token)
    event = {"event_name": "api_call", "payload": {"stripe_customer_id": "cus_1", "value": "1"}}
    stream.v2.billing.meter_event_stream.create({"events": [event]})
    moment[0] += timedelta(minutes=2)
    with pytest.raises(stripe.TemporarySessionExpiredError):
        stream.v2.billing.meter_event_stream.create({"events": [event]})
    assert [use.verdict for use in emulator.stream_sessions] == ["accepted", "expired"]
    (stored,) = emulator.stored.values()
    assert stored["identifier"] and emulator.reports == {}, "Stripe makes an identifier when none is given"


def test_the_emulator_command_line_serves_the_sdk() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "emulator", "stripe", "--port", "0", "--token", KEY,
         "--meter", "api_call=mtr_cli", "--max-value-digits", "4"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        client = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
        client.v1.billing.meter_events.create(
            {"event_name": "api_call", "identifier": "cli-1", "payload": {"stripe_customer_id": "cus_1", "value": "3"}})
        assert [m.id for m in client.v1.billing.meters.list().data] == ["mtr_cli"]
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["stored"], summary["requests"]) == (1, 2) and KEY not in out + err


# -- 2. delivery through `actionmap send` ------------------------------------------------------


def usage_events(count: int, seed: int) -> list[dict[str, Any]]:
    """Track events with a whole-number properties.value (a JSON number, as producers send it)."""
    rng = random.Random(seed)
    events = track_events(count, seed=seed)
    for event in events:
        event["properties"]["value"] = rng.randrange(1, 1000)
    return events


def expected_v1(event: dict[str, Any]) -> dict[str, Any]:
    """What send_event makes of a usage event (a plain reference, not the engine): unix seconds, string values."""
    return {"event_name": event["event"], "identifier": event["messageId"],
            "timestamp": int(datetime.fromisoformat(event["timestamp"]).timestamp()),
            "payload": {"stripe_customer_id": event["userId"], "value": str(event["properties"]["value"])}}


def expected_stream(event: dict[str, Any]) -> dict[str, Any]:
    """What send_event_stream makes of it: the same with an RFC 3339 UTC timestamp in milliseconds."""
    return expected_v1(event) | {"timestamp": utc_ms(datetime.fromisoformat(event["timestamp"]))}


def poison(events: list[dict[str, Any]], seed: int) -> set[str]:
    """Give one event in each hundred a value longer than the emulator's DIGITS: their identifiers."""
    rng = random.Random(seed)
    bad = set()
    for block in range(0, len(events), 100):
        event = events[block + rng.randrange(min(100, len(events) - block))]
        event["properties"]["value"] = 10 ** (DIGITS + 3) + block
        bad.add(event["messageId"])
    return bad


def secrets_of(emulator: StripeEmulator) -> list[str]:
    return [KEY, *emulator.session_tokens]


def assert_no_secret(emulator: StripeEmulator, *texts: str) -> None:
    """Neither the API key nor any session token in these texts, nor in the emulator's log and state."""
    log = json.dumps(emulator.state())
    for secret in secrets_of(emulator):
        assert all(secret not in text for text in texts), "a secret leaked into the output or a dead letter"
        assert secret not in log, "a secret leaked into the emulator's log"


@pytest.fixture
def send(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Run]:
    """``actionmap send`` of ``events`` to an emulator (both hosts), dead letters to ``tmp_path / DEAD``."""
    deliver = sender(in_process(capsys, monkeypatch, {"STRIPE_API_KEY": KEY}, [KEY]), tmp_path, MAPPING)
    stream_mapping = tmp_path / "stream.yaml"
    stream_mapping.write_text(STREAM_MAPPING)

    def run(emulator: StripeEmulator, events: list[dict[str, Any]], *options: str, stream: bool = False) -> Run:
        result = deliver(emulator, events, "--set", f"meter_events_base_url={emulator.base_url}", *options,
                         mapping=stream_mapping if stream else MAPPING)
        assert_no_secret(emulator, result.out, result.err)
        return result

    return run


def dead_letters(emulator: StripeEmulator, path: Path) -> list[dict[str, Any]]:
    """The records at ``path``: neither they nor the emulator's log may hold the API key or a session token."""
    assert_no_secret(emulator)
    return read_dead_letters(path, secrets_of(emulator))


def carried(body: Any) -> list[str]:
    """The identifiers a logged request carried (a v1 form or a stream body)."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return [e.get("identifier") for e in body["events"]]
    return [body["identifier"]] if isinstance(body, dict) and "identifier" in body else []


def read_back_totals(emulator: StripeEmulator, events: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Every (event name, customer) total as the official SDK reads it from the meters' event summaries."""
    client = sdk(emulator)
    meters = {m.event_name: m.id for m in client.v1.billing.meters.list().data}
    stamps = [datetime.fromisoformat(e["timestamp"]).timestamp() for e in events]
    start, end = int(min(stamps)) // 60 * 60, (int(max(stamps)) // 60 + 1) * 60
    totals = {}
    for name, customer in sorted({(e["event"], e["userId"]) for e in events}):
        (summary,) = client.v1.billing.meters.event_summaries.list(
            meters[name], {"customer": customer, "start_time": start, "end_time": end}).data
        totals[(name, customer)] = summary.aggregated_value
    return totals


def sums(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    totals: Counter[tuple[str, str]] = Counter()
    for event in events:
        totals[(event["event"], event["userId"])] += event["properties"]["value"]
    return totals


def requests_per_poison(emulator: StripeEmulator, bad: set[str]) -> tuple[float, Counter[str]]:
    """The mean number of requests that carried a poison event, and per event the 400s it was answered (slow ones aside)."""
    every = 0
    answered: Counter[str] = Counter()
    for request in emulator.requests:
        for identifier in set(carried(request.body)) & bad:
            every += 1
            answered[identifier] += request.status == 400 and request.fault != "slow"
    return every / len(bad), answered


def faulty(seed: int) -> Faults:
    """20% of the ingest requests get a fault of any kind; the waits are short (the slow one just over QUICK's timeout)."""
    return Faults(rate=0.2, kinds=FAULT_KINDS, seed=seed, slow_delay=0.07, retry_after_ms=5)


QUICK = ("--timeout", "0.05", "--backoff", "0.002")  # the slow fault answers just after the timeout


def check_faulted_run(emulator: StripeEmulator, run: Run, events: list[dict[str, Any]], bad: set[str],
                      expected: Callable[[dict[str, Any]], dict[str, Any]], path: Path) -> None:
    """What both faulted runs promise: poison dead-lettered alone with Stripe's reason, the rest stored exactly once."""
    assert run.code == 2, run.err
    assert set(emulator.summary()["faults"]) == set(FAULT_KINDS), "every kind of fault was met"
    good = [e for e in events if e["messageId"] not in bad]
    assert emulator.stored == {e["messageId"]: expected(e) for e in good}, "every good event stored once, none lost"
    records = dead_letters(emulator, path)
    assert sorted(r["payload"]["identifier"] for r in records) == sorted(bad), "each poison event alone"
    by_id = {e["messageId"]: e for e in events}
    for record in records:
        event = by_id[record["payload"]["identifier"]]
        assert record["event"] == event and record["payload"] == expected(event) and record["status"] == 400
        value = event["properties"]["value"]
        assert f"The meter event value '{value}' has {DIGITS + 4} digits; at most {DIGITS} are accepted." in record["reason"]
    summary = run.summary
    assert (summary["delivered"], summary["dead_lettered"], summary["invalid"], summary["kept"]) == (
        len(good), len(bad), 0, 0)
    assert summary["requests"] == len(emulator.requests) - emulator.summary()["sessions"]
    assert read_back_totals(emulator, good) == sums(good), "the official SDK reads back every good event's value"
    assert emulator.reports == {}


def faulted_run(emulator_factory: Any, send: Callable[..., Run], path: Path, seed: int, fault_seed: int,
                stream: bool) -> tuple[StripeEmulator, set[str]]:
    """5,000 usage events, one in each hundred poison, sent (v1 or stream) through 20% faults and checked by
    :func:`check_faulted_run`; the emulator and the poison events' identifiers, for each mode's own checks."""
    events = usage_events(5_000, seed=seed)
    bad = poison(events, seed=seed)
    emulator = emulator_factory(faults=faulty(fault_seed), max_value_digits=DIGITS)
    run = send(emulator, events, *QUICK, stream=stream)
    check_faulted_run(emulator, run, events, bad, expected_stream if stream else expected_v1, path)
    return emulator, bad


def test_five_thousand_v1_events_survive_twenty_percent_faults_and_poison(
    emulator_factory: Any, send: Callable[..., Run], tmp_path: Path
) -> None:
    emulator, bad = faulted_run(emulator_factory, send, tmp_path / DEAD, seed=1, fault_seed=20261126, stream=False)
    assert emulator.max_events_in_a_request == 1
    assert emulator.duplicates == 0, "v1 refuses a repeated identifier; nothing is stored twice"
    assert emulator.summary()["refused_repeats"] > 0, "answers lost after storing were resent and refused as repeats"
    mean, answered = requests_per_poison(emulator, bad)
    print(f"v1: {mean:.2f} requests per poison event (20% faults); 400s per poison event: {Counter(answered.values())}")
    assert all(1 <= count <= 2 for count in answered.values()), (
        "a poison event alone in its request is refused once and not sent again (twice when a 50 ms client timeout "
        "raced the answer)", answered)


def test_five_thousand_stream_events_survive_twenty_percent_faults_and_poison(
    emulator_factory: Any, send: Callable[..., Run], tmp_path: Path
) -> None:
    emulator, bad = faulted_run(emulator_factory, send, tmp_path / DEAD, seed=2, fault_seed=20261127, stream=True)
    assert emulator.max_events_in_a_request <= 100
    mean, answered = requests_per_poison(emulator, bad)
    bound = 1 + 2 * math.ceil(math.log2(100))
    print(f"stream: {mean:.2f} requests per poison event (20% faults); 400s per poisoned batch: at most "
          f"{max(answered.values())} (bisection bound {bound})")
    assert all(1 <= count <= bound for count in answered.values()), answered


def test_a_session_the_emulator_ends_mid_run_is_renewed_and_nothing_is_lost(
    emulator_factory: Any, send: Callable[..., Run], tmp_path: Path
) -> None:
    events = usage_events(3_000, seed=3)
    emulator = emulator_factory(session_requests=7)  # each token is spent after 7 stream requests
    run = send(emulator, events, stream=True)
    assert run.code == 0, run.err
    assert emulator.stored == {e["messageId"]: expected_stream(e) for e in events}
    assert emulator.duplicates == 0, "the request refused as expired stored nothing, so its resend is its first"
    assert dead_letters(emulator, tmp_path / DEAD) == []
    sessions = emulator.state()["sessions"]
    assert len(sessions) == math.ceil(30 / 7)
    expected_uses = [(sid, "accepted") for sid in sessions for _ in range(7)]
    for n, sid in enumerate(sessions[:-1], start=1):
        expected_uses.insert(8 * n - 1, (sid, "expired"))
    assert [(u.session, u.verdict) for u in emulator.stream_sessions] == expected_uses[:30 + len(sessions) - 1]
    tokens = dict(zip(sessions, emulator.session_tokens))
    stream = [r for r in emulator.requests if r.path == "/v2/billing/meter_event_stream"]
    assert [r.headers["authorization"] for r in stream] == [
        "Bearer ********" + tokens[sid][-4:] for sid, _ in expected_uses[:len(stream)]], "the log names each token, masked"
    assert run.summary["delivered"] == 3_000 and run.summary["dead_lettered"] == 0


def test_a_send_killed_after_storing_is_finished_by_running_it_again(
    emulator_factory: Any, send: Callable[..., Run], tmp_path: Path
) -> None:
    """The events the killed run stored are refused as repeats on the second run, and those refusals count as delivered."""
    events = usage_events(600, seed=4)
    emulator = emulator_factory()
    path = write_ndjson(tmp_path / "events.ndjson", events)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "send", "-m", str(MAPPING), str(path), "--set", f"base_url={emulator.base_url}",
         "--dead-letter", str(tmp_path / DEAD)],
        cwd=REPO, env={**os.environ, "STRIPE_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(emulator.stored) < 100 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=10)
    assert_no_secret(emulator, out, err)
    first = len(emulator.stored)
    assert 0 < first < len(events), "the first run was killed part way"

    run = send(emulator, events)  # the same file again
    assert run.code == 0, run.err
    assert run.summary | {"requests": 0} == {"events": 600, "delivered": 600, "filtered": 0, "invalid": 0,
                                             "dead_lettered": 0, "kept": 0, "requests": 0}
    assert dead_letters(emulator, tmp_path / DEAD) == []
    assert emulator.stored == {e["messageId"]: expected_v1(e) for e in events}, "each stored once"
    assert emulator.summary()["refused_repeats"] == first and emulator.duplicates == 0
    assert read_back_totals(emulator, events) == sums(events)


def test_a_refused_key_stops_delivery_and_keeps_the_events(
    emulator_factory: Any, send: Callable[..., Run], tmp_path: Path
) -> None:
    emulator = emulator_factory(tokens={"sk_test_another_account_0000"})
    for stream in (False, True):
        run = send(emulator, usage_events(150, seed=5), stream=stream)
        assert run.code == 1 and "refused the credential (401" in run.err
        assert run.summary["kept"] == 150 and run.summary["dead_lettered"] == 0
    assert emulator.stored == {} and dead_letters(emulator, tmp_path / DEAD) == []
    assert [r.path for r in emulator.requests] == ["/v1/billing/meter_events", "/v2/billing/meter_event_session"]


# -- 3. the plugin's own checks -------------------------------------------------------------------


def test_docs_validate_check_and_plugin_tests(
    emulator_factory: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_plugin_cases import CASES

    run = in_process(capsys, monkeypatch, {}, [KEY])
    docs = run("docs", "stripe")
    assert docs.code == 0 and "send_event_stream" in docs.out and "`meter_events_base_url`" in docs.out
    assert run("validate", REPO / "destinations" / "stripe").code == 0
    tested = run("test", REPO / "destinations" / "stripe")
    assert tested.code == 0 and tested.out.strip().endswith("9 passed, 0 failed")
    assert sorted(r.passed for slug, r in CASES if slug == "stripe") == [True] * 9, "pytest runs them too"
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    assert run("test", MAPPING).code == 0
    emulator = emulator_factory()
    valid = run("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert valid.code == 0 and "the credential was accepted (200 from" in valid.out
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_wrong_key_0000")
    refused = run("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert refused.code == 1 and "the credential was refused (401 from" in refused.out
