"""One event through every subscription of a mapping file: integrations, trigger, mapping, field checks.

This is the per-event path. Everything here was compiled when the mapping file
loaded; per event we only walk, compare and copy. Nothing raises for bad event
data: a problem becomes an ``invalid`` outcome that names the field and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from engine.errors import MappingFailure
from engine.mappingfile import MappingFile, Subscription
from engine.missing import MISSING
from engine.trigger import integrations_filter

Status = Literal["ok", "invalid", "filtered"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one subscription made of one event."""

    subscription: str
    action: str
    status: Status
    payload: dict[str, Any] | None = None
    errors: tuple[str, ...] = ()
    reason: str | None = None  # why it was filtered
    explain: dict[str, Any] | None = None


class Pipeline:
    """The compiled per-event path of one mapping file."""

    def __init__(self, mapping_file: MappingFile) -> None:
        dest = mapping_file.destination
        self.mapping_file = mapping_file
        self.subscriptions = mapping_file.subscriptions
        self._allowed: Callable[[dict[str, Any]], bool] = integrations_filter(dest.name, dest.slug)
        self._destination = dest.name

    def run(self, event: Any, include_filtered: bool = False, explain: bool = False) -> list[Outcome]:
        """Outcomes for the subscriptions the event feeds (and, on request, those it does not)."""
        if type(event) is not dict:
            found = type(event).__name__ if event is not None else "null"
            return [
                Outcome(s.name, s.action.slug, "invalid", errors=(f"the event is not a JSON object (found {found})",))
                for s in self.subscriptions
            ]
        if not self._allowed(event):
            if not include_filtered:
                return []
            reason = f"the event's integrations object turns {self._destination} off"
            return [Outcome(s.name, s.action.slug, "filtered", reason=reason) for s in self.subscriptions]
        outcomes = []
        for sub in self.subscriptions:
            if sub.trigger.matches(event):
                outcomes.append(_explained(sub, event) if explain else _mapped(sub, event))
            elif include_filtered:
                outcomes.append(Outcome(sub.name, sub.action.slug, "filtered", reason=f"trigger is false: {sub.trigger.source}"))
        return outcomes

    def payloads(self, events: Iterator[Any]) -> Iterator[tuple[int, Outcome]]:
        """(event index, outcome) for every event and subscription it feeds."""
        for index, event in enumerate(events):
            for outcome in self.run(event):
                yield index, outcome


def _finish(sub: Subscription, built: dict[str, Any], problems: list[str], explain: dict[str, Any] | None) -> Outcome:
    payload, field_problems = sub.checks.check(built)
    problems += [p.message for p in field_problems]
    if problems:
        return Outcome(sub.name, sub.action.slug, "invalid", payload, tuple(problems), explain=explain)
    return Outcome(sub.name, sub.action.slug, "ok", payload, explain=explain)


def _mapped(sub: Subscription, event: dict[str, Any]) -> Outcome:
    built: dict[str, Any] = {}
    problems: list[str] = []
    for name, node in sub.mapping.items():
        try:
            value = node.evaluate(event)
        except MappingFailure as failure:
            problems.append(f"{name}: {failure} (mapping {node.source})")
            continue
        if value is not MISSING:
            built[name] = value
    return _finish(sub, built, problems, None)


def _explained(sub: Subscription, event: dict[str, Any]) -> Outcome:
    """As :func:`_mapped`, also saying per field where its value came from."""
    built: dict[str, Any] = {}
    problems: list[str] = []
    notes: dict[str, Any] = {}
    for name, node in sub.mapping.items():
        try:
            value, note = node.explain(event)
        except MappingFailure as failure:
            problems.append(f"{name}: {failure} (mapping {node.source})")
            notes[name] = {"from": node.source, "failed": str(failure)}
            continue
        notes[name] = note
        if value is not MISSING:
            built[name] = value
    outcome = _finish(sub, built, problems, notes)
    for name, note in notes.items():
        if outcome.payload is not None and name in built and outcome.payload.get(name) != built[name]:
            note["coerced"] = {"from": built[name], "to": outcome.payload.get(name, MISSING) if name in outcome.payload else "dropped"}
    return outcome
