"""``@template``: text with ``{{path}}`` placeholders, each placeholder a child node, so a traced evaluation names the empty ones.

A placeholder with no value (missing, or null) is written as "" by default: Segment's
rule, pinned by ``docs/segment-compat.md``. A template that builds a billing key
(``{{event}}.{{properties.region}}``) would then send ``"compute_seconds."``; declared
``{"@template": {"text": "...", "missing": "invalid"}}``, such an event is invalid
instead, with the placeholders named. Either way ``--explain`` lists them.
"""

from __future__ import annotations

import json
from typing import Any

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import Getter, compile_path
from engine.limits import MAX_COMPUTED_RENDER
from engine.lang.mapping.arguments import Compile, _arguments, _is_directive, _option
from engine.lang.mapping.nodes import Computed, Entry, Leaf, Node, Note
from engine.lang.mapping.values import _a
from engine.lang.missing import MISSING
from engine.lang.template import Compiled, Use, compile_parts, join, renderer
from engine.config.yamlsource import join_pointer

MISSING_CHOICES = ("empty", "invalid")
"""What ``missing`` may say: write "" for a placeholder with no value (the default, Segment's rule), or make the event invalid."""


class Template(Node):
    """Literal text and placeholders joined as Segment writes them; with ``invalid``, no placeholder may lack a value."""

    __slots__ = ("_layout", "_invalid", "_limit")

    def __init__(self, source: str, compiled: Compiled, invalid: bool, limit: int | None = None) -> None:
        self._layout = compiled.layout
        self._invalid = invalid
        self._limit = limit
        super().__init__(source, tuple(Leaf(text, get) for text, get in compiled.placeholders))

    def _function(self, *children: Getter) -> Getter:
        layout, limit, invalid = self._layout, self._limit, self._invalid
        if not invalid and limit is None:
            return renderer(layout, children)
        names = tuple(child.source for child in self._children)

        def render(doc: Any) -> str:
            values = [get(doc) for get in children]
            if invalid and (MISSING in values or None in values):
                raise MappingFailure(_unfilled(names, values))
            return join(layout, values, limit, "@template")

        return render

    def _note(self, value: Any, entries: list[Entry]) -> Note:
        missing = [self._children[index].source for index, given, _ in entries if given is MISSING]
        null = [self._children[index].source for index, given, _ in entries if given is None]
        note: Note = {"from": self.source, "found": not missing, "missing": missing}
        if null:
            note["null"] = null
        return note


def _unfilled(names: tuple[str, ...], values: list[Any]) -> str:
    """Why an event is invalid under ``missing: invalid``: every placeholder that had no value, and why."""
    empty = ", ".join(
        f"{{{{{name}}}}} ({'missing' if value is MISSING else 'null'})" for name, value in zip(names, values) if value is MISSING or value is None
    )
    return f'@template has no value for {empty} and declares missing: invalid, so the event is invalid rather than sent with "" in its place'


_TAKES = (
    'a text with placeholders (a string such as "Hi {{traits.name}}"), a directive that gives one, '
    'or an object of text and missing ({text: "{{event}}.{{properties.region}}", missing: invalid})'
)


def _template(raw: Any, pointer: str, compile_value: Compile) -> Node:
    if type(raw) is dict and not _is_directive(raw):
        args = _arguments(raw, pointer, "@template", ("text",), ("missing",))
        invalid = _option(args, "missing", pointer, "@template", str, "empty", MISSING_CHOICES) == "invalid"
        return _text(args["text"], join_pointer(pointer, "text"), compile_value, invalid)
    return _text(raw, pointer, compile_value, False)


def _text(raw: Any, pointer: str, compile_value: Compile, invalid: bool) -> Node:
    """The template itself: a string compiled now, or a directive whose text is compiled per event."""
    options = ", missing invalid" if invalid else ""
    if _is_directive(raw):

        def given(text: str) -> Node:
            return Template(f"@template({json.dumps(text, ensure_ascii=False)}{options})", compile_parts(text, _EVENT_GIVEN), invalid, MAX_COMPUTED_RENDER)

        return Computed("@template", compile_value(raw, pointer), given, options)
    if type(raw) is not str:
        raise ConfigError(f"@template takes {_TAKES}, not {_a(raw)}", pointer)
    return Template(f"@template({json.dumps(raw, ensure_ascii=False)}{options})", compile_parts(raw, _MAPPING, pointer), invalid)


def _event_path(inner: str) -> Getter:
    return compile_path(inner).evaluate


def _single_value(inner: str) -> Getter:
    """A placeholder of a template an event gave: one value only, so the event cannot make the walk explode."""
    path = compile_path(inner)
    if not path.singular:
        raise ConfigError("a template an event gives may only name single values (no .., *, filters or slices)")
    return path.evaluate


_WANTED = "a path such as {{traits.name}}"
_MAPPING = Use("@template", _WANTED, _event_path)
_EVENT_GIVEN = Use("@template", _WANTED, _single_value)
