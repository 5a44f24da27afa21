"""Dead letters: what could not be delivered, kept whole so it can be replayed.

A record holds the original event, the payload (when one was built), the reason,
the HTTP status, the attempts and the time. Records are NDJSON, one per line, with
every secret setting masked.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from engine.delivery import DeadLetter
from engine.mappingfile import Settings


class DeadLetterFile:
    """Appends dead letters to an NDJSON file (or counts them only, when no file is given)."""

    def __init__(self, path: str | Path | None, settings: Settings) -> None:
        self.settings = settings
        self.count = 0
        self._out: IO[bytes] | None = Path(path).open("ab") if path else None

    def write(self, letter: DeadLetter) -> None:
        self.count += 1
        if self._out is not None:
            line = orjson.dumps(asdict(letter), default=str).decode()
            self._out.write(self.settings.redact(line).encode() + b"\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def __enter__(self) -> "DeadLetterFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_dead_letters(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None, problem) for each line of a dead-letter file."""
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, None, f"not valid JSON: {exc}"
                continue
            if not isinstance(record, dict) or "event" not in record:
                yield number, None, "not a dead-letter record (no event)"
                continue
            yield number, record, ""
