"""A connection's session token (``authentication.session``): obtained when first needed, shared, renewed, never shown.

Some APIs take a short-lived token obtained from another endpoint rather than the API
key itself. One :class:`Sessions` per connection holds the current token for all of its
workers: it asks for one at the first request, renews it ``renew_before`` its expiry,
and drops it when an answer says it expired (the sender then sends again at once). The
token lives only here and in the request headers: it is in no message, log or record.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import httpx

from engine.config.http import SESSION_TOKEN, RateLimitHeader, Session, settings_template
from engine.config.mappingfile import Settings
from engine.delivery.answers import UNAUTHORIZED, Answer, message, retry_after
from engine.delivery.headers import header_problem
from engine.errors import MappingFailure


def _expiry(value: Any) -> float | None:
    """The Unix time an RFC 3339 expiry names, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)).timestamp()  # no offset: UTC, as APIs mean


class Sessions:
    """The token of one connection's session and the headers that carry it."""

    def __init__(self, session: Session, settings: Settings, auth_headers: dict[str, str],
                 clock: Callable[[], float] = time.time, rate_limit: Sequence[RateLimitHeader] = ()) -> None:
        self.session = session
        self.rate_limit = rate_limit  # the destination's wait headers, read on the session endpoint's answers too
        self.settings = settings
        self.clock = clock
        self._templates = {name: settings_template(text, session=True) for name, text in session.headers.items()}
        request = session.request
        self._method = request.method
        self._url = settings_template(request.url)(settings.values)
        self.request_headers = {**auth_headers, **{k: settings_template(v)(settings.values) for k, v in request.headers.items()}}
        self._lock = threading.Lock()
        self._token: str | None = None
        self._carried: dict[str, str] = {}
        self._renew_at = 0.0
        self._expires_at = 0.0

    def carrying(self, token: str) -> dict[str, str]:
        """The session's headers carrying ``token`` (``engine.errors.MASK`` for a dry run)."""
        values = {**self.settings.values, SESSION_TOKEN: token}
        return {name: render(values) for name, render in self._templates.items()}

    def headers(self, client: httpx.Client) -> tuple[dict[str, str], str] | Answer:
        """The headers for the next request and the token they carry, or the answer that kept a token from being obtained."""
        with self._lock:
            now = self.clock()
            if self._token is None or now >= self._renew_at:
                obtained = self._obtain(client)
                if isinstance(obtained, Answer) and (self._token is None or now >= self._expires_at or obtained.kind != "retry"):
                    return obtained  # a renewal that failed for a while keeps a token that is still valid
            token = self._token
            assert token is not None
            return self._carried, token

    def expire(self, token: str) -> None:
        """Forget ``token`` if it is still the current one (another worker may have renewed it already)."""
        with self._lock:
            if self._token == token:
                self._token = None

    def _obtain(self, client: httpx.Client) -> Answer | None:
        try:
            response = client.request(self._method, self._url, json=self.session.request.json, headers=self.request_headers)
        except httpx.HTTPError as exc:
            return Answer("retry", None, f"could not obtain a session token: {type(exc).__name__}")
        status = response.status_code
        if status in UNAUTHORIZED:
            return Answer("unauthorized", status, f"the session request was refused: {message(response)}")
        if not 200 <= status < 300:
            return Answer("retry", status, f"could not obtain a session token: {status} {message(response)}",
                          retry_after(response, self.rate_limit))
        try:
            body = response.json()
            token = self.session.token(body)
            expires = _expiry(self.session.expires_at(body)) if self.session.expires_at else None
        except (ValueError, RecursionError, MappingFailure):
            body, token, expires = None, None, None
        if not isinstance(token, str) or not token:  # the plugin and the API disagree: retrying will not mend it
            return Answer("unauthorized", status, "the session answer carried no token where the plugin's "
                                                  "authentication.session.token says it is")
        carried = self.carrying(token)  # rendered once per token, not once per request
        if any(header_problem(name, value) for name, value in carried.items()):
            return Answer("unauthorized", status, "the session answer's token holds characters an HTTP header cannot carry")
        now = self.clock()
        lifetime = self.session.lifetime.total_seconds() if expires is None else expires - now
        self._token, self._carried = token, carried
        self._expires_at = now + lifetime
        self._renew_at = now + max(0.0, lifetime - self.session.renew_before.total_seconds())
        return None
