"""Delivery to Metronome (issue 4), proven against the emulator over real sockets.

The big runs go through ``actionmap send`` in this process; the timing tests drive
the :class:`Sender` directly, with a small retry policy, so that backoff can be
measured in tenths of a second. Every command-line run and every dead-letter file
is searched for the API token: it must appear nowhere.
"""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations.metronome.emulator import FAULT_KINDS, Faults, MetronomeEmulator
from engine.delivery.deadletters import DeadLetterFile
from engine.delivery import Outgoing, Requests, RetryPolicy, Sender, classify
from engine.events import Event
from engine.config.mappingfile import MappingFile, load_mapping_file
from engine.delivery import Sent
from engine.delivery.batcher import Batcher
from engine.runtime.send import send_events
from tests.conftest import (
    DEAD,
    REPO,
    USAGE_EVENTS,
    Run,
    expected_payload,
    free_port,
    in_process,
    read_dead_letters,
    sender,
    track_events,
    utc_ms,
)

TOKEN = "mtr-delivery-test-token-5f0c9e21ab7d"
MAPPING = REPO / "mappings" / "metronome.yaml"
BATCH = 100
CLIENT_TIMEOUT = 0.5  # seconds; the "slow" fault answers just after it


def ingest_requests(emulator: MetronomeEmulator) -> list[Any]:
    """The bodies of every ingest request the emulator received (None for a connection reset before reading)."""
    return [r.body for r in emulator.requests if r.path == "/v1/ingest"]


def seen_ids(emulator: MetronomeEmulator) -> set[str]:
    return {e["transaction_id"] for body in ingest_requests(emulator) if body for e in body}


# -- fixtures ------------------------------------------------------------------------


Start = Callable[..., MetronomeEmulator]


@pytest.fixture
def start(emulators: Start) -> Start:
    """Start emulators that accept TOKEN (unless told otherwise); they stop after the test."""

    def make(**options: Any) -> MetronomeEmulator:
        options.setdefault("tokens", {TOKEN})
        return emulators(**options)

    return make


