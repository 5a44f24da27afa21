"""Type checks, each with its size or range bounds so a field is one call; datetimes to UTC milliseconds."""

from __future__ import annotations

import calendar
import math
import re
from datetime import datetime, timedelta
from typing import Any, Callable

from engine.lang.fields.coercions import _NUMBER_TEXT
from engine.lang.fields.problems import _count, _Invalid, _json, Step


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
