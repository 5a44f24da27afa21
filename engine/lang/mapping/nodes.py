"""The compiled mapping: one node per mapping value; ``evaluate`` is the per-event path, ``explain`` its account."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import Getter, shorten
from engine.limits import MAX_COMPUTED_CHARS
from engine.lang.mapping.values import _a, _constant, _json_text, _shown
from engine.lang.missing import MISSING


Note = dict[str, Any]


Step = Callable[[Any], Any]


class Node(ABC):
    """A compiled mapping value; ``source`` names it in messages."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        self.source = source

    @abstractmethod
    def evaluate(self, doc: Any) -> Any:
        """The value for ``doc``, or MISSING; raises only MappingFailure."""

    @property
    def evaluator(self) -> Callable[[Any], Any]:
        """The plain function the per-event path calls (``evaluate``, or what it would call)."""
        return self.evaluate

    @abstractmethod
    def explain(self, doc: Any) -> tuple[Any, Note]:
        """The same value as ``evaluate`` and a JSON-able note of where it came from."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source}>"


class Leaf(Node):
    """A value read from the document by one compiled function (path, JMESPath, template)."""

    __slots__ = ("_get",)

    def __init__(self, source: str, get: Getter) -> None:
        super().__init__(source)
        self._get = get

    def evaluate(self, doc: Any) -> Any:
        return self._get(doc)

    @property
    def evaluator(self) -> Callable[[Any], Any]:
        return self._get

    def explain(self, doc: Any) -> tuple[Any, Note]:
        value = self._get(doc)
        return value, {"from": self.source, "found": value is not MISSING}


class Literal(Leaf):
    """A constant; objects and arrays are copied per event so no event can change another's."""

    __slots__ = ("value",)

    def __init__(self, value: Any, source: str | None = None) -> None:
        super().__init__(_json_text(value) if source is None else source, _constant(value))
        self.value = value

    def explain(self, doc: Any) -> tuple[Any, Note]:
        return self._get(doc), {"from": self.source}


class Apply(Node):
    """A one-argument directive: a step applied to its value; missing stays missing."""

    __slots__ = ("_part", "_step")

    def __init__(self, source: str, part: Node, step: Step) -> None:
        super().__init__(source)
        self._part = part
        self._step = step

    def evaluate(self, doc: Any) -> Any:
        value = self._part.evaluate(doc)
        return value if value is MISSING else self._step(value)

    def explain(self, doc: Any) -> tuple[Any, Note]:
        value, note = self._part.explain(doc)
        return (value if value is MISSING else self._step(value)), {"from": self.source, "value": note}


class Combine(Node):
    """Several parts evaluated in order, then joined by one function (object, list, @merge)."""

    __slots__ = ("_parts", "_join", "_labels")

    def __init__(self, source: str, parts: Iterable[Node], join: Callable[[list[Any]], Any], labels: tuple[str, ...] = ()) -> None:
        super().__init__(source)
        self._parts = tuple(parts)
        self._join = join
        self._labels = labels

    def evaluate(self, doc: Any) -> Any:
        return self._join([part.evaluate(doc) for part in self._parts])

    def explain(self, doc: Any) -> tuple[Any, Note]:
        values, notes = _explain_all((part, doc) for part in self._parts)
        parts: Any = dict(zip(self._labels, notes)) if self._labels else notes
        return self._join(values), {"from": self.source, "parts": parts}


class Record(Combine):
    """A plain object of mappings: one pass that skips missing values, no intermediate list."""

    __slots__ = ("_build",)

    def __init__(self, source: str, keys: tuple[str, ...], parts: list[Node]) -> None:
        super().__init__(source, parts, lambda values: {k: v for k, v in zip(keys, values) if v is not MISSING}, keys)
        pairs = tuple((key, part.evaluator) for key, part in zip(keys, parts))

        def build(doc: Any) -> dict[str, Any]:
            out = {}
            for key, get in pairs:
                value = get(doc)
                if value is not MISSING:
                    out[key] = value
            return out

        self._build = build

    def evaluate(self, doc: Any) -> Any:
        return self._build(doc)

    @property
    def evaluator(self) -> Callable[[Any], Any]:
        return self._build


class Coalesce(Node):
    """The first option that is present and not null; later options are not evaluated."""

    __slots__ = ("_options",)

    def __init__(self, options: tuple[Node, ...]) -> None:
        super().__init__(f"@coalesce({', '.join(option.source for option in options)})")
        self._options = options

    def evaluate(self, doc: Any) -> Any:
        for option in self._options:
            value = option.evaluate(doc)
            if value is not MISSING and value is not None:
                return value
        return MISSING

    def explain(self, doc: Any) -> tuple[Any, Note]:
        tried = []
        for index, option in enumerate(self._options):
            value, note = option.explain(doc)
            tried.append(note)
            if value is not MISSING and value is not None:
                return value, {"from": self.source, "branch": index, "tried": tried}
        return MISSING, {"from": self.source, "branch": None, "tried": tried}


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None


def _not_blank(value: Any) -> bool:
    """Segment's ``blank`` test: missing, null, "", 0 and false are blank."""
    if value is MISSING or value is None or value is False or value == "":
        return False
    return not (type(value) in (int, float) and value == 0)


