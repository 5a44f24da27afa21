"""Field types, declared coercions and per-event validation (SPEC section 7).

An action's field declarations are compiled once into one small closure per field,
so checking a payload costs a few type tests and comparisons per field: no schema
is walked and nothing is parsed per event (``jsonschema`` would cost ~40 µs).

Where the spec is silent:

- A value is checked against its field's rules in order (null, type or coercion,
  size, pattern, format, enum) and only the first broken rule is reported: later
  rules rarely make sense for a value that already broke one.
- ``integer`` accepts a float with an integral value and emits it as an int
  (``3.0`` is sent as ``3``): receivers that want integers may reject ``3.0``.
- ``number`` and ``integer`` reject NaN and infinities: JSON cannot carry them.
- ``number_to_string`` writes integral floats without ``.0`` (``42.0`` -> ``"42"``)
  because JSON does not tell 42 from 42.0 and an id must not depend on the producer;
  other floats use Python's shortest round-trip form (``1.5`` -> ``"1.5"``).
- ``string_to_number`` / ``string_to_integer`` accept exactly the JSON number
  grammar (no spaces, no ``+``, no leading zeros, no ``1_000``, no ``NaN``);
  ``string_to_number`` gives an int when the text has no fraction or exponent.
- ``datetime`` accepts ``YYYY-MM-DD``, ``T``/``t``/space, ``HH:MM`` with optional
  ``:SS`` and a fraction of any length (``.`` or ``,``), then ``Z``/``z``,
  ``±hh:mm``, ``±hhmm`` or ``±hh``. The fraction is truncated to milliseconds,
  never rounded. A leap second (``:60``) is sent as ``:59.999`` so the event stays
  in its minute. Years 0001-9999 only (before and after conversion to UTC).
- ``format: email`` is a cheap ASCII check (dot-atom local part, dotted domain);
  ``uri`` wants an absolute URI of RFC 3986 characters; ``uuid`` the 8-4-4-4-12 form.
- ``items`` are not nullable unless declared; ``null_to_missing`` in ``items``
  drops null elements from the array.
- ``window`` (datetime fields) is accepted here but checked just before sending,
  since it depends on the time of sending.
- A field that breaks a rule keeps its input value in the returned payload, so a
  preview shows what was built; the event is invalid and is not sent anyway.
- Nested objects and arrays in the returned payload are the input's own objects,
  except arrays with ``items``, which are rebuilt.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from engine.errors import ConfigError, MappingFailure
from engine.missing import MISSING
from engine.yamlsource import join_pointer

Step = Callable[[Any], Any]

TYPES = ("string", "number", "integer", "boolean", "datetime", "object", "array")
_ONLY_FOR = {
    "format": ("string",),
    "pattern": ("string",),
    "minLength": ("string",),
    "maxLength": ("string",),
    "minimum": ("number", "integer"),
    "maximum": ("number", "integer"),
    "minProperties": ("object",),
    "maxProperties": ("object",),
    "minItems": ("array",),
    "maxItems": ("array",),
    "items": ("array",),
    "window": ("datetime",),  # checked before sending, not here: it depends on the time of sending
}
_BOUNDS = (("minLength", "maxLength"), ("minimum", "maximum"), ("minProperties", "maxProperties"), ("minItems", "maxItems"))
_EXPECTED = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "datetime": "a datetime string",
    "object": "an object",
    "array": "an array",
}
_KIND = {str: "the string", bool: "the boolean", int: "the number", float: "the number", dict: "the object", list: "the array"}
_NOUNS = {str: "strings", bool: "booleans", int: "numbers", float: "numbers"}


@dataclass(frozen=True)
class FieldProblem:
    """Why one field of one payload cannot be sent: the field, the rule it broke, a message."""

    field: str
    rule: str
    message: str


class _Invalid(Exception):
    """A value broke a rule: raised inside a field's check, turned into a FieldProblem once.

    ``where`` locates the value inside the field (``[2]`` for an array element).
    """

    def __init__(self, rule: str, detail: str, where: str = "") -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail
        self.where = where

    def inside(self, index: int) -> _Invalid:
        return _Invalid(self.rule, self.detail, f"[{index}]{self.where}")

    def problem(self, field: str) -> FieldProblem:
        return FieldProblem(field, self.rule, f"{field}{self.where}: {self.detail}")


def _json(value: Any) -> str:
    """The value as JSON, cut to about 80 characters so a message stays on one line."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."


