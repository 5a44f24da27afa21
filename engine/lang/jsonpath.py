"""JSONPath (RFC 9535) for mappings and triggers, compiled once.

A singular query made of names and indexes only becomes a direct key walk;
every other query is parsed once by ``jsonpath-rfc9535`` and kept.

Segment-style dotted paths (``a.b[0]``, ``a['x.y']``, ``context.user agent``) are
split here into the same keys. Where the spec is silent: a dotted name runs to the
next ``.``, ``[`` or ``]`` and may hold spaces or dashes; a quoted name takes
backslash escapes; a digit-only dotted name (``items.0``) means what Segment makes
of it, a key of an object or an index of an array, whichever the value is.

``compile_segment_path`` reads a ``@path`` argument: RFC 9535 where the text is valid
RFC 9535, Segment's dotted reading of the rest of a ``$.`` text where it is not
(``$.properties.order-id``, ``$.integrations.Actions Amplitude.session_id``), and
``""`` or ``"$."`` as the whole event, as Segment has them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, cast

import jsonpath_rfc9535
from jsonpath_rfc9535.selectors import NameSelector
from jsonpath_rfc9535.tokens import Token

from engine.errors import ConfigError, MappingFailure
from engine.limits import MAX_EXPRESSION_DEPTH, MAX_INT_DIGITS
from engine.lang.missing import MISSING

Key = str | int
Getter = Callable[[Any], Any]


def walk(keys: tuple[Key, ...]) -> Getter:
    """A getter that follows ``keys`` into a JSON document, giving MISSING on any gap.

    Same result as the RFC 9535 singular query built from those keys: a name only
    selects in an object, an index only in an array (negative counts from the end);
    a :class:`DigitName` (Segment's ``items.0``) selects in either.
    One or two names, the common case (``$.event``, ``$.context.groupId``), get a
    getter of their own: the per-event path pays for no loop.
    """
    if len(keys) == 1 and type(keys[0]) is str:
        (name,) = keys

        def get_one(doc: Any) -> Any:
            return doc.get(name, MISSING) if type(doc) is dict else MISSING

        return get_one
    if len(keys) == 2 and type(keys[0]) is str and type(keys[1]) is str:
        first, second = keys

        def get_two(doc: Any) -> Any:
            if type(doc) is not dict:
                return MISSING
            inner = doc.get(first, MISSING)
            return inner.get(second, MISSING) if type(inner) is dict else MISSING

        return get_two

    def get(doc: Any) -> Any:
        for key in keys:
            if type(key) is str:
                if type(doc) is not dict:
                    return MISSING
                doc = doc.get(key, MISSING)
                if doc is MISSING:
                    return MISSING
            elif type(key) is int:
                if type(doc) is not list:
                    return MISSING
                try:
                    doc = doc[key]
                except IndexError:
                    return MISSING
            else:
                doc = cast(DigitName, key).select(doc)
                if doc is MISSING:
                    return MISSING
        return doc

    return get


class DigitName(str):
    """A digit-only dotted name (``items.0``): Segment reads it as a key of an object or an index of an array.

    JSONPath's own ``[0]`` and ``['0']`` say which; a dotted name cannot, so it takes
    the one that fits the value, as a JavaScript property lookup does (an array
    position only in its canonical spelling: ``01`` is never one).
    """

    def select(self, doc: Any) -> Any:
        if type(doc) is dict:
            return doc.get(self, MISSING)
        if type(doc) is list and (self == "0" or self[0] != "0") and len(self) < 19 and int(self) < len(doc):
            return doc[int(self)]
        return MISSING


_ENV = jsonpath_rfc9535.JSONPathEnvironment()
_MAX_INDEX = _ENV.max_int_index  # RFC 9535 I-JSON range, the same limit for dotted paths

# One step of a dotted path: `.name`, or a bracket holding an index or a quoted name.
# A name runs to the next '.', '[' or ']'; quoted names take backslash escapes.
_DOTTED_STEP = re.compile(
    r"""\.(?P<dot>[^.\[\]]*)"""
    r"""|\[(?:(?P<index>-?[0-9]+)|'(?P<single>(?:[^'\\]|\\.)*)'|"(?P<double>(?:[^"\\]|\\.)*)")\]""",
    re.DOTALL,
)
_FIRST_NAME = re.compile(r"[^.\[\]]+")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_DIGITS = re.compile(r"[0-9]+")


class Path:
    """A compiled query: ``evaluate(doc)`` is a plain function, chosen once.

    A singular query gives the value or MISSING; any other query gives the list of
    node values in RFC order. Which of the two is fixed by the text, never by data.
    """

    __slots__ = ("text", "singular", "evaluate")

    def __init__(self, text: str, singular: bool, evaluate: Getter) -> None:
        self.text = text
        self.singular = singular
        self.evaluate = evaluate

    def __repr__(self) -> str:
        return f"Path({self.text!r})"


