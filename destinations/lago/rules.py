"""What Lago's event API accepts and how it answers: per-event rules, batch atomicity, dedup, envelopes, the event object.

Pure functions over parsed bodies, no HTTP and no state, so the rules read in one place.
They follow lago-api (``Events::CreateBatchService``, ``Events::CreateService``, the
``EventsController``'s strong parameters, ``ApiErrors``, ``V1::EventSerializer``) as
``reference/billing-platforms.md`` section 2 quotes it. Decisions where the source
does not settle a point are marked "decision".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Callable, Final, Iterable, Mapping

from destinations.lago.expression import ExpressionError, Node, evaluate, parse

MAX_EVENTS: Final = 100  # LAGO_EVENTS_BATCH_MAX_LENGTH's default
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Ruby's Float() of a string: surrounding blanks, underscores between digits, an exponent (hexadecimal left out).
_RUBY_FLOAT: Final = re.compile(r"\s*[+-]?[0-9]+(?:_[0-9]+)*(?:\.[0-9]+(?:_[0-9]+)*)?(?:[eE][+-]?[0-9]+)?\s*\Z")
_SCALAR: Final = (str, int, float, bool)

Details = dict[str, Any]
"""``error_details``: field -> codes for one event, or index (as a string) -> that or a text, for a batch."""


@dataclass(frozen=True)
class Metric:
    """A billable metric with an expression: Lago evaluates it at ingest into ``properties[field_name]``."""

    code: str
    field_name: str
    expression: str
    tree: Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree", parse(self.expression))

    @classmethod
    def from_text(cls, text: str) -> Metric:
        """``CODE:FIELD=EXPRESSION``, as the command line's ``--metric`` takes it."""
        head, sep, expression = text.partition("=")
        code, colon, field_name = head.partition(":")
        if not (sep and colon and code.strip() and field_name.strip() and expression.strip()):
            raise ValueError(f"a metric is CODE:FIELD=EXPRESSION (e.g. api_call:units=event.properties.n * 2), not {text!r}")
        return cls(code.strip(), field_name.strip(), expression.strip())


@dataclass(frozen=True)
class Event:
    """An accepted event as Lago keeps it: the fields after strong parameters, casting and the expression."""

    transaction_id: str
    external_subscription_id: str | None
    code: str
    timestamp: datetime
    properties: dict[str, Any]
    precise_total_amount_cents: str | None

    @property
    def key(self) -> tuple[str, str] | None:
        """The unique index (external_subscription_id, transaction_id); None when it cannot collide.

        Postgres treats NULLs in a unique index as distinct, so an event without a
        subscription is never a duplicate.
        """
        return None if self.external_subscription_id is None else (self.external_subscription_id, self.transaction_id)


# -- envelopes (``ApiErrors``) ---------------------------------------------------------------


def envelope(status: int, error: str | None = None, code: str | None = None) -> dict[str, Any]:
    """``{"status": 401, "error": "Unauthorized"}``, with ``code`` when the answer has one."""
    body: dict[str, Any] = {"status": status, "error": error or HTTPStatus(status).phrase}
    if code is not None:
        body["code"] = code
    return body


def validation_errors(details: Details | str) -> dict[str, Any]:
    return {**envelope(422, code="validation_errors"), "error_details": details}


def not_found(resource: str) -> dict[str, Any]:
    return envelope(404, code=f"{resource}_not_found")


def bad_request(message: str) -> dict[str, Any]:
    """Rails' ParameterMissing and parse errors (the exact text after ``BadRequest: `` is unverified)."""
    return envelope(400, f"BadRequest: {message}")


MISSING_EVENT: Final = "param is missing or the value is empty: event"


# -- casting (strong parameters and ActiveRecord) -----------------------------------------------


def _as_string(value: Any) -> str | None:
    """A permitted scalar as a string column keeps it (true -> "t", as ActiveModel casts); anything else is dropped."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _SCALAR):
        return str(value)
    return None


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _timestamp(value: Any, received: datetime) -> datetime | None:
    """``Time.zone.at(Float(ts))``, kept to the millisecond; None where Ruby raises (``invalid_format``).

    Absent, null, false, or an object/array (dropped by strong parameters): the time received.
    A boolean true is ``invalid_format`` (decision: Ruby raises TypeError, a 500).
    """
    if value is None or value is False or isinstance(value, (dict, list)):
        return received
    if value is True:
        return None
    if isinstance(value, str):
        if not _RUBY_FLOAT.match(value):
            return None
        value = value.replace("_", "")
    try:
        millis = int((Decimal(str(value).strip()) * 1000).to_integral_value(rounding="ROUND_FLOOR"))
        return _EPOCH + timedelta(milliseconds=millis)
    except (ArithmeticError, OverflowError, ValueError):
        return None


def _cents(value: Any) -> str | None:
    """``precise_total_amount_cents``: a decimal column, so a number or numeric string, else null (decision)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text if _RUBY_FLOAT.match(text) else None


