"""Sending batches of payloads over HTTP, exactly once in effect.

The rules (SPEC 8): a retryable answer (408, 429, 5xx, a timeout, a broken
connection) resends the *same* batch with the same payloads, after an exponential
backoff with full jitter that honours ``Retry-After`` / ``retry-after-ms``; this is
safe because the destination deduplicates (Metronome by ``transaction_id``). A
rejected batch (400, 404, 413, 422) is split in halves until each rejected payload
stands alone and is dead-lettered with the server's message, so one poisoned event
costs at most ``1 + 2 * ceil(log2(n))`` requests and never blocks the others. A
refused credential (401, 403) stops delivery: the payloads are kept, not dead-lettered.

One result comes back from a send (:class:`Sent`); stopping is a signal the
sender's waits check (:data:`Wait`), never an exception raised out of a sleep.
"""

from __future__ import annotations

import importlib.metadata
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from engine.config.mappingfile import MappingFile, Subscription
from engine.delivery.answers import STOPPED, Answer, classify, expired, message, succeeded
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.requests import Requests, Target, render
from engine.delivery.sessions import Sessions

CONNECT_TIMEOUT = 5.0


def _version() -> str:
    try:
        return importlib.metadata.version("actionmap")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


USER_AGENT = f"actionmap/{_version()}"
"""Who is calling, as a destination's logs show it: actionmap and its version, not the HTTP library."""


Wait = Callable[[float], bool]
"""Waits up to that many seconds; True when delivery must stop now (the service stops): the stop signal the sender checks."""


def sleep_through(seconds: float) -> bool:
    """The wait of a sender nobody stops (``send``, library mode): sleeps, never asks to stop."""
    time.sleep(seconds)
    return False


@dataclass
class Sent:
    """What became of one batch, every payload in exactly one list.

    ``exhausted`` payloads met only retryable answers until the retry budget ran
    out (a later attempt may deliver them); ``kept`` ones were not decided because
    the credential was refused (``refused`` says how) or the sender was stopped.
    """

    delivered: list[Outgoing] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    exhausted: list[DeadLetter] = field(default_factory=list)
    kept: list[Outgoing] = field(default_factory=list)
    refused: str | None = None
    stopped: bool = False
    requests: int = 0
    retries: int = 0

    @property
    def halted(self) -> bool:
        return self.stopped or self.refused is not None


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
    ) -> None:
        self.rate = rate
        self.burst = max(burst or rate, 1.0)
        self.tokens = self.burst
        self.clock = clock
        self.stamp = clock()
        self._lock = threading.Lock()  # one bucket may pace the workers of one connection together

    def take(self, count: int, wait: Wait = sleep_through) -> bool:
        """Wait until ``count`` events may go (a request larger than the burst waits for a full bucket); False when stopped."""
        need = min(float(count), self.burst)
        while True:
            with self._lock:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= need:
                    self.tokens -= count
                    return True
                pause = (need - self.tokens) / self.rate
            if wait(pause):
                return False


