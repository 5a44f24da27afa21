"""How OpenMeter lists ingested events back: ``GET /api/v1/events`` (query filters) and ``GET /api/v2/events`` (cursor).

Pure functions over the emulator's ingested records, apart from the ingest rules
because the read-back is the SDK's side of the contract, not the sender's. Both lists
are newest first by event time (ClickHouse ``ORDER BY time DESC``); ties go newest
ingested first, so the order is total and a cursor is stable.

Decisions where the reference is silent (unverified): v2 takes ``limit`` 1..100
(default 100) and, unlike v1, has no 72-hour default window; its ``nextCursor`` is
given only when more events follow; the cursor is opaque (base64 of the last event's
position); a filter object may hold several operators (all must hold).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Final, Mapping

MAX_LIMIT: Final = 100
V1_DEFAULT_WINDOW: Final = timedelta(hours=72)


class QueryError(ValueError):
    """A query parameter OpenMeter refuses: the 400 detail, worded as kin-openapi's parameter errors are."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"parameter {json.dumps(name)} in query has an error: {reason}")


@dataclass(frozen=True)
class Ingested:
    """One accepted event as the list endpoints show it; ``seq`` orders events ingested at one instant."""

    seq: int
    event: dict[str, Any]
    time: datetime
    ingested_at: datetime
    shown_ingested_at: str

    def listed(self) -> dict[str, Any]:
        """The spec's ``IngestedEvent`` (``customerId`` and ``validationError`` omitted: no customers, no meters)."""
        return {"event": self.event, "ingestedAt": self.shown_ingested_at, "storedAt": self.shown_ingested_at}


def newest_first(records: list[Ingested]) -> list[Ingested]:
    return sorted(records, key=lambda r: (r.time, r.seq), reverse=True)


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _instant(query: Mapping[str, list[str]], name: str, parse: Callable[[str], datetime | None]) -> datetime | None:
    text = _one(query, name)
    if text is None:
        return None
    instant = parse(text)
    if instant is None:
        raise QueryError(name, f'string doesn\'t match the format "date-time": {json.dumps(text)}')
    return instant


def limit_of(query: Mapping[str, list[str]]) -> int:
    text = _one(query, "limit")
    if text is None:
        return MAX_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise QueryError("limit", f"value {text}: an invalid integer: invalid syntax") from None
    if limit < 1:
        raise QueryError("limit", "number must be at least 1")
    if limit > MAX_LIMIT:
        raise QueryError("limit", f"number must be at most {MAX_LIMIT}")
    return limit


def list_v1(records: list[Ingested], query: Mapping[str, list[str]], now: datetime,
            parse: Callable[[str], datetime | None]) -> list[dict[str, Any]]:
    """``GET /api/v1/events``: ``from`` defaults to 72 hours ago; ``id`` and ``subject`` match partially."""
    limit = limit_of(query)
    start = _instant(query, "from", parse) or now - V1_DEFAULT_WINDOW
    end = _instant(query, "to", parse)
    ingested_from = _instant(query, "ingestedAtFrom", parse)
    ingested_to = _instant(query, "ingestedAtTo", parse)
    id_part, subject_part = _one(query, "id"), _one(query, "subject")
    customers = query.get("customerId")

    def wanted(r: Ingested) -> bool:
        return (start <= r.time and (end is None or r.time <= end)
                and (ingested_from is None or ingested_from <= r.ingested_at)
                and (ingested_to is None or r.ingested_at <= ingested_to)
                and (id_part is None or id_part in r.event["id"])
                and (subject_part is None or subject_part in r.event["subject"])
                and not customers)  # no event belongs to a customer here

    return [r.listed() for r in newest_first(records) if wanted(r)][:limit]


# -- v2: a JSON filter and a cursor -------------------------------------------------------

_STRING_FIELDS: Final = ("id", "source", "subject", "type")
_TIME_FIELDS: Final = {"time": "time", "ingestedAt": "ingested_at"}


