"""JSONPath (RFC 9535) for mappings and triggers, compiled once.

A singular query made of names and indexes only becomes a direct key walk;
every other query is parsed once by ``jsonpath-rfc9535`` and kept.
"""

from __future__ import annotations

from typing import Any, Callable

from engine.missing import MISSING

Key = str | int
Getter = Callable[[Any], Any]


def walk(keys: tuple[Key, ...]) -> Getter:
    """A getter that follows ``keys`` into a JSON document, giving MISSING on any gap.

    Same result as the RFC 9535 singular query built from those keys: a name only
    selects in an object, an index only in an array (negative counts from the end).
    """

    def get(doc: Any) -> Any:
        for key in keys:
            if type(key) is str:
                if type(doc) is not dict:
                    return MISSING
                doc = doc.get(key, MISSING)
                if doc is MISSING:
                    return MISSING
            else:
                if type(doc) is not list:
                    return MISSING
                try:
                    doc = doc[key]
                except IndexError:
                    return MISSING
        return doc

    return get
