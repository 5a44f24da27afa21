"""The YAML reader: plain data only, duplicate keys refused, every node located."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from engine.config.definitions import Catalog
from engine.errors import ConfigError
from engine.config.mappingfile import load_mapping_document
from engine.config.yamlsource import load_text


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.yaml")
    return caught.value


def test_values_and_keys_are_located_by_pointer() -> None:
    doc = load_text("a:\n  b: 'x'\n  list:\n    - 1\n    - {c: 2}\n", "f.yaml")
    assert doc.data == {"a": {"b": "x", "list": [1, {"c": 2}]}}
    assert (doc.locate("/a/b").line, doc.locate("/a/b").column) == (2, 6)
    assert (doc.locate("/a/b", key=True).line, doc.locate("/a/b", key=True).column) == (2, 3)
    assert (doc.locate("/a/list/1/c").line, doc.locate("/a/list/1/c").column) == (5, 11)
    # a pointer to a node that does not exist falls back to its nearest parent
    assert (doc.locate("/a/nothing/here").line, doc.locate("/a/nothing/here").column) == (2, 3)


def test_offset_inside_a_scalar_lands_on_the_character() -> None:
    doc = load_text('plain: type = x\nquoted: "type = x"\nblock: |\n  first\n  second x\n', "f.yaml")
    assert doc.locate("/plain", offset=7).column == 15
    assert doc.locate("/quoted", offset=7).column == 17
    block = doc.locate("/block", offset=len("first\nsecond "))
    assert (block.line, block.column) == (5, 10)


def test_duplicate_key_names_both_lines() -> None:
    error = error_of("a: 1\nb: 2\na: 3\n")
    assert (error.location.line, error.location.column) == (3, 1)
    assert 'duplicate key "a"' in error.message and "line 1" in error.message


@pytest.mark.parametrize(
    "text, tag",
    [
        ("x: !!python/object:os.system {}\n", "!!python/object:os.system"),
        ("x: !!python/name:os.system ''\n", "!!python/name:os.system"),
        ("x: !!binary aGVsbG8=\n", "!!binary"),
        ("x: !custom 1\n", "!custom"),
        ("!!set {a: null}\n", "!!set"),
    ],
)
def test_no_tag_constructs_anything(text: str, tag: str) -> None:
    error = error_of(text)
    assert tag in error.message and "not allowed" in error.message


def test_scalars_follow_the_json_like_core_schema() -> None:
    doc = load_text("[yes, no, on, off, True, false, 1:30, 2026-11-26, 0x1F, 1.5, ~, .nan]", "f.yaml")
    assert doc.data == ["yes", "no", "on", "off", True, False, "1:30", "2026-11-26", 31, 1.5, None, ".nan"]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a: [1, 2\n", 2, "invalid YAML"),
        ("a: 1\n---\nb: 2\n", 2, "more than one YAML document"),
        ("", 1, "empty"),
        ("<<: {a: 1}\n", 1, "merge keys"),
        ("? [1, 2]\n: x\n", 1, "plain string"),
    ],
)
def test_malformed_yaml_is_a_located_error(text: str, line: int, fragment: str) -> None:
    error = error_of(text)
    assert error.location is not None and error.location.line == line
    assert fragment in error.message


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    assert "alias bomb" in error_of("\n".join(lines) + "\n").message


yamlish = st.lists(
    st.sampled_from(
        list(":-[]{},#&*!|>'\"%@`?\n\t ")
        + ["a", "1", "true", "null", "!!python/object:os.system", "<<", "---", "...", "\\x00", "\u2028", "ü", "&x", "*x", "- ", ": "]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(yamlish, st.text(max_size=60)))
def test_random_input_only_ever_raises_config_error(text: str) -> None:
    try:
        doc = load_text(text, "fuzz.yaml")
    except ConfigError as error:
        assert error.location is not None and error.location.file == "fuzz.yaml"
        return
    # whatever loads is plain JSON data, and agrees with PyYAML's own safe reading where that has no YAML-1.1 quirks
    assert _is_json(doc.data)


def _is_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_agrees_with_pyyaml_on_plain_documents() -> None:
    text = "name: x\ncount: 3\nratio: 0.5\nflags: [true, false, null]\nnested: {a: [1, {b: c}]}\n"
    assert load_text(text).data == yaml.safe_load(text)


# The whole loader, not only the YAML reader: random mapping-file-shaped documents go
# through the schema check, settings, triggers, mappings and field checks, and anything
# wrong must come back as a located ConfigError, never another exception.
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "$", "$.a", "$..a", "$[", "track", 'type = "track"', "type = = x", "${UNSET_VAR_X}",
                     "http://example.com", "http://127.0.0.1:1", "send_event", "metronome", "@path", "{{a}}"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["@path", "@template", "@coalesce", "@if", "exists", "then", "jmespath",
                                       "customer_id", "timestamp", "x", "@literal", "@merge", "objects"]), inner, max_size=3),
    max_leaves=8,
)
_subscription = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b"]), "action": st.sampled_from(["send_event", "nope"])},
    optional={"trigger": _values, "mapping": st.dictionaries(st.sampled_from(["customer_id", "timestamp", "properties", "zzz"]), _values, max_size=3),
              "batch_size": st.integers(-1, 200), "enabled": st.booleans(), "extra": _scalars},
)
_mapping_files = st.fixed_dictionaries(
    {"destination": st.sampled_from(["metronome", "webhook", "nope"]),
     "subscriptions": st.one_of(st.lists(_subscription, max_size=2), _scalars)},
    optional={"settings": st.dictionaries(st.sampled_from(["api_token", "base_url", "url", "other"]), _scalars, max_size=3),
              "tests": st.lists(st.fixed_dictionaries({"name": st.just("t"), "event": st.just({}), "expect": st.just([])}), max_size=1)},
)


@settings(max_examples=300, deadline=None)
@given(_mapping_files)
def test_any_mapping_shaped_document_loads_or_fails_with_a_located_config_error(data: dict) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        load_mapping_document(load_text(text, "fuzz.yaml"), env={"METRONOME_API_TOKEN": "t"}, catalog=_CATALOG)
    except ConfigError as error:
        located = error.errors if hasattr(error, "errors") else [error]
        assert all(e.location is not None and e.location.file == "fuzz.yaml" for e in located), str(error)


_CATALOG = Catalog()
