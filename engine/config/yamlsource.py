"""Reading YAML files a person wrote, keeping where every node came from.

PyYAML's C composer builds the node tree (with line and column marks); we turn
nodes into plain JSON data ourselves, so that:

- no tag can construct a Python object (only the YAML core tags are allowed);
- a duplicate key is an error, not a silent overwrite;
- scalars follow the JSON-like YAML 1.2 core schema: ``yes``/``no``/``on``/``off``
  stay strings, ``1:30`` is not sexagesimal, timestamps stay strings;
- every value and every key has a position, found by its JSON Pointer, so any
  later stage can report ``file:line:col`` for a node it only knows by pointer;
- a file past the limits (``MAX_FILE_BYTES``, ``MAX_YAML_DEPTH``, ``MAX_INT_DIGITS``,
  an alias that contains itself or expands past ``_MAX_NODES``) is a located error
  before anything recurses or allocates without bound.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from engine.errors import ConfigError, ConfigErrors, Location, raise_all
from engine.limits import MAX_FILE_BYTES, MAX_INT_DIGITS, MAX_YAML_DEPTH

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_CONSTRUCT = yaml.constructor.SafeConstructor()
_MAX_NODES = 1_000_000  # aliases may repeat a subtree; bound the expansion


def pointer_token(key: str | int) -> str:
    """One JSON Pointer reference token (RFC 6901 escaping)."""
    return str(key).replace("~", "~0").replace("/", "~1")


def join_pointer(base: str, *keys: str | int) -> str:
    return base + "".join("/" + pointer_token(k) for k in keys)


@dataclass
class Document:
    """A loaded YAML file: its data and the position of each node."""

    file: str
    data: Any
    _values: dict[str, yaml.Node] = field(default_factory=dict, repr=False)
    _keys: dict[str, yaml.Node] = field(default_factory=dict, repr=False)
    _lines: list[str] = field(default_factory=list, repr=False)

    def locate(self, pointer: str, offset: int | None = None, key: bool = False) -> Location:
        """Where the node at ``pointer`` starts (or its key, or a character inside it).

        Falls back to the nearest enclosing node that has a position, so an error
        about a node that does not exist (a missing key) points at its parent.
        """
        table = self._keys if key else self._values
        while pointer not in table and pointer:
            pointer, table = pointer.rpartition("/")[0], self._values
        node = table.get(pointer)
        if node is None:
            return Location(self.file, 1, 1)
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if offset is not None and isinstance(node, yaml.ScalarNode):
            line, column = self._inside_scalar(node, offset, line, column)
        return Location(self.file, line, column)

    def _inside_scalar(self, node: yaml.ScalarNode, offset: int, line: int, column: int) -> tuple[int, int]:
        """Line and column of character ``offset`` of a scalar's value."""
        if node.style in ("|", ">"):
            before = node.value[:offset]
            first = self._lines[line] if line < len(self._lines) else ""
            indent = len(first) - len(first.lstrip(" "))
            return line + 1 + before.count("\n"), indent + 1 + len(before.rpartition("\n")[2])
        quote = 1 if node.style in ("'", '"') else 0
        return line, column + quote + offset

    def place(self, error: ConfigError, key: bool = False) -> ConfigError:
        """Give ``error`` this file's location of its pointer."""
        if error.location is None:
            error.location = self.locate(error.pointer, error.offset, key=key)
        return error


