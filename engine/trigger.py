"""The trigger language: which events feed a subscription, compiled once to a predicate.

A trigger is FQL (Segment / Customer.io), e.g. ``type = "track" and event != "test"``,
or ``{"jmespath": "<expr>"}``. FQL goes through three stages, like the ``jmespath``
package: a lexer (tokens that know their column), a recursive-descent parser (a small
immutable tree, see :func:`parse`) and a compiler that turns the tree into closures.
Only the closures run per event.

Where Segment's FQL is defective (see ``docs/segment-compat.md``) we differ:
``not`` > ``and`` > ``or`` precedence, ``not``/``!`` negate, nesting to ``MAX_EXPRESSION_DEPTH``, full globs,
``'x'`` equals ``"x"``, any field path, and whatever does not parse is a ConfigError
with the column of the bad token instead of a trigger that is silently false.

As Segment (its FQL compiles to ``not_contains``, ``number_not_equals`` and so on):

- ``contains(f, "s")`` and ``match(f, "glob")`` are false when ``f`` is missing, null or
  not a string, and so are their negations ``!contains(f, "s")``, ``not match(f, "x*")``:
  a negation written directly on a call is Segment's ``not_contains`` /
  ``not_starts_with`` / ``not_ends_with`` (a string that does not contain / match).
  Any other negation is plain boolean ``not``: ``!(contains(f, "s") or g = 1)``,
  ``not (f != 5)`` and the outer ``not`` of ``not not contains(f, "s")`` are true
  whenever what they negate is false, a missing ``f`` included. Segment has no such
  forms (it drops the ``not``). Parentheses around a lone call make no group:
  ``!(contains(f, "s"))`` is ``!contains(f, "s")``.
- A comparison with a number literal (``= != < <= > >=``) is false unless the field
  holds a number (int or float; a boolean is not one): a missing field, null, the
  string ``"456"`` or ``true`` never match, ``!=`` included. ``f != "s"`` stays true for
  a missing field (Segment's string rule), ``f != null`` means "exists".
- A backslash in a field path escapes the next character, as Segment's FQL generator
  writes them: ``properties.property\\ 1`` is the key ``"property 1"``,
  ``properties.a\\.b`` the key ``"a.b"`` (not ``a`` then ``b``).
- Number literals may carry a sign: ``-5``, ``+5``, ``+1.5``.

Choices where the contract is silent (``docs/segment-compat.md`` lists each beside Segment's):

- ``f = true`` needs the boolean; ``f != true`` is exactly its negation, true for a
  missing field, ``false`` and the string ``"true"`` (Segment compares the text there).

- ``<``, ``<=``, ``>``, ``>=`` compare numbers only, as Segment does; writing a string,
  boolean or null after them is an error at load time rather than a trigger that can
  never be true.
- Globs know ``*`` (any run, newlines included) and ``?`` (one character); everything
  else, ``[`` included, is literal. There is no escape for ``*`` or ``?``: use
  ``contains`` or ``=`` for text holding them.
- A field starts with a letter, ``_`` or a backslash escape; names continue with
  letters, digits, ``_``, ``-`` and backslash escapes (``\\`` and any character).
  After a dot a digit-only name is what Segment makes of it, the key ``"0"`` of an
  object or the first item of an array (``items.0``); ``items[0]`` is an index only
  (``[-1]`` counts from the end), ``items["0"]`` a key only; odd keys
  ``properties["a.b"]`` or ``properties.a\\.b``. The keywords (``and or not true false
  null``, lowercase) cannot be the first name of a field unless a character of it is
  escaped (``tru\\e`` is the field ``true``).
- A JMESPath trigger that raises on an event's data (jmespath is not total on JSON:
  ``"" > `1` ``, ``sort_by`` over mixed types) does not match that event.
- Strings take JSON's escapes (``\\" \\' \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``); any other
  backslash escape is an error.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import jmespath
from jmespath.exceptions import EmptyExpressionError, IncompleteExpressionError, JMESPathError, LexerError, ParseError
from jmespath.functions import Functions

from engine.errors import ConfigError
from engine.jsonpath import DigitName, Key, expression_problem, shorten, too_deep, too_many_digits, walk
from engine.limits import MAX_EXPRESSION_DEPTH, MAX_INT_DIGITS
from engine.missing import MISSING

Event = dict[str, Any]
_DIGITS = re.compile(r"[0-9]+")  # a dotted name read as Segment reads it (jsonpath.DigitName)
Predicate = Callable[[Event], bool]
Scalar = str | int | float | bool | None
Path = tuple[Key, ...]

# --- parse tree ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """A bare ``true`` (every event) or ``false`` (none)."""

    value: bool


@dataclass(frozen=True, slots=True)
class Compare:
    """``path op value``; ``op`` is one of ``= != < <= > >=``."""

    path: Path
    op: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class Call:
    """``contains(path, argument)`` or ``match(path, argument)``."""

    function: str
    path: Path
    argument: str


@dataclass(frozen=True, slots=True)
class Not:
    """``not x`` / ``!x``; over a :class:`Call` it is Segment's ``not_contains`` etc. (see the module doc)."""

    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    """Two or more operands; a chain ``a and b and c`` is one node."""

    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Two or more operands; a chain ``a or b or c`` is one node."""

    operands: tuple[Node, ...]


Node = Const | Compare | Call | Not | And | Or

ORDERING = ("<", "<=", ">", ">=")
FUNCTIONS = ("contains", "match")


# --- lexer -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is a keyword, an operator or punctuation itself, or field/string/number/op/eof."""

    kind: str
    text: str  # as written, for messages
    offset: int
    value: Any = None


