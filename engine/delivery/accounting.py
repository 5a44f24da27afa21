"""What became of events: one :class:`Fate` per event and connection, and the counts every mode reports.

Every mode settles fates, and every count comes from here: at a connection an
event is exactly one of delivered, filtered, invalid, dead-lettered or kept
(kept: not sent and not dead-lettered, because the credential was refused, the
run was a dry run or it was stopped).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import orjson

from engine.delivery.records import DeadLetter

Settled = Literal["delivered", "invalid", "dead_lettered"]
"""What became of one payload for good: a later attempt skips its subscription."""
Result = Literal[Settled, "exhausted", "kept"]
"""What became of one payload (one event at one subscription)."""
Category = Literal["delivered", "filtered", "invalid", "dead_lettered", "exhausted", "kept"]
"""What one event counts as at one connection: the first of ``RANK`` among its payloads' results."""
Final = Literal["delivered", "filtered", "invalid", "dead_lettered"]
"""What an event counts as for good at one connection once no later attempt will come."""
RANK: tuple[Category, ...] = ("kept", "exhausted", "invalid", "dead_lettered", "delivered")


@dataclass(slots=True)
class Fate:
    """What became of one event at one connection, once every payload it fed there is decided.

    ``results`` has one entry per subscription it fed (none: filtered); ``letters``
    are its final dead letters; ``waiting`` the dead letters of payloads whose
    retry budget ran out, which a later attempt may still deliver.
    """

    position: int
    event: Any
    results: dict[str, Result] = field(default_factory=dict)
    letters: list[DeadLetter] = field(default_factory=list)
    waiting: dict[str, DeadLetter] = field(default_factory=dict)

    @property
    def category(self) -> Category:
        results = self.results
        if len(results) == 1:  # the common case: one subscription fed
            for only in results.values():
                return only
        found = set(results.values())
        return next((c for c in RANK if c in found), "filtered")

    def final(self) -> Final:
        """The category once no later attempt comes: a spent retry budget is dead-lettered (a kept event has none)."""
        category = self.category
        if category == "kept":
            raise ValueError("a kept event is not settled: it goes back to be sent again")
        return "dead_lettered" if category == "exhausted" else category

    def settled(self) -> dict[str, Settled]:
        """The subscriptions whose result is final (a later attempt skips them)."""
        return {name: cast(Settled, result) for name, result in self.results.items() if result not in ("exhausted", "kept")}


@dataclass
class Tally:
    """One connection's counts: each event in exactly one of delivered..kept; ``requests`` sent."""

    events: int = 0
    delivered: int = 0
    filtered: int = 0
    invalid: int = 0
    dead_lettered: int = 0
    kept: int = 0
    requests: int = 0

    def count(self, fate: Fate) -> None:
        """Count an event by its fate where no later attempt comes (send, consume): once in ``events``, once in its category."""
        self.events += 1
        category = fate.category
        name = "dead_lettered" if category == "exhausted" else category
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class Summary:
    """Per connection, and the totals of all of them; ``refused`` names the connections that refused their credential."""

    connections: dict[str, Tally]
    refused: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C: reading stopped; what waited was sent if it could go at once, else kept

    def total(self, name: str) -> int:
        return sum(getattr(tally, name) for tally in self.connections.values())

    events = property(lambda self: self.total("events"))
    delivered = property(lambda self: self.total("delivered"))
    filtered = property(lambda self: self.total("filtered"))
    invalid = property(lambda self: self.total("invalid"))
    dead_lettered = property(lambda self: self.total("dead_lettered"))
    kept = property(lambda self: self.total("kept"))
    requests = property(lambda self: self.total("requests"))

    def record(self) -> dict[str, Any]:
        totals = {name: self.total(name) for name in Tally.__dataclass_fields__}
        return {**totals, "connections": {name: asdict(tally) for name, tally in self.connections.items()}}

    def line(self) -> str:
        return orjson.dumps(self.record()).decode()

    def said(self) -> str:
        """The summary for a person: one line for stderr beside the JSON on stdout (per connection when there are several)."""
        def counts(tally: Tally | Summary) -> str:
            return (f"{tally.events:,} events: {tally.delivered:,} delivered, {tally.filtered:,} filtered, "
                    f"{tally.invalid:,} invalid, {tally.dead_lettered:,} dead-lettered, {tally.kept:,} kept, "
                    f"in {tally.requests:,} requests")
        if len(self.connections) == 1:
            return f"actionmap: {counts(self)}"
        return "actionmap: " + "; ".join(f"{name}: {counts(tally)}" for name, tally in self.connections.items())
