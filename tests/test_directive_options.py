"""Directive options of issue 16: ``@template``'s ``missing: invalid`` and ``@timestamp``'s list of formats.

Each is tried at three levels: the compiled node (values, failures, load errors with
their pointers), a mapping file loaded and run through the pipeline (FILE:LINE:COL,
``--explain`` notes, the invalid outcome an operator sees), and a property test
against a plain reference written here.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.config.mappingfile import load_mapping_document
from engine.config.yamlsource import load_text
from engine.errors import ConfigError, MappingFailure
from engine.lang.mapping import compile_mapping, explain
from engine.lang.missing import MISSING
from tests.conftest import REPO


def run(mapping: Any, doc: Any) -> Any:
    return compile_mapping(mapping, "/m").evaluate(doc)


def config_error(mapping: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        compile_mapping(mapping, "/m")
    return caught.value


def loaded(mapping: str) -> engine.Pipeline:
    """A Metronome mapping file whose one subscription maps ``event_type`` as given (YAML, indented for the file)."""
    text = f"""destination: metronome
settings: {{api_token: not-a-secret}}
subscriptions:
  - name: Usage
    action: send_event
    mapping:
      event_type: {mapping}
"""
    return engine.Pipeline(load_mapping_document(load_text(text, "usage.yaml"), env={}))


def load_error(mapping: str) -> str:
    with pytest.raises(ConfigError) as caught:
        loaded(mapping)
    return str(caught.value)


TRACK = {
    "type": "track",
    "messageId": "m-1",
    "userId": "c-1",
    "event": "compute_seconds",
    "timestamp": "2026-11-26T10:00:00Z",
    "properties": {"region": "eu"},
}


# --- @template missing: invalid -------------------------------------------------------------------

STRICT = {"@template": {"text": "{{event}}.{{properties.region}}", "missing": "invalid"}}


def test_a_template_writes_a_missing_placeholder_as_empty_unless_it_declares_missing_invalid() -> None:
    doc = {"event": "compute_seconds", "properties": {}}
    assert run({"@template": "{{event}}.{{properties.region}}"}, doc) == "compute_seconds."  # Segment's rule, the default
    assert run({"@template": {"text": "{{event}}.{{properties.region}}", "missing": "empty"}}, doc) == "compute_seconds."
    assert run(STRICT, {**doc, "properties": {"region": "eu"}}) == "compute_seconds.eu"
    with pytest.raises(MappingFailure) as caught:
        run(STRICT, doc)
    assert str(caught.value) == (
        '@template has no value for {{properties.region}} (missing) and declares missing: invalid, '
        'so the event is invalid rather than sent with "" in its place'
    )


def test_missing_invalid_names_every_placeholder_without_a_value_null_included() -> None:
    with pytest.raises(MappingFailure) as caught:
        run({"@template": {"text": "{{ a }}-{{b}}-{{{c}}}-{{d}}", "missing": "invalid"}}, {"b": None, "d": ""})
    assert "no value for {{a}} (missing), {{b}} (null), {{c}} (missing) and declares" in str(caught.value)
    # present values are values, even empty ones
    assert run({"@template": {"text": "[{{d}}][{{e}}]", "missing": "invalid"}}, {"d": "", "e": []}) == "[][]"


def test_missing_invalid_holds_for_a_template_an_event_gives() -> None:
    mapping = {"@template": {"text": {"@path": "$.tpl"}, "missing": "invalid"}}
    assert run(mapping, {"tpl": "Hi {{name}}", "name": "Ann"}) == "Hi Ann"
    with pytest.raises(MappingFailure, match=r"no value for \{\{name\}\} \(missing\)"):
        run(mapping, {"tpl": "Hi {{name}}"})
    value, note = explain(compile_mapping({"@template": {"@path": "$.tpl"}}), {"tpl": "Hi {{name}}{{x}}", "x": None})
    assert value == "Hi "
    assert note == {
        "from": "@template($.tpl)",
        "argument": {"from": "$.tpl", "found": True},
        "read": "Hi {{name}}{{x}}",
        "found": False,
        "missing": ["name"],
        "null": ["x"],
    }


def test_explain_lists_the_placeholders_a_template_was_missing() -> None:
    pipeline = loaded('{"@template": "{{event}}.{{properties.region}}"}')
    (outcome,) = pipeline.run({**TRACK, "properties": {}}, explain=True)
    assert outcome.status == "ok" and outcome.payload["event_type"] == "compute_seconds."
    assert outcome.explain["event_type"] == {
        "from": '@template("{{event}}.{{properties.region}}")',
        "found": False,
        "missing": ["properties.region"],
    }
    (outcome,) = pipeline.run(TRACK, explain=True)
    assert outcome.explain["event_type"] == {"from": '@template("{{event}}.{{properties.region}}")', "found": True, "missing": []}


def test_missing_invalid_makes_the_event_invalid_naming_the_placeholder_and_the_mapping() -> None:
    pipeline = loaded('{"@template": {text: "{{event}}.{{properties.region}}", missing: invalid}}')
    source = '@template("{{event}}.{{properties.region}}", missing invalid)'
    message = (
        'event_type: @template has no value for {{properties.region}} (missing) and declares missing: invalid, '
        f'so the event is invalid rather than sent with "" in its place (mapping {source})'
    )
    for explaining in (False, True):
        (outcome,) = pipeline.run({**TRACK, "properties": {}}, explain=explaining)
        assert (outcome.status, outcome.errors) == ("invalid", (message,))
    assert outcome.explain is not None and outcome.explain["event_type"] == {"from": source, "failed": message[len("event_type: "):message.index(" (mapping ")]}
    (outcome,) = pipeline.run(TRACK)
    assert outcome.status == "ok" and outcome.payload["event_type"] == "compute_seconds.eu"


def test_the_metronome_docs_recommend_a_mapping_that_does_what_they_say() -> None:
    """The ``event_type`` description's example is a working mapping: an event missing a part is invalid, not billed."""
    fields = yaml.safe_load((REPO / "destinations" / "metronome" / "actions" / "send_event.yaml").read_text())["fields"]
    description = fields["event_type"]["description"]
    assert fields["event_type"]["default"] == "$.event"
    (recommended,) = re.findall(r"`(\{.*?\})`", description)
    pipeline = loaded(recommended)
    assert [o.payload["event_type"] for o in pipeline.run(TRACK)] == ["compute_seconds.eu"]
    (outcome,) = pipeline.run({**TRACK, "properties": {}})
    assert outcome.status == "invalid" and "{{properties.region}} (missing)" in outcome.errors[0]
    assert '"compute_seconds."' in description and "invalid" in description