@pytest.fixture
def actionmap(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``actionmap ARGS`` in this process with TOKEN in the environment; its output must never hold TOKEN."""
    return in_process(capsys, monkeypatch, {"METRONOME_API_TOKEN": TOKEN}, [TOKEN])


@pytest.fixture
def send(actionmap: Callable[..., Run], tmp_path: Path) -> Callable[..., Run]:
    """``actionmap send`` of ``events`` to an emulator, dead letters to ``tmp_path / DEAD``."""
    return sender(actionmap, tmp_path, MAPPING)


def dead_letters(path: Path) -> list[dict[str, Any]]:
    """The records of a dead-letter file (none when it was never written); the file must never hold TOKEN."""
    return read_dead_letters(path, [TOKEN])


def mapping_for(emulator: MetronomeEmulator, path: Path = MAPPING) -> MappingFile:
    return load_mapping_file(path, env={"METRONOME_API_TOKEN": TOKEN}, overrides={"base_url": emulator.base_url})


# -- 1. the plain case -----------------------------------------------------------------


def test_ten_thousand_events_are_stored_exactly_once_in_full_batches(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(10_000, seed=1)
    emulator = start()
    dead = tmp_path / DEAD
    run = send(emulator, events)
    assert run.code == 0, run.err
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert list(emulator.stored) == [e["messageId"] for e in events], "one sequential sender keeps the input order"
    assert emulator.duplicates == 0
    assert emulator.max_events_in_a_request <= BATCH
    assert len(emulator.requests) == math.ceil(len(events) / BATCH)
    assert run.summary == {"events": 10_000, "delivered": 10_000, "filtered": 0, "invalid": 0, "dead_lettered": 0,
                           "kept": 0, "requests": len(emulator.requests)}
    assert dead_letters(dead) == []


# -- 2. faults of every kind -------------------------------------------------------------


def test_ten_thousand_events_survive_twenty_percent_faults_of_every_kind(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(10_000, seed=2)
    every_kind_once = [entry for kind in FAULT_KINDS for entry in (kind, None, None, None, None)]
    faults = Faults(every_kind_once, rate=0.2, kinds=FAULT_KINDS, seed=20261126,
                    slow_delay=CLIENT_TIMEOUT + 0.3, retry_after_ms=200)
    emulator = start(faults=faults)
    dead = tmp_path / DEAD
    run = send(emulator, events, "--timeout", str(CLIENT_TIMEOUT))
    assert run.code == 0, run.err
    assert set(emulator.summary()["faults"]) == set(FAULT_KINDS), "every kind of fault was met"
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}, "every event stored once, first payload wins"
    assert emulator.max_events_in_a_request <= BATCH
    assert dead_letters(dead) == []
    summary = run.summary
    assert (summary["delivered"], summary["dead_lettered"], summary["invalid"]) == (10_000, 0, 0)
    assert summary["requests"] == len(emulator.requests) > math.ceil(len(events) / BATCH)


# -- 3. events only the server rejects ---------------------------------------------------


LIMIT = 64  # bytes the emulator accepts per property value


def poison(events: list[dict[str, Any]], seed: int) -> set[str]:
    """Give one event in each hundred a property over LIMIT; their transaction ids."""
    rng = random.Random(seed)
    bad = set()
    for block in range(0, len(events), BATCH):
        event = events[block + rng.randrange(BATCH)]
        event["properties"] = {**event["properties"], "blob": "x" * (LIMIT * 2)}
        bad.add(event["messageId"])
    return bad


def test_events_the_server_rejects_are_isolated_by_bisection(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(3_000, seed=3)
    bad = poison(events, seed=3)
    emulator = start(property_value_limit=LIMIT)
    dead = tmp_path / DEAD
    run = send(emulator, events)
    assert run.code == 2, run.err
    records = dead_letters(dead)
    assert {r["payload"]["transaction_id"] for r in records} == bad and len(records) == len(bad)
    by_id = {e["messageId"]: e for e in events}
    for record in records:
        tid = record["payload"]["transaction_id"]
        assert record["event"] == by_id[tid] and record["payload"] == expected_payload(by_id[tid])
        assert record["status"] == 400 and record["attempts"] == 1 and record["subscription"] == "Usage events"
        assert record["reason"].startswith("rejected by the server: [#/0/properties/blob: ")
        assert f'transaction_id "{tid}"' in record["reason"] and f"at most {LIMIT} bytes" in record["reason"]
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events if e["messageId"] not in bad}
    assert run.summary | {"requests": 0} == {"events": 3_000, "delivered": 3_000 - len(bad), "filtered": 0,
                                             "invalid": 0, "dead_lettered": len(bad), "kept": 0, "requests": 0}

    index = {e["messageId"]: i for i, e in enumerate(events)}
    per_batch: Counter[int] = Counter()
    for body in ingest_requests(emulator):
        (batch, *others) = {index[e["transaction_id"]] // BATCH for e in body}
        assert not others, "a request never mixes two batches"
        per_batch[batch] += 1
    bound = 1 + 2 * math.ceil(math.log2(BATCH))
    assert len(per_batch) == len(events) // BATCH
    assert all(1 < count <= bound for count in per_batch.values()), (bound, per_batch)
    assert run.summary["requests"] == sum(per_batch.values()) == len(emulator.requests)


# -- 4. events refused before sending ----------------------------------------------------


def test_events_outside_the_window_or_with_a_long_id_are_dead_lettered_locally(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    now = datetime.now(timezone.utc)
    good = track_events(150, seed=4)

    def at(tid: str, when: datetime) -> dict[str, Any]:
        return {**good[0], "messageId": tid, "timestamp": when.isoformat()}

    refused = {
        "too-old": at("too-old", now - timedelta(days=35)),
        "old-within-margin": at("old-within-margin", now - timedelta(days=34) + timedelta(minutes=20)),
        "too-far-ahead": at("too-far-ahead", now + timedelta(hours=30)),
        "ahead-within-margin": at("ahead-within-margin", now + timedelta(hours=24) - timedelta(minutes=1)),
    }
    long_id = {**good[1], "messageId": "t" * 200}
    edges = [at("old-but-fine", now - timedelta(days=33)), at("ahead-but-fine", now + timedelta(hours=23))]
    events = good[:70] + list(refused.values()) + [long_id] + edges + good[70:]
    emulator = start()
    dead = tmp_path / DEAD
    run = send(emulator, events)
    assert run.code == 2, run.err
    assert run.summary == {"events": len(events), "delivered": len(good) + 2, "filtered": 0, "invalid": 1,
                           "dead_lettered": len(refused), "kept": 0, "requests": 2}
    sent = seen_ids(emulator)
    assert not sent & (set(refused) | {long_id["messageId"]}), "a refused event never reached the server"
    assert set(emulator.stored) == sent == {e["messageId"] for e in good + edges}

    records = {r["event"]["messageId"]: r for r in dead_letters(dead)}
    assert set(records) == set(refused) | {long_id["messageId"]}
    for tid, event in refused.items():
        record = records[tid]
        assert (record["status"], record["attempts"], record["payload"]) == (None, 0, expected_payload(event))
        side, limit = ("older than", now - timedelta(days=34) + timedelta(hours=1)) if "old" in tid else (
            "later than", now + timedelta(hours=24) - timedelta(minutes=5))
        reason = record["reason"]
        assert reason.startswith(f"timestamp {expected_payload(event)['timestamp']} is {side} the destination accepts")
        assert "34d back to 24h ahead, with a safety margin" in reason
        quoted = re.search(r"margin: (\S+) at the time of sending", reason)
        assert quoted and abs(datetime.fromisoformat(quoted.group(1)) - limit) < timedelta(seconds=30)
    assert records["t" * 200]["reason"].startswith("transaction_id: 200 characters is over maxLength 128")


# -- 5. credentials ------------------------------------------------------------------------


def test_a_refused_token_stops_delivery_and_keeps_the_events(
    start: Start, send: Callable[..., Run], actionmap: Callable[..., Run], tmp_path: Path
) -> None:
    emulator = start(tokens={"a-different-token-0000"})
    dead = tmp_path / DEAD
    run = send(emulator, track_events(250, seed=5))
    assert run.code == 1
    assert "Metronome (Actions) refused the credential (403" in run.err
    assert "were kept, not dead-lettered" in run.err and "run the same send again" in run.err
    assert run.summary == {"events": 250, "delivered": 0, "filtered": 0, "invalid": 0, "dead_lettered": 0, "kept": 250,
                           "requests": 1}, "every event of the input is counted: kept, for the same send again"
    assert len(emulator.requests) == 1, "nothing more is sent after the refusal"
    assert emulator.stored == {} and dead_letters(dead) == []

    check = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert check.code == 1 and "the credential was refused (403 from" in check.out


def test_check_tells_valid_from_refused_from_unreachable(start: Start, actionmap: Callable[..., Run]) -> None:
    emulator = start()
    valid = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert valid.code == 0 and "the credential was accepted (400 from" in valid.out
    assert [(r.events, r.status) for r in emulator.requests] == [(0, 400)], "the check is an empty batch"
    unreachable = actionmap("check", "-m", MAPPING, "--set", f"base_url=http://127.0.0.1:{free_port()}")
    assert unreachable.code == 2 and "could not be reached" in unreachable.out and "ConnectError" in unreachable.out


def test_a_credential_refused_in_the_middle_of_a_bisection_keeps_what_was_decided(
    start: Start, tmp_path: Path
) -> None:
    """The first half of a rejected batch is settled (one stored, one dead-lettered) before the token is revoked."""
    emulator = start(property_value_limit=LIMIT)
    events = track_events(4, seed=6)
    events[0]["properties"] = {"blob": "x" * (LIMIT * 2)}
    responses = []

    def revoke_after_four(response: httpx.Response) -> None:
        responses.append(response.status_code)
        if len(responses) == 4:
            emulator.tokens = frozenset({"rotated-token-0000"})

    mapping = mapping_for(emulator)
    client = httpx.Client(timeout=5, event_hooks={"response": [revoke_after_four]})
    sender = Sender(mapping, client=client)
    path = tmp_path / "dead.ndjson"
    summary = send_events(mapping, events, dead_letters=path, sender=sender)
    sender.close()
    assert responses == [400, 400, 400, 200, 403]
    assert list(emulator.stored) == [events[1]["messageId"]]
    assert [r["event"]["messageId"] for r in dead_letters(path)] == [events[0]["messageId"]]
    assert (summary.delivered, summary.dead_lettered, summary.kept, summary.requests) == (1, 1, 2, 5)
    (refusal,) = summary.refused.values()
    assert "refused the credential (403" in refusal and TOKEN not in refusal


def test_the_window_is_judged_when_the_batch_leaves_not_when_the_event_was_read(start: Start, tmp_path: Path) -> None:
    """An event read inside the window (margin included) but sent an hour later, past its edge, is not sent."""
    moment = [datetime.now(timezone.utc)]
    emulator = start()
    fresh, edge = track_events(2, seed=13)
    edge["timestamp"] = (moment[0] - timedelta(days=34, minutes=-90)).isoformat()
    mapping = mapping_for(emulator)
    sender = Sender(mapping)
    batcher = Batcher(mapping, sender, now=lambda: moment[0])
    assert batcher.add(0, fresh) == batcher.add(1, edge) == []  # both wait in the open batch
    moment[0] += timedelta(hours=1)  # the batch waited for more input
    fates = {fate.position: fate for fate in batcher.flush()}
    sender.close()
    assert (fates[0].category, fates[1].category) == ("delivered", "dead_lettered")
    with DeadLetterFile(tmp_path / "dead.ndjson", mapping.settings) as dead:
        for letter in fates[1].letters:
            dead.write(letter)
    assert seen_ids(emulator) == {fresh["messageId"]}
    (record,) = dead_letters(tmp_path / "dead.ndjson")
    assert record["event"] == edge and " is older than the destination accepts " in record["reason"]


# -- 6. secrets and --dry-run ------------------------------------------------------------


def test_dry_run_prints_the_exact_requests_with_the_token_masked(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(230, seed=7)
    events[5] = {**events[5], "timestamp": "2020-01-01T00:00:00Z"}  # dead-lettered before sending, dry or not
    emulator = start()
    dry = send(emulator, events, "--dry-run")
    assert dry.code == 2
    assert emulator.requests == [], "a dry run sends nothing"
    *lines, summary = dry.out.strip().splitlines()
    printed = [orjson.loads(line) for line in lines]
    assert all(r["method"] == "POST" and r["url"] == f"{emulator.base_url}/v1/ingest" for r in printed)
    assert all(r["headers"]["Authorization"] == "Bearer ********" for r in printed)
    assert orjson.loads(summary)["requests"] == len(printed) == 3

    wet = send(emulator, events)
    assert wet.code == 2
    assert [r["body"] for r in printed] == ingest_requests(emulator), "the dry run printed exactly what is sent"
    dry_totals = orjson.loads(summary)
    assert dry_totals["kept"] == wet.summary["delivered"], "a dry run keeps what a real one delivers"
    assert {k: v for k, v in dry_totals.items() if k not in ("delivered", "kept", "connections")} == {
        k: v for k, v in wet.summary.items() if k not in ("delivered", "kept")}
    assert [r["event"] for r in dead_letters(tmp_path / DEAD)] == [events[5]] * 2, "once per run"


def test_requests_are_rendered_without_a_transport() -> None:
    """Rendering is apart from sending (issue 14): no client, no server, the same requests a send makes."""
    mapping = load_mapping_file(MAPPING, env={"METRONOME_API_TOKEN": TOKEN}, overrides={"base_url": "http://127.0.0.1:9"})
    events = track_events(3, seed=3)
    items = [Outgoing(index, event, expected_payload(event)) for index, event in enumerate(events)]
    refused: list[Any] = []
    (request,) = Requests(mapping).preview(mapping.subscriptions[0], items, refused.append)
    assert refused == []
    assert request["method"] == "POST" and request["url"] == "http://127.0.0.1:9/v1/ingest"
    assert request["headers"]["Authorization"] == "Bearer ********"
    assert request["body"] == [item.payload for item in items]


# -- 7. replay ------------------------------------------------------------------------------


CORRECTED = USAGE_EVENTS + """\
    mapping:
      properties: {n: $.properties.n, region: $.properties.region}
"""


def test_replay_through_a_corrected_mapping_delivers_the_rejected_events(
    start: Start, send: Callable[..., Run], actionmap: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(300, seed=8)
    bad = poison(events, seed=8)
    emulator = start(property_value_limit=LIMIT)
    url = f"base_url={emulator.base_url}"
    dead = tmp_path / DEAD
    assert send(emulator, events).code == 2
    assert not bad & set(emulator.stored)

    same = actionmap("replay", dead, "-m", MAPPING, "--set", url, "--dead-letter", tmp_path / "again.ndjson")
    assert same.code == 2 and same.summary["dead_lettered"] == len(bad), "the uncorrected mapping is rejected again"
    refused = actionmap("replay", dead, "-m", MAPPING, "--set", url, "--dead-letter", dead)
    assert refused.code == 1 and "is the file being replayed" in refused.err

    corrected = tmp_path / "corrected.yaml"
    corrected.write_text(CORRECTED)
    replay = actionmap("replay", dead, "-m", corrected, "--set", url, "--dead-letter", tmp_path / "still.ndjson")
    assert replay.code == 0, replay.err
    assert replay.summary | {"kept": 0, "requests": 0} == {"events": len(bad), "delivered": len(bad), "filtered": 0,
                                                "invalid": 0, "dead_lettered": 0, "kept": 0, "requests": 0}
    by_id = {e["messageId"]: e for e in events}
    for tid in bad:
        assert emulator.stored[tid] == {**expected_payload(by_id[tid]), "properties": {
            "n": by_id[tid]["properties"]["n"], "region": by_id[tid]["properties"]["region"]}}
    assert len(emulator.stored) == len(events)


def test_a_malformed_line_is_dead_lettered_as_its_text_and_replays_once_fixed_by_hand(
    start: Start, actionmap: Callable[..., Run], tmp_path: Path
) -> None:
    events = track_events(3, seed=81)
    broken = orjson.dumps(events[1]).decode()[:-1] + ', "extra": }'  # what a careless producer writes
    source = tmp_path / "events.ndjson"
    source.write_text("\n".join([orjson.dumps(events[0]).decode(), broken, orjson.dumps(events[2]).decode()]) + "\n")
    emulator = start()
    url = f"base_url={emulator.base_url}"
    sent = actionmap("send", "-m", MAPPING, source, "--set", url, "--dead-letter", tmp_path / DEAD)
    assert sent.code == 2 and sent.summary["invalid"] == 1 and sent.summary["delivered"] == 2
    (letter,) = dead_letters(tmp_path / DEAD)
    assert letter["event"] is None and letter["raw"] == broken, "the line is kept exactly as it came"
    assert "input line 2" in letter["reason"]

    letter["raw"] = orjson.dumps(events[1]).decode()  # the operator mends the line in the dead-letter file
    fixed = tmp_path / "fixed.ndjson"
    fixed.write_bytes(orjson.dumps(letter) + b"\n")
    replay = actionmap("replay", fixed, "-m", MAPPING, "--set", url, "--dead-letter", tmp_path / "again.ndjson")
    assert replay.code == 0, replay.err
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}


# -- 8. retry timing -------------------------------------------------------------------------


def deliver_one_batch(emulator: MetronomeEmulator, sender_options: dict[str, Any], size: int = 10) -> Sent:
    mapping = mapping_for(emulator)
    items = [Outgoing(i, e, expected_payload(e)) for i, e in enumerate(track_events(size, seed=9))]
    sender = Sender(mapping, **sender_options)
    try:
        return sender.send(mapping.subscriptions[0], items)
    finally:
        sender.close()


def gaps(emulator: MetronomeEmulator) -> list[float]:
    received = [r.received for r in emulator.requests]
    return [later - earlier for earlier, later in zip(received, received[1:])]


def test_retry_after_is_honoured(start: Start) -> None:
    emulator = start(faults=Faults(["429_retry_after", "429_retry_after"], retry_after_ms=300))
    sent = deliver_one_batch(emulator, {"policy": RetryPolicy(base=0.001, cap=0.001)})
    assert [r.status for r in emulator.requests] == [429, 429, 200]
    assert all(gap >= 0.3 for gap in gaps(emulator)), gaps(emulator)
    assert (sent.requests, sent.retries, len(sent.delivered), sent.dead, sent.kept) == (3, 2, 10, [], [])


class UpperBound(random.Random):
    """Full jitter at its worst: every delay is the top of its range, so the schedule is visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_backoff_doubles_from_attempt_to_attempt(start: Start) -> None:
    emulator = start(faults=["503", "500", "502", "504"])
    policy = RetryPolicy(base=0.05, cap=0.3)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        time.sleep(seconds)
        return False

    assert len(deliver_one_batch(emulator, {"policy": policy, "rng": UpperBound(), "wait": wait}).delivered) == 10
    assert waits == [min(policy.cap, policy.base * 2**n) for n in range(4)] == [0.05, 0.1, 0.2, 0.3]
    assert all(gap >= wait for gap, wait in zip(gaps(emulator), waits)), "each wait happened between two requests"


@given(attempt=st.integers(1, 40), base=st.floats(0.001, 5.0), cap=st.floats(0.001, 60.0), seed=st.integers(0, 2**32))
def test_full_jitter_stays_within_the_capped_exponential(attempt: int, base: float, cap: float, seed: int) -> None:
    delay = RetryPolicy(base=base, cap=cap).delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2 ** (attempt - 1))


