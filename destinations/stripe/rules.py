"""What Stripe's meter-event APIs accept, and the words they answer with (``reference/billing-platforms.md`` section 4).

Pure functions and values, no HTTP and no state, so the rules read in one place and the
emulator only decides when to apply them. Stripe answers one error at a time, in the
``{"error": {type, code, message, param, doc_url}}`` envelope, so each check raises the
first :class:`StripeError` it finds.

Decisions where the reference says "unverified" or says nothing:

- The code of the repeated-identifier 400 is ``resource_already_exists`` (Stripe's code for
  "an object with this id already exists"); the message is the one observed in production.
- Semantic problems are reported asynchronously by Stripe (``v1.billing.meter.error_report_triggered``):
  here they are :func:`error_reports` of an accepted event, never an error answer. Only the
  shape of a request (missing or unknown parameters, a timestamp that is not an integer, too
  long a string, more than 100 stream events) is answered synchronously with a 400.
- The one exception is the emulator's poison option ``max_value_digits``: a value with more
  digits is answered at once with a 400 ``meter_event_value_too_many_digits`` (Stripe reports
  that code asynchronously), so that delivery tests can dead-letter an event only the server
  refuses. It is off unless configured.
- The texts of the too-long and summary-parameter errors follow Stripe's usual wording; the
  reference quotes none.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Mapping

MAX_NAME: Final = 100
MAX_IDENTIFIER: Final = 100
MAX_STREAM_EVENTS: Final = 100
PAST: Final = timedelta(days=35)
FUTURE: Final = timedelta(minutes=5)
SESSION_LIFETIME: Final = timedelta(minutes=15)
CUSTOMER_KEY: Final = "stripe_customer_id"
VALUE_KEY: Final = "value"
_V1_PARAMS: Final = frozenset({"event_name", "identifier", "timestamp", "payload"})
_RFC3339: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")
_WINDOWS: Final = {"hour": 3600, "day": 86400}

DUPLICATE: Final = "An event already exists with identifier {}."
SESSION_EXPIRED: Final = "The temporary session token has expired."
NO_KEY: Final = ("You did not provide an API key. You need to provide your API key in the Authorization header, "
                 "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                 "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.")
RATE_LIMITED: Final = "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."


class StripeError(Exception):
    """One error answer: the status and the fields of Stripe's error envelope."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        return envelope(self.message, type=self.type, code=self.code, param=self.param)


def envelope(message: str, *, type: str = "invalid_request_error", code: str | None = None,
             param: str | None = None) -> dict[str, Any]:
    """``{"error": {...}}`` with only the fields that apply; ``doc_url`` follows from the code as on Stripe."""
    error: dict[str, Any] = {"type": type}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    error["message"] = message
    if param:
        error["param"] = param
    return {"error": error}


