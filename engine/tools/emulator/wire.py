"""What goes over the wire: a request as a route sees it, an answer to send, the request log's entry.

Apart from the sockets (``server``) so that a platform's handlers and tests can build and
read these without a server, and apart from the emulator so that they carry no state.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Callable, Final, Iterable, Iterator, Mapping
from urllib.parse import parse_qsl

from engine.errors import mask as masked

_CREDENTIAL: Final = re.compile(r"([A-Za-z][A-Za-z0-9_-]*) +(\S+) *\Z")
BEARER: Final = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+) *\Z")
"""``Authorization: Bearer <token>`` (the scheme is case-insensitive, as RFC 9110 says)."""


class Problem(Exception):
    """Raised by a handler (or ``Call.json``/``Call.form``) to answer ``emulator.error(status, text)``."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


class Headers(Mapping[str, str]):
    """Request headers with case-insensitive names (iterated lower-case); a repeated header is joined with ", "."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            self._values[key] = f"{self._values[key]}, {value}" if key in self._values else value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


@dataclass(frozen=True)
class Call:
    """One request as a route sees it: ``path`` without the query string, ``raw`` the body decompressed.

    ``authenticate`` sees a Call whose ``raw`` is ``b""``: the body is not read before the credential is checked.
    """

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=Headers)
    raw: bytes = b""

    def json(self) -> Any:
        """The parsed JSON body; a :class:`Problem` (400) when there is none or it is not JSON (NaN included)."""
        value, problem = self._json
        if problem is not None:
            raise Problem(problem)
        return value

    def form(self) -> dict[str, str]:
        """The ``application/x-www-form-urlencoded`` body, keys left literal (``payload[value]``); the last repeat wins."""
        try:
            text = self.raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Problem(f"the form body is not UTF-8 ({error})") from None
        try:
            return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
        except ValueError as error:
            raise Problem(f"the request body is not a URL-encoded form ({error})") from None

    @property
    def is_form(self) -> bool:
        return "application/x-www-form-urlencoded" in self.headers.get("content-type", "").lower()

    def parsed(self) -> Any:
        """The body for the request log: the form dict, the JSON value, or None when it is neither."""
        try:
            return self.form() if self.is_form else self.json()
        except Problem:
            return None

    @cached_property
    def _json(self) -> tuple[Any, str | None]:
        if not self.raw.strip():
            return None, "the request body is empty: expected JSON"
        try:
            return json.loads(self.raw, parse_constant=_reject_constant), None
        except (ValueError, RecursionError) as error:
            return None, f"the request body is not valid JSON ({error})"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


@dataclass(frozen=True)
class Answer:
    """A response to send. ``content_type`` None sends no Content-Type (an empty 204)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str | None = "application/json"


def json_answer(status: int, value: Any, *headers: tuple[str, str]) -> Answer:
    """An answer whose body is ``value`` as JSON."""
    return Answer(status, json.dumps(value).encode(), tuple(headers))


Handle = Callable[[Call, str | None, re.Match[str]], Answer | None]
"""A route's handler: (the call, the fault drawn or None, the path's match) -> the answer, or None to drop."""


@dataclass(frozen=True)
class Route:
    """One endpoint: ``path`` is a regex matched in full; ``handle(call, fault, match)`` answers it.

    ``handle`` returning None means "stored, now drop the connection without answering"
    (``store_all_then_drop``). Faults are drawn for ``ingest`` routes only; the core answers
    the status faults, ``slow`` and ``reset_before_read`` itself, the handler implements
    ``store_part_then_500`` and ``store_all_then_drop``.
    """

    method: str
    path: str
    handle: Handle
    ingest: bool = False
    authenticated: bool = True

    @property
    def shown(self) -> str:
        """``POST /api/v1/events/{id}`` for ``(?P<id>[^/]+)``: the route as the 404 lists it."""
        return f"{self.method} " + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", self.path)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, for tests to read back.

    ``headers`` are lower-case, secrets masked; ``events`` is how many items the body
    carried (the emulator's ``count``), None when it carried none; ``status`` is None when
    no answer was sent (connection dropped or reset); ``fault`` is the fault drawn (ingest
    routes only); ``body`` is the parsed JSON or form dict (None when neither or unread);
    ``received`` is ``time.monotonic()`` when the request line arrived, to measure backoff.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    events: int | None
    status: int | None
    fault: str | None
    body: Any
    received: float


def mask(value: str) -> str:
    """A credential as it may be shown: the scheme, the mask, at most the last 4 characters (none of a short one)."""
    m = _CREDENTIAL.match(value)
    scheme, secret = (m.group(1) + " ", m.group(2)) if m else ("", value.strip())
    return scheme + masked(secret, shown=4)


def decompress(raw: bytes, encoding: str) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip or none); a :class:`Problem` (400) otherwise."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise Problem(f"the body is declared Content-Encoding: gzip but does not decompress ({error})") from None
    if encoding not in ("", "identity"):
        raise Problem(f"unsupported Content-Encoding {encoding!r}: send the body plain or gzip-compressed")
    return raw


def json_type(value: Any, *, integer: str = "number") -> str:
    """A parsed JSON value's type as JSON names it (null, boolean, number, string, array, object) for an error message.

    ``integer`` is what an int is called: "number" as JSON says it, "integer" where the
    platform's validator (JSON Schema) tells them apart. Any other Python type is named as Python names it.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return integer
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def matched_instant(m: re.Match[str]) -> datetime | None:
    """The instant a date-time pattern matched, or None when a field is out of range (an offset's minutes over 59 too).

    The pattern's groups, by number: 1 to 6 the year, month, day, hour, minute and second;
    7 the fraction's digits (optional; microseconds are kept, the rest dropped); 8 the
    offset's sign (none: UTC), 9 and 10 its hours and minutes.
    """
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if m.group(8):
        if int(m.group(10)) > 59:
            return None
        offset = timedelta(hours=int(m.group(9)), minutes=int(m.group(10)))
        if m.group(8) == "-":
            offset = -offset
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
    except ValueError:
        return None
