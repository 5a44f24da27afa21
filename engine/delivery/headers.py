"""What an HTTP header can carry: one rule for settings, hook results and session tokens alike."""

from __future__ import annotations


def header_problem(name: str, value: object) -> str | None:
    """Why a header cannot go on the wire (HTTP carries ASCII text on one line), or None; the value is never quoted."""
    if not isinstance(value, str):
        return f"header {name!r} is not text"
    if not (value.isascii() and name.isascii()) or any(c in value for c in "\r\n\0"):
        return f"header {name!r} holds characters HTTP headers cannot carry (non-ASCII, or a line break)"
    return None
