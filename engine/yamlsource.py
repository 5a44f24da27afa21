"""Reading YAML files a person wrote, keeping where every node came from.

PyYAML's C composer builds the node tree (with line and column marks); we turn
nodes into plain JSON data ourselves, so that:

- no tag can construct a Python object (only the YAML core tags are allowed);
- a duplicate key is an error, not a silent overwrite;
- scalars follow the JSON-like YAML 1.2 core schema: ``yes``/``no``/``on``/``off``
  stay strings, ``1:30`` is not sexagesimal, timestamps stay strings;
- every value and every key has a position, found by its JSON Pointer, so any
  later stage can report ``file:line:col`` for a node it only knows by pointer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from engine.errors import ConfigError, Location

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
    """Read and convert one YAML file; any problem is a located ConfigError."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", location=Location(name, 1, 1)) from None
    return load_text(text, name)


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
    doc.data = _Converter(doc).convert(root, "")
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

    def convert(self, node: yaml.Node, pointer: str) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise self.error(node, f"the document expands to more than {_MAX_NODES:,} nodes (alias bomb?)")
        self.doc._values.setdefault(pointer, node)
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, pointer)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _CORE + "seq":
                raise self.error(node, _tag_message(node.tag))
            return [self.convert(item, join_pointer(pointer, i)) for i, item in enumerate(node.value)]
        return self.scalar(cast(yaml.ScalarNode, node))

    def mapping(self, node: yaml.MappingNode, pointer: str) -> dict[str, Any]:
        if node.tag != _CORE + "map":
            raise self.error(node, _tag_message(node.tag))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                raise self.error(key_node, "merge keys (<<) are not supported; write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key must be a plain string, not a list or mapping")
            self.scalar(key_node)  # rejects tags on keys
            key = key_node.value
            if key in out:
                first = self.doc._keys[join_pointer(pointer, key)].start_mark
                raise self.error(key_node, f'duplicate key "{key}" (first defined at line {first.line + 1})')
            child = join_pointer(pointer, key)
            self.doc._keys[child] = key_node
            out[key] = self.convert(value_node, child)
        return out

    def scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag not in _SCALAR_TAGS:
            raise self.error(node, _tag_message(tag))
        text = node.value
        if tag == _CORE + "str" or tag == _CORE + "timestamp" or ":" in text:
            return text
        if tag == _CORE + "bool":
            return text.lower() == "true" if text.lower() in ("true", "false") else text
        if tag == _CORE + "null":
            return None
        if tag == _CORE + "int":
            return _CONSTRUCT.construct_yaml_int(node)
        value = _CONSTRUCT.construct_yaml_float(node)
        return value if value == value and value not in (float("inf"), float("-inf")) else text
