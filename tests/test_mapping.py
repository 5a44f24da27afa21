"""The mapping language (SPEC 5): every form and directive, Segment's defects fixed, properties."""

from __future__ import annotations

import copy
import json
from typing import Any

import jmespath
import jsonpath_rfc9535
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import compile_segment_path
from engine.lang.mapping import compile_mapping, explain
from engine.lang.missing import MISSING

EVENT = {
    "type": "track",
    "messageId": "m-1",
    "userId": None,
    "anonymousId": "anon-1",
    "event": "Order Completed",
    "properties": {
        "zero": 0,
        "empty": "",
        "no": False,
        "price": 1.5,
        "count": 3,
        "whole": 42.0,
        "items": [{"sku": "s1", "qty": 2}, {"sku": "s2"}],
        "nested": {"a": {"b": 1}, "list": [1, 2]},
        "a.b": "dotted key",
        "json": '{"x": [1, 2]}',
        "unix": 1764151200,
    },
    "traits": {"name": "Ann", "plan": None},
    "timestamp": "2026-11-26T12:00:00+02:00",
}


def run(mapping: Any, doc: Any = EVENT) -> Any:
    return compile_mapping(mapping, "/m").evaluate(doc)


def config_error(mapping: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        compile_mapping(mapping, "/m")
    return caught.value


# --- paths, literals, objects, lists -------------------------------------------------------


def test_path_string() -> None:
    assert run("$.messageId") == "m-1"
    assert run("$.properties.items[0].sku") == "s1"
    assert run("$.nope") is MISSING
    assert run("$.userId") is None


def test_non_singular_path_gives_a_list_whatever_the_data() -> None:
    assert run("$.properties.items[*].sku") == ["s1", "s2"]
    assert run("$.properties.items[*].sku", {"properties": {"items": {}}}) == []
    assert run("$.nothing[*]") == []


def test_path_directive_takes_jsonpath_and_dotted_paths() -> None:
    assert run({"@path": "$.properties.count"}) == 3
    assert run({"@path": "properties.count"}) == 3
    assert run({"@path": "properties['a.b']"}) == "dotted key"
    assert config_error({"@path": 3}).pointer == "/m/@path"


def test_path_errors_carry_pointer_and_offset() -> None:
    error = config_error({"@path": "properties..x"})
    assert (error.pointer, error.offset) == ("/m/@path", 11)
    error = config_error({"f": "$.a["})
    assert (error.pointer, error.offset) == ("/m/f", 4)


def test_scalars_and_other_strings_are_literals() -> None:
    for value in ("plain text", "a $ later", 0, 1.5, True, None, ""):
        node = compile_mapping(value)
        assert node.evaluate(EVENT) == value and type(node.evaluate(EVENT)) is type(value)


def test_objects_drop_missing_keys_and_keep_null() -> None:
    assert run({"id": "$.messageId", "gone": "$.nope", "null": "$.userId", "n": 1}) == {"id": "m-1", "null": None, "n": 1}


def test_lists_turn_missing_items_into_null() -> None:
    assert run(["$.messageId", "$.nope", 7]) == ["m-1", None, 7]


def test_literal_objects_are_fresh_for_every_event() -> None:
    node = compile_mapping({"tags": ["a"], "meta": {"k": 1}})
    first = node.evaluate(EVENT)
    first["tags"].append("changed")
    first["meta"]["k"] = 2
    assert node.evaluate(EVENT) == {"tags": ["a"], "meta": {"k": 1}}


def test_non_json_literals_are_config_errors() -> None:
    import datetime

    assert config_error({"when": datetime.date(2026, 1, 1)}).pointer == "/m/when"
    assert "NaN" in config_error({"x": float("nan")}).message
    assert config_error({"@literal": {1: "a"}}).pointer == "/m/@literal"


def test_directive_object_shape() -> None:
    assert run({"@path": "$.event", "_metadata": {"label": "x"}}) == "Order Completed"
    error = config_error({"@path": "$.event", "extra": 1})
    assert error.pointer == "/m/extra" and "no sibling keys" in error.message
    error = config_error({"@pathh": "$.event"})
    assert error.pointer == "/m/@pathh" and "did you mean @path?" in error.message
    error = config_error({"@path": "$.a", "@literal": 1})
    assert error.pointer == "/m/@literal" and "exactly one" in error.message


def test_nested_error_pointers_are_escaped() -> None:
    error = config_error({"a/b": {"x~y": {"@case": {"operator": "title", "value": "$.a"}}}})
    assert error.pointer == "/m/a~1b/x~0y/@case/operator"


# --- the directives ------------------------------------------------------------------------


def test_jmespath() -> None:
    assert run({"@jmespath": "properties.items[].sku"}) == ["s1", "s2"]
    assert run({"@jmespath": "properties.nope"}) is MISSING
    assert run({"@jmespath": "userId"}) is MISSING  # a null result is missing
    assert run({"@jmespath": "length(properties.items)"}) == 2


def test_jmespath_errors() -> None:
    error = config_error({"@jmespath": "foo bar"})
    assert (error.pointer, error.offset) == ("/m/@jmespath", 4)
    error = config_error({"@jmespath": "a | lenght(b)"})
    assert error.offset == 4 and "did you mean length" in error.message
    assert "takes 1 argument" in config_error({"@jmespath": "length(a, b)"}).message
    assert "empty" in config_error({"@jmespath": ""}).message
    with pytest.raises(MappingFailure, match="sort"):
        run({"@jmespath": "sort(@)"}, [1, "a"])


def test_template() -> None:
    assert run({"@template": "Hi {{traits.name}}!"}) == "Hi Ann!"
    assert run({"@template": "{{{ traits.name }}}/{{ $.messageId }}"}) == "Ann/m-1"
    assert run({"@template": "[{{nope}}][{{traits.plan}}]"}) == "[][]"
    assert run({"@template": "{{properties.price}} {{properties.whole}} {{properties.no}} {{properties.count}}"}) == "1.5 42 false 3"
    assert run({"@template": "{{properties.nested.list}}|{{properties.nested.a}}"}) == '1,2|{"b":1}'
    assert run({"@template": "{{$.properties.items[*].sku}}"}) == "s1,s2"
    assert run({"@template": "no placeholders"}) == "no placeholders"


@pytest.mark.parametrize("template, offset, fragment", [
    ("Hi {{traits.name", 3, "unclosed"), ("Hi {{ a..b }}", 8, "empty name"), ("x {{ }}", 2, "empty placeholder"),
])
def test_template_errors_name_their_column(template: str, offset: int, fragment: str) -> None:
    error = config_error({"@template": template})
    assert (error.pointer, error.offset) == ("/m/@template", offset) and fragment in error.message


def test_a_template_must_be_text() -> None:
    assert config_error({"@template": ["x"]}).pointer == "/m/@template"


def test_literal_is_never_interpreted() -> None:
    assert run({"@literal": "$.messageId"}) == "$.messageId"
    assert run({"@literal": {"@path": "$.messageId", "x": ["$.a"]}}) == {"@path": "$.messageId", "x": ["$.a"]}


def test_coalesce() -> None:
    assert run({"@coalesce": ["$.userId", "$.anonymousId"]}) == "anon-1"
    assert run({"@coalesce": ["$.nope", "$.properties.zero", "$.messageId"]}) == 0
    assert run({"@coalesce": ["$.nope", "$.userId"]}) is MISSING
    assert run({"@coalesce": ["$.nope", "fallback"]}) == "fallback"
    assert config_error({"@coalesce": []}).pointer == "/m/@coalesce"
    assert config_error({"@coalesce": "$.a"}).pointer == "/m/@coalesce"


@pytest.mark.parametrize(
    ("test", "exists", "not_blank"),
    [
        ("$.nope", False, False),
        ("$.userId", False, False),
        ("$.properties.empty", True, False),
        ("$.properties.zero", True, False),
        ("$.properties.no", True, False),
        ("$.properties.price", True, True),
        ("$.properties.items", True, True),
        ("$.messageId", True, True),
    ],
)
def test_if_conditions(test: str, exists: bool, not_blank: bool) -> None:
    assert run({"@if": {"exists": test, "then": "then", "else": "else"}}) == ("then" if exists else "else")
    assert run({"@if": {"blank": test, "then": "then", "else": "else"}}) == ("then" if not_blank else "else")


def test_if_branches_are_mapping_values_and_may_be_absent() -> None:
    assert run({"@if": {"exists": "$.traits.name", "then": "$.traits.name"}}) == "Ann"
    assert run({"@if": {"exists": "$.nope", "then": "$.traits.name"}}) is MISSING
    assert run({"@if": {"exists": "$.traits.name", "else": "x"}}) is MISSING
    assert "exactly one condition" in config_error({"@if": {"then": 1}}).message
    assert "exactly one condition" in config_error({"@if": {"exists": "$.a", "blank": "$.a"}}).message
    assert config_error({"@if": {"exist": "$.a"}}).pointer == "/m/@if/exist"


def test_case() -> None:
    assert run({"@case": {"operator": "lower", "value": "$.event"}}) == "order completed"
    assert run({"@case": {"operator": "upper", "value": "$.event"}}) == "ORDER COMPLETED"
    assert run({"@case": {"operator": "upper", "value": "$.properties.count"}}) == 3
    assert run({"@case": {"operator": "upper", "value": "$.nope"}}) is MISSING
    error = config_error({"@case": {"operator": "title", "value": "$.event"}})
    assert error.pointer == "/m/@case/operator" and '"lower" or "upper"' in error.message
    assert config_error({"@case": {"value": "$.event"}}).pointer == "/m/@case"


def test_replace() -> None:
    base = {"value": "$.event", "pattern": "o"}
    assert run({"@replace": {**base, "replacement": "0"}}) == "Order C0mpleted"
    assert run({"@replace": {**base, "replacement": "0", "ignorecase": True}}) == "0rder C0mpleted"
    assert run({"@replace": {**base, "replacement": "0", "global": False, "ignorecase": True}}) == "0rder Completed"
    assert run({"@replace": {**base, "pattern2": " ", "replacement2": "_"}}) == "Order_Cmpleted"
    assert run({"@replace": {"value": "a.b*c", "pattern": ".", "replacement": "$&\\1"}}) == "a$&\\1b*c"
    assert run({"@replace": {"value": "$.properties.price", "pattern": ".", "replacement": ","}}) == "1,5"
    assert run({"@replace": {"value": "$.properties.no", "pattern": "f", "replacement": "F"}}) == "False"
    assert run({"@replace": {"value": "$.userId", "pattern": "x"}}) == ""  # null -> "", Segment's result (issue 13)
    assert config_error({"@replace": {"value": "x", "pattern": ""}}).pointer == "/m/@replace/pattern"
    assert config_error({"@replace": {"value": "x", "pattern": "a", "global": "yes"}}).pointer == "/m/@replace/global"
    assert config_error({"@replace": {"value": "x", "pattern": "a", "replacement2": "b"}}).pointer == "/m/@replace/replacement2"


def test_json() -> None:
    assert run({"@json": {"mode": "encode", "value": "$.properties.nested"}}) == '{"a":{"b":1},"list":[1,2]}'
    assert run({"@json": {"mode": "decode", "value": "$.properties.json"}}) == {"x": [1, 2]}
    assert run({"@json": {"mode": "decode", "value": "not json"}}) == "not json"
    assert run({"@json": {"mode": "decode", "value": "NaN"}}) == "NaN"
    assert run({"@json": {"mode": "decode", "value": "null"}}) is None
    assert run({"@json": {"mode": "decode", "value": "$.properties.count"}}) == 3
    assert run({"@json": {"mode": "encode", "value": "$.nope"}}) is MISSING
    assert config_error({"@json": {"mode": "parse", "value": "x"}}).pointer == "/m/@json/mode"


def test_flatten() -> None:
    nested = "$.properties.nested"
    assert run({"@flatten": {"value": nested}}) == {"a.b": 1, "list.0": 1, "list.1": 2}
    assert run({"@flatten": {"value": nested, "separator": "_", "omitArrays": True}}) == {"a_b": 1, "list": [1, 2]}
    assert run({"@flatten": {"value": "$.messageId"}}) == "m-1"
    assert run({"@flatten": {"value": [[1], {"k": None}]}}) == {"0.0": 1, "1.k": None}
    assert config_error({"@flatten": {"value": nested, "separator": 1}}).pointer == "/m/@flatten/separator"


def test_merge() -> None:
    objects = [{"a": 1, "b": 1}, "$.nope", None, {"b": 2, "c": 2}]
    assert run({"@merge": {"objects": objects, "direction": "right"}}) == {"a": 1, "b": 2, "c": 2}
    assert run({"@merge": {"objects": objects, "direction": "left"}}) == {"a": 1, "b": 1, "c": 2}
    assert run({"@merge": {"objects": objects}}) == {"a": 1, "b": 2, "c": 2}
    assert run({"@merge": {"objects": ["$.traits", {"name": "$.event"}]}}) == {"name": "Order Completed", "plan": None}
    with pytest.raises(MappingFailure, match=r"objects\[0\] \(\$\.messageId\) gave the string \"m-1\""):
        run({"@merge": {"objects": ["$.messageId"]}})
    assert config_error({"@merge": {"objects": [{}], "direction": "up"}}).pointer == "/m/@merge/direction"


def test_merge_does_not_touch_its_inputs() -> None:
    event = copy.deepcopy(EVENT)
    merged = run({"@merge": {"objects": ["$.traits", {"extra": 1}]}}, event)
    merged["name"] = "changed"
    assert event == EVENT


def test_array_path() -> None:
    shape = {"id": "$.sku", "qty": "$.qty"}
    assert run({"@arrayPath": ["$.properties.items", shape]}) == [{"id": "s1", "qty": 2}, {"id": "s2"}]
    assert run({"@arrayPath": ["properties.items", {"@path": "$.sku"}]}) == ["s1", "s2"]
    assert run({"@arrayPath": ["$.properties.nested", {"b": "$.a.b"}]}) == [{"b": 1}]
    assert run({"@arrayPath": ["$.properties.items"]}) == EVENT["properties"]["items"]
    assert run({"@arrayPath": ["$.messageId", shape]}) == "m-1"
    assert run({"@arrayPath": ["$.nope", shape]}) is MISSING
    assert config_error({"@arrayPath": ["$.a", "sku"]}).pointer == "/m/@arrayPath/1"
    assert config_error({"@arrayPath": []}).pointer == "/m/@arrayPath"


def test_transform() -> None:
    mapping = {"@transform": {"apply": {"who": {"@coalesce": ["$.userId", "$.anonymousId"]}}, "mapping": {"id": "$.who", "again": "$.messageId"}}}
    assert run(mapping) == {"id": "anon-1"}
    assert config_error({"@transform": {"apply": {}}}).pointer == "/m/@transform"


def test_exclude_when_null() -> None:
    assert run({"@excludeWhenNull": "$.userId"}) is MISSING
    assert run({"@excludeWhenNull": "$.traits"}) == {"name": "Ann"}
    assert run({"@excludeWhenNull": {"a": None, "b": [None, {"c": None, "d": 0}], "e": "$.userId"}}) == {"b": [{"d": 0}]}
    assert run({"@excludeWhenNull": "$.properties.zero"}) == 0


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("$.timestamp", "iso", "2026-11-26T10:00:00.000Z"),
        ("2026-11-26T10:00:00", "iso", "2026-11-26T10:00:00.000Z"),
        ("2026-11-26T10:00:00.123999-01:30", "iso", "2026-11-26T11:30:00.123Z"),
        ("$.properties.unix", "unix_s", "2025-11-26T10:00:00.000Z"),
        ("1764151200", "unix_s", "2025-11-26T10:00:00.000Z"),
        (1764151200.5, "unix_s", "2025-11-26T10:00:00.500Z"),
        (1764151200123, "unix_ms", "2025-11-26T10:00:00.123Z"),
        ("1764151200123", "unix_ms", "2025-11-26T10:00:00.123Z"),
        (-1, "unix_ms", "1969-12-31T23:59:59.999Z"),
    ],
)
def test_timestamp(value: Any, unit: str, expected: str) -> None:
    assert run({"@timestamp": {"value": value, "from": unit}}) == expected


