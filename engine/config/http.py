"""A plugin's HTTP declarations: requests, what answers mean, session tokens and rate-limit headers.

Everything a destination says about the wire beyond its fields, compiled once when the
plugin loads, so that a body template, a JMESPath over an answer or a session rule that
cannot work is an error at FILE:LINE:COL, never a surprise at the first batch. The
delivery core (``engine.delivery``) only runs what is compiled here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Collection, Literal, Mapping

from engine.errors import ConfigError
from engine.lang.jmespath import Search, compile_jmespath
from engine.lang.jsonpath import walk
from engine.lang.template import Use, compile_template

_SETTING = re.compile(r"settings\.([A-Za-z0-9_]+)")
SESSION_TOKEN = "session.token"
"""The placeholder of a session's token in its headers; rendered from this key, which no setting name can be."""

PAYLOADS, PAYLOAD = "{{payloads}}", "{{payload}}"
"""The body template's placeholders: the array of the request's payloads, or its one payload."""

Outcome = Literal["dead", "delivered", "retry", "refused"]
Unit = Literal["seconds", "milliseconds", "unix_seconds", "http_date"]
Hook = Callable[..., Mapping[str, str]]
"""A request hook: called as ``hook(method=, url=, headers=, body=, settings=)``, returns headers to add."""


def settings_template(text: str, declared: Collection[str] | None = None, pointer: str = "",
                      session: bool = False) -> Callable[[Mapping[str, Any]], str]:
    """A plugin's URL, method, header or body text, compiled: the function renders it over setting values.

    Each placeholder names a setting (``{{settings.base_url}}``); with ``declared``, it
    must be one of those (the plugin's check at load time). A session's headers may
    also name ``{{session.token}}``.
    """

    def resolve(inner: str) -> Callable[[Any], Any]:
        if session and inner == SESSION_TOKEN:
            return walk((SESSION_TOKEN,))
        match = _SETTING.fullmatch(inner)
        if match is None:
            also = " (and {{session.token}} in a session's headers)" if session else ""
            raise ConfigError(f"{inner} is not a setting: a plugin's template names settings only, as {{{{settings.base_url}}}}{also}")
        name = match.group(1)
        if declared is not None and name not in declared:
            known = ", ".join(declared) or "none"
            raise ConfigError(f"settings.{name} is not declared (settings: {known})", offset=match.start(1))
        return walk((name,))

    return compile_template(text, Use("the template", "a setting such as {{settings.base_url}}", resolve), pointer)


@dataclass(frozen=True)
class Items:
    """Where an answer names the payloads it is about: entries at ``at``, each naming one by ``key`` (or its object key)."""

    at: Search
    match: str  # a payload field the name is compared with, or "index" (the position in the request)
    key: Search | None = None
    reason: Search | None = None
    when: Search | None = None
    pattern: re.Pattern[str] | None = None  # ``at`` is a text; each match's group ``item`` names one


@dataclass(frozen=True)
class ResponseRule:
    """An answer that means more than its status: which statuses, a JMESPath test of the body, what it means."""

    status: frozenset[int]
    when: Search | None = None
    outcome: Outcome = "dead"
    items: Items | None = None


@dataclass(frozen=True)
class Request:
    """An HTTP request declared in YAML; ``url``, header values and body-template strings are templates over settings."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "batch"  # payload | batch | auto | template
    json: Any = None
    headers_setting: str | None = None
    body_field: str | None = None
    hook: Hook | None = None
    template: Any = None  # the body template, when ``body`` is one
    encoding: Literal["json", "form"] = "json"
    content_type: str | None = None
    success: frozenset[int] | None = None  # None: any 2xx
    session: bool = False
    responses: tuple[ResponseRule, ...] = ()


@dataclass(frozen=True)
class Session:
    """A token obtained from one request, cached and renewed before it expires (or when an answer says it has)."""

    request: Request
    token: Search
    headers: dict[str, str]
    expired: ResponseRule
    expires_at: Search | None = None
    lifetime: timedelta = timedelta(minutes=15)
    renew_before: timedelta = timedelta(minutes=1)


@dataclass(frozen=True)
class RateLimitHeader:
    """A header that says when to try again, beside ``Retry-After``: its name and what its number counts."""

    name: str
    unit: Unit


_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str, pointer: str) -> timedelta:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(f"a duration is a number and a unit (s, m, h or d), as 15m, not {text!r}", pointer)
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ConfigError(f"the duration {text} is longer than any clock can count; a token lives minutes or hours", pointer) from None


def _search(data: Mapping[str, Any], key: str, pointer: str) -> Search | None:
    return compile_jmespath(data[key], f"{pointer}/{key}") if key in data else None


def _template_places(value: Any, pointer: str) -> list[tuple[str, str]]:
    """Every string of a body template with its pointer, to check placeholders and settings."""
    if isinstance(value, str):
        return [(value, pointer)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _template_places(item, f"{pointer}/{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _template_places(item, f"{pointer}/{index}")]
    return []


def _body(data: Mapping[str, Any], pointer: str) -> tuple[str, Any]:
    """``body``'s mode, and the template when it is one (which holds exactly one of {{payloads}} or {{payload}})."""
    body = data.get("body", "batch")
    if not isinstance(body, Mapping):
        return body, None
    template = body["template"]
    places = [at for text, at in _template_places(template, f"{pointer}/body/template") if text in (PAYLOADS, PAYLOAD)]
    if len(places) != 1:
        raise ConfigError(f"a body template holds the string {PAYLOADS} (the request's payloads) or {PAYLOAD} (one payload "
                          f"per request) exactly once; this one holds {len(places)}", f"{pointer}/body/template")
    return "template", template


