"""Reading events: a JSON object, a JSON array, or NDJSON, from a file or stdin, gzip or not.

Input is streamed: NDJSON line by line and a top-level array element by element,
so memory stays flat however large the input. A malformed NDJSON line is
reported with its line number and the reading goes on; a broken array cannot be
resynchronised, so it ends the input with a located error.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple, cast

import orjson

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
    """A piece of input that is not JSON: its place and why."""

    position: int
    line: int
    message: str


Item = Event | BadInput


def open_input(name: str | None) -> IO[str]:
    """A text stream for a path or ``-``/None (stdin), unzipping gzip by its magic bytes."""
    raw: IO[bytes] = sys.stdin.buffer if name in (None, "-") else Path(name).open("rb")
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, raw))
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=buffered), encoding="utf-8")
    return io.TextIOWrapper(buffered, encoding="utf-8")


def read_events(stream: IO[str]) -> Iterator[Item]:
    """Every event of ``stream`` in order; ``position`` counts events and bad pieces alike."""
    first = ""
    line_no = 0
    for first in stream:
        line_no += 1
        if first.strip():
            break
    else:
        return
    head = first.lstrip()
    if head.startswith("["):
        yield from _array(stream, first, line_no)
        return
    try:
        value = orjson.loads(first)
    except orjson.JSONDecodeError:
        if head.startswith("{"):  # a pretty-printed object (or several) over many lines
            yield from _concatenated(first + stream.read(), line_no)
            return
        yield BadInput(0, line_no, _line_error(first))
    else:
        yield Event(0, line_no, value)
    yield from _ndjson(stream, line_no, 1)


def _line_error(line: str) -> str:
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    return "not valid JSON"


def _ndjson(stream: IO[str], line_no: int, index: int) -> Iterator[Item]:
    loads = orjson.loads
    for line in stream:
        line_no += 1
        if not line.strip():
            continue
        try:
            yield Event(index, line_no, loads(line))
        except orjson.JSONDecodeError:
            yield BadInput(index, line_no, _line_error(line))
        index += 1


def _concatenated(text: str, line_no: int) -> Iterator[Item]:
    decoder = json.JSONDecoder()
    pos, index = 0, 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield BadInput(index, line_no + exc.lineno - 1, f"not valid JSON: {exc.msg} at column {exc.colno}")
            return
        yield Event(index, line_no + text.count("\n", 0, pos), value)
        pos, index = end, index + 1


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _array(stream: IO[str], first: str, line_no: int) -> Iterator[Item]:
    """Elements of one top-level JSON array, decoded as chunks arrive."""
    decoder = json.JSONDecoder()
    buffer = first[first.index("[") + 1 :]
    line = line_no  # the line number of buffer[0]
    index, need_value, eof = 0, True, False
    while True:
        pos = _skip(buffer, 0)
        while pos < len(buffer):
            where = line + buffer.count("\n", 0, pos)
            char = buffer[pos]
            if char == "]" and (not need_value or index == 0):
                return
            if char == "," and not need_value:
                pos, need_value = _skip(buffer, pos + 1), True
                continue
            if not need_value:
                yield BadInput(index, where, "not valid JSON in the array: expected , or ] between elements")
                return
            try:
                value, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                if not eof and len(buffer) - pos < _MAX_EVENT:
                    break  # the value may go on in the next chunk
                yield BadInput(index, line + buffer.count("\n", 0, exc.pos), f"not valid JSON in the array: {exc.msg}")
                return
            if end == len(buffer) and not eof:
                break  # a number may go on in the next chunk
            yield Event(index, where, value)
            pos, index, need_value = _skip(buffer, end), index + 1, False
        if eof:
            yield BadInput(index, line + buffer.count("\n", 0, pos), "the JSON array ends without ]")
            return
        line += buffer.count("\n", 0, pos)
        chunk = stream.read(_CHUNK)
        buffer, eof = buffer[pos:] + chunk, not chunk
