"""Delivery: a batch of payloads rendered into requests (``requests``), sent over HTTP with
retries, backoff, bisection and pacing (``transport``), and what it takes and gives back
(``records``: ``Outgoing``, ``DeadLetter``)."""

from __future__ import annotations

from engine.delivery.records import DeadLetter, Outgoing, utc_text
from engine.delivery.requests import Requests, render
from engine.delivery.transport import CONNECT_TIMEOUT, Answer, RetryPolicy, Sender, TokenBucket, Unauthorized, check_credential, classify

__all__ = ["CONNECT_TIMEOUT", "Answer", "DeadLetter", "Outgoing", "Requests", "RetryPolicy", "Sender", "TokenBucket",
           "Unauthorized", "check_credential", "classify", "render", "utc_text"]
