"""JMESPath for triggers and mappings: one adapter, compiled once, checked at load.

The library parses an expression when it compiles it, but finds unknown functions, wrong
argument counts and zero slice steps only on an event, and it is not total on JSON (a
filter comparing ``"" > `1` `` raises TypeError). Here everything that can be decided
from the text is decided at load, with the column, in one wording for triggers and
mappings alike; on an event, any failure is one :class:`MappingFailure` naming the
expression. The common subset (fields, sub-expressions, ``[*]`` projections) runs as
plain closures instead of the library's tree interpreter.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, cast

import jmespath
import jmespath.exceptions
import jmespath.functions

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import expression_problem, shorten

Search = Callable[[Any], Any]
"""A compiled expression: the JMESPath value for a document (None when nothing is found)."""

_FUNCTIONS: dict[str, Any] = jmespath.functions.Functions().FUNCTION_TABLE
_ZERO_STEP = re.compile(r":[^:\[\]]*:\s*-?0+\s*\]")


def compile_jmespath(text: str, pointer: str) -> Search:
    """``text`` compiled and checked; a ConfigError at ``pointer`` (offset: the column) if it cannot run."""
    problem = expression_problem(text, jmespath=True)
    if problem is not None:
        raise _invalid(text, pointer, problem[1], problem[0])
    try:
        parsed = jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as error:
        raise _invalid(text, pointer, getattr(error, "lex_position", None) or 0, _reason(error)) from None
    tree = cast(dict[str, Any], parsed.parsed)  # the library's parse tree: plain dicts
    _check_tree(tree, text, pointer)
    direct = _closure(tree)
    if direct is not None:
        return direct
    library = parsed.search

    def search(doc: Any) -> Any:
        try:
            return library(doc)
        except Exception as error:  # noqa: BLE001 - jmespath is not total on JSON (bare TypeError, ValueError)
            raise MappingFailure(f"JMESPath {shorten(text)} failed on this event: {error}") from None

    return search


def truthy(value: Any) -> bool:
    """JMESPath's truth: everything but null, false, "", [] and {} (0 is true)."""
    return not (value is None or value is False or (type(value) in (str, list, dict) and not value))


def _invalid(text: str, pointer: str, offset: int, why: str) -> ConfigError:
    return ConfigError(f"invalid JMESPath {shorten(text)} at column {offset + 1}: {why}", pointer, offset)


def _reason(error: jmespath.exceptions.JMESPathError) -> str:
    if isinstance(error, jmespath.exceptions.EmptyExpressionError):
        return "the expression is empty"
    if isinstance(error, jmespath.exceptions.IncompleteExpressionError):
        return "the expression ends too early"
    if isinstance(error, jmespath.exceptions.LexerError):
        return str(error.message)
    if isinstance(error, jmespath.exceptions.ParseError) and error.token_value is not None:
        return f'unexpected "{error.token_value}"'
    return str(getattr(error, "msg", error))


def _check_tree(tree: dict[str, Any], text: str, pointer: str) -> None:
    """Unknown functions, wrong argument counts and zero slice steps, which the library finds only per event."""
    stack = [tree]
    while stack:
        node = stack.pop()
        stack.extend(child for child in node.get("children", ()) if type(child) is dict)
        if node["type"] == "slice" and node["children"][2] == 0:
            step = _ZERO_STEP.search(text)
            raise _invalid(text, pointer, step.start() if step else 0, "a slice step cannot be zero; leave it out ([start:stop]) or write 1 or -1")
        if node["type"] != "function_expression":
            continue
        name, count = node["value"], len(node["children"])
        call = re.search(rf"\b{re.escape(name)}\s*\(", text)
        offset = call.start() if call else 0
        function = _FUNCTIONS.get(name)
        if function is None:
            close = difflib.get_close_matches(name, list(_FUNCTIONS), n=1)
            raise _invalid(text, pointer, offset, f"unknown function {name}()" + (f" (did you mean {close[0]}?)" if close else ""))
        signature = function["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if count < len(signature) or (count > len(signature) and not variadic):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise _invalid(text, pointer, offset, f"{name}() takes {wanted} argument(s), not {count}")


def _closure(node: dict[str, Any]) -> Search | None:
    """Closures for JMESPath's common subset (fields, sub-expressions, ``[*]`` projections), or None.

    The library interprets its parse tree on every call; these give the same results as
    its tree visitor (a property test holds them to it) for a fraction of the cost.
    Anything else (filters, functions, indexes, slices, ...) goes to the library.
    """
    kind = node["type"]
    if kind == "identity":
        return lambda value: value
    if kind == "field":
        name = node["value"]
        return lambda value: value.get(name) if type(value) is dict else None
    if kind not in ("subexpression", "projection") or len(node["children"]) != 2:
        return None
    left, right = (_closure(child) for child in node["children"])
    if left is None or right is None:
        return None
    if kind == "subexpression":
        return lambda value: right(left(value))

    def project(value: Any) -> Any:
        base = left(value)
        if type(base) is not list:
            return None
        return [result for result in map(right, base) if result is not None]

    return project
