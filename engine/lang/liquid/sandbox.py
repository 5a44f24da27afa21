"""The sandbox's rules: Segment's disabled tags and filters, what to write instead, and the refusal a rule raises."""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from liquid.exceptions import FilterArgumentError

from engine.limits import MAX_LIQUID_VALUE


Getter = Callable[[Any], Any]


DISABLED_TAGS = frozenset({"case", "for", "include", "layout", "render", "tablerow"})
"""Segment's disabled tags (liquid-directive.ts)."""


DISABLED_FILTERS = frozenset({
    "array_to_sentence_string", "concat", "find", "find_exp", "find_index", "find_index_exp", "group_by",
    "group_by_exp", "has", "has_exp", "map", "newline_to_br", "reject", "reject_exp", "reverse", "sort",
    "sort_natural", "uniq", "where_exp", "type",
})
"""Segment's disabled filters (liquid-directive.ts)."""


# Registered by python-liquid but not ours: loop-only tags, tags liquidjs lacks, HTML-autoescape extras.
_UNREGISTERED_TAGS = DISABLED_TAGS | {"break", "continue", "ifchanged", "doc"}


_UNREGISTERED_FILTERS = DISABLED_FILTERS | {"safe", "escapejs"}


_TAG_ADVICE = {
    "for": "loops are not available in @liquid (as in Segment); to list an array write {{ properties.tags | join: \", \" }}",
    "tablerow": "loops are not available in @liquid (as in Segment); to list an array write {{ properties.tags | join: \", \" }}",
    "case": "write {% if x == \"a\" %}...{% elsif x == \"b\" %}...{% else %}...{% endif %} instead",
    "include": "a @liquid template cannot load another template; write its text here",
    "render": "a @liquid template cannot load another template; write its text here",
    "layout": "a @liquid template cannot load another template; write its text here",
    "break": "it only works inside a loop, and loops are not available in @liquid",
    "continue": "it only works inside a loop, and loops are not available in @liquid",
}


_JSON_INSTEAD = 'encode the value with {"@json": {"mode": "encode", "value": "$.properties"}} in its own field'


_NO_EQUIVALENT = "there is no equivalent here; shape the value with another mapping directive first"


_LIQUIDJS_ONLY = {
    "json": _JSON_INSTEAD,
    "jsonify": _JSON_INSTEAD,
    "inspect": _JSON_INSTEAD,
    "to_integer": "{{ value | plus: 0 }} reads a text of digits as a number",
    "push": 'for texts, {{ list | join: "," | append: ",item" | split: "," }} adds one at the end; otherwise ' + _NO_EQUIVALENT,
    "unshift": 'for texts, {{ list | join: "," | prepend: "item," | split: "," }} adds one at the start; otherwise ' + _NO_EQUIVALENT,
    "pop": "{% assign n = list | size | minus: 1 %}{{ list | slice: 0, n }} drops the last item",
    "shift": "{% assign n = list | size %}{{ list | slice: 1, n }} drops the first item",
    "sample": "it picks at random, so the same event would map differently on each run; pick an item with first, last or slice",
    "slugify": '{{ value | downcase | strip | replace: " ", "-" }} is close (it keeps punctuation)',
    "xml_escape": "write escape (liquidjs's xml_escape is its escape)",
    "cgi_escape": "write url_encode (it escapes the same characters)",
    "uri_escape": "url_encode is the nearest, but it also escapes / ? & = and #, so use it on one part of the URI only",
    "normalize_whitespace": "squish collapses runs of whitespace to one space (and also trims both ends)",
    "number_of_words": '{{ value | split: " " | size }} counts the words',
    "date_to_xmlschema": 'write date: "%Y-%m-%dT%H:%M:%S%z" (the offset is written +0200, without a colon)',
    "date_to_rfc822": 'write date: "%a, %d %b %Y %H:%M:%S %z"',
    "date_to_string": 'write date: "%d %b %Y"',
    "date_to_long_string": 'write date: "%d %B %Y"',
    "raw": "it returns its input unchanged; remove it",
    "sha256": _NO_EQUIVALENT,
    "hmac_sha256": _NO_EQUIVALENT,
}
"""liquidjs's built-in filters that python-liquid 2.3.6 does not have (Segment's disabled ones aside), with what
to write instead. They would otherwise be "unknown", or get a misleading "did you mean" (push -> plus)."""


_FILTER_ADVICE = {
    name: "it is a liquidjs filter that actionmap's Liquid (python-liquid) does not have; " + instead
    for name, instead in _LIQUIDJS_ONLY.items()
}


_NAMESPACE_BYTES = 32 * MAX_LIQUID_VALUE
"""The library's local-namespace limit (``sys.getsizeof`` bytes of every assigned value): room for
several values at the value limit (a text of MAX_LIQUID_VALUE characters is at most 4 bytes each),
not for a variable that keeps doubling."""


class _Refused(FilterArgumentError):
    """A sandbox rule refused a value. A ``FilterArgumentError`` so that the library attaches the
    filter's token (and so its column) on the way out of ``Filter.evaluate``."""


def _where(text: str, offset: int) -> str:
    """Column (and line, for a multi-line template) of ``offset``, 1-based, for a message."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


@runtime_checkable
class Metered(Protocol):
    """A render context that counts the work of its filters against ``MAX_LIQUID_WORK`` (the environment's is one)."""

    work: int
