"""The fault script every emulator shares: which faults exist and which one the next ingest request gets.

Its own module because the fault plan is shared by the emulators, their command line
and the delivery tests that script them, and none of that needs the HTTP server.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from typing import Final, Iterable, TypeVar

FAULT_KINDS: Final = (
    "429",
    "429_retry_after",
    "500",
    "502",
    "503",
    "504",
    "store_part_then_500",
    "store_all_then_drop",
    "slow",
    "reset_before_read",
)
"""Every fault an emulator can inject; ``None`` in a script means "behave normally"."""

STATUS_FAULTS: Final = {"429": 429, "429_retry_after": 429, "500": 500, "502": 502, "503": 503, "504": 504}
"""Faults answered with a status alone: the body is read (keep-alive stays usable), nothing is stored."""


class Faults:
    """What goes wrong, and when: a script consumed one entry per ingest request, then random draws.

    One seeded ``random.Random`` draws both the fault and, for ``store_part_then_500``,
    how much of the batch is stored, so a run with one sequential client repeats exactly.
    Thread-safe: the request threads share it.
    """

    def __init__(
        self,
        script: Iterable[str | None] = (),
        *,
        rate: float = 0.0,
        kinds: Iterable[str] = FAULT_KINDS,
        seed: int | None = None,
        slow_delay: float = 10.0,
        retry_after_ms: int = 1000,
    ) -> None:
        self._script: deque[str | None] = deque(checked_fault_names(script, allow_none=True))
        self.kinds: tuple[str, ...] = tuple(checked_fault_names(kinds, allow_none=False))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        if rate > 0 and not self.kinds:
            raise ValueError("a fault rate above 0 needs at least one fault kind to draw from")
        if slow_delay < 0 or retry_after_ms < 0:
            raise ValueError("slow_delay and retry_after_ms must not be negative")
        self.rate = rate
        self.slow_delay = slow_delay
        self.retry_after_ms = retry_after_ms
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def extend(self, script: Iterable[str | None]) -> None:
        """Queue more scripted faults after those not yet consumed."""
        checked = checked_fault_names(script, allow_none=True)
        with self._lock:
            self._script.extend(checked)

    @property
    def pending(self) -> int:
        """How many scripted entries are not consumed yet."""
        with self._lock:
            return len(self._script)

    def draw(self) -> str | None:
        """The fault for the next ingest request, or None to behave normally."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self.rate and self._random.random() < self.rate:
                return self._random.choice(self.kinds)
            return None

    def part_of(self, count: int) -> int:
        """How many of ``count`` valid events ``store_part_then_500`` stores: a non-empty prefix, short of all when it can be."""
        with self._lock:
            return self._random.randint(1, max(1, count - 1))


_Name = TypeVar("_Name", str, str | None)


def checked_fault_names(names: Iterable[_Name], allow_none: bool) -> list[_Name]:
    """The fault names, or a ValueError naming the bad one and the valid ones."""
    listed = list(names)
    for name in listed:
        if not (name in FAULT_KINDS or (allow_none and name is None)):
            valid = ", ".join(FAULT_KINDS) + (" or None" if allow_none else "")
            raise ValueError(f"unknown fault {name!r}: expected one of {valid}")
    return listed
