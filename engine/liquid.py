"""The ``@liquid`` directive's engine: a Liquid template, sandboxed as Segment sandboxes it, compiled once.

Segment renders ``@liquid`` with liquidjs (``parseAndRenderSync(template, event)``): the event's
top-level keys are the template's variables, an undefined variable or null renders "", and the
result is always a string. Here python-liquid 2 does the parsing and rendering, inside a dedicated
:class:`LiquidEnvironment` (never the library's shared one), under these rules:

- A template is at most ``MAX_LIQUID_CHARS`` (1000) characters, Segment's limit.
- Disabled tags, as in Segment: ``case``, ``for``, ``include``, ``layout``, ``render``, ``tablerow``
  (and ``break``/``continue``, which only work in loops). Tags liquidjs does not have either
  (python-liquid's ``ifchanged``, ``doc``) are unknown. Allowed: ``assign``, ``capture``,
  ``comment``, ``#``, ``raw``, ``cycle``, ``decrement``, ``increment``, ``echo``, ``if``,
  ``unless``, ``liquid``.
- Disabled filters, as in Segment: ``array_to_sentence_string``, ``concat``, ``find``,
  ``find_exp``, ``find_index``, ``find_index_exp``, ``group_by``, ``group_by_exp``, ``has``,
  ``has_exp``, ``map``, ``newline_to_br``, ``reject``, ``reject_exp``, ``reverse``, ``sort``,
  ``sort_natural``, ``uniq``, ``where_exp``, ``type``. python-liquid's own extras (``safe``,
  ``escapejs``) are unknown; the rest of its standard filters are available.
- Every value a filter takes or makes is at most ``MAX_LIQUID_VALUE`` characters (a text) or
  items (an array or a range), and so is the rendered text; an integer a filter makes must be in
  the 64-bit range. A range literal longer than that fails where it is written.

Where we differ from Segment, on purpose:

- Errors come at load, not per event. A disabled or unknown tag or filter, a filter given the
  wrong number of arguments and any syntax error is a :class:`ConfigError` with the offset of
  the tag or filter, so the loader reports FILE:LINE:COL. (liquidjs finds unknown filters and
  some disabled names only while rendering, so every event failed instead.)
- No clock. liquidjs stops a render after 500 ms; an outcome that depends on how busy the machine
  is would make the same event valid on one run and invalid on the next. The work is bounded
  structurally instead: no loop tags, at most 1000 characters of template (so a bounded number of
  filters and tags, each run once), and every filter wrapped so that its inputs are checked before
  it runs, filters that can make much more than they take (``replace``, ``split``, ``join``,
  ``append``, ``escape``, ``url_encode``, ``base64_encode``, ``date`` ...) have their result's size
  computed before they compute it, and every result is checked after. A render therefore costs at
  most (filters in the template) x (linear work over ``MAX_LIQUID_VALUE``). The library's own
  limits (output stream, local namespace, loop iterations, context depth, block nesting) are set
  too, so no rule rests on one guard. Nesting (brackets, ``and``/``or`` chains) is bounded at load
  so that neither parsing nor rendering can reach Python's recursion limit.
- Values become text as JavaScript writes them, where python-liquid would use Python's ``str``:
  ``10.0`` renders ``10``, ``true``/``false`` lowercase inside arrays too, null in an array is
  "", an array renders its items joined with nothing (``["a", "b"]`` -> ``ab``), an object renders
  ``[object Object]``, a range renders its numbers joined. The same conversion feeds the text
  filters (``append``, ``replace``, ``upcase`` ...) and ``join``.
- ``strip_html``, ``divided_by`` and ``round`` are liquidjs's, not the library's: ``strip_html``
  removes script, style and comment blocks and ``<...>`` tags as liquidjs's pattern does (in linear
  time); ``divided_by`` divides as JavaScript does (``5 | divided_by: 3`` is ``1.6666666666666667``;
  ``divided_by: 3, true`` floors) and ``round`` rounds halves up (``-2.5`` -> ``-2``). A number that
  is not finite (division by zero, overflow) fails the event instead of writing Infinity or NaN.
- liquidjs filters python-liquid does not have (``json``, ``push``, ``slugify``, ``date_to_string``
  ...) are load errors that say what to write instead.
- The variables ``now`` and ``today`` that python-liquid adds are not defined (liquidjs has no
  such variables; an event key of that name is read as usual). ``"now" | date: ...`` works.

The getter compiled from a template raises only :class:`MappingFailure`, whatever the event.
"""

from __future__ import annotations

import difflib
import html
import inspect
import math
import re
from decimal import Decimal, DecimalException, DivisionByZero, DivisionUndefined, InvalidOperation, Overflow, Subnormal, Underflow
from io import StringIO
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, TextIO

