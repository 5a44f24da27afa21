"""The event's ``integrations`` object: which destinations the sender turned on or off for it."""

from __future__ import annotations

from typing import Any, Callable

from engine.lang.missing import MISSING
from engine.lang.trigger.tree import Event


def _opinion(value: Any) -> bool | None:
    """What one entry of ``integrations`` says: off (False), on (True) or nothing (None).

    As Segment's libraries read it: only ``false`` turns off; a value JavaScript holds
    true (``true``, an options object or list, a non-empty string, a non-zero number)
    turns on; ``null``, ``0`` and ``""`` leave the decision to ``All``.
    """
    if value is False:
        return False
    if value is MISSING or value is None:
        return None
    if type(value) in (dict, list):
        return True
    return True if value else None


def integrations_filter(name: str, slug: str) -> Callable[[Event], bool]:
    """Whether an event's ``integrations`` object lets it through to this destination.

    Absent or not an object: through. An entry for ``name`` or ``slug`` decides; when
    they disagree the explicit ``false`` wins (a customer said "not here"). Otherwise
    ``"All": false`` keeps the event away; anything else lets it through.
    """
    keys = (name, slug) if name != slug else (name,)

    def allowed(event: Event) -> bool:
        integrations = event.get("integrations")
        if type(integrations) is not dict:
            return True
        opinions = [_opinion(integrations.get(key, MISSING)) for key in keys]
        if False in opinions:
            return False
        if True in opinions:
            return True
        return integrations.get("All") is not False

    return allowed
