"""The compiled mapping: one node per mapping value, and one way to evaluate it, traced or not.

A node's evaluation is written once, as ``_function``: given its children's functions it
returns its own. At compile time it is built from the children's plain functions: that
is ``evaluator``, the per-event path, with no test for tracing anywhere in it. A traced
evaluation (``evaluate(doc, trace)``, what ``preview --explain`` shows) builds the same
function from children that record what they gave, then the node writes its note from
that record: which option of ``@coalesce`` gave the value, which ``@if`` branch ran and
why, what a computed path read. Nothing is evaluated a second time to explain it.
"""

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
"""A JSON-able account of where one node's value came from (``{"from": "$.userId", "found": true}``)."""

Trace = list[Note]
"""The recorder a traced evaluation is given: the node evaluated appends its one note."""

Entry = tuple[int, Any, Note]
"""One child evaluated during a traced evaluation: its position among the node's children, the value it gave, its note."""


Step = Callable[[Any], Any]


class Node(ABC):
    """A compiled mapping value; ``source`` names it in messages and notes."""

    __slots__ = ("source", "evaluator", "_children")

    def __init__(self, source: str, children: tuple[Node, ...] = ()) -> None:
        self.source = source
        self._children = children
        self.evaluator: Getter = self._function(*(child.evaluator for child in children))
        """The plain function the per-event path calls: the value for a document, or MISSING."""

    def evaluate(self, doc: Any, trace: Trace | None = None) -> Any:
        """The value for ``doc``, or MISSING; raises only MappingFailure.

        Given a ``trace``, the same evaluation also appends this node's note to it.
        """
        if trace is None:
            return self.evaluator(doc)
        entries: list[Entry] = []
        value = self._traced(entries)(doc)
        trace.append(self._note(value, entries))
        return value

    @abstractmethod
    def _function(self, *children: Getter) -> Getter:
        """This node's evaluation, given its children's (in the order of ``_children``)."""

    def _traced(self, entries: list[Entry]) -> Getter:
        """The same evaluation built from children that record in ``entries`` what they gave."""
        return self._function(*(_recorded(index, child, entries) for index, child in enumerate(self._children)))

    @abstractmethod
    def _note(self, value: Any, entries: list[Entry]) -> Note:
        """Where ``value`` came from, from what the children recorded as they gave it."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.source}>"


def _recorded(index: int, child: Node, entries: list[Entry]) -> Getter:
    """``child``'s traced evaluation, recording its value and note in ``entries``."""

    def evaluate(doc: Any) -> Any:
        trace: Trace = []
        value = child.evaluate(doc, trace)
        entries.append((index, value, trace[0]))
        return value

    return evaluate


def explain(node: Node, doc: Any) -> tuple[Any, Note]:
    """The value ``node`` gives for ``doc`` and the note of where it came from."""
    trace: Trace = []
    value = node.evaluate(doc, trace)
    return value, trace[0]


class Leaf(Node):
    """A value read from the document by one compiled function (path, JMESPath, template)."""

    __slots__ = ("_get",)

    def __init__(self, source: str, get: Getter) -> None:
        self._get = get
        super().__init__(source)

    def _function(self, *children: Getter) -> Getter:
        return self._get

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        return {"from": self.source, "found": value is not MISSING}


class Literal(Leaf):
    """A constant; objects and arrays are copied per event so no event can change another's."""

    __slots__ = ("value",)

    def __init__(self, value: Any, source: str | None = None) -> None:
        self.value = value
        super().__init__(_json_text(value) if source is None else source, _constant(value))

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        return {"from": self.source}


class Apply(Node):
    """A one-argument directive: a step applied to its value; missing stays missing."""

    __slots__ = ("_step",)

    def __init__(self, source: str, part: Node, step: Step) -> None:
        self._step = step
        super().__init__(source, (part,))

    def _function(self, *children: Getter) -> Getter:
        (part,) = children
        step = self._step

        def apply(doc: Any) -> Any:
            value = part(doc)
            return value if value is MISSING else step(value)

        return apply

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        return {"from": self.source, "value": entries[0][2]}


class Combine(Node):
    """Several parts evaluated in order, then joined by one function (a list, @merge)."""

    __slots__ = ("_join",)

    def __init__(self, source: str, parts: Iterable[Node], join: Callable[[list[Any]], Any]) -> None:
        self._join = join
        super().__init__(source, tuple(parts))

    def _function(self, *children: Getter) -> Getter:
        join = self._join
        return lambda doc: join([part(doc) for part in children])

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        return {"from": self.source, "parts": [note for _, _, note in entries]}


class Record(Node):
    """A plain object of mappings: one pass that skips missing values, no intermediate list."""

    __slots__ = ("_keys",)

    def __init__(self, source: str, keys: tuple[str, ...], parts: list[Node]) -> None:
        self._keys = keys
        super().__init__(source, tuple(parts))

    def _function(self, *children: Getter) -> Getter:
        pairs = tuple(zip(self._keys, children))

        def build(doc: Any) -> dict[str, Any]:
            out = {}
            for key, get in pairs:
                value = get(doc)
                if value is not MISSING:
                    out[key] = value
            return out

        return build

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        return {"from": self.source, "parts": {self._keys[index]: note for index, _, note in entries}}


class Coalesce(Node):
    """The first option that is present and not null; later options are not evaluated."""

    __slots__ = ()

    def __init__(self, options: tuple[Node, ...]) -> None:
        super().__init__(f"@coalesce({', '.join(option.source for option in options)})", options)

    def _function(self, *children: Getter) -> Getter:
        def coalesce(doc: Any) -> Any:
            for option in children:
                value = option(doc)
                if value is not MISSING and value is not None:
                    return value
            return MISSING

        return coalesce

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        branch = None if value is MISSING else entries[-1][0]  # the last option tried is the one that gave the value
        return {"from": self.source, "branch": branch, "tried": [note for _, _, note in entries]}


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None


