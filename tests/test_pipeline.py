"""The Metronome defaults end to end through the pipeline, `preview` and `actionmap test`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.config.mappingfile import load_mapping_document
from engine.config.yamlsource import load_text
from engine.lang.mapping import DIRECTIVES
from tests.conftest import REPO

MAPPING = REPO / "mappings" / "metronome.yaml"
TRACK = {
    "type": "track",
    "messageId": "msg-1",
    "userId": "cust-1",
    "anonymousId": "anon-1",
    "event": "api_call",
    "timestamp": "2026-11-26T10:00:00.123456+02:00",
    "properties": {"endpoint": "/search", "tokens": 12},
    "context": {"library": {"name": "analytics-python"}},
}


@pytest.fixture(scope="module")
def pipeline() -> engine.Pipeline:
    return engine.Pipeline(engine.load_mapping(MAPPING, require_env=False))


def only(outcomes: list[engine.Outcome]) -> engine.Outcome:
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def test_a_track_event_previews_to_the_five_fields(pipeline: engine.Pipeline) -> None:
    outcome = only(pipeline.run(TRACK))
    assert outcome.status == "ok"
    assert outcome.payload == {
        "transaction_id": "msg-1",
        "customer_id": "cust-1",
        "timestamp": "2026-11-26T08:00:00.123Z",
        "event_type": "api_call",
        "properties": {"endpoint": "/search", "tokens": 12},
    }


def test_customer_falls_back_to_anonymous_id(pipeline: engine.Pipeline) -> None:
    event = {k: v for k, v in TRACK.items() if k != "userId"}
    assert only(pipeline.run(event)).payload["customer_id"] == "anon-1"
    # null is present-but-empty: @coalesce skips it as well
    assert only(pipeline.run({**TRACK, "userId": None})).payload["customer_id"] == "anon-1"


@pytest.mark.parametrize(
    "event",
    [
        {**TRACK, "type": "identify"},
        {**TRACK, "integrations": {"Metronome (Actions)": False}},
        {**TRACK, "integrations": {"metronome": False}},
        {**TRACK, "integrations": {"All": False}},
    ],
    ids=["identify", "integrations-name", "integrations-slug", "integrations-all"],
)
def test_filtered_events(pipeline: engine.Pipeline, event: dict) -> None:
    assert pipeline.run(event) == []
    assert only(pipeline.run(event, include_filtered=True)).status == "filtered"


def test_integrations_can_turn_metronome_on_alone(pipeline: engine.Pipeline) -> None:
    event = {**TRACK, "integrations": {"All": False, "Metronome (Actions)": True}}
    assert only(pipeline.run(event)).status == "ok"


@pytest.mark.parametrize(
    "change, field, fragment",
    [
        ({"timestamp": "2026-11-26T10:00:00"}, "timestamp", "offset"),
        ({"timestamp": 1764150000}, "timestamp", "@timestamp"),
        ({"timestamp": "1764150000"}, "timestamp", "@timestamp"),
        ({"userId": None, "anonymousId": None}, "customer_id", "@coalesce($.userId, $.anonymousId)"),
        ({"messageId": "x" * 200}, "transaction_id", "128"),
        ({"event": ""}, "event_type", "minLength"),
    ],
)
def test_invalid_events_name_the_field(pipeline: engine.Pipeline, change: dict, field: str, fragment: str) -> None:
    event = {k: v for k, v in {**TRACK, **change}.items() if v is not None}
    outcome = only(pipeline.run(event))
    assert outcome.status == "invalid"
    assert any(e.startswith(f"{field}:") and fragment in e for e in outcome.errors), outcome.errors


def test_a_number_customer_id_is_converted_because_the_field_declares_it(pipeline: engine.Pipeline) -> None:
    outcome = only(pipeline.run({**TRACK, "userId": 1234}, explain=True))
    assert outcome.payload["customer_id"] == "1234"
    assert outcome.explain["customer_id"]["coerced"]["by"] == "number_to_string"


def test_explain_pins_every_note_of_the_default_mapping(pipeline: engine.Pipeline) -> None:
    """The whole ``--explain`` account of one event, as it was before explain became a traced evaluation."""
    outcome = only(pipeline.run({**TRACK, "userId": 1234, "properties": None}, explain=True))
    assert outcome.explain == {
        "transaction_id": {"from": "$.messageId", "found": True},
        "customer_id": {
            "from": "@coalesce($.userId, $.anonymousId)",
            "branch": 0,
            "tried": [{"from": "$.userId", "found": True}],
            "coerced": {"by": "number_to_string", "from": 1234, "to": "1234"},
        },
        "timestamp": {
            "from": "$.timestamp",
            "found": True,
            "coerced": {"by": "normalised datetime", "from": TRACK["timestamp"], "to": "2026-11-26T08:00:00.123Z"},
        },
        "event_type": {"from": "$.event", "found": True},
        "properties": {"from": "$.properties", "found": True, "coerced": {"by": "null_to_missing", "from": None, "to": None}},
    }


EVERY_DIRECTIVE = """destination: metronome
settings: {api_token: not-a-secret}
subscriptions:
  - name: Every directive
    action: send_event
    mapping:
      transaction_id: {"@template": "{{messageId}}:{{{ properties.order_id }}}"}
      customer_id: {"@coalesce": [$.userId, {"@path": "context.traits.company id"}, $.anonymousId]}
      timestamp:
        "@if": {exists: $.properties.unix, then: {"@timestamp": {value: $.properties.unix, from: unix_s}}, else: $.timestamp}
      event_type: {"@case": {operator: lower, value: {"@replace": {pattern: " ", replacement: _, value: $.event}}}}
      properties:
        "@excludeWhenNull":
          "@merge":
            direction: left
            objects:
              - {"@flatten": {value: $.context, separator: _}}
              - plan: {"@liquid": "{{ properties.plan | upcase }}"}
                encoded: {"@json": {mode: encode, value: $.properties.tags}}
                decoded: {"@json": {mode: decode, value: $.properties.blob}}
                skus: {"@jmespath": "properties.products[*].sku"}
                literal: {"@literal": {"@path": "$.x"}}
                products: {"@arrayPath": [$.properties.products, {sku: $.sku, quantity: $.quantity}]}
                tags: {"@arrayPath": [$.properties.tags]}
                plan_again: {"@transform": {apply: {x: $.properties}, mapping: $.x.plan}}
                computed: {"@path": {"@path": $.properties.which}}
                template: {"@template": {"@path": $.properties.template}}
                blank: {"@if": {blank: $.properties.zero, then: "yes", else: "no"}}
                list: [$.event, 1, {"@path": $.properties.nope}]
  - name: Coercions
    action: send_event
    trigger: type = "track" or type = "identify"
    mapping:
      customer_id: $.properties.numeric_id
      properties: $.properties.maybe_null
