"""The rules after the type: pattern, format, enum, array items."""

from __future__ import annotations

import re
from typing import Any, Callable

from engine.lang.fields.problems import _Invalid, _json, Step
from engine.lang.missing import MISSING


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
