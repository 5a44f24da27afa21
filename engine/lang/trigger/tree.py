"""The parse tree of FQL: a small immutable tree, what the parser makes and the compiler reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from engine.lang.jsonpath import Key


Event = dict[str, Any]


Predicate = Callable[[Event], bool]


Scalar = str | int | float | bool | None


Path = tuple[Key, ...]


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
