"""What Metronome's ingest API accepts: the request limits, the per-event rules and their messages.

Its own module so that the rules ``reference/metronome-ingest.md`` describes read
in one place, apart from the emulator's state and the shared core (``engine.tools.emulator``:
sockets, body decoding, faults, rate limit); it holds no state of its own.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from engine.tools.emulator import json_type, matched_instant

MAX_EVENTS: Final = 100
MAX_TRANSACTION_ID: Final = 128
MAX_PROPERTIES: Final = 2000
PAST_WINDOW: Final = timedelta(days=34)
FUTURE_WINDOW: Final = timedelta(hours=24)
_REQUIRED: Final = ("transaction_id", "customer_id", "event_type", "timestamp")
_MAX_ERRORS_SHOWN: Final = 20

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)


def _json_type(value: Any) -> str:
    return json_type(value, integer="integer")


def _parse_rfc3339(text: str) -> datetime | None:
    """The instant an RFC 3339 date-time names (4-digit year, offset required), or None."""
    m = _RFC3339.match(text)
    return None if m is None else matched_instant(m)


def iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Validator:
    """Metronome's per-request rules, with messages in its bracketed style naming index and field."""

    def __init__(self, property_value_limit: int | None) -> None:
        self.property_value_limit = property_value_limit

    def errors(self, body: Any, now: datetime) -> list[str]:
        if not isinstance(body, list):
            return [f"#: expected a JSON array of 1 to {MAX_EVENTS} events, got {_json_type(body)}"]
        if not body:
            return ["array is too short: must have at least 1 elements but instance has 0 elements"]
        if len(body) > MAX_EVENTS:
            return [f"array is too long: must have at most {MAX_EVENTS} elements but instance has {len(body)} elements"]
        earliest, latest = now - PAST_WINDOW, now + FUTURE_WINDOW
        found: list[str] = []
        for index, event in enumerate(body):
            found.extend(self._event_errors(f"#/{index}", event, earliest, latest))
        return found

    def _event_errors(self, where: str, event: Any, earliest: datetime, latest: datetime) -> list[str]:
        if not isinstance(event, dict):
            return [f"{where}: expected an event object, got {_json_type(event)}"]
        found: list[str] = []
        absent = [name for name in _REQUIRED if name not in event]
        if absent:
            found.append(f"{where}: object has missing required properties ({json.dumps(absent)})")
        for name in _REQUIRED:
            if name in absent:
                continue
            value = event[name]
            if not isinstance(value, str):
                found.append(f"{where}/{name}: expected type string, got {_json_type(value)}")
            elif name == "timestamp":
                found.extend(self._timestamp_errors(where, value, earliest, latest))
            elif not value:
                found.append(f"{where}/{name}: string is too short: "
                             "must have at least 1 characters but instance has 0 characters")
            elif name == "transaction_id" and len(value) > MAX_TRANSACTION_ID:
                found.append(
                    f"{where}/{name}: string is too long: must have at most {MAX_TRANSACTION_ID} characters "
                    f"but instance has {len(value)} characters"
                )
        if "properties" in event:
            found.extend(self._properties_errors(where, event["properties"], event.get("transaction_id")))
        return found

    @staticmethod
    def _timestamp_errors(where: str, value: str, earliest: datetime, latest: datetime) -> list[str]:
        instant = _parse_rfc3339(value)
        if instant is None:
            return [
                f"{where}/timestamp: {json.dumps(value)} is not an RFC 3339 date-time with a 4-digit year "
                f"and an offset, like 2026-01-31T12:00:00Z or 2026-01-31T13:00:00+01:00"
            ]
        if instant < earliest:
            return [f"{where}/timestamp: {value} is more than 34 days in the past; the earliest accepted now is {iso(earliest)}"]
        if instant > latest:
            return [f"{where}/timestamp: {value} is more than 24 hours in the future; the latest accepted now is {iso(latest)}"]
        return []

    def _properties_errors(self, where: str, properties: Any, transaction_id: Any) -> list[str]:
        if not isinstance(properties, dict):
            return [f"{where}/properties: expected type object, got {_json_type(properties)}"]
        if len(properties) > MAX_PROPERTIES:
            return [
                f"{where}/properties: object has too many properties: must have at most {MAX_PROPERTIES} "
                f"but instance has {len(properties)}"
            ]
        limit = self.property_value_limit
        if limit is None:
            return []
        found = []
        for key, value in properties.items():
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
            if size > limit:
                pointer = key.replace("~", "~0").replace("/", "~1")
                found.append(
                    f"{where}/properties/{pointer}: the value of property {json.dumps(key)} of the event with "
                    f"transaction_id {json.dumps(transaction_id)} is {size} bytes as JSON; at most {limit} bytes are accepted"
                )
        return found


def bracketed(errors: list[str]) -> str:
    shown = errors[:_MAX_ERRORS_SHOWN]
    more = len(errors) - len(shown)
    return "[" + ", ".join(shown) + (f", ... and {more} more" if more else "") + "]"