class Sender:
    """Sends batches for one connection and says what became of each payload (:class:`Sent`); it sends a secret nowhere but the destination."""

    def __init__(
        self,
        mapping_file: MappingFile,
        *,
        client: httpx.Client | None = None,
        policy: RetryPolicy = RetryPolicy(),
        pace: TokenBucket | None = None,
        rng: random.Random | None = None,
        wait: Wait = sleep_through,
        clock: Callable[[], float] = time.monotonic,
        timeout: httpx.Timeout = httpx.Timeout(30.0, connect=CONNECT_TIMEOUT),
        sessions: Sessions | None = None,
    ) -> None:
        self.mapping_file = mapping_file
        self._client = client
        self._timeout = timeout
        self.policy = policy
        self.pace = pace
        self.rng = rng or random.Random()
        self.wait, self.clock = wait, clock
        self.rendering = Requests(mapping_file, sessions)  # ``sessions``: one token for all the senders of a connection

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, opened at the first request: rendering alone (a dry run) opens none."""
        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout, limits=httpx.Limits(max_keepalive_connections=8),
                                        headers={"User-Agent": USER_AGENT})
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def preview(self, sub: Subscription, items: list[Outgoing]) -> tuple[list[dict[str, Any]], Sent]:
        """The exact requests a batch becomes, secrets masked, and nothing sent: what ``--dry-run`` prints."""
        sent = Sent()
        requests = self.rendering.preview(sub, items, sent.dead.append)
        refused = {letter.index for letter in sent.dead}
        sent.kept = [item for item in items if item.position not in refused]
        return requests, sent

    def send(self, sub: Subscription, items: list[Outgoing]) -> Sent:
        """Send one batch (bisecting what the server rejects) and say what became of every payload."""
        sent = Sent()
        if not items:  # nothing to send: an empty request would be rejected, and halving it never ends
            return sent
        target = self.rendering.targets[sub.name]
        for group in self.rendering.groups(target, items):
            for encodable, body, headers in self.rendering.encoded(sub, target, group, sent.dead.append):
                self._bisect(sub, target, encodable, body, headers, sent)
        return sent

    def _bisect(self, sub: Subscription, target: Target, items: list[Outgoing], body: bytes, headers: dict[str, str],
                sent: Sent) -> None:
        while True:
            if sent.halted:  # the credential was refused or the sender stopped: the rest is kept, undecided
                sent.kept.extend(items)
                return
            answer, attempts = self._post(target, items, body, headers, sent)
            if answer.kind != "named":
                break
            # the answer named the payloads it is about: settle those, send the rest again without them
            for index in sorted(answer.named):
                if answer.outcome == "delivered":
                    sent.delivered.append(items[index])
                else:
                    reason = f"rejected by the server: {answer.named[index]}"
                    sent.dead.append(DeadLetter.of(sub.name, items[index], reason, answer.status, attempts))
            rest = [item for index, item in enumerate(items) if index not in answer.named]
            if answer.status is not None and succeeded(answer.status, target.success):  # a success listing what it refused: the rest is stored
                sent.delivered.extend(rest)
                return
            parts = list(self.rendering.encoded(sub, target, rest, sent.dead.append)) if rest else []
            if len(parts) != 1:
                for encodable, part_body, part_headers in parts:
                    self._bisect(sub, target, encodable, part_body, part_headers, sent)
                return
            items, body, headers = parts[0]
        if answer.kind == "ok":
            sent.delivered.extend(items)
        elif answer.kind == "stopped":
            sent.stopped = True
            sent.kept.extend(items)
        elif answer.kind == "unauthorized":
            sent.refused = f"{self.mapping_file.destination.name} refused the credential ({answer.status}: {answer.message})"
            sent.kept.extend(items)
        elif answer.kind == "retry":  # the retry budget ran out
            last = " ".join(str(part) for part in (answer.status, answer.message) if part)
            reason = f"retries exhausted after {attempts} attempts (retry budget {self.policy.max_duration:g} s); last answer: {last}"
            sent.exhausted.extend(DeadLetter.of(sub.name, item, reason, answer.status, attempts, exhausted=True) for item in items)
        elif len(items) == 1 or (answer.status is not None and 200 <= answer.status < 300):
            # a 2xx this destination does not declare as success may have stored the batch: halving it would post it again
            sent.dead.extend(DeadLetter.of(sub.name, item, f"rejected by the server: {answer.message}", answer.status, attempts)
                             for item in items)
        else:
            middle = len(items) // 2
            for half in (items[:middle], items[middle:]):
                for encodable, half_body, half_headers in self.rendering.encoded(sub, target, half, sent.dead.append):
                    self._bisect(sub, target, encodable, half_body, half_headers, sent)

    def _attempt(self, target: Target, items: list[Outgoing], body: bytes, headers: dict[str, str], sent: Sent) -> Answer:
        """One request and what its answer means; an expired session token is renewed and the request sent once more."""
        sessions = self.rendering.sessions if target.session else None
        for _ in range(2):
            sent.requests += 1
            token = None
            if sessions is not None:
                authorized = sessions.headers(self.client)
                if isinstance(authorized, Answer):
                    return authorized
                extra, token = authorized
                headers = {**headers, **extra}
            try:
                response = self.client.request(target.method, target.url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                return Answer("retry", None, f"timed out ({type(exc).__name__})")
            except httpx.LocalProtocolError as exc:  # its text may quote a header, a credential's too: only its kind is told
                return Answer("retry", None, f"the request could not be written ({type(exc).__name__})")
            except httpx.RequestError as exc:  # connection refused or reset, dropped without an answer, undecodable answer
                return Answer("retry", None, f"connection failed ({type(exc).__name__}: {exc})")
            if sessions is None or token is None or not expired(response, sessions.session.expired):
                payloads = [item.payload for item in items] if target.rules else []
                return classify(response, target.rules, payloads, target.success, self.mapping_file.destination.rate_limit)
            sessions.expire(token)
        return Answer("unauthorized", response.status_code, "a session token was answered as expired as soon as it was obtained")

    def _post(self, target: Target, items: list[Outgoing], body: bytes, headers: dict[str, str], sent: Sent) -> tuple[Answer, int]:
        """Send until a final answer, the retry budget is spent or the wait says stop; the answer and the attempts made."""
        started = self.clock()
        attempt = 0
        while True:
            if self.pace is not None and not self.pace.take(len(items), self.wait):
                return STOPPED, attempt
            attempt += 1
            answer = self._attempt(target, items, body, headers, sent)
            if answer.kind != "retry":
                return answer, attempt
            wait = self.policy.delay(attempt, self.rng)
            if answer.retry_after is not None:
                wait = max(wait, min(answer.retry_after, self.policy.max_retry_after))
            if self.clock() - started + wait > self.policy.max_duration:
                return answer, attempt
            sent.retries += 1
            if self.wait(wait):
                return STOPPED, attempt


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
    client = client or httpx.Client(timeout=httpx.Timeout(10.0, connect=CONNECT_TIMEOUT), headers={"User-Agent": USER_AGENT})
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
        return "refused", settings.redact(f"{status} from {url}: {message(response)}")
    return "unexpected", settings.redact(f"{status} from {url}: {message(response)}")