@pytest.mark.parametrize(
    ("value", "unit", "says"),
    [
        ("yesterday", "iso", ('the string "yesterday"', "such as 2026-11-26T10:00:00Z")),
        (1764151200, "iso", ("the number 1764151200", "ISO 8601")),
        ("12e3", "unix_s", ('the string "12e3"', "such as 1764151200")),
        (True, "unix_ms", ("the boolean true", "such as 1764151200000")),
        (1e300, "unix_s", ("1e+300", "outside years 0001-9999")),
        ("0001-01-01T00:00:00+01:00", "iso", ('"0001-01-01T00:00:00+01:00"', "ISO 8601")),
    ],
)
def test_timestamp_failures_name_value_and_form(value: Any, unit: str, says: tuple[str, str]) -> None:
    with pytest.raises(MappingFailure) as caught:
        run({"@timestamp": {"value": value, "from": unit}})
    for fragment in says:
        assert fragment in str(caught.value)


def test_timestamp_missing_and_options() -> None:
    assert run({"@timestamp": {"value": "$.nope", "from": "iso"}}) is MISSING
    assert config_error({"@timestamp": {"value": "$.t", "from": "unix"}}).pointer == "/m/@timestamp/from"
    assert config_error({"@timestamp": {"value": "$.t"}}).pointer == "/m/@timestamp"


