"""Checks that depend on the moment of sending: a datetime field's accepted window.

A field may declare ``window: {past: 34d, future: 24h}`` (Metronome's timestamp
window). An event outside it would make the destination reject the whole batch,
so it is dead-lettered here, with a precise reason, before it poisons a batch.
The window is narrowed by a safety margin: an event at the edge may cross it
while its batch waits for retries, and clocks disagree a little.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from engine.config.definitions import Action
from engine.delivery.records import Outgoing, utc_text

PAST_MARGIN = timedelta(hours=1)
FUTURE_MARGIN = timedelta(minutes=5)
_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``34d``, ``24h``, ``90m``, ``30s`` (the schema admits nothing else)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (expected a number and one of s, m, h, d)")
    return timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})


@dataclass(frozen=True)
class _Window:
    field: str
    past: timedelta
    future: timedelta
    text: str

    def check(self, payload: dict[str, Any], earliest: str, latest: str) -> str | None:
        value = payload.get(self.field)
        # canonical UTC strings (YYYY-MM-DDTHH:MM:SS.sssZ) sort in time order
        if isinstance(value, str) and not earliest <= value <= latest:
            side = "older than" if value < earliest else "later than"
            limit = earliest if value < earliest else latest
            return (
                f"{self.field} {value} is {side} the destination accepts ({self.text}, "
                f"with a safety margin: {limit} at the time of sending)"
            )
        return None


Check = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class PreSend:
    """The windows of one action; ``at(now)`` fixes the clock once for many payloads."""

    windows: tuple[_Window, ...]

    def at(self, now: datetime) -> Check:
        bounds = [
            (window, utc_text(now - window.past + PAST_MARGIN), utc_text(now + window.future - FUTURE_MARGIN))
            for window in self.windows
        ]

        def check(payload: dict[str, Any]) -> str | None:
            for window, earliest, latest in bounds:
                reason = window.check(payload, earliest, latest)
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
    """The clock-dependent checks of an action's payloads, or None when it declares none."""
    windows = tuple(
        _Window(name, parse_duration(decl["window"]["past"]), parse_duration(decl["window"]["future"]),
                f"{decl['window']['past']} back to {decl['window']['future']} ahead")
        for name, decl in action.fields.items()
        if "window" in decl
    )
    return PreSend(windows) if windows else None