def _a(value: Any) -> str:
    """``the number 42``, ``the string "x"``, ``null``: a value named for a message."""
    if value is None:
        return "null"
    if type(value) is float and not math.isfinite(value):
        return f"the non-finite number {_json(value)}"
    return f"{_KIND.get(type(value), 'the Python ' + type(value).__name__)} {_json(value)}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


# --- declared coercions ---------------------------------------------------------------

_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _number_to_string(value: int | float) -> str:
    if type(value) is int:
        return str(value)
    if not math.isfinite(value):
        raise _Invalid("coerce", f"number_to_string cannot convert {_json(value)}: not a finite number")
    return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


def _boolean_to_string(value: bool) -> str:
    return "true" if value else "false"


def _text_to_int(text: str, coercion: str) -> int:
    try:
        return int(text)
    except ValueError:  # over Python's 4300-digit limit
        raise _Invalid("coerce", f"{coercion} cannot convert {_json(text)}: too many digits") from None


def _string_to_integer(value: str) -> int:
    if _INTEGER_TEXT.fullmatch(value) is None:
        raise _Invalid(
            "coerce",
            f"string_to_integer cannot convert {_json(value)}: expected an integer written like 42 or -7 "
            "(no spaces, sign +, leading zeros or fraction)",
        )
    return _text_to_int(value, "string_to_integer")


def _string_to_number(value: str) -> int | float:
    if _NUMBER_TEXT.fullmatch(value) is None:
        raise _Invalid(
            "coerce",
            f"string_to_number cannot convert {_json(value)}: expected a JSON number such as 42, -1.5 or 2e3",
        )
    if _INTEGER_TEXT.fullmatch(value):
        return _text_to_int(value, "string_to_number")
    number = float(value)
    if not math.isfinite(number):
        raise _Invalid("coerce", f"string_to_number cannot convert {_json(value)}: too large for a number")
    return number