# --- sources and explanations --------------------------------------------------------------


def test_sources_read_like_the_expression() -> None:
    assert compile_mapping("$.messageId").source == "$.messageId"
    assert compile_mapping({"@coalesce": ["$.userId", "$.anonymousId"]}).source == "@coalesce($.userId, $.anonymousId)"
    assert compile_mapping({"@literal": "$.x"}).source == '@literal("$.x")'
    assert compile_mapping({"@case": {"operator": "lower", "value": "$.e"}}).source == "@case(lower, $.e)"


def test_explain_coalesce_names_the_branch() -> None:
    value, note = explain(compile_mapping({"@coalesce": ["$.nope", "$.userId", "$.anonymousId"]}), EVENT)
    assert value == "anon-1"
    assert note["branch"] == 2 and note["from"] == "@coalesce($.nope, $.userId, $.anonymousId)"
    assert [tried["from"] for tried in note["tried"]] == ["$.nope", "$.userId", "$.anonymousId"]
    assert explain(compile_mapping({"@coalesce": ["$.nope"]}), EVENT)[1]["branch"] is None


def test_explain_if_says_which_branch_and_why() -> None:
    value, note = explain(compile_mapping({"@if": {"blank": "$.properties.zero", "then": "yes", "else": "no"}}), EVENT)
    assert value == "no"
    assert (note["condition"], note["taken"]) == ("blank", "else")
    assert note["why"] == "$.properties.zero is blank (0)"
    _, note = explain(compile_mapping({"@if": {"exists": "$.nope", "then": "yes"}}), EVENT)
    assert note["why"] == "$.nope is missing" and note["taken"] == "else"
    json.dumps(note)