import liquid
from liquid import BoundTemplate, Environment, RenderContext, Undefined
from liquid.ast import Node as LiquidNode
from liquid.builtin.expressions import Filter, FilteredExpression, KeywordArgument, TernaryFilteredExpression
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import (
    BlockNestingError,
    FilterArgumentError,
    LiquidError,
    LocalNamespaceLimitError,
    OutputStreamLimitError,
)
from liquid.expression import Expression
from liquid.filter import num_arg
from liquid.output import LimitedStringIO
from liquid.token import TOKEN_DOC, TOKEN_EXPRESSION, TOKEN_TAG, Token
from liquid.utils import ReadOnlyChainMap

from engine.errors import ConfigError, MappingFailure
from engine.jsonpath import shorten
from engine.limits import MAX_EXPRESSION_DEPTH, MAX_INT, MAX_LIQUID_CHARS, MAX_LIQUID_VALUE, MAX_LIQUID_WORK, MIN_INT

__all__ = ["DISABLED_FILTERS", "DISABLED_TAGS", "LiquidEnvironment", "compile_liquid"]

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


# --- errors raised while rendering ---------------------------------------------------------------


class _Refused(FilterArgumentError):
    """A sandbox rule refused a value. A ``FilterArgumentError`` so that the library attaches the
    filter's token (and so its column) on the way out of ``Filter.evaluate``."""


def _where(text: str, offset: int) -> str:
    """Column (and line, for a multi-line template) of ``offset``, 1-based, for a message."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


# --- values as JavaScript writes them -------------------------------------------------------------


def _js_number(value: float) -> str:
    """A float as JavaScript's ``String(number)`` writes it (shortest digits, JS exponent rules)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign, digits_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    k = len(digits)
    n = exponent + k  # value = 0.digits x 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return "-" + text if sign else text