def _string_to_boolean(value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise _Invalid("coerce", f'string_to_boolean cannot convert {_json(value)}: only "true" and "false" convert')


@dataclass(frozen=True)
class _Coercion:
    sources: tuple[type, ...]
    targets: tuple[str, ...]  # the field types its result fits
    convert: Step


_COERCIONS = {
    "number_to_string": _Coercion((int, float), ("string",), _number_to_string),
    "boolean_to_string": _Coercion((bool,), ("string",), _boolean_to_string),
    "string_to_number": _Coercion((str,), ("number",), _string_to_number),
    "string_to_integer": _Coercion((str,), ("integer", "number"), _string_to_integer),
    "string_to_boolean": _Coercion((str,), ("boolean",), _string_to_boolean),
}
NULL_TO_MISSING = "null_to_missing"


def _type_problem(type_name: str, value: Any) -> _Invalid:
    """The problem for a value of the wrong type, with the coercion or directive that would fit."""
    if value is None:
        return _Invalid(
            "nullable",
            "null is not allowed (declare nullable: true to send null, or coerce: [null_to_missing] to leave it out)",
        )
    hint = ""
    if type_name == "datetime" and type(value) in (int, float):
        hint = " (a number is not a time: convert it explicitly with @timestamp, from: unix_s or unix_ms)"
    else:
        for name, coercion in _COERCIONS.items():
            if type(value) in coercion.sources and type_name in coercion.targets:
                hint = f" (declare coerce: [{name}] to accept {_NOUNS[type(value)]})"
                break
    return _Invalid("type", f"expected {_EXPECTED[type_name]} but got {_a(value)}{hint}")


def _converter(type_name: str, table: dict[type, Step]) -> Step:
    """What a type check does with a value not of its type: a declared coercion, or a problem."""

    def convert(value: Any) -> Any:
        coerce = table.get(type(value))
        if coerce is None:
            raise _type_problem(type_name, value)
        return coerce(value)

    return convert


# --- type checks (each also applies its size or range bounds, so a field is one call) ---


def _sized(pytype: type, unit: str, keys: tuple[str, str], low: int, high: float, convert: Step) -> Step:
    """Strings, objects and arrays: the type, then the length between ``low`` and ``high``."""

    def step(value: Any) -> Any:
        if type(value) is not pytype:
            value = convert(value)
        size = len(value)
        if size < low:
            raise _Invalid(keys[0], f"{_count(size, unit)} is under {keys[0]} {low} ({_json(value)})")
        if size > high:
            raise _Invalid(keys[1], f"{_count(size, unit)} is over {keys[1]} {high} ({_json(value)})")
        return value

    return step


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _integral(value: float) -> int | None:
    return int(value) if value.is_integer() else None


def _numeric(from_float: Callable[[float], Any], low: float, high: float, convert: Step) -> Step:
    """Numbers and integers: ints pass, floats go through ``from_float``, then the range."""

    def step(value: Any) -> Any:
        if type(value) is not int:
            number = from_float(value) if type(value) is float else None
            value = convert(value) if number is None else number
        if value < low:
            raise _Invalid("minimum", f"{_json(value)} is under minimum {_json(low)}")
        if value > high:
            raise _Invalid("maximum", f"{_json(value)} is over maximum {_json(high)}")
        return value

    return step


def _boolean(convert: Step) -> Step:
    def step(value: Any) -> Any:
        return value if type(value) is bool else convert(value)

    return step


# --- datetime ----------------------------------------------------------------------------

_DATETIME = re.compile(
    r"(?!0000)([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):([0-5][0-9])"
    r"(?::([0-5][0-9]|60)(?:[.,]([0-9]+))?)?"
    r"(?:[Zz]|([+-])([01][0-9]|2[0-3])(?::?([0-5][0-9]))?)"
)
_CANONICAL = re.compile(
    r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z"
)
_LOOSE_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[Tt ]([0-9]{1,2}):([0-9]{1,2})(?::([0-9]{1,2})(?:[.,][0-9]*)?)?)?(.*)",
    re.DOTALL,
)
_USE_TIMESTAMP = "or convert it explicitly with @timestamp"


def _datetime_problem(text: str) -> _Invalid:
    """Why ``text`` is not a datetime we accept, as precisely as can be told."""
    loose = _LOOSE_DATETIME.fullmatch(text)
    if _NUMBER_TEXT.fullmatch(text):
        why = "is a number in a string, not a date-time; if it is a Unix time, convert it with @timestamp (from: unix_s or unix_ms)"
    elif loose is None:
        why = f"is not an RFC 3339 date-time; send one such as 2026-11-26T10:00:00Z, {_USE_TIMESTAMP}"
    else:
        year, month, day, hour, minute, second, rest = loose.groups()
        try:
            datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), min(int(second or 0), 59))
        except ValueError as error:
            return _Invalid("datetime", f"{_json(text)} is not a real date and time ({error})")
        if hour is None:
            why = f"is a date without a time; send a date-time with an offset such as {year}-{month}-{day}T00:00:00Z, {_USE_TIMESTAMP}"
        elif rest == "":
            why = f"has no UTC offset; send an offset such as Z or +02:00, {_USE_TIMESTAMP}"
        else:
            why = f"has {_json(rest)} where a UTC offset (Z, +02:00, -0500) belongs; send such an offset, {_USE_TIMESTAMP}"
    return _Invalid("datetime", f"{_json(text)} {why}")


def _real_day(year: str, month: str, day: str) -> bool:
    return day <= "28" or int(day) <= calendar.monthrange(int(year), int(month))[1]


_MINUTE = timedelta(minutes=1)