# --- Segment defects, fixed (reference/segment-compat.md) ----------------------------------


@pytest.mark.parametrize("falsy", [None, 0, "", False])
def test_defect_falsy_value_part_way_is_not_the_result(falsy: Any) -> None:
    assert run("$.a.b", {"a": falsy}) is MISSING
    assert run({"@path": "a.b"}, {"a": falsy}) is MISSING


def test_defect_keys_with_dots_are_reachable() -> None:
    assert run("$.properties['a.b']") == "dotted key"
    assert run({"@template": "{{properties['a.b']}}"}) == "dotted key"


@pytest.mark.parametrize("falsy", [False, 0, "", None])
def test_defect_falsy_else_is_used(falsy: Any) -> None:
    result = run({"@if": {"exists": "$.nope", "then": "yes", "else": falsy}})
    assert result == falsy and type(result) is type(falsy)


def test_defect_replace_keeps_missing_and_never_mutates() -> None:
    mapping = {"@replace": {"pattern": "a", "replacement": "b", "value": "$.nope"}}
    frozen = copy.deepcopy(mapping)
    node = compile_mapping(mapping)
    assert node.evaluate(EVENT) is MISSING
    assert node.evaluate({"nope": "banana"}) == "bbnbnb"
    assert node.evaluate({"nope": "avocado"}) == "bvocbdo"
    assert mapping == frozen


