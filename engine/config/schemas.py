"""Checking a loaded YAML file against its JSON Schema, with located errors.

Schemas (draft 2020-12) are read and compiled once per process. Errors are turned
into :class:`ConfigError` s that point at the offending node (an unknown key at the
key itself, with a "did you mean" when a known key is close).
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any, Iterator, cast

import jsonschema
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from engine.errors import ConfigError, raise_all
from engine.resources import data_path
from engine.config.yamlsource import Document, join_pointer

SCHEMA_NAMES = ("destination", "action", "mapping", "plugin-tests")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``schemas/<name>.schema.json``."""
    return json.loads((data_path("schemas") / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def _registry() -> Registry:
    resources = [(load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES]
    registry: Registry = Registry().with_resources(resources)
    return registry


@functools.cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), registry=_registry())


def check(doc: Document, schema: str) -> None:
    """Raise every located problem of ``doc`` against ``schema`` (one ConfigError, or ConfigErrors in file order)."""
    raise_all(structure(doc, schema)[0])


def structure(doc: Document, schema: str) -> tuple[list[ConfigError], frozenset[str]]:
    """Every located problem of ``doc`` against ``schema``, in file order, and the JSON Pointer of every node at fault.

    A loader that goes on past these checks only the nodes none of the pointers is at,
    inside or above (see :func:`intact`), so it can report its own errors beside these.
    """
    found = list(_problems(validator(schema), load_schema(schema), doc.data))
    suggested = {e.pointer.rpartition("/")[0] + "/" + hint for e, _, hint in found if hint}
    problems = [doc.place(e, key=key) for e, key, _ in found if e.pointer not in suggested]
    problems.sort(key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0))
    return problems, frozenset(e.pointer for e, _, _ in found)


def intact(pointer: str, faults: frozenset[str]) -> bool:
    """Whether the node at ``pointer`` and everything in it kept to the schema (no fault at, inside or above it)."""
    return reachable(pointer, faults) and not any(f.startswith(pointer + "/") for f in faults)


def reachable(pointer: str, faults: frozenset[str]) -> bool:
    """Whether the node at ``pointer`` is there as the schema says (no fault at it or above it); inside it may be faults."""
    return not any(f == pointer or pointer.startswith(f + "/") for f in faults)


Problem = tuple[ConfigError, bool, str]
"""An error, whether it points at a key (not a value), and the known key it may be a typo of."""


def _problems(v: Draft202012Validator, root: dict[str, Any], data: Any) -> Iterator[Problem]:
    for error in v.iter_errors(data):
        yield from _explain(_deepest(error), root)


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For oneOf/anyOf, the alternative that came closest, as jsonschema's best_match picks."""
    while error.context:
        error = jsonschema.exceptions.best_match(error.context)
    return error


_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def _explain(error: jsonschema.ValidationError, root: dict[str, Any]) -> Iterator[Problem]:
    """Operator-facing problems for one jsonschema error; values are not echoed (they may be secrets)."""
    pointer = join_pointer("", *error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(error.instance, dict):
        known = _known_keys(cast(dict[str, Any], error.schema), root)
        for key in error.instance:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f'; did you mean "{close[0]}"?' if close else ""
                message = f'unknown key "{key}"{hint} (allowed here: {", ".join(known)})'
                yield ConfigError(message, join_pointer(pointer, key)), True, close[0] if close else ""
    elif error.validator == "required":
        missing = error.message.split(" is a required")[0].strip("'")
        yield ConfigError(f'missing required key "{missing}"', join_pointer(pointer, missing)), False, ""
    elif error.validator == "propertyNames":
        yield ConfigError(f"the key {error.instance!r} is not a valid name: {error.message}", pointer), True, ""
    elif error.validator == "type":
        wanted = [str(v) for v in (error.validator_value if isinstance(error.validator_value, list) else [error.validator_value])]
        found = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
        yield ConfigError(f"expected {' or '.join(wanted)}, found {found}", pointer), False, ""
    else:
        yield ConfigError(error.message, pointer), False, ""


def _known_keys(schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """Keys a schema object allows, following a local ``$ref`` (as unevaluatedProperties does)."""
    keys = list(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        target = root["$defs"][ref.removeprefix("#/$defs/")]
        keys += [k for k in _known_keys(target, root) if k not in keys]
    return keys
