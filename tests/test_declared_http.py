"""The declared HTTP features any plugin may use (issue 15): body templates, form bodies, exact content types,
success statuses, response rules naming items, "already stored" answers, rate-limit headers and session tokens.

A fictional third-party plugin, ``tests/fixtures/ledger``, declares them all in YAML; its API runs here on
the shared emulator core over real sockets. Nothing in this file or the plugin is platform code in the engine.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
from hypothesis import given, settings as hypothesis_settings
from hypothesis import strategies as st

from engine.config.definitions import Catalog, load_destination
from engine.config.http import compile_items
from engine.config.mappingfile import MappingFile, load_mapping_file
from engine.delivery import Answer as Meaning, Outgoing, RetryPolicy, Sender
from engine.delivery.answers import named, retry_after
from engine.delivery.requests import sessions_for
from engine.config.http import RateLimitHeader
from engine.errors import ConfigError
from engine.runtime.send import send_events
from engine.tools.emulator import Answer, Call, Emulator, Route, json_answer
from tests.conftest import REPO, track_events

PLUGIN = REPO / "tests" / "fixtures" / "ledger"
KEY = "ledger-key-" + "7" * 16


class Ledger(Emulator):
    """The ledger's API: sessions, wrapped entries (400 names bad ones by id, 409 repeats by index), forms, cloud."""

    slug = "ledger"
    name = "Ledger"
    secret_headers = frozenset({"authorization", "x-ledger-session"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sessions: dict[str, bool] = {}  # token -> still valid
        self.session_uses: list[str] = []  # the token of each entries request that was accepted
        self.answer_200 = False
        self.session_failures = 0  # the next session requests answered 503
        self.next_token = ""  # the token the next sessions get (a test's hostile one); random when empty
        self.session_wait = "0"  # the Retry-After of a failed session request
        super().__init__(*args, **kwargs)

    def routes(self) -> list[Route]:
        return [Route("POST", "/sessions", self._session), Route("POST", "/v1/entries", self._entries, ingest=True, authenticated=False),
                Route("POST", "/v1/form", self._form, ingest=True), Route("POST", "/v1/cloud", self._cloud, ingest=True)]

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        return json_answer(status, {"message": text}, *headers)

    def expire_sessions(self) -> None:
        with self.lock:
            self.sessions = dict.fromkeys(self.sessions, False)

    def _session(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        token = self.next_token or "sess-" + secrets.token_hex(12)
        with self.lock:
            if self.session_failures:
                self.session_failures -= 1
                return self.error(503, "sessions are unavailable for a moment", ("Retry-After", self.session_wait))
            self.sessions[token] = True
        expires = (datetime.now(timezone.utc) + timedelta(minutes=15)).isoformat()
        return json_answer(200, {"session": {"token": token, "expires_at": expires}})

    def _entries(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer | None:
        token = call.headers.get("x-ledger-session")
        with self.lock:
            if token not in self.sessions:
                return json_answer(401, {"error": "unknown_session"})
            if not self.sessions[token]:
                return json_answer(401, {"error": "session_expired"})
        body = call.json()
        entries = body["entries"]
        bad = [{"id": e["id"], "why": f"amount {e['amount']} is negative"} for e in entries if e["amount"] < 0]
        if bad:
            return json_answer(400, {"kind": "invalid_entries", "errors": bad})
        with self.lock:
            repeats = {str(i): "exists" for i, e in enumerate(entries) if self.first(e["id"]) is not None}
            if repeats:
                return json_answer(409, {"repeats": repeats})
            refused = [{"id": e["id"], "why": "an amount of 0 is not an entry"} for e in entries if e["amount"] == 0]
            for entry in entries:
                if entry["amount"] != 0:
                    self.store(entry["id"], {**entry, "book": body["book"]})
            self.session_uses.append(str(token))
        return None if fault == "store_all_then_drop" else json_answer(200, {"ok": len(entries) - len(refused), "refused": refused})

    def _form(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        if call.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self.error(415, "send a form")
        fields = dict(parse_qsl(call.raw.decode(), keep_blank_values=True))
        with self.lock:
            if self.first(fields["id"]) is not None:
                return self.error(400, f"an entry already exists with id {fields['id']}")
            self.store(fields["id"], fields)
        return json_answer(200, {})

    def _cloud(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        if call.headers.get("content-type") != "application/vnd.ledger-batch+json":
            return self.error(400, f"invalid content type: {call.headers.get('content-type')}")
        for entry in call.json():
            self.store(entry["id"], entry)
        return Answer(200 if self.answer_200 else 202, b"", content_type=None)

    def count(self, call: Call, body: Any) -> int | None:
        return len(body["entries"]) if isinstance(body, dict) and isinstance(body.get("entries"), list) else super().count(call, body)


@pytest.fixture
def ledger() -> Any:
    with Ledger({KEY}) as emulator:
        yield emulator


def connection(tmp_path: Path, emulator: Ledger, action: str) -> MappingFile:
    catalog = Catalog()
    catalog.add_folder(PLUGIN)
    path = tmp_path / f"{action}.yaml"
    path.write_text(f"destination: ledger\nsettings:\n  api_key: ${{LEDGER_KEY}}\n  base_url: {emulator.base_url}\n"
                    f"subscriptions:\n  - name: {action}\n    action: {action}\n")
    return load_mapping_file(path, env={"LEDGER_KEY": KEY}, catalog=catalog)


def ledger_events(count: int, seed: int) -> list[dict[str, Any]]:
    events = track_events(count, seed=seed)
    for index, event in enumerate(events):
        event["properties"] = {"amount": index % 7 + 0.5, "note": {"kind": "usage", "tags": ["a", "b"]}, "ok": True}
    return events


def fast_sender(mapping: MappingFile) -> Sender:
    return Sender(mapping, policy=RetryPolicy(base=0.01, cap=0.05))


def read(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_wrapped_batch_whose_answer_names_bad_entries_dead_letters_only_those_in_one_more_request(
        ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(500, seed=15)
    poisoned = {events[i]["messageId"] for i in (3, 120, 121, 377)}
    for event in events:
        if event["messageId"] in poisoned:
            event["properties"]["amount"] = -1
    mapping = connection(tmp_path, ledger, "entries")
    summary = send_events(mapping, events, dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    letters = read(tmp_path / "dead.ndjson")
    assert {letter["payload"]["id"] for letter in letters} == poisoned
    assert all(letter["reason"] == "rejected by the server: amount -1 is negative" and letter["status"] == 400 for letter in letters)
    assert set(ledger.stored) == {e["messageId"] for e in events} - poisoned
    assert all(stored["book"] == "main" for stored in ledger.stored.values()), "the template's setting string was rendered"
    batches_with_poison = 3  # 3 in the first batch of 50, 120 and 121 in the third, 377 in the eighth
    posts = [r for r in ledger.requests if r.path == "/v1/entries"]
    assert len(posts) == summary.requests == 10 + batches_with_poison, "one extra request per poisoned batch, no bisection"
    assert summary.delivered == 496 and summary.dead_lettered == 4


def test_entries_answered_as_already_stored_count_as_delivered_and_are_stored_once(ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(120, seed=16)
    mapping = connection(tmp_path, ledger, "entries")
    send_events(mapping, events[:70], sender=fast_sender(mapping))
    ledger.faults.extend(["store_all_then_drop"])  # the next batch is stored, then its answer is lost
    summary = send_events(mapping, events, dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    assert read(tmp_path / "dead.ndjson") == []
    assert summary.delivered == 120 and ledger.duplicates == 0
    assert list(ledger.stored) == [e["messageId"] for e in events]


def test_a_session_is_obtained_once_renewed_when_the_server_expires_it_and_never_shown(
        ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = ledger_events(300, seed=17)
    mapping = connection(tmp_path, ledger, "entries")
    sender = fast_sender(mapping)
    first = send_events(mapping, events[:100], sender=sender)
    ledger.expire_sessions()
    second = send_events(mapping, events[100:], dead_letters=tmp_path / "dead.ndjson", sender=sender)
    sender.close()
    assert first.delivered + second.delivered == 300
    assert list(ledger.stored) == [e["messageId"] for e in events], "no event lost when the session expired"
    assert len(ledger.sessions) == 2, "one session for the first run's batches, one renewal after the expiry"
    assert len(set(ledger.session_uses[:2])) == 1 and ledger.session_uses[-1] != ledger.session_uses[0]
    logged = json.dumps([r.headers for r in ledger.requests])
    shown = capsys.readouterr()
    dead = tmp_path / "dead.ndjson"
    everything = shown.out + shown.err + logged + (dead.read_text() if dead.exists() else "")
    assert ledger.sessions and not any(token in everything for token in ledger.sessions), "a session token was shown"


def test_a_dry_run_shows_where_the_session_token_goes_without_obtaining_one(ledger: Ledger, tmp_path: Path) -> None:
    mapping = connection(tmp_path, ledger, "entries")
    sub = mapping.subscriptions[0]
    outgoing = [Outgoing(0, {}, {"id": "e-1", "amount": 1, "at": 1767225600})]
    requests, _ = Sender(mapping).preview(sub, outgoing)
    assert requests[0]["headers"]["X-Ledger-Session"] == "********"
    assert "authorization" not in {k.lower() for k in requests[0]["headers"]}, "a session request carries the token, not the key"
    assert requests[0]["body"] == {"book": "main", "entries": [{"id": "e-1", "amount": 1, "at": 1767225600}]}
    assert ledger.requests == [], "a dry run sends nothing, not even for a session"


def test_a_form_body_flattens_nested_values_and_a_repeated_id_answer_counts_as_delivered(ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(30, seed=19)
    mapping = connection(tmp_path, ledger, "form_entry")
    send_events(mapping, events[:10], sender=fast_sender(mapping))
    summary = send_events(mapping, events, dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    assert summary.delivered == 30 and read(tmp_path / "dead.ndjson") == []
    first = events[0]
    stamp = int(datetime.fromisoformat(first["timestamp"]).timestamp())
    assert ledger.stored[first["messageId"]] == {
        "id": first["messageId"], "at": str(stamp), "detail[amount]": "0.5", "detail[note][kind]": "usage",
        "detail[note][tags][0]": "a", "detail[note][tags][1]": "b", "detail[ok]": "true"}
    raw = next(r for r in ledger.requests if r.path == "/v1/form")
    assert raw.headers["content-type"] == "application/x-www-form-urlencoded"


def test_an_exact_content_type_is_sent_and_a_2xx_the_plugin_does_not_declare_is_a_rejection(ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(20, seed=20)
    mapping = connection(tmp_path, ledger, "cloud_entry")
    assert send_events(mapping, events[:10], sender=fast_sender(mapping)).delivered == 10
    stored = ledger.stored[events[0]["messageId"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stored["time"]), "send_as: rfc3339 has no fraction"
    ledger.answer_200 = True
    before = len(ledger.requests)
    summary = send_events(mapping, events[10:], dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    letters = read(tmp_path / "dead.ndjson")
    assert summary.dead_lettered == 10 and {letter["status"] for letter in letters} == {200}
    assert all("answered 200, which this destination does not answer when it stores events" in l["reason"] for l in letters)
    assert len(ledger.requests) - before == 1, "a 2xx that may have stored the batch is not posted again, halved or whole"


def test_declared_rate_limit_headers_are_read_after_retry_after() -> None:
    declared = (RateLimitHeader("X-Ledger-Wait-Ms", "milliseconds"), RateLimitHeader("X-Reset", "unix_seconds"))
    assert retry_after(httpx.Response(429, headers={"X-Ledger-Wait-Ms": "250"}), declared) == 0.25
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2", "X-Ledger-Wait-Ms": "250"}), declared) == 2.0
    assert retry_after(httpx.Response(429, headers={"X-Ledger-Wait-Ms": "soon"}), declared) is None
    reset = retry_after(httpx.Response(429, headers={"X-Reset": "0"}), declared)
    assert reset == 0.0, "a reset time already past means no wait"


PLUGIN_ERRORS = [
    ("responses", [{"status": [400], "items": {"at": "e", "match": "index", "pattern": "(?P<item>a{99999999999})"}}],
     "more times than a regular expression can count"),
    ("body", {"template": {"a": "{{payloads}}", "b": "{{payload}}"}}, "holds the string {{payloads}}"),
    ("encoding", "form", "a form-encoded body carries one payload"),
    ("responses", [{"status": [400], "items": {"at": "errors", "match": "nope"}}], "items match 'nope'"),
    ("responses", [{"status": [400], "outcome": "retry", "items": {"at": "errors", "match": "index"}}], "retry and refused are about the whole request"),
    ("responses", [{"status": [400], "when": "contains(", "outcome": "dead"}], "JMESPath"),
    ("body", {"template": {"book": "{{settings.nope}}", "e": "{{payloads}}"}}, "settings.nope is not declared"),
]


@pytest.mark.parametrize(("key", "value", "wanted"), PLUGIN_ERRORS)
def test_a_request_declaration_that_cannot_work_is_an_error_at_its_place(tmp_path: Path, key: str, value: Any, wanted: str) -> None:
    import shutil
    import yaml

    folder = tmp_path / "ledger"
    shutil.copytree(PLUGIN, folder)
    action = folder / "actions" / "entries.yaml"
    data = yaml.safe_load(action.read_text())
    data["request"][key] = value
    action.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_destination(folder, "ledger", "folder")
    text = str(caught.value)
    assert wanted in text and re.search(r"entries\.yaml:\d+:\d+", text), text


def test_session_true_needs_a_declared_session(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "ledger"
    shutil.copytree(PLUGIN, folder)
    destination = folder / "destination.yaml"
    text = destination.read_text()
    destination.write_text(text[:text.index("  session:")] + text[text.index("rate_limit:"):])
    with pytest.raises(ConfigError, match=r"session: true needs the destination to declare authentication.session"):
        load_destination(folder, "ledger", "folder")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
                    max_leaves=20)


def reference_named(entries: Any, match: str, payloads: list[dict[str, Any]]) -> set[int]:
    """A plain reading of which positions an answer names: an object's keys, or each array entry's ``id``, as an index or an id."""
    if isinstance(entries, dict):
        names = list(entries)
    elif isinstance(entries, list) and match == "id":
        names = [e.get("id") for e in entries if isinstance(e, dict)]
    elif isinstance(entries, list):
        names = list(entries)  # no key: each entry names itself, as [0, 3]
    else:
        names = []
    if match == "index":
        whole = [k for k in names if type(k) is int] + [int(k) for k in names if isinstance(k, str) and k.isascii() and k.isdigit()]
        return {k for k in whole if 0 <= k < len(payloads)}
    return {i for i, p in enumerate(payloads) if any(name is not None and name == p.get("id") for name in names)}


@hypothesis_settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["errors", "x"]), JSON, max_size=2), count=st.integers(0, 6),
       match=st.sampled_from(["index", "id"]))
def test_items_named_by_any_answer_are_positions_of_the_request_and_match_a_plain_reading(
        body: dict[str, Any], count: int, match: str) -> None:
    payloads = [{"id": str(i % 3)} for i in range(count)]
    items = compile_items({"at": "errors", "match": match, **({"key": "id"} if match == "id" else {})}, "/items")
    found = named(items, body, payloads)
    assert set(found) == reference_named(body.get("errors"), match, payloads)
    assert all(isinstance(reason, str) and len(reason) <= 500 for reason in found.values())


def test_one_token_is_obtained_for_all_the_senders_of_a_connection(ledger: Ledger, tmp_path: Path) -> None:
    mapping = connection(tmp_path, ledger, "entries")
    shared = sessions_for(mapping)
    assert shared is not None
    senders = [Sender(mapping, sessions=shared) for _ in range(4)]
    results: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: results.append(shared.headers(s.client))) for s in senders for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sender in senders:
        sender.close()
    assert len(ledger.sessions) == 1 and len({token for _, token in results}) == 1
    assert [list(headers) for headers, _ in results] == [["X-Ledger-Session"]] * 8


def test_a_session_request_that_fails_is_retried_and_one_refused_keeps_the_events(ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(60, seed=21)
    mapping = connection(tmp_path, ledger, "entries")
    ledger.session_failures = 2
    assert send_events(mapping, events, sender=fast_sender(mapping)).delivered == 60
    assert len(ledger.sessions) == 1 and list(ledger.stored) == [e["messageId"] for e in events]
    ledger.tokens = frozenset({"another-key-" + "0" * 12})  # the session request itself is now refused
    refused = send_events(mapping, ledger_events(10, seed=22), sender=fast_sender(mapping))
    assert refused.kept == 10 and refused.delivered == 0 and list(refused.refused) == ["entries"]
    assert "the session request was refused" in refused.refused["entries"] and KEY not in refused.refused["entries"]


def test_items_named_inside_a_text_by_a_pattern_are_positions_of_the_request() -> None:
    items = compile_items({"at": "detail", "match": "index", "pattern": 'Error at "/(?P<item>[0-9]+)/'}, "/items")
    detail = 'doesn\'t match schema: Error at "/37/data": property "blob" is unsupported; Error at "/99/id": too long'
    assert named(items, {"detail": detail}, [{}] * 40) == {37: detail}, "an index past the request names nothing"
    assert named(items, {"detail": 37}, [{}] * 40) == {}, "a detail that is not text names nothing"
    with pytest.raises(ConfigError, match=r"\(\?P<item>"):
        compile_items({"at": "detail", "match": "index", "pattern": "Error at (\\d+)"}, "/items")


def test_a_success_that_lists_what_it_refused_delivers_the_rest_without_posting_it_again(ledger: Ledger, tmp_path: Path) -> None:
    events = ledger_events(100, seed=23)
    zero = {events[i]["messageId"] for i in (7, 64)}
    for event in events:
        if event["messageId"] in zero:
            event["properties"]["amount"] = 0
    mapping = connection(tmp_path, ledger, "entries")
    summary = send_events(mapping, events, dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    letters = read(tmp_path / "dead.ndjson")
    assert {l["payload"]["id"] for l in letters} == zero and {l["reason"] for l in letters} == {"rejected by the server: an amount of 0 is not an entry"}
    assert summary.delivered == 98 and summary.requests == 2, "one request per batch of 50: nothing posted twice"
    assert set(ledger.stored) == {e["messageId"] for e in events} - zero and ledger.duplicates == 0


@pytest.mark.parametrize("token", ["sess-t\u00f6k-123456", "sess-abc\r\nX-Evil: 1"])
def test_a_session_token_no_header_can_carry_stops_the_connection_and_is_shown_nowhere(
        ledger: Ledger, tmp_path: Path, token: str) -> None:
    ledger.next_token = token
    mapping = connection(tmp_path, ledger, "entries")
    summary = send_events(mapping, ledger_events(20, seed=24), dead_letters=tmp_path / "dead.ndjson", sender=fast_sender(mapping))
    assert summary.kept == 20 and summary.delivered == 0 and read(tmp_path / "dead.ndjson") == []
    (why,) = summary.refused.values()
    assert "token holds characters an HTTP header cannot carry" in why and token not in why
    assert [r.path for r in ledger.requests] == ["/sessions"], "the token was never put on the wire"


def test_a_dry_run_masks_a_secret_a_body_template_carries(tmp_path: Path, ledger: Ledger) -> None:
    import shutil

    folder = tmp_path / "ledger"
    shutil.copytree(PLUGIN, folder)
    action = folder / "actions" / "entries.yaml"
    action.write_text(action.read_text().replace('book: "{{settings.book}}"', 'book: "{{settings.book}}", key: "{{settings.api_key}}"'))
    catalog = Catalog()
    catalog.add_folder(folder)
    path = tmp_path / "m.yaml"
    path.write_text(f"destination: ledger\nsettings:\n  api_key: ${{LEDGER_KEY}}\n  base_url: {ledger.base_url}\n"
                    "subscriptions:\n  - name: entries\n    action: entries\n")
    mapping = load_mapping_file(path, env={"LEDGER_KEY": KEY}, catalog=catalog)
    (request,), _ = Sender(mapping).preview(mapping.subscriptions[0], [Outgoing(0, {}, {"id": "e", "amount": 1, "at": 0})])
    assert request["body"]["key"] == "********" and KEY not in json.dumps(request)


@pytest.mark.parametrize(("old", "new", "wanted"), [
    ("expired: {status: [401]", "expired: {status: [200, 401]", "expired names a success status"),
    ("renew_before: 1m", "renew_before: 1m\n    lifetime: 99999999999999d", "lifetime"),
])
def test_a_session_declaration_that_cannot_work_is_an_error_at_its_place(tmp_path: Path, old: str, new: str, wanted: str) -> None:
    import shutil

    folder = tmp_path / "ledger"
    shutil.copytree(PLUGIN, folder)
    destination = folder / "destination.yaml"
    assert old in destination.read_text()
    destination.write_text(destination.read_text().replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_destination(folder, "ledger", "folder")
    assert wanted in str(caught.value) and re.search(r"destination\.yaml:\d+:\d+", str(caught.value)), str(caught.value)


def test_a_session_endpoint_asking_to_wait_is_waited_for_and_a_failed_renewal_keeps_a_valid_token(
        ledger: Ledger, tmp_path: Path) -> None:
    mapping = connection(tmp_path, ledger, "entries")
    waits: list[float] = []
    sender = Sender(mapping, policy=RetryPolicy(base=0.01, cap=0.05), wait=lambda seconds: waits.append(seconds) is not None)
    ledger.session_failures, ledger.session_wait = 1, "7"
    assert send_events(mapping, ledger_events(10, seed=25), sender=sender).delivered == 10
    assert waits and waits[0] >= 7, "the session endpoint's Retry-After is the first wait"
    sessions = sender.rendering.sessions
    assert sessions is not None
    now = [sessions.clock()]
    sessions.clock = lambda: now[0]
    now[0] += 14.5 * 60  # past the renewal point (a minute before its 15 minutes end), before its end
    ledger.session_failures = 1
    headers = sessions.headers(sender.client)
    assert not isinstance(headers, Meaning) and headers[1] in ledger.sessions, "the token still valid is used while renewal fails"
    now[0] += 60  # past its end: a renewal that fails now is the answer
    ledger.session_failures = 1
    refused = sessions.headers(sender.client)
    assert isinstance(refused, Meaning) and refused.kind == "retry" and refused.retry_after == 7
    sender.close()