def load_file(path: str | Path) -> Document:
    """Read and convert one YAML file; any problem is a located ConfigError.

    At most ``MAX_FILE_BYTES`` are read, so a huge file (or a device that never ends)
    is refused before it can exhaust memory.
    """
    name = str(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = file.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
        if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
            found = _size(size) if size > MAX_FILE_BYTES else f"more than {_size(MAX_FILE_BYTES)}"
            raise ConfigError(
                f"the file is {found}, over the limit of {_size(MAX_FILE_BYTES)} for a mapping or plugin file; "
                "is it the right file? Keep large test events in an events file instead",
                location=Location(name, 1, 1),
            )
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", location=Location(name, 1, 1)) from None
    return load_text(text, name)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB ({count:,} bytes)" if count % 2**20 else f"{count // 2**20} MiB"


def load_text(text: str, file: str = "<string>") -> Document:
    """Convert YAML text to a :class:`Document` (one YAML document only)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.composer.ComposerError as exc:
        raise _yaml_error(exc, file) from None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, file) from None
    except (ValueError, RecursionError) as exc:  # odd bytes or absurd nesting from libyaml
        raise ConfigError(f"not readable as YAML: {exc}", location=Location(file, 1, 1)) from None
    doc = Document(file, None, _lines=text.splitlines())
    if root is None:
        raise ConfigError("the file is empty; expected a YAML mapping", location=Location(file, 1, 1))
    converter = _Converter(doc)
    if "*" in text:  # only aliases can repeat a node: measure what they expand to before expanding anything
        converter.check_aliases(root)
    doc.data = converter.convert(root, "")
    return doc


def _yaml_error(exc: yaml.YAMLError, file: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if "expected a single document" in message:
        message = "the file holds more than one YAML document; expected exactly one"
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return ConfigError(message, location=Location(file, line, column))


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes directly inside ``node`` (a mapping's keys and values), none for a scalar."""
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _tag_message(tag: str) -> str:
    shown = tag.replace(_CORE, "!!")
    return f"the YAML tag {shown} is not allowed: files hold plain data (strings, numbers, booleans, null, lists, mappings)"


class _Converter:
    """Turns a composed node tree into JSON data, recording positions."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.count = 0

    def error(self, node: yaml.Node, message: str) -> ConfigError:
        mark = node.start_mark
        return ConfigError(message, location=Location(self.doc.file, mark.line + 1, mark.column + 1))

    def convert(self, node: yaml.Node, pointer: str, depth: int = 0) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise self.error(node, f"the document expands to more than {_MAX_NODES:,} nodes (alias bomb?)")
        self.doc._values.setdefault(pointer, node)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        depth += 1
        if depth > MAX_YAML_DEPTH:
            raise self.error(node, f"the YAML nests deeper than {MAX_YAML_DEPTH} levels, the limit for a mapping or plugin file; flatten it")
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, pointer, depth)
        if node.tag != _CORE + "seq":
            raise self.error(node, _tag_message(node.tag))
        return [self.convert(item, join_pointer(pointer, i), depth) for i, item in enumerate(node.value)]

    def check_aliases(self, root: yaml.Node) -> None:
        """Refuse an alias inside its own anchor (a cycle) and aliases that expand past ``_MAX_NODES``.

        One iterative pass over the distinct nodes, sizes memoized: a billion laughs is
        found in a few thousand steps, at the anchor that explodes, before any of it is built.
        """
        size: dict[int, int] = {}
        expanding: set[int] = set()  # the collections whose children are being measured: meeting one again is a cycle
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        while stack:
            node, measured = stack.pop()
            key = id(node)
            children = _children(node)
            if measured:
                expanding.discard(key)
                size[key] = 1 + sum(size[id(child)] for child in children)
                if size[key] > _MAX_NODES:
                    raise self.error(
                        node,
                        f"this value expands to more than {_MAX_NODES:,} nodes through YAML aliases (alias bomb?); "
                        "write it out, or repeat less through anchors",
                    )
            elif key not in size:
                if key in expanding:
                    raise self.error(
                        node,
                        "a YAML alias (*name) refers to the anchored value (&name) it is inside of, so it would repeat forever; "
                        "write the value out, or anchor something that does not contain the alias",
                    )
                expanding.add(key)
                stack.append((node, True))
                stack.extend((child, False) for child in children if id(child) not in size)

    def mapping(self, node: yaml.MappingNode, pointer: str, depth: int) -> dict[str, Any]:
        if node.tag != _CORE + "map":
            raise self.error(node, _tag_message(node.tag))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                raise self.error(key_node, "merge keys (<<) are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key must be a plain string, not a list or mapping")
            self.check_tag(key_node)  # a key is its text, whatever it looks like
            key = key_node.value
            if key in out:
                first = self.doc._keys[join_pointer(pointer, key)].start_mark
                raise self.error(key_node, f'duplicate key "{key}" (first defined at line {first.line + 1})')
            child = join_pointer(pointer, key)
            self.doc._keys[child] = key_node
            out[key] = self.convert(value_node, child, depth)
        return out

    def check_tag(self, node: yaml.ScalarNode) -> None:
        if node.tag not in _SCALAR_TAGS:
            raise self.error(node, _tag_message(node.tag))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        self.check_tag(node)
        tag = node.tag
        text = node.value
        if tag == _CORE + "str" or tag == _CORE + "timestamp" or ":" in text:
            return text
        if tag == _CORE + "bool":
            return text.lower() == "true" if text.lower() in ("true", "false") else text
        if tag == _CORE + "null":
            return None
        if tag == _CORE + "int":
            body = text.lstrip("+-").replace("_", "")
            digits = len(body) - (2 if body[:2] in ("0x", "0o", "0b") else 0)
            if digits > MAX_INT_DIGITS:  # Python refuses past 4,300 digits; nothing needs a tenth of that
                raise self.error(
                    node,
                    f"an integer of {digits:,} digits is over the limit of {MAX_INT_DIGITS} digits in a file; "
                    "quote it if it is text (an id), or write a smaller number",
                )
            return _CONSTRUCT.construct_yaml_int(node)
        value = _CONSTRUCT.construct_yaml_float(node)
        return value if value == value and value not in (float("inf"), float("-inf")) else text


class Problems:
    """The errors found in one pass over a document, each placed in it; raised together at the end, in file order.

    So one problem never hides another: a loader records each independent part's error
    (``with problems.gathered(): ...``) and goes on to the next part.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.errors: list[ConfigError] = []

    def add(self, error: ConfigError, key: bool = False) -> None:
        for one in error.errors if isinstance(error, ConfigErrors) else [error]:
            self.errors.append(self.doc.place(one, key=key))

    @contextmanager
    def gathered(self, key: bool = False) -> Iterator[None]:
        """Record a ConfigError raised inside the block instead of letting it stop the pass."""
        try:
            yield
        except ConfigError as error:
            self.add(error, key)

    def raise_all(self) -> None:
        """Raise every error recorded (none: nothing), in file order."""
        def where(error: ConfigError) -> tuple[bool, str, int, int]:  # this file's errors first, then any in files it uses
            at = error.location or Location(self.doc.file, 0, 0)
            return at.file != self.doc.file, at.file, at.line, at.column

        ordered = sorted(self.errors, key=where)
        raise_all(ordered)