def _to_utc(text: str) -> str:
    """Any accepted date-time string in the canonical UTC form (the slow path)."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise _datetime_problem(text)
    year, month, day, hour, minute, second, fraction, sign, off_hours, off_minutes = match.groups()
    if not _real_day(year, month, day):
        raise _datetime_problem(text)
    millis = (fraction + "00")[:3] if fraction else "000"
    if second is None:
        second = "00"
    elif second == "60":
        second, millis = "59", "999"
    if sign is None or (off_hours == "00" and off_minutes in (None, "00")):
        return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{millis}Z"
    shift = _MINUTE * (int(off_hours) * 60 + int(off_minutes or 0))
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    try:
        utc = local - shift if sign == "+" else local + shift
    except OverflowError:
        raise _Invalid("datetime", f"{_json(text)} is outside years 0001-9999 once converted to UTC") from None
    return f"{utc.isoformat()}.{millis}Z"  # no microseconds: isoformat writes no fraction


def _datetime(convert: Step) -> Step:
    """RFC 3339 strings with an offset, emitted as ``YYYY-MM-DDTHH:MM:SS.sssZ`` in UTC."""

    def step(value: Any) -> Any:
        if type(value) is not str:
            return convert(value)
        if _CANONICAL.fullmatch(value) is not None and _real_day(value[:4], value[5:7], value[8:10]):
            return value  # already canonical, as @timestamp gives it
        return _to_utc(value)

    return step


# --- constraints after the type ----------------------------------------------------------


def _test(test: Callable[[str], Any], rule: str, why: str) -> Step:
    """A string rule: ``test`` (a compiled regex's search or fullmatch) must find a match."""

    def step(value: str) -> str:
        if test(value) is None:
            raise _Invalid(rule, f"{_json(value)} {why}")
        return value

    return step


_FORMATS = {
    "uri": (
        re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"),
        "is not an absolute URI (expected e.g. https://example.com/path, with spaces and non-ASCII percent-encoded)",
    ),
    "email": (
        re.compile(
            r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
            r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
        ),
        "is not an email address (expected e.g. name@example.com)",
    ),
    "uuid": (
        re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"),
        "is not a UUID (expected 8-4-4-4-12 hexadecimal digits, e.g. 123e4567-e89b-12d3-a456-426614174000)",
    ),
}


def _json_key(value: Any) -> Any:
    """A hashable stand-in, equal exactly when two JSON values are equal (true is not 1; 1 is 1.0)."""
    kind = type(value)
    if kind is bool:
        return (bool, value)
    if kind is list:
        return (list, tuple(map(_json_key, value)))
    if kind is dict:
        return (dict, frozenset((k, _json_key(v)) for k, v in value.items()))
    return value


def _enum(values: list[Any]) -> Step:
    allowed = frozenset(map(_json_key, values))
    shown = ", ".join(map(_json, values))
    shown = shown if len(shown) <= 120 else shown[:117] + "..."

    def step(value: Any) -> Any:
        if _json_key(value) in allowed:
            return value
        raise _Invalid("enum", f"{_json(value)} is not one of the enum values {shown}")

    return step


def _sequence(steps: list[Step]) -> Step:
    """One step running ``steps`` in order; a single step is used as it is."""
    if len(steps) == 1:
        return steps[0]
    chain = tuple(steps)

    def run(value: Any) -> Any:
        for step in chain:
            value = step(value)
        return value

    return run


def _elements(item: Step) -> Step:
    """An array's elements checked (and coerced) by ``item``; dropped elements left out."""

    def step(values: list[Any]) -> list[Any]:
        out = []
        for index, value in enumerate(values):
            try:
                value = item(value)
            except _Invalid as invalid:
                raise invalid.inside(index) from None
            if value is not MISSING:
                out.append(value)
        return out

    return step


# --- compiling a declaration -------------------------------------------------------------


_OPTION_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: type(v) is bool, "true or false"),
    "count": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
    "number": (lambda v: type(v) in (int, float) and math.isfinite(v), "a number"),
    "text": (lambda v: type(v) is str, "a string"),
    "list": (lambda v: type(v) is list, "a list"),
}


