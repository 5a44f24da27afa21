"""A local stand-in for Lago's event API, that the official ``lago-python-client`` talks to.

It serves what the SDK's ``events.create``, ``events.batch_create`` and ``events.find`` use
(``POST /api/v1/events``, ``POST /api/v1/events/batch``, ``GET /api/v1/events/{transaction_id}``)
as lago-api does (``rules`` holds the rules): the credential first, whole-batch 422s keyed
by index, dedup by (external_subscription_id, transaction_id) forever, billable-metric
expressions evaluated at ingest (``expression``), and the shared core's faults, with
Lago's rate-limit headers instead of ``Retry-After``. ``actionmap`` loads this file by
path, so sibling modules are imported by absolute name.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, ClassVar, Iterable, Mapping, Sequence
from urllib.parse import unquote

from destinations.lago.rules import (
    MISSING_EVENT,
    Event,
    Metric,
    already_exist,
    bad_request,
    batch_items,
    check_batch,
    envelope,
    event_object,
    not_found,
    read_event,
    validation_errors,
)
from engine.tools.emulator import FAULT_KINDS, Answer, Call, Faults, Problem, RecordedRequest, Route, json_answer, main_for
from engine.tools.emulator import Emulator as _Core

__all__ = ["FAULT_KINDS", "Emulator", "Faults", "LagoEmulator", "Metric", "RecordedRequest", "main"]

DEFAULT_LIMIT = 500
"""Lago Cloud's default limit for ``POST /events`` (requests per second), shown in X-RateLimit-Limit without a limit set."""


