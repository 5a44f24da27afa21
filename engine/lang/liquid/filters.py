"""Every filter wrapped: inputs checked, results that can outgrow their input sized before they are made, work counted; liquidjs's own versions where the library differs."""

from __future__ import annotations

import html
import math
import re
from decimal import DecimalException, DivisionByZero, DivisionUndefined, InvalidOperation, Overflow, Subnormal, Underflow
from typing import Any, Callable, Iterator, Mapping

from liquid import Undefined
from liquid.exceptions import LiquidError
from liquid.filter import num_arg

from engine.limits import MAX_INT, MAX_LIQUID_VALUE, MAX_LIQUID_WORK, MIN_INT
from engine.lang.liquid.sandbox import Metered, _Refused
from engine.lang.liquid.values import _text


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
    if isinstance(context, Metered):
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