def _option(decl: Mapping[str, Any], key: str, pointer: str, kind: str) -> Any:
    """``decl[key]`` (None when absent), checked to be of ``kind`` (a key of _OPTION_KINDS).

    The schema checks this too; the compiler is also called directly, and compares
    these values, so it cannot trust them blindly.
    """
    if key not in decl:
        return None
    fits, wanted = _OPTION_KINDS[kind]
    if not fits(decl[key]):
        raise ConfigError(f"{key} must be {wanted}, not {_json(decl[key])}", join_pointer(pointer, key))
    return decl[key]


def _type_of(decl: Mapping[str, Any], pointer: str, what: str) -> str:
    type_name = decl.get("type")
    if type_name not in TYPES:
        where = join_pointer(pointer, "type") if "type" in decl else pointer
        got = f"not {_json(type_name)}" if "type" in decl else "it has none"
        raise ConfigError(f"{what} needs a type, one of {', '.join(TYPES)}; {got}", where)
    for key, types in _ONLY_FOR.items():
        if key in decl and type_name not in types:
            raise ConfigError(
                f"{key} does not apply to type {type_name}, only to {' and '.join(types)}", join_pointer(pointer, key)
            )
    return type_name


def _coercions(decl: Mapping[str, Any], type_name: str, pointer: str) -> tuple[dict[type, Step], bool]:
    """The declared coercions as a table by source type, and whether null_to_missing is declared."""
    names = _option(decl, "coerce", pointer, "list") or []
    table: dict[type, Step] = {}
    drop_null = False
    for index, name in enumerate(names):
        at = join_pointer(pointer, "coerce", index)
        if name == NULL_TO_MISSING:
            if drop_null:
                raise ConfigError("null_to_missing is listed twice", at)
            if decl.get("nullable") is True:
                raise ConfigError("null_to_missing contradicts nullable: true (null cannot be both sent and dropped)", at)
            drop_null = True
            continue
        coercion = _COERCIONS.get(name) if type(name) is str else None
        if coercion is None:
            known = ", ".join([*_COERCIONS, NULL_TO_MISSING])
            raise ConfigError(f"unknown coercion {_json(name)}; known coercions: {known}", at)
        if type_name not in coercion.targets:
            fits = " or ".join(coercion.targets)
            advice = "use @timestamp in the mapping to make a time" if type_name == "datetime" else "remove it"
            raise ConfigError(f"{name} gives a {fits}, which does not fit type {type_name}; {advice}", at)
        if coercion.sources[0] in table:
            raise ConfigError(f"{name} converts the same source type as an earlier coercion; keep one", at)
        table.update(dict.fromkeys(coercion.sources, coercion.convert))
    return table, drop_null


def _bounds(decl: Mapping[str, Any], pointer: str, type_name: str) -> tuple[Any, Any]:
    """The (low, high) bounds that apply to ``type_name``, checked to leave room for a value."""
    for low_key, high_key in _BOUNDS:
        if type_name not in _ONLY_FOR[low_key]:
            continue
        kind = "number" if low_key == "minimum" else "count"
        low, high = _option(decl, low_key, pointer, kind), _option(decl, high_key, pointer, kind)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{high_key} {high} is below {low_key} {low}: no value could pass", join_pointer(pointer, high_key))
        return (-math.inf if kind == "number" else 0) if low is None else low, math.inf if high is None else high
    return None, None


