"""Dead letters: what could not be delivered, kept whole so it can be replayed.

A record holds the original event, the payload (when one was built), the reason,
the HTTP status, the attempts and the time; input that could not be read as an
event (not JSON, past a limit) is kept as its text in ``raw``. Records are NDJSON, one per line, with
every secret setting masked.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Protocol

import orjson

from engine.delivery.records import DeadLetter


class Redacts(Protocol):
    """Masks secrets in text: a connection's :class:`~engine.config.mappingfile.Settings`, or a deployment's ``Secrets``."""

    def redact(self, text: str) -> str: ...


class DeadLetterFile:
    """Appends dead letters to an NDJSON file (or counts them only, when no file is given); the lanes of a send share one.

    This is where a dead letter leaves the process, so this is where secrets are masked.
    """

    def __init__(self, path: str | Path | None, settings: Redacts) -> None:
        self.settings = settings
        self.count = 0
        self._out: IO[bytes] | None = Path(path).open("ab") if path else None
        self._lock = threading.Lock()

    def write(self, letter: DeadLetter) -> None:
        if self._out is None:
            with self._lock:
                self.count += 1
            return
        line = self.settings.redact(json_text(letter.record())).encode() + b"\n"
        with self._lock:
            self.count += 1
            self._out.write(line)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def __enter__(self) -> "DeadLetterFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_JSON = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity|NaN')  # strings are matched to be skipped


def _json_only(match: re.Match[str]) -> str:
    return match.group() if match.group().startswith('"') else "null"


def json_text(value: Any) -> str:
    """``value`` as JSON text, whatever it holds: what is kept of anything that did not arrive (a dead letter, its payload).

    orjson refuses what a library caller may still hand over (lone surrogates,
    nesting past 254 levels, integers past 64 bits); the stdlib writes those, a
    lone surrogate (which no UTF-8 text can hold) as U+FFFD and NaN or infinity
    as null (as orjson does), so nothing is lost to its own encoding and the text
    stays readable by ``replay``. Past the stdlib's stack (about 1,000 levels)
    only a string saying so is left.
    """
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        pass
    try:
        text = _SURROGATE.sub("\ufffd", json.dumps(value, default=str, ensure_ascii=False))
    except RecursionError:
        return orjson.dumps("(nested too deep to be kept as JSON text)").decode()
    return _NOT_JSON.sub(_json_only, text)


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