@pytest.mark.parametrize(("value", "text"), [(0, "0"), ("", '""'), (False, "false"), (None, "null")])
def test_defect_json_encodes_falsy_values(value: Any, text: str) -> None:
    assert run({"@json": {"mode": "encode", "value": "$.v"}}, {"v": value}) == text


def test_defect_merge_of_a_string_is_a_load_error() -> None:
    error = config_error({"@merge": {"objects": [{"a": 1}, "just text"], "direction": "right"}})
    assert error.pointer == "/m/@merge/objects/1" and "the string" in error.message


def test_defect_literal_does_not_resolve_nested_directives() -> None:
    inner = {"@if": {"exists": "$.userId", "then": "$.userId"}}
    assert run({"@literal": {"k": inner}}) == {"k": inner}


def test_defect_checks_happen_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError):  # found without any event
        compile_mapping({"ok": "$.a", "bad": {"@case": {"operator": "title", "value": "$.a"}}})
    node = compile_mapping(
        {"a": "$.items[*]", "b": {"@jmespath": "items[0]"}, "c": {"@template": "{{x.y}}"}, "d": {"@replace": {"pattern": "A", "replacement": "b", "value": "$.s", "ignorecase": True}}}
    )

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed again per event")

    monkeypatch.setattr(jmespath, "compile", forbidden)
    monkeypatch.setattr(jsonpath_rfc9535.JSONPathEnvironment, "compile", forbidden)
    monkeypatch.setattr("engine.lang.mapping.structure.compile_path", forbidden)
    monkeypatch.setattr("engine.lang.mapping.templates.compile_path", forbidden)
    monkeypatch.setattr("engine.lang.jsonpath.compile_path", forbidden)
    monkeypatch.setattr("re.compile", forbidden)
    assert node.evaluate({"items": [1], "x": {"y": "z"}, "s": "aA"}) == {"a": [1], "b": 1, "c": "z", "d": "bb"}


