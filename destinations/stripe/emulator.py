"""A local stand-in for Stripe's meter-event APIs (v1 meter events, the v2 session and stream, meter summaries).

One server answers the paths of both of Stripe's hosts (``api.stripe.com`` and
``meter-events.stripe.com``), so the official SDK is pointed at it with
``StripeClient(key, base_addresses={"api": url, "meter_events": url})``. The rules and
the words are in ``destinations.stripe.rules``; the read-back (meters and their event
summaries) in ``destinations.stripe.readback``; this module holds the state and the decisions.

Test hooks beyond the core's: ``expire_sessions()`` ends every session at once (the next
stream request is answered 401 ``temporary_session_expired``); ``session_lifetime`` is judged
by the injectable clock; ``session_requests`` ends a session after that many stream requests;
``stream_sessions`` says which session (by id, never the token) each stream request used.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence

from engine.tools.emulator import (
    BEARER, STATUS_FAULTS, Answer, Call, Emulator as Core, Route, Stored, json_answer, main_for, mask,
)
from destinations.stripe.readback import Meters
from destinations.stripe.rules import (
    CUSTOMER_KEY, DUPLICATE, NO_KEY, RATE_LIMITED, SESSION_LIFETIME, Session, StripeError, envelope, error_reports,
    expired_error, stream_events, type_for, v1_event,
)

STREAM = "/v2/billing/meter_event_stream"
Handle = Callable[[Call, "str | None", Any], Answer | None]


@dataclass(frozen=True)
class StreamUse:
    """Which session one stream request presented, and what became of it: accepted, expired or unknown."""

    session: str | None
    verdict: str


def _answering(handle: Handle) -> Handle:
    """A handler whose :class:`StripeError` becomes Stripe's error answer."""
    def run(call: Call, fault: str | None, match: Any) -> Answer | None:
        try:
            return handle(call, fault, match)
        except StripeError as error:
            return json_answer(error.status, error.body())
    return run


