"""The directives that find and arrange values: paths, literals, choices, merges, arrays, JMESPath, Liquid."""

from __future__ import annotations

import json
from typing import Any, Callable

from engine.errors import ConfigError, MappingFailure
from engine.lang.jmespath import compile_jmespath
from engine.lang.jsonpath import Path, compile_path, compile_segment_path, segment_key, walk
from engine.lang.liquid import compile_liquid
from engine.lang.mapping.arguments import Compile, _argument, _arguments, _is_directive, _option, _string_argument
from engine.lang.mapping.nodes import _NOTHING, ArrayPath, Apply, Coalesce, Combine, Computed, If, Leaf, Literal, Node, Transform
from engine.lang.mapping.values import _a, _check_json, _json_text
from engine.lang.missing import MISSING
from engine.config.yamlsource import join_pointer


def _path(text: str, pointer: str, read: Callable[[str, str], Path] = compile_path) -> Node:
    try:
        return Leaf(text, read(text, pointer).evaluate)
    except ConfigError as error:
        if read is compile_path and _segment_reads(text):
            error.message += f'; Segment\'s dotted paths are read in {{"@path": {json.dumps(text, ensure_ascii=False)}}}'
        raise


def _segment_reads(text: str) -> bool:
    try:
        compile_segment_path(text)
    except ConfigError:
        return False
    return True


def _path_directive(raw: Any, pointer: str, compile_value: Compile) -> Node:
    if _is_directive(raw):
        return Computed("@path", compile_value(raw, pointer), _computed_path)
    if type(raw) is list and all(type(name) is str for name in raw):  # Segment's array form: the keys themselves
        return Leaf(f"@path({_json_text(raw)})", walk(tuple(segment_key(name) for name in raw)))
    if type(raw) is not str:
        raise ConfigError(
            f'@path takes a path (a string such as $.properties.plan), a list of keys (["properties", "plan"]) '
            f"or a directive that gives a path, not {_a(raw)}",
            pointer,
        )
    return _path(raw, pointer, compile_segment_path)


def _computed_path(text: str) -> Node:
    """A path an event gave: one value only, so the event cannot make the walk explode (``$..*..*``)."""
    path = compile_segment_path(text)
    if not path.singular:
        raise ConfigError("a path an event gives must name one value (names and indexes; no .., *, filters or slices)")
    return Leaf(text, path.evaluate)


def _literal(raw: Any, pointer: str, compile_value: Compile) -> Node:
    _check_json(raw, pointer)
    return Literal(raw, f"@literal({_json_text(raw)})")


def _coalesce(raw: Any, pointer: str, compile_value: Compile) -> Node:
    if type(raw) is not list or not raw:
        raise ConfigError(f"@coalesce takes a non-empty list of mapping values, not {_a(raw)}", pointer)
    return Coalesce(tuple(compile_value(item, join_pointer(pointer, index)) for index, item in enumerate(raw)))


def _if(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@if", (), ("exists", "blank", "then", "else"))
    conditions = [key for key in ("exists", "blank") if key in args]
    if len(conditions) != 1:
        raise ConfigError("@if needs exactly one condition, exists or blank", pointer)
    condition = conditions[0]
    then, otherwise = (_argument(args, key, pointer, compile_value) if key in args else _NOTHING for key in ("then", "else"))
    return If(condition, _argument(args, condition, pointer, compile_value), then, otherwise)


def _merge(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@merge", ("objects",), ("direction",))
    direction = _option(args, "direction", pointer, "@merge", str, "right", ("left", "right"))
    entries = args["objects"]
    if type(entries) is not list:
        raise ConfigError(f"@merge objects must be a list of mapping values, not {_a(entries)}", join_pointer(pointer, "objects"))
    parts = [compile_value(entry, join_pointer(pointer, "objects", index)) for index, entry in enumerate(entries)]
    for index, part in enumerate(parts):
        if isinstance(part, Literal) and type(part.value) not in (dict, type(None)):
            raise ConfigError(f"@merge can only merge objects, but entry {index} is {_a(part.value)}", join_pointer(pointer, "objects", index))
    # Later entries win: for `left`, walk the entries backwards so earlier ones win.
    order = tuple(range(len(parts)))[:: -1 if direction == "left" else 1]

    def merge(values: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for index in order:
            value = values[index]
            if value is MISSING or value is None:
                continue
            if type(value) is not dict:
                raise MappingFailure(f"@merge can only merge objects, but objects[{index}] ({parts[index].source}) gave {_a(value)}")
            out.update(value)
        return out

    return Combine(f"@merge({direction}, {', '.join(part.source for part in parts)})", parts, merge)


def _array_path(raw: Any, pointer: str, compile_value: Compile) -> Node:
    if type(raw) is not list or len(raw) not in (1, 2):
        raise ConfigError(f"@arrayPath takes [path] or [path, item shape], not {_a(raw)}", pointer)
    first = join_pointer(pointer, 0)
    array = _path_directive(raw[0], first, compile_value) if type(raw[0]) is str else compile_value(raw[0], first)
    if len(raw) == 1:
        return array
    if type(raw[1]) is not dict or not raw[1]:
        raise ConfigError(f"@arrayPath item shape must be a non-empty object, not {_a(raw[1])}; leave it out to keep the array as it is", join_pointer(pointer, 1))
    return ArrayPath(array, compile_value(raw[1], join_pointer(pointer, 1)))


def _transform(raw: Any, pointer: str, compile_value: Compile) -> Node:
    args = _arguments(raw, pointer, "@transform", ("apply", "mapping"))
    return Transform(_argument(args, "apply", pointer, compile_value), _argument(args, "mapping", pointer, compile_value))


def _exclude_when_null(raw: Any, pointer: str, compile_value: Compile) -> Node:
    value = compile_value(raw, pointer)
    return Apply(f"@excludeWhenNull({value.source})", value, _without_nulls)


def _without_nulls(value: Any) -> Any:
    """Null becomes missing; nulls inside objects and arrays are dropped, at any depth."""
    if value is None:
        return MISSING
    if type(value) is dict:
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if type(value) is list:
        return [_without_nulls(item) for item in value if item is not None]
    return value


def _jmespath(raw: Any, pointer: str, compile_value: Compile) -> Node:
    expression = _string_argument(raw, pointer, "@jmespath", "a JMESPath expression")
    search = compile_jmespath(expression, pointer)
    return Leaf(f"@jmespath({expression})", lambda doc: MISSING if (result := search(doc)) is None else result)


def _liquid(raw: Any, pointer: str, compile_value: Compile) -> Node:
    text = _string_argument(raw, pointer, "@liquid", 'a Liquid template such as "{{ properties.plan | upcase }}"')
    return Leaf(f"@liquid({json.dumps(text, ensure_ascii=False)})", compile_liquid(text, pointer))


DIRECTIVES: dict[str, Callable[[Any, str, Compile], Node]] = {
    "@path": _path_directive,
    "@jmespath": _jmespath,
    "@liquid": _liquid,
    "@literal": _literal,
    "@coalesce": _coalesce,
    "@if": _if,
    "@merge": _merge,
    "@arrayPath": _array_path,
    "@transform": _transform,
    "@excludeWhenNull": _exclude_when_null,
}