# --- properties ----------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "items", "t", "s", "properties", "x.y", "0"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5) | st.sampled_from(["", 0, "1764151200", "2026-11-26T10:00:00Z", '{"a": 1}'])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES | st.text(max_size=2), inner, max_size=5), max_leaves=30)
EVENTS = st.dictionaries(NAMES, JSON, max_size=6)


@settings(max_examples=300)
@given(event=EVENTS, keys=st.lists(st.sampled_from(["a", "b", "c", "x.y"]), min_size=1, max_size=4), fallback=st.booleans())
def test_coalesce_equals_reference(event: dict[str, Any], keys: list[str], fallback: bool) -> None:
    options: list[Any] = [f"$['{key}']" for key in keys] + (["fallback"] if fallback else [])
    expected: Any = MISSING
    for option in options:
        value = event.get(option[3:-2], MISSING) if option.startswith("$") else option
        if value is not MISSING and value is not None:
            expected = value
            break
    got = compile_mapping({"@coalesce": options}).evaluate(event)
    assert got is expected if expected is MISSING else json.dumps(got) == json.dumps(expected)


REPRESENTATIVE = [
    "$.a",
    "$.a.b[0]",
    "$..a",
    "$.items[?@.x.y > 1]",
    "$.items[1:]",
    {"@path": "a.b"},
    {"@jmespath": "a.b || c"},
    {"@jmespath": "items[?a > `1`] | length(@)"},
    {"@jmespath": "sort(items)"},
    {"@template": "{{a}}-{{{b.c}}}-{{$.items[*]}}"},
    {"@literal": {"@path": "$.a"}},
    {"@coalesce": ["$.a", "$.b", {"@literal": "none"}]},
    {"@if": {"exists": "$.a", "then": "$.b", "else": "$.c"}},
    {"@if": {"blank": "$.a", "then": {"k": "$.a"}}},
    {"@case": {"operator": "upper", "value": "$.a"}},
    {"@replace": {"pattern": "a", "replacement": "b", "pattern2": "1", "ignorecase": True, "value": "$.s"}},
    {"@json": {"mode": "encode", "value": "$.a"}},
    {"@json": {"mode": "decode", "value": "$.s"}},
    {"@flatten": {"value": "$.properties", "separator": "/"}},
    {"@flatten": {"value": "$.items", "omitArrays": True}},
    {"@merge": {"objects": ["$.a", {"k": 1}, "$.b"], "direction": "left"}},
    {"@arrayPath": ["$.items", {"first": "$.a", "all": "$"}]},
    {"@arrayPath": ["items"]},
    {"@transform": {"apply": {"x": "$.properties"}, "mapping": {"@flatten": {"value": "$.x"}}}},
    {"@excludeWhenNull": {"a": "$.a", "items": "$.items"}},
    {"@timestamp": {"value": "$.t", "from": "iso"}},
    {"@timestamp": {"value": "$.t", "from": "unix_s"}},
    {"@timestamp": {"value": "$.t", "from": "unix_ms"}},
    {"@timestamp": {"value": "$.t", "from": ["iso", "unix_ms"]}},
    {"@timestamp": {"value": "$.t", "from": ["unix_s", "iso"]}},
    {"@template": {"text": "{{a}}-{{{b.c}}}", "missing": "invalid"}},
    {"@template": {"text": {"@path": "$.s"}, "missing": "invalid"}},
    {"id": "$.a", "list": ["$.b", "$.nope", 1], "nested": {"deep": "$.c"}},
]
PRISTINE = copy.deepcopy(REPRESENTATIVE)
NODES = [compile_mapping(mapping) for mapping in REPRESENTATIVE]


