"""Declared coercions (``number_to_string``, ``string_to_integer`` ...): a value changed before its type is checked."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from engine.lang.fields.problems import _a, _EXPECTED, _Invalid, _json, _NOUNS, Step


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
