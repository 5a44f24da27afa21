"""What OpenMeter's ingest endpoint accepts and how it answers: content types, the CloudEvent schema, problem bodies.

Pure functions, no HTTP and no state, so that the rules in
``reference/billing-platforms.md`` section 3 read in one place and can be tested
without a server. The layers are OpenMeter's own: the authenticator, then the
OpenAPI request validator (kin-openapi: the whole body against the schema, the first
error wins), then the ingest handler (the exact Content-Type comparison, the
CloudEvents decoding). Each layer words its errors its own way; where the reference
marks the exact text unverified, the decision is written beside it.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Final, Iterable

from engine.tools.emulator import matched_instant

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

ONE: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
JSON: Final = "application/json"
CONTENT_TYPES: Final = (ONE, BATCH, JSON)
"""The handler compares the Content-Type header with these by exact string (``; charset=utf-8`` is refused)."""

REQUIRED: Final = ("id", "source", "specversion", "type", "subject")
"""The spec's ``Event.required``, in its order: kin-openapi reports the first one missing."""
_STRINGS: Final = ("id", "source", "specversion", "type", "subject", "dataschema")
_NULLABLE: Final = frozenset({"time", "data", "datacontenttype", "dataschema"})
SPECVERSION: Final = "1.0"

# kin-openapi's date-time pattern would also pass a time without an offset, which the
# CloudEvents decoder then refuses; one check with the offset required stands for both.
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))\Z"
)
_DATE_TIME_ERROR: Final = 'string doesn\'t match the format "date-time" (RFC 3339 with an offset, like 2026-01-31T12:00:00Z)'


# -- the problem body (pkg/models/problem.go) ------------------------------------------


def problem(status: int, detail: str = "", instance: str | None = None) -> dict[str, Any]:
    """RFC 7807 as OpenMeter's ``StatusProblem`` encodes it: ``detail`` and ``instance`` omitted when empty.

    Like OpenMeter, a 500 carries no detail (``NewStatusProblem`` blanks it).
    """
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    if detail and status != 500:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    return body


class RequestIds:
    """chi's ``middleware.RequestID`` values, ``host/<10 random base62>-000001``, for a problem's ``instance``.

    The handlers' errors carry ``urn:request:<id>``; the request validator's do not (it
    answers with ``context.Background()``, so ``instance`` is empty and omitted).
    """

    def __init__(self, host: str = "openmeter-emulator") -> None:
        alphabet = string.ascii_letters + string.digits
        self._prefix = f"{host}/" + "".join(secrets.choice(alphabet) for _ in range(10))
        self._next = 0
        self._lock = threading.Lock()

    def instance(self) -> str:
        with self._lock:
            self._next += 1
            return f"urn:request:{self._prefix}-{self._next:06d}"


# -- time -------------------------------------------------------------------------------


def parse_time(text: str) -> tuple[datetime, str] | None:
    """The instant and its fraction digits (up to nanoseconds, as Go keeps them), or None when not RFC 3339."""
    m = _RFC3339.match(text)
    instant = None if m is None else matched_instant(m)
    if m is None or instant is None:
        return None
    return instant, m.group(7) or ""


def go_time(instant: datetime, fraction: str | None = None) -> str:
    """``time.Time`` as Go's JSON encoder writes it in UTC (RFC3339Nano: no trailing zeros, ``Z``)."""
    utc = instant.astimezone(timezone.utc)
    digits = (f"{utc.microsecond:06d}" if fraction is None else fraction).rstrip("0")
    return f"{utc:%Y-%m-%dT%H:%M:%S}" + (f".{digits}" if digits else "") + "Z"


def normalized_time(text: str) -> str:
    """An accepted event's ``time`` as OpenMeter stores and lists it: converted to UTC, precision kept."""
    parsed = parse_time(text)
    if parsed is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    return go_time(*parsed)


# -- the body ---------------------------------------------------------------------------


def invalid_content_type(content_type: str) -> str | None:
    """The handler's detail for a Content-Type it does not take (exact comparison), or None."""
    return None if content_type in CONTENT_TYPES else f"invalid content type: {content_type}"


def decode(raw: bytes) -> tuple[Any, str | None]:
    """The JSON body and None, or None and the validator's detail (kin-openapi decodes before it validates)."""
    if not raw.strip():
        return None, "request body has an error: value is required but missing"
    try:
        return json.loads(raw, parse_constant=_reject_constant), None
    except (ValueError, RecursionError) as error:
        return None, f"request body has an error: failed to decode request body: {error}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