def compile_path(text: str, pointer: str = "") -> Path:
    """Compile an RFC 9535 query (``$...``) or a Segment-style dotted path (``a.b[0]``).

    Errors are ConfigErrors at ``pointer``, with ``offset`` the column in ``text``.
    """
    if text.startswith("$"):
        return _compile_jsonpath(text, pointer)
    return Path(text, True, walk(_dotted_keys(text, pointer)))


_WHOLE = ("", ".", "$.", "$..")  # Segment's get: "" and "." are the root, after it strips one "$."
_JSONPATH_SYNTAX = re.compile(r"""[*?@()'"$]""")  # a name holding one of these was meant as JSONPath


def compile_segment_path(text: str, pointer: str = "") -> Path:
    """A ``@path`` argument: RFC 9535 where valid, else the Segment dotted path it is; errors stay RFC 9535's.

    A ``$.`` text that RFC 9535 refuses is read as Segment reads it (the dotted path after
    ``$.``) when each name is plain: a name holding ``* ? @ ( ) ' " $``, or starting or
    ending with a space, was meant otherwise, so the RFC 9535 error, with its column,
    is the one reported.
    """
    if text in _WHOLE:
        return Path(text, True, _whole)
    if not text.startswith("$"):
        return compile_path(text, pointer)
    try:
        return _compile_jsonpath(text, pointer)
    except ConfigError as strict:
        if not text.startswith("$.") or _JSONPATH_SYNTAX.search(text, 2):
            raise
        try:
            keys = _dotted_keys(text[2:], pointer)
        except ConfigError:
            raise strict from None
        if any(type(key) is str and key != key.strip() for key in keys):
            raise  # a name with a space at its end is a typo more often than a key
        return Path(text, True, walk(keys))


def _whole(doc: Any) -> Any:
    return doc


def _compile_jsonpath(text: str, pointer: str) -> Path:
    problem = expression_problem(text)
    if problem is not None:
        raise ConfigError(f"invalid JSONPath {shorten(text)} at column {problem[1] + 1}: {problem[0]}", pointer, problem[1])
    try:
        query = _ENV.compile(text)
    except jsonpath_rfc9535.JSONPathError as error:
        raise _syntax_error(text, error, pointer) from None
    if query.singular_query():
        # Every segment holds one name or index selector: a direct key walk does it.
        keys = tuple(_selector_key(segment.selectors[0]) for segment in query.segments)
        return Path(text, True, walk(keys))

    def select(doc: Any) -> list[Any]:
        try:
            return [node.value for node in query.finditer(doc)]
        except jsonpath_rfc9535.JSONPathError as error:  # e.g. nesting deeper than the library's limit
            raise MappingFailure(f"JSONPath {text} could not be evaluated on this event: {error.args[0]}") from None

    return Path(text, False, select)


def _selector_key(selector: Any) -> Key:
    """The key a singular segment's one selector stands for (a name or an index)."""
    key: Key = selector.name if isinstance(selector, NameSelector) else selector.index
    return key


def _syntax_error(text: str, error: jsonpath_rfc9535.JSONPathError, pointer: str) -> ConfigError:
    """The library's error as a ConfigError at the column it names."""
    token = error.token or next((arg for arg in error.args if isinstance(arg, Token)), None)
    offset = min(token.index, len(text)) if token is not None else 0
    return ConfigError(
        f"invalid JSONPath {text!r} at column {offset + 1}: {error.args[0]}"
        " (RFC 9535 writes names as $.name or $['name'] and indexes as $[0])",
        pointer,
        offset,
    )


def _dotted_keys(text: str, pointer: str) -> tuple[Key, ...]:
    """Split a dotted path (``a.b[0]``, ``a['x.y']``, ``context.user agent``) into keys."""

    def fail(why: str, offset: int) -> ConfigError:
        return ConfigError(f"invalid path {shorten(text)} at column {offset + 1}: {why}", pointer, offset)

    if text == "":
        raise fail("the path is empty (use $ for the whole event)", 0)
    if text != text.strip():
        raise fail("the path has leading or trailing spaces", 0 if text[0].isspace() else len(text.rstrip()))
    if text[0] == ".":
        raise fail("a path starts with a name or a bracket, not '.'", 0)
    keys: list[Key] = []
    first = _FIRST_NAME.match(text)
    at = 0
    if first is not None:
        keys.append(_dotted_name(first.group(), 0, fail))
        at = first.end()
    while at < len(text):
        step = _DOTTED_STEP.match(text, at)
        if step is None:
            raise fail(f"unexpected {text[at]!r}; expected .name, [0] or ['name']", at)
        if step.group("dot") is not None:
            keys.append(_dotted_name(step.group("dot"), at + 1, fail))
        elif step.group("index") is not None:
            digits = step.group("index").lstrip("-")
            if len(digits) > MAX_INT_DIGITS:
                raise fail(too_many_digits(len(digits)), at + 1)
            index = int(step.group("index"))
            if abs(index) > _MAX_INDEX:
                raise fail(f"index {index} is out of range (at most {_MAX_INDEX})", at + 1)
            keys.append(index)
        else:
            quoted = step.group("single") if step.group("single") is not None else step.group("double")
            keys.append(_ESCAPE.sub(r"\1", quoted))
        at = step.end()
    return tuple(keys)


