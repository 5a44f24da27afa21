"""A datetime field at the moment of sending: how it is written on the wire (``send_as``) and its window.

A datetime is checked and normalised as canonical UTC text (``2026-01-01T00:00:00.000Z``);
a destination that wants Unix seconds or no fraction declares ``send_as`` and the payload
holds the value as sent, so preview, dry runs and dead letters show what goes out. The
window (``engine.presend``) reads the sent value back to canonical text to compare it.
Seconds are truncated, never rounded, as fractions of milliseconds are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from engine.config.yamlsource import join_pointer
from engine.errors import ConfigError
from engine.lang.fields.problems import _json

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _instant(canonical: str) -> datetime:
    return datetime.fromisoformat(canonical)


def _millis(canonical: str) -> int:
    delta = _instant(canonical) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _canonical_of_millis(millis: int) -> str | None:
    try:
        instant = datetime.fromtimestamp(millis / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return f"{instant.year:04d}-{instant:%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"  # %Y does not pad years before 1000


@dataclass(frozen=True)
class TimeFormat:
    """One ``send_as``: canonical text -> the value sent, and the value sent -> canonical text (None if it is not one)."""

    name: str
    example: str
    write: Callable[[str], Any]
    read: Callable[[Any], "str | None"]


def _integer(value: Any) -> int | None:
    return value if type(value) is int else None


def _digits(value: Any) -> int | None:
    return int(value) if type(value) is str and value.lstrip("-").isdigit() else None


def _via(number: Callable[[Any], "int | None"], scale: int) -> Callable[[Any], "str | None"]:
    def read(value: Any) -> str | None:
        count = number(value)
        return None if count is None else _canonical_of_millis(count * scale)

    return read


TIME_FORMATS: dict[str, TimeFormat] = {
    "rfc3339_ms": TimeFormat("rfc3339_ms", '"2026-01-01T00:00:00.000Z"', lambda text: text,
                             lambda value: value if type(value) is str else None),
    "rfc3339": TimeFormat("rfc3339", '"2026-01-01T00:00:00Z"', lambda text: text[:19] + "Z",
                          lambda value: value[:19] + ".000Z" if type(value) is str and len(value) == 20 else None),
    "unix_seconds": TimeFormat("unix_seconds", "1767225600", lambda text: _millis(text) // 1000, _via(_integer, 1000)),
    "unix_seconds_string": TimeFormat("unix_seconds_string", '"1767225600"', lambda text: str(_millis(text) // 1000),
                                      _via(_digits, 1000)),
    "unix_milliseconds": TimeFormat("unix_milliseconds", "1767225600000", _millis, _via(_integer, 1)),
}
"""Every ``send_as`` a datetime field may declare; ``rfc3339_ms`` is the default."""

DEFAULT = TIME_FORMATS["rfc3339_ms"]


def time_format(decl: Mapping[str, Any], pointer: str) -> TimeFormat:
    """The declared ``send_as`` of a datetime field (how it goes on the wire), RFC 3339 with milliseconds by default."""
    if "send_as" not in decl:
        return DEFAULT
    name = decl["send_as"]
    if decl.get("type") != "datetime":
        raise ConfigError("send_as applies to datetime fields: it says how the time is written", join_pointer(pointer, "send_as"))
    if not isinstance(name, str) or name not in TIME_FORMATS:
        raise ConfigError(f"unknown send_as {_json(name)}; known: {', '.join(TIME_FORMATS)}", join_pointer(pointer, "send_as"))
    return TIME_FORMATS[name]


_LONGEST = timedelta(days=36_525)
_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Window:
    """How far back and ahead of the moment of sending a datetime field's value may be (checked by ``engine.presend``)."""

    field: str
    past: timedelta
    future: timedelta
    text: str  # "34d back to 24h ahead", for messages
    read: Callable[[Any], "str | None"] = DEFAULT.read  # the value as sent (``send_as``) -> canonical UTC text


def window_of(decl: Mapping[str, Any], name: str, pointer: str) -> Window | None:
    if "window" not in decl:
        return None
    window, at = decl["window"], join_pointer(pointer, "window")
    if not isinstance(window, Mapping) or set(window) != {"past", "future"}:
        raise ConfigError(f"window takes past and future durations, as {{past: 34d, future: 24h}}, not {_json(window)}", at)
    spans = []
    for key in ("past", "future"):
        text = window[key]
        match = _DURATION.fullmatch(text) if type(text) is str else None
        if match is None:
            raise ConfigError(f"window {key} must be a number and a unit (s, m, h or d), as 34d or 24h, not {_json(text)}", join_pointer(at, key))
        try:
            span = timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
        except OverflowError:
            span = _LONGEST * 2
        if span > _LONGEST:  # the edge is computed from the clock at each send: it must stay a date
            raise ConfigError(f"window {key} {text} is longer than 100 years; no destination's window is", join_pointer(at, key))
        spans.append(span)
    return Window(name, spans[0], spans[1], f"{window['past']} back to {window['future']} ahead", time_format(decl, pointer).read)