# --- @timestamp from a list of formats ------------------------------------------------------------


def stamp(value: Any, formats: Any) -> Any:
    return run({"@timestamp": {"value": "$.t", "from": formats}}, {"t": value})


@pytest.mark.parametrize(
    ("value", "formats", "expected"),
    [
        ("2026-11-26T10:00:00Z", ["iso", "unix_ms"], "2026-11-26T10:00:00.000Z"),
        (1764151200123, ["iso", "unix_ms"], "2025-11-26T10:00:00.123Z"),
        ("1764151200123", ["iso", "unix_ms"], "2025-11-26T10:00:00.123Z"),
        (1764151200, ["unix_s", "iso"], "2025-11-26T10:00:00.000Z"),
        ("20261126", ["iso", "unix_s"], "2026-11-26T00:00:00.000Z"),  # a basic ISO date, read as one because iso comes first
        ("20261126", ["unix_s", "iso"], "1970-08-23T12:05:26.000Z"),  # the same digits, seconds first
    ],
)
def test_timestamp_tries_the_listed_formats_in_order(value: Any, formats: list[str], expected: str) -> None:
    assert stamp(value, formats) == expected


def test_a_value_no_listed_format_reads_names_every_format_tried() -> None:
    with pytest.raises(MappingFailure) as caught:
        stamp("yesterday", ["iso", "unix_ms"])
    assert str(caught.value) == (
        '@timestamp cannot read the string "yesterday" in any of the formats it tries, in order: '
        "iso (it is not an ISO 8601 date-time such as 2026-11-26T10:00:00Z); "
        "unix_ms (it is not a number or a string of digits such as 1764151200000)"
    )
    with pytest.raises(MappingFailure, match=r"iso \(it is not an ISO .*\); unix_s \(1e\+300 is outside years 0001-9999\)"):
        stamp(1e300, ["iso", "unix_s"])
    with pytest.raises(MappingFailure, match='@timestamp from iso cannot read the string "1764151200": it is not an ISO 8601'):
        stamp("1764151200", ["iso"])  # a list of one is the single form, and words its failure alike
    with pytest.raises(MappingFailure, match="cannot read null"):
        stamp(None, ["iso", "unix_s"])
    assert run({"@timestamp": {"value": "$.nope", "from": ["iso", "unix_s"]}}, {}) is MISSING


