"""Sending batches of payloads over HTTP, exactly once in effect.

The rules (SPEC 8): a retryable answer (408, 429, 5xx, a timeout, a broken
connection) resends the *same* batch with the same payloads, after an exponential
backoff with full jitter that honours ``Retry-After`` / ``retry-after-ms``; this is
safe because the destination deduplicates (Metronome by ``transaction_id``). A
rejected batch (400, 404, 413, 422) is split in halves until each rejected payload
stands alone and is dead-lettered with the server's message, so one poisoned event
costs at most ``1 + 2 * ceil(log2(n))`` requests and never blocks the others. A
refused credential (401, 403) stops delivery: the payloads are kept, not dead-lettered.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import httpx

from engine.config.mappingfile import MappingFile, Subscription
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.requests import DeadLetterSink, Requests, Target, render
from engine.errors import ActionmapError

Kind = Literal["ok", "retry", "reject", "unauthorized"]
RETRYABLE = frozenset({408, 429})
REJECTED = frozenset({400, 404, 413, 422})
UNAUTHORIZED = frozenset({401, 403})
_MESSAGE_LIMIT = 500
CONNECT_TIMEOUT = 5.0


class Unauthorized(ActionmapError):
    """The destination refused the credential; nothing more is sent to it."""

    def __init__(self, destination: str, status: int, message: str) -> None:
        super().__init__(
            f"{destination} refused the credential ({status}: {message}); delivery stopped. "
            "Undelivered events were kept, not dead-lettered; they keep their ids, so sending them "
            "again once the credential is fixed bills nothing twice."
        )
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in total time per batch."""

    base: float = 0.5
    cap: float = 30.0
    max_duration: float = 900.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))


class TokenBucket:
    """Client-side pacing: at most ``rate`` events per second on average, bursts up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(burst or rate, 1.0)
        self.tokens = self.burst
        self.clock, self.sleep = clock, sleep
        self.stamp = clock()

    def take(self, count: int) -> None:
        """Wait until ``count`` events may go (a request larger than the burst waits for a full bucket)."""
        need = min(float(count), self.burst)
        while True:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= need:
                self.tokens -= count
                return
            self.sleep((need - self.tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    status: int | None
    message: str
    retry_after: float | None = None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    A header that does not parse is ignored (the backoff applies), never an error:
    a malformed hint from a struggling server must not stop delivery.
    """
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MESSAGE_LIMIT] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:_MESSAGE_LIMIT]
    return response.text[:_MESSAGE_LIMIT]


def classify(response: httpx.Response) -> Answer:
    status = response.status_code
    if 200 <= status < 300:
        return Answer("ok", status, "")
    if status in RETRYABLE or status >= 500:
        return Answer("retry", status, _message(response), _retry_after(response))
    if status in UNAUTHORIZED:
        return Answer("unauthorized", status, _message(response))
    return Answer("reject", status, _message(response))