def outcome(call: Any) -> tuple[str, Any]:
    """A call's result as comparable data: its value (as JSON), MISSING, or the failure."""
    try:
        value = call()
    except MappingFailure as failure:
        return "failure", str(failure)
    if value is MISSING:
        return "missing", None
    return "value", json.dumps(value, sort_keys=True)


@settings(max_examples=200)
@given(event=EVENTS)
def test_evaluate_never_raises_anything_but_mapping_failure(event: dict[str, Any]) -> None:
    before = copy.deepcopy(event)
    for mapping, node in zip(REPRESENTATIVE, NODES):
        outcome(lambda: node.evaluate(event))  # any other exception fails the test; the value must be JSON
        assert event == before, f"{node.source} changed the event"
    assert REPRESENTATIVE == PRISTINE, "evaluating changed a mapping"


@settings(max_examples=200)
@given(event=EVENTS)
def test_explain_gives_the_value_evaluate_gives(event: dict[str, Any]) -> None:
    for node in NODES:
        evaluated = outcome(lambda: node.evaluate(event))
        explained = outcome(lambda: explain(node, event)[0])
        assert explained == evaluated, node.source
        if evaluated[0] != "failure":
            note = explain(node, event)[1]
            assert note["from"] == node.source
            json.dumps(note)  # JSON-able


@settings(max_examples=300)
@given(event=EVENTS, keys=st.lists(NAMES | st.integers(-3, 3), max_size=4), directive=st.booleans())
def test_compiled_simple_paths_equal_the_rfc_evaluator(event: dict[str, Any], keys: list[str | int], directive: bool) -> None:
    query = "$" + "".join(f"[{json.dumps(key, ensure_ascii=False)}]" for key in keys)
    got = compile_mapping({"@path": query} if directive else query).evaluate(event)
    expected = [node.value for node in jsonpath_rfc9535.find(query, event)]
    assert json.dumps([] if got is MISSING else [got]) == json.dumps(expected)


_JMESPATH_SUBSET = ["a", "a.b", "a.b.c", "a[*]", "a[*].b", "a[*].b.c", "a.b[*].c", "a[*].b[*].c", "a[*].b[*]", "@", "[*].a"]
_DOCUMENTS_ON_A_B_C = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_JMESPATH_SUBSET), _DOCUMENTS_ON_A_B_C)
def test_the_compiled_jmespath_subset_equals_the_library(expression: str, document: Any) -> None:
    expected = jmespath.search(expression, document)
    node = compile_mapping({"@jmespath": expression})
    assert node.evaluate(document) == (MISSING if expected is None else expected)


# --- Segment's forms (issue 13): a directive as the argument of @path and @template -------------------


def test_path_of_a_directive_reads_the_path_it_gives() -> None:
    doc = {"field": "$.properties.order-id", "properties": {"order-id": "o-1", "plan": "pro"}}
    assert run({"@path": {"@path": "$.field"}}, doc) == "o-1"
    assert run({"@path": {"@template": "$.properties.{{which}}"}}, {**doc, "which": "plan"}) == "pro"
    assert run({"@path": {"@literal": ""}}, doc) == doc


@pytest.mark.parametrize(
    ("field", "says"),
    [
        (None, "gave null; it must give a string"),
        (5, "gave the number 5; it must give a string"),
        ("$.a[", "which @path cannot read: invalid JSONPath"),
        ("$." + "a" * 5000, "5,002 characters, over the limit of 4,096"),
    ],
)
def test_path_of_a_directive_that_gives_no_path_fails_the_event(field: Any, says: str) -> None:
    with pytest.raises(MappingFailure) as caught:
        run({"@path": {"@path": "$.field"}}, {"field": field})
    assert says in str(caught.value)
    assert "@path of $.field" in str(caught.value)


