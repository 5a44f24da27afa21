"""Python hooks of the Webhook destination: what its YAML cannot say.

Signing needs the exact bytes that go on the wire, so it runs after the engine
has serialised the body and before each request is sent.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Mapping

SIGNATURE_HEADER = "X-Signature-SHA256"


def sign(*, method: str, url: str, headers: Mapping[str, str], body: bytes, settings: Mapping[str, Any]) -> dict[str, str]:
    """The signature header when a signing secret is set; no headers otherwise."""
    secret = settings.get("signing_secret")
    if not secret:
        return {}
    return {SIGNATURE_HEADER: hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
