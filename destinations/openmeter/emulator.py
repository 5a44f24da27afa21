"""A local stand-in for OpenMeter's event API, that the official ``openmeter`` SDK can ingest through and list back from.

It follows ``reference/billing-platforms.md`` section 3: Bearer auth (401 problem+json),
``POST /api/v1/events`` taking the three content types by exact comparison, the whole
body validated before anything is stored (one bad event refuses the request with a 400
problem), ``204`` with an empty body, duplicates by source and id accepted silently;
``GET /api/v1/events`` and ``GET /api/v2/events`` to read back; ``GET /api/v1/meters``
for the credential check. The rules are in ``rules`` and ``listing``; the sockets,
faults, rate limit and request log in ``engine.tools.emulator``. ``actionmap`` loads
this file by path, so its siblings are imported by absolute name.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from typing import Any, Iterable, Sequence

from destinations.openmeter import listing, rules
from engine.tools.emulator import Answer, Call, Route, json_answer, main_for
from engine.tools.emulator import Emulator as Core

__all__ = ["Emulator", "OpenMeterEmulator", "main"]

NOMINAL_LIMIT = 1000
"""``X-RateLimit-Limit`` on an emulated 429 fault when no ``rate_limit`` is set (Cloud's real limit depends on the plan)."""


def _instant(text: str) -> datetime | None:
    parsed = rules.parse_time(text)
    return parsed[0] if parsed else None


class OpenMeterEmulator(Core):
    """OpenMeter's event API on loopback, with its state readable by tests.

    ``forbidden_data_keys``: an event whose ``data`` holds one of these keys is refused by
    the schema check (see :class:`rules.Schema`), so a test can poison one event that only
    the server refuses. Other options are the core's (tokens, clock, faults, rate_limit).
    ``stored`` is keyed by event id (the plugin sends one source); an id that another
    source already used is kept under ``"<source> <id>"``, as OpenMeter keeps both.
    """

    slug = "openmeter"
    name = "OpenMeter"
    default_port = 8888  # OpenMeter's own default port when self-hosted
    unknown_status = 401  # a missing, malformed or unknown token is 401 (OpenMeter keeps 403 for permissions)

    def __init__(self, tokens: Iterable[str], *, forbidden_data_keys: Iterable[str] = (), **options: Any) -> None:
        self.schema = rules.Schema(forbidden_data_keys)
        self.request_ids = rules.RequestIds()
        super().__init__(tokens, **options)

    def clear(self) -> None:
        self._ingested: list[listing.Ingested] = []
        self._source_of_id: dict[str, str] = {}
        self._refused = 0

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/api/v1/events", self._ingest, ingest=True),
            Route("GET", "/api/v1/events", self._list_v1),
            Route("GET", "/api/v2/events", self._list_v2),
            Route("GET", "/api/v1/meters", self._meters),
        ]

    # -- the envelope -------------------------------------------------------------

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        """A problem+json answer from a handler (it names the request in ``instance``)."""
        return self._problem(status, text, self.request_ids.instance(), headers)

    def refused(self, text: str) -> Answer:
        """A 400 from the request validator: no ``instance`` (it answers without the request's context)."""
        return self._problem(400, text, None, ())

    @staticmethod
    def _problem(status: int, text: str, instance: str | None, headers: Iterable[tuple[str, str]]) -> Answer:
        body = json.dumps(rules.problem(status, text, instance)).encode()
        return Answer(status, body, tuple(headers), rules.PROBLEM_CONTENT_TYPE)

    def retry_headers(self, fault: str) -> tuple[tuple[str, str], ...]:
        """``Retry-After`` (seconds) and the ``X-RateLimit-*`` headers Cloud sends; none on the bare ``429`` fault."""
        if fault != "429_retry_after":
            return ()
        return self._rate_headers(self.faults.retry_after_ms / 1000)

    def _rate_headers(self, wait: float) -> tuple[tuple[str, str], ...]:
        limit = NOMINAL_LIMIT if self.rate_limit is None else math.ceil(self.rate_limit)
        return (("Retry-After", str(max(1, math.ceil(wait)))), ("X-RateLimit-Limit", str(limit)),
                ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", str(math.ceil(time.time() + wait))))

    def count(self, call: Call, body: Any) -> int | None:
        return len(body) if isinstance(body, list) else 1 if isinstance(body, dict) else None

    def more_summary(self) -> dict[str, Any]:
        """``refused_requests``: ingest requests answered 400 (content type, JSON, schema or handler)."""
        return {"refused_requests": self._refused}

    # -- ingest -------------------------------------------------------------------

    def _ingest(self, call: Call, fault: str | None, match: Any) -> Answer | None:
        answer = self._judge(call, fault)
        if answer is not None and answer.status == 400:
            with self.lock:
                self._refused += 1
        return answer

    def _judge(self, call: Call, fault: str | None) -> Answer | None:
        """Content type, body, schema, handler checks, rate limit; then store (all, or part for the fault)."""
        content_type = call.headers.get("content-type", "")
        wrong_type = rules.invalid_content_type(content_type)
        if wrong_type:
            return self.error(400, wrong_type)
        body, undecodable = rules.decode(call.raw)
        if undecodable:
            return self.refused(undecodable)
        events, invalid = self.schema.events(content_type, body)
        if invalid:
            return self.refused(invalid)
        refused = rules.handler_error(content_type, events)
        if refused:
            return self.error(400, refused)
        if not self.take(len(events)):
            wait = len(events) / (self.rate_limit or 1)
            return self.error(429, f"rate limit exceeded: {self.rate_limit:g} events per second",
                              *self._rate_headers(wait))
        keep = self.faults.part_of(len(events)) if fault == "store_part_then_500" else len(events)
        now = self.now()
        with self.lock:
            for event in events[:keep]:
                self._keep(event, now)
        if fault == "store_part_then_500":
            return self.error(500, f"emulated fault {fault}: {keep} of {len(events)} events were stored")
        if fault == "store_all_then_drop":
            return None
        return Answer(204, content_type=None)

    def _keep(self, event: dict[str, Any], now: datetime) -> None:
        source, event_id = rules.dedupe_key(event)
        first_source = self._source_of_id.setdefault(event_id, source)
        key = event_id if first_source == source else f"{source} {event_id}"
        item = self.store(key, event, at=now)
        if item.duplicate:
            return
        shown = rules.as_stored(event, now)
        instant = _instant(shown["time"])
        assert instant is not None  # the schema check passed it
        self._ingested.append(listing.Ingested(len(self._ingested), shown, instant, now, rules.go_time(now)))

    # -- read-back ----------------------------------------------------------------

    def _list_v1(self, call: Call, fault: str | None, match: Any) -> Answer:
        with self.lock:
            records = list(self._ingested)
        try:
            return json_answer(200, listing.list_v1(records, call.query, self.now(), _instant))
        except listing.QueryError as error:
            return self.refused(str(error))

    def _list_v2(self, call: Call, fault: str | None, match: Any) -> Answer:
        with self.lock:
            records = list(self._ingested)
        try:
            return json_answer(200, listing.list_v2(records, call.query, _instant))
        except listing.QueryError as error:
            return self.refused(str(error))

    def _meters(self, call: Call, fault: str | None, match: Any) -> Answer:
        """No meters are configured: an empty list (what the credential check reads as 200)."""
        return json_answer(200, [])


Emulator = OpenMeterEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--forbid-data-key", action="append", default=[], metavar="KEY",
                        help="refuse (400) an event whose data holds this key, as a closed event schema would (repeatable)")


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator openmeter``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    return main_for(OpenMeterEmulator, argv, add_arguments=_add_arguments,
                    options=lambda args: {"forbidden_data_keys": args.forbid_data_key})