def batched_template(template: Any) -> bool:
    """Whether a body template carries many payloads (``{{payloads}}``) rather than one."""
    return any(text == PAYLOADS for text, _ in _template_places(template, ""))


def _pattern(data: Mapping[str, Any], pointer: str) -> re.Pattern[str] | None:
    if "pattern" not in data:
        return None
    try:
        pattern = re.compile(data["pattern"])
    except re.error as error:
        raise ConfigError(f"pattern is not a valid regular expression: {error.msg}", f"{pointer}/pattern", error.pos) from None
    except OverflowError:
        raise ConfigError("pattern repeats something more times than a regular expression can count", f"{pointer}/pattern") from None
    if "item" not in pattern.groupindex:
        raise ConfigError("pattern must name the item with a group (?P<item>...)", f"{pointer}/pattern")
    return pattern


def compile_items(data: Mapping[str, Any], pointer: str) -> Items:
    return Items(compile_jmespath(data["at"], f"{pointer}/at"), data["match"], _search(data, "key", pointer),
                 _search(data, "reason", pointer), _search(data, "when", pointer), _pattern(data, pointer))


def compile_rule(data: Mapping[str, Any], pointer: str) -> ResponseRule:
    items = compile_items(data["items"], f"{pointer}/items") if "items" in data else None
    if items is not None and data.get("outcome", "dead") not in ("dead", "delivered"):
        raise ConfigError("a rule naming items settles them as dead or delivered; retry and refused are about the whole request",
                          f"{pointer}/outcome")
    return ResponseRule(frozenset(data["status"]), _search(data, "when", pointer), data.get("outcome", "dead"), items)


def compile_request(data: Mapping[str, Any], pointer: str, hook: Hook | None = None) -> Request:
    """A request declaration, its body template and answer rules checked (templates over settings are checked by the caller)."""
    mode, template = _body(data, pointer)
    rules = tuple(compile_rule(rule, f"{pointer}/responses/{index}") for index, rule in enumerate(data.get("responses", ())))
    encoding = data.get("encoding", "json")
    many = mode == "batch" or (mode == "template" and batched_template(template))
    if encoding == "form" and many:
        raise ConfigError("a form-encoded body carries one payload: use body: payload, or a template with {{payload}}",
                          f"{pointer}/encoding")
    return Request(
        method=data["method"], url=data["url"], headers=dict(data.get("headers", {})), body=mode, json=data.get("json"),
        headers_setting=data.get("headers_setting"), body_field=data.get("body_field"), hook=hook, template=template,
        encoding=encoding, content_type=data.get("content_type"),
        success=frozenset(data["success"]) if "success" in data else None, session=data.get("session", False),
        responses=rules,
    )


def compile_session(data: Mapping[str, Any], pointer: str) -> Session:
    expired = data["expired"]
    if any(200 <= status < 300 for status in expired["status"]):
        raise ConfigError("expired names a success status: an answer that stored the payloads cannot mean the token expired",
                          f"{pointer}/expired/status")
    return Session(
        request=compile_request(data["request"], f"{pointer}/request"),
        token=compile_jmespath(data["token"], f"{pointer}/token"),
        headers=dict(data["headers"]),
        expired=ResponseRule(frozenset(expired["status"]), _search(expired, "when", f"{pointer}/expired")),
        expires_at=_search(data, "expires_at", pointer),
        lifetime=duration(data.get("lifetime", "15m"), f"{pointer}/lifetime"),
        renew_before=duration(data.get("renew_before", "1m"), f"{pointer}/renew_before"),
    )


def compile_rate_limit(data: Mapping[str, Any]) -> tuple[RateLimitHeader, ...]:
    return tuple(RateLimitHeader(header["name"], header["unit"]) for header in data.get("headers", ()))


def template_texts(request: Request) -> dict[str, str]:
    """The request's texts that are templates over settings, by pointer below the request: URL, method, body strings."""
    texts = {"url": request.url, "method": request.method}
    for text, at in _template_places(request.template, "body/template"):
        if text not in (PAYLOADS, PAYLOAD):
            texts[at] = text
    return texts