def _body(decl: Mapping[str, Any], pointer: str, type_name: str, convert: Step) -> list[Step]:
    """The steps checking a non-null value: type (with coercion and bounds), then pattern and format."""
    low, high = _bounds(decl, pointer, type_name)
    if type_name == "string":
        steps = [_sized(str, "character", ("minLength", "maxLength"), low, high, convert)]
        pattern = _option(decl, "pattern", pointer, "text")
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"pattern is not a valid regular expression: {error.msg}", join_pointer(pointer, "pattern"), error.pos) from None
            steps.append(_test(compiled.search, "pattern", f"does not match pattern {pattern}"))
        name = _option(decl, "format", pointer, "text")
        if name is not None:
            if name not in _FORMATS:
                raise ConfigError(f"unknown format {_json(name)}; known formats: {', '.join(_FORMATS)}", join_pointer(pointer, "format"))
            regex, why = _FORMATS[name]
            steps.append(_test(regex.fullmatch, "format", why))
        return steps
    if type_name in ("number", "integer"):
        return [_numeric(_finite if type_name == "number" else _integral, low, high, convert)]
    if type_name == "object":
        return [_sized(dict, "key", ("minProperties", "maxProperties"), low, high, convert)]
    if type_name == "array":
        steps = [_sized(list, "item", ("minItems", "maxItems"), low, high, convert)]
        if "items" in decl:
            steps.append(_elements(_compile_shape(decl["items"], join_pointer(pointer, "items"), field=False).run))
        return steps
    return [_boolean(convert) if type_name == "boolean" else _datetime(convert)]


def _enum_values(decl: Mapping[str, Any], pointer: str, strict: Step) -> list[Any]:
    """The enum values, each checked by the field's own rules (without coercion) and normalised."""
    listed = _option(decl, "enum", pointer, "list")
    if not listed:
        raise ConfigError("enum lists no values, so nothing could pass; list the allowed values", join_pointer(pointer, "enum"))
    values = []
    for index, value in enumerate(listed):
        at = join_pointer(pointer, "enum", index)
        if value is None:
            raise ConfigError("enum cannot list null; declare nullable: true to accept null", at)
        try:
            values.append(strict(value))
        except _Invalid as invalid:
            raise ConfigError(f"enum value {_json(value)} could never pass this field: {invalid.detail}", at) from None
    return values


@dataclass(frozen=True)
class _Shape:
    run: Step  # a value -> the value to send, MISSING to leave it out; raises _Invalid
    type_text: str
    required: bool
    drops_null: bool


def _compile_shape(decl: Any, pointer: str, field: bool) -> _Shape:
    """A field (or ``items``) declaration compiled to one step; nulls handled as declared."""
    what = "a field declaration" if field else "an items declaration"
    if not isinstance(decl, Mapping):
        raise ConfigError(f"{what} must be a mapping of keys such as type and description, not {_json(decl)}", pointer)
    _option(decl, "description", pointer, "text")
    _option(decl, "label", pointer, "text")
    required = _option(decl, "required", pointer, "bool") is True
    type_name = _type_of(decl, pointer, what)
    table, drop_null = _coercions(decl, type_name, pointer)
    steps = _body(decl, pointer, type_name, _converter(type_name, table))
    if "enum" in decl:
        strict = _sequence(_body(decl, pointer, type_name, _converter(type_name, {})))
        steps.append(_enum(_enum_values(decl, pointer, strict)))
    body = _sequence(steps)
    nullable = _option(decl, "nullable", pointer, "bool")
    run = body
    if drop_null:
        run = _null_to(MISSING, body)
    elif (field and not required) if nullable is None else nullable:
        run = _null_to(None, body)
    return _Shape(run, _type_text(decl), required, drop_null)


def _null_to(result: Any, body: Step) -> Step:
    """``body``, except that null gives ``result`` (None to send null, MISSING to drop the field)."""

    def run(value: Any) -> Any:
        return result if value is None else body(value)

    return run


def _type_text(decl: Mapping[str, Any]) -> str:
    """``string``, ``string (email)``, ``array of integer``: a type a reader understands."""
    text = decl["type"]
    if "format" in decl:
        text += f" ({decl['format']})"
    if "items" in decl:
        text += " of " + _type_text(decl["items"])
    return text


