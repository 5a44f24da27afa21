"""What an HTTP answer means for the payloads of the request: the status rules, then the plugin's declared rules.

By status (SPEC 8): the success statuses mean delivered; 408, 429 and 5xx are retried
after the wait the server asks for (``Retry-After``, ``retry-after-ms``, then the
destination's declared rate-limit headers); 401 and 403 are a refused credential; any
other answer rejects the request, which the sender bisects. A plugin's ``responses``
rules are tried first: an answer that names the payloads it is about (``items``) settles
only those, and one that says "already stored" counts as delivered.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Sequence

import httpx

from engine.config.http import Items, RateLimitHeader, ResponseRule
from engine.errors import MappingFailure
from engine.lang.jmespath import Search, truthy

Kind = Literal["ok", "retry", "reject", "unauthorized", "stopped", "named", "expired"]
RETRYABLE = frozenset({408, 429})
UNAUTHORIZED = frozenset({401, 403})
MESSAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer's meaning; ``named`` (kind "named") maps a payload's position in the request to the server's reason."""

    kind: Kind
    status: int | None
    message: str
    retry_after: float | None = None
    named: dict[int, str] = field(default_factory=dict)
    outcome: str = ""


STOPPED = Answer("stopped", None, "")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()


def _wait_of(value: str, unit: str) -> float | None:
    """Seconds to wait from one header's value in its unit, or None when it does not parse."""
    if unit == "http_date":
        return _http_date(value)
    number = _number(value)
    if number is None:
        return None
    if unit == "milliseconds":
        return number / 1000
    if unit == "unix_seconds":
        return number - time.time()
    return number


_STANDARD = (RateLimitHeader("retry-after-ms", "milliseconds"), RateLimitHeader("retry-after", "seconds"))


def retry_after(response: httpx.Response, declared: Sequence[RateLimitHeader] = ()) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date), then declared headers.

    A header that does not parse is skipped (the backoff applies), never an error:
    a malformed hint from a struggling server must not stop delivery.
    """
    for header in (*_STANDARD, *declared):
        value = response.headers.get(header.name)
        if not value:
            continue
        wait = _wait_of(value, header.unit)
        if wait is None and header.name == "retry-after":
            wait = _wait_of(value, "http_date")
        if wait is not None:
            return max(0.0, wait)
    return None


def message(response: httpx.Response) -> str:
    """The server's words, short: a JSON body's ``message``, else the body's text, else the status phrase."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return response.text[:MESSAGE_LIMIT] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:MESSAGE_LIMIT]
    return response.text[:MESSAGE_LIMIT]


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, or nested past what a parser follows: a body rules see as null
        return None


def _holds(test: Search | None, value: Any) -> bool:
    if test is None:
        return True
    try:
        return truthy(test(value))
    except MappingFailure:  # a test that cannot run on this answer does not hold
        return False


def _reason_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = "; ".join(value)
    else:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)  # any JSON a server sends, big integers too
    return text[:MESSAGE_LIMIT]


def _entries(items: Items, body: Any) -> list[tuple[Any, Any]]:
    """(name, entry) for each entry ``at`` holds that passes ``when``: an object's keys, or each array entry's ``key``."""
    try:
        found = items.at(body)
        if items.pattern is not None:  # a text that names items inside it ("Error at \"/37/data\"")
            text = found if isinstance(found, str) else ""
            return [(match.group("item"), text) for match in items.pattern.finditer(text)]
        if isinstance(found, dict):
            pairs = list(found.items())
        elif isinstance(found, list):
            pairs = [(items.key(entry) if items.key else entry, entry) for entry in found]  # no key: the entry names itself
        else:
            return []
        return [(name, entry) for name, entry in pairs if _holds(items.when, entry)]
    except MappingFailure:
        return []


def named(items: Items, body: Any, payloads: Sequence[dict[str, Any]]) -> dict[int, str]:
    """The request's positions the answer names, each with the server's reason for it."""
    out: dict[int, str] = {}
    for name, entry in _entries(items, body):
        if items.match == "index":
            index = name if type(name) is int else int(name) if isinstance(name, str) and name.isascii() and name.isdigit() else -1
            positions = [index] if 0 <= index < len(payloads) else []
        else:
            positions = [i for i, payload in enumerate(payloads) if name is not None and payload.get(items.match) == name]
        if not positions:
            continue
        try:
            reason = _reason_text(items.reason(entry) if items.reason else entry)
        except MappingFailure:
            reason = _reason_text(entry)
        out.update(dict.fromkeys(positions, reason))
    return out


_PLAIN: dict[str, Kind] = {"dead": "reject", "delivered": "ok", "retry": "retry", "refused": "unauthorized"}


def _by_rule(response: httpx.Response, rules: Sequence[ResponseRule], payloads: Sequence[dict[str, Any]],
             declared: Sequence[RateLimitHeader]) -> Answer | None:
    status = response.status_code
    body: Any = ...
    for rule in rules:
        if status not in rule.status:
            continue
        if body is ...:
            body = _body(response)
        if not _holds(rule.when, body):
            continue
        if rule.items is None:
            kind = _PLAIN[rule.outcome]
            wait = retry_after(response, declared) if kind == "retry" else None
            return Answer(kind, status, message(response), wait)
        found = named(rule.items, body, payloads)
        if found:
            return Answer("named", status, message(response), named=found, outcome=rule.outcome)
    return None


def expired(response: httpx.Response, rule: ResponseRule) -> bool:
    """Whether the answer says the session's token expired."""
    return response.status_code in rule.status and _holds(rule.when, _body(response))


def succeeded(status: int, success: frozenset[int] | None) -> bool:
    """Whether a status means stored: one the plugin declares in ``success``, else any 2xx."""
    return 200 <= status < 300 if success is None else status in success


def classify(response: httpx.Response, rules: Sequence[ResponseRule] = (), payloads: Sequence[dict[str, Any]] = (),
             success: frozenset[int] | None = None, declared: Sequence[RateLimitHeader] = ()) -> Answer:
    """What the answer means for the request's payloads (declared rules first, then the status)."""
    if rules:
        ruled = _by_rule(response, rules, payloads, declared)
        if ruled is not None:
            return ruled
    status = response.status_code
    if succeeded(status, success):
        return Answer("ok", status, "")
    if 200 <= status < 300:
        return Answer("reject", status, f"answered {status}, which this destination does not answer when it stores events")
    if status in RETRYABLE or status >= 500:
        return Answer("retry", status, message(response), retry_after(response, declared))
    if status in UNAUTHORIZED:
        return Answer("unauthorized", status, message(response))
    return Answer("reject", status, message(response))
