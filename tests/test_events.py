"""Reading events: every input shape gives the same events; bad lines are located and skipped."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from engine import events as events_module
from engine.events import BadInput, Event, open_input, read_events

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
event_lists = st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=4), max_size=8)


def values(text: str) -> list[object]:
    items = list(read_events(io.StringIO(text)))
    assert all(isinstance(i, Event) for i in items), items
    assert [i.position for i in items] == list(range(len(items)))
    return [i.value for i in items]


@settings(max_examples=200, deadline=None)
@given(event_lists, st.integers(1, 64))
def test_every_shape_reads_the_same_events(events: list[dict], chunk: int) -> None:
    original = events_module._CHUNK
    events_module._CHUNK = chunk  # tiny chunks cut values anywhere
    try:
        ndjson = "".join(json.dumps(e) + "\n" for e in events)
        assert values(ndjson) == events
        assert values(json.dumps(events)) == events
        assert values(json.dumps(events, indent=2)) == events
        if events:
            assert values(json.dumps(events[0], indent=2)) == events[:1]
        if events and events[0]:  # (an empty first object fits on one line: that input reads as NDJSON)
            assert values("".join(json.dumps(e, indent=2) + "\n" for e in events)) == events  # pretty objects, one after another
    finally:
        events_module._CHUNK = original


def test_a_malformed_line_is_reported_and_the_rest_goes_on() -> None:
    items = list(read_events(io.StringIO('{"a": 1}\n\n{"b": \nnot json\n{"c": 3}\n')))
    assert [type(i) for i in items] == [Event, BadInput, BadInput, Event]
    assert [(i.position, i.line) for i in items] == [(0, 1), (1, 3), (2, 4), (3, 5)]
    assert "not valid JSON" in items[1].message and items[3].value == {"c": 3}


@pytest.mark.parametrize(
    "text, fragment",
    [('[{"a": 1}, {"b": ]', "not valid JSON in the array"), ('[{"a": 1} {"b": 2}]', "expected , or ]"), ('[{"a": 1},', "ends without ]")],
)
def test_a_broken_array_ends_with_a_located_error(text: str, fragment: str) -> None:
    items = list(read_events(io.StringIO(text)))
    assert items[0] == Event(0, 1, {"a": 1})
    assert isinstance(items[-1], BadInput) and fragment in items[-1].message


def test_gzip_files_are_read_by_their_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"type": "track"}\n{"type": "identify"}\n'))
    with open_input(str(path)) as stream:
        assert [i.value["type"] for i in read_events(stream)] == ["track", "identify"]


def test_a_line_past_the_event_limit_is_dead_lettered_in_bounded_memory_and_the_rest_goes_on() -> None:
    huge = '{"blob": "' + "x" * (events_module._MAX_EVENT + 10) + '"}'
    items = list(read_events(io.StringIO('{"a": 1}\n' + huge + '\n{"c": 3}\n')))
    assert [type(i) for i in items] == [Event, BadInput, Event]
    assert "longer than 4 MiB" in items[1].message and items[1].line == 2
    assert items[1].raw is not None and len(items[1].raw) == events_module._MAX_EVENT, "what is kept is bounded"
    assert items[2] == Event(2, 3, {"c": 3})


def test_a_one_line_array_longer_than_the_event_limit_is_read_element_by_element() -> None:
    """``json.dumps`` writes a whole array on one line; the first line is read in bounded pieces, and nothing is lost."""
    events = [{"type": "track", "messageId": f"m-{i}", "properties": {"pad": "x" * 100}} for i in range(40_000)]
    text = json.dumps(events)
    assert "\n" not in text and len(text) > events_module._MAX_EVENT
    items = list(read_events(io.StringIO(text)))
    assert [i.value for i in items if isinstance(i, Event)] == events