class LagoEmulator(_Core):
    """Lago's event endpoints on loopback, with its state readable by tests.

    ``metrics`` are billable metrics with an expression (``Metric("api_call", "units",
    "event.properties.n * 2")``): an event of that code whose properties the expression
    cannot use is rejected, as Lago does, which is how a test poisons one event.
    ``read_only`` tokens authenticate but may not write (403). ``rate_limit`` counts
    requests per second, as Lago's does. ``stored`` maps transaction_id to the event
    object as it was sent (the first, if two subscriptions used the same id; the second
    then counts in ``duplicates``); ``already_exist`` counts items refused as duplicates.
    """

    slug: ClassVar[str] = "lago"
    name: ClassVar[str] = "Lago"
    default_port: ClassVar[int] = 3000  # lago-api's port in Lago's docker-compose
    rate_burst: ClassVar[int] = 1  # the bucket counts requests, not events

    def __init__(self, tokens: Iterable[str], *, metrics: Iterable[Metric] = (), read_only: Iterable[str] = (),
                 **options: Any) -> None:
        self.metrics: Mapping[str, Metric] = {metric.code: metric for metric in metrics}
        self.read_only = frozenset(read_only)
        super().__init__(set(tokens) | self.read_only, **options)

    def clear(self) -> None:
        self._unique: set[tuple[str, str]] = set()
        self._shown: dict[str, Event] = {}  # Stored.id -> the event as Lago keeps it
        self._already_exist = 0

    def more_summary(self) -> dict[str, Any]:
        return {"already_exist": self._already_exist}

    more_state = more_summary

    @property
    def already_exist(self) -> int:
        """How many items were refused with ``value_already_exist``."""
        with self.lock:
            return self._already_exist

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/api/v1/events/batch", self._batch, ingest=True),
            Route("POST", "/api/v1/events", self._create, ingest=True),
            Route("GET", "/api/v1/events/(?P<id>[^/]+)", self._find),
        ]

    # -- Lago's answers -------------------------------------------------------------

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        """``{"status": 404, "error": "..."}``: Lago's envelope (``ApiErrors``), the text in ``error``."""
        return json_answer(status, envelope(status, text), *headers)

    def authenticate(self, call: Call) -> Answer | None:
        """The second word of ``Authorization`` is the key (lago-api's ``auth_token``); a read-only key may not write."""
        words = call.headers.get("authorization", "").split()
        if len(words) < 2 or words[1] not in self.tokens:
            return json_answer(401, envelope(401))
        if words[1] in self.read_only and call.method != "GET":
            return json_answer(403, envelope(403, code="write_action_not_allowed_for_event"))
        return None

    def retry_headers(self, fault: str) -> tuple[tuple[str, str], ...]:
        """Lago sends no Retry-After: a 429 says when the window resets in X-RateLimit-Reset (seconds)."""
        if fault == "429":
            return self._rate_headers(1)
        if fault == "429_retry_after":
            return self._rate_headers(math.ceil(self.faults.retry_after_ms / 1000))
        return ()

    def _rate_headers(self, reset: int) -> tuple[tuple[str, str], ...]:
        limit = self.rate_limit or DEFAULT_LIMIT
        return (("X-RateLimit-Limit", f"{limit:g}"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", str(reset)))

    def _rate_limited(self) -> Answer:
        reset = max(1, math.ceil(1 / self.rate_limit)) if self.rate_limit else 1
        return json_answer(429, envelope(429), *self._rate_headers(reset))

    def count(self, call: Call, body: Any) -> int | None:
        if call.path.endswith("/batch"):
            events = body.get("events") if isinstance(body, dict) else None
            return len(events) if isinstance(events, list) else None
        return 1 if isinstance(body, dict) and isinstance(body.get("event"), dict) else None

    # -- the endpoints -----------------------------------------------------------------

    @staticmethod
    def _body(call: Call) -> Any:
        """The parameters Rails sees: the JSON body when declared as JSON (else none); a JSON array is not a root."""
        if "json" not in call.headers.get("content-type", "").lower():
            return {}
        try:
            body = call.json()
        except Problem as problem:
            raise Problem(bad_request(problem.text)["error"]) from None
        return body if isinstance(body, dict) else {}

    def _batch(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer | None:
        """Validate the whole batch, refuse it all on any error or duplicate, else store it (or part, for a fault)."""
        if not self.take(1):
            return self._rate_limited()
        body = self._body(call)
        checked = check_batch(body, self.now(), self.metrics)
        if isinstance(checked, dict):
            return json_answer(422, validation_errors(checked))
        items = batch_items(body) or []
        with self.lock:
            duplicates = already_exist(checked, self._unique.__contains__)
            if duplicates:
                self._already_exist += len(duplicates)
                return json_answer(422, validation_errors(duplicates))
            keep = self.faults.part_of(len(checked)) if fault == "store_part_then_500" else len(checked)
            shown = [self._keep(event, item) for event, item in zip(checked[:keep], items)]
        if fault == "store_part_then_500":
            return self.error(500, f"Internal Server Error (emulated fault {fault}: {keep} of {len(checked)} events were stored)")
        if fault == "store_all_then_drop":
            return None
        return json_answer(200, {"events": shown})

    def _create(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer | None:
        """One event (``{"event": {...}}``): the same rules, its errors keyed by field."""
        if not self.take(1):
            return self._rate_limited()
        item = self._body(call).get("event")
        if not isinstance(item, dict):
            return json_answer(400, bad_request(MISSING_EVENT))
        event = read_event(item, self.now(), self.metrics)
        if not isinstance(event, Event):
            return json_answer(422, validation_errors(event))
        with self.lock:
            if event.key is not None and event.key in self._unique:
                self._already_exist += 1
                return json_answer(422, validation_errors({"transaction_id": ["value_already_exist"]}))
            keep = self.faults.part_of(1) if fault == "store_part_then_500" else 1
            shown = self._keep(event, item) if keep else None
        if fault == "store_part_then_500":
            return self.error(500, f"Internal Server Error (emulated fault {fault}: {keep} of 1 events were stored)")
        return None if fault == "store_all_then_drop" else json_answer(200, {"event": shown})

    def _keep(self, event: Event, item: Mapping[str, Any]) -> dict[str, Any]:
        """Store one accepted event (the caller holds the lock); the event object Lago answers with."""
        if event.key is not None:
            self._unique.add(event.key)
        stored = self.store(event.transaction_id, dict(item))
        self._shown[stored.id] = event
        return event_object(event, stored.id, stored.at)

    def _find(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        """The first event stored with this transaction_id, whatever its subscription (as Lago's ``show``)."""
        if not self.take(1):
            return self._rate_limited()  # Lago limits every endpoint (decision: one budget for all here)
        stored = self.first(unquote(match["id"]))
        if stored is None:
            return json_answer(404, not_found("event"))
        with self.lock:
            return json_answer(200, {"event": event_object(self._shown[stored.id], stored.id, stored.at)})


Emulator = LagoEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def _metric(text: str) -> Metric:
    try:
        return Metric.from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", type=_metric, action="append", default=[], metavar="CODE:FIELD=EXPRESSION",
                        help="a billable metric with an expression, evaluated at ingest (repeatable), "
                             "e.g. 'api_call:units=event.properties.n * 2'")
    parser.add_argument("--read-only-token", action="append", default=[], help="a key that may read but not write (403)")


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator lago``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    return main_for(LagoEmulator, argv, add_arguments=_add_arguments,
                    options=lambda args: {"metrics": args.metric, "read_only": args.read_only_token})
