"""What a field check says: the type names, the problem record, and how a value is named in a message."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable



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

    def member(self, key: str) -> _Invalid:
        return _Invalid(self.rule, self.detail, f".{key}{self.where}")

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