_KEYWORD_VALUES: dict[str, Any] = {"and": None, "or": None, "not": None, "true": True, "false": False, "null": None}
_OPERATORS = ("<=", ">=", "!=", "=", "<", ">")  # two-character ones first
_PUNCTUATION = "(),!"
_NUMBER = re.compile(r"[-+]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"\[(-?[0-9]+)\]")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_HINTS = {
    "&": 'write "and"',
    "|": 'write "or"',
    "$": 'fields are written without "$.", e.g. properties.price',
    "`": "strings are quoted with \" or '",
}


def _name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_-"


class _Lexer:
    """Splits FQL text into tokens; a field path (``a.b["c"][0]``) is one token."""

    def __init__(self, text: str, pointer: str) -> None:
        self.text = text
        self.pointer = pointer
        self.pos = 0

    def error(self, message: str, offset: int) -> ConfigError:
        return ConfigError(message, self.pointer, offset)

    def tokens(self) -> list[Token]:
        text = self.text
        out: list[Token] = []
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos == len(text):
                out.append(Token("eof", "", self.pos))
                return out
            out.append(self._token(text[self.pos]))

    def _token(self, ch: str) -> Token:
        start = self.pos
        op = next((o for o in _OPERATORS if self.text.startswith(o, start)), None)
        if op:
            self.pos += len(op)
            return Token("op", op, start, op)
        if ch in _PUNCTUATION:
            self.pos += 1
            return Token(ch, ch, start)
        if ch in "\"'":
            value = self._string()
            return Token("string", self.text[start : self.pos], start, value)
        if ch in "-+0123456789":
            return self._number()
        if ch.isalpha() or ch in "_\\":
            return self._field()
        hint = _HINTS.get(ch)
        raise self.error(f'unexpected character "{ch}"' + (f"; {hint}" if hint else ""), start)

    def _string(self) -> str:
        """The value of the string starting at ``pos`` (either quote), escapes resolved."""
        text, quote, start = self.text, self.text[self.pos], self.pos
        parts: list[str] = []
        pos = start + 1
        while pos < len(text) and text[pos] != quote:
            ch = text[pos]
            if ch != "\\":
                parts.append(ch)
                pos += 1
                continue
            escape = text[pos + 1 : pos + 2]
            if escape in _ESCAPES:
                parts.append(_ESCAPES[escape])
                pos += 2
            elif escape == "u" and _HEX4.fullmatch(text, pos + 2, pos + 6):
                parts.append(chr(int(text[pos + 2 : pos + 6], 16)))
                pos += 6
            else:
                shown = "\\" + escape if escape else "a backslash at the end"
                raise self.error(
                    f'unknown escape "{shown}" in a string; the escapes are \\" \\\' \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX',
                    pos,
                )
        if pos == len(text):
            raise self.error(f"unterminated string: the {quote} here is never closed", start)
        self.pos = pos + 1
        value = "".join(parts)
        try:  # \uXXXX pairs written for one character outside the BMP become that character
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise self.error("a string holds a lone \\uXXXX surrogate, which is not text", start) from None

    def _number(self) -> Token:
        start = self.pos
        found = _NUMBER.match(self.text, start)
        if not found:
            sign = self.text[start]
            name = "minus" if sign == "-" else "plus"
            raise self.error(f'unexpected character "{sign}"; a {name} sign must be followed by digits', start)
        end = glued = found.end()
        while glued < len(self.text) and (_name_char(self.text[glued]) or self.text[glued] == "."):
            glued += 1
        if glued > end:
            raise self.error(f'malformed number "{self.text[start:glued]}"; write e.g. 12, -3.5, +5 or 1e6', start)
        self.pos = end
        literal = found.group()
        if found.group(1) or found.group(2):
            value: int | float = float(literal)
            if not math.isfinite(value):
                raise self.error(f"the number {shorten(literal)} is out of range (a double holds up to about 1.8e308)", start)
        elif len(literal.lstrip("-+")) > MAX_INT_DIGITS:
            raise self.error(too_many_digits(len(literal.lstrip("-+"))), start)
        else:
            value = int(literal)
        return Token("number", literal, start, value)

    def _name(self) -> str:
        """The key of the name at ``pos``: name characters, and ``\\x`` for any character ``x``."""
        text = self.text
        parts: list[str] = []
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\":
                if self.pos + 1 == len(text):
                    raise self.error("a backslash at the end of a field escapes nothing; write \\\\ for a backslash in a key", self.pos)
                parts.append(text[self.pos + 1])
                self.pos += 2
            elif _name_char(ch):
                parts.append(ch)
                self.pos += 1
            else:
                break
        return "".join(parts)

    def _field(self) -> Token:
        start = self.pos
        first = self._name()
        if self.text[start : self.pos] in _KEYWORD_VALUES:  # as written: an escaped keyword is a field
            return Token(first, first, start, _KEYWORD_VALUES[first])
        keys: list[Key] = [first]
        text = self.text
        while self.pos < len(text) and text[self.pos] in ".[":
            if text[self.pos] == ".":
                self.pos += 1
                name = self._name()
                if not name:
                    raise self.error('expected a name after "." in a field (write odd keys as ["key"])', self.pos)
                keys.append(DigitName(name) if _DIGITS.fullmatch(name) else name)
            elif text[self.pos + 1 : self.pos + 2] in ("'", '"'):
                self.pos += 1
                keys.append(self._string())
                if text[self.pos : self.pos + 1] != "]":
                    raise self.error('expected "]" after the quoted key', self.pos)
                self.pos += 1
            else:
                index = _INDEX.match(text, self.pos)
                if not index:
                    raise self.error('expected a quoted key or an index after "[", e.g. ["a.b"] or [0]', self.pos)
                digits = index.group(1).lstrip("-")
                if len(digits) > MAX_INT_DIGITS:
                    raise self.error(too_many_digits(len(digits)), index.start(1))
                keys.append(int(index.group(1)))
                self.pos = index.end()
        return Token("field", text[start : self.pos], start, tuple(keys))


