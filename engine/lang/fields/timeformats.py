"""How a datetime field is written on the wire (``send_as``), and read back for the window check.

A datetime is checked and normalised as canonical UTC text (``2026-01-01T00:00:00.000Z``);
a destination that wants Unix seconds or no fraction declares ``send_as`` and the payload
holds the value as sent, so preview, dry runs and dead letters show what goes out. The
window (``engine.presend``) reads the sent value back to canonical text to compare it.
Seconds are truncated, never rounded, as fractions of milliseconds are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

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
    return f"{instant:%Y-%m-%dT%H:%M:%S}.{millis % 1000:03d}Z"


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