def _over_budget(length: int, part: str) -> _Refused:
    """Why a text of ``length`` characters does not fit its budget, said for the whole it is part of."""
    if part in ("value", "output") and length > MAX_LIQUID_VALUE:  # over the limit on its own
        return _Refused(f"a text of {length} characters is over the limit of {MAX_LIQUID_VALUE}", token=None)
    if part.startswith("output"):  # the budget was what is left of the rendered text
        return _Refused(f"the rendered text would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)
    return _Refused(f"the text of an array would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)


def _text(value: Any, budget: int = MAX_LIQUID_VALUE, part: str = "value") -> str:
    """``value`` as liquidjs's ``stringify`` writes it; refused past ``budget`` characters.

    Arrays (and ranges) are walked with a running count, so a huge one stops at the limit
    instead of being written out first. ``part`` says what ``budget`` is left of, for the message:
    ``"value"`` (a filter's input), ``"output"`` (the rendered text: ``budget`` is what is left of
    it), ``"array"`` / ``"output array"`` (an item of an array written for one of those).
    """
    if type(value) is str:
        if len(value) > budget:
            raise _over_budget(len(value), part)
        return value
    if value is None or isinstance(value, Undefined):
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _Refused(f"an integer outside the 64-bit range ({MIN_INT} to {MAX_INT})", token=None)
        return str(value)
    if isinstance(value, (list, tuple, range)):
        if len(value) > MAX_LIQUID_VALUE:
            raise _Refused(f"an array of {len(value)} items is over the limit of {MAX_LIQUID_VALUE}", token=None)
        parts: list[str] = []
        used = 0
        inner = "output array" if part.startswith("output") else "array"
        for item in value:
            text = _text(item, budget - used, inner)
            used += len(text)
            parts.append(text)
        return "".join(parts)
    if isinstance(value, Mapping):
        return "[object Object]"
    if isinstance(value, str):  # a str subclass (markupsafe.Markup)
        return _text(str(value), budget, part)
    if isinstance(value, Decimal):
        return _js_number(float(value))
    return _text(str(value), budget, part)


# --- the checks around every filter ---------------------------------------------------------------


def _check_value(name: str, value: Any, role: str) -> None:
    """Refuse a text or array over the value limit, or an integer outside 64 bits (bools are fine)."""
    if isinstance(value, str):
        if len(value) > MAX_LIQUID_VALUE:
            raise _Refused(f'filter "{name}" {role} a text of {len(value)} characters; the limit is {MAX_LIQUID_VALUE}', token=None)
    elif isinstance(value, (list, tuple, range, Mapping)):
        try:
            size = len(value)
        except OverflowError:  # a range past sys.maxsize items
            size = MAX_LIQUID_VALUE + 1
        if size > MAX_LIQUID_VALUE:
            raise _Refused(f'filter "{name}" {role} {size} items; the limit is {MAX_LIQUID_VALUE}', token=None)
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        if role == "would make":
            raise _Refused(f'filter "{name}" made an integer outside the 64-bit range ({MIN_INT} to {MAX_INT})', token=None)


def _size(value: Any) -> int:
    """The work a value stands for: characters of a text, items of an array, range or object; 1 otherwise."""
    if isinstance(value, (str, list, tuple, range, Mapping)):
        try:
            return len(value)
        except OverflowError:
            return MAX_LIQUID_VALUE + 1
    return 1


def _charge(context: Any, name: str, units: int) -> None:
    """Count ``units`` of filter work against this render's budget."""
    if isinstance(context, _Context):
        context.work += units
        if context.work > MAX_LIQUID_WORK:
            raise _Refused(
                f'filter "{name}" passes the work limit: the filters of this template would handle more than '
                f"{MAX_LIQUID_WORK} characters and items for this event; use fewer filters on long values",
                token=None,
            )


def _planned(name: str, size: int, unit: str = "characters") -> None:
    """Refuse before computing a result whose size is known to pass the limit."""
    if size > MAX_LIQUID_VALUE:
        raise _Refused(f'filter "{name}" would make {size} {unit}; the limit is {MAX_LIQUID_VALUE}', token=None)


def _escaped_size(text: str) -> int:
    """Length of ``html.escape(text)``: & -> &amp;, < and > -> &lt; &gt;, quotes -> &quot; &#x27;."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">")) + 5 * (text.count('"') + text.count("'"))


_URL_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~ "
_DIRECTIVE = re.compile(r"%[-_0^#]*(\d*)")


def _join_items(value: Any, level: int = 5) -> Iterator[Any]:
    """The items ``join`` writes: nested arrays flattened five levels deep, as the library does."""
    for item in value:
        if level and isinstance(item, (list, tuple)):
            yield from _join_items(item, level - 1)
        else:
            yield item


def _text_arg(args: tuple[Any, ...], index: int, default: str = "") -> str:
    return _text(args[index]) if len(args) > index else default


def _precheck(name: str, left: Any, args: tuple[Any, ...]) -> None:
    """For filters whose result can be much larger than their input: its exact (or bounding) size, before it is made."""
    if name in ("append", "prepend"):
        _planned(name, len(left) + len(_text_arg(args, 0)))
    elif name == "replace":
        seq, sub = _text_arg(args, 0), _text_arg(args, 1)
        places = left.count(seq) if seq else len(left) + 1  # an empty pattern matches between every two characters
        _planned(name, len(left) + places * (len(sub) - len(seq)))
    elif name in ("replace_first", "replace_last"):
        seq, sub = _text_arg(args, 0), _text_arg(args, 1)
        if not seq or seq in left:
            _planned(name, len(left) - len(seq) + len(sub))
    elif name == "split":
        sep = args[0] if args else None
        if sep is None or isinstance(sep, Undefined) or sep == "":
            _planned(name, len(left), "items")
        elif _text(sep) != " ":
            _planned(name, left.count(_text(sep)) + 1, "items")
    elif name in ("escape", "escape_once"):
        _planned(name, _escaped_size(html.unescape(left) if name == "escape_once" else left))
    elif name == "url_encode":
        data = left.encode("utf-8", "surrogatepass")
        _planned(name, len(data) + 2 * len(data.translate(None, _URL_SAFE)))
    elif name in ("base64_encode", "base64_url_safe_encode"):
        _planned(name, 4 * -(-len(left.encode("utf-8", "surrogatepass")) // 3))


def _checked_date(func: Callable[..., Any]) -> Callable[..., Any]:
    """``date``: a format's output bounded before ``strftime`` runs; a long text is not parsed as a date.

    Each ``%`` directive writes at most its field width plus a few dozen characters; a text over
    256 characters is returned unchanged, as any text that is not a date is (dateutil's parser
    takes about a second over 100,000 characters).
    """

    def date(dat: Any, fmt: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fmt, str):
            widths = [int(width) if width and len(width) < 8 else (10**8 if width else 0) for width in _DIRECTIVE.findall(fmt)]
            _planned("date", len(fmt) + sum(64 + width for width in widths))
        if isinstance(dat, str) and len(dat) > 256 and dat not in ("now", "today"):
            return dat
        return func(dat, fmt, *args, **kwargs)

    return date


# --- filters that follow liquidjs, not the library ---------------------------------------------


_HTML_BLOCKS = (("<script", "</script>"), ("<style", "</style>"), ("<!--", "-->"))


def _strip_html(text: str) -> str:
    """liquidjs's ``strip_html``, in linear time.

    liquidjs removes what ``<script.*?</script>|<!--.*?-->|<style.*?</style>|<.*?>`` matches (each
    ``.`` any character, newlines too; case-sensitive): at each ``<``, a script, style or comment
    block up to its first closer, else up to the first ``>``. The library's version is Python's
    ``HTMLParser``, quadratic on some inputs (``">" + "<a" * n``) and different on many others.

    A regex would rescan the rest of the text from every ``<`` whose closer is missing. Here each
    closer's next position is remembered: a search starts after every earlier start, so a closer
    not found once is not found again, and a found one serves every start before it. Each search
    therefore covers new text only: linear in ``len(text)`` whatever the text.
    """
    closers = [0] * len(_HTML_BLOCKS)  # per block kind: the next closer at or after a start, -1 if none
    out: list[str] = []
    i = 0
    while True:
        lt = text.find("<", i)
        if lt < 0:
            out.append(text[i:])
            break
        out.append(text[i:lt])
        end = -1
        for kind, (opener, closer) in enumerate(_HTML_BLOCKS):
            if text.startswith(opener, lt):  # the openers exclude one another: at most one applies
                start = lt + len(opener)
                if 0 <= closers[kind] < start:
                    closers[kind] = text.find(closer, start)
                if closers[kind] >= 0:
                    end = closers[kind] + len(closer)
                break
        if end < 0:
            gt = text.find(">", lt + 1)
            if gt < 0:  # no ">" after this "<", so none after any later one (and every closer holds one)
                out.append(text[lt:])
                break
            end = gt + 1
        i = end
    return "".join(out)


_SAFE_INTEGER = 2**53  # below it, a JavaScript number that is integral is written and computed as an integer


def _js_result(value: float) -> float | int:
    """A JavaScript number as a filter result: refused when not finite (a payload cannot carry it),
    an ``int`` when integral (so that other filters take it as one), else the float."""
    if math.isnan(value) or math.isinf(value):
        raise OverflowError("a number is out of range")
    if value.is_integer() and abs(value) < _SAFE_INTEGER:
        return int(value)
    return value


def _js_float(value: Any) -> float:
    """A filter's number as JavaScript holds it (a double), read as the library's filters read one:
    a text of digits is its number, anything else that is not a number is 0."""
    return float(num_arg(value, default=0))


def _js_math_round(value: float) -> float:
    """JavaScript's ``Math.round``: the nearest integer, halves toward +infinity (2.5 -> 3, -2.5 -> -2)."""
    if math.isnan(value) or math.isinf(value) or abs(value) >= 2**52:
        return value  # integral already (or not a number)
    floor = float(math.floor(value))
    return floor + 1.0 if value - floor >= 0.5 else floor  # value - floor is exact here


def _divided_by(dividend: Any, divisor: Any, integer_arithmetic: Any = False) -> float | int:
    """liquidjs's ``divided_by``: ``a / b`` as a JavaScript number (5 / 3 -> 1.6666666666666667), or
    ``Math.floor(a / b)`` when the second argument is true. Dividing by zero fails (liquidjs would
    write Infinity or NaN)."""
    numerator, denominator = _js_float(dividend), _js_float(divisor)
    if denominator == 0:
        raise ZeroDivisionError("division by zero")
    quotient = numerator / denominator
    if num_arg(integer_arithmetic, default=0):  # liquidjs reads every argument as a number: true is 1
        quotient = float(math.floor(quotient)) if math.isfinite(quotient) else quotient
    return _js_result(quotient)


def _round(value: Any, digits: Any = 0) -> float | int:
    """liquidjs's ``round``: ``Math.round(v * 10 ** n) / 10 ** n`` (2.5 -> 3, -2.5 -> -2, 1234 | round: -2 -> 1200)."""
    number, places = _js_float(value), _js_float(digits)
    try:
        scale = 10.0**places
    except OverflowError:
        scale = math.inf
    if scale == 0 or math.isinf(scale):  # liquidjs: NaN or Infinity
        raise OverflowError("a number is out of range")
    return _js_result(_js_math_round(number * scale) / scale)


_LIQUIDJS_FILTERS: dict[str, Callable[..., Any]] = {"strip_html": _strip_html, "divided_by": _divided_by, "round": _round}
"""Filters written here because the library's differ from liquidjs's (Segment's engine)."""


# Text filters take text: their input and text arguments are converted as liquidjs does (10.0 -> "10").
_TEXT_FILTERS = frozenset({
    "append", "capitalize", "downcase", "escape", "escape_once", "lstrip", "prepend", "remove", "remove_first",
    "remove_last", "replace", "replace_first", "replace_last", "upcase", "strip", "rstrip", "strip_html",
    "strip_newlines", "truncate", "truncatewords", "url_encode", "url_decode", "base64_encode", "base64_decode",
    "base64_url_safe_encode", "base64_url_safe_decode", "split", "squish",
})
_TEXT_ARGUMENTS: dict[str, tuple[int, ...]] = {
    "append": (0,), "prepend": (0,), "remove": (0,), "remove_first": (0,), "remove_last": (0,),
    "replace": (0, 1), "replace_first": (0, 1), "replace_last": (0, 1), "split": (0,), "truncate": (1,),
    "truncatewords": (1,),
}


def _describe(exc: BaseException) -> str:
    """An exception from inside a filter, as one line (never printing a huge value)."""
    if isinstance(exc, RecursionError):
        return "the value nests too deep"
    if isinstance(exc, MemoryError):
        return "out of memory"
    conditions = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []  # decimal's signals
    if isinstance(exc, (ZeroDivisionError, DivisionByZero)) or DivisionUndefined in conditions or DivisionByZero in conditions:
        return "division by zero"
    if isinstance(exc, (OverflowError, Overflow, Underflow, Subnormal)) or any(
        signal in conditions for signal in (Overflow, Underflow, Subnormal)
    ):
        return "a number is out of range"
    if isinstance(exc, InvalidOperation) or InvalidOperation in conditions:
        return "a value is not a number, or it divides by zero"
    if isinstance(exc, DecimalException):  # any other signal (Inexact, Rounded, Clamped ...): never its class list
        names = [getattr(signal, "__name__", "?") for signal in conditions] or [type(exc).__name__]
        return "a number cannot be computed exactly (" + ", ".join(names) + ")"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with the sandbox's checks before and after; keeps ``with_context``/``with_environment``."""
    original = func
    library = _checked_date(func) if name == "date" else func
    text_filter = name in _TEXT_FILTERS
    text_arguments = _TEXT_ARGUMENTS.get(name, ())
    wants_context = bool(getattr(original, "with_context", False))

    def guarded(left: Any, *args: Any, context: Any = None, **kwargs: Any) -> Any:
        if wants_context:
            kwargs["context"] = context
        _check_value(name, left, "takes")
        for arg in args:
            _check_value(name, arg, "takes")
        for key, arg in kwargs.items():
            if key not in ("environment", "context"):
                _check_value(name, arg, "takes")
        if text_filter:
            left = _text(left)
            args = tuple(_text(arg) if index in text_arguments else arg for index, arg in enumerate(args))
        elif name == "join":
            if isinstance(left, (list, tuple, range)):
                items = [_text(item) for item in _join_items(left)]
                _planned(name, len(items), "items")
                separator = _text(args[0]) if args else " "
                _planned(name, sum(map(len, items)) + len(separator) * max(len(items) - 1, 0))
                left, args = items, (separator, *args[1:])
        _precheck(name, left, args)
        _charge(context, name, _size(left) + sum(map(_size, args)))
        try:
            result = library(left, *args, **kwargs)
        except LiquidError:
            raise
        except Exception as exc:  # noqa: BLE001 - the library's own bugs too: the event fails, nothing escapes
            raise _Refused(f"{name}: {_describe(exc)}", token=None) from None
        _check_value(name, result, "would make")
        _charge(context, name, _size(result))
        return result

    setattr(guarded, "with_context", True)  # the render's context carries the work budget
    if getattr(original, "with_environment", False):
        setattr(guarded, "with_environment", True)
    guarded.__name__ = f"guarded_{name}"
    setattr(guarded, "__wrapped__", original)  # the library's signature, for the load-time argument check
    return guarded


# --- the environment ----------------------------------------------------------------------------


class _CountingIO(LimitedStringIO):
    """An output buffer held to a character limit (ours) and to the library's byte limit."""

    def __init__(self, byte_limit: int, char_limit: int) -> None:
        super().__init__(limit=byte_limit)
        self.char_limit = char_limit
        self.chars = 0

    def write(self, text: str) -> int:
        """Refuse the write that would pass the limit, before it is stored."""
        if text:
            self.chars += len(text)
            if self.chars > self.char_limit:
                raise OutputStreamLimitError(f"the rendered text would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)
        return super().write(text)


def _byte_limit(env: Environment) -> int:
    return env.output_stream_limit if env.output_stream_limit is not None else 4 * MAX_LIQUID_VALUE


class _Context(RenderContext):
    """The render context: the event's keys (and the template's own variables), no ``now``/``today``."""

    __slots__ = ("work",)

    def __init__(self, template: BoundTemplate, **options: Any) -> None:
        super().__init__(template, **options)
        self.work = 0  # units of filter work so far (MAX_LIQUID_WORK)
        self.scope = ReadOnlyChainMap(self.locals, self.globals, self.counters)

    def get_buffer(self, buf: Optional[TextIO] = None) -> StringIO:
        """A ``capture`` buffer: what is left of the limits after what the outer buffer holds."""
        chars = buf.chars if isinstance(buf, _CountingIO) else 0
        size = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _CountingIO(_byte_limit(self.env) - size, MAX_LIQUID_VALUE - chars)


class _Template(BoundTemplate):
    """A bound template that renders into a counting buffer with our context."""

    context_class = _Context

    def _get_buffer(self) -> StringIO:
        return _CountingIO(_byte_limit(self.env), MAX_LIQUID_VALUE)


def _write(value: Any, buffer: TextIO) -> int:
    """Write ``value``'s text to ``buffer``, refused as soon as it would pass what is left of the rendered text."""
    left = buffer.char_limit - buffer.chars if isinstance(buffer, _CountingIO) else MAX_LIQUID_VALUE
    return buffer.write(_text(value, max(left, 0), "output"))


class _OutputNode(OutputNode):
    """``{{ ... }}`` writing values as liquidjs does (see the module docstring)."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        """Write the value's text, refused past the limit before it is built."""
        return _write(self.expression.evaluate(context), buffer)


class _EchoNode(EchoNode):
    """``{% echo ... %}``, written as ``{{ ... }}`` is."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        """Write the value's text, refused past the limit before it is built."""
        return _write(self.expression.evaluate(context), buffer)


class _Output(Output):
    node_class = _OutputNode


class _Echo(EchoTag):
    node_class = _EchoNode


class _BoundedRange(RangeLiteral):
    """``(a..b)`` refused where it is written when it holds more than ``MAX_LIQUID_VALUE`` numbers.

    python-liquid makes a lazy ``range``, so a huge one costs nothing until something walks it:
    ``join``, an output, ``contains`` with a non-integer (Python scans the range). Refusing it at
    creation covers every one of those.
    """

    __slots__ = ()

    def _make_range(self, start: Any, stop: Any) -> range:
        made = super()._make_range(start, stop)
        if made.stop - made.start > MAX_LIQUID_VALUE:
            raise _Refused(f"a range of more than {MAX_LIQUID_VALUE} numbers (the limit)", token=self.token)
        return made


class LiquidEnvironment(Environment):
    """actionmap's own Liquid environment: Segment's sandbox, strict, with every library limit set."""

    block_nesting_limit = 30
    context_depth_limit = 10  # no include/render: a render extends the context once
    loop_iteration_limit = MAX_LIQUID_VALUE  # no loop tags are registered; a second guard all the same
    local_namespace_limit = _NAMESPACE_BYTES
    output_stream_limit = 4 * MAX_LIQUID_VALUE  # bytes; our buffer also counts characters
    template_class = _Template
    shorthand_indexes = False
    string_sequences = False
    logical_not_operator = False
    logical_parentheses = False
    ternary_expressions = False
    keyword_assignment = False

    def __init__(self) -> None:
        super().__init__(strict_filters=True, autoescape=False, tolerance=liquid.Mode.STRICT)

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        """The built-in tags and filters, less the sandbox's, each filter wrapped by the checks."""
        super().setup_tags_and_filters(extra=False)
        self.filters.update(_LIQUIDJS_FILTERS)
        for tag in _UNREGISTERED_TAGS:
            self.tags.pop(tag, None)
        self.add_tag(_Output)
        self.add_tag(_Echo)
        self.filters = {name: _guarded(name, func) for name, func in self.filters.items() if name not in _UNREGISTERED_FILTERS}


_ENV = LiquidEnvironment()


# --- compiling --------------------------------------------------------------------------------


def _config_error(text: str, pointer: str, offset: int, why: str) -> ConfigError:
    return ConfigError(f"invalid @liquid template {shorten(text)} at {_where(text, offset)}: {why}", pointer, offset)


_WORD_OPERATOR = re.compile(r"\b(?:and|or)\b")
_STRING = re.compile(r"\"[^\"]*\"?|'[^']*'?")
_LIQUID_COMMENT = re.compile(r"^[ \t]*#[^\n]*", re.MULTILINE)  # a comment line of {% liquid %}


def _nesting_problem(text: str) -> tuple[int, str] | None:
    """An expression nested deeper than ``MAX_EXPRESSION_DEPTH`` (brackets plus ``and``/``or``), before parsing.

    python-liquid parses and evaluates brackets and boolean chains by recursion (about two frames a
    level), so a 1000-character template could reach Python's recursion limit, at load or, worse,
    only on a deep call stack at render. Counted per expression, strings skipped; over-counts
    rather than under-counts.
    """
    try:
        tokens = list(_ENV.tokenizer()(text))
    except LiquidError:
        return None  # a lexing error: the parser reports it, placed
    previous: Token | None = None
    for token in tokens:
        tag = previous.value if previous is not None and previous.kind == TOKEN_TAG else None
        previous = token
        if token.kind != TOKEN_EXPRESSION or tag == "#":
            continue  # an inline comment's text ({% # ... %}) is never parsed
        value = _LIQUID_COMMENT.sub(lambda m: " " * len(m.group()), token.value) if tag == "liquid" else token.value
        bare = _STRING.sub(lambda m: " " * len(m.group()), value)
        depth = deepest = 0
        for index, char in enumerate(bare):
            if char in "([":
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > MAX_EXPRESSION_DEPTH:
                        return token.start_index + index, f"brackets nest deeper than {MAX_EXPRESSION_DEPTH} levels (the limit)"
            elif char in ")]":
                depth = max(depth - 1, 0)
        operators = list(_WORD_OPERATOR.finditer(bare))
        if len(operators) + deepest > MAX_EXPRESSION_DEPTH:
            offset = token.start_index + operators[min(MAX_EXPRESSION_DEPTH, len(operators) - 1)].start()
            return offset, f"more than {MAX_EXPRESSION_DEPTH} \"and\"/\"or\" in one condition (the limit); split it into nested {{% if %}} tags or {{% assign %}} steps"
    return None


_END_EXPECTED = re.compile(r"expected tag (end\w+)")


def _unclosed_block(text: str, end: str) -> int:
    """Offset of the block tag that ``end`` (``endif``) would close and that is still open."""
    opener = end[3:]
    stack: list[int] = []
    try:
        tokens = list(_ENV.tokenizer()(text))
    except LiquidError:
        return len(text)
    for token in tokens:
        if token.kind == TOKEN_TAG:
            if token.value == opener:
                stack.append(token.start_index)
            elif token.value == end and stack:
                stack.pop()
    return stack[-1] if stack else len(text)


def _syntax_error(text: str, pointer: str, err: LiquidError) -> ConfigError:
    """A parse error of the library, placed and said for an operator."""
    message = str(err.message)
    token = err.token
    offset = token.start_index if token is not None and token.start_index >= 0 and token.source == text else -1
    if isinstance(err, BlockNestingError):
        return _config_error(text, pointer, max(offset, 0), f"blocks ({{% if %}}, {{% capture %}} ...) nest deeper than {_ENV.block_nesting_limit} levels (the limit)")
    if token is not None and token.kind == TOKEN_DOC:
        return _config_error(text, pointer, max(offset, 0), 'unknown tag "doc"; write a note as {% comment %}...{% endcomment %}')
    unexpected = re.fullmatch(r"unexpected tag '(\w*)'", message)
    if unexpected and token is not None:
        name = unexpected.group(1)
        if name in _TAG_ADVICE:
            kind = "disabled" if name in DISABLED_TAGS else "not available"
            return _config_error(text, pointer, offset, f'tag "{name}" is {kind}: {_TAG_ADVICE[name]}')
        if name.startswith("end") or name in ("else", "elsif", "when"):
            return _config_error(text, pointer, offset, f'"{{% {name} %}}" has no open block before it to belong to; remove it or add the opening tag')
        allowed = sorted(t for t in _ENV.tags if t.isidentifier() and t not in ("output", "content", "illegal"))
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "the tags available are " + ", ".join(allowed)
        return _config_error(text, pointer, offset, f'unknown tag "{name}"; {hint}')
    ended = _END_EXPECTED.search(message)
    if ended and offset < 0:
        end = ended.group(1)
        start = _unclosed_block(text, end)
        return _config_error(text, pointer, start, f'"{{% {end[3:]} %}}" is never closed: add "{{% {end} %}}" after its content')
    if offset < 0:
        offset = len(text)
    return _config_error(text, pointer, offset, f"{message} (Liquid is written {{{{ value | filter: argument }}}} and {{% tag ... %}})")


def _expressions(node: LiquidNode, context: RenderContext) -> Iterator[Expression]:
    """Every expression in the tree under ``node``, nested ones included, iteratively."""
    nodes = [node]
    while nodes:
        current = nodes.pop()
        nodes.extend(current.children(context, include_partials=False))
        pending = list(current.expressions())
        while pending:
            expression = pending.pop()
            yield expression
            pending.extend(expression.children())


def _filters_of(expression: Expression) -> Iterable[Filter]:
    if isinstance(expression, FilteredExpression):
        return expression.filters or []
    if isinstance(expression, TernaryFilteredExpression):
        return [*(expression.filters or []), *(expression.tail_filters or [])]
    return []


def _parameter_name(name: str) -> str:
    """A Python parameter name as an operator reads it: without the underscore that avoids a keyword (``default_``)."""
    return name[:-1] if name.endswith("_") and len(name) > 1 else name


def _signature_problem(name: str, filter_: Filter) -> str | None:
    """Why the filter's arguments cannot fit the library function, or None (checked once, here)."""
    func = getattr(_ENV.filters[name], "__wrapped__", None)
    try:
        signature = inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    positional = [arg for arg in filter_.args if not isinstance(arg, KeywordArgument)]
    keywords = {arg.name: None for arg in filter_.args if isinstance(arg, KeywordArgument)}
    extra = {key: None for key in ("environment", "context") if getattr(func, f"with_{key}", False)}
    try:
        signature.bind(None, *[None] * len(positional), **keywords, **extra)
    except TypeError as err:
        params = [p for p in signature.parameters.values() if p.name not in ("environment", "context")][1:]
        names = [_parameter_name(p.name) for p in params]
        shape = ", ".join(n if p.default is inspect.Parameter.empty else f"{n} (optional)" for n, p in zip(names, params))
        takes = f"takes {shape}" if shape else "takes no arguments"
        why = re.sub(r"'(\w+?)_'", r"'\1'", str(err))
        return f'filter "{name}" {takes}: {why}; write it as {{{{ value | {name}{": " + ", ".join(names) if names else ""} }}}}'
    return None


def _check_tree(template: BoundTemplate, text: str, pointer: str) -> None:
    """Disabled, unknown and mis-called filters refused at load (first in the text first); ranges bounded."""
    context = _Context(template)
    problems: list[tuple[int, str]] = []
    for root in template.nodes:
        for expression in _expressions(root, context):
            if type(expression) is RangeLiteral:
                expression.__class__ = _BoundedRange
            for filter_ in _filters_of(expression):
                offset = filter_.token.start_index
                name = filter_.name
                if name in DISABLED_FILTERS:
                    problems.append((offset, f'filter "{name}" is disabled (as in Segment); remove it or shape the value with another mapping directive first'))
                elif name in _FILTER_ADVICE:
                    problems.append((offset, f'unknown filter "{name}": {_FILTER_ADVICE[name]}'))
                elif name not in _ENV.filters:
                    close = difflib.get_close_matches(name, [f for f in _ENV.filters if f not in DISABLED_FILTERS], n=1)
                    hint = f'did you mean "{close[0]}"?' if close else "the filters available are " + ", ".join(sorted(_ENV.filters))
                    problems.append((offset, f'unknown filter "{name}"; {hint}'))
                elif (problem := _signature_problem(name, filter_)) is not None:
                    problems.append((offset, problem))
    if problems:
        offset, why = min(problems)
        raise _config_error(text, pointer, offset, why)


def compile_liquid(text: str, pointer: str) -> Getter:
    """The template parsed and checked once; the function renders one event (a dict) to a string.

    Load-time problems are :class:`ConfigError` with the offset inside ``text``; the function
    raises only :class:`MappingFailure`.
    """
    if len(text) > MAX_LIQUID_CHARS:
        raise ConfigError(
            f"liquid template values are limited to {MAX_LIQUID_CHARS} characters; this one has {len(text)} "
            f"({shorten(text)}): shorten it, or split it over several fields",
            pointer,
            MAX_LIQUID_CHARS,
        )
    nesting = _nesting_problem(text)
    if nesting is not None:
        raise _config_error(text, pointer, *nesting)
    try:
        template = _ENV.from_string(text)
    except LiquidError as err:
        cause = err.__cause__
        if isinstance(cause, RecursionError):
            raise _config_error(text, pointer, 0, "the template nests too deep; flatten it") from None
        if cause is not None and not isinstance(cause, LiquidError):
            raise _config_error(text, pointer, 0, f"it cannot be parsed ({_describe(cause)})") from None
        raise _syntax_error(text, pointer, err) from None
    _check_tree(template, text, pointer)

    def render(event: Any) -> str:
        scope = event if isinstance(event, dict) else {}
        try:
            return template.render(scope)
        except MappingFailure:
            raise
        except LiquidError as err:
            raise MappingFailure(_render_message(text, err)) from None
        except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError, a library bug: this event fails, nothing escapes
            raise MappingFailure(f"@liquid could not render this event: {_describe(exc)}") from None

    return render


def _render_message(text: str, err: LiquidError) -> str:
    """One line for a failed render: what the library or a sandbox rule said, and where in the template."""
    if isinstance(err, LocalNamespaceLimitError):
        what = (f"the template's variables ({{% assign %}}, {{% capture %}}) would hold more than {_NAMESPACE_BYTES} bytes "
                "(the limit); a template that keeps doubling a variable never ends")
    else:
        what = str(err.message)
        what = what if len(what) <= 300 else what[:297] + "..."
    token: Optional[Token] = err.token
    if token is not None and token.start_index >= 0 and token.source == text:
        name = f' ("{token.value}")' if token.kind in ("word", TOKEN_TAG) and f'"{token.value}"' not in what and not what.startswith(f"{token.value}:") else ""
        return f"@liquid failed at {_where(text, token.start_index)}{name}: {what}"
    return f"@liquid failed: {what}"