# --- parser ----------------------------------------------------------------------


def _describe(token: Token) -> str:
    if token.kind == "eof":
        return "the end of the trigger"
    if token.kind in ("string", "number"):
        return f"the {token.kind} {token.text}"
    return f'"{token.text}"'


class _Parser:
    """Recursive descent: or_expr := and_expr ("or" and_expr)*, and so on down to primary."""

    def __init__(self, text: str, pointer: str) -> None:
        self.pointer = pointer
        self.tokens = _Lexer(text, pointer).tokens()
        self.index = 0
        self.depth = 0

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def peek(self) -> Token:
        return self.tokens[self.index]

    def expected(self, what: str, found: Token) -> ConfigError:
        hint = ""
        if found.kind == "field" and found.text.lower() in _KEYWORD_VALUES:
            hint = f" (keywords are lowercase: {found.text.lower()})"
        return ConfigError(f"expected {what} but found {_describe(found)}{hint}", self.pointer, found.offset)

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise ConfigError('the trigger is empty; write a condition such as type = "track", or true to match every event', self.pointer, 0)
        node = self.disjunction()
        end = self.peek()
        if end.kind != "eof":
            raise self.expected('"and", "or" or the end of the trigger', end)
        return node

    def disjunction(self) -> Node:
        return self.chain("or", Or, self.conjunction)

    def conjunction(self) -> Node:
        return self.chain("and", And, self.unary)

    def chain(self, keyword: str, kind: type[And] | type[Or], operand: Callable[[], Node]) -> Node:
        operands = [operand()]
        while self.peek().kind == keyword:
            self.next()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else kind(tuple(operands))

    def descend(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:  # the parser and the compiler recurse
            raise ConfigError(too_deep("the trigger") + " (parentheses and negations count)", self.pointer, token.offset)

    def unary(self) -> Node:
        token = self.peek()
        if token.kind not in ("not", "!"):
            return self.primary()
        self.next()
        self.descend(token)
        node = Not(self.unary())
        self.depth -= 1
        return node

    def primary(self) -> Node:
        token = self.next()
        if token.kind == "(":
            self.descend(token)
            node = self.disjunction()
            close = self.next()
            if close.kind != ")":
                raise self.expected('"and", "or" or ")"', close)
            self.depth -= 1
            return node
        if token.kind in ("true", "false"):
            return Const(token.value)
        if token.kind == "field":
            return self.call(token) if self.peek().kind == "(" else self.comparison(token)
        raise self.expected('a field, a function or "("', token)

    def comparison(self, subject: Token) -> Compare:
        op = self.next()
        if op.kind != "op":
            raise self.expected(f'an operator (= != < <= > >=) after "{subject.text}"', op)
        literal = self.next()
        if literal.kind not in ("string", "number", "true", "false", "null"):
            error = self.expected(f'a string, number, true, false or null after "{op.text}"', literal)
            if literal.kind == "field" and literal.text.lower() not in _KEYWORD_VALUES:
                error = ConfigError(f'{error.message} (quote text: "{literal.text}")', self.pointer, literal.offset)
            elif literal.text == "=":
                error = ConfigError(f'{error.message} (equality is a single "=")', self.pointer, literal.offset)
            raise error
        if op.value in ORDERING and literal.kind != "number":
            raise ConfigError(
                f'"{op.value}" compares numbers only but found {_describe(literal)}; use = or != for strings, booleans and null',
                self.pointer,
                literal.offset,
            )
        return Compare(subject.value, op.value, literal.value)

    def call(self, name: Token) -> Call:
        function = name.text
        if function not in FUNCTIONS:
            raise ConfigError(
                f'unknown function "{function}"; the functions are contains(field, "text") and match(field, "glob")',
                self.pointer,
                name.offset,
            )
        self.next()  # "("
        subject = self.next()
        if subject.kind != "field":
            raise self.expected(f"a field as the first argument of {function}()", subject)
        comma = self.next()
        if comma.kind != ",":
            raise self.expected(f'"," after the field in {function}()', comma)
        argument = self.next()
        if argument.kind != "string":
            raise self.expected(f"a string as the second argument of {function}()", argument)
        close = self.next()
        if close.kind != ")":
            raise self.expected(f'")" to close {function}(', close)
        return Call(function, subject.value, argument.value)


def parse(text: str, pointer: str = "") -> Node:
    """The parse tree of an FQL trigger; a ConfigError with the bad token's offset otherwise."""
    return _Parser(text, pointer).parse()


# --- compiler --------------------------------------------------------------------

_NUMBERS = (int, float)  # compared with type(), so bool is not a number
_ORDER: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _equals(literal: Scalar) -> Callable[[Any], bool]:
    """Type-strict equality with ``literal``; ``null`` stands for missing or null."""
    if literal is None:
        return lambda value: value is MISSING or value is None
    if type(literal) is bool:
        return lambda value: value is literal
    if type(literal) is str:
        return lambda value: type(value) is str and value == literal
    return lambda value: type(value) in _NUMBERS and value == literal


def _value_test(op: str, literal: Scalar) -> Callable[[Any], bool]:
    """A number literal tests numbers only, ``!=`` included (Segment's ``number_not_equals``)."""
    if op in _ORDER:
        compare = _ORDER[op]
        return lambda value: type(value) in _NUMBERS and compare(value, literal)
    if op == "!=" and type(literal) in _NUMBERS:
        return lambda value: type(value) in _NUMBERS and value != literal
    equals = _equals(literal)
    return equals if op == "=" else lambda value: not equals(value)


def glob_regex(glob: str) -> re.Pattern[str]:
    """A regex that ``fullmatch``-es exactly the strings the glob matches.

    Each ``*`` between literal parts becomes an atomic lazy group ``(?>.*?part)``: the
    leftmost occurrence of each fixed-length part is always a right choice, so the match
    never backtracks and stays linear however many stars the glob has and however long
    the event's string is.
    """
    parts = [".".join(map(re.escape, part.split("?"))) for part in glob.split("*")]
    if len(parts) == 1:
        return re.compile(parts[0], re.DOTALL)
    first, *middle, last = parts
    return re.compile(first + "".join(f"(?>.*?{part})" for part in middle if part) + ".*" + last, re.DOTALL)


def _function_test(function: str, argument: str, negated: bool = False) -> Callable[[Any], bool]:
    """``contains`` / ``match``, or with ``negated`` Segment's ``not_contains`` / ``not_*_with``.

    Both need a string: a missing, null or non-string value fails either way.
    """
    if function == "contains":
        if negated:
            return lambda value: type(value) is str and argument not in value
        return lambda value: type(value) is str and argument in value
    fullmatch = glob_regex(argument).fullmatch
    if negated:
        return lambda value: type(value) is str and fullmatch(value) is None
    return lambda value: type(value) is str and fullmatch(value) is not None


def _leaf(path: Path, test: Callable[[Any], bool]) -> Predicate:
    get = walk(path)
    return lambda event: test(get(event))


def _compare(path: Path, op: str, literal: Scalar) -> Predicate:
    """A comparison; ``=``/``!=`` with a string needs no type test (only a str equals a str)."""
    if type(literal) is str and op in ("=", "!="):
        get = walk(path)
        if op == "=":
            return lambda event: get(event) == literal
        return lambda event: get(event) != literal
    return _leaf(path, _value_test(op, literal))


def compile_tree(node: Node) -> Predicate:
    """The predicate of a parse tree: closures only, nothing is looked up per event."""
    match node:
        case Const(value):
            return lambda event: value
        case Compare(path, op, literal):
            return _compare(path, op, literal)
        case Call(function, path, argument):
            return _leaf(path, _function_test(function, argument))
        case Not(Call(function, path, argument)):  # Segment's not_contains / not_starts_with / not_ends_with
            return _leaf(path, _function_test(function, argument, negated=True))
        case Not(operand):
            inner = compile_tree(operand)
            return lambda event: not inner(event)
        case And(operands):
            every = tuple(map(compile_tree, operands))

            def conjunction(event: Event) -> bool:
                for predicate in every:
                    if not predicate(event):
                        return False
                return True

            return conjunction
        case Or(operands):
            some = tuple(map(compile_tree, operands))

            def disjunction(event: Event) -> bool:
                for predicate in some:
                    if predicate(event):
                        return True
                return False

            return disjunction
    raise TypeError(f"not a trigger node: {node!r}")


# --- JMESPath triggers -----------------------------------------------------------


def _jmespath_truthy(value: Any) -> bool:
    """JMESPath's truth: everything but null, false, "", [] and {} (0 is true)."""
    return not (value is None or value is False or (type(value) in (str, list, dict) and not value))


def _jmespath_problem(error: JMESPathError) -> str:
    if isinstance(error, LexerError):
        return error.message
    if isinstance(error, IncompleteExpressionError):
        return "the expression ends too early"
    if isinstance(error, ParseError):
        return f'unexpected "{error.token_value}"' if error.token_value is not None else error.msg
    return str(error)


_ZERO_STEP = re.compile(r":[^:\[\]]*:\s*-?0+\s*\]")


def _check_functions(ast: dict[str, Any], pointer: str, expression: str) -> None:
    """Unknown functions, wrong argument counts and zero slice steps, which JMESPath reports only per event."""
    if ast.get("type") == "slice" and ast["children"][2] == 0:
        step = _ZERO_STEP.search(expression)
        raise ConfigError(
            "invalid JMESPath expression: a slice step cannot be zero; leave it out ([start:stop]) or write 1 or -1",
            pointer,
            step.start() if step else None,
        )
    if ast.get("type") == "function_expression":
        name = ast["value"]
        entry = Functions.FUNCTION_TABLE.get(name)
        if entry is None:
            raise ConfigError(f'unknown JMESPath function "{name}()"', pointer)
        signature = entry["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        given = len(ast["children"])
        if given < len(signature) or (given > len(signature) and not variadic):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise ConfigError(f"JMESPath function {name}() takes {wanted} argument(s) but is given {given}", pointer)
    for child in ast.get("children", ()):
        if isinstance(child, dict):
            _check_functions(child, pointer, expression)


def _jmespath_predicate(spec: dict[str, Any], pointer: str) -> tuple[str, Predicate]:
    expression = spec.get("jmespath")
    if set(spec) != {"jmespath"} or type(expression) is not str:
        raise ConfigError(
            f'a trigger object must be exactly {{jmespath: "<expression>"}}; found the keys {sorted(map(str, spec))}', pointer
        )
    where = pointer + "/jmespath"
    problem = expression_problem(expression, jmespath=True)
    if problem is not None:
        raise ConfigError(f"invalid JMESPath expression: {problem[0]}", where, problem[1])
    try:
        compiled = jmespath.compile(expression)
    except EmptyExpressionError:
        raise ConfigError("the JMESPath expression is empty", where, 0) from None
    except JMESPathError as error:
        offset = getattr(error, "lex_position", None)
        raise ConfigError(f"invalid JMESPath expression: {_jmespath_problem(error)}", where, offset) from None
    _check_functions(cast(dict[str, Any], compiled.parsed), where, expression)
    search = compiled.search

    def matches(event: Event) -> bool:
        try:
            return _jmespath_truthy(search(event))
        except Exception:  # noqa: BLE001 - jmespath is not total on JSON (1.1 raises bare TypeError, ValueError): no match
            return False

    return f"jmespath: {expression}", matches


# --- public API ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """A compiled trigger: ``matches(event)`` never raises on a JSON object."""

    source: str
    matches: Predicate = field(repr=False, compare=False)


def compile_trigger(spec: str | dict[str, Any], pointer: str = "") -> Trigger:
    """Compile an FQL string or ``{"jmespath": expr}``; errors carry ``pointer`` and an offset."""
    if isinstance(spec, str):
        return Trigger(spec, compile_tree(parse(spec, pointer)))
    if isinstance(spec, dict):
        return Trigger(*_jmespath_predicate(spec, pointer))
    found = "null" if spec is None else type(spec).__name__
    raise ConfigError(f'a trigger is an FQL string such as type = "track" or {{jmespath: "<expression>"}}; found {found}', pointer)


# --- the event's integrations object ----------------------------------------------


def _opinion(value: Any) -> bool | None:
    """What one entry of ``integrations`` says: off (False), on (True) or nothing (None).

    As Segment's libraries read it: only ``false`` turns off; a value JavaScript holds
    true (``true``, an options object or list, a non-empty string, a non-zero number)
    turns on; ``null``, ``0`` and ``""`` leave the decision to ``All``.
    """
    if value is False:
        return False
    if value is MISSING or value is None:
        return None
    if type(value) in (dict, list):
        return True
    return True if value else None


def integrations_filter(name: str, slug: str) -> Callable[[Event], bool]:
    """Whether an event's ``integrations`` object lets it through to this destination.

    Absent or not an object: through. An entry for ``name`` or ``slug`` decides; when
    they disagree the explicit ``false`` wins (a customer said "not here"). Otherwise
    ``"All": false`` keeps the event away; anything else lets it through.
    """
    keys = (name, slug) if name != slug else (name,)

    def allowed(event: Event) -> bool:
        integrations = event.get("integrations")
        if type(integrations) is not dict:
            return True
        opinions = [_opinion(integrations.get(key, MISSING)) for key in keys]
        if False in opinions:
            return False
        if True in opinions:
            return True
        return integrations.get("All") is not False

    return allowed
