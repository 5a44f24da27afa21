"""JSONPath in mappings: RFC 9535 compliance, the fast path, Segment-style dotted paths."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonpath_rfc9535
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import compile_path, compile_segment_path
from engine.lang.missing import MISSING

CTS_FILE = Path(__file__).parents[2] / "shared" / "data" / "jsonpath-cts.json"


def _cts_cases() -> list[Any]:
    if not CTS_FILE.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"compliance suite not found at {CTS_FILE}"))]
    tests = json.loads(CTS_FILE.read_text(encoding="utf-8"))["tests"]
    return [pytest.param(case, id=case["name"]) for case in tests]


CTS = _cts_cases()


def canonical(value: Any) -> str:
    """JSON text that tells true from 1 and ignores object key order: a strict equality."""
    return json.dumps(value, sort_keys=True)


def as_nodes(path_value: Any, singular: bool) -> list[Any]:
    """Our result as the RFC's node list: a singular value is one node, MISSING none."""
    if singular:
        return [] if path_value is MISSING else [path_value]
    return path_value


def rfc_nodes(query: str, doc: Any) -> list[Any]:
    return [node.value for node in jsonpath_rfc9535.find(query, doc)]


# --- (1) the RFC 9535 compliance test suite ---------------------------------------------------


@pytest.mark.parametrize("case", CTS)
def test_compliance_suite(case: dict[str, Any]) -> None:
    selector = case["selector"]
    if case.get("invalid_selector"):
        with pytest.raises(ConfigError) as caught:
            compile_path(selector, "/mapping/x")
        assert caught.value.pointer == "/mapping/x"
        assert caught.value.offset is not None and 0 <= caught.value.offset <= len(selector)
        return
    path = compile_path(selector)
    got = canonical(as_nodes(path.evaluate(case["document"]), path.singular))
    expected = [case["result"]] if "result" in case else case["results"]
    assert got in [canonical(nodes) for nodes in expected]


def test_the_suite_is_the_full_one() -> None:
    """Guard against a truncated data file quietly shrinking the compliance run."""
    if not CTS_FILE.exists():
        pytest.skip(f"compliance suite not found at {CTS_FILE}")
    tests = json.loads(CTS_FILE.read_text(encoding="utf-8"))["tests"]
    assert sum(1 for t in tests if t.get("invalid_selector")) > 200
    assert sum(1 for t in tests if not t.get("invalid_selector")) > 400


# --- results and types -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["$", "$.a", "$['a']['b.c']", "$.a[-1]", '$["a"][0].b'])
def test_singular_queries_are_singular(text: str) -> None:
    assert compile_path(text).singular


@pytest.mark.parametrize("text", ["$.*", "$[0:2]", "$..a", "$[?@.a]", "$['a','b']", "$[0,1]"])
def test_other_queries_always_give_lists(text: str) -> None:
    path = compile_path(text)
    assert not path.singular
    for doc in ({"a": 1, "b": 2}, [1, 2, 3], "text", None, 0, {}):
        assert isinstance(path.evaluate(doc), list)


def test_dollar_alone_is_the_whole_document() -> None:
    doc = {"a": [1, 2]}
    assert compile_path("$").evaluate(doc) is doc


def test_singular_gives_value_or_missing() -> None:
    path = compile_path("$['a']['b.c']")
    assert path.evaluate({"a": {"b.c": None}}) is None
    assert path.evaluate({"a": {"b": {"c": 1}}}) is MISSING
    assert compile_path("$.a[-1]").evaluate({"a": [1, 2, 3]}) == 3
    assert compile_path("$.a[-4]").evaluate({"a": [1, 2, 3]}) is MISSING


def test_singular_queries_never_call_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    path = compile_path("$.a['b'][0]")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the RFC library was called per event for a singular query")

    monkeypatch.setattr(jsonpath_rfc9535.JSONPathQuery, "finditer", forbidden)
    assert path.evaluate({"a": {"b": ["x"]}}) == "x"


def test_other_queries_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    path = compile_path("$.items[*].sku")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a query was parsed again per event")

    monkeypatch.setattr(jsonpath_rfc9535.JSONPathEnvironment, "compile", forbidden)
    assert path.evaluate({"items": [{"sku": "a"}, {"sku": "b"}, {}]}) == ["a", "b"]


def test_too_deep_for_the_library_is_a_mapping_failure() -> None:
    doc: dict[str, Any] = {}
    inner = doc
    for _ in range(150):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(MappingFailure, match=r"\$\.\.a"):
        compile_path("$..a").evaluate(doc)


