"""What delivery takes and gives back: a payload on its way, and a dead letter (the vocabulary every mode shares)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple


class Outgoing(NamedTuple):
    """One payload on its way, with what a dead letter must keep (a tuple: made once per payload, cheaply).

    ``position`` says where its event came from, for the caller to find it again:
    the event's place in the input (send), its queue row (serve), its message (consume).
    """

    position: int
    event: Any
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What could not be delivered, kept whole: the event, or ``raw``, its text, when it could not be read as one."""

    subscription: str
    index: int
    event: Any
    payload: dict[str, Any] | None
    reason: str
    status: int | None = None
    attempts: int = 0
    time: str = field(default_factory=lambda: utc_text(datetime.now(timezone.utc)))
    raw: str | None = None
    exhausted: bool = False  # the retry budget ran out: a later attempt may still deliver it
    connection: str = ""  # set by the connection's batcher; "" for input that reached no connection

    @classmethod
    def of(cls, subscription: str, item: Outgoing, reason: str, status: int | None = None, attempts: int = 0,
           exhausted: bool = False) -> DeadLetter:
        """The dead letter of one outgoing payload (``reason`` already redacted by the caller)."""
        return cls(subscription, item.position, item.event, item.payload, reason, status, attempts, exhausted=exhausted)

    def record(self) -> dict[str, Any]:
        """The JSON record of a dead-letter line (``raw`` only when there is one); the event is not copied."""
        record = {"connection": self.connection, "subscription": self.subscription, "index": self.index, "event": self.event,
                  "payload": self.payload, "reason": self.reason, "status": self.status, "attempts": self.attempts,
                  "time": self.time}
        if self.raw is not None:
            record["raw"] = self.raw
        return record


def utc_text(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
