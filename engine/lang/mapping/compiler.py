"""Compiling a mapping value: its depth bounded, then each part to a node, each directive by its own compiler."""

from __future__ import annotations

from typing import Any, Callable

from engine.errors import ConfigError
from engine.limits import MAX_MAPPING_DEPTH
from engine.lang.mapping import structure, text
from engine.lang.mapping.arguments import Compile
from engine.lang.mapping.nodes import Combine, Literal, Node, Record, _list_item
from engine.lang.mapping.structure import _path
from engine.lang.mapping.values import _check_json, _check_keys, _did_you_mean
from engine.config.yamlsource import join_pointer

DIRECTIVES: dict[str, Callable[[Any, str, Compile], Node]] = {**structure.DIRECTIVES, **text.DIRECTIVES}
"""Every directive by name, with the function that compiles its argument."""


def compile_mapping(value: Any, pointer: str = "") -> Node:
    """Compile a mapping value (as loaded from YAML/JSON); ConfigError names the bad node."""
    _check_depth(value, pointer)
    return _compile(value, pointer)


def _check_depth(value: Any, pointer: str) -> None:
    """Refuse a value nesting past MAX_MAPPING_DEPTH before the recursive compiler walks it.

    Objects, lists and directives are a level each (a directive's own argument object or
    list is part of it); the bound keeps the compiler and every payload's encoding within
    their stacks. Iterative, so any input depth is safe to measure.
    """
    stack: list[tuple[Any, str, int]] = [(value, pointer, 1)]
    while stack:
        node, where, depth = stack.pop()
        kind = type(node)
        if kind is not dict and kind is not list:
            continue
        if depth > MAX_MAPPING_DEPTH:
            raise ConfigError(
                f"this mapping value nests deeper than {MAX_MAPPING_DEPTH} levels of objects, lists and directives, "
                "the limit for one mapping value; flatten it, or build the deep part in the event and read it with one path",
                where,
            )
        for key, child in node.items() if kind is dict else enumerate(node):
            inside = join_pointer(where, key)
            if kind is dict and type(key) is str and key.startswith("@") and type(child) in (dict, list):
                arguments = child.items() if type(child) is dict else enumerate(child)
                stack.extend((item, join_pointer(inside, name), depth + 1) for name, item in arguments)
            else:
                stack.append((child, inside, depth + 1))


def _compile(value: Any, pointer: str) -> Node:
    kind = type(value)
    if kind is str:
        return _path(value, pointer) if value.startswith("$") else Literal(value)
    if kind is dict:
        _check_keys(value, pointer)
        if any(key.startswith("@") for key in value):
            return _directive(value, pointer)
        return _object(value, pointer)
    if kind is list:
        return _list([_compile(item, join_pointer(pointer, index)) for index, item in enumerate(value)])
    _check_json(value, pointer)
    return Literal(value)


def _object(value: dict[str, Any], pointer: str) -> Node:
    keys = tuple(value)
    parts = [_compile(value[key], join_pointer(pointer, key)) for key in keys]
    constants = [part.value for part in parts if isinstance(part, Literal)]
    if len(constants) == len(parts):
        return Literal(dict(zip(keys, constants)))

    source = "{" + ", ".join(f"{key}: {part.source}" for key, part in zip(keys, parts)) + "}"
    return Record(source, keys, parts)


def _list(parts: list[Node]) -> Node:
    constants = [part.value for part in parts if isinstance(part, Literal)]
    if len(constants) == len(parts):
        return Literal(constants)

    def build(values: list[Any]) -> list[Any]:
        return [_list_item(item) for item in values]

    return Combine("[" + ", ".join(part.source for part in parts) + "]", parts, build)


def _directive(value: dict[str, Any], pointer: str) -> Node:
    names = [key for key in value if key.startswith("@")]
    if len(names) > 1:
        raise ConfigError(
            f"a directive object has exactly one @-key, this one has {', '.join(names)}; nest one inside the other",
            join_pointer(pointer, names[1]),
        )
    name = names[0]
    compiler = DIRECTIVES.get(name)
    if compiler is None:
        raise ConfigError(f"unknown directive {name}{_did_you_mean(name, DIRECTIVES)} (known: {', '.join(DIRECTIVES)})", join_pointer(pointer, name))
    extra = [key for key in value if key != name and key != "_metadata"]
    if extra:
        raise ConfigError(f"{name} takes no sibling keys but has {extra[0]!r}; its arguments go inside {name}", join_pointer(pointer, extra[0]))
    return compiler(value[name], join_pointer(pointer, name), _compile)