"""


KEYS = st.sampled_from(["a", "plan", "order_id", "unix", "tags", "blob", "products", "which", "template", "zero", "numeric_id", "maybe_null", "sku"])
SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2) | st.sampled_from(
    ["", "x", "A b", "1764151200", "2026-11-26T10:00:00Z", "2026-11-26T10:00:00", '{"a": [1]}', "$.event", "properties.plan", "$..*", "{{event}}", "{{"])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "track", "identify"])},
    optional={name: JSON for name in ("messageId", "userId", "anonymousId", "event", "timestamp", "properties", "context", "integrations")},
)


@pytest.fixture(scope="module")
def every_directive() -> engine.Pipeline:
    assert [name for name in DIRECTIVES if f'"{name}"' not in EVERY_DIRECTIVE] == []
    return engine.Pipeline(load_mapping_document(load_text(EVERY_DIRECTIVE, "every.yaml"), env={}))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=EVENTS)
def test_explain_gives_exactly_the_outcomes_of_the_plain_pass(pipeline: engine.Pipeline, every_directive: engine.Pipeline, event: dict[str, Any]) -> None:
    for mapped in (pipeline, every_directive):
        plain = mapped.run(event, include_filtered=True)
        explained = mapped.run(event, include_filtered=True, explain=True)
        assert [outcome._replace(explain=None) for outcome in explained] == plain
        for outcome in explained:
            if outcome.status == "filtered":
                continue
            sub = next(s for s in mapped.subscriptions if s.name == outcome.subscription)
            assert outcome.explain is not None and set(outcome.explain) == set(sub.mapping)
            json.dumps(outcome.explain)
            for name, note in outcome.explain.items():
                assert note["from"] == sub.mapping[name].source
                failed = any(error.startswith(f"{name}: ") and "(mapping " in error for error in outcome.errors)
                assert ("failed" in note) == failed, (name, note, outcome.errors)


def test_a_non_object_event_is_invalid_not_a_crash(pipeline: engine.Pipeline) -> None:
    for event in (None, [], "track", 3):
        assert only(pipeline.run(event)).status == "invalid"


def test_preview_lines(cli, tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    lines = [json.dumps(TRACK), "{not json", json.dumps({**TRACK, "type": "identify"}), json.dumps({**TRACK, "timestamp": 5})]
    events.write_text("\n".join(lines) + "\n")
    run = cli("preview", "-m", str(MAPPING), str(events), "--all")
    out = [json.loads(line) for line in run.out.splitlines()]
    assert [(o["event"], o["status"]) for o in out] == [(0, "ok"), (1, "invalid"), (2, "filtered"), (3, "invalid")]
    assert out[0]["payload"]["transaction_id"] == "msg-1" and out[0]["subscription"] == "Usage events"
    assert out[0]["action"] == "send_event" and out[0]["errors"] == []
    assert "line 2" in out[1]["errors"][0] and f"{events}:2:" in run.err
    assert "trigger is false" in out[2]["reason"]
    assert run.code == 2
    without_all = cli("preview", "-m", str(MAPPING), str(events))
    assert all(json.loads(line)["status"] != "filtered" for line in without_all.out.splitlines())


def test_preview_explain_says_where_values_came_from(cli, tmp_path: Path) -> None:
    events = tmp_path / "one.json"
    events.write_text(json.dumps({k: v for k, v in TRACK.items() if k != "userId"}, indent=2))
    run = cli("preview", "-m", str(MAPPING), str(events), "--explain")
    (line,) = [json.loads(x) for x in run.out.splitlines()]
    explain = line["explain"]
    assert explain["transaction_id"]["from"] == "$.messageId"
    assert explain["customer_id"]["branch"] == 1  # userId missing: the second branch of @coalesce
    assert explain["timestamp"]["coerced"]["by"] == "normalised datetime"
    assert run.code == 0


def test_preview_reads_a_json_array_from_stdin(cli, monkeypatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps([TRACK, TRACK]).encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    run = cli("preview", "-m", str(MAPPING))
    assert [json.loads(x)["event"] for x in run.out.splitlines()] == [0, 1]


def test_actionmap_test_passes_on_the_default_mapping(cli) -> None:
    run = cli("test", str(MAPPING))
    assert run.code == 0
    assert run.out.strip().splitlines()[-1] == "6 passed, 0 failed"


def test_a_broken_test_fails_with_a_readable_diff(cli, tmp_path: Path) -> None:
    text = MAPPING.read_text().replace("customer_id: u-1\n", "customer_id: u-2\n", 1)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    run = cli("test", str(broken))
    assert run.code == 1
    assert run.out.strip().splitlines()[-1] == "5 passed, 1 failed"
    assert 'FAIL ' in run.out and 'payload differs' in run.out
    assert '-  "customer_id": "u-2",' in run.out and '+  "customer_id": "u-1",' in run.out


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (("        status: filtered\n", "        status: ok\n"), "expected ok, got filtered"),
        (("        error: customer_id\n", "        error: no such words\n"), 'no error mentions "no such words"'),
    ],
)
def test_wrong_expectations_fail(cli, tmp_path: Path, edit: tuple[str, str], fragment: str) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MAPPING.read_text().replace(*edit, 1))
    run = cli("test", str(broken))
    assert run.code == 1 and fragment in run.out


def test_a_typo_in_a_test_is_an_error_not_a_pass(cli, tmp_path: Path) -> None:
    broken = tmp_path / "typo.yaml"
    broken.write_text(MAPPING.read_text().replace("        payload:\n", "        paylod:\n", 1))
    run = cli("test", str(broken))
    assert run.code == 1 and 'unknown key "paylod"; did you mean "payload"?' in run.err


def test_an_unexpected_match_fails(cli, tmp_path: Path) -> None:
    text = MAPPING.read_text().replace(
        "tests:\n", "  - name: Everything\n    action: send_event\n    trigger: 'true'\ntests:\n", 1
    )
    extra = tmp_path / "extra.yaml"
    extra.write_text(text)
    run = cli("test", str(extra))
    assert run.code == 1 and 'subscription "Everything" matched' in run.out
