"""A local stand-in for Orb's API (ingest, event search, ping), for delivery tests; the official ``orb-billing`` SDK talks to it.

Point the SDK at it with ``orb.Orb(api_key=..., base_url=emulator.base_url + "/v1")``
and actionmap with ``--set base_url=<emulator.base_url>``. What it accepts is in
``destinations.orb.rules``; this module holds the endpoints, the account's options
(grace period, customers, events per request), request-level ``Idempotency-Key``
replays and the command line. Loaded by path, so siblings are imported by absolute name.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any, Iterable, Sequence

from engine.tools.emulator import STATUS_FAULTS, Answer, Call, Route, json_answer, main_for
from engine.tools.emulator import Emulator as Base
from destinations.orb.rules import DEFAULT_GRACE, DEFAULT_MAX_EVENTS, Account, as_event, check_ingest, check_search, envelope

__all__ = ["Emulator", "OrbEmulator", "main"]

TRANSIENT = ("Transient-Error", "true")
"""Orb marks a 5xx that is safe to retry with this header (api-reference page)."""


class OrbEmulator(Base):
    """Orb's ``/v1/ingest``, ``/v1/events/search`` and ``/v1/ping`` on loopback.

    ``grace_period`` is the account's: events older than now minus it are refused
    (Orb's default is unverified; 12 hours here). ``customers`` are the Orb customer
    ids a ``customer_id`` may name (``external_customer_id`` needs none). A request
    with more than ``max_events`` events is answered 413 (None: no limit).
    """

    slug = "orb"
    name = "Orb"
    default_port = 8090
    rate_burst = DEFAULT_MAX_EVENTS
    credential = "API key"
    unknown_status = 401  # Orb answers every credential problem 401 (no 403): missing, malformed or unknown key

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        grace_period: timedelta = DEFAULT_GRACE,
        customers: Iterable[str] = (),
        max_events: int | None = DEFAULT_MAX_EVENTS,
        **options: Any,
    ) -> None:
        if grace_period <= timedelta(0):
            raise ValueError(f"the grace period must be positive, not {grace_period}")
        self.account = Account(grace_period, frozenset(customers), max_events)
        super().__init__(tokens, **options)

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/ingest", self._ingest, ingest=True),
            Route("POST", "/v1/events/search", self._search),
            Route("GET", "/v1/ping", self._ping),
        ]

    # -- what Orb says ---------------------------------------------------------------

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        return json_answer(status, envelope(status, text), *headers)

    def fault_answer(self, fault: str) -> Answer:
        answer = super().fault_answer(fault)
        return replace(answer, headers=answer.headers + (TRANSIENT,)) if STATUS_FAULTS[fault] >= 500 else answer

    def count(self, call: Call, body: Any) -> int | None:
        events = body.get("events") if isinstance(body, dict) else None
        return len(events) if isinstance(events, list) else None

    def clear(self) -> None:
        self._answered: dict[str, tuple[str, Answer]] = {}  # Idempotency-Key -> (body digest, the 200 sent)
        self._replays = 0
        self._conflicts = 0

    def more_summary(self) -> dict[str, Any]:
        return {"idempotent_replays": self._replays, "idempotency_conflicts": self._conflicts}

    more_state = more_summary

    # -- endpoints ---------------------------------------------------------------------

    def _ingest(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer | None:
        """Validate the whole request, then store each event once (first body wins); a repeat key is a duplicate."""
        if call.query.get("backfill_id"):
            return self.error(400, "backfills are not emulated: send events within the account grace period without backfill_id")
        request_key = call.headers.get("idempotency-key")
        digest = hashlib.sha256(call.raw).hexdigest()
        if request_key is not None:
            earlier = self._earlier(request_key, digest)
            if earlier is not None:
                return earlier
        verdict = check_ingest(call.json(), self.account, self.now())
        if not verdict.ok:
            return json_answer(verdict.status, envelope(verdict.status, verdict.detail, verdict.errors))
        events = verdict.events
        if not self.take(len(events)):
            return self.error(429, f"rate limit exceeded: this account may ingest {self.rate_limit:g} events per second; "
                                   "back off and retry")
        keep = self.faults.part_of(len(events)) if fault == "store_part_then_500" else len(events)
        with self.lock:
            for event in events[:keep]:
                self.store(event["idempotency_key"], event)
        if fault == "store_part_then_500":
            return self.error(500, f"Internal server error (emulated fault {fault}: {keep} of {len(events)} events were "
                                   "ingested)", TRANSIENT)
        answer = json_answer(200, {"validation_failed": []})
        if request_key is not None:
            with self.lock:
                self._answered.setdefault(request_key, (digest, answer))
        return None if fault == "store_all_then_drop" else answer

    def _earlier(self, request_key: str, digest: str) -> Answer | None:
        """The replay of a request already answered 200 under this ``Idempotency-Key``, or 409 for a different body."""
        with self.lock:
            earlier = self._answered.get(request_key)
            if earlier is None:
                return None
            if earlier[0] != digest:
                self._conflicts += 1
                return self.error(409, f"the Idempotency-Key {request_key!r} was already used with a different request "
                                       "body: use a new key for a new request")
            self._replays += 1
            return replace(earlier[1], headers=earlier[1].headers + (("Idempotent-Replayed", "true"),))

    def _search(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        """The stored events named by ``event_ids`` whose timestamps lie in the timeframe (default: the last week)."""
        search = check_search(call.json(), self.now())
        if isinstance(search, str):
            return self.error(400, search)
        found = [self.first(key) for key in search.ids]
        return json_answer(200, {"data": [as_event(item.payload) for item in found
                                          if item is not None and search.matches(item.payload)]})

    def _ping(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        """``GET /v1/ping``: 200 for a valid key (the credential check); the answer text is unverified."""
        return json_answer(200, {"response": "pong"})


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a number and a unit (s, m, h or d), as 12h or 30d, not {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grace-period", type=_duration, default=DEFAULT_GRACE,
                        help="the account grace period: how far back event timestamps are accepted (default 12h)")
    parser.add_argument("--customer", action="append", default=[],
                        help="an Orb customer id that events may name as customer_id (repeatable)")
    parser.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS,
                        help=f"events per ingest request before answering 413 (default {DEFAULT_MAX_EVENTS})")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"grace_period": args.grace_period, "customers": args.customer, "max_events": args.max_events}


Emulator = OrbEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator orb``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    return main_for(OrbEmulator, argv, add_arguments=_add_arguments, options=_options)