def _absent_problems(name: str, source: str | None, known: bool, drops_null: bool) -> tuple[FieldProblem, FieldProblem | None]:
    """The problems for a required field with no value, and with a null its coercion dropped."""
    if source is not None:
        missing = f"{name}: required, but its mapping {source} gave no value for this event"
    elif known:
        missing = f"{name}: required, but nothing maps it; add it to the subscription's mapping"
    else:
        missing = f"{name}: required, but the payload has no value for it"
    dropped = None
    if drops_null:
        by = f"its mapping {source} gave" if source is not None else "the value is"
        dropped = FieldProblem(name, "required", f"{name}: required, but {by} null, which coerce: [null_to_missing] drops")
    return FieldProblem(name, "required", missing), dropped


Evaluate = Callable[[Any], Any]
Build = Callable[[Any], "tuple[dict[str, Any], list[FieldProblem]]"]


def _unmapped(source: Any) -> Any:
    return MISSING


def _key(name: str) -> Evaluate:
    """Read one field of an already built payload."""
    return lambda payload: payload.get(name, MISSING)


class FieldSet:
    """An action's fields, compiled: checks and coerces one payload per call."""

    __slots__ = ("_plan", "_docs", "_check")

    def __init__(
        self,
        plan: list[tuple[str, Step, FieldProblem | None, FieldProblem | None]],
        docs: list[dict[str, Any]],
    ) -> None:
        self._plan = tuple(plan)
        self._docs = docs
        self._check = self.builder({name: _key(name) for name, *_ in plan}, {})

    def check(self, payload: dict[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
        """The payload to send (a new dict, in declaration order) and its problems (empty when valid)."""
        return self._check(payload)

    def builder(self, evaluators: Mapping[str, Evaluate], sources: Mapping[str, str]) -> Build:
        """One pass per event that maps each field (``evaluators``) and checks it at once.

        The per-event path: no intermediate payload is built and read back. A mapping
        that fails for the event (MappingFailure) is that field's one problem.
        """
        plan = tuple(
            (name, evaluators.get(name, _unmapped), run, missing, dropped, sources.get(name, ""))
            for name, run, missing, dropped in self._plan
        )

        def build(source: Any) -> tuple[dict[str, Any], list[FieldProblem]]:
            out: dict[str, Any] = {}
            problems: list[FieldProblem] = []
            for name, evaluate, run, missing, dropped, mapping in plan:
                try:
                    value = evaluate(source)
                except MappingFailure as failure:
                    problems.append(FieldProblem(name, "mapping", f"{name}: {failure} (mapping {mapping})"))
                    continue
                if value is MISSING:
                    if missing is not None:
                        problems.append(missing)
                    continue
                try:
                    checked = run(value)
                except _Invalid as invalid:
                    problems.append(invalid.problem(name))
                    out[name] = value
                    continue
                if checked is not MISSING:
                    out[name] = checked
                elif dropped is not None:
                    problems.append(dropped)
            return out, problems

        return build

    def describe(self) -> list[dict[str, Any]]:
        """Per field, in order: name, label, type, required, description (for generated docs)."""
        return [dict(doc) for doc in self._docs]


def compile_fields(
    decls: Mapping[str, Mapping[str, Any]],
    pointer: str = "",
    sources: Mapping[str, str] | None = None,
) -> FieldSet:
    """Compile an action's field declarations once; raise ConfigError at the bad node.

    ``sources`` gives each field's mapping text, named when a required field is missing;
    a required field absent from a given ``sources`` is reported as unmapped.
    """
    if not isinstance(decls, Mapping):
        raise ConfigError(f"fields must be a mapping of field names to declarations, not {_json(decls)}", pointer)
    plan = []
    docs = []
    for name, decl in decls.items():
        shape = _compile_shape(decl, join_pointer(pointer, name), field=True)
        missing, dropped = None, None
        if shape.required:
            source = sources.get(name) if sources is not None else None
            missing, dropped = _absent_problems(name, source, sources is not None, shape.drops_null)
        plan.append((name, shape.run, missing, dropped))
        docs.append(
            {
                "name": name,
                "label": decl.get("label", name),
                "type": shape.type_text,
                "required": shape.required,
                "description": decl.get("description", ""),
            }
        )
    return FieldSet(plan, docs)
