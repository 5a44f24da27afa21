"""The mapping language (SPEC section 5): a mapping value compiled once into nodes.

``compile_mapping`` reads a mapping value (a path string, a directive object, a plain
object or list, a literal) and checks everything it can at load time; what it returns
evaluates one event with plain attribute lookups and calls, nothing re-parsed.

Where the spec is silent:

- In a list, an item that maps to missing becomes ``null``: positions in a list carry
  meaning, and Segment's payloads show ``null`` there too (JSON has no undefined).
  Wrap the list in ``@excludeWhenNull`` to drop them.
- Directive *options* (``operator``, ``mode``, ``pattern``, ``separator``, ``from``, ...)
  are literals checked at load time; ``value``, ``objects``, ``@coalesce`` items, the
  ``@if`` test and branches, ``@arrayPath`` and ``@transform`` parts are mapping values.
- ``@merge`` without ``direction`` merges ``right`` (later wins); merging no entries,
  or only missing/null ones, gives ``{}``. ``@merge`` and ``@flatten`` copy shallowly.
- ``@if`` ``blank`` is true (``then``) for a value that is present and not null, "",
  0 or false; empty arrays and objects are not blank.
- ``@replace`` makes null ``""`` (Segment's result); it and ``@case`` pass arrays and
  objects through unchanged (Segment's ``@replace`` would make them ``""``), ``@case``
  passes null too; the replacement is literal text (no ``$1`` / ``$&`` substitution).
- ``@path`` and ``@template`` take a directive as their argument (Segment's form): the
  text it gives is compiled per event, cached (``Computed``). ``docs/segment-compat.md``
  lists every form beside Segment's reading of it.
- ``@json`` decode passes non-strings (and text that is not JSON) through unchanged;
  NaN/Infinity do not parse; what it decodes is held to the event limits (64 levels,
  64-bit integers), past them the event is invalid.
- ``@flatten`` of a scalar gives the scalar; a top-level array is flattened to index
  keys unless ``omitArrays``.
- ``@arrayPath`` without an item shape is its path; a shape must be a non-empty object.
- Numbers become text as JSON writes them, with integral floats written without
  ``.0`` (``42.0`` -> ``"42"``, as JavaScript and the fields module do).
- ``@template`` placeholders may have spaces inside the braces (``{{ traits.name }}``);
  an unclosed ``{{`` or an empty placeholder is a load-time error, not literal text.
- ``@timestamp`` truncates to milliseconds (never rounds into the next second);
  ``iso`` reads what ``datetime.fromisoformat`` reads (ISO 8601, incl. ``Z``).
- ``@jmespath`` function names, argument counts and zero slice steps are checked at
  load time (the library would only fail per event); any other error it raises on an
  event makes that event invalid.
- A mapping value nests at most ``MAX_MAPPING_DEPTH`` levels (objects, lists and
  directives), and a literal integer must fit in 64 bits: a payload must encode.
- A key starting with ``@`` always marks a directive, so a plain output key cannot
  start with ``@``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Callable, Iterable, cast

import jmespath
import jmespath.exceptions
import jmespath.functions

from engine.errors import ConfigError, MappingFailure
from engine.jsonpath import Getter, Path, compile_path, compile_segment_path, expression_problem, shorten
from engine.liquid import compile_liquid
from engine.limits import MAX_COMPUTED_CHARS, MAX_DEPTH, MAX_INT, MAX_MAPPING_DEPTH, MIN_INT, depth_problem
from engine.missing import MISSING
from engine.yamlsource import join_pointer

Note = dict[str, Any]
Step = Callable[[Any], Any]


# --- nodes ---------------------------------------------------------------------------------


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


# --- compiling -----------------------------------------------------------------------------


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


def _path(text: str, pointer: str, read: Callable[[str, str], Path] = compile_path) -> Node:
    return Leaf(text, read(text, pointer).evaluate)


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
    compiler = _DIRECTIVES.get(name)
    if compiler is None:
        raise ConfigError(f"unknown directive {name}{_did_you_mean(name, _DIRECTIVES)} (known: {', '.join(_DIRECTIVES)})", join_pointer(pointer, name))
    extra = [key for key in value if key != name and key != "_metadata"]
    if extra:
        raise ConfigError(f"{name} takes no sibling keys but has {extra[0]!r}; its arguments go inside {name}", join_pointer(pointer, extra[0]))
    return compiler(value[name], join_pointer(pointer, name))


# --- directive arguments -------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", bool: "true or false"}


def _arguments(raw: Any, pointer: str, directive: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The directive's argument object, checked for unknown and missing keys."""
    allowed = required + optional
    if type(raw) is not dict:
        raise ConfigError(f"{directive} takes an object with {', '.join(allowed)}, not {_a(raw)}", pointer)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{directive} has no argument {key!r}{_did_you_mean(key, allowed)} (it takes {', '.join(allowed)})", join_pointer(pointer, key))
    for key in required:
        if key not in raw:
            raise ConfigError(f"{directive} needs {key!r} (it takes {', '.join(allowed)})", pointer)
    return raw


