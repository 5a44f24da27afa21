"""One event through every subscription of a mapping file: integrations, trigger, mapping, field checks.

This is the per-event path. Everything here was compiled when the mapping file
loaded; per event we only walk, compare and copy. Nothing raises for bad event
data: a problem becomes an ``invalid`` outcome that names the field and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

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
                outcomes.append(_build(sub, event, explain))
            elif include_filtered:
                outcomes.append(Outcome(sub.name, sub.action.slug, "filtered", reason=f"trigger is false: {sub.trigger.source}"))
        return outcomes


def _finish(
    sub: Subscription, built: dict[str, Any], failed: dict[str, str], explain: dict[str, Any] | None
) -> Outcome:
    """Check the built payload; a field whose mapping failed is reported once, by its failure."""
    payload, field_problems = sub.checks.check(built)
    problems = list(failed.values()) + [p.message for p in field_problems if p.field not in failed]
    if problems:
        return Outcome(sub.name, sub.action.slug, "invalid", payload, tuple(problems), explain=explain)
    return Outcome(sub.name, sub.action.slug, "ok", payload, explain=explain)


def _build(sub: Subscription, event: dict[str, Any], explain: bool) -> Outcome:
    """Map every field, then check the payload; with ``explain``, say per field where its value came from."""
    built: dict[str, Any] = {}
    failed: dict[str, str] = {}
    notes: dict[str, Any] | None = {} if explain else None
    for name, node in sub.mapping.items():
        try:
            if notes is None:
                value = node.evaluate(event)
            else:
                value, notes[name] = node.explain(event)
        except MappingFailure as failure:
            failed[name] = f"{name}: {failure} (mapping {node.source})"
            if notes is not None:
                notes[name] = {"from": node.source, "failed": str(failure)}
            continue
        if value is not MISSING:
            built[name] = value
    outcome = _finish(sub, built, failed, notes)
    if notes is not None and outcome.payload is not None:
        for name, value in built.items():
            sent = outcome.payload.get(name, MISSING)
            if sent is MISSING or sent != value or type(sent) is not type(value):
                by = _coercion_name(value, sent, sub.action.fields[name]["type"])
                notes[name]["coerced"] = {"by": by, "from": value, "to": None if sent is MISSING else sent}
    return outcome


_KINDS = {str: "string", bool: "boolean", int: "number", float: "number", type(None): "null", dict: "object", list: "array"}


def _coercion_name(before: Any, after: Any, field_type: str) -> str:
    """How a value changed between mapping and sending, named as the declared coercions are."""
    if after is MISSING:
        return "null_to_missing"
    kind_before, kind_after = _KINDS.get(type(before), "value"), _KINDS.get(type(after), "value")
    return f"{kind_before}_to_{kind_after}" if kind_before != kind_after else f"normalised {field_type}"