def test_retry_after_headers_are_read_in_every_form() -> None:
    def after(**headers: str) -> float | None:
        return classify(httpx.Response(429, headers=headers)).retry_after

    soon = datetime.now(timezone.utc) + timedelta(seconds=90)
    assert after(**{"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert after(**{"retry-after": "7"}) == 7.0
    assert 80 < (after(**{"retry-after": soon.strftime("%a, %d %b %Y %H:%M:%S GMT")}) or 0) <= 90
    assert 80 < (after(**{"retry-after": soon.strftime("%a, %d %b %Y %H:%M:%S -0000")}) or 0) <= 90
    assert after(**{"retry-after": "soon, please"}) is None
    assert after(**{"retry-after-ms": "x", "retry-after": "-3"}) == 0.0
    assert after() is None


def test_a_batch_retried_past_the_budget_is_dead_lettered(
    start: Start, send: Callable[..., Run], tmp_path: Path
) -> None:
    emulator = start(faults=["503"] * 200)
    dead = tmp_path / DEAD
    events = track_events(10, seed=10)
    run = send(emulator, events, "--retry-for", "0.6")
    assert run.code == 2
    attempts = len(emulator.requests)
    received = [r.received for r in emulator.requests]
    assert attempts >= 2 and received[-1] - received[0] <= 0.6 + 0.1  # the budget, and the last request's way there
    records = dead_letters(dead)
    assert [r["event"] for r in records] == events
    for record in records:
        assert record["reason"].startswith(f"retries exhausted after {attempts} attempts (retry budget 0.6 s)")
        assert "last answer: 503" in record["reason"]
        assert (record["status"], record["attempts"]) == (503, attempts)
    assert emulator.stored == {}
    assert run.summary["dead_lettered"] == 10 and run.summary["requests"] == attempts


# -- 9. the official SDK reads back what actionmap delivered ---------------------------------


def test_the_official_sdk_ingests_and_reads_back_through_the_emulator(start: Start, send: Callable[..., Run]) -> None:
    from metronome import Metronome

    emulator = start()
    events = track_events(40, seed=11)
    assert send(emulator, events).code == 0
    own = [expected_payload(e) | {"transaction_id": f"sdk-{e['messageId']}"} for e in track_events(3, seed=12)]
    with Metronome(bearer_token=TOKEN, base_url=emulator.base_url, max_retries=0) as sdk:
        sdk.v1.usage.ingest(usage=own)
        sdk.v1.usage.ingest(usage=[expected_payload(events[0])])  # a repeat: ignored, reported as a duplicate
        found = sdk.v1.usage.search(transaction_ids=[e["messageId"] for e in events] + [p["transaction_id"] for p in own])

    def as_sent(item: Any) -> dict[str, Any]:
        return {"transaction_id": item.transaction_id, "customer_id": item.customer_id, "timestamp": utc_ms(item.timestamp),
                "event_type": item.event_type, "properties": item.properties}

    first = {item.transaction_id: as_sent(item) for item in found if not item.is_duplicate}
    assert first == {p["transaction_id"]: p for p in [expected_payload(e) for e in events] + own}
    assert [item.transaction_id for item in found if item.is_duplicate] == [events[0]["messageId"]]


def test_library_mode_sends_parsed_events_and_returns_the_summary(start: Start, tmp_path: Path) -> None:
    import engine

    emulator = start()
    events = track_events(250, seed=21) + [{"type": "identify", "messageId": "i-1", "userId": "u"}, {"type": "track"}]
    summary = engine.send_events(mapping_for(emulator), events, dead_letters=tmp_path / "dead.ndjson")
    assert (summary.events, summary.delivered, summary.filtered, summary.invalid, summary.requests) == (252, 250, 1, 1, 3)
    assert [emulator.stored[e["messageId"]] for e in events[:250]] == [expected_payload(e) for e in events[:250]]
    assert [r["event"] for r in dead_letters(tmp_path / "dead.ndjson")] == [{"type": "track"}]


def test_open_batches_leave_after_a_linger_when_the_input_pauses(start: Start) -> None:
    """Trickling input (a pipe) does not hold events until a batch fills: a quiet spell sends them."""
    emulator = start()
    events = track_events(5, seed=31)
    stored_while_paused: list[int] = []

    def trickle() -> Iterator[Event]:
        for i, event in enumerate(events):
            if i == 3:  # the input goes quiet for longer than the linger
                time.sleep(0.8)
                stored_while_paused.append(len(emulator.stored))
            yield Event(i, i + 1, event)

    mapping = mapping_for(emulator)
    sender = Sender(mapping)
    summary = send_events(mapping, trickle(), sender=sender, linger=0.2)
    sender.close()
    assert stored_while_paused == [3]
    assert (summary.delivered, summary.requests, len(emulator.stored)) == (5, 2, 5)


def test_send_from_a_pipe_sends_what_waits_when_the_pipe_goes_quiet(start: Start) -> None:
    emulator = start()
    events = track_events(3, seed=41)
    command = [sys.executable, "-m", "engine.cli", "send", "-m", str(MAPPING), "--set", f"base_url={emulator.base_url}"]
    env = dict(os.environ, METRONOME_API_TOKEN=TOKEN)
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as process:
        process.stdin.write(b"".join(orjson.dumps(e) + b"\n" for e in events))
        process.stdin.flush()
        deadline = time.monotonic() + 10
        while len(emulator.stored) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        stored_before_end = len(emulator.stored)
        out, err = process.communicate(timeout=10)  # closes stdin: the end of the input
    assert stored_before_end == 3, err
    assert orjson.loads(out.splitlines()[-1])["delivered"] == 3 and process.returncode == 0