def _option(args: dict[str, Any], key: str, pointer: str, directive: str, kind: type, default: Any, choices: tuple[str, ...] = ()) -> Any:
    """A literal option: its type (and allowed values) checked now, at load time."""
    if key not in args:
        return default
    value = args[key]
    where = join_pointer(pointer, key)
    if type(value) is not kind:
        raise ConfigError(f"{directive} {key} must be {_TYPE_NAMES[kind]}, not {_a(value)}", where)
    if choices and value not in choices:
        raise ConfigError(f"{directive} {key} must be {' or '.join(json.dumps(c) for c in choices)}, not {json.dumps(value)}", where)
    return value


def _argument(args: dict[str, Any], key: str, pointer: str) -> Node:
    return _compile(args[key], join_pointer(pointer, key))


def _string_argument(raw: Any, pointer: str, directive: str, what: str) -> str:
    if type(raw) is not str:
        raise ConfigError(f"{directive} takes {what} (a string), not {_a(raw)}", pointer)
    return raw


# --- the directives ------------------------------------------------------------------------


def _path_directive(raw: Any, pointer: str) -> Node:
    if _is_directive(raw):
        return Computed("@path", _compile(raw, pointer), lambda text: compile_segment_path(text).evaluate)
    return _path(_string_argument(raw, pointer, "@path", _PATH_ARGUMENT), pointer, compile_segment_path)


_PATH_ARGUMENT = "a path such as $.properties.plan or properties.plan, or a directive that gives one"


def _is_directive(raw: Any) -> bool:
    return type(raw) is dict and any(type(key) is str and key.startswith("@") for key in raw)


def _literal(raw: Any, pointer: str) -> Node:
    _check_json(raw, pointer)
    return Literal(raw, f"@literal({_json_text(raw)})")


def _coalesce(raw: Any, pointer: str) -> Node:
    if type(raw) is not list or not raw:
        raise ConfigError(f"@coalesce takes a non-empty list of mapping values, not {_a(raw)}", pointer)
    return Coalesce(tuple(_compile(item, join_pointer(pointer, index)) for index, item in enumerate(raw)))