def test_path_of_a_directive_missing_fails_the_event_as_in_segment() -> None:
    with pytest.raises(MappingFailure, match="gave nothing"):
        run({"@path": {"@path": "$.field"}}, {})


def test_template_of_a_directive_renders_the_template_it_gives() -> None:
    assert run({"@template": {"@path": "$.tpl"}}, {"tpl": "Hi {{traits.name}}", "traits": {"name": "Ann"}}) == "Hi Ann"
    with pytest.raises(MappingFailure, match="unclosed"):
        run({"@template": {"@path": "$.tpl"}}, {"tpl": "Hi {{traits.name"})


def test_a_computed_path_is_explained_with_the_text_it_read() -> None:
    node = compile_mapping({"@path": {"@path": "$.field"}}, "/m")
    value, note = explain(node, {"field": "$.a", "a": 1})
    assert value == 1
    assert note["read"] == "$.a" and note["argument"]["from"] == "$.field" and note["found"] is True


@pytest.mark.parametrize("raw", [{"a": 1}, ["a", 1], 5, None])
def test_path_takes_a_string_a_list_of_keys_or_a_directive(raw: Any) -> None:
    assert "or a directive that gives a path" in config_error({"@path": raw}).message


def test_path_of_a_list_of_keys_walks_them_as_segment_does() -> None:
    doc = {"a": {"b c": [10, 20]}}
    assert run({"@path": ["a", "b c", "1"]}, doc) == 20
    assert run({"@path": []}, doc) == doc
    assert run({"@path": ["a", "nope"]}, doc) is MISSING


@pytest.mark.parametrize("text", ["$..*", "$.a[*]", "$.a[?@.b]", "$.a[0:2]", "$..a"])
def test_a_computed_path_names_one_value_only(text: str) -> None:
    with pytest.raises(MappingFailure, match="must name one value"):
        run({"@path": {"@path": "$.p"}}, {"p": text, "a": [{"b": 1}]})


def test_a_computed_template_names_single_values_and_renders_at_most_the_limit() -> None:
    with pytest.raises(MappingFailure, match="single values"):
        run({"@template": {"@path": "$.t"}}, {"t": "{{$..*}}", "a": 1})
    big = {"t": "{{s}}" * 20, "s": "x" * 6000}
    with pytest.raises(MappingFailure, match="more than 100,000 characters"):
        run({"@template": {"@path": "$.t"}}, big)
    assert run({"@template": {"@path": "$.t"}}, {**big, "t": "{{s}}" * 16}) == "x" * 96000


def test_an_empty_second_pattern_is_ignored_as_in_segment() -> None:
    assert run({"@replace": {"pattern": "a", "replacement": "b", "pattern2": "", "value": "$.event"}}) == "Order Completed".replace("a", "b")


def test_a_plain_path_that_segment_reads_points_at_the_path_directive() -> None:
    message = config_error("$.properties.order-id").message
    assert message.startswith("invalid JSONPath") and '{"@path": "$.properties.order-id"}' in message


PATH_TEXTS = st.sampled_from(["$.a", "$.a.b c", "$.a.b c.0", "a.b c[1]", "$.a['b c'][*]", "$.", "", "$.a[", "$"])


@settings(max_examples=200)
@given(field=JSON | PATH_TEXTS | st.text(max_size=8).map(lambda text: "$." + text))
def test_a_computed_path_gives_what_the_static_path_gives_or_fails_the_event(field: Any) -> None:
    doc = {"field": field, "a": {"b c": [1, 2]}}
    try:
        got = run({"@path": {"@path": "$.field"}}, doc)
    except MappingFailure:
        if type(field) is str and len(field) <= 4096:  # a static @path refuses it too, or it names several values
            try:
                static = compile_mapping({"@path": field}, "/m")
            except ConfigError:
                return
            assert not compile_segment_path(field).singular, static
        return
    assert type(field) is str
    assert got == run({"@path": field}, doc) or got is run({"@path": field}, doc)


def test_merge_of_no_objects_is_an_empty_object() -> None:
    assert run({"@merge": {"direction": "left", "objects": []}}) == {}