def ruby_decimal(value: Decimal) -> str:
    """A BigDecimal as Rails writes it to JSON: plain notation, at least one decimal ("12.0")."""
    text = format(value.normalize() if value == value.to_integral_value() else value, "f")
    return text if "." in text else f"{text}.0"


# -- one event, and a batch ---------------------------------------------------------------------


def read_event(item: Mapping[str, Any], received: datetime, metrics: Mapping[str, Metric]) -> Event | Details | str:
    """The accepted event, or its errors: field codes (a dict) or the expression's failure (a string).

    The order is Lago's: the timestamp first (a bad one is all that is said), then the
    expression, then presence (which, when it fails, replaces the expression's error).
    """
    timestamp = _timestamp(item.get("timestamp"), received)
    if timestamp is None:
        return {"timestamp": ["invalid_format"]}
    properties = item.get("properties")
    event = Event(
        transaction_id=_as_string(item.get("transaction_id")) or "",
        external_subscription_id=_as_string(item.get("external_subscription_id")),
        code=_as_string(item.get("code")) or "",
        timestamp=timestamp,
        properties=dict(properties) if isinstance(properties, dict) else {},
        precise_total_amount_cents=_cents(item.get("precise_total_amount_cents")),
    )
    found: Details | str = {}
    metric = metrics.get(event.code)
    if metric is not None:
        seconds = int((timestamp - _EPOCH).total_seconds())
        try:
            value = evaluate(metric.tree, event.code, seconds, event.properties)
            event.properties[metric.field_name] = ruby_decimal(value) if isinstance(value, Decimal) else value
        except ExpressionError as error:
            found = f"expression_evaluation_failed: {error}"
    blank = {name: ["value_is_mandatory"] for name in ("transaction_id", "code") if _blank(getattr(event, name))}
    return blank or found or event


def batch_items(body: Any) -> list[dict[str, Any]] | None:
    """The events of a batch body after strong parameters (non-objects dropped); None when there are none."""
    events = body.get("events") if isinstance(body, dict) else None
    items = [item for item in events if isinstance(item, dict)] if isinstance(events, list) else []
    return items or None


def check_batch(body: Any, received: datetime, metrics: Mapping[str, Metric]) -> list[Event] | Details:
    """Every event of a batch, or the ``error_details`` that reject the whole of it (nothing is stored then)."""
    items = batch_items(body)
    if items is None:
        return {"events": ["no_events"]}
    if len(items) > MAX_EVENTS:
        return {"events": ["too_many_events"]}
    events: list[Event] = []
    errors: Details = {}
    for index, item in enumerate(items):
        outcome = read_event(item, received, metrics)
        if isinstance(outcome, Event):
            events.append(outcome)
        else:
            errors[str(index)] = outcome
    return errors or events


def already_exist(events: Iterable[Event], exists: Callable[[tuple[str, str]], bool]) -> Details:
    """The events whose unique key is stored already, or taken by an earlier event of the same batch, by index.

    Decision: every such event is named (lago-api rescues RecordNotUnique per event and
    rolls the batch back; whether Postgres lets the later saves run is unverified).
    """
    seen: set[tuple[str, str]] = set()
    found: Details = {}
    for index, event in enumerate(events):
        key = event.key
        if key is None:
            continue
        if key in seen or exists(key):
            found[str(index)] = {"transaction_id": ["value_already_exist"]}
        seen.add(key)
    return found


# -- the event object (``V1::EventSerializer``) ------------------------------------------------------


def iso_ms(instant: datetime) -> str:
    utc = instant.astimezone(timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def event_object(event: Event, lago_id: str, created_at: datetime) -> dict[str, Any]:
    """The event as Lago shows it; customer and subscription ids are null (they are resolved asynchronously)."""
    return {
        "lago_id": lago_id,
        "transaction_id": event.transaction_id,
        "lago_customer_id": None,
        "code": event.code,
        "timestamp": iso_ms(event.timestamp),
        "precise_total_amount_cents": event.precise_total_amount_cents,
        "properties": event.properties,
        "lago_subscription_id": None,
        "external_subscription_id": event.external_subscription_id,
        "created_at": created_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
