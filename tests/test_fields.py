"""Field types, declared coercions and per-event validation (SPEC section 7).

The compiled checks are compared with ``jsonschema`` (Draft 2020-12) as an oracle for
plain types and constraints, and with plain reference implementations for coercions
and datetime normalisation.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.errors import ConfigError
from engine.lang.fields import FieldProblem, FieldSet, compile_fields
from engine.lang.missing import MISSING
from tests.conftest import REPO

SEND_EVENT = REPO / "destinations" / "metronome" / "actions" / "send_event.yaml"


def check(decl: dict[str, Any], value: Any, name: str = "f") -> tuple[dict[str, Any], list[FieldProblem]]:
    """Check a one-field payload against a one-field declaration."""
    return compile_fields({name: decl}).check({name: value})


def accepted(decl: dict[str, Any], value: Any) -> Any:
    """The value as it will be sent; fails the test if it has a problem."""
    out, problems = check(decl, value)
    assert problems == [], problems
    return out["f"]


def problem(decl: dict[str, Any], value: Any) -> FieldProblem:
    """The single problem the value has."""
    out, problems = check(decl, value)
    assert len(problems) == 1, problems
    assert problems[0].field == "f" and problems[0].message.startswith("f")
    return problems[0]


# --- types -----------------------------------------------------------------------------

TYPE_CASES = {
    "string": (["", "abc", "é 😀"], [1, 1.5, True, {}, [], None]),
    "number": ([0, -3, 1.5, 10**30, 2.0], ["1", True, False, {}, [], None, math.nan, math.inf]),
    "integer": ([0, -3, 10**30, 4.0], [1.5, "1", True, {}, [], None, math.inf, math.nan]),
    "boolean": ([True, False], [0, 1, "true", None, [], {}]),
    "object": ([{}, {"a": [1]}], [[], "x", 1, None, True]),
    "array": ([[], [1, "a", None]], [{}, "x", 1, None, False]),
}


@pytest.mark.parametrize("type_name", TYPE_CASES)
def test_each_type_accepts_its_values_and_rejects_others(type_name: str) -> None:
    good, bad = TYPE_CASES[type_name]
    decl = {"type": type_name, "required": True}
    for value in good:
        assert accepted(decl, value) == value
    for value in bad:
        found = problem(decl, value)
        assert found.rule == ("nullable" if value is None else "type"), found


def test_integer_emits_integral_floats_as_int() -> None:
    out = accepted({"type": "integer"}, 3.0)
    assert out == 3 and type(out) is int


def test_number_keeps_floats_and_ints_as_they_are() -> None:
    assert type(accepted({"type": "number"}, 3.0)) is float
    assert type(accepted({"type": "number"}, 3)) is int


def test_type_message_names_field_value_and_the_coercion_that_would_fit() -> None:
    found = problem({"type": "string", "required": True}, 42)
    assert found == FieldProblem(
        "f", "type", "f: expected a string but got the number 42 (declare coerce: [number_to_string] to accept numbers)"
    )
    assert "coerce: [boolean_to_string]" in problem({"type": "string"}, True).message
    assert "coerce: [string_to_number]" in problem({"type": "number"}, "4").message
    assert "coerce: [string_to_integer]" in problem({"type": "integer"}, "4").message
    assert "coerce: [string_to_boolean]" in problem({"type": "boolean"}, "true").message
    assert problem({"type": "integer"}, 1.5).message == "f: expected an integer but got the number 1.5"
    assert "the object {\"a\": 1}" in problem({"type": "array"}, {"a": 1}).message


def test_long_values_are_cut_in_messages() -> None:
    message = problem({"type": "integer"}, "x" * 500).message
    assert '"xxxx' in message and "..." in message and len(message) < 200


# --- null and required -------------------------------------------------------------------


def test_null_is_kept_for_optional_fields_and_refused_for_required_ones() -> None:
    assert check({"type": "string"}, None) == ({"f": None}, [])
    found = problem({"type": "string", "required": True}, None)
    assert found.rule == "nullable" and "null is not allowed" in found.message and "nullable: true" in found.message


def test_nullable_overrides_the_default_both_ways() -> None:
    assert problem({"type": "string", "nullable": False}, None).rule == "nullable"
    assert check({"type": "string", "required": True, "nullable": True}, None) == ({"f": None}, [])


def test_null_to_missing_drops_the_field() -> None:
    decl = {"type": "object", "coerce": ["null_to_missing"]}
    assert check(decl, None) == ({}, [])
    assert check(decl, {"a": 1}) == ({"f": {"a": 1}}, [])


def test_required_field_dropped_by_null_to_missing_is_reported() -> None:
    fields = compile_fields(
        {"f": {"type": "string", "required": True, "coerce": ["null_to_missing"]}}, sources={"f": "$.userId"}
    )
    assert fields.check({"f": None}) == (
        {},
        [FieldProblem("f", "required", "f: required, but its mapping $.userId gave null, which coerce: [null_to_missing] drops")],
    )


def test_missing_required_field_names_the_expression() -> None:
    decls = {"customer_id": {"type": "string", "required": True}, "note": {"type": "string"}}
    fields = compile_fields(decls, sources={"customer_id": "@coalesce($.userId, $.anonymousId)"})
    assert fields.check({}) == (
        {},
        [
            FieldProblem(
                "customer_id",
                "required",
                "customer_id: required, but its mapping @coalesce($.userId, $.anonymousId) gave no value for this event",
            )
        ],
    )


def test_missing_required_field_without_a_mapping_says_to_map_it() -> None:
    decls = {"f": {"type": "string", "required": True}}
    assert "nothing maps it" in compile_fields(decls, sources={}).check({})[1][0].message
    assert compile_fields(decls).check({})[1][0].message == "f: required, but the payload has no value for it"


# --- constraints -------------------------------------------------------------------------

# (declaration, a value that passes, a value that fails, the rule, a fragment of the message)
CONSTRAINTS = [
    ({"type": "string", "minLength": 2}, "ab", "a", "minLength", 'f: 1 character is under minLength 2 ("a")'),
    ({"type": "string", "maxLength": 3}, "abc", "abcd", "maxLength", 'f: 4 characters is over maxLength 3 ("abcd")'),
    ({"type": "string", "pattern": "^[A-Z]+$"}, "AB", "Ab", "pattern", 'f: "Ab" does not match pattern ^[A-Z]+$'),
    ({"type": "string", "pattern": "[0-9]"}, "a1b", "ab", "pattern", '"ab" does not match pattern [0-9]'),
    ({"type": "string", "enum": ["free", "pro"]}, "pro", "gold", "enum", 'f: "gold" is not one of the enum values "free", "pro"'),
    ({"type": "integer", "enum": [1, 2]}, 2.0, 3, "enum", "f: 3 is not one of the enum values 1, 2"),
    ({"type": "boolean", "enum": [True]}, True, False, "enum", "false is not one of the enum values true"),
    ({"type": "object", "enum": [{"a": 1}]}, {"a": 1.0}, {"a": True}, "enum", '{"a": true} is not one of'),
    ({"type": "array", "enum": [[1, "x"]]}, [1, "x"], ["x", 1], "enum", '["x", 1] is not one of'),
    ({"type": "number", "minimum": 0}, 0, -0.5, "minimum", "f: -0.5 is under minimum 0"),
    ({"type": "integer", "maximum": 10}, 10, 11, "maximum", "f: 11 is over maximum 10"),
    ({"type": "number", "maximum": 1.5}, 1.5, 2, "maximum", "f: 2 is over maximum 1.5"),
    ({"type": "object", "minProperties": 1}, {"a": 1}, {}, "minProperties", "f: 0 keys is under minProperties 1 ({})"),
    ({"type": "object", "maxProperties": 1}, {"a": 1}, {"a": 1, "b": 2}, "maxProperties", "f: 2 keys is over maxProperties 1"),
    ({"type": "array", "minItems": 1}, [0], [], "minItems", "f: 0 items is under minItems 1 ([])"),
    ({"type": "array", "maxItems": 1}, [0], [0, 1], "maxItems", "f: 2 items is over maxItems 1 ([0, 1])"),
    ({"type": "array", "items": {"type": "integer"}}, [1, 2], [1, "2"], "type", 'f[1]: expected an integer but got the string "2"'),
    ({"type": "array", "items": {"type": "array", "items": {"type": "string", "maxLength": 1}}}, [["a"]], [["a"], ["b", "cd"]], "maxLength", "f[1][1]: 2 characters is over maxLength 1"),
    ({"type": "string", "format": "email"}, "ann.lee+x@mail.example.com", "ann@localhost", "format", '"ann@localhost" is not an email address'),
    ({"type": "string", "format": "uri"}, "https://example.com/a?b=c#d", "example.com/a", "format", '"example.com/a" is not an absolute URI'),
    ({"type": "string", "format": "uuid"}, "123E4567-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456426614174000", "format", "is not a UUID"),
]


@pytest.mark.parametrize(("decl", "good", "bad", "rule", "message"), CONSTRAINTS)
def test_constraint(decl: dict[str, Any], good: Any, bad: Any, rule: str, message: str) -> None:
    assert accepted(decl, good) == good
    found = problem(decl, bad)
    assert found.rule == rule
    assert message in found.message


def test_transaction_id_message_has_length_rule_and_value() -> None:
    found = problem({"type": "string", "maxLength": 128}, "t" * 130)
    assert found.message.startswith("f: 130 characters is over maxLength 128 (\"ttt")


@pytest.mark.parametrize(
    "text",
    ["mailto:a@b.c", "urn:isbn:0451450523", "http://[::1]:8080/x%20y", "file:///tmp/a"],
)
def test_uri_format_accepts_absolute_uris(text: str) -> None:
    assert accepted({"type": "string", "format": "uri"}, text) == text


@pytest.mark.parametrize("text", ["/relative", "http://a b", "http://x/%zz", "1http://x", "http://é.com", ""])
def test_uri_format_rejects_others(text: str) -> None:
    assert problem({"type": "string", "format": "uri"}, text).rule == "format"


@pytest.mark.parametrize("text", ["a@b", "@b.com", "a@.com", "a..b@c.com", "a b@c.com", "a@b.com.", "a@-b.com", "a@b@c.com"])
def test_email_format_rejects_malformed_addresses(text: str) -> None:
    assert problem({"type": "string", "format": "email"}, text).rule == "format"


def test_string_constraints_run_in_order_and_report_the_first_broken_rule() -> None:
    decl = {"type": "string", "maxLength": 2, "pattern": "^a", "enum": ["ab"]}
    assert problem(decl, "bcd").rule == "maxLength"
    assert problem(decl, "bc").rule == "pattern"
    assert problem(decl, "aa").rule == "enum"


def test_array_items_are_coerced_and_null_elements_can_be_dropped() -> None:
    decl = {"type": "array", "items": {"type": "string", "coerce": ["number_to_string", "null_to_missing"]}}
    assert accepted(decl, [1, None, "a", 2.5]) == ["1", "a", "2.5"]
    assert problem({"type": "array", "items": {"type": "string"}}, ["a", None]).message.startswith("f[1]: null is not allowed")
    assert accepted({"type": "array", "items": {"type": "string", "nullable": True}}, [None]) == [None]


# --- coercions ---------------------------------------------------------------------------

COERCIONS = [
    ("string", "number_to_string", 42, "42"),
    ("string", "number_to_string", -7, "-7"),
    ("string", "number_to_string", 1.5, "1.5"),
    ("string", "number_to_string", 42.0, "42"),
    ("string", "number_to_string", 1e20, "100000000000000000000"),
    ("string", "boolean_to_string", True, "true"),
    ("string", "boolean_to_string", False, "false"),
    ("number", "string_to_number", "42", 42),
    ("number", "string_to_number", "-1.25", -1.25),
    ("number", "string_to_number", "2e3", 2000.0),
    ("integer", "string_to_integer", "-12", -12),
    ("number", "string_to_integer", "7", 7),
    ("boolean", "string_to_boolean", "true", True),
    ("boolean", "string_to_boolean", "false", False),
]


@pytest.mark.parametrize(("type_name", "coercion", "value", "expected"), COERCIONS)
def test_coercion(type_name: str, coercion: str, value: Any, expected: Any) -> None:
    out = accepted({"type": type_name, "coerce": [coercion]}, value)
    assert out == expected and type(out) is type(expected)


def test_coercions_apply_only_to_their_source_type() -> None:
    assert problem({"type": "string", "coerce": ["number_to_string"]}, True).rule == "type"
    assert problem({"type": "string", "coerce": ["boolean_to_string"]}, 1).rule == "type"
    assert accepted({"type": "string", "coerce": ["number_to_string"]}, "already") == "already"
    assert accepted({"type": "integer", "coerce": ["string_to_integer"]}, 5) == 5


def test_coerced_values_are_then_checked_by_the_constraints() -> None:
    found = problem({"type": "integer", "coerce": ["string_to_integer"], "minimum": 0}, "-5")
    assert (found.rule, found.message) == ("minimum", "f: -5 is under minimum 0")
    assert problem({"type": "string", "coerce": ["number_to_string"], "maxLength": 2}, 123).rule == "maxLength"


@pytest.mark.parametrize(
    ("type_name", "coercion", "text"),
    [
        ("number", "string_to_number", "12a"),
        ("number", "string_to_number", " 1"),
        ("number", "string_to_number", "NaN"),
        ("number", "string_to_number", "1e999"),
        ("number", "string_to_number", "0x10"),
        ("integer", "string_to_integer", "1.0"),
        ("integer", "string_to_integer", "007"),
        ("integer", "string_to_integer", "+3"),
        ("integer", "string_to_integer", "9" * 5000),
        ("boolean", "string_to_boolean", "True"),
        ("boolean", "string_to_boolean", "1"),
    ],
)
def test_unparseable_string_is_a_coerce_problem_naming_the_value(type_name: str, coercion: str, text: str) -> None:
    found = problem({"type": type_name, "coerce": [coercion]}, text)
    assert found.rule == "coerce"
    assert found.message.startswith(f"f: {coercion} cannot convert {json.dumps(text)[:20]}")


def test_number_to_string_refuses_non_finite_numbers() -> None:
    assert problem({"type": "string", "coerce": ["number_to_string"]}, math.inf).rule == "coerce"


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
@settings(max_examples=300)
def test_number_to_string_round_trips_and_writes_integral_numbers_as_integers(number: int | float) -> None:
    text = accepted({"type": "string", "coerce": ["number_to_string"]}, number)
    assert json.loads(text) == number
    if number == int(number):
        assert text == str(int(number))


def _reference_parse(text: str) -> Any:
    """A JSON number parsed by the json module, or None when the text is not exactly one."""
    if text != text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=lambda name: None)
    except ValueError:
        return None
    return value if type(value) in (int, float) and math.isfinite(value) else None


NUMBERISH = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.text(alphabet="0123456789+-.eE xIfinityNa_", max_size=8),
    st.integers().map(str),
    st.floats().map(repr),
)


@given(NUMBERISH)
@settings(max_examples=300)
def test_string_to_number_and_integer_match_json_number_parsing(text: str) -> None:
    expected = _reference_parse(text)
    out, problems = check({"type": "number", "coerce": ["string_to_number"]}, text)
    if expected is None:
        assert [p.rule for p in problems] == ["coerce"]
    else:
        assert problems == [] and out["f"] == expected and type(out["f"]) is type(expected)
    out, problems = check({"type": "integer", "coerce": ["string_to_integer"]}, text)
    if type(expected) is int:
        assert problems == [] and out["f"] == expected
    else:
        assert [p.rule for p in problems] == ["coerce"]


# --- datetime ----------------------------------------------------------------------------

DATETIMES = [
    ("2026-11-26T10:00:00.000Z", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26t10:00:00z", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26 10:00:00Z", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00Z", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00:00.1Z", "2026-11-26T10:00:00.100Z"),
    ("2026-11-26T10:00:00.12Z", "2026-11-26T10:00:00.120Z"),
    ("2026-11-26T10:00:00.123456789Z", "2026-11-26T10:00:00.123Z"),
    ("2026-11-26T10:00:00.9999Z", "2026-11-26T10:00:00.999Z"),
    ("2026-11-26T10:00:00,5Z", "2026-11-26T10:00:00.500Z"),
    ("2026-11-26T12:00:00+02:00", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T05:00:00-0500", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T15:30:00+05:30", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T11:00:00+01", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00:00-00:00", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00:00+00:00", "2026-11-26T10:00:00.000Z"),
    ("2027-01-01T01:00:00.999+02:00", "2026-12-31T23:00:00.999Z"),
    ("2024-02-29T23:00:00-02:00", "2024-03-01T01:00:00.000Z"),
    ("2000-02-29T00:00:00Z", "2000-02-29T00:00:00.000Z"),
    ("2026-12-31T23:59:60Z", "2026-12-31T23:59:59.999Z"),
    ("2026-06-30T23:59:60.5Z", "2026-06-30T23:59:59.999Z"),
    ("2027-01-01T01:59:60+02:00", "2026-12-31T23:59:59.999Z"),
    ("0999-05-01T00:00:00+01:00", "0999-04-30T23:00:00.000Z"),
]


@pytest.mark.parametrize(("text", "expected"), DATETIMES)
def test_datetime_is_normalised_to_utc_milliseconds(text: str, expected: str) -> None:
    assert accepted({"type": "datetime", "required": True}, text) == expected


def test_canonical_datetime_passes_unchanged_as_the_same_object() -> None:
    text = "".join(["2026-11-26T10:00:00.000", "Z"])
    assert accepted({"type": "datetime"}, text) is text


REJECTED_DATETIMES = [
    ("2026-11-26T10:00:00", "datetime", "has no UTC offset; send an offset such as Z or +02:00, or convert it explicitly with @timestamp"),
    ("2026-11-26T10:00:00.123", "datetime", "has no UTC offset"),
    ("2026-11-26", "datetime", "is a date without a time"),
    ("1764151200", "datetime", "is a number in a string"),
    ("1764151200000", "datetime", "convert it with @timestamp (from: unix_s or unix_ms)"),
    ("1764151200.5", "datetime", "is a number in a string"),
    ("2026-02-29T10:00:00Z", "datetime", "is not a real date and time (day is out of range for month)"),
    ("1900-02-29T10:00:00Z", "datetime", "is not a real date and time"),
    ("2026-04-31T10:00:00Z", "datetime", "is not a real date and time"),
    ("2026-13-01T10:00:00Z", "datetime", "is not a real date and time (month must be in 1..12)"),
    ("2026-11-26T24:00:00Z", "datetime", "is not a real date and time"),
    ("2026-11-26T10:61:00Z", "datetime", "is not a real date and time"),
    ("0000-01-01T00:00:00Z", "datetime", "is not a real date and time (year 0 is out of range)"),
    ("2026-11-26T10:00:00+25:00", "datetime", 'has "+25:00" where a UTC offset'),
    ("2026-11-26T10:00:00 UTC", "datetime", 'has " UTC" where a UTC offset'),
    ("2026-11-26T10:00:00Z\n", "datetime", "where a UTC offset"),
    ("26-11-2026T10:00:00Z", "datetime", "is not an RFC 3339 date-time; send one such as 2026-11-26T10:00:00Z"),
    ("+02026-11-26T10:00:00Z", "datetime", "is not an RFC 3339 date-time"),
    ("20261126T100000Z", "datetime", "is not an RFC 3339 date-time"),
    ("Thu, 26 Nov 2026 10:00:00 GMT", "datetime", "is not an RFC 3339 date-time"),
    ("２０２６-11-26T10:00:00Z", "datetime", "is not an RFC 3339 date-time"),
    ("0001-01-01T00:00:00+00:01", "datetime", "is outside years 0001-9999 once converted to UTC"),
    ("9999-12-31T23:59:59-00:01", "datetime", "is outside years 0001-9999 once converted to UTC"),
    (1764151200, "type", "expected a datetime string but got the number 1764151200 (a number is not a time: convert it explicitly with @timestamp"),
    (1764151200.5, "type", "convert it explicitly with @timestamp"),
    (True, "type", "expected a datetime string but got the boolean true"),
    ({"$date": 1}, "type", "expected a datetime string but got the object"),
]


@pytest.mark.parametrize(("value", "rule", "message"), REJECTED_DATETIMES)
def test_datetime_rejections_say_what_to_do(value: Any, rule: str, message: str) -> None:
    found = problem({"type": "datetime", "required": True}, value)
    assert found.rule == rule
    assert json.dumps(value, ensure_ascii=False)[:30] in found.message
    assert message in found.message


def test_naive_datetime_message_matches_the_contract() -> None:
    found = problem({"type": "datetime"}, "2026-11-26T10:00:00")
    assert found.message == (
        'f: "2026-11-26T10:00:00" has no UTC offset; send an offset such as Z or +02:00, '
        "or convert it explicitly with @timestamp"
    )


@st.composite
def datetime_texts(draw: st.DrawFn) -> tuple[str, datetime, int, str]:
    """(text, local time, offset in minutes, fraction digits) for a datetime in many spellings."""
    local = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda d: d.replace(microsecond=0)))
    fraction = draw(st.text(alphabet="0123456789", max_size=9))
    seconds = draw(st.booleans()) or bool(fraction)
    offset = draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1))
    hours, minutes = divmod(abs(offset), 60)
    sign = "-" if offset < 0 else "+"
    zone = draw(
        st.sampled_from(
            ([("Z", "z")[draw(st.integers(0, 1))]] if offset == 0 else [])
            + [f"{sign}{hours:02d}:{minutes:02d}", f"{sign}{hours:02d}{minutes:02d}"]
            + ([f"{sign}{hours:02d}"] if minutes == 0 else [])
        )
    )
    if not seconds:
        local = local.replace(second=0)
    separator = draw(st.sampled_from("Tt "))
    text = f"{local.date().isoformat()}{separator}{local:%H:%M}"
    if seconds:
        text += f":{local:%S}" + (f"{draw(st.sampled_from('.,'))}{fraction}" if fraction else "")
    return text + zone, local, offset, fraction


@given(datetime_texts())
@settings(max_examples=300)
def test_datetime_normalisation_matches_a_reference(case: tuple[str, datetime, int, str]) -> None:
    text, local, offset, fraction = case
    aware = local.replace(tzinfo=timezone(timedelta(minutes=offset)))
    millis = int((fraction + "000")[:3])
    try:
        utc = aware.astimezone(timezone.utc) + timedelta(milliseconds=millis)
    except OverflowError:
        utc = None
    out, problems = check({"type": "datetime"}, text)
    if utc is None or not 1 <= utc.year <= 9999:
        assert [p.rule for p in problems] == ["datetime"]
        return
    assert problems == []
    expected = f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
    assert out["f"] == expected


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
@settings(max_examples=200)
def test_canonical_output_is_a_fixed_point(moment: datetime) -> None:
    once = accepted({"type": "datetime"}, f"{moment.isoformat()}+00:00")
    assert accepted({"type": "datetime"}, once) == once
    assert once == f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


# --- the whole payload -------------------------------------------------------------------


def metronome_fields() -> FieldSet:
    decls = yaml.safe_load(SEND_EVENT.read_text(encoding="utf-8"))["fields"]
    return compile_fields(decls, "/fields", {"customer_id": "@coalesce($.userId, $.anonymousId)", "timestamp": "$.timestamp"})


def test_metronome_payload_is_checked_and_normalised() -> None:
    payload = {
        "transaction_id": "m1",
        "customer_id": 1234,
        "timestamp": "2026-11-26T11:00:00+01:00",
        "event_type": "api_call",
        "properties": None,
    }
    before = copy.deepcopy(payload)
    out, problems = metronome_fields().check(payload)
    assert problems == []
    assert out == {"transaction_id": "m1", "customer_id": "1234", "timestamp": "2026-11-26T10:00:00.000Z", "event_type": "api_call"}
    assert payload == before


def test_problems_follow_declaration_order_and_bad_fields_keep_their_input() -> None:
    payload = {"properties": [], "event_type": "", "timestamp": "2026-11-26T10:00:00", "transaction_id": "t" * 129}
    out, problems = metronome_fields().check(payload)
    assert [(p.field, p.rule) for p in problems] == [
        ("transaction_id", "maxLength"),
        ("customer_id", "required"),
        ("timestamp", "datetime"),
        ("event_type", "minLength"),
        ("properties", "type"),
    ]
    assert list(out) == ["transaction_id", "timestamp", "event_type", "properties"]
    assert out["timestamp"] == "2026-11-26T10:00:00"


def test_check_never_mutates_its_input() -> None:
    fields = compile_fields(
        {
            "tags": {"type": "array", "items": {"type": "string", "coerce": ["number_to_string", "null_to_missing"]}},
            "n": {"type": "integer", "coerce": ["string_to_integer"]},
            "gone": {"type": "object", "coerce": ["null_to_missing"]},
        }
    )
    payload = {"tags": [1, None, "x"], "n": "3", "gone": None}
    before = copy.deepcopy(payload)
    out, problems = fields.check(payload)
    assert (out, problems) == ({"tags": ["1", "x"], "n": 3}, [])
    assert payload == before and out is not payload


def test_describe_gives_readable_types_for_the_docs() -> None:
    fields = compile_fields(
        {
            "tags": {"type": "array", "items": {"type": "string", "format": "email"}, "description": "Who", "label": "Tags"},
            "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}, "required": True},
            "any": {"type": "array"},
        }
    )
    assert fields.describe() == [
        {"name": "tags", "label": "Tags", "type": "array of string (email)", "required": False, "description": "Who"},
        {"name": "grid", "label": "grid", "type": "array of array of integer", "required": True, "description": ""},
        {"name": "any", "label": "any", "type": "array", "required": False, "description": ""},
    ]


def test_describe_of_the_metronome_action() -> None:
    described = metronome_fields().describe()
    assert [(d["name"], d["type"], d["required"]) for d in described] == [
        ("transaction_id", "string", True),
        ("customer_id", "string", True),
        ("timestamp", "datetime", True),
        ("event_type", "string", True),
        ("properties", "object", False),
    ]
    assert described[0]["label"] == "Transaction ID"


# --- compile-time errors -----------------------------------------------------------------

CONFIG_ERRORS = [
    ({"type": "strng"}, "/type", "needs a type, one of string, number"),
    ({"description": "x"}, "", "it has none"),
    ({"type": "string", "coerce": ["string_to_number"]}, "/coerce/0", "string_to_number gives a number, which does not fit type string"),
    ({"type": "integer", "coerce": ["string_to_number"]}, "/coerce/0", "does not fit type integer"),
    ({"type": "datetime", "coerce": ["null_to_missing", "number_to_string"]}, "/coerce/1", "use @timestamp"),
    ({"type": "boolean", "coerce": ["string_to_bool"]}, "/coerce/0", 'unknown coercion "string_to_bool"'),
    ({"type": "string", "coerce": ["number_to_string", "number_to_string"]}, "/coerce/1", "same source type"),
    ({"type": "number", "coerce": ["string_to_integer", "string_to_number"]}, "/coerce/1", "same source type"),
    ({"type": "string", "coerce": ["null_to_missing", "null_to_missing"]}, "/coerce/1", "listed twice"),
    ({"type": "string", "nullable": True, "coerce": ["null_to_missing"]}, "/coerce/0", "contradicts nullable: true"),
    ({"type": "string", "minLength": 5, "maxLength": 4}, "/maxLength", "maxLength 4 is below minLength 5"),
    ({"type": "number", "minimum": 2, "maximum": 1.5}, "/maximum", "maximum 1.5 is below minimum 2"),
    ({"type": "object", "minProperties": 3, "maxProperties": 1}, "/maxProperties", "no value could pass"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "/maxItems", "no value could pass"),
    ({"type": "string", "maxLength": -1}, "/maxLength", "maxLength must be a whole number >= 0, not -1"),
    ({"type": "string", "maxLength": "5"}, "/maxLength", 'not "5"'),
    ({"type": "number", "minimum": True}, "/minimum", "minimum must be a number"),
    ({"type": "string", "required": "yes"}, "/required", "required must be true or false"),
    ({"type": "integer", "maxLength": 3}, "/maxLength", "maxLength does not apply to type integer, only to string"),
    ({"type": "string", "minimum": 3}, "/minimum", "only to number and integer"),
    ({"type": "string", "items": {"type": "string"}}, "/items", "items does not apply to type string"),
    ({"type": "number", "format": "uri"}, "/format", "format does not apply"),
    ({"type": "string", "window": {"past": "1d", "future": "1h"}}, "/window", "window does not apply to type string"),
    ({"type": "string", "format": "ipv4"}, "/format", 'unknown format "ipv4"'),
    ({"type": "integer", "enum": [1, 1.5]}, "/enum/1", "enum value 1.5 could never pass this field: expected an integer"),
    ({"type": "integer", "enum": [True]}, "/enum/0", "expected an integer but got the boolean true"),
    ({"type": "string", "enum": ["abc"], "maxLength": 2}, "/enum/0", "3 characters is over maxLength 2"),
    ({"type": "string", "coerce": ["number_to_string"], "enum": [42]}, "/enum/0", "expected a string but got the number 42"),
    ({"type": "string", "enum": [None]}, "/enum/0", "declare nullable: true"),
    ({"type": "string", "enum": []}, "/enum", "enum lists no values"),
    ({"type": "datetime", "enum": ["2026-11-26T10:00:00"]}, "/enum/0", "has no UTC offset"),
    ({"type": "array", "items": {"type": "integer", "minimum": 3, "maximum": 1}}, "/items/maximum", "below minimum"),
    ({"type": "array", "items": "string"}, "/items", "an items declaration must be a mapping"),
]


@pytest.mark.parametrize(("decl", "where", "message"), CONFIG_ERRORS)
def test_config_errors_point_at_the_bad_node(decl: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_fields({"customer_id": decl}, "/fields")
    assert caught.value.pointer == "/fields/customer_id" + where
    assert message in caught.value.message


def test_bad_pattern_points_inside_the_expression() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_fields({"sku": {"type": "string", "pattern": "^[A-Z+$"}}, "/fields")
    assert caught.value.pointer == "/fields/sku/pattern"
    assert caught.value.offset == 1
    assert "not a valid regular expression" in caught.value.message


def test_field_names_are_escaped_in_pointers() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_fields({"a/b~c": {"type": "nope"}}, "/fields")
    assert caught.value.pointer == "/fields/a~1b~0c/type"


def test_enum_values_are_normalised_like_the_values_they_match() -> None:
    decl = {"type": "datetime", "enum": ["2026-11-26T12:00:00+02:00"]}
    assert accepted(decl, "2026-11-26T10:00:00Z") == "2026-11-26T10:00:00.000Z"
    assert problem(decl, "2026-11-26T10:00:01Z").rule == "enum"


# --- jsonschema as an oracle ---------------------------------------------------------------

KEYS = st.text(alphabet="ab", max_size=2)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-12, 12),
    st.integers(-12, 12).map(float),
    st.floats(-12, 12, allow_nan=False, allow_infinity=False),
    st.text(alphabet="abAB1 ", max_size=6),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8)
PATTERNS = ["^a", "b$", "[0-9]", "^[ab]*$", "A|1", "^$"]


def _bounded(draw: st.DrawFn, decl: dict[str, Any], low_key: str, high_key: str, values: st.SearchStrategy[Any]) -> None:
    low, high = draw(st.none() | values), draw(st.none() | values)
    if low is not None and high is not None and low > high:
        low, high = high, low
    if low is not None:
        decl[low_key] = low
    if high is not None:
        decl[high_key] = high


@st.composite
def plain_decls(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """A declaration of a plain type with a few constraints: no coercion, no datetime, no format."""
    type_name = draw(st.sampled_from(["string", "number", "integer", "boolean", "object", "array"]))
    decl: dict[str, Any] = {"type": type_name}
    if type_name == "string":
        _bounded(draw, decl, "minLength", "maxLength", st.integers(0, 5))
        if draw(st.booleans()):
            decl["pattern"] = draw(st.sampled_from(PATTERNS))
    elif type_name in ("number", "integer"):
        _bounded(draw, decl, "minimum", "maximum", st.integers(-10, 10) | st.floats(-10, 10))
    elif type_name == "object":
        _bounded(draw, decl, "minProperties", "maxProperties", st.integers(0, 3))
    elif type_name == "array":
        _bounded(draw, decl, "minItems", "maxItems", st.integers(0, 3))
        if depth == 0 and draw(st.booleans()):
            decl["items"] = draw(plain_decls(depth=1))
    if draw(st.booleans()):
        decl["nullable"] = draw(st.booleans())
    if draw(st.booleans()):
        candidates = draw(st.lists(JSON, min_size=1, max_size=4))
        allowed = [v for v in candidates if v is not None and Draft202012Validator(to_schema(decl, False)).is_valid(v)]
        if allowed:
            decl["enum"] = allowed
    return decl


def to_schema(decl: dict[str, Any], nullable_default: bool) -> dict[str, Any]:
    """The JSON Schema (2020-12) that means the same as a plain declaration."""
    schema = {key: value for key, value in decl.items() if key not in ("nullable", "items")}
    if "items" in decl:
        schema["items"] = to_schema(decl["items"], False)
    nullable = decl.get("nullable", nullable_default)
    return {"anyOf": [{"type": "null"}, schema]} if nullable else schema


@given(plain_decls(), st.booleans(), st.data())
@settings(max_examples=300, deadline=None)
def test_checks_agree_with_jsonschema(decl: dict[str, Any], required: bool, data: st.DataObject) -> None:
    value = data.draw(st.one_of(JSON, st.sampled_from(decl.get("enum", [None]))))
    fields = compile_fields({"f": {**decl, "required": required}})
    out, problems = fields.check({"f": value})
    valid = Draft202012Validator(to_schema(decl, not required)).is_valid(value)
    assert (problems == []) == valid, (problems, to_schema(decl, not required))
    assert out["f"] == value
    if valid and decl["type"] == "integer" and value is not None:
        assert type(out["f"]) is int


# --- what the compiled field set carries: windows, names, and one compilation per action ---------


def test_a_window_is_compiled_with_its_field() -> None:
    fields = compile_fields({"t": {"type": "datetime", "window": {"past": "34d", "future": "90m"}}, "u": {"type": "datetime"}})
    (window,) = fields.windows
    assert (window.field, window.past, window.future, window.text) == ("t", timedelta(days=34), timedelta(minutes=90), "34d back to 90m ahead")
    assert fields.names == ("t", "u") and fields.required == frozenset()


@pytest.mark.parametrize(
    ("window", "where", "message"),
    [
        ({"past": "34 days", "future": "1h"}, "/f/window/past", 'window past must be a number and a unit (s, m, h or d), as 34d or 24h, not "34 days"'),
        ({"past": "1d", "future": 5}, "/f/window/future", "not 5"),
        ({"past": "1d"}, "/f/window", "window takes past and future durations"),
        ("34d", "/f/window", 'not "34d"'),
    ],
)
def test_a_bad_window_points_at_its_part(window: Any, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_fields({"f": {"type": "datetime", "window": window}})
    assert caught.value.pointer == where and message in caught.value.message


def test_a_window_in_array_items_is_refused_since_nothing_would_check_it() -> None:
    with pytest.raises(ConfigError) as caught:
        compile_fields({"f": {"type": "array", "items": {"type": "datetime", "window": {"past": "1d", "future": "1h"}}}})
    assert caught.value.pointer == "/f/items/window" and "not to array items" in caught.value.message


def test_mapped_by_names_a_subscriptions_mappings_without_compiling_again(monkeypatch: pytest.MonkeyPatch) -> None:
    action = metronome_fields()

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled again")

    monkeypatch.setattr("engine.lang.fields.compiler._compile_shape", forbidden)
    monkeypatch.setattr("re.compile", forbidden)
    mine = action.mapped_by({"transaction_id": "$.properties.id"})
    messages = [p.message for p in mine.check({})[1]]
    assert messages[:2] == [
        "transaction_id: required, but its mapping $.properties.id gave no value for this event",
        "customer_id: required, but nothing maps it; add it to the subscription's mapping",
    ]
    assert (mine.names, mine.windows) == (action.names, action.windows)
    assert "@coalesce($.userId, $.anonymousId)" in action.check({})[1][1].message, "the action's own messages are unchanged"


# (declaration, value mapped, value sent, what the check says changed it)
CHANGES = [
    ({"type": "string", "coerce": ["number_to_string"]}, 12, "12", "number_to_string"),
    ({"type": "string", "coerce": ["number_to_string", "boolean_to_string"]}, True, "true", "boolean_to_string"),
    ({"type": "integer", "coerce": ["string_to_integer"]}, "3", 3, "string_to_integer"),
    ({"type": "number", "coerce": ["string_to_integer"]}, "-7", -7, "string_to_integer"),
    ({"type": "number", "coerce": ["string_to_number"]}, "1.5", 1.5, "string_to_number"),
    ({"type": "boolean", "coerce": ["string_to_boolean"]}, "false", False, "string_to_boolean"),
    ({"type": "integer"}, 3.0, 3, "normalised number"),
    ({"type": "datetime"}, "2026-11-26T11:00:00+01:00", "2026-11-26T10:00:00.000Z", "normalised datetime"),
    ({"type": "array", "items": {"type": "string", "coerce": ["number_to_string"]}}, [1, "a"], ["1", "a"], "normalised array"),
    ({"type": "object", "coerce": ["null_to_missing"]}, None, None, "null_to_missing"),
]


@pytest.mark.parametrize(("decl", "value", "sent", "by"), CHANGES)
def test_a_traced_check_says_the_coercion_it_applied(decl: dict[str, Any], value: Any, sent: Any, by: str) -> None:
    told: list[tuple[Any, ...]] = []
    build = compile_fields({"f": decl}).builder({"f": lambda doc: doc}, lambda *change: told.append(change))
    out, problems = build(value)
    assert problems == [] and out.get("f") == sent
    assert told == [("f", value, out.get("f", MISSING), by)]


@pytest.mark.parametrize(
    ("decl", "value"),
    [({"type": "datetime"}, "2026-11-26T10:00:00.000Z"), ({"type": "integer"}, 3), ({"type": "string", "required": True}, "a"),
     ({"type": "string"}, None), ({"type": "string", "coerce": ["number_to_string"]}, [1]), ({"type": "array", "items": {"type": "integer"}}, [1])],
)
def test_a_traced_check_says_nothing_when_nothing_changed_or_the_value_fails(decl: dict[str, Any], value: Any) -> None:
    told: list[Any] = []
    compile_fields({"f": decl}).builder({"f": lambda doc: doc}, lambda *change: told.append(change))(value)
    assert told == []


COERCING = st.sampled_from([
    {"type": "string", "coerce": ["number_to_string", "boolean_to_string", "null_to_missing"]},
    {"type": "integer", "coerce": ["string_to_integer"]},
    {"type": "number", "coerce": ["string_to_number"]},
    {"type": "boolean", "coerce": ["string_to_boolean"], "nullable": True},
    {"type": "datetime", "required": True},
    {"type": "array", "items": {"type": "integer", "coerce": ["string_to_integer", "null_to_missing"]}},
    {"type": "object", "coerce": ["null_to_missing"], "required": True},
])


@given(decls=st.dictionaries(st.sampled_from(["a", "b", "c"]), COERCING, min_size=1), payload=st.dictionaries(
    st.sampled_from(["a", "b", "c"]), JSON | st.sampled_from(["3", "-1.5e2", "true", "2026-11-26T11:00:00+01:00", 2.0])))
@settings(max_examples=300)
def test_a_traced_check_gives_what_the_plain_check_gives_and_tells_each_change(decls: dict[str, Any], payload: dict[str, Any]) -> None:
    fields = compile_fields(decls)
    told: dict[str, tuple[Any, ...]] = {}
    traced = fields.builder({name: (lambda doc, name=name: doc.get(name, MISSING)) for name in decls}, lambda name, *rest: told.setdefault(name, rest))
    assert traced(payload) == fields.check(payload)
    out, problems = fields.check(payload)
    failed = {problem.field for problem in problems if problem.rule != "required"}  # a required null that was dropped did change
    changed = {name for name, value in payload.items() if name in decls and name not in failed
               and (out.get(name, MISSING) is MISSING or json.dumps(out[name]) != json.dumps(value))}
    assert set(told) == changed


# -- an object's declared keys (properties) ------------------------------------------------------

METER = {"type": "object", "required": True, "description": "meter keys", "properties": {
    "customer": {"type": "string", "required": True, "minLength": 1, "coerce": ["number_to_string"]},
    "value": {"type": "integer", "minimum": 0}}}


def reference_meter(value: Any) -> tuple[Any, str | None]:
    """A plain reading of METER: the object to send, or the first broken key's name."""
    if not isinstance(value, dict):
        return value, ""
    out = dict(value)
    customer = value.get("customer", MISSING)
    if isinstance(customer, (int, float)) and not isinstance(customer, bool):
        if isinstance(customer, float) and not math.isfinite(customer):
            return value, "customer"
        customer = str(int(customer)) if float(customer).is_integer() else repr(customer)
    if not isinstance(customer, str) or customer == "":
        return value, "customer"
    out["customer"] = customer
    if value.get("value") is not None:  # an optional key keeps null
        number = value["value"]
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if type(number) is not int or number < 0:
            return value, "value"
        out["value"] = number
    return out, None


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["customer", "value", "other"]),
                       st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False, allow_infinity=False, width=32)
                       | st.text(max_size=4), max_size=3) | st.lists(st.integers(), max_size=2))