@pytest.mark.parametrize(
    ("mapping", "pointer", "says"),
    [
        ({"@template": {"text": "x", "missing": "skip"}}, "/m/@template/missing", '@template missing must be "empty" or "invalid", not "skip"'),
        ({"@template": {"text": "x", "missing": True}}, "/m/@template/missing", "@template missing must be a string, not the boolean true"),
        ({"@template": {"text": "x", "mising": "invalid"}}, "/m/@template/mising", "@template has no argument 'mising' (did you mean missing?)"),
        ({"@template": {"missing": "invalid"}}, "/m/@template", "@template needs 'text'"),
        ({"@template": {"text": ["x"], "missing": "invalid"}}, "/m/@template/text", "@template takes a text with placeholders"),
        ({"@template": {"text": "{{a", "missing": "invalid"}}, "/m/@template/text", "@template at column 1: unclosed {{"),
        ({"@timestamp": {"value": "$.t", "from": []}}, "/m/@timestamp/from", "@timestamp from must be one of iso, unix_s, unix_ms, or a non-empty list of them tried in order"),
        ({"@timestamp": {"value": "$.t", "from": 3}}, "/m/@timestamp/from", "not the number 3"),
        ({"@timestamp": {"value": "$.t", "from": ["iso", "unix"]}}, "/m/@timestamp/from/1", '@timestamp from lists the string "unix"; each entry must be "iso" or "unix_s" or "unix_ms"'),
        ({"@timestamp": {"value": "$.t", "from": ["iso", None]}}, "/m/@timestamp/from/1", "@timestamp from lists null"),
        ({"@timestamp": {"value": "$.t", "from": ["unix_ms", "iso", "unix_ms"]}}, "/m/@timestamp/from/2", '@timestamp from lists "unix_ms" twice'),
        ({"@timestamp": {"value": "$.t", "from": ["unix_s", "iso", "unix_ms"]}}, "/m/@timestamp/from/2", "lists both unix_s and unix_ms, but a number does not say whether it counts seconds or milliseconds"),
        ({"@timestamp": {"value": "$.t", "from": ["unix_ms", "unix_s"]}}, "/m/@timestamp/from/0", "never guesses"),
        ({"@timestamp": {"value": "$.t", "from": "unix"}}, "/m/@timestamp/from", '@timestamp from must be "iso" or "unix_s" or "unix_ms", not "unix"'),
    ],
)
def test_directive_options_are_checked_at_load(mapping: dict[str, Any], pointer: str, says: str) -> None:
    error = config_error(mapping)
    assert error.pointer == pointer and says in error.message, error