class Sender:
    """Delivers batches for one mapping file; counts requests, retries and delivered payloads; never sends a secret anywhere else."""

    def __init__(
        self,
        mapping_file: MappingFile,
        *,
        client: httpx.Client | None = None,
        policy: RetryPolicy = RetryPolicy(),
        pace: TokenBucket | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: httpx.Timeout = httpx.Timeout(30.0, connect=CONNECT_TIMEOUT),
    ) -> None:
        self.mapping_file = mapping_file
        self.settings = mapping_file.settings
        self._client = client
        self._timeout = timeout
        self.policy = policy
        self.pace = pace
        self.rng = rng or random.Random()
        self.sleep, self.clock = sleep, clock
        self.requests = 0  # running totals, read by the caller before and after each batch
        self.retries = 0
        self.delivered = 0
        self.rendering = Requests(mapping_file)

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, opened at the first request: rendering alone (a dry run) opens none."""
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, limits=httpx.Limits(max_keepalive_connections=8))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def requests_for(self, sub: Subscription, items: list[Outgoing], dead_letter: DeadLetterSink) -> list[dict[str, Any]]:
        """The exact requests a batch becomes, secrets masked (``Requests.preview``): what ``--dry-run`` prints."""
        return self.rendering.preview(sub, items, dead_letter)

    def deliver(self, sub: Subscription, items: list[Outgoing], dead_letter: DeadLetterSink) -> None:
        """Send one batch: each payload is counted in ``delivered`` or handed to ``dead_letter`` as soon as its fate is known.

        Raises :class:`Unauthorized`; what was decided before that (delivered halves,
        rejected events of a bisection) is already counted and dead-lettered, so
        nothing is lost or reported twice when delivery stops.
        """
        target = self.rendering.targets[sub.name]
        for group in self.rendering.groups(target, items):
            for encodable, body, headers in self.rendering.encoded(sub, target, group, dead_letter):
                self._bisect(sub, target, encodable, body, headers, dead_letter)

    def _bisect(
        self, sub: Subscription, target: Target, items: list[Outgoing], body: bytes, headers: dict[str, str],
        dead_letter: DeadLetterSink,
    ) -> None:
        answer, attempts = self._post(target, len(items), body, headers)
        if answer.kind == "ok":
            self.delivered += len(items)
        elif answer.kind == "unauthorized":
            raise Unauthorized(self.mapping_file.destination.name, answer.status or 0, self.settings.redact(answer.message))
        elif answer.kind == "retry":  # the retry budget ran out
            last = " ".join(str(part) for part in (answer.status, answer.message) if part)
            reason = f"retries exhausted after {attempts} attempts (retry budget {self.policy.max_duration:g} s); last answer: {last}"
            for item in items:
                dead_letter(self._dead(sub, item, reason, answer.status, attempts, exhausted=True))
        elif len(items) == 1:
            dead_letter(self._dead(sub, items[0], f"rejected by the server: {answer.message}", answer.status, attempts))
        else:
            middle = len(items) // 2
            for half in (items[:middle], items[middle:]):
                for encodable, half_body, half_headers in self.rendering.encoded(sub, target, half, dead_letter):
                    self._bisect(sub, target, encodable, half_body, half_headers, dead_letter)

    def _dead(self, sub: Subscription, item: Outgoing, reason: str, status: int | None, attempts: int,
              exhausted: bool = False) -> DeadLetter:
        return DeadLetter.of(sub.name, item, self.settings.redact(reason), status, attempts, exhausted)

    def _post(self, target: Target, count: int, body: bytes, headers: dict[str, str]) -> tuple[Answer, int]:
        """Send until a final answer or the retry budget is spent; the answer and the attempts made."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            if self.pace is not None:
                self.pace.take(count)
            self.requests += 1
            try:
                answer = classify(self.client.request(target.method, target.url, content=body, headers=headers))
            except httpx.TimeoutException as exc:
                answer = Answer("retry", None, f"timed out ({type(exc).__name__})")
            except httpx.RequestError as exc:  # connection refused or reset, dropped without an answer, undecodable answer
                answer = Answer("retry", None, f"connection failed ({type(exc).__name__}: {exc})")
            if answer.kind != "retry":
                return answer, attempt
            wait = self.policy.delay(attempt, self.rng)
            if answer.retry_after is not None:
                wait = max(wait, min(answer.retry_after, self.policy.max_retry_after))
            if self.clock() - started + wait > self.policy.max_duration:
                return answer, attempt
            self.retries += 1
            self.sleep(wait)


def check_credential(mapping_file: MappingFile, client: httpx.Client | None = None) -> tuple[str, str]:
    """Run the destination's credential check: ("valid" | "refused" | "unreachable" | "unexpected", detail)."""
    dest = mapping_file.destination
    check = dest.credential_check
    if check is None:
        return "unexpected", f"{dest.slug} declares no credential check"
    settings = mapping_file.settings
    headers = {k: render(v, settings) for k, v in {**dest.auth_headers, **check.request.headers}.items()}
    url = render(check.request.url, settings)
    owned = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(10.0, connect=CONNECT_TIMEOUT))
    try:
        response = client.request(check.request.method, url, json=check.request.json, headers=headers)
    except httpx.HTTPError as exc:
        return "unreachable", settings.redact(f"{settings.redact(url)}: {type(exc).__name__}: {exc}")
    finally:
        if owned:
            client.close()
    status = response.status_code
    if status in check.valid:
        return "valid", f"{status} from {settings.redact(url)}"
    if status in check.invalid:
        return "refused", settings.redact(f"{status} from {url}: {_message(response)}")
    return "unexpected", settings.redact(f"{status} from {url}: {_message(response)}")
