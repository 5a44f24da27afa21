"""The FQL parser: recursive descent over the tokens, not > and > or, errors at the bad token's column."""

from __future__ import annotations

from typing import Callable

from engine.errors import ConfigError
from engine.lang.jsonpath import too_deep
from engine.limits import MAX_EXPRESSION_DEPTH
from engine.lang.trigger.lexer import _KEYWORD_VALUES, Token, _Lexer
from engine.lang.trigger.tree import FUNCTIONS, ORDERING, And, Call, Compare, Const, Node, Not, Or


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
