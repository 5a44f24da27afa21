"""One event through every subscription of a mapping file: integrations, trigger, mapping, field checks.

This is the per-event path. Everything here was compiled when the mapping file
loaded; per event we only walk, compare and copy: each subscription is one trigger
predicate and one fused map-and-check pass (``FieldSet.builder``). ``explain`` runs the
same pass traced: each mapping records where its value came from and each check what it
changed, so the outcome is the one the untraced pass gives, with notes. Nothing raises
for bad event data: a problem becomes an ``invalid`` outcome that names the field
and the rule, and an unexpected exception on one event's path (a bug) makes that
event invalid with the error rather than stopping the events around it.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

from engine.errors import MappingFailure
from engine.lang.fields import Build
from engine.config.mappingfile import MappingFile, Subscription
from engine.lang.mapping import Node, Note, Trace
from engine.lang.missing import MISSING
from engine.lang.trigger import integrations_filter

Status = Literal["ok", "invalid", "filtered"]


class Outcome(NamedTuple):
    """What one subscription made of one event (a tuple: cheap to make once per event)."""

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
        self._compiled: tuple[tuple[Subscription, Callable[[dict[str, Any]], bool], Build], ...] = tuple(
            (sub, sub.trigger.matches, sub.checks.builder({name: node.evaluator for name, node in sub.mapping.items()}))
            for sub in self.subscriptions
        )

    def run(self, event: Any, include_filtered: bool = False, explain: bool = False) -> list[Outcome]:
        """Outcomes for the subscriptions the event feeds (and, on request, those it does not)."""
        if type(event) is not dict:
            found = type(event).__name__ if event is not None else "null"
            return [
                Outcome(s.name, s.action.slug, "invalid", errors=(f"the event is not a JSON object (found {found})",))
                for s in self.subscriptions
            ]
        try:
            allowed = self._allowed(event)
        except Exception as exc:  # the last guard, as below
            return [_failed(s, exc) for s in self.subscriptions]
        if not allowed:
            if not include_filtered:
                return []
            reason = f"the event's integrations object turns {self._destination} off"
            return [Outcome(s.name, s.action.slug, "filtered", reason=reason) for s in self.subscriptions]
        outcomes = []
        for sub, matches, build in self._compiled:
            try:
                if not matches(event):
                    if include_filtered:
                        outcomes.append(Outcome(sub.name, sub.action.slug, "filtered", reason=f"trigger is false: {sub.trigger.source}"))
                elif explain:
                    outcomes.append(_explained(sub, event))
                else:
                    payload, problems = build(event)
                    if problems:
                        outcomes.append(Outcome(sub.name, sub.action.slug, "invalid", payload, tuple(p.message for p in problems)))
                    else:
                        outcomes.append(Outcome(sub.name, sub.action.slug, "ok", payload))
            except Exception as exc:  # the last guard: a fault on one event's path makes that event invalid, never stops the rest
                outcomes.append(_failed(sub, exc))
        return outcomes


def _failed(sub: Subscription, exc: Exception) -> Outcome:
    """The outcome of an event whose mapping raised where nothing should: invalid, with the error, for the operator to report."""
    error = f"internal error while mapping this event ({type(exc).__name__}: {exc}); it is kept in the dead letters: please report it"
    return Outcome(sub.name, sub.action.slug, "invalid", errors=(error,))


def _explained(sub: Subscription, event: dict[str, Any]) -> Outcome:
    """The outcome of the subscription's pass run traced: per field where its value came from and what its check changed."""
    notes: dict[str, Note] = {}

    def coerced(name: str, value: Any, checked: Any, by: str) -> None:
        notes[name]["coerced"] = {"by": by, "from": value, "to": None if checked is MISSING else checked}

    build = sub.checks.builder({name: _tracing(name, node, notes) for name, node in sub.mapping.items()}, coerced)
    payload, problems = build(event)
    status: Status = "invalid" if problems else "ok"
    return Outcome(sub.name, sub.action.slug, status, payload, tuple(p.message for p in problems), explain=notes)


def _tracing(name: str, node: Node, notes: dict[str, Note]) -> Callable[[Any], Any]:
    """The field's mapping evaluated with a trace, its note kept under the field's name (a failure's too)."""

    def evaluate(event: Any) -> Any:
        trace: Trace = []
        try:
            value = node.evaluate(event, trace)
        except MappingFailure as failure:
            notes[name] = {"from": node.source, "failed": str(failure)}
            raise
        notes[name] = trace[0]
        return value

    return evaluate
