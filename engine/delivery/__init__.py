"""Delivery: a batch of payloads rendered into requests (``requests``), sent over HTTP with
retries, backoff, bisection and pacing (``transport``), what each answer means
(``answers``: status rules and the plugin's declared rules), session tokens
(``sessions``), one connection's batches and the accounting of what became of each
event (``batcher``), and what they take and give back (``records``: ``Outgoing``,
``DeadLetter``)."""

from __future__ import annotations

from engine.delivery.answers import Answer, classify
from engine.delivery.records import DeadLetter, Outgoing, utc_text
from engine.delivery.requests import Requests, render
from engine.delivery.transport import (CONNECT_TIMEOUT, RetryPolicy, Sender, Sent, TokenBucket, Wait, check_credential,
                                       sleep_through)

__all__ = ["CONNECT_TIMEOUT", "Answer", "DeadLetter", "Outgoing", "Requests", "RetryPolicy", "Sender", "Sent", "TokenBucket",
           "Wait", "check_credential", "classify", "render", "sleep_through", "utc_text"]