def _dotted_name(name: str, offset: int, fail: Callable[[str, int], ConfigError]) -> str:
    if name == "":
        raise fail("empty name between dots", offset)
    if _DIGITS.fullmatch(name) and len(name) > MAX_INT_DIGITS:
        raise fail(too_many_digits(len(name)), offset)
    return segment_key(name)


def segment_key(name: str) -> str:
    """The key a dotted name (or a name of Segment's array form of a path) stands for."""
    return DigitName(name) if _DIGITS.fullmatch(name) else name


# --- limits of an expression, checked before a library parser sees it ----------------------

_NUMBER_TOKEN = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NESTING_HINT = "brackets, parentheses, negations and chained operators count"


def too_many_digits(count: int) -> str:
    """The message for an integer longer than MAX_INT_DIGITS, shared by every expression language."""
    return (
        f"an integer of {count:,} digits is over the limit of {MAX_INT_DIGITS} digits in an expression; "
        "write a smaller number, or quote it as text"
    )


def too_deep(what: str) -> str:
    """The message for an expression nesting past MAX_EXPRESSION_DEPTH, shared by every expression language."""
    return f"{what} nests deeper than {MAX_EXPRESSION_DEPTH} levels, the limit for one expression; split it or write it flatter"


def shorten(text: str) -> str:
    """An expression quoted for a message, cut so a hostile one does not fill the screen."""
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."


def expression_problem(text: str, jmespath: bool = False) -> tuple[str, int] | None:
    """Why a JSONPath (or, with ``jmespath``, JMESPath) text breaks the expression limits, and the offset where; or None.

    Both libraries parse by recursion and read integers of any length with ``int()``,
    so a hostile expression would end in a RecursionError or in Python's 4,300-digit
    ValueError. This one iterative pass bounds what they will see: ``MAX_EXPRESSION_DEPTH``
    counts open brackets, braces and parentheses plus, inside each, the operators that
    make the parsers recurse without a bracket (``!``, ``&&`` and ``||`` in JSONPath;
    ``!``, ``&``, ``*`` and every ``[`` in JMESPath, whose projections nest), and
    ``MAX_INT_DIGITS`` bounds each integer. Strings are skipped; a JMESPath backtick
    literal is JSON and is counted like the rest. It over-counts rather than
    under-counts: an expression it passes cannot recurse deep.
    """
    # Per open group, the recursion its operators add: `weak` ends at the next operator that
    # binds less (JMESPath's |, ||, &&, comparisons), `strong` only at a comma or colon.
    weak, strong = [0], [0]
    level = 0  # open groups plus every pending count: what the parser's stack holds here
    literal = False  # inside a JMESPath `...` literal
    at, end = 0, len(text)
    while at < end:
        ch = text[at]
        if ch == '"' or (ch == "'" and not literal):
            close = at + 1
            while close < end and text[close] != ch:
                close += 2 if text[close] == "\\" else 1
            at = close + 1
            continue
        if "0" <= ch <= "9":
            number = _NUMBER_TOKEN.match(text, at)
            assert number is not None
            if not (number.group(1) or number.group(2)):
                if number.end() - at > MAX_INT_DIGITS:
                    return too_many_digits(number.end() - at), at
            elif not math.isfinite(float(number.group())):
                return f"the number {shorten(number.group())} is out of range (a double holds up to about 1.8e308)", at
            at = number.end()
            continue
        if ch.isalpha() or ch == "_":
            while at < end and (text[at].isalnum() or text[at] == "_"):
                at += 1
            continue
        pair = text[at : at + 2]
        if jmespath and ch == "`":
            literal = not literal
        elif literal and ch == "\\":
            at += 1  # an escaped backtick
        elif ch in "([{":
            if jmespath and ch == "[" and not literal:  # maybe a projection, which nests what follows
                weak[-1] += 1
                level += 1
            weak.append(0)
            strong.append(0)
            level += 1
        elif ch in ")]}":
            if len(weak) > 1:
                level -= weak.pop() + strong.pop() + 1
        elif pair in ("&&", "||"):
            if jmespath:
                level -= weak[-1]
                weak[-1] = 0
            else:  # JSONPath's parser recurses once per && and ||
                strong[-1] += 1
                level += 1
            at += 2
            continue
        elif ch == "," or (jmespath and ch == ":"):
            level -= weak[-1] + strong[-1]
            weak[-1] = strong[-1] = 0
        elif ch == "!" and pair != "!=":
            (weak if jmespath else strong)[-1] += 1
            level += 1
        elif jmespath and ch == "&":  # an expression reference reaches to the next comma or bracket
            strong[-1] += 1
            level += 1
        elif jmespath and ch == "*":
            weak[-1] += 1
            level += 1
        elif jmespath and ch in "|=<>!":
            level -= weak[-1]
            weak[-1] = 0
        if level > MAX_EXPRESSION_DEPTH:
            return too_deep("the expression") + f" ({_NESTING_HINT})", at
        at += 1
    return None
