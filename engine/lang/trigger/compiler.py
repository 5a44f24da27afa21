"""The FQL compiler (the tree to closures, Segment's operator semantics) and the public ``compile_trigger``."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.errors import ConfigError, MappingFailure
from engine.lang.jmespath import compile_jmespath, truthy
from engine.lang.jsonpath import walk
from engine.lang.missing import MISSING
from engine.lang.trigger.parser import parse
from engine.lang.trigger.tree import And, Call, Compare, Const, Event, Node, Not, Or, Path, Predicate, Scalar


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


def _jmespath_predicate(spec: dict[str, Any], pointer: str) -> tuple[str, Predicate]:
    expression = spec.get("jmespath")
    if set(spec) != {"jmespath"} or type(expression) is not str:
        raise ConfigError(
            f'a trigger object must be exactly {{jmespath: "<expression>"}}; found the keys {sorted(map(str, spec))}', pointer
        )
    search = compile_jmespath(expression, pointer + "/jmespath")

    def matches(event: Event) -> bool:
        try:
            return truthy(search(event))
        except MappingFailure:  # the expression cannot be evaluated on this event's data: no match
            return False

    return f"jmespath: {expression}", matches


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