def type_for(status: int) -> str:
    """The envelope's ``type`` for an error the emulator answers by status alone."""
    return "api_error" if status >= 500 else "invalid_request_error"


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unflatten(form: Mapping[str, str]) -> dict[str, Any]:
    """A form's bracketed keys as nested objects (``payload[value]=5`` -> ``{"payload": {"value": "5"}}``)."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        head, _, rest = key.partition("[")
        names = [head] + ([part.rstrip("]") for part in rest.split("[")] if rest else [])
        if not head or any(not name for name in names):
            raise StripeError(400, f"Invalid parameter name: {key}", code="parameter_unknown", param=key)
        node = out
        for name in names[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise StripeError(400, f"Invalid hash: {name} is given both as a value and as a hash", param=name)
            node = child
        if isinstance(node.get(names[-1]), dict):
            raise StripeError(400, f"Invalid hash: {names[-1]} is given both as a value and as a hash", param=names[-1])
        node[names[-1]] = value
    return out


def _string(value: Any, param: str, limit: int | None) -> str:
    if not isinstance(value, str):
        raise StripeError(400, f"Invalid string: {value!r}", code="parameter_invalid_string", param=param)
    if limit is not None and len(value) > limit:
        shown = value[:20] + "..." if len(value) > 20 else value
        raise StripeError(400, f"Invalid string: {shown}; must be at most {limit} characters", param=param)
    return value


def _payload(value: Any, param: str, max_value_digits: int | None) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise StripeError(400, f"Invalid hash: {param} must be a non-empty map of strings", param=param)
    for key, item in value.items():
        _string(item, f"{param}[{key}]", None)
    digits = sum(c.isdigit() for c in value.get(VALUE_KEY, ""))
    if max_value_digits is not None and digits > max_value_digits:
        raise StripeError(
            400, f"The meter event value {value[VALUE_KEY]!r} has {digits} digits; at most {max_value_digits} are accepted.",
            code="meter_event_value_too_many_digits", param=f"{param}[{VALUE_KEY}]")
    return value


def v1_event(form: Mapping[str, str], *, max_value_digits: int | None = None) -> dict[str, Any]:
    """The event a ``POST /v1/billing/meter_events`` form carries, as the plugin's payload looks (timestamp an int)."""
    params = unflatten(form)
    for name in ("event_name", "payload"):
        if name not in params:
            raise missing(name)
    for name in params:
        if name not in _V1_PARAMS:
            raise StripeError(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    event: dict[str, Any] = {"event_name": _string(params["event_name"], "event_name", MAX_NAME)}
    if "identifier" in params:
        event["identifier"] = _string(params["identifier"], "identifier", MAX_IDENTIFIER)
    if "timestamp" in params:
        text = params["timestamp"]
        if not isinstance(text, str) or not re.fullmatch(r"-?\d{1,12}", text):
            raise StripeError(400, f"Invalid integer: {text}", code="parameter_invalid_integer", param="timestamp")
        event["timestamp"] = int(text)
    event["payload"] = _payload(params["payload"], "payload", max_value_digits)
    return event


def stream_events(body: Any, *, max_value_digits: int | None = None) -> list[dict[str, Any]]:
    """The events of a ``POST /v2/billing/meter_event_stream`` body, checked for shape (the rest is asynchronous)."""
    if not isinstance(body, dict) or "events" not in body:
        raise missing("events")
    events = body["events"]
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_STREAM_EVENTS:
        size = len(events) if isinstance(events, list) else "not an array"
        raise StripeError(400, f"events must be an array of 1 to {MAX_STREAM_EVENTS} events (got {size})", param="events")
    checked = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise StripeError(400, f"Invalid object: {where} must be an event object", param=where)
        for name in ("event_name", "payload"):
            if name not in event:
                raise missing(f"{where}.{name}")
        _string(event["event_name"], f"{where}.event_name", MAX_NAME)
        if "identifier" in event:
            _string(event["identifier"], f"{where}.identifier", MAX_IDENTIFIER)
        if "timestamp" in event and parse_rfc3339(event["timestamp"]) is None:
            raise StripeError(400, f"Invalid timestamp: {event['timestamp']!r} must be an RFC 3339 date-time",
                              param=f"{where}.timestamp")
        _payload(event["payload"], f"{where}.payload", max_value_digits)
        checked.append(event)
    return checked


def parse_rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def instant(event: Mapping[str, Any], received: datetime) -> datetime:
    """When the event happened: its timestamp (unix seconds or RFC 3339), else when it was received."""
    stamp = event.get("timestamp")
    if isinstance(stamp, int):
        try:
            return datetime.fromtimestamp(stamp, timezone.utc)
        except (OverflowError, ValueError, OSError):  # beyond the calendar: outside any window
            return (datetime.max if stamp > 0 else datetime.min).replace(tzinfo=timezone.utc)
    return parse_rfc3339(stamp) or received


def error_reports(event: Mapping[str, Any], received: datetime, has_meter: bool) -> list[str]:
    """The asynchronous error-report codes an accepted event earns; none means it counts towards its meter."""
    codes = []
    when = instant(event, received)
    if when < received - PAST:
        codes.append("timestamp_too_far_in_past")
    if when > received + FUTURE:
        codes.append("timestamp_in_future")
    if not has_meter:
        codes.append("no_meter")
    payload = event["payload"]
    if not payload.get(CUSTOMER_KEY):
        codes.append("meter_event_no_customer_defined")
    if value_of(payload) is None:
        codes.append("meter_event_invalid_value")
    return codes


def value_of(payload: Mapping[str, str]) -> int | None:
    """The value a sum meter adds: a whole number; None when it is absent or not one (the meters here sum)."""
    text = payload.get(VALUE_KEY)
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else None


@dataclass
class Session:
    """A v2 meter event session: its token authenticates stream requests until ``expires_at``."""

    id: str
    token: str
    created: datetime
    expires_at: datetime
    uses: int = 0

    @classmethod
    def new(cls, now: datetime, lifetime: timedelta) -> Session:
        return cls("mes_" + secrets.token_hex(12), "ek_test_" + secrets.token_urlsafe(24), now, now + lifetime)

    def shown(self) -> dict[str, Any]:
        """The ``v2.billing.meter_event_session`` object (the only place the token is ever written)."""
        return {"id": self.id, "object": "v2.billing.meter_event_session", "authentication_token": self.token,
                "created": iso_ms(self.created), "expires_at": iso_ms(self.expires_at), "livemode": False}


def expired_error() -> StripeError:
    return StripeError(401, SESSION_EXPIRED, type="temporary_session_expired", code="billing_meter_event_session_expired")


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_query(query: Mapping[str, list[str]]) -> tuple[str, int, int, int | None]:
    """customer, start_time, end_time and the grouping window in seconds (None: one summary) of an event_summaries query."""
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    customer = one("customer")
    if not customer:
        raise missing("customer")
    times = []
    for name in ("start_time", "end_time"):
        text = one(name)
        if text is None:
            raise missing(name)
        if not re.fullmatch(r"\d{1,12}", text):
            raise StripeError(400, f"Invalid integer: {text}", code="parameter_invalid_integer", param=name)
        times.append(int(text))
    grouping = one("value_grouping_window")
    if grouping is not None and grouping not in _WINDOWS:
        raise StripeError(400, f"Invalid value_grouping_window: must be one of hour, day (got {grouping})",
                          param="value_grouping_window")
    step = _WINDOWS[grouping] if grouping else None
    align = step or 60
    for name, value in zip(("start_time", "end_time"), times):
        if value % align:
            raise StripeError(400, f"{name} must be aligned to the {grouping or 'minute'} boundary", param=name)
    if times[0] >= times[1]:
        raise StripeError(400, "start_time must be before end_time", param="start_time")
    return customer, times[0], times[1], step


def page_limit(query: Mapping[str, list[str]]) -> int:
    text = (query.get("limit") or ["10"])[-1]
    if not re.fullmatch(r"\d{1,3}", text) or not 1 <= int(text) <= 100:
        raise StripeError(400, f"Invalid limit: must be between 1 and 100 (got {text})", param="limit")
    return int(text)