def _like(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """SQL LIKE: ``%`` any run, ``_`` one character."""
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


def _string_holds(flt: Any, value: str, where: str) -> bool:
    if not isinstance(flt, dict) or not flt:
        raise QueryError("filter", f"{where}: expected a filter object like {{\"$eq\": \"...\"}}")
    held = True
    for op, arg in flt.items():
        if op in ("$and", "$or"):
            results = [_string_holds(f, value, where) for f in (arg if isinstance(arg, list) else [])]
            held &= all(results) if op == "$and" else any(results)
        elif op in ("$in", "$nin"):
            held &= (value in arg) == (op == "$in")
        elif op in ("$like", "$nlike", "$ilike", "$nilike"):
            flags = re.IGNORECASE if "ilike" in op else 0
            held &= (_like(str(arg), flags).fullmatch(value) is not None) == (not op.startswith("$n"))
        elif op in _COMPARE:
            held &= _COMPARE[op](value, str(arg))
        else:
            raise QueryError("filter", f"{where}: unknown operator {json.dumps(op)}")
    return held


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b,
}


def _time_holds(flt: Any, value: datetime, where: str, parse: Callable[[str], datetime | None]) -> bool:
    if not isinstance(flt, dict) or not flt:
        raise QueryError("filter", f"{where}: expected a filter object like {{\"$gte\": \"2026-01-01T00:00:00Z\"}}")
    held = True
    for op, arg in flt.items():
        if op in ("$and", "$or"):
            results = [_time_holds(f, value, where, parse) for f in (arg if isinstance(arg, list) else [])]
            held &= all(results) if op == "$and" else any(results)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            instant = parse(arg) if isinstance(arg, str) else None
            if instant is None:
                raise QueryError("filter", f"{where}.{op}: not an RFC 3339 date-time: {json.dumps(arg)}")
            held &= _COMPARE[op](value, instant)
        else:
            raise QueryError("filter", f"{where}: unknown operator {json.dumps(op)}")
    return held


def _filter_of(query: Mapping[str, list[str]]) -> dict[str, Any]:
    text = _one(query, "filter")
    if text is None:
        return {}
    try:
        flt = json.loads(text)
    except ValueError as error:
        raise QueryError("filter", f"not JSON: {error}") from None
    if not isinstance(flt, dict):
        raise QueryError("filter", "expected a JSON object")
    unknown = sorted(set(flt) - set(_STRING_FIELDS) - set(_TIME_FIELDS) - {"customerId"})
    if unknown:
        raise QueryError("filter", f"unknown field {json.dumps(unknown[0])}")
    return flt


def _check(flt: dict[str, Any], parse: Callable[[str], datetime | None]) -> None:
    """Refuse a malformed filter even when no event would be compared with it."""
    for name in _STRING_FIELDS:
        if name in flt:
            _string_holds(flt[name], "", name)
    for name in _TIME_FIELDS:
        if name in flt:
            _time_holds(flt[name], datetime.now(timezone.utc), name, parse)


def encode_cursor(record: Ingested) -> str:
    return base64.urlsafe_b64encode(json.dumps([record.time.isoformat(), record.seq]).encode()).decode()


def _position(text: str) -> tuple[datetime, int]:
    try:
        when, seq = json.loads(base64.urlsafe_b64decode(text.encode()))
        return datetime.fromisoformat(when), int(seq)
    except (ValueError, TypeError, binascii.Error):
        raise QueryError("cursor", "not a cursor this API gave") from None


def list_v2(records: list[Ingested], query: Mapping[str, list[str]],
            parse: Callable[[str], datetime | None]) -> dict[str, Any]:
    """``GET /api/v2/events``: ``{"items": [...], "nextCursor": "..."}`` (the cursor only when more follow)."""
    limit = limit_of(query)
    flt = _filter_of(query)
    _check(flt, parse)
    cursor = _one(query, "cursor")
    after = _position(cursor) if cursor else None

    def wanted(r: Ingested) -> bool:
        if after is not None and (r.time, r.seq) >= after:
            return False
        if "customerId" in flt:
            return False  # no event belongs to a customer here
        return (all(_string_holds(flt[f], r.event.get(f, ""), f) for f in _STRING_FIELDS if f in flt)
                and all(_time_holds(flt[f], getattr(r, a), f, parse) for f, a in _TIME_FIELDS.items() if f in flt))

    found = [r for r in newest_first(records) if wanted(r)]
    page: dict[str, Any] = {"items": [r.listed() for r in found[:limit]]}
    if len(found) > limit:
        page["nextCursor"] = encode_cursor(found[limit - 1])
    return page
