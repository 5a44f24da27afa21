"""Values and their words: copies of constants, the JSON checks of literals, text for messages."""

from __future__ import annotations

import difflib
import json
import math
from typing import Any, Iterable

from engine.errors import ConfigError
from engine.lang.jsonpath import Getter
from engine.limits import MAX_INT, MIN_INT
from engine.lang.missing import MISSING
from engine.config.yamlsource import join_pointer


def _constant(value: Any) -> Getter:
    """A getter for a constant: the value itself, or a fresh copy of a mutable one."""
    if type(value) in (dict, list):
        return lambda doc: _copy(value)
    return lambda doc: value


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    return value


def _check_keys(value: dict[Any, Any], pointer: str) -> None:
    for key in value:
        if type(key) is not str:
            raise ConfigError(f"object keys must be strings, but {key!r} is {_a(key)}; quote it", pointer)


def _check_json(value: Any, pointer: str) -> None:
    """A literal must be JSON: YAML dates, sets or NaN would fail only when sent."""
    kind = type(value)
    if kind is dict:
        _check_keys(value, pointer)
        for key, item in value.items():
            _check_json(item, join_pointer(pointer, key))
    elif kind is list:
        for index, item in enumerate(value):
            _check_json(item, join_pointer(pointer, index))
    elif kind is float and not math.isfinite(value):
        raise ConfigError(f"{value} is not a JSON number; JSON has no NaN or infinity", pointer)
    elif kind is int and not MIN_INT <= value <= MAX_INT:
        raise ConfigError(
            f"the integer {_shown(value)} is outside the 64-bit range payloads can carry ({MIN_INT} to {MAX_INT}); quote it to send it as text",
            pointer,
        )
    elif kind not in (str, int, bool, type(None), float):
        raise ConfigError(f"{_a(value)} is not a JSON value; quote it if it is meant as text", pointer)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def _shown(value: Any) -> str:
    """The value as JSON, cut so a message stays on one line."""
    text = _json_text(value)
    return text if len(text) <= 80 else text[:77] + "..."


_KINDS = {str: "the string", int: "the number", float: "the number", bool: "the boolean", list: "the array", dict: "the object"}


def _a(value: Any) -> str:
    """``the string "x"``, ``null``: a value named for a message."""
    if value is MISSING:
        return "nothing (missing)"
    if value is None:
        return "null"
    kind = _KINDS.get(type(value))
    return f"{kind} {_shown(value)}" if kind else f"a {type(value).__name__} ({value!r})"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""