class If(Node):
    """``@if``: one test, then one of two branches (a missing branch gives missing)."""

    __slots__ = ("_condition", "_test", "_holds", "_then", "_else")

    def __init__(self, condition: str, test: Node, then: Node, otherwise: Node) -> None:
        branches = "".join(f", {name} {node.source}" for name, node in (("then", then), ("else", otherwise)) if node is not _NOTHING)
        super().__init__(f"@if({condition} {test.source}{branches})")
        self._condition = condition
        self._test = test
        self._holds = _present if condition == "exists" else _not_blank
        self._then = then
        self._else = otherwise

    def evaluate(self, doc: Any) -> Any:
        return (self._then if self._holds(self._test.evaluate(doc)) else self._else).evaluate(doc)

    def explain(self, doc: Any) -> tuple[Any, Note]:
        tested, test_note = self._test.explain(doc)
        holds = self._holds(tested)
        value, branch_note = (self._then if holds else self._else).explain(doc)
        note = {
            "from": self.source,
            "condition": self._condition,
            "test": test_note,
            "taken": "then" if holds else "else",
            "why": f"{self._test.source} {_condition_text(self._condition, tested, holds)}",
            "branch": branch_note,
        }
        return value, note


def _condition_text(condition: str, value: Any, holds: bool) -> str:
    if value is MISSING:
        return "is missing"
    if condition == "exists":
        return "exists (present and not null)" if holds else "is null"
    return "is not blank" if holds else f"is blank ({_shown(value)})"


class ArrayPath(Node):
    """``@arrayPath`` with a shape: each item of the array mapped with paths relative to it."""

    __slots__ = ("_array", "_shape")

    def __init__(self, array: Node, shape: Node) -> None:
        super().__init__(f"@arrayPath({array.source}, {shape.source})")
        self._array = array
        self._shape = shape

    def evaluate(self, doc: Any) -> Any:
        items = self._array.evaluate(doc)
        if type(items) is dict:
            items = [items]
        elif type(items) is not list:
            return items
        shape = self._shape.evaluator
        return [None if value is MISSING else value for value in map(shape, items)]

    def explain(self, doc: Any) -> tuple[Any, Note]:
        items, array_note = self._array.explain(doc)
        note: Note = {"from": self.source, "array": array_note}
        if type(items) is dict:
            items = [items]
        elif type(items) is not list:
            return items, note
        values, note["items"] = _explain_all((self._shape, item) for item in items)
        return [_list_item(value) for value in values], note


class Transform(Node):
    """``@transform``: map the event with ``apply``, then map that result with ``mapping``."""

    __slots__ = ("_apply", "_mapping")

    def __init__(self, apply: Node, mapping: Node) -> None:
        super().__init__(f"@transform({apply.source} -> {mapping.source})")
        self._apply = apply
        self._mapping = mapping

    def evaluate(self, doc: Any) -> Any:
        return self._mapping.evaluate(self._apply.evaluate(doc))

    def explain(self, doc: Any) -> tuple[Any, Note]:
        middle, apply_note = self._apply.explain(doc)
        value, mapping_note = self._mapping.explain(middle)
        return value, {"from": self.source, "apply": apply_note, "mapping": mapping_note}


class Computed(Node):
    """``@path`` or ``@template`` of a directive (Segment's form): the text it gives is compiled per event.

    The text comes from the event, so it is held to ``MAX_COMPUTED_CHARS`` and what it
    compiles to is cached per text; a text that is not a string, or does not compile,
    makes the event invalid, as it fails the event in Segment.
    """

    __slots__ = ("_argument", "_read")

    def __init__(self, directive: str, argument: Node, compile_text: Callable[[str], Getter]) -> None:
        super().__init__(f"{directive}({argument.source})")
        self._argument = argument

        @functools.lru_cache(maxsize=256)
        def compiled(text: str) -> Getter:
            try:
                return compile_text(text)
            except ConfigError as error:
                return _failing(f"{directive} of {argument.source} gave {shorten(text)}, which {directive} cannot read: {error.message}")

        def read(text: Any) -> Getter:
            if type(text) is not str:
                return _failing(f"{directive} of {argument.source} gave {_a(text)}; it must give a string (as in Segment)")
            if len(text) > MAX_COMPUTED_CHARS:
                return _failing(f"{directive} of {argument.source} gave {len(text):,} characters, over the limit of {MAX_COMPUTED_CHARS:,}")
            return compiled(text)

        self._read = read

    def evaluate(self, doc: Any) -> Any:
        return self._read(self._argument.evaluate(doc))(doc)

    def explain(self, doc: Any) -> tuple[Any, Note]:
        text, note = self._argument.explain(doc)
        value = self._read(text)(doc)
        return value, {"from": self.source, "argument": note, "read": text, "found": value is not MISSING}


def _failing(message: str) -> Getter:
    def fail(doc: Any) -> Any:
        raise MappingFailure(message)

    return fail


def _explain_all(work: Iterable[tuple[Node, Any]]) -> tuple[list[Any], list[Note]]:
    """Explain each (node, document) pair: the values and the notes, in order."""
    pairs = [node.explain(doc) for node, doc in work]
    return [value for value, _ in pairs], [note for _, note in pairs]


def _list_item(value: Any) -> Any:
    return None if value is MISSING else value


_NOTHING = Literal(MISSING, "nothing")
"""The branch an ``@if`` takes when the taken branch is not written."""
