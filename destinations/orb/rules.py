"""What Orb's ingest API accepts, and how it says no: the error envelopes, the per-event rules, the read-back shape.

Pure functions over parsed JSON and an injected "now", apart from the sockets, so
that the rules of ``reference/billing-platforms.md`` section 1 read in one place.
Where the reference says "unverified", the decision is written beside the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Final

from engine.tools.emulator import json_type

ERRORS: Final = "https://docs.withorb.com/reference/error-responses"
VALIDATION: Final = f"{ERRORS}#400-request-validation-errors"
TYPES: Final[dict[int, tuple[str, str]]] = {
    # status -> (the `type` URI the SDK dispatches its exception class on, the title)
    400: (VALIDATION, "Request validation error"),
    401: (f"{ERRORS}#401-authentication-error", "Authentication error"),
    404: (f"{ERRORS}#404-url-not-found", "URL not found"),
    409: (f"{ERRORS}#409-resource-conflict", "Resource conflict"),
    413: (f"{ERRORS}#413-request-too-large", "Request too large"),
    429: (f"{ERRORS}#429-too-many-requests", "Too many requests"),
    500: (f"{ERRORS}#500-internal-server-error", "Internal server error"),
}

FUTURE: Final = timedelta(minutes=5)
DEFAULT_GRACE: Final = timedelta(hours=12)
# The account grace period's default is unverified (Orb sets it per account): the
# emulator takes it as an option, 12 hours unless told otherwise.
DEFAULT_MAX_EVENTS: Final = 500
# Orb documents no per-request maximum; 500 is what NangoHQ batches at ("Orb limit
# the number of events per batch to 500"), unverified from Orb. The emulator answers
# a longer request 413 request-too-large, so a plugin that overfills a request is seen.
SEARCH_DEFAULT_SPAN: Final = timedelta(weeks=1)

_EVENT_KEYS: Final = frozenset({"event_name", "idempotency_key", "timestamp", "properties",
                                "customer_id", "external_customer_id"})
_REQUIRED: Final = ("event_name", "idempotency_key", "timestamp", "properties")
_ISO: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:[.,]([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?\Z"
)


def envelope(status: int, detail: str, validation_errors: list[Any] | None = None) -> dict[str, Any]:
    """Orb's error body: ``type``, ``status``, ``title``, ``detail`` (+ ``validation_errors`` on a 400).

    Statuses Orb has no type for (502, 503, 504: a gateway's) get the 500 type, which
    the SDK maps to the same exception class as any 5xx.
    """
    uri, title = TYPES.get(status) or (TYPES[500][0] if status >= 500 else f"{ERRORS}#{status}", HTTPStatus(status).phrase)
    body: dict[str, Any] = {"type": uri, "status": status, "title": title, "detail": detail}
    if status == 400:
        body["validation_errors"] = validation_errors if validation_errors is not None else [detail]
    return body


def parse_time(text: str) -> datetime | None:
    """The instant an ISO 8601 date-time names, or None; no offset means UTC (Orb asks for UTC without one)."""
    m = _ISO.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset)).astimezone(timezone.utc)
    except ValueError:
        return None


def utc_text(instant: datetime) -> str:
    """An instant as Orb shows it on read-back: UTC, ``Z``, milliseconds only when there are any."""
    utc = instant.astimezone(timezone.utc)
    fraction = f".{utc.microsecond // 1000:03d}" if utc.microsecond else ""
    return f"{utc:%Y-%m-%dT%H:%M:%S}{fraction}Z"


@dataclass(frozen=True)
class Account:
    """The settings of the emulated Orb account that the rules depend on."""

    grace_period: timedelta = DEFAULT_GRACE
    customers: frozenset[str] = field(default_factory=frozenset)  # Orb customer ids a `customer_id` may name
    max_events: int | None = DEFAULT_MAX_EVENTS


@dataclass(frozen=True)
class Verdict:
    """What an ingest body comes to: its events when all are valid, else the answer's status and entries."""

    events: list[dict[str, Any]]
    status: int = 200
    detail: str = ""
    errors: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200


def _body_problem(body: Any, account: Account) -> Verdict | None:
    """A problem with the request as a whole (no event to name): 400 with plain-text entries, or 413."""
    if not isinstance(body, dict):
        return Verdict([], 400, f'the body must be a JSON object {{"events": [...]}}, not {json_type(body)}')
    extra = sorted(set(body) - {"events"})
    if extra:
        return Verdict([], 400, f"the body has unknown field(s) {', '.join(map(repr, extra))}: only 'events' is allowed")
    events = body.get("events")
    if not isinstance(events, list):
        return Verdict([], 400, f"'events' is required and must be an array of events, not {json_type(events)}")
    if account.max_events is not None and len(events) > account.max_events:
        return Verdict([], 413, f"the request carries {len(events)} events; at most {account.max_events} are accepted in one request")
    return None


def check_ingest(body: Any, account: Account, now: datetime) -> Verdict:
    """Orb's validation of ``POST /v1/ingest``: any failing event rejects the whole request (400).

    Decision (unverified): nothing of a rejected request is stored, as the ingest
    docstring implies ("a failing event's key is not marked as processed"); the
    sender resends the valid events without the ones named.
    """
    problem = _body_problem(body, account)
    if problem is not None:
        return Verdict([], problem.status, problem.detail, [problem.detail])
    events: list[dict[str, Any]] = body["events"]
    earliest, latest = now - account.grace_period, now + FUTURE
    failed: dict[Any, list[str]] = {}
    seen: dict[str, Any] = {}
    for event in events:
        key = event.get("idempotency_key") if isinstance(event, dict) else None
        key = key if isinstance(key, str) and key else None
        found = event_errors(event, account, earliest, latest)
        if key is not None and key in seen and seen[key] != event:
            found.append(f"idempotency_key {key!r} appears more than once in this request with different event bodies")
        if key is not None:
            seen.setdefault(key, event)
        if found:
            failed.setdefault(key, []).extend(found)
    if not failed:
        return Verdict(events)
    entries = [{"idempotency_key": key, "validation_errors": texts} for key, texts in failed.items()]
    detail = (f"{len(entries)} event(s) of {len(events)} failed validation; nothing in this request was ingested. "
              "Fix the events named in validation_errors and send them again with the same idempotency keys")
    return Verdict([], 400, detail, entries)


def event_errors(event: Any, account: Account, earliest: datetime, latest: datetime) -> list[str]:
    """Why one event is invalid (empty when it is valid), in words that name the field and the value."""
    if not isinstance(event, dict):
        return [f"each event must be a JSON object, not {json_type(event)}"]
    found = [f"unknown field {name!r}: an event has only {', '.join(sorted(_EVENT_KEYS))}"
             for name in sorted(set(event) - _EVENT_KEYS)]
    for name in _REQUIRED:
        if name not in event:
            found.append(f"field {name!r} is required")
    for name in ("event_name", "idempotency_key"):
        value = event.get(name)
        if name in event and (not isinstance(value, str) or not value):
            found.append(f"field {name!r} must be a non-empty string, not {json_type(value) if value != '' else 'an empty string'}")
    if "timestamp" in event:
        found.extend(_timestamp_errors(event["timestamp"], earliest, latest))
    if "properties" in event:
        found.extend(_property_errors(event["properties"]))
    found.extend(_customer_errors(event, account))
    return found


def _timestamp_errors(value: Any, earliest: datetime, latest: datetime) -> list[str]:
    instant = parse_time(value) if isinstance(value, str) else None
    if instant is None:
        return [f"field 'timestamp' must be an ISO 8601 date-time in UTC, like 2020-12-09T16:09:53Z, not {value!r}"]
    if instant < earliest:
        # the wording Orb answers with (NangoHQ/nango#6210); the text after "backfill" is ours
        return [f"Event timestamp {instant.isoformat()} must be later than {earliest.isoformat()} based on account "
                "grace period. To ingest an event older than the account grace period, create a backfill: "
                "POST /v1/events/backfills, then ingest with its backfill_id"]
    if instant > latest:
        return [f"Event timestamp {instant.isoformat()} must be earlier than {latest.isoformat()}: "
                "events may be at most 5 minutes in the future"]
    return []


def _property_errors(properties: Any) -> list[str]:
    if not isinstance(properties, dict):
        return [f"field 'properties' must be an object ({{}} when there are none), not {json_type(properties)}"]
    # null is refused too (unverified): the spec types the values as number, boolean or string
    return [f"property {key!r} is {json_type(value)}: property values must be numbers, booleans or strings "
            "(nested objects and arrays are not allowed)"
            for key, value in properties.items() if json_type(value) not in ("number", "boolean", "string")]


def _customer_errors(event: dict[str, Any], account: Account) -> list[str]:
    given = [name for name in ("customer_id", "external_customer_id") if event.get(name) is not None]
    if len(given) != 1:
        return [f"exactly one of 'customer_id' and 'external_customer_id' must be given, not {len(given)}"]
    value = event[given[0]]
    if not isinstance(value, str) or not value:
        return [f"field {given[0]!r} must be a non-empty string, not {json_type(value)}"]
    if given[0] == "customer_id" and value not in account.customers:
        return [f"customer_id {value!r} names no customer of this account (use external_customer_id for your own ids)"]
    return []


def as_event(payload: dict[str, Any]) -> dict[str, Any]:
    """A stored event as ``POST /v1/events/search`` shows it: its idempotency key is its ``id``."""
    instant = parse_time(payload["timestamp"])
    assert instant is not None  # stored events were validated
    return {
        "id": payload["idempotency_key"],
        "customer_id": payload.get("customer_id"),
        "external_customer_id": payload.get("external_customer_id"),
        "event_name": payload["event_name"],
        "properties": payload["properties"],
        "timestamp": utc_text(instant),
        "deprecated": False,
    }


@dataclass(frozen=True)
class Search:
    """A valid search: the ids wanted and the timeframe [start, end) the events' timestamps must lie in."""

    ids: list[str]
    start: datetime
    end: datetime

    def matches(self, payload: dict[str, Any]) -> bool:
        instant = parse_time(payload["timestamp"])
        return instant is not None and self.start <= instant < self.end


def check_search(body: Any, now: datetime) -> Search | str:
    """The search a ``POST /v1/events/search`` body asks for, or what is wrong with it."""
    if not isinstance(body, dict):
        return f'the body must be a JSON object {{"event_ids": [...]}}, not {json_type(body)}'
    extra = sorted(set(body) - {"event_ids", "timeframe_start", "timeframe_end"})
    if extra:
        return f"the body has unknown field(s) {', '.join(map(repr, extra))}"
    ids = body.get("event_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return "'event_ids' is required: a non-empty array of idempotency keys (strings)"
    bounds: list[datetime] = []
    for name, default in (("timeframe_start", now - SEARCH_DEFAULT_SPAN), ("timeframe_end", now)):
        value = body.get(name)
        instant = default if value is None else parse_time(value) if isinstance(value, str) else None
        if instant is None:
            return f"{name!r} must be an ISO 8601 date-time, not {value!r}"
        bounds.append(instant)
    return Search(list(dict.fromkeys(ids)), bounds[0], bounds[1])
