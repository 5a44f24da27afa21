"""Checks that depend on the moment of sending: a datetime field's accepted window.

A field may declare ``window: {past: 34d, future: 24h}`` (Metronome's timestamp
window). An event outside it would make the destination reject the whole batch,
so it is dead-lettered here, with a precise reason, before it poisons a batch.
The window is narrowed by a safety margin: an event at the edge may cross it
while its batch waits for retries, and clocks disagree a little. The margin is at
most half the window, so a short one (5 minutes ahead) still admits something.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from engine.config.definitions import Action
from engine.delivery.records import Outgoing, utc_text
from engine.lang.fields import Window

PAST_MARGIN = timedelta(hours=1)
FUTURE_MARGIN = timedelta(minutes=5)


def _refusal(window: Window, value: Any, earliest: str, latest: str) -> str | None:
    """Why the field's value may not leave now, or None (a value that is not a datetime string was refused earlier)."""
    # canonical UTC strings (YYYY-MM-DDTHH:MM:SS.sssZ) sort in time order; a value sent as Unix time is read back to one
    text = window.read(value)
    if text is not None and not earliest <= text <= latest:
        side = "older than" if text < earliest else "later than"
        limit = earliest if text < earliest else latest
        return (
            f"{window.field} {value} is {side} the destination accepts ({window.text}, "
            f"with a safety margin: {limit} at the time of sending)"
        )
    return None


Check = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class PreSend:
    """The windows of one action; ``at(now)`` fixes the clock once for many payloads."""

    windows: tuple[Window, ...]

    def at(self, now: datetime) -> Check:
        bounds = [
            (window, utc_text(now - window.past + min(PAST_MARGIN, window.past / 2)),
             utc_text(now + window.future - min(FUTURE_MARGIN, window.future / 2)))
            for window in self.windows
        ]

        def check(payload: dict[str, Any]) -> str | None:
            for window, earliest, latest in bounds:
                reason = _refusal(window, payload.get(window.field), earliest, latest)
                if reason:
                    return reason
            return None

        return check

    def split(self, items: list[Outgoing], now: datetime) -> tuple[list[Outgoing], list[tuple[Outgoing, str]]]:
        """The payloads that may leave now, and the others with the reason each may not."""
        check = self.at(now)
        kept: list[Outgoing] = []
        refused: list[tuple[Outgoing, str]] = []
        for item in items:
            reason = check(item.payload)
            if reason:
                refused.append((item, reason))
            else:
                kept.append(item)
        return kept, refused


def compile_presend(action: Action) -> PreSend | None:
    """The clock-dependent checks of an action's payloads (compiled with its fields), or None when it declares none."""
    windows = action.checks.windows
    return PreSend(windows) if windows else None
