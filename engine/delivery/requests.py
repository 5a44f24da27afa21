"""Rendering requests: a subscription's method, URL and headers once, and each batch's body; no network.

Kept apart from the transport so that a dry run and the plugin tests show the exact
requests a batch becomes without opening a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

import orjson

from engine.config.http import PAYLOAD, PAYLOADS, Hook, Request, ResponseRule, batched_template, settings_template
from engine.config.mappingfile import MappingFile, Settings, Subscription
from engine.delivery.headers import header_problem
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.sessions import Sessions
from engine.errors import MASK, ConfigError

DeadLetterSink = Callable[[DeadLetter], None]


def render(template: str, settings: Settings) -> str:
    """A plugin's URL, method or header template over settings (``{{settings.base_url}}/v1/ingest``), checked when it loaded."""
    return settings_template(template)(settings.values)


def auth_headers(mapping_file: MappingFile) -> dict[str, str]:
    """The destination's authentication headers over this connection's settings."""
    return {k: render(v, mapping_file.settings) for k, v in mapping_file.destination.auth_headers.items()}


def sessions_for(mapping_file: MappingFile) -> Sessions | None:
    """The connection's session token holder, when its destination declares one; share it among the connection's senders."""
    session = mapping_file.destination.session
    if session is None:
        return None
    return Sessions(session, mapping_file.settings, auth_headers(mapping_file), rate_limit=mapping_file.destination.rate_limit)


def _check_headers(what: str, headers: dict[str, Any]) -> None:
    """A header HTTP cannot carry is the operator's to fix before anything is sent (a ConfigError, the value unquoted)."""
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ConfigError(f"{what}: {problem}: check the settings it is made from")


Shape = Callable[[list[Any]], Any]
"""The body's JSON value for a request's payloads."""


def _shape(request: Request, batched: bool, settings: Settings) -> Shape:
    """How a request's payloads become its body's value: themselves, the array of them, or the plugin's template."""
    if request.template is None:
        return (lambda payloads: payloads) if batched else (lambda payloads: payloads[0])

    def fill(node: Any) -> Callable[[list[Any]], Any]:
        if node == PAYLOADS:
            return lambda payloads: payloads
        if node == PAYLOAD:
            return lambda payloads: payloads[0]
        if isinstance(node, str):
            text = settings_template(node)(settings.values)
            return lambda payloads: text
        if isinstance(node, dict):
            parts = [(key, fill(value)) for key, value in node.items()]
            return lambda payloads: {key: part(payloads) for key, part in parts}
        if isinstance(node, list):
            items = [fill(value) for value in node]
            return lambda payloads: [item(payloads) for item in items]
        return lambda payloads: node

    return fill(request.template)


def _form_pairs(value: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    """A JSON value as form fields: nested keys in brackets (``payload[value]``), null left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            _form_pairs(item, f"{prefix}[{key}]" if prefix else str(key), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _form_pairs(item, f"{prefix}[{index}]", out)
    elif value is None:
        return
    elif not prefix:
        raise ValueError("a form body is made of an object's fields, not of a single value")
    elif isinstance(value, bool):
        out.append((prefix, "true" if value else "false"))
    elif isinstance(value, str):
        out.append((prefix, value))
    else:
        out.append((prefix, orjson.dumps(value).decode()))


def form_encoded(value: Any) -> bytes:
    """``application/x-www-form-urlencoded`` bytes, brackets left literal as the platforms' own clients send them."""
    pairs: list[tuple[str, str]] = []
    _form_pairs(value, "", pairs)
    return urlencode(pairs, safe="[]").encode()


_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}


@dataclass
class Target:
    """A subscription's request, rendered once: method, URL, headers, how payloads become a body, what answers mean."""

    method: str
    url: str
    headers: dict[str, str]
    batched: bool
    body_field: str | None
    hook: Hook | None
    shape: Shape
    form: bool = False
    session: bool = False
    success: frozenset[int] | None = None
    rules: tuple[ResponseRule, ...] = ()


