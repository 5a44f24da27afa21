"""The FQL lexer: tokens that know their column, escapes and number limits checked as they are read."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError
from engine.lang.jsonpath import Key, segment_key, shorten, too_many_digits
from engine.limits import MAX_INT_DIGITS


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
                keys.append(segment_key(name))
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