def _if(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@if", (), ("exists", "blank", "then", "else"))
    conditions = [key for key in ("exists", "blank") if key in args]
    if len(conditions) != 1:
        raise ConfigError("@if needs exactly one condition, exists or blank", pointer)
    condition = conditions[0]
    then, otherwise = (_argument(args, key, pointer) if key in args else _NOTHING for key in ("then", "else"))
    return If(condition, _argument(args, condition, pointer), then, otherwise)


def _case(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@case", ("operator", "value"))
    operator = _option(args, "operator", pointer, "@case", str, None, ("lower", "upper"))
    change = str.lower if operator == "lower" else str.upper

    def step(value: Any) -> Any:
        return change(value) if type(value) is str else value

    value = _argument(args, "value", pointer)
    return Apply(f"@case({operator}, {value.source})", value, step)


def _replace(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@replace", ("pattern", "value"), ("replacement", "pattern2", "replacement2", "ignorecase", "global"))
    ignorecase = _option(args, "ignorecase", pointer, "@replace", bool, False)
    everywhere = _option(args, "global", pointer, "@replace", bool, True)
    pairs = [(_option(args, "pattern", pointer, "@replace", str, None), _option(args, "replacement", pointer, "@replace", str, ""))]
    if "pattern2" in args:
        pairs.append((_option(args, "pattern2", pointer, "@replace", str, None), _option(args, "replacement2", pointer, "@replace", str, "")))
    elif "replacement2" in args:
        raise ConfigError("@replace has replacement2 but no pattern2 to replace", join_pointer(pointer, "replacement2"))
    for key, (pattern, _) in zip(("pattern", "pattern2"), pairs):
        if pattern == "":
            raise ConfigError(f"@replace {key} is empty; give the text to replace", join_pointer(pointer, key))
    steps = tuple(_replacer(pattern, replacement, ignorecase, everywhere) for pattern, replacement in pairs)

    def step(value: Any) -> Any:
        if value is None:
            return ""  # Segment's result for null
        if type(value) in (bool, int, float):
            value = _scalar_text(value)
        elif type(value) is not str:
            return value
        for replace in steps:
            value = replace(value)
        return value

    value = _argument(args, "value", pointer)
    shown = ", ".join(f"{json.dumps(p, ensure_ascii=False)} -> {json.dumps(r, ensure_ascii=False)}" for p, r in pairs)
    flags = (", ignorecase" if ignorecase else "") + ("" if everywhere else ", first only")
    return Apply(f"@replace({value.source}, {shown}{flags})", value, step)


def _replacer(pattern: str, replacement: str, ignorecase: bool, everywhere: bool) -> Callable[[str], str]:
    """Literal (not regex) replacement of ``pattern``, every occurrence or the first."""
    if ignorecase:
        regex = re.compile(re.escape(pattern), re.IGNORECASE)
        count = 0 if everywhere else 1
        return lambda text: regex.sub(lambda _: replacement, text, count=count)
    limit = -1 if everywhere else 1
    return lambda text: text.replace(pattern, replacement, limit)


def _json_directive(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@json", ("mode", "value"))
    mode = _option(args, "mode", pointer, "@json", str, None, ("encode", "decode"))
    value = _argument(args, "value", pointer)
    return Apply(f"@json({mode}, {value.source})", value, _compact_json if mode == "encode" else _decoded)


def _decoded(value: Any) -> Any:
    """The parsed JSON text, or the value itself when it is not a string of JSON.

    The text comes from the event, so what it decodes to is held to the event limits
    (depth, 64-bit integers): a payload must still encode, and every later walk is safe.
    """
    if type(value) is not str:
        return value
    try:
        decoded = json.loads(value, parse_constant=_no_constant)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        raise MappingFailure(f"@json decode: the text nests deeper than {MAX_DEPTH} levels of objects and arrays (the limit)") from None
    except ValueError:  # past Python's 4,300 digits for one integer
        raise MappingFailure("@json decode: the text holds an integer outside the 64-bit range; send it as a string") from None
    problem = depth_problem(decoded)
    if problem is not None:
        raise MappingFailure(f"@json decode: the text {problem}")
    return decoded


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _flatten(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@flatten", ("value",), ("separator", "omitArrays"))
    separator = _option(args, "separator", pointer, "@flatten", str, ".")
    omit_arrays = _option(args, "omitArrays", pointer, "@flatten", bool, False)
    nested = (dict,) if omit_arrays else (dict, list)

    def into(out: dict[str, Any], prefix: str | None, value: Any) -> None:
        for key, item in value.items() if type(value) is dict else enumerate(value):
            name = str(key) if prefix is None else f"{prefix}{separator}{key}"
            if type(item) in nested:
                into(out, name, item)
            else:
                out[name] = item

    def step(value: Any) -> Any:
        if type(value) not in nested:
            return value
        out: dict[str, Any] = {}
        into(out, None, value)
        return out

    value = _argument(args, "value", pointer)
    return Apply(f"@flatten({value.source}, {json.dumps(separator)}{', omitArrays' if omit_arrays else ''})", value, step)


def _merge(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@merge", ("objects",), ("direction",))
    direction = _option(args, "direction", pointer, "@merge", str, "right", ("left", "right"))
    entries = args["objects"]
    if type(entries) is not list:
        raise ConfigError(f"@merge objects must be a list of mapping values, not {_a(entries)}", join_pointer(pointer, "objects"))
    parts = [_compile(entry, join_pointer(pointer, "objects", index)) for index, entry in enumerate(entries)]
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


def _array_path(raw: Any, pointer: str) -> Node:
    if type(raw) is not list or len(raw) not in (1, 2):
        raise ConfigError(f"@arrayPath takes [path] or [path, item shape], not {_a(raw)}", pointer)
    first = join_pointer(pointer, 0)
    array = _path_directive(raw[0], first) if type(raw[0]) is str else _compile(raw[0], first)
    if len(raw) == 1:
        return array
    if type(raw[1]) is not dict or not raw[1]:
        raise ConfigError(f"@arrayPath item shape must be a non-empty object, not {_a(raw[1])}; leave it out to keep the array as it is", join_pointer(pointer, 1))
    return ArrayPath(array, _compile(raw[1], join_pointer(pointer, 1)))


def _transform(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@transform", ("apply", "mapping"))
    return Transform(_argument(args, "apply", pointer), _argument(args, "mapping", pointer))


def _exclude_when_null(raw: Any, pointer: str) -> Node:
    value = _compile(raw, pointer)
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


def _jmespath(raw: Any, pointer: str) -> Node:
    expression = _string_argument(raw, pointer, "@jmespath", "a JMESPath expression")
    problem = expression_problem(expression, jmespath=True)
    if problem is not None:
        raise ConfigError(f"invalid JMESPath {shorten(expression)} at column {problem[1] + 1}: {problem[0]}", pointer, problem[1])
    try:
        parsed = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as error:
        offset = getattr(error, "lex_position", None) or 0
        raise ConfigError(f"invalid JMESPath {expression!r} at column {offset + 1}: {_jmespath_reason(error)}", pointer, offset) from None
    tree = cast(dict[str, Any], parsed.parsed)  # the library's parse tree: plain dicts
    _check_functions(tree, expression, pointer)
    source = f"@jmespath({expression})"
    direct = _jmespath_closure(tree)
    if direct is not None:
        return Leaf(source, lambda doc: MISSING if (result := direct(doc)) is None else result)

    def search(doc: Any) -> Any:
        try:
            result = parsed.search(doc)
        except Exception as error:  # noqa: BLE001 - jmespath is not total on JSON: a filter comparing "" > 1 raises TypeError
            raise MappingFailure(f"@jmespath {expression!r} failed on this event: {error}") from None
        return MISSING if result is None else result

    return Leaf(source, search)


def _jmespath_closure(node: dict[str, Any]) -> Callable[[Any], Any] | None:
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
    left, right = (_jmespath_closure(child) for child in node["children"])
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


def _jmespath_reason(error: jmespath.exceptions.JMESPathError) -> str:
    if isinstance(error, jmespath.exceptions.EmptyExpressionError):
        return "the expression is empty"
    if isinstance(error, jmespath.exceptions.IncompleteExpressionError):
        return "the expression ends too early"
    if isinstance(error, jmespath.exceptions.LexerError):
        return str(error.message)
    return str(getattr(error, "msg", error))


_JMESPATH_FUNCTIONS: dict[str, Any] = jmespath.functions.Functions().FUNCTION_TABLE
_ZERO_STEP = re.compile(r":[^:\[\]]*:\s*-?0+\s*\]")


def _check_functions(tree: dict[str, Any], expression: str, pointer: str) -> None:
    """Unknown functions, wrong argument counts and zero slice steps, which jmespath only finds per event."""
    stack = [tree]
    while stack:
        node = stack.pop()
        stack.extend(child for child in node.get("children", ()) if type(child) is dict)
        if node["type"] == "slice" and node["children"][2] == 0:
            step = _ZERO_STEP.search(expression)
            offset = step.start() if step else 0
            raise ConfigError(
                f"invalid JMESPath {shorten(expression)} at column {offset + 1}: a slice step cannot be zero; "
                "leave it out ([start:stop]) or write 1 or -1",
                pointer,
                offset,
            )
        if node["type"] != "function_expression":
            continue
        name, count = node["value"], len(node["children"])
        call = re.search(rf"\b{re.escape(name)}\s*\(", expression)
        offset = call.start() if call else 0
        where = f"invalid JMESPath {expression!r} at column {offset + 1}:"
        function = _JMESPATH_FUNCTIONS.get(name)
        if function is None:
            raise ConfigError(f"{where} unknown function {name}(){_did_you_mean(name, _JMESPATH_FUNCTIONS)}", pointer, offset)
        signature = function["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if count < len(signature) or (count > len(signature) and not variadic):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise ConfigError(f"{where} {name}() takes {wanted} argument(s), not {count}", pointer, offset)


def _liquid(raw: Any, pointer: str) -> Node:
    text = _string_argument(raw, pointer, "@liquid", 'a Liquid template such as "{{ properties.plan | upcase }}"')
    return Leaf(f"@liquid({json.dumps(text, ensure_ascii=False)})", compile_liquid(text, pointer))


def _template(raw: Any, pointer: str) -> Node:
    if _is_directive(raw):
        return Computed("@template", _compile(raw, pointer), _template_renderer)
    text = _string_argument(raw, pointer, "@template", 'a text with placeholders such as "Hi {{traits.name}}", or a directive that gives one')
    return Leaf(f"@template({json.dumps(text, ensure_ascii=False)})", _template_renderer(text, pointer))


def _template_renderer(text: str, pointer: str = "") -> Getter:
    """The text's placeholders compiled once; the function renders one document."""
    parts: list[str | Getter] = []
    at = 0
    while (start := text.find("{{", at)) >= 0:
        if start > at:
            parts.append(text[at:start])
        close = "}}}" if text.startswith("{{{", start) else "}}"
        inner_start = start + len(close)
        end = text.find(close, inner_start)
        if end < 0:
            opening = "{" * len(close)
            raise ConfigError(f"@template has an unclosed {opening} at column {start + 1}; close it with {close}", pointer, start)
        inner = text[inner_start:end]
        if not inner.strip():
            raise ConfigError(f"@template has an empty placeholder at column {start + 1}; write a path such as {{{{traits.name}}}}", pointer, start)
        lead = inner_start + len(inner) - len(inner.lstrip())
        try:
            parts.append(compile_path(inner.strip()).evaluate)
        except ConfigError as error:
            raise ConfigError(f"@template placeholder at column {start + 1}: {error.message}", pointer, lead + (error.offset or 0)) from None
        at = end + len(close)
    if at < len(text):
        parts.append(text[at:])
    frozen = tuple(parts)

    def render(doc: Any) -> str:
        out = []
        for part in frozen:
            if type(part) is str:
                out.append(part)
            else:
                value = part(doc)  # type: ignore[operator]
                out.append(value if type(value) is str else _rendered(value))
        return "".join(out)

    return render


def _rendered(value: Any) -> str:
    """A value as template text: missing/null as "", arrays joined with commas, objects as JSON."""
    kind = type(value)
    if kind is str:
        return value
    if value is MISSING or value is None:
        return ""
    if kind is list:
        return ",".join(_rendered(item) for item in value)
    if kind is dict:
        return _compact_json(value)
    return _scalar_text(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_MILLIS_PER = {"unix_s": 1000, "unix_ms": 1}


def _timestamp(raw: Any, pointer: str) -> Node:
    args = _arguments(raw, pointer, "@timestamp", ("value", "from"))
    unit = _option(args, "from", pointer, "@timestamp", str, None, ("iso", "unix_s", "unix_ms"))
    value = _argument(args, "value", pointer)
    step = _from_iso if unit == "iso" else _from_unix(unit)
    return Apply(f"@timestamp({value.source}, from {unit})", value, step)


def _from_iso(value: Any) -> str:
    if type(value) is str:
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # the operator asked for this conversion: no offset means UTC
            return _canonical(moment.astimezone(UTC))
        except (ValueError, OverflowError):
            pass
    raise MappingFailure(f"@timestamp cannot read {_a(value)} as an ISO 8601 date-time; expected text such as 2026-11-26T10:00:00Z")


def _from_unix(unit: str) -> Step:
    scale = _MILLIS_PER[unit]
    example = "1764151200" if unit == "unix_s" else "1764151200000"

    def step(value: Any) -> str:
        if type(value) in (int, float) and math.isfinite(value):
            number = Decimal(repr(value))  # repr: the float as written, not its binary expansion
        elif type(value) is str and _UNIX_TEXT.fullmatch(value):
            number = Decimal(value)
        else:
            raise MappingFailure(f"@timestamp from {unit} needs a number or a string of digits such as {example}, not {_a(value)}")
        try:
            millis = int((number * scale).to_integral_value(rounding=ROUND_FLOOR))
            return _canonical(_EPOCH + timedelta(milliseconds=millis))
        except OverflowError:
            raise MappingFailure(f"@timestamp from {unit}: {_shown(value)} is outside years 0001-9999") from None

    return step


def _canonical(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC, milliseconds truncated), the form fields emit."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


_DIRECTIVES: dict[str, Callable[[Any, str], Node]] = {
    "@path": _path_directive,
    "@jmespath": _jmespath,
    "@template": _template,
    "@liquid": _liquid,
    "@literal": _literal,
    "@coalesce": _coalesce,
    "@if": _if,
    "@case": _case,
    "@replace": _replace,
    "@json": _json_directive,
    "@flatten": _flatten,
    "@merge": _merge,
    "@arrayPath": _array_path,
    "@transform": _transform,
    "@excludeWhenNull": _exclude_when_null,
    "@timestamp": _timestamp,
}


# --- values and messages -------------------------------------------------------------------


def _constant(value: Any) -> Getter:
    """A getter for a constant: the value itself, or a fresh copy of a mutable one."""
    if type(value) in (dict, list):
        return lambda doc: _copy(value)
    return lambda doc: value


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {key: _copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_copy(item) for item in value]
    return value


def _check_keys(value: dict[Any, Any], pointer: str) -> None:
    for key in value:
        if type(key) is not str:
            raise ConfigError(f"object keys must be strings, but {key!r} is {_a(key)}; quote it", pointer)


def _check_json(value: Any, pointer: str) -> None:
    """A literal must be JSON: YAML dates, sets or NaN would fail only when sent."""
    kind = type(value)
    if kind is dict:
        _check_keys(value, pointer)
        for key, item in value.items():
            _check_json(item, join_pointer(pointer, key))
    elif kind is list:
        for index, item in enumerate(value):
            _check_json(item, join_pointer(pointer, index))
    elif kind is float and not math.isfinite(value):
        raise ConfigError(f"{value} is not a JSON number; JSON has no NaN or infinity", pointer)
    elif kind is int and not MIN_INT <= value <= MAX_INT:
        raise ConfigError(
            f"the integer {_shown(value)} is outside the 64-bit range payloads can carry ({MIN_INT} to {MAX_INT}); quote it to send it as text",
            pointer,
        )
    elif kind not in (str, int, bool, type(None), float):
        raise ConfigError(f"{_a(value)} is not a JSON value; quote it if it is meant as text", pointer)


def _scalar_text(value: bool | int | float) -> str:
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float and value.is_integer():
        return str(int(value))
    return repr(value)


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=repr)


def _shown(value: Any) -> str:
    """The value as JSON, cut so a message stays on one line."""
    text = _json_text(value)
    return text if len(text) <= 80 else text[:77] + "..."


_KINDS = {str: "the string", int: "the number", float: "the number", bool: "the boolean", list: "the array", dict: "the object"}


def _a(value: Any) -> str:
    """``the string "x"``, ``null``: a value named for a message."""
    if value is MISSING:
        return "nothing (missing)"
    if value is None:
        return "null"
    kind = _KINDS.get(type(value))
    return f"{kind} {_shown(value)}" if kind else f"a {type(value).__name__} ({value!r})"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


_NOTHING = Literal(MISSING, "nothing")
"""The branch an ``@if`` takes when the taken branch is not written."""