class Requests:
    """The requests of one mapping file: each subscription's target rendered at start (a bad header is a ConfigError)."""

    def __init__(self, mapping_file: MappingFile, sessions: Sessions | None = None) -> None:
        self.settings = mapping_file.settings
        self.auth = auth_headers(mapping_file)
        self.sessions = sessions or sessions_for(mapping_file)
        _check_headers("the destination's authentication", self.auth)
        if self.sessions is not None:
            _check_headers("the session request", self.sessions.request_headers)
        self.targets = {sub.name: self._target(sub) for sub in mapping_file.subscriptions}

    def _target(self, sub: Subscription) -> Target:
        request = sub.action.request
        headers = {"content-type": request.content_type or _CONTENT_TYPES[request.encoding]}
        headers.update({} if request.session else self.auth)
        headers.update({k: render(v, self.settings) for k, v in request.headers.items()})
        if request.headers_setting:
            headers.update(self.settings.values.get(request.headers_setting) or {})
        _check_headers(f"subscription {sub.name!r}", headers)
        if request.body == "template":
            batched = batched_template(request.template)
        else:
            batched = request.body == "batch" or (request.body == "auto" and sub.batch_size > 1 and request.encoding != "form")
        method = render(request.method, self.settings)
        return Target(method, render(request.url, self.settings), headers, batched, request.body_field, request.hook,
                      _shape(request, batched, self.settings), request.encoding == "form", request.session,
                      request.success, request.responses)

    def preview(self, sub: Subscription, items: list[Outgoing], dead_letter: DeadLetterSink) -> list[dict[str, Any]]:
        """The exact requests a batch becomes, secrets masked: what ``--dry-run`` prints (unencodable payloads dead-lettered)."""
        target = self.targets[sub.name]
        requests = []
        for group in self.groups(target, items):
            for _, body, sent in self.encoded(sub, target, group, dead_letter):
                if target.session and self.sessions is not None:  # a dry run obtains no token: it shows where one goes
                    sent = {**sent, **self.sessions.carrying(MASK)}
                headers = {k: self.settings.redact(v) for k, v in sent.items()}
                text = self.settings.redact(body.decode())  # a body template may carry a setting, a secret too
                shown = text if target.form else orjson.loads(text)
                requests.append({"method": target.method, "url": self.settings.redact(target.url), "headers": headers, "body": shown})
        return requests

    @staticmethod
    def groups(target: Target, items: list[Outgoing]) -> list[list[Outgoing]]:
        """The payloads of each request: all of them, or one per request."""
        return [items] if target.batched else [[item] for item in items]

    @staticmethod
    def _body(target: Target, items: list[Outgoing]) -> bytes:
        field = target.body_field
        payloads = [item.payload[field] for item in items] if field else [item.payload for item in items]
        value = target.shape(payloads)
        return form_encoded(value) if target.form else orjson.dumps(value)

    def _headers(self, target: Target, body: bytes) -> dict[str, str]:
        """The request's headers, with whatever the plugin's hook adds for these exact body bytes."""
        if target.hook is None:
            return target.headers
        extra = target.hook(method=target.method, url=target.url, headers=dict(target.headers), body=body, settings=self.settings.values)
        for name, value in extra.items():
            problem = header_problem(name, value)
            if problem is not None:
                raise ValueError(f"the plugin's request hook returned a header HTTP cannot carry: {problem}")
        return {**target.headers, **extra}

    def encoded(
        self, sub: Subscription, target: Target, items: list[Outgoing], dead_letter: DeadLetterSink
    ) -> Iterator[tuple[list[Outgoing], bytes, dict[str, str]]]:
        """The batch as (payloads, body, headers), split in halves around any payload that cannot be encoded or signed.

        The last guard of the way out: a payload orjson refuses or a plugin hook
        raises on is dead-lettered alone with the error; its neighbours go on.
        """
        try:
            body = self._body(target, items)
            yield items, body, self._headers(target, body)
        except Exception as exc:
            if len(items) == 1:
                reason = f"could not be encoded for sending ({type(exc).__name__}: {exc})"
                dead_letter(DeadLetter.of(sub.name, items[0], reason))  # masked where it leaves (its sink)
                return
            middle = len(items) // 2
            yield from self.encoded(sub, target, items[:middle], dead_letter)
            yield from self.encoded(sub, target, items[middle:], dead_letter)
