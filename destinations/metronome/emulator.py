"""A local stand-in for Metronome's ingest API, for delivery tests and the quick start.

It behaves as ``reference/metronome-ingest.md`` describes: auth before the body,
whole-request 400s, the timestamp window by an injectable clock, deduplication by
``transaction_id`` (first accepted payload wins), an optional rate limit, and the
faults a sender must survive, scripted or drawn at random.

The sockets, the fault plan, the request log, the store and the command line are the
shared emulator core's (``engine.tools.emulator``); ``rules`` holds what Metronome
accepts; this module holds Metronome's endpoints, answers and headers. ``actionmap``
loads this file by path (``engine.config.definitions.load_emulator``), as a module
outside its package, so its sibling modules are imported by absolute name
(``destinations.metronome`` is importable wherever the plugin was found).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, ClassVar, Final, Iterable, Sequence

from destinations.metronome.rules import MAX_EVENTS, Validator, bracketed, iso
from engine.tools.emulator import (
    FAULT_KINDS,
    Answer,
    Call,
    Faults,
    RecordedRequest,
    Route,
    Stored,
    json_answer,
    main_for,
)
from engine.tools.emulator import Emulator as _Core

__all__ = [
    "FAULT_KINDS",
    "Emulator",
    "Faults",
    "MetronomeEmulator",
    "RecordedRequest",
    "main",
]

OK: Final = Answer(200, b"{}")
_RATE_LIMIT_TYPE: Final = ("X-Metronome-Rate-Limit-Type", "client")


def _search_result(item: Stored) -> dict[str, Any]:
    """A stored event as ``POST /v1/events/search`` shows it (Metronome's field names)."""
    p = item.payload
    return {
        "id": item.id,
        "transaction_id": p["transaction_id"],
        "customer_id": p["customer_id"],
        "event_type": p["event_type"],
        "timestamp": p["timestamp"],
        "properties": p.get("properties", {}),
        "is_duplicate": item.duplicate,
        "processed_at": iso(item.at),
    }


class MetronomeEmulator(_Core):
    """Metronome's ingest API on loopback, with its state readable by tests.

    ``tokens`` are the valid API tokens; ``clock`` gives the current time (aware
    UTC) that the timestamp window is judged by; ``faults`` is a :class:`Faults`
    or a plain script of fault names; ``rate_limit`` is events per second (off
    when None); ``property_value_limit`` rejects an event with a property whose
    JSON encoding is longer than that many bytes, so a test can poison one event.
    Read-back (``requests``, ``stored`` keyed by transaction_id, ``duplicates``,
    ``max_events_in_a_request``) is thread-safe and also served as JSON at
    ``GET /_emulator/state``.
    """

    slug: ClassVar[str] = "metronome"
    name: ClassVar[str] = "Metronome"
    default_port: ClassVar[int] = 8089
    rate_burst: ClassVar[int] = MAX_EVENTS

    def __init__(self, tokens: Iterable[str], *, property_value_limit: int | None = None, **options: Any) -> None:
        self._validator = Validator(property_value_limit)
        super().__init__(tokens, **options)

    def routes(self) -> list[Route]:
        return [Route("POST", "/v1/ingest", self._ingest, ingest=True), Route("POST", "/v1/events/search", self._search)]

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        """``{"message": ...}``; a 400's message is a bracketed list of errors, so a lone problem is bracketed too."""
        if status == 400 and not text.startswith("["):
            text = f"[{text}]"
        if status == 429:
            headers = (_RATE_LIMIT_TYPE, *headers)
        return json_answer(status, {"message": text}, *headers)

    def _ingest(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer | None:
        """Validate, rate-limit and store one ingest body; None means drop the connection."""
        if not call.raw.strip():
            return self.error(400, f"the request body is empty: expected a JSON array of 1 to {MAX_EVENTS} events")
        body = call.json()
        now = self.now()
        errors = self._validator.errors(body, now)
        if errors:
            return self.error(400, bracketed(errors))
        keep = self.faults.part_of(len(body)) if fault == "store_part_then_500" else len(body)
        with self.lock:
            if not self.take(len(body)):
                return self.error(
                    429, f"rate limit exceeded: this client may send {self.rate_limit:g} events per second; back off and retry")
            for payload in body[:keep]:
                self.store(payload["transaction_id"], payload, now)
        if fault == "store_part_then_500":
            return self.error(500, f"Internal Server Error (emulated fault {fault}: {keep} of {len(body)} events were stored)")
        if fault == "store_all_then_drop":
            return None
        return OK

    def _search(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer:
        """Stored events for ``{"transactionIds": [...]}``: each first payload, then its ignored repeats."""
        body = call.json()
        ids = body.get("transactionIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return self.error(400, '[#/transactionIds: expected an object {"transactionIds": [<transaction_id>, ...]}]')
        wanted = dict.fromkeys(ids)
        with self.lock:
            firsts = [item for i in wanted if (item := self.first(i)) is not None]
            found = [_search_result(item) for item in firsts + [r for r in self.repeats() if r.key in wanted]]
        return json_answer(200, found)


Emulator = MetronomeEmulator
"""The name ``actionmap`` looks for (``engine.config.definitions.load_emulator``)."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--property-value-limit", type=int, default=None,
                        help="reject events with a property value longer than this many bytes as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """``actionmap emulator metronome``: print the base URL, serve until SIGINT/SIGTERM, print a JSON summary."""
    return main_for(MetronomeEmulator, argv, add_arguments=_add_arguments,
                    options=lambda args: {"property_value_limit": args.property_value_limit})
