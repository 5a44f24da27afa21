"""FQL triggers mean what Segment's FQL means (issue 13, the FQL bullets).

Segment compiles FQL to its destination-subscriptions operators (``contains``,
``not_contains``, ``starts_with``, ``not_ends_with``, ``number_not_equals``, ``exists``
...). The unit tests below pin, per bullet, Segment's result over concrete events; the
property test checks generated FQL against :func:`segment_leaf`, a plain reading of the
operator table in ``reference/segment-compat.md`` ("Trigger strings (FQL subset)"),
written here independently of the engine's compiler.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.lang.trigger import Call, Compare, Not, compile_trigger, parse

ABSENT = object()  # a test-local marker: the field is not in the event


def matches(trigger: str, event: dict[str, Any]) -> bool:
    return compile_trigger(trigger).matches(event)


def with_field(value: Any, key: str = "f") -> dict[str, Any]:
    return {} if value is ABSENT else {key: value}


# --- Segment's operators, read from the reference table ---------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


NUMBER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def segment_leaf(value: Any, op: str, literal: Any) -> bool:
    """One condition as the table has it; ``value`` is ABSENT for a missing field.

    - ``f = "s"`` strict string equality; ``f != "s"`` its negation (true when missing)
    - a number literal: false unless the value is a number (not a bool), ``!=`` included
    - ``f = true`` / ``false``: the value must be that boolean; ``!=`` is its negation
    - ``f = null``: missing or null; ``f != null``: exists and not null
    - ``contains`` / ``match`` (``abc*`` prefix, ``*abc`` suffix) and their ``!`` forms:
      all false unless the value is a string
    """
    if op in ("contains", "!contains", "match", "!match"):
        if not isinstance(value, str):
            return False
        if op.endswith("contains"):
            hit = literal in value
        elif literal.endswith("*"):
            hit = value.startswith(literal[:-1])
        else:
            hit = value.endswith(literal[1:])
        return not hit if op.startswith("!") else hit
    if literal is None:
        exists = value is not ABSENT and value is not None
        return exists if op == "!=" else not exists
    if isinstance(literal, bool):
        # The table says nothing of `!= true`; docs/segment-compat.md decides: the negation of `= true`.
        equal = isinstance(value, bool) and value == literal
        return not equal if op == "!=" else equal
    if isinstance(literal, str):
        equal = isinstance(value, str) and value == literal
        return not equal if op == "!=" else equal
    return is_number(value) and NUMBER_OPS[op](value, literal)


# --- bullet 1: !contains / !match need a string ------------------------------------

VALUES = [ABSENT, None, "Order Completed", "Refund", "", 5, 0, True, False, ["Order Completed"], {"Order": 1}]
NEGATIONS = [
    # trigger, the value's test when the field holds a string s
    ('contains(f, "Order")', lambda s: "Order" in s),
    ('!contains(f, "Order")', lambda s: "Order" not in s),
    ('not contains(f, "Order")', lambda s: "Order" not in s),
    ('!(contains(f, "Order"))', lambda s: "Order" not in s),  # parentheses round one call: no group
    ('match(f, "Order*")', lambda s: s.startswith("Order")),
    ('!match(f, "Order*")', lambda s: not s.startswith("Order")),
    ('not match(f, "*Completed")', lambda s: not s.endswith("Completed")),
    ('!match(f, "*Completed")', lambda s: not s.endswith("Completed")),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize("trigger, on_string", NEGATIONS, ids=[n[0] for n in NEGATIONS])
def test_negated_contains_and_match_are_false_unless_the_field_is_a_string(
    trigger: str, on_string: Callable[[str], bool], value: Any
) -> None:
    expected = isinstance(value, str) and on_string(value)  # not_contains / not_starts_with / not_ends_with
    assert matches(trigger, with_field(value)) is expected


def test_negated_contains_and_match_on_concrete_events() -> None:
    assert matches('!contains(f, "x")', {}) is False
    assert matches('!contains(f, "x")', {"f": None}) is False
    assert matches('!contains(f, "x")', {"f": 5}) is False
    assert matches('!contains(f, "x")', {"f": "abc"}) is True
    assert matches('!match(f, "x*")', {}) is False
    assert matches('!match(f, "x*")', {"f": True}) is False
    assert matches('!match(f, "x*")', {"f": "abc"}) is True
    assert matches('!match(f, "x*")', {"f": "xyz"}) is False


@pytest.mark.parametrize(
    "trigger, expected",
    [
        ('!(contains(f, "x") or g = 1)', True),  # a group: plain boolean negation
        ('not (contains(f, "x") and true)', True),
        ('not not contains(f, "x")', True),  # the outer not negates a not_contains that is false
        ('!contains(f, "x") or g = 1', False),
    ],
)
def test_a_negated_group_is_plain_boolean_negation(trigger: str, expected: bool) -> None:
    assert matches(trigger, {}) is expected


def test_the_negation_of_a_call_stays_a_not_node() -> None:
    assert parse('!contains(f, "x")') == Not(Call("contains", ("f",), "x"))
    assert parse('!(contains(f, "x"))') == parse('!contains(f, "x")')


# --- bullet 2: number literals compare numbers only ------------------------------

NUMBER_VALUES = [ABSENT, None, "456", "", 456, 456.0, 455, 457.5, True, False, [456], {"v": 456}]


@pytest.mark.parametrize("value", NUMBER_VALUES, ids=repr)
@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_a_number_comparison_is_false_unless_the_value_is_a_number(op: str, value: Any) -> None:
    expected = is_number(value) and NUMBER_OPS[op](value, 456)
    assert matches(f"traits.value {op} 456", {"traits": with_field(value, "value")}) is expected


def test_number_comparisons_on_concrete_events() -> None:
    assert matches("traits.value != 456", {}) is False
    assert matches("traits.value != 456", {"traits": {"value": None}}) is False
    assert matches("traits.value != 456", {"traits": {"value": "456"}}) is False
    assert matches("traits.value != 456", {"traits": {"value": "457"}}) is False
    assert matches("traits.value != 456", {"traits": {"value": True}}) is False
    assert matches("traits.value != 456", {"traits": {"value": 457}}) is True
    assert matches("traits.value != 456", {"traits": {"value": 456}}) is False
    assert matches("f = 1", {"f": True}) is False  # a boolean is not a number
    assert matches("f != 0", {"f": False}) is False


@pytest.mark.parametrize(
    "trigger, event, expected",
    [
        ('f != "s"', {}, True),  # Segment's string rule: != is true when missing
        ('f != "s"', {"f": None}, True),
        ('f != "s"', {"f": 5}, True),
        ('f != "s"', {"f": "s"}, False),
        ("not (f != 5)", {}, True),  # plain negation of a comparison that is false
        ("not (f != 5)", {"f": "5"}, True),
        ("not (f != 5)", {"f": 5}, True),
        ("not (f != 5)", {"f": 6}, False),
        ("!(f < 5)", {}, True),
        ("!(f = 5)", {"f": 5}, False),
        ("f != null", {}, False),
        ("f != null", {"f": 0}, True),
    ],
)
def test_string_and_null_inequality_and_negated_comparisons(trigger: str, event: dict[str, Any], expected: bool) -> None:
    assert matches(trigger, event) is expected


# --- bullet 3: backslash escapes in field paths ----------------------------------


@pytest.mark.parametrize(
    "trigger, path",
    [
        (r'properties.property\ 1 = "x"', ("properties", "property 1")),
        (r"properties.a\.b = 1", ("properties", "a.b")),
        (r'properties.a\\b = "x"', ("properties", "a\\b")),
        (r'properties.q\"t = "x"', ("properties", 'q"t')),
        (r'context.user\-agent\ \(x\) = "x"', ("context", "user-agent (x)")),
        (r'properties.a\.b\.c.d = "x"', ("properties", "a.b.c", "d")),
    ],
)
def test_escaped_field_paths_parse_to_the_escaped_key(trigger: str, path: tuple[str, ...]) -> None:
    tree = parse(trigger)
    assert isinstance(tree, Compare) and tree.path == path


def test_escaped_field_paths_read_the_escaped_key() -> None:
    assert matches(r'properties.property\ 1 = "x"', {"properties": {"property 1": "x"}}) is True
    assert matches(r'properties.property\ 1 = "x"', {"properties": {"property": "x"}}) is False
    assert matches(r"properties.a\.b = 1", {"properties": {"a.b": 1}}) is True
    assert matches(r"properties.a\.b = 1", {"properties": {"a": {"b": 1}}}) is False  # a.b is one key
    assert matches(r'contains(properties.property\ 1, "x")', {"properties": {"property 1": "axb"}}) is True
    assert matches(r'!match(properties.property\ 1, "x*")', {"properties": {"property 1": "abc"}}) is True
    assert matches(r'!match(properties.property\ 1, "x*")', {"properties": {}}) is False
    assert matches(r'properties.a\.b != 1 and type = "track"', {"type": "track", "properties": {"a.b": 2}}) is True


# --- bullet 4: number literals with a leading + ---------------------------------


@pytest.mark.parametrize("literal, value", [("+5", 5), ("+1.5", 1.5), ("+0", 0), ("+1e3", 1000.0), ("+2.5E-1", 0.25)])
def test_plus_signed_numbers_parse_as_numbers(literal: str, value: int | float) -> None:
    tree = parse(f"f = {literal}")
    assert isinstance(tree, Compare) and repr(tree.value) == repr(value)
    assert matches(f"f = {literal}", {"f": value}) is True
    assert matches(f"f >= {literal}", {"f": str(value)}) is False  # still a number comparison
    assert matches(f"f!={literal}", {"f": value}) is False


# --- what does not parse keeps its column -----------------------------------------


@pytest.mark.parametrize(
    "text, offset, fragment",
    [
        ("properties.a\\", 12, "a backslash at the end of a field"),
        ("f = +x", 4, "a plus sign must be followed by digits"),
        ("f = +-5", 4, "plus sign"),
        ("f = ++5", 4, "plus sign"),
        ("f = +5x", 4, 'malformed number "+5x"'),
        ("f = -x", 4, "minus sign"),
        (r'properties.a\ b "x"', 16, "expected an operator"),
        (r'!contains(properties.a\ b "x")', 26, '"," after the field in contains()'),
        ("f < +", 4, "plus sign"),
    ],
)
def test_errors_keep_their_column(text: str, offset: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_trigger(text, "/t")
    assert fragment in caught.value.message
    assert caught.value.offset == offset


# --- property: generated FQL against Segment's operators ---------------------------

FIELDS: list[tuple[str, tuple[str, ...]]] = [
    ("type", ("type",)),
    ("event", ("event",)),
    ("properties.price", ("properties", "price")),
    (r"properties.property\ 1", ("properties", "property 1")),
    (r"properties.a\.b", ("properties", "a.b")),
    ("traits.value", ("traits", "value")),
]
WORDS = ["", "a", "b", "ab", "5", "A"]
STRINGS = st.lists(st.sampled_from(WORDS), max_size=2).map("".join)
NUMBERS = st.sampled_from([0, 1, -1, 5, 0.5, -1.5, 5.0, 1e3])
COMPARE_OPS = ["=", "!=", "<", "<=", ">", ">="]
FUNCTION_OPS = ["contains", "!contains", "match", "!match"]


@dataclass(frozen=True)
class Leaf:
    field: int  # index into FIELDS
    op: str
    literal: Any
    text: str


@dataclass(frozen=True)
class Group:
    conjunction: bool  # and / or
    children: tuple[Leaf | Group, ...]


Expr = Leaf | Group


def render_number(value: int | float, plus: bool) -> str:
    text = repr(value)
    return "+" + text if plus and not text.startswith("-") else text


@st.composite
def leaves(draw: st.DrawFn) -> Leaf:
    field = draw(st.integers(0, len(FIELDS) - 1))
    name = FIELDS[field][0]
    op = draw(st.sampled_from(COMPARE_OPS + FUNCTION_OPS))
    if op in FUNCTION_OPS:
        word = draw(STRINGS)
        argument = word if op.endswith("contains") else draw(st.sampled_from([word + "*", "*" + word]))
        quoted = '"' + argument + '"'
        return Leaf(field, op, argument, f"{op}({name}, {quoted})")
    if op in ("=", "!="):
        kinds = ["string", "number", "null", "bool"]
        kind = draw(st.sampled_from(kinds))
    else:
        kind = "number"
    literal: Any
    if kind == "string":
        literal = draw(STRINGS)
        quote = draw(st.sampled_from(['"', "'"]))
        shown = quote + literal + quote  # WORDS hold no quote or backslash
    elif kind == "number":
        literal = draw(NUMBERS)
        shown = render_number(literal, draw(st.booleans()))
    elif kind == "bool":
        literal = draw(st.booleans())
        shown = "true" if literal else "false"
    else:
        literal, shown = None, "null"
    space = draw(st.sampled_from(["", " "]))
    return Leaf(field, op, literal, f"{name}{space}{op}{space}{shown}")


exprs = st.recursive(
    leaves(),
    lambda children: st.builds(Group, st.booleans(), st.lists(children, min_size=2, max_size=3).map(tuple)),
    max_leaves=8,
)


def render(expr: Expr, draw: Callable[[st.SearchStrategy[Any]], Any]) -> str:
    """FQL text: an ``or`` inside an ``and`` needs parentheses; others get some at random."""
    if isinstance(expr, Leaf):
        return expr.text
    parts = []
    for child in expr.children:
        text = render(child, draw)
        needed = isinstance(child, Group) and expr.conjunction and not child.conjunction
        parts.append(f"({text})" if needed or draw(st.integers(0, 3)) == 0 else text)
    return (" and " if expr.conjunction else " or ").join(parts)


def segment_value(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = event
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return ABSENT
        node = node[key]
    return node


def segment_eval(expr: Expr, event: dict[str, Any]) -> bool:
    if isinstance(expr, Leaf):
        return segment_leaf(segment_value(event, FIELDS[expr.field][1]), expr.op, expr.literal)
    results = [segment_eval(child, event) for child in expr.children]
    return all(results) if expr.conjunction else any(results)


EVENT_VALUES = st.one_of(STRINGS, NUMBERS, st.integers(-2, 6), st.booleans(), st.none(), st.just([1]), st.just({"a": 1}))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for _, path in FIELDS:
        if draw(st.booleans()):
            continue  # missing
        target = event
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = draw(EVENT_VALUES)
    return event


@settings(max_examples=400, deadline=None)
@given(expr=exprs, data=st.data(), samples=st.lists(events(), min_size=1, max_size=4))
def test_generated_fql_agrees_with_segments_operators(expr: Expr, data: st.DataObject, samples: list[dict[str, Any]]) -> None:
    text = render(expr, data.draw)
    trigger = compile_trigger(text)
    for event in samples:
        assert trigger.matches(event) is segment_eval(expr, event), (text, event)