def _not_blank(value: Any) -> bool:
    """Segment's ``blank`` test: missing, null, "", 0 and false are blank."""
    if value is MISSING or value is None or value is False or value == "":
        return False
    return not (type(value) in (int, float) and value == 0)


_THEN = 1
"""The position of ``then`` among an ``@if``'s children (test, then, else)."""


class If(Node):
    """``@if``: one test, then one of two branches (a missing branch gives missing)."""

    __slots__ = ("_condition", "_holds")

    def __init__(self, condition: str, test: Node, then: Node, otherwise: Node) -> None:
        branches = "".join(f", {name} {node.source}" for name, node in (("then", then), ("else", otherwise)) if node is not _NOTHING)
        self._condition = condition
        self._holds = _present if condition == "exists" else _not_blank
        super().__init__(f"@if({condition} {test.source}{branches})", (test, then, otherwise))

    def _function(self, *children: Getter) -> Getter:
        test, then, otherwise = children
        holds = self._holds
        return lambda doc: (then if holds(test(doc)) else otherwise)(doc)

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        (_, tested, test_note), (taken, _, branch_note) = entries
        holds = taken == _THEN
        return {
            "from": self.source,
            "condition": self._condition,
            "test": test_note,
            "taken": "then" if holds else "else",
            "why": f"{self._children[0].source} {_condition_text(self._condition, tested, holds)}",
            "branch": branch_note,
        }


def _condition_text(condition: str, value: Any, holds: bool) -> str:
    if value is MISSING:
        return "is missing"
    if condition == "exists":
        return "exists (present and not null)" if holds else "is null"
    return "is not blank" if holds else f"is blank ({_shown(value)})"


class ArrayPath(Node):
    """``@arrayPath`` with a shape: each item of the array mapped with paths relative to it."""

    __slots__ = ()

    def __init__(self, array: Node, shape: Node) -> None:
        super().__init__(f"@arrayPath({array.source}, {shape.source})", (array, shape))

    def _function(self, *children: Getter) -> Getter:
        array, shape = children

        def each(doc: Any) -> Any:
            items = array(doc)
            if type(items) is dict:
                items = [items]
            elif type(items) is not list:
                return items
            return [None if value is MISSING else value for value in map(shape, items)]

        return each

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        (_, items, array_note), *mapped = entries
        note: Note = {"from": self.source, "array": array_note}
        if type(items) in (dict, list):
            note["items"] = [item_note for _, _, item_note in mapped]
        return note


class Transform(Node):
    """``@transform``: map the event with ``apply``, then map that result with ``mapping``."""

    __slots__ = ()

    def __init__(self, apply: Node, mapping: Node) -> None:
        super().__init__(f"@transform({apply.source} -> {mapping.source})", (apply, mapping))

    def _function(self, *children: Getter) -> Getter:
        apply, mapping = children
        return lambda doc: mapping(apply(doc))

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        (_, _, apply_note), (_, _, mapping_note) = entries
        return {"from": self.source, "apply": apply_note, "mapping": mapping_note}


class Computed(Node):
    """``@path`` or ``@template`` of a directive (Segment's form): the text it gives is compiled per event.

    The text comes from the event, so it is held to ``MAX_COMPUTED_CHARS`` and the node
    it compiles to is cached per text; a text that is not a string, or does not compile,
    makes the event invalid, as it fails the event in Segment. Traced, the compiled node
    is traced too: its note (what it found, a template's missing placeholders) joins this one.
    """

    __slots__ = ("_read",)

    def __init__(self, directive: str, argument: Node, compile_text: Callable[[str], Node], options: str = "") -> None:
        @functools.lru_cache(maxsize=256)
        def compiled(text: str) -> Node:
            try:
                return compile_text(text)
            except ConfigError as error:
                return _failing(f"{directive} of {argument.source} gave {shorten(text)}, which {directive} cannot read: {error.message}")

        def read(text: Any) -> Node:
            if type(text) is not str:
                return _failing(f"{directive} of {argument.source} gave {_a(text)}; it must give a string (as in Segment)")
            if len(text) > MAX_COMPUTED_CHARS:
                return _failing(f"{directive} of {argument.source} gave {len(text):,} characters, over the limit of {MAX_COMPUTED_CHARS:,}")
            return compiled(text)

        self._read = read
        super().__init__(f"{directive}({argument.source}{options})", (argument,))

    def _function(self, *children: Getter) -> Getter:
        (argument,) = children
        read = self._read
        return lambda doc: read(argument(doc)).evaluator(doc)

    def _traced(self, entries: list[Entry]) -> Getter:
        argument = _recorded(0, self._children[0], entries)
        read = self._read
        return lambda doc: _recorded(1, read(argument(doc)), entries)(doc)

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        (_, text, argument_note), (_, _, computed_note) = entries
        note: Note = {"from": self.source, "argument": argument_note, "read": text, "found": value is not MISSING}
        note.update((key, item) for key, item in computed_note.items() if key != "from")
        return note


def _failing(message: str) -> Node:
    """A node that makes every event it reads invalid with ``message``."""

    def fail(doc: Any) -> Any:
        raise MappingFailure(message)

    return Leaf("nothing readable", fail)


def _list_item(value: Any) -> Any:
    return None if value is MISSING else value


_NOTHING = Literal(MISSING, "nothing")
"""The branch an ``@if`` takes when the taken branch is not written."""
