"""Reading events: a JSON object, a JSON array, or NDJSON, from a file or stdin, gzip or not.

Input is streamed: NDJSON line by line and a top-level array element by element,
so memory stays flat however large the input. A malformed NDJSON line is
reported with its line number and the reading goes on; a broken array cannot be
resynchronised, so it ends the input with a located error.

Every event meets the limits of :mod:`engine.limits` here, once: one past them,
like a piece that is not JSON, becomes a :class:`BadInput` that keeps its text,
so nothing that arrived is lost and nothing deeper reaches the pipeline.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple, cast

import orjson

from engine.limits import MAX_DEPTH, event_problem

_CHUNK = 1 << 16
_MAX_EVENT = 1 << 22  # an array element this long that still does not parse is broken, not cut
_WHITESPACE = " \t\r\n"


class Event(NamedTuple):
    """One event read, with its place in the input (a tuple: made once per event, cheaply)."""

    position: int
    line: int
    value: Any


@dataclass(frozen=True, slots=True)
class BadInput:
    """A piece of input that cannot be taken as an event (not JSON, or past a limit): its place, why, and its text."""

    position: int
    line: int
    message: str
    raw: str | None = None


Item = Event | BadInput


def open_input(name: str | None) -> IO[str]:
    """A text stream for a path or ``-``/None (stdin), unzipping gzip by its magic bytes."""
    raw: IO[bytes] = sys.stdin.buffer if name in (None, "-") else Path(name).open("rb")
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, raw))
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=buffered), encoding="utf-8")
    return io.TextIOWrapper(buffered, encoding="utf-8")


def read_events(stream: IO[str]) -> Iterator[Item]:
    """Every event of ``stream`` in order; ``position`` counts events and bad pieces alike.

    The first line is read in bounded pieces too: a whole array on one line (as
    ``json.dumps`` writes it) is then read element by element like any other.
    """
    line_no = 0
    while first := stream.readline(_MAX_EVENT):
        line_no += 1
        if first.strip():
            break
    else:
        return
    head = first.lstrip()
    if head.startswith("["):
        yield from _values(stream, first[first.index("[") + 1:], line_no, array=True)
        return
    if head.startswith("{") and _whole_line(first) and not _parses(first):
        yield from _values(stream, first, line_no, array=False)  # a pretty-printed object (or several) over many lines
        return
    yield from _ndjson(stream, first, line_no)


def _whole_line(line: str) -> bool:
    return len(line) < _MAX_EVENT or line.endswith("\n")


def _parses(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def decode(position: int, line: int, text: str | bytes) -> Item:
    """One event from its JSON text (an NDJSON line, a queued row, a Kafka message), held to the limits."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return BadInput(position, line, _line_error(text, exc), _as_text(text))
    problem = event_problem(value, text)
    if problem is not None:
        return BadInput(position, line, problem, _as_text(text))
    return Event(position, line, value)


def _as_text(text: str | bytes) -> str:
    return (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).rstrip("\r\n")


def _line_error(text: str | bytes, exc: orjson.JSONDecodeError) -> str:
    """stdlib's message (it names the column) when it has one; orjson's otherwise (a number past ±1.8e308, a surrogate)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as stdlib:
        return f"not valid JSON: {stdlib.msg} at column {stdlib.colno}"
    except (ValueError, RecursionError):  # an integer past Python's digit limit, nesting past its stack
        pass
    return f"not valid JSON: {exc}"


def _ndjson(stream: IO[str], line: str, line_no: int) -> Iterator[Item]:
    """One event per line, from ``line`` (already read) on; a line past ``_MAX_EVENT`` is refused, in bounded memory."""
    index = 0
    readline, loads = stream.readline, orjson.loads
    while line:
        if not _whole_line(line):
            yield BadInput(index, line_no, f"the line is longer than {_MAX_EVENT // (1 << 20)} MiB, the limit for one event", line)
            while (rest := stream.readline(_MAX_EVENT)) and not rest.endswith("\n"):
                pass  # the rest of the line is skipped in bounded pieces; reading goes on at the next one
            index += 1
        elif line.strip():
            try:  # decode() inlined for the common line: one parse, one bracket count
                value = loads(line)
            except orjson.JSONDecodeError:
                yield decode(index, line_no, line)
            else:
                fits = line.count("{") + line.count("[") <= MAX_DEPTH
                yield Event(index, line_no, value) if fits else decode(index, line_no, line)
            index += 1
        line = readline(_MAX_EVENT)
        line_no += 1


_SCANNER = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
"""Finds where a value ends; orjson then reads it, so every input form means the same (numbers, NaN, surrogates)."""
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _value_end(text: str, pos: int) -> int | None:
    """The end of the object or array at ``pos``, counted without recursion (for nesting past the stdlib's stack)."""
    depth = 0
    for token in _TOKEN.finditer(text, pos):
        mark = token.group()
        if mark in "[{":
            depth += 1
        elif mark in "]}":
            depth -= 1
            if depth == 0:
                return token.end()
    return None


def _scan(text: str, pos: int) -> int | None:
    """Where the JSON value at ``pos`` ends; None when the text ends first; JSONDecodeError when it is not JSON."""
    try:
        return _SCANNER.raw_decode(text, pos)[1]
    except RecursionError:
        return _value_end(text, pos)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _values(stream: IO[str], buffer: str, line: int, array: bool) -> Iterator[Item]:
    """The values of a top-level JSON array (``array``) or of JSON texts one after another, decoded as chunks arrive.

    ``line`` is the line number of ``buffer[0]``; at most one value (bounded by
    ``_MAX_EVENT``) is held at a time, so memory stays flat however long the input.
    """
    what = "not valid JSON in the array" if array else "not valid JSON"
    index, need_value, eof = 0, True, False
    while True:
        pos = _skip(buffer, 0)
        counted = 0  # newlines of buffer[:counted] are in ``line``: counted once each, however long the buffer
        while pos < len(buffer):
            line, counted = line + buffer.count("\n", counted, pos), pos  # ``line`` is now the line of buffer[pos]
            char = buffer[pos]
            if array and char == "]" and (not need_value or index == 0):
                return
            if array and char == "," and not need_value:
                pos, need_value = _skip(buffer, pos + 1), True
                continue
            if not need_value:
                yield BadInput(index, line, f"{what}: expected , or ] between elements")
                return
            try:
                end = _scan(buffer, pos)
            except json.JSONDecodeError as exc:
                if not eof and len(buffer) - pos < _MAX_EVENT:
                    break  # the value may go on in the next chunk
                yield BadInput(index, line + buffer.count("\n", counted, exc.pos), f"{what}: {exc.msg}", buffer[pos:pos + _MAX_EVENT])
                return
            if end is None or (end == len(buffer) and not eof):
                if end is None and (eof or len(buffer) - pos >= _MAX_EVENT):
                    yield BadInput(index, line, f"{what}: a value does not end", buffer[pos:pos + _MAX_EVENT])
                    return
                break  # the value (or a number) may go on in the next chunk
            yield decode(index, line, buffer[pos:end])
            pos, index, need_value = _skip(buffer, end), index + 1, not array
        line += buffer.count("\n", counted, pos)
        if eof:
            if array:
                yield BadInput(index, line, "the JSON array ends without ]")
            return
        chunk = stream.read(_CHUNK)
        buffer, eof = buffer[pos:] + chunk, not chunk