def test_an_objects_declared_keys_are_checked_and_coerced_as_a_plain_reading_says(value: Any) -> None:
    payload, problems = compile_fields({"meter": METER}).check({"meter": value})
    wanted, broken = reference_meter(value)
    if broken is None:
        assert problems == [] and payload["meter"] == wanted and type(payload["meter"].get("value")) is type(wanted.get("value"))
    else:
        assert len(problems) == 1
        assert problems[0].message.startswith("meter." + broken + ":" if broken else "meter:"), problems[0].message


def test_a_missing_declared_key_is_named_and_undeclared_keys_pass() -> None:
    fields = compile_fields({"meter": METER})
    assert fields.check({"meter": {"value": 3, "region": "eu"}})[1][0].message == "meter.customer: required, but the object has no value for it"
    assert fields.check({"meter": {"customer": 42, "region": "eu"}}) == ({"meter": {"customer": "42", "region": "eu"}}, [])
    assert fields.describe()[0]["type"] == "object {customer: string (required), value: integer}"
    with pytest.raises(ConfigError, match="properties declares an object's keys"):
        compile_fields({"meter": {**METER, "properties": {}}})


def test_an_optional_declared_key_keeps_null_as_an_optional_field_does() -> None:
    fields = compile_fields({"meter": METER})
    assert fields.check({"meter": {"customer": "c", "value": None}}) == ({"meter": {"customer": "c", "value": None}}, [])
    assert fields.check({"meter": {"customer": None}})[1][0].message.startswith("meter.customer:")


def test_a_window_longer_than_a_century_is_refused_at_load_and_unix_times_before_1000_read_back_padded() -> None:
    from engine.lang.fields.timeformats import TIME_FORMATS

    with pytest.raises(ConfigError, match="longer than 100 years"):
        compile_fields({"t": {"type": "datetime", "description": "x", "window": {"past": "999999d", "future": "1h"}}})
    assert TIME_FORMATS["unix_seconds"].read(-46388678400) == "0500-01-01T00:00:00.000Z"
    assert TIME_FORMATS["unix_seconds"].read(TIME_FORMATS["unix_seconds"].write("0500-06-01T12:00:00.000Z")) == "0500-06-01T12:00:00.000Z"