class Schema:
    """The ``Event`` schema as kin-openapi checks it: the first error, worded as OpenMeter's 400 ``detail`` says it.

    ``forbidden_data_keys`` stands for a namespace whose event schema closes ``data``
    (``additionalProperties: false`` on those keys): an event carrying one is refused
    with kin-openapi's ``property "KEY" is unsupported``. OpenMeter Cloud does not do
    this by default; it is the emulator's way to poison one event that only the
    server can refuse (the plugin cannot know the namespace's rules).
    """

    def __init__(self, forbidden_data_keys: Iterable[str] = ()) -> None:
        self.forbidden_data_keys = frozenset(forbidden_data_keys)

    def events(self, content_type: str, body: Any) -> tuple[list[Any], str | None]:
        """The request's events and None, or [] and the validator's detail (``request body has an error: ...``)."""
        if content_type == ONE:
            error = self._root(body, "object")
            return ([body], None) if error is None else ([], error)
        if content_type == BATCH:
            error = self._root(body, "array")
            return (list(body), None) if error is None else ([], error)
        if not isinstance(body, (dict, list)) or self._root(body, "object" if isinstance(body, dict) else "array"):
            # application/json is oneOf [Event, Event[]]: kin-openapi names neither branch's reason
            return [], 'request body has an error: doesn\'t match schema: value doesn\'t match any schema from "oneOf"'
        return ([body] if isinstance(body, dict) else list(body)), None

    def _root(self, body: Any, shape: str) -> str | None:
        if shape == "array":
            if not isinstance(body, list):
                return _schema_error("", "value must be an array")
            for index, event in enumerate(body):
                found = self.event_error(f"/{index}", event)
                if found:
                    return _schema_error(*found)
            return None
        found = self.event_error("", body)
        return _schema_error(*found) if found else None

    def event_error(self, where: str, event: Any) -> tuple[str, str] | None:
        """(JSON pointer, reason) of the first thing wrong with one event, or None."""
        if not isinstance(event, dict):
            return where, "value must be an object"
        for name in sorted(event):  # kin-openapi visits the properties in key order, then the required list
            found = self._property_error(f"{where}/{name}", name, event[name])
            if found:
                return found
        for name in REQUIRED:
            if name not in event:
                return where, f"property {json.dumps(name)} is missing"
        return None

    def _property_error(self, where: str, name: str, value: Any) -> tuple[str, str] | None:
        if value is None:
            return None if name in _NULLABLE else (where, "Value is not nullable")
        if name in _STRINGS or name in ("time", "datacontenttype"):
            if not isinstance(value, str):
                return where, "value must be a string"
            if name in _STRINGS and not value:
                return where, "minimum string length is 1"
        if name == "time" and parse_time(value) is None:
            return where, _DATE_TIME_ERROR
        if name == "datacontenttype" and value != "application/json":
            return where, 'value is not one of the allowed values ["application/json"]'
        if name == "data":
            if not isinstance(value, dict):
                return where, "value must be an object"
            for key in sorted(value):
                if key in self.forbidden_data_keys:
                    return where, f"property {json.dumps(key)} is unsupported"
        return None


def _schema_error(where: str, reason: str) -> str:
    at = f'Error at "{where}": ' if where else ""
    return f"request body has an error: doesn't match schema: {at}{reason}"


def handler_error(content_type: str, events: list[Any]) -> str | None:
    """What the ingest handler refuses after the validator passed the body (``invalid event: ...``), or None.

    Its errors carry the request id as ``instance``. An empty ``application/json`` array
    is "no events found" (``ingest.go``); an empty batch is accepted and stores nothing.
    The CloudEvents decoder takes only spec version 1.0 here (0.3 is not offered).
    """
    if content_type == JSON and not events:
        return "invalid event: no events found"
    for event in events:
        if event["specversion"] != SPECVERSION:
            return (f"invalid event: specversion: unsupported value {json.dumps(event['specversion'])}: "
                    f"expected {json.dumps(SPECVERSION)}")
    return None


def as_stored(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The event as OpenMeter keeps it: ``time`` in UTC (now when missing), null optional attributes dropped."""
    kept = {name: value for name, value in event.items() if value is not None}
    kept["time"] = normalized_time(kept["time"]) if "time" in kept else go_time(now)
    return kept


def dedupe_key(event: dict[str, Any]) -> tuple[str, str]:
    """OpenMeter deduplicates by namespace, source and id (``dedupe.Item.Key``); one namespace here."""
    return event["source"], event["id"]