@pytest.mark.parametrize("text", ["$.a[", " $.a", "$.a.", "$[?@.a=]", "$.a[1:2:3:4]"])
def test_syntax_error_offset_is_the_library_column(text: str) -> None:
    with pytest.raises(jsonpath_rfc9535.JSONPathError) as library:
        jsonpath_rfc9535.compile(text)
    with pytest.raises(ConfigError) as ours:
        compile_path(text, "/p")
    token = library.value.token
    assert token is not None
    assert ours.value.offset == min(token.index, len(text))
    assert f"column {ours.value.offset + 1}" in ours.value.message
    assert repr(text) in ours.value.message


# --- (2) the fast path equals the RFC evaluator ----------------------------------------------

# Names that need quoting, look like numbers, hold quotes/escapes, or are empty.
NAMES = st.sampled_from(["a", "b", "_x", "b.c", "a b", "it's", 'say "hi"', "back\\slash", "0", "", "é", "\n", "-"]) | st.text(max_size=3)
INDEXES = st.integers(-4, 4) | st.sampled_from([2**53 - 1, -(2**53) + 1])
KEYS = st.lists(NAMES | INDEXES, max_size=5)

SCALARS = st.none() | st.booleans() | st.sampled_from([0, 0.0, "", 1, -1.5]) | st.integers() | st.text(max_size=4)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(NAMES, inner, max_size=5),
    max_leaves=25,
)
SHORTHAND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def rfc_string(name: str) -> str:
    """A single-quoted RFC 9535 string literal for ``name``."""
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    escaped = re.sub(r"[\x00-\x1f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f"'{escaped}'"


def rfc_query(keys: list[str | int], shorthand: list[bool]) -> str:
    parts = []
    for key, short in zip(keys, shorthand):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif short and SHORTHAND.fullmatch(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{rfc_string(key)}]")
    return "$" + "".join(parts)


@settings(max_examples=300)
@given(doc=JSON, keys=KEYS, shorthand=st.lists(st.booleans(), min_size=5, max_size=5))
def test_fast_path_equals_rfc_evaluator(doc: Any, keys: list[str | int], shorthand: list[bool]) -> None:
    query = rfc_query(keys, shorthand)
    path = compile_path(query)
    assert path.singular
    assert canonical(as_nodes(path.evaluate(doc), True)) == canonical(rfc_nodes(query, doc))


@settings(max_examples=200)
@given(doc=JSON, keys=st.lists(NAMES | INDEXES, min_size=1, max_size=4))
def test_fast_path_follows_existing_nodes(doc: Any, keys: list[str | int]) -> None:
    """Build the document around the path so that most queries reach a value."""
    root: Any = doc
    for key in reversed(keys):
        root = {key: root} if isinstance(key, str) else _list_with(key, root)
    query = rfc_query(keys, [True] * len(keys))
    assert canonical(as_nodes(compile_path(query).evaluate(root), True)) == canonical(rfc_nodes(query, root))


def _list_with(index: int, value: Any) -> list[Any]:
    size = min(abs(index) + (0 if index < 0 else 1), 6)
    items: list[Any] = [None] * size
    if -size <= index < size:
        items[index] = value
    return items


# --- (3) Segment dotted paths ----------------------------------------------------------------

PLAIN_NAME = re.compile(r"[^.\[\]'\"\\\s0-9][^.\[\]'\"\\]*(?<!\s)")


def dotted(keys: list[str | int]) -> str:
    """The Segment-style spelling of ``keys``: bare names where possible, brackets otherwise."""
    parts = []
    for position, key in enumerate(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif PLAIN_NAME.fullmatch(key) and not (position == 0 and key.startswith("$")):  # a leading $ means JSONPath
            parts.append(key if position == 0 else f".{key}")
        else:
            parts.append("['" + key.replace("\\", "\\\\").replace("'", "\\'") + "']")
    return "".join(parts)


@settings(max_examples=300)
@given(doc=JSON, keys=st.lists(NAMES | INDEXES, min_size=1, max_size=5))
def test_dotted_path_equals_its_jsonpath(doc: Any, keys: list[str | int]) -> None:
    query = rfc_query(keys, [False] * len(keys))
    ours = compile_path(dotted(keys))
    assert ours.singular
    assert canonical(as_nodes(ours.evaluate(doc), True)) == canonical(rfc_nodes(query, doc))


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("a.b", "$.a.b"),
        ("a.b[0]", "$.a.b[0]"),
        ("a['x.y']", "$.a['x.y']"),
        ('a["x"]', "$.a['x']"),
        ("a.b-c", "$.a['b-c']"),
        ("context.user agent", "$.context['user agent']"),
        ("[1].a", "$[1].a"),
        ("a[-1]", "$.a[-1]"),
        ("a['it\\'s']", "$.a['it\\'s']"),
    ],
)
def test_dotted_examples(text: str, query: str) -> None:
    doc = {
        "a": {"b": [7, 8], "x.y": 1, "x": 2, "b-c": 3, "it's": 4},
        "context": {"user agent": "curl"},
    }
    for probe in (doc, [doc, doc], {"a": [5, 6]}):
        assert canonical(as_nodes(compile_path(text).evaluate(probe), True)) == canonical(rfc_nodes(query, probe))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"a": {"0": "key"}}, "key"),
        ({"a": ["index", "b"]}, "index"),
        ({"a": {"1": "x"}}, MISSING),
        ({"a": []}, MISSING),
        ({"a": "text"}, MISSING),  # never a character of a string, as JavaScript would give
    ],
)
def test_a_digit_only_name_is_a_key_or_an_index_as_segment_reads_it(doc: Any, expected: Any) -> None:
    assert compile_path("a.0").evaluate(doc) == expected
    assert compile_path("a.0.b").evaluate({"a": [{"b": 1}]}) == 1
    assert compile_path("a.01").evaluate({"a": [1, 2]}) is MISSING  # "01" is no array position
    assert compile_path("a.01").evaluate({"a": {"01": 3}}) == 3


