"""The directives that make or change text, numbers and dates: templates, case, replace, JSON, flatten, timestamps."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal
from typing import Any, Callable

from engine.errors import ConfigError, MappingFailure
from engine.limits import MAX_DEPTH, depth_problem
from engine.lang.template import compact_json, scalar_text
from engine.lang.mapping.arguments import Compile, _argument, _arguments, _choices, _option
from engine.lang.mapping.nodes import Apply, Node, Step
from engine.lang.mapping.templates import _template
from engine.lang.mapping.values import _a, _shown
from engine.config.yamlsource import join_pointer


def _case(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@case", ("operator", "value"))
    operator = _option(args, "operator", pointer, "@case", str, None, ("lower", "upper"))
    change = str.lower if operator == "lower" else str.upper

    def step(value: Any) -> Any:
        return change(value) if type(value) is str else value

    value = _argument(args, "value", pointer, compile_value)
    return Apply(f"@case({operator}, {value.source})", value, step)


def _replace(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@replace", ("pattern", "value"), ("replacement", "pattern2", "replacement2", "ignorecase", "global"))
    ignorecase = _option(args, "ignorecase", pointer, "@replace", bool, False)
    everywhere = _option(args, "global", pointer, "@replace", bool, True)
    pairs = [(_option(args, "pattern", pointer, "@replace", str, None), _option(args, "replacement", pointer, "@replace", str, ""))]
    if args.get("pattern2", "") != "":  # an empty second pattern is no second replacement, as in Segment
        pairs.append((_option(args, "pattern2", pointer, "@replace", str, None), _option(args, "replacement2", pointer, "@replace", str, "")))
    elif "replacement2" in args and "pattern2" not in args:
        raise ConfigError("@replace has replacement2 but no pattern2 to replace", join_pointer(pointer, "replacement2"))
    for key, (pattern, _) in zip(("pattern", "pattern2"), pairs):
        if pattern == "":
            raise ConfigError(f"@replace {key} is empty; give the text to replace", join_pointer(pointer, key))
    steps = tuple(_replacer(pattern, replacement, ignorecase, everywhere) for pattern, replacement in pairs)

    def step(value: Any) -> Any:
        if value is None:
            return ""  # Segment's result for null
        if type(value) in (bool, int, float):
            value = scalar_text(value)
        elif type(value) is not str:
            return value
        for replace in steps:
            value = replace(value)
        return value

    value = _argument(args, "value", pointer, compile_value)
    shown = ", ".join(f"{json.dumps(p, ensure_ascii=False)} -> {json.dumps(r, ensure_ascii=False)}" for p, r in pairs)
    flags = (", ignorecase" if ignorecase else "") + ("" if everywhere else ", first only")
    return Apply(f"@replace({value.source}, {shown}{flags})", value, step)


def _replacer(pattern: str, replacement: str, ignorecase: bool, everywhere: bool) -> Callable[[str], str]:
    """Literal (not regex) replacement of ``pattern``, every occurrence or the first."""
    if ignorecase:
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
        count = 0 if everywhere else 1
        return lambda text: regex.sub(lambda _: replacement, text, count=count)
    limit = -1 if everywhere else 1
    return lambda text: text.replace(pattern, replacement, limit)


def _json_directive(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@json", ("mode", "value"))
    mode = _option(args, "mode", pointer, "@json", str, None, ("encode", "decode"))
    value = _argument(args, "value", pointer, compile_value)
    return Apply(f"@json({mode}, {value.source})", value, compact_json if mode == "encode" else _decoded)


def _decoded(value: Any) -> Any:
    """The parsed JSON text, or the value itself when it is not a string of JSON.

    The text comes from the event, so what it decodes to is held to the event limits
    (depth, 64-bit integers): a payload must still encode, and every later walk is safe.
    """
    if type(value) is not str:
        return value
    try:
        decoded = json.loads(value, parse_constant=_no_constant)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        raise MappingFailure(f"@json decode: the text nests deeper than {MAX_DEPTH} levels of objects and arrays (the limit)") from None
    except ValueError:  # past Python's 4,300 digits for one integer
        raise MappingFailure("@json decode: the text holds an integer outside the 64-bit range; send it as a string") from None
    problem = depth_problem(decoded)
    if problem is not None:
        raise MappingFailure(f"@json decode: the text {problem}")
    return decoded


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _flatten(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@flatten", ("value",), ("separator", "omitArrays"))
    separator = _option(args, "separator", pointer, "@flatten", str, ".")
    omit_arrays = _option(args, "omitArrays", pointer, "@flatten", bool, False)
    nested = (dict,) if omit_arrays else (dict, list)

    def into(out: dict[str, Any], prefix: str | None, value: Any) -> None:
        for key, item in value.items() if type(value) is dict else enumerate(value):
            name = str(key) if prefix is None else f"{prefix}{separator}{key}"
            if type(item) in nested:
                into(out, name, item)
            else:
                out[name] = item

    def step(value: Any) -> Any:
        if type(value) not in nested:
            return value
        out: dict[str, Any] = {}
        into(out, None, value)
        return out

    value = _argument(args, "value", pointer, compile_value)
    return Apply(f"@flatten({value.source}, {json.dumps(separator)}{', omitArrays' if omit_arrays else ''})", value, step)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_UNIX_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


_MILLIS_PER = {"unix_s": 1000, "unix_ms": 1}


def _timestamp(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@timestamp", ("value", "from"))
    formats = _choices(args, "from", pointer, "@timestamp", tuple(_READERS))
    if "unix_s" in formats and "unix_ms" in formats:
        raise ConfigError(
            "@timestamp from lists both unix_s and unix_ms, but a number does not say whether it counts seconds or "
            "milliseconds, and actionmap never guesses; list the one your events send",
            join_pointer(pointer, "from", formats.index("unix_ms")),
        )
    value = _argument(args, "value", pointer, compile_value)
    if len(formats) == 1:
        step = _single(formats[0])
        shown = formats[0]
    else:
        step = _first_of(formats)
        shown = f"[{', '.join(formats)}]"
    return Apply(f"@timestamp({value.source}, from {shown})", value, step)


class _Unread(Exception):
    """One format cannot read the value; the message says what that format reads (or why the value is out of range)."""


def _single(name: str) -> Step:
    read = _READERS[name]

    def step(value: Any) -> str:
        try:
            return read(value)
        except _Unread as reason:
            raise MappingFailure(f"@timestamp from {name} cannot read {_a(value)}: {reason}") from None

    return step


def _first_of(names: tuple[str, ...]) -> Step:
    """The formats tried in the order listed: the first that reads the value gives the time."""
    readers = tuple((name, _READERS[name]) for name in names)

    def step(value: Any) -> str:
        reasons = []
        for name, read in readers:
            try:
                return read(value)
            except _Unread as reason:
                reasons.append(f"{name} ({reason})")
        raise MappingFailure(f"@timestamp cannot read {_a(value)} in any of the formats it tries, in order: {'; '.join(reasons)}")

    return step


def _from_iso(value: Any) -> str:
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # the operator asked for this conversion: no offset means UTC
            return _canonical(moment.astimezone(UTC))
        except (ValueError, OverflowError):
            pass
    raise _Unread("it is not an ISO 8601 date-time such as 2026-11-26T10:00:00Z")


_LARGEST_EXPONENT = 20
"""A number past 10^20 (seconds or milliseconds) is past year 9999 either way: refused before any arithmetic."""


def _from_unix(unit: str) -> Callable[[Any], str]:
    scale = _MILLIS_PER[unit]
    example = "1764151200" if unit == "unix_s" else "1764151200000"

    def read(value: Any) -> str:
        if type(value) in (int, float) and math.isfinite(value):
            number = Decimal(repr(value))  # repr: the float as written, not its binary expansion
        elif type(value) is str and _UNIX_TEXT.fullmatch(value):
            number = Decimal(value)
        else:
            raise _Unread(f"it is not a number or a string of digits such as {example}")
        try:
            if number.adjusted() > _LARGEST_EXPONENT:
                raise OverflowError
            # Exact: as many digits as the number has, so a long fraction never rounds up into the next millisecond.
            exact = Context(prec=len(number.as_tuple().digits) + 8, rounding=ROUND_FLOOR)
            millis = int(exact.multiply(number, scale).to_integral_value(rounding=ROUND_FLOOR, context=exact))
            return _canonical(_EPOCH + timedelta(milliseconds=millis))
        except OverflowError:
            raise _Unread(f"{_shown(value)} is outside years 0001-9999") from None

    return read


_READERS: dict[str, Callable[[Any], str]] = {"iso": _from_iso, "unix_s": _from_unix("unix_s"), "unix_ms": _from_unix("unix_ms")}
"""Every format ``@timestamp from`` names: each reads a value to canonical UTC text, or raises _Unread."""


def _canonical(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC, milliseconds truncated), the form fields emit."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


DIRECTIVES: dict[str, Callable[[Any, str, Compile], Node]] = {
    "@template": _template,
    "@case": _case,
    "@replace": _replace,
    "@json": _json_directive,
    "@flatten": _flatten,
    "@timestamp": _timestamp,
}
