"""Directive arguments: an object's keys checked, literal options typed, mapping values compiled by the caller's compiler."""

from __future__ import annotations

import json
from typing import Any, Callable

from engine.errors import ConfigError
from engine.lang.mapping.nodes import Node
from engine.lang.mapping.values import _a, _did_you_mean
from engine.config.yamlsource import join_pointer

Compile = Callable[[Any, str], Node]
"""The compiler of mapping values, handed to each directive's compiler (so the directives need not import it)."""


_TYPE_NAMES = {str: "a string", bool: "true or false"}


def _arguments(raw: Any, pointer: str, directive: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The directive's argument object, checked for unknown and missing keys."""
    allowed = required + optional
    if type(raw) is not dict:
        raise ConfigError(f"{directive} takes an object with {', '.join(allowed)}, not {_a(raw)}", pointer)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{directive} has no argument {key!r}{_did_you_mean(key, allowed)} (it takes {', '.join(allowed)})", join_pointer(pointer, key))
    for key in required:
        if key not in raw:
            raise ConfigError(f"{directive} needs {key!r} (it takes {', '.join(allowed)})", pointer)
    return raw


def _option(args: dict[str, Any], key: str, pointer: str, directive: str, kind: type, default: Any, choices: tuple[str, ...] = ()) -> Any:
    """A literal option: its type (and allowed values) checked now, at load time."""
    if key not in args:
        return default
    value = args[key]
    where = join_pointer(pointer, key)
    if type(value) is not kind:
        raise ConfigError(f"{directive} {key} must be {_TYPE_NAMES[kind]}, not {_a(value)}", where)
    if choices and value not in choices:
        raise ConfigError(f"{directive} {key} must be {' or '.join(json.dumps(c) for c in choices)}, not {json.dumps(value)}", where)
    return value


def _choices(args: dict[str, Any], key: str, pointer: str, directive: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """A literal option naming one of ``choices``, or a non-empty list of them (each once, in the order given)."""
    value = args[key]
    where = join_pointer(pointer, key)
    if type(value) is str:
        return (_option(args, key, pointer, directive, str, None, choices),)
    if type(value) is not list or not value:
        raise ConfigError(
            f"{directive} {key} must be one of {', '.join(choices)}, or a non-empty list of them tried in order "
            f"(such as [{', '.join(choices[:2])}]), not {_a(value)}",
            where,
        )
    for index, item in enumerate(value):
        if type(item) is not str or item not in choices:
            raise ConfigError(f"{directive} {key} lists {_a(item)}; each entry must be {' or '.join(json.dumps(c) for c in choices)}", join_pointer(where, index))
        if item in value[:index]:
            raise ConfigError(f"{directive} {key} lists {json.dumps(item)} twice; each is tried once, in the order listed", join_pointer(where, index))
    return tuple(value)


def _argument(args: dict[str, Any], key: str, pointer: str, compile_value: Compile) -> Node:
    return compile_value(args[key], join_pointer(pointer, key))


def _string_argument(raw: Any, pointer: str, directive: str, what: str) -> str:
    if type(raw) is not str:
        raise ConfigError(f"{directive} takes {what} (a string), not {_a(raw)}", pointer)
    return raw


def _is_directive(raw: Any) -> bool:
    return type(raw) is dict and any(type(key) is str and key.startswith("@") for key in raw)