@pytest.mark.parametrize(
    ("text", "offset", "says"),
    [
        ("", 0, "empty"),
        ("a..b", 2, "empty name"),
        (".a", 0, "starts with"),
        ("a.", 2, "empty name"),
        ("a." + "1" * 101, 2, "digits"),
        ("a[x]", 1, "expected"),
        ("a['x'", 1, "expected"),
        ("a]", 1, "unexpected ']'"),
        (" a", 0, "spaces"),
        ("a[9007199254740992]", 2, "out of range"),
    ],
)
def test_dotted_errors_name_the_column(text: str, offset: int, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_path(text, "/mapping/f")
    assert caught.value.offset == offset
    assert caught.value.pointer == "/mapping/f"
    assert says in caught.value.message
    assert f"column {offset + 1}" in caught.value.message


# --- (4) @path arguments: RFC 9535 where valid, Segment's dotted path where not (issue 13) ---------

SEGMENT_NAME = st.from_regex(r"[a-z0-9][a-z0-9 \-_]{0,6}[a-z0-9]|[a-z0-9]", fullmatch=True)


def segment_get(doc: Any, names: list[str]) -> Any:
    """A plain reading of Segment's ``get`` without its defects: a name is a key, or a canonical array position."""
    for name in names:
        if isinstance(doc, dict) and name in doc:
            doc = doc[name]
        elif isinstance(doc, list) and name.isdigit() and (name == "0" or name[0] != "0") and int(name) < len(doc):
            doc = doc[int(name)]
        else:
            return MISSING
    return doc


@st.composite
def doc_along(draw: st.DrawFn, names: list[str]) -> Any:
    """A document that holds a value at ``names`` (a digit-only name sometimes as an array position)."""
    value: Any = draw(st.integers())
    for name in reversed(names):
        if name.isdigit() and (name == "0" or name[0] != "0") and int(name) < 4 and draw(st.booleans()):
            value = [value if i == int(name) else None for i in range(int(name) + 1)]
        else:
            value = {name: value, **draw(st.dictionaries(SEGMENT_NAME, st.integers(), max_size=2))}
    return value


@settings(max_examples=300)
@given(data=st.data(), names=st.lists(SEGMENT_NAME, min_size=1, max_size=4))
def test_a_segment_path_reads_what_segment_reads(data: st.DataObject, names: list[str]) -> None:
    path = compile_segment_path("$." + ".".join(names))
    assert path.singular
    for doc in (data.draw(doc_along(names)), data.draw(JSON)):
        assert path.evaluate(doc) == segment_get(doc, names)


@pytest.mark.parametrize("text", ["", "$."])
def test_the_empty_path_is_the_whole_event(text: str) -> None:
    doc = {"a": [1]}
    assert compile_segment_path(text).evaluate(doc) is doc


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("$.items[?@.price >]", 19),  # a filter with a typo: JSONPath was meant
        ("$.a.b*", 6),
        ("$.a.'x'", 5),
        ("$.a.(b)", 5),
        ("$.a..", 6),
        ("$.a. b", 5),
    ],
)
def test_a_path_meant_as_jsonpath_keeps_the_rfc_error(text: str, column: int) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_segment_path(text, "/m")
    assert caught.value.message.startswith("invalid JSONPath"), caught.value.message
    assert f"column {column}" in caught.value.message
