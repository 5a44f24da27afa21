"""Lago's billable-metric expressions, which Lago evaluates at ingest: a failure rejects the event (422).

The grammar and the error texts follow ``getlago/lago-expression`` (``expression-core``:
``grammar.pest``, ``parser.rs``, ``evaluate.rs``): decimals, 'strings',
``event.code``, ``event.timestamp``, ``event.properties.<name>``, ``+ - * /`` (``*`` and
``/`` bind tighter, all left-associative), unary minus, parentheses, and the functions
``round``/``ceil``/``floor`` (an optional second argument: the digits) and ``concat``.
It lives here because it is the one thing about a Lago event only the server can judge,
so it is the emulator's poison: an event whose property the expression cannot use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, DivisionByZero, InvalidOperation, localcontext
from typing import Any, Final, Mapping, Union

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<number>[0-9]+(?:\.[0-9]+)?)|'(?P<string>[^']*)'"
    r"|event\.(?P<attribute>timestamp|code|properties\.(?P<property>[A-Za-z][A-Za-z0-9_]*))"
    r"|(?P<function>ceil|CEIL|Ceil|concat|CONCAT|Concat|round|ROUND|Round|floor|FLOOR|Floor)\s*\("
    r"|(?P<symbol>[-+*/(),]))"
)
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_ROUNDING: Final = {"round": ROUND_HALF_UP, "ceil": ROUND_CEILING, "floor": ROUND_FLOOR}
_BINDING: Final = {"+": 1, "-": 1, "*": 2, "/": 2}

Value = Union[Decimal, str]


class ExpressionError(Exception):
    """An evaluation failure; its text is what Lago puts after ``expression_evaluation_failed: ``."""


@dataclass(frozen=True)
class Node:
    kind: str  # number | string | attribute | property | neg | op | call
    value: Any = None
    args: tuple[Node, ...] = ()


class _Parser:
    """A Pratt parser over the tokens of one expression (Lago refuses to save a metric whose expression does not parse)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        at = 0
        while text[at:].strip():
            m = _TOKEN.match(text, at)
            if m is None:
                raise ValueError(f"Parsing error: unexpected input at {at}: {text[at:at + 20]!r}")
            kind = next(k for k in ("number", "string", "property", "attribute", "function", "symbol") if m.group(k) is not None)
            self.tokens.append((kind, m.group(kind).lower() if kind == "function" else m.group(kind)))
            at = m.end()
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, symbol: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (symbol is not None and token != ("symbol", symbol)):
            raise ValueError(f"Parsing error: expected {symbol or 'more input'} at token {self.at}")
        self.at += 1
        return token

    def expression(self, binding: int = 0) -> Node:
        left = self.atom()
        while (token := self.peek()) is not None and token[0] == "symbol" and _BINDING.get(token[1], 0) > binding:
            self.at += 1
            left = Node("op", token[1], (left, self.expression(_BINDING[token[1]])))
        return left

    def atom(self) -> Node:
        kind, text = self.take()
        if (kind, text) == ("symbol", "-"):
            return Node("neg", args=(self.atom(),))
        if (kind, text) == ("symbol", "("):
            inner = self.expression()
            self.take(")")
            return inner
        if kind == "function":
            args = [self.expression()]
            while self.peek() == ("symbol", ","):
                self.at += 1
                args.append(self.expression())
            self.take(")")
            if text != "concat" and len(args) > 2:
                raise ValueError(f"Parsing error: {text} takes one or two arguments")
            return Node("call", text, tuple(args))
        if kind == "number":
            return Node("number", Decimal(text))
        if kind in ("string", "property", "attribute"):
            return Node(kind, text)
        raise ValueError(f"Parsing error: unexpected {text!r}")


def parse(text: str) -> Node:
    """The expression's tree; ValueError when it does not parse (Lago would not have saved the metric)."""
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise ValueError(f"Parsing error: unexpected {parser.peek()[1]!r} after a complete expression")  # type: ignore[index]
    return node


def _as_value(raw: Any) -> Value | None:
    """A property as the evaluator sees it: numbers and decimal-looking strings are decimals, other strings text.

    Other JSON values (booleans, null, objects, arrays) are not properties to it: reading
    one fails as a missing variable (a decision; the source maps only strings and numbers).
    """
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, (int, float)):
        return Decimal(str(raw))
    if isinstance(raw, str):
        return Decimal(raw) if _DECIMAL_TEXT.match(raw) else raw
    return None


def _decimal(value: Value) -> Decimal:
    if isinstance(value, str):
        raise ExpressionError("Expected a decimal")
    return value


def text_of(value: Value) -> str:
    """How a value reads inside ``concat`` (a decimal in plain notation, never with an exponent)."""
    return value if isinstance(value, str) else format(value, "f")


def evaluate(node: Node, code: str, timestamp: int, properties: Mapping[str, Any]) -> Value:
    """The expression's value for one event; :class:`ExpressionError` with Lago's text when it fails."""
    kind = node.kind
    if kind == "number":
        return node.value
    if kind == "string":
        return str(node.value)
    if kind == "attribute":
        return code if node.value == "code" else Decimal(timestamp)
    if kind == "property":
        value = _as_value(properties.get(node.value))
        if value is None:
            raise ExpressionError(f"Variable: {node.value} not found")
        return value
    args = [evaluate(arg, code, timestamp, properties) for arg in node.args]
    if kind == "neg":
        return -_decimal(args[0])
    if kind == "op":
        left, right = _decimal(args[0]), _decimal(args[1])
        with localcontext() as context:
            context.prec = 100
            context.traps[DivisionByZero] = context.traps[InvalidOperation] = True
            try:
                return {"+": left + right, "-": left - right, "*": left * right}[node.value] if node.value != "/" else left / right
            except (DivisionByZero, InvalidOperation):
                raise ExpressionError("Division by zero") from None  # unverified: the Rust crate panics
    if node.value == "concat":
        return "".join(text_of(arg) for arg in args)
    digits = int(_decimal(args[1])) if len(args) > 1 else 0
    with localcontext() as context:
        context.prec = 100
        return _decimal(args[0]).quantize(Decimal(1).scaleb(-digits), rounding=_ROUNDING[node.value])
