"""The emulators' rate limit: a token bucket on the monotonic clock.

Its own module because it is the one piece of timing an emulator has, and it must not
follow the injected clock (tests freeze that one).
"""

from __future__ import annotations

import time


class TokenBucket:
    """Events per second with a burst of one second's worth, never less than ``burst`` (one full batch).

    Runs on the monotonic clock, not the injectable one: the injected clock is the
    calendar timestamps are judged by, and tests often freeze it.
    """

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate_limit must be a positive number of events per second, got {rate}")
        self.rate = rate
        self.capacity = max(rate, float(burst))
        self.refill()

    def refill(self) -> None:
        self._tokens = self.capacity
        self._at = time.monotonic()

    def take(self, count: int) -> bool:
        """Spend ``count`` tokens if there are that many (the caller serialises calls)."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True
