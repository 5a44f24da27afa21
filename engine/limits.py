"""The limits every input is held to, in one place, and the check each event meets once at the door.

Why these numbers:

- ``MAX_DEPTH``: the engine walks events with Python code and encodes payloads
  with orjson, which stops at 255 levels; a payload puts an event's values a
  few levels deeper (the request's array, the mapping's own objects, at most
  ``MAX_MAPPING_DEPTH``), so an event may nest 64 levels and every payload made
  from it still encodes. Real events nest a handful of levels.
- Numbers: events are read by orjson, which keeps integers of the 64-bit range
  exactly, reads larger ones as floating point (JSON's double) and refuses
  numbers past ±1.8e308 as not JSON. Values given in library mode are held to
  the same 64-bit range.
- Intake sizes: Segment's own (32 KB an event, 500 KB a request), and a cap on
  events per request (why: below).
- ``MAX_REQUEST_DEPTH``: the deepest request the intake takes; an event nested
  deeper than ``MAX_DEPTH`` but within it is stored and then dead-lettered as
  invalid, so its neighbours in the batch are delivered.
- File and expression limits bound what loading a mapping or plugin file may
  cost; past them the file is a located error, never a traceback.

Every limit is stated in the README (section "Limits"); a test reads them from here.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64  # nesting of objects and arrays in one event
MAX_REQUEST_DEPTH = 512  # nesting of one intake request body
MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # the integers kept exactly (orjson's range)

EVENT_LIMIT = 32 * 1024  # bytes of one event at the intake, as JSON (Segment's limit)
REQUEST_LIMIT = 500 * 1024  # bytes of one intake request, decompressed (Segment's limit)
MAX_BATCH_EVENTS = 10_000
"""Events in one request. Segment's API limits bytes only, but every event costs the intake a fixed ~0.5 KB
beyond its bytes (its dict, its ``messageId``, its stored text) until it is committed, so 500 KB of ``{}``
would be 160,000 of them. Segment's libraries send 100 events per batch (Python, Ruby; .NET 20) within
475-500 KB, and build events of at least ~250 bytes, so no library batch holds 2,000; 10,000 is five times
that, room for hand-made batches of 50-byte events, and bounds that cost to ~5 MB per request."""

MAX_MAPPING_DEPTH = 32  # nesting of one mapping value (objects, lists, directives)
MAX_EXPRESSION_DEPTH = 64  # nesting of one expression: parentheses, filters, sub-expressions
MAX_YAML_DEPTH = 128  # nesting of a YAML file
MAX_FILE_BYTES = 4 * 1024 * 1024  # a mapping or plugin file
MAX_INT_DIGITS = 100  # digits of an integer in a YAML file or an expression
MAX_COMPUTED_CHARS = 4096  # a path or template an event computes ({"@path": {"@path": ...}}), compiled per event
MAX_COMPUTED_RENDER = 100_000  # characters a template an event computes may render
MAX_LIQUID_CHARS = 1000  # one @liquid template (Segment's limit)
MAX_LIQUID_VALUE = 100_000  # characters of a text, or items of an array, one Liquid filter or render makes
MAX_LIQUID_WORK = 20 * MAX_LIQUID_VALUE
"""Characters and items all the filters of one Liquid render may take and make together. Each value is
capped, but a 1000-character template can still run thirty filters over 100,000 items (seconds of work);
this budget is counted, not timed, so the same event always gets the same outcome. Real templates use a
few thousand."""

_CONTAINERS = (dict, list)


def depth_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """Why ``value`` nests too deep or holds a number outside the kept range, or None; iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is int and not MIN_INT <= node <= MAX_INT:
            return f"holds an integer outside the 64-bit range ({MIN_INT} to {MAX_INT}): send it as a string"
        if kind not in _CONTAINERS:
            continue
        if depth > limit:
            return f"nests deeper than {limit} levels of objects and arrays (the limit)"
        children = node.values() if kind is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in _CONTAINERS or type(child) is int)
    return None


def event_problem(value: Any, text: str | bytes | None = None) -> str | None:
    """Why an event cannot be taken (a limit it exceeds), or None.

    ``text``, the event's JSON as read, makes the common case one count: JSON
    with no more opening brackets than the limit cannot nest deeper, and orjson
    has already kept its numbers in range.
    """
    if text is not None:
        if isinstance(text, bytes):
            if text.count(b"{") + text.count(b"[") <= MAX_DEPTH:
                return None
        elif text.count("{") + text.count("[") <= MAX_DEPTH:
            return None
    problem = depth_problem(value)
    return None if problem is None else f"the event {problem}"