@pytest.mark.parametrize(("mapping", "bad", "says"), [
    ('{"@template": {text: "{{event}}", missing: skip}}', "skip", '@template missing must be "empty" or "invalid", not "skip"'),
    ('{"@timestamp": {value: $.t, from: [iso, unix_seconds]}}', "unix_seconds", '@timestamp from lists the string "unix_seconds"'),
])
def test_a_bad_option_is_refused_at_its_line_and_column(mapping: str, bad: str, says: str) -> None:
    column = len("      event_type: ") + mapping.index(bad) + 1
    message = load_error(mapping)
    assert message.startswith(f"usage.yaml:7:{column}: {says}"), message


def test_timestamp_sources_name_the_formats_in_order() -> None:
    assert compile_mapping({"@timestamp": {"value": "$.t", "from": ["unix_ms", "iso"]}}).source == "@timestamp($.t, from [unix_ms, iso])"
    assert compile_mapping({"@timestamp": {"value": "$.t", "from": "iso"}}).source == "@timestamp($.t, from iso)"


def test_a_long_fraction_never_rounds_into_the_next_millisecond() -> None:
    """Exact arithmetic: 28 significant digits (Decimal's default) would round these up."""
    assert stamp("0.99999999999999999999999999999999", "unix_ms") == "1970-01-01T00:00:00.000Z"
    assert stamp("1764151200.12399999999999999999999999", "unix_s") == "2025-11-26T10:00:00.123Z"
    assert stamp("-0.00000000000000000000000000000001", "unix_s") == "1969-12-31T23:59:59.999Z"
    with pytest.raises(MappingFailure, match="outside years 0001-9999"):
        stamp("9" * 5000, "unix_ms")


# --- properties against plain references ------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DIGITS = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _text(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reference(name: str, value: Any) -> str | None:
    """What format ``name`` reads ``value`` as, written plainly (exact fractions), or None when it does not read it."""
    if name == "iso":
        if type(value) is not str:
            return None
        try:
            moment = datetime.fromisoformat(value)
            return _text((moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc))
        except (ValueError, OverflowError):
            return None
    if type(value) in (int, float):
        number = Fraction(repr(value))  # the number as written
    elif type(value) is str and _DIGITS.fullmatch(value):
        number = Fraction(value)
    else:
        return None
    try:
        return _text(_EPOCH + timedelta(milliseconds=math.floor(number * (1000 if name == "unix_s" else 1))))
    except OverflowError:
        return None


FORMATS = st.sampled_from(["iso", "unix_s", "unix_ms"])
TIMES = st.sampled_from([
    "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123999-01:30", "2026-11-26", "20261126", "2026-W48-4", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999-00:01", "1764151200", "1764151200123", "-1", "0.9999999999999999999999999999999", "12e3", "", "yesterday",
])
LONG_FRACTIONS = st.builds("{}{}.{}".format, st.sampled_from(["", "-"]), st.integers(0, 2_000_000_000), st.text("09", min_size=20, max_size=40))
"""Digit strings whose fraction is long and mostly nines: where an inexact sum would round up into the next millisecond."""
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | TIMES
    | st.from_regex(_DIGITS, fullmatch=True) | LONG_FRACTIONS | st.text(max_size=8)
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2), max_leaves=4)


@settings(max_examples=500)
@given(value=TIMES | LONG_FRACTIONS | JSON, formats=st.lists(FORMATS, min_size=1, max_size=4))
def test_a_list_of_formats_gives_the_first_the_reference_reads(value: Any, formats: list[str]) -> None:
    mapping = {"@timestamp": {"value": "$.t", "from": formats}}
    if len(set(formats)) < len(formats) or {"unix_s", "unix_ms"} <= set(formats):
        assert config_error(mapping).pointer.startswith("/m/@timestamp/from/")
        return
    readings = [reading for name in formats if (reading := reference(name, value)) is not None]
    try:
        got = run(mapping, {"t": value})
    except MappingFailure as failure:
        assert readings == [], (formats, value, str(failure))
        for name in formats:
            assert name in str(failure)
        return
    assert readings and got == readings[0], (formats, value)
    if len(formats) == 1:
        assert run({"@timestamp": {"value": "$.t", "from": formats[0]}}, {"t": value}) == got  # the single form agrees