class StripeEmulator(Core):
    """Stripe's meter events on loopback. ``tokens`` are secret API keys; sessions are made by the v2 session endpoint.

    ``meters`` maps event names to meter ids (a sum of ``payload[value]``); None gives every
    event name its own meter on first sight. ``max_value_digits`` is the poison option: a
    longer value is refused at once with 400 ``meter_event_value_too_many_digits``.
    """

    slug = "stripe"
    name = "Stripe"
    default_port = 12111

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        meters: Mapping[str, str] | None = None,
        max_value_digits: int | None = None,
        session_lifetime: timedelta = SESSION_LIFETIME,
        session_requests: int | None = None,
        **options: Any,
    ) -> None:
        if session_requests is not None and session_requests < 1:
            raise ValueError(f"session_requests must be at least 1, got {session_requests}")
        self.meters = Meters(meters)
        self.max_value_digits = max_value_digits
        self.session_lifetime = session_lifetime
        self.session_requests = session_requests
        super().__init__(tokens, **options)

    def routes(self) -> list[Route]:
        meter = "/v1/billing/meters/(?P<id>[^/]+)"
        return [
            Route("POST", "/v1/billing/meter_events", _answering(self._meter_event), ingest=True),
            Route("POST", "/v2/billing/meter_event_session", _answering(self._new_session)),
            Route("POST", STREAM, _answering(self._stream), ingest=True),
            Route("GET", "/v1/billing/meters", _answering(lambda call, f, m: self.meters.listing())),
            Route("GET", meter, _answering(lambda call, f, m: self.meters.one(m["id"]))),
            Route("GET", meter + "/event_summaries", _answering(self._summaries)),
        ]

    # -- Stripe's envelope and credentials ------------------------------------------

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        code = "rate_limit" if status == 429 else None
        return json_answer(status, envelope(text, type=type_for(status), code=code), *headers)

    def fault_answer(self, fault: str) -> Answer:
        status = STATUS_FAULTS[fault]
        text = RATE_LIMITED if status == 429 else "An unknown error occurred"
        return self.error(status, f"{text} (emulated fault {fault})", *self.retry_headers(fault))

    def not_found(self, method: str, target: str) -> Answer:
        return self.error(404, f"Unrecognized request URL ({method}: {target}). Please see https://stripe.com/docs "
                               "or we can help at https://support.stripe.com/.")

    def authenticate(self, call: Call) -> Answer | None:
        """API keys everywhere but the stream, which takes only a session's token (as Stripe's meter-events host)."""
        header = call.headers.get("authorization")
        m = BEARER.match(header) if header is not None else None
        if m is None:
            return self.error(401, NO_KEY)
        if call.path == STREAM:
            return self._session_check(m.group(1))
        if m.group(1) not in self.tokens:
            return self.error(401, f"Invalid API Key provided: {mask(m.group(1))}")
        return None

    def _session_check(self, token: str) -> Answer | None:
        with self.lock:
            session = self._by_token.get(token)
            if session is None:
                self._uses.append(StreamUse(None, "unknown"))
                return self.error(401, f"Invalid API Key provided: {mask(token)}")
            spent = self.session_requests is not None and session.uses >= self.session_requests
            if spent or session.expires_at <= self.now():
                self._uses.append(StreamUse(session.id, "expired"))
                return json_answer(401, expired_error().body())
            session.uses += 1
            self._uses.append(StreamUse(session.id, "accepted"))
            return None

    def count(self, call: Call, body: Any) -> int | None:
        if call.path == STREAM:
            events = body.get("events") if isinstance(body, dict) else None
            return len(events) if isinstance(events, list) else None
        return 1 if call.path == "/v1/billing/meter_events" and isinstance(body, dict) else None

    # -- ingest ---------------------------------------------------------------------------

    def _meter_event(self, call: Call, fault: str | None, match: Any) -> Answer | None:
        if not call.is_form:
            raise StripeError(400, "Invalid request: v1 endpoints take an application/x-www-form-urlencoded body, "
                                   f"not {call.headers.get('content-type', 'none')}")
        event = v1_event(call.form(), max_value_digits=self.max_value_digits)
        if not self.take(1):
            raise StripeError(429, RATE_LIMITED, code="rate_limit")
        now = self.now()
        event.setdefault("identifier", str(uuid.uuid4()))
        with self.lock:
            if self.first(event["identifier"]) is not None:
                self._refused_repeats += 1
                body = envelope(DUPLICATE.format(event["identifier"]), code="resource_already_exists", param="identifier")
                return json_answer(400, body, ("Stripe-Should-Retry", "false"))
            self._accept(event, now)
        if fault == "store_part_then_500":
            return self.error(500, "An unknown error occurred (emulated fault store_part_then_500: the event was stored)")
        if fault == "store_all_then_drop":
            return None
        return json_answer(200, {"object": "billing.meter_event", "created": int(now.timestamp()), "livemode": False,
                                 **event})

    def _new_session(self, call: Call, fault: str | None, match: Any) -> Answer:
        if call.raw.strip() and not isinstance(call.json(), dict):
            raise StripeError(400, "Invalid request: the body must be a JSON object")
        with self.lock:
            session = Session.new(self.now(), self.session_lifetime)
            self._sessions[session.id] = session
            self._by_token[session.token] = session
        return json_answer(200, session.shown())

    def _stream(self, call: Call, fault: str | None, match: Any) -> Answer | None:
        events = stream_events(call.json(), max_value_digits=self.max_value_digits)
        if not self.take(len(events)):
            raise StripeError(429, RATE_LIMITED, type="rate_limit", code="rate_limit")
        keep = self.faults.part_of(len(events)) if fault == "store_part_then_500" else len(events)
        now = self.now()
        with self.lock:
            for event in events[:keep]:
                self._accept({**event, "identifier": event.get("identifier") or str(uuid.uuid4())}, now)
        if fault == "store_part_then_500":
            return self.error(500, f"An unknown error occurred (emulated fault {fault}: "
                                   f"{keep} of {len(events)} events were stored)")
        if fault == "store_all_then_drop":
            return None
        return json_answer(200, {})

    def _accept(self, event: dict[str, Any], now: datetime) -> None:
        """Store a first accepted event (a repeat is a duplicate) and note the error reports it earns."""
        item = self.store(event["identifier"], event, at=now)
        if not item.duplicate:
            codes = error_reports(event, now, self.meters.has(event["event_name"]))
            if codes:
                self._reports[item.key] = codes
            else:
                self._counted.setdefault((event["event_name"], event["payload"][CUSTOMER_KEY]), []).append(item)

    # -- read-back and test hooks -----------------------------------------------------------

    def _summaries(self, call: Call, fault: str | None, match: Any) -> Answer:
        customer = (call.query.get("customer") or [""])[-1]
        with self.lock:
            counted = list(self._counted.get((self.meters.event_name(match["id"]), customer), ()))
        return self.meters.summaries(match["id"], call.query, counted)

    def expire_sessions(self) -> None:
        """End every session now: the next stream request with any of their tokens is answered 401 expired."""
        with self.lock:
            for session in self._sessions.values():
                session.expires_at = min(session.expires_at, self.now())

    @property
    def session_tokens(self) -> list[str]:
        """Every token handed out, for tests that search outputs for them (never logged or in ``state()``)."""
        with self.lock:
            return [session.token for session in self._sessions.values()]

    @property
    def stream_sessions(self) -> list[StreamUse]:
        """For each stream request, in order: the session id its token belonged to and the verdict."""
        with self.lock:
            return list(self._uses)

    @property
    def reports(self) -> dict[str, list[str]]:
        """identifier -> the asynchronous error-report codes of an accepted event that no meter counts."""
        with self.lock:
            return dict(self._reports)

    def clear(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._by_token: dict[str, Session] = {}
        self._uses: list[StreamUse] = []
        self._reports: dict[str, list[str]] = {}
        self._counted: dict[tuple[str, str], list[Stored]] = {}  # (event name, customer) -> what meters sum
        self._refused_repeats = 0
        self.meters.clear()

    def more_state(self) -> dict[str, Any]:
        return {"sessions": [s.id for s in self._sessions.values()], "error_reports": dict(self._reports),
                "stream_sessions": [[use.session, use.verdict] for use in self._uses],
                "refused_repeats": self._refused_repeats, "meters": self.meters.ids()}

    def more_summary(self) -> dict[str, Any]:
        return {"sessions": len(self._sessions), "expired_answers": sum(u.verdict == "expired" for u in self._uses),
                "refused_repeats": self._refused_repeats, "error_reports": len(self._reports)}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meter", action="append", default=[], metavar="EVENT_NAME=METER_ID",
                        help="a meter summing payload[value] of one event name (repeatable; default: one per event name)")
    parser.add_argument("--max-value-digits", type=int, default=None,
                        help="refuse at once (400) an event whose payload[value] has more digits than this")
    parser.add_argument("--session-minutes", type=float, default=SESSION_LIFETIME.total_seconds() / 60,
                        help="how long a v2 meter event session lasts (default 15)")
    parser.add_argument("--session-requests", type=int, default=None,
                        help="end a session after this many stream requests (to see renewal)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [text.partition("=") for text in args.meter]
    if any(not name or not sep or not meter for name, sep, meter in pairs):
        raise ValueError("--meter takes EVENT_NAME=METER_ID")
    return {"meters": {name: meter for name, _, meter in pairs} or None, "max_value_digits": args.max_value_digits,
            "session_lifetime": timedelta(minutes=args.session_minutes), "session_requests": args.session_requests}


Emulator = StripeEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator stripe``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    return main_for(StripeEmulator, argv, add_arguments=_add_arguments, options=_options)
