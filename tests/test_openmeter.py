"""OpenMeter (issue 15): the emulator against the official ``openmeter`` SDK (the oracle), and ``actionmap send``.

All over real loopback sockets. Every command-line run, dead letter and the emulator's own log is searched for
the API token: it must appear nowhere.
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
import openmeter
import pytest
from corehttp.exceptions import ClientAuthenticationError, HttpResponseError
from openmeter.models import Event

from destinations.openmeter.emulator import OpenMeterEmulator
from engine.tools.emulator import FAULT_KINDS, Faults
from tests.conftest import DEAD, REPO, Run, in_process, read_dead_letters, sender, started, track_events, utc_ms
from tests.test_plugin_cases import CASES

TOKEN = "om-test-token-7d41c9e2b5a8"
MAPPING = REPO / "mappings" / "openmeter.yaml"
BATCH = 100
TIMEOUT = 0.25  # seconds; the "slow" fault answers just after it
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)

Start = Callable[..., OpenMeterEmulator]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start emulators that accept TOKEN; each is stopped after the test and its log must not hold TOKEN."""
    yield from started(OpenMeterEmulator, {TOKEN}, secrets=[TOKEN])


@pytest.fixture
def actionmap(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """``actionmap ARGS`` in this process with TOKEN in the environment; its output must never hold TOKEN."""
    return in_process(capsys, monkeypatch, {"OPENMETER_API_KEY": TOKEN}, [TOKEN])


@pytest.fixture
def send(actionmap: Callable[..., Run], tmp_path: Path) -> Callable[..., tuple[int, Any, list[Any]]]:
    """``actionmap send`` of ``events`` to an emulator: the exit status, the summary and the dead letters."""
    deliver = sender(actionmap, tmp_path, MAPPING)

    def run(emulator: OpenMeterEmulator, events: list[dict[str, Any]], *options: str) -> tuple[int, Any, Any]:
        result = deliver(emulator, events, *options)
        return result.code, result.summary, read_dead_letters(tmp_path / DEAD, [TOKEN])

    return run


def client(emulator: OpenMeterEmulator, token: str = TOKEN) -> openmeter.Client:
    return openmeter.Client(endpoint=emulator.base_url, token=token)


def cloud_event(n: int, *, at: datetime | None = None, **changes: Any) -> Event:
    """Event ``om-<n>`` for customer ``cust-<n % 2>``, two hours and n minutes before NOW unless ``at`` says."""
    fields: dict[str, Any] = {"id": f"om-{n}", "source": "svc", "specversion": "1.0", "type": "api_call",
                              "subject": f"cust-{n % 2}", "time": at or NOW - timedelta(hours=2, minutes=n),
                              "data": {"tokens": n}}
    return Event(**{**fields, **changes})


def ingest_requests(emulator: OpenMeterEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.path == "/api/v1/events" and r.method == "POST"]


def test_the_sdk_ingests_and_reads_back_what_was_stored(start: Start) -> None:
    emulator = start(clock=lambda: NOW)
    sdk = client(emulator)
    ist = timezone(timedelta(hours=5, minutes=30))
    sdk.events.ingest_events([cloud_event(1), cloud_event(2, at=datetime(2026, 11, 26, 15, 0, 0, 250000, ist))])
    sdk.events.ingest_event(cloud_event(3, at=NOW - timedelta(days=4)))
    sdk.events.ingest_events_json([cloud_event(1, data={"tokens": 999}), cloud_event(4)])
    assert [r.headers["content-type"] for r in ingest_requests(emulator)] == [
        "application/cloudevents-batch+json", "application/cloudevents+json", "application/json"]
    assert [r.status for r in emulator.requests] == [204, 204, 204] and emulator.duplicates == 1
    assert list(emulator.stored) == ["om-1", "om-2", "om-3", "om-4"]
    assert emulator.stored["om-1"]["data"] == {"tokens": 1}, "the first accepted event wins"

    (listed,) = sdk.events.list(id="om-2")
    assert listed.event.time == datetime(2026, 11, 26, 9, 30, 0, 250000, timezone.utc)
    assert listed.ingested_at == listed.stored_at == NOW and listed.event.subject == "cust-0"
    assert (listed.event.source, listed.event.type, listed.event.data) == ("svc", "api_call", {"tokens": 2})
    raw = httpx.get(f"{emulator.base_url}/api/v1/events?id=om-2", headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.json()[0]["event"]["time"] == "2026-11-26T09:30:00.25Z", "UTC, as Go writes a time"
    assert [e.event.id for e in sdk.events.list()] == ["om-1", "om-4", "om-2"], "newest first, the last 72 hours"
    older = sdk.events.list(from_parameter=NOW - timedelta(days=5), subject="cust-1")
    assert [e.event.id for e in older] == ["om-1", "om-3"]
    assert [e.event.id for e in sdk.events.list(id="om", limit=2)] == ["om-1", "om-4"]
    paged = sdk.events_v2.list(limit=3)
    assert [e.event.id for e in paged] == ["om-1", "om-4", "om-2", "om-3"], "two pages, one cursor, no 72 h default"
    assert [e.event.id for e in sdk.events_v2.list(filter={"subject": {"$eq": "cust-0"}})] == ["om-4", "om-2"]
    assert sdk.meters.list() == []


def test_the_sdk_gets_the_errors_openmeter_answers(start: Start) -> None:
    emulator = start(faults=Faults(["429", "429_retry_after"], retry_after_ms=200), forbidden_data_keys={"blob"})
    sdk = client(emulator)
    with pytest.raises(HttpResponseError) as no_hint:
        sdk.events.ingest_events([cloud_event(1)])
    assert no_hint.value.status_code == 429 and len(emulator.requests) == 1, "no Retry-After: the SDK does not retry"
    sdk.events.ingest_events([cloud_event(1)])
    assert [r.status for r in emulator.requests] == [429, 429, 204], "Retry-After: the SDK waits and retries"

    with pytest.raises(HttpResponseError) as wrong_type:
        sdk.events.ingest_events([cloud_event(2)], content_type="application/cloudevents-batch+json; charset=utf-8")
    problem, status = wrong_type.value.model, wrong_type.value.status_code
    assert (status, problem.type, problem.title, problem.status) == (400, "about:blank", "Bad Request", 400)
    assert problem.detail == "invalid content type: application/cloudevents-batch+json; charset=utf-8"
    assert problem.instance.startswith("urn:request:")

    bad = [cloud_event(3).as_dict(), {**cloud_event(4).as_dict(), "data": {"n": 1, "blob": "x"}}]
    with pytest.raises(HttpResponseError) as refused:
        sdk.events.ingest_events(bad)
    assert refused.value.model.detail == ('request body has an error: doesn\'t match schema: '
                                          'Error at "/1/data": property "blob" is unsupported')
    no_subject = {k: v for k, v in cloud_event(5).as_dict().items() if k != "subject"}
    with pytest.raises(HttpResponseError) as missing:
        sdk.events.ingest_events([no_subject])
    assert missing.value.model.detail.endswith('Error at "/0": property "subject" is missing')
    assert list(emulator.stored) == ["om-1"], "one bad event refuses its whole request"

    with pytest.raises(HttpResponseError) as too_many:
        sdk.events.list(limit=101)
    assert too_many.value.model.detail == 'parameter "limit" in query has an error: number must be at most 100'
    with pytest.raises(ClientAuthenticationError) as unauthorized:
        client(emulator, token="not-a-valid-token").events.ingest_events([cloud_event(6)])
    assert unauthorized.value.status_code == 401 and unauthorized.value.model.title == "Unauthorized"

    emulator.faults.extend(["429_retry_after"])  # what the SDK waited for: Retry-After, then Cloud's X-RateLimit-*
    answer = httpx.post(f"{emulator.base_url}/api/v1/events", content=b"[]", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/cloudevents-batch+json"})
    assert answer.status_code == 429 and answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "1" and answer.headers["x-ratelimit-remaining"] == "0"
    assert int(answer.headers["x-ratelimit-reset"]) >= int(datetime.now(timezone.utc).timestamp())


# -- delivery through actionmap send -------------------------------------------------------


def expected_payload(event: dict[str, Any]) -> dict[str, Any]:
    """What the default mapping makes of a track event (a plain reference, not the engine)."""
    return {"id": event["messageId"], "source": "actionmap", "specversion": "1.0", "type": event["event"],
            "subject": event["userId"], "time": utc_ms(datetime.fromisoformat(event["timestamp"])),
            "data": event["properties"]}


def poison(events: list[dict[str, Any]], seed: int) -> set[str]:
    """Give one event in each hundred a data key the emulator's schema forbids; their ids."""
    rng = random.Random(seed)
    chosen = [events[block + rng.randrange(BATCH)] for block in range(0, len(events), BATCH)]
    for event in chosen:
        event["properties"] = {**event["properties"], "blob": "only the server knows this is wrong"}
    return {event["messageId"] for event in chosen}


def test_five_thousand_events_survive_faults_of_every_kind_and_poison_is_dead_lettered_alone(
    start: Start, send: Callable[..., Any]
) -> None:
    events = track_events(5_000, seed=15)
    bad = poison(events, seed=15)
    every_kind_once = [entry for kind in FAULT_KINDS for entry in (kind, None, None, None)]
    faults = Faults(every_kind_once, rate=0.2, kinds=FAULT_KINDS, seed=20261126,
                    slow_delay=TIMEOUT + 0.2, retry_after_ms=200)
    emulator = start(faults=faults, forbidden_data_keys={"blob"})
    code, totals, records = send(emulator, events, "--timeout", str(TIMEOUT), "--backoff", "0.01")
    assert code == 2
    assert set(emulator.summary()["faults"]) == set(FAULT_KINDS), "every kind of fault was met"
    good = {e["messageId"]: expected_payload(e) for e in events if e["messageId"] not in bad}
    assert emulator.stored == good, "every good event stored once (first accepted wins), no poison stored"
    assert emulator.max_events_in_a_request <= BATCH
    assert (totals["delivered"], totals["dead_lettered"], totals["invalid"]) == (5_000 - len(bad), len(bad), 0)

    assert sorted(r["payload"]["id"] for r in records) == sorted(bad), "each poison event dead-lettered once"
    by_id = {e["messageId"]: e for e in events}
    for record in records:
        assert record["event"] == by_id[record["payload"]["id"]] and record["status"] == 400
        position = int(record["payload"]["id"].removeprefix("m-")) % BATCH  # in its batch, as the server saw it
        assert record["reason"] == ("rejected by the server: request body has an error: doesn't match schema: "
                                    f'Error at "/{position}/data": property "blob" is unsupported')

    # Requests per poison event: the 400 names the event by its place in the batch, so the
    # batch is sent once with it and once without it. Retries of a faulted request (the same
    # payloads again) are not counted: a batch's requests are its distinct sets of payloads.
    index = {e["messageId"]: i for i, e in enumerate(events)}
    sets: dict[int, set[frozenset[str]]] = {}
    sent: Counter[int] = Counter()
    for request in (r for r in ingest_requests(emulator) if r.body is not None):  # None: reset before reading
        (batch, *others) = {index[e["id"]] // BATCH for e in request.body}
        assert not others, "a request never mixes two batches"
        sets.setdefault(batch, set()).add(frozenset(e["id"] for e in request.body))
        sent[batch] += 1
    poisoned = {index[i] // BATCH for i in bad}
    print(f"requests per poison event: {sum(len(sets[b]) for b in poisoned) / len(bad):.2f} "
          f"({sum(sent[b] for b in poisoned) / len(bad):.2f} with the retries of faulted requests)")
    assert all(len(sets[b]) == 2 for b in poisoned), "with it, then without it: no bisection"
    assert all(len(sets[b]) == 1 for b in range(len(events) // BATCH) if b not in poisoned)

    # Read back through the SDK: all of it by cursor (v2), and a sample by id (v1).
    sdk = client(emulator)
    listed = {e.event.id: (e.event.source, e.event.type, e.event.subject, e.event.time, e.event.data)
              for e in sdk.events_v2.list(limit=100)}
    assert listed == {i: (p["source"], p["type"], p["subject"], datetime.fromisoformat(p["time"]), p["data"])
                      for i, p in good.items()}
    for event_id in sorted(good)[::250]:
        assert [e.event.id for e in sdk.events.list(id=event_id) if e.event.id == event_id] == [event_id]


def test_several_poison_events_in_one_batch_cost_one_request_each(start: Start, send: Callable[..., Any]) -> None:
    """Each 400 names only the first bad event; it is dead-lettered and the rest resent, until none is left."""
    events = track_events(200, seed=16)
    for i in (5, 50, 99):
        events[i]["properties"] = {**events[i]["properties"], "blob": True}
    emulator = start(forbidden_data_keys={"blob"})
    code, _, records = send(emulator, events)
    assert code == 2
    first = [(r.events, r.status) for r in ingest_requests(emulator) if r.body[0]["id"] == "m-0"]
    assert first == [(100, 400), (99, 400), (98, 400), (97, 204)], "one request per poison event, then the rest"
    assert len(ingest_requests(emulator)) == len(first) + 1, "the clean batch goes once"
    assert [r["reason"].split('Error at "')[1].split('"')[0] for r in records] == ["/5/data", "/49/data", "/97/data"]
    assert sorted(emulator.stored) == sorted(e["messageId"] for i, e in enumerate(events) if i not in (5, 50, 99))


def test_the_credential_check_lists_meters(start: Start, actionmap: Callable[..., Run]) -> None:
    emulator = start()
    valid = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}")
    assert valid.code == 0 and "the credential was accepted (200 from" in valid.out
    refused = actionmap("check", "-m", MAPPING, "--set", f"base_url={emulator.base_url}", "--set", "api_key=nope")
    assert refused.code == 1 and "the credential was refused (401 from" in refused.out
    assert [(r.method, r.path, r.status) for r in emulator.requests] == [("GET", "/api/v1/meters", 200),
                                                                         ("GET", "/api/v1/meters", 401)]


def test_docs_validate_and_the_plugin_tests_pass(actionmap: Callable[..., Run]) -> None:
    docs = actionmap("docs", "openmeter")
    assert docs.code == 0 and "# OpenMeter (Actions)" in docs.out
    assert "`POST {{settings.base_url}}/api/v1/events`" in docs.out
    assert "`https://openmeter.cloud`" in docs.out and '| `actionmap` |' in docs.out
    folder = REPO / "destinations" / "openmeter"
    assert actionmap("validate", folder).code == 0 and actionmap("validate", MAPPING).code == 0
    tested = actionmap("test", folder)
    assert tested.code == 0 and "7 passed, 0 failed" in tested.out
    assert sum(1 for slug, result in CASES if slug == "openmeter" and result.passed) == 7, "pytest runs them too"


def test_the_command_line_serves_the_sdk_until_sigterm() -> None:
    code = "import sys; from destinations.openmeter.emulator import main; sys.exit(main(sys.argv[1:]))"
    args = ["--port", "0", "--token", TOKEN, "--forbid-data-key", "blob"]
    process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()  # type: ignore[union-attr]
        sdk = openmeter.Client(endpoint=url, token=TOKEN)
        sdk.events.ingest_events([cloud_event(1), cloud_event(2)])
        with pytest.raises(HttpResponseError):
            sdk.events.ingest_events([cloud_event(3, data={"blob": 1})])
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0 and TOKEN not in out + err, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["statuses"], summary["stored"], summary["refused_requests"]) == ({"204": 1, "400": 1}, 2, 1)
