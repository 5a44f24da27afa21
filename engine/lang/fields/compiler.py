"""A field declaration compiled once to one closure per field; ``FieldSet`` checks a payload with them."""

from __future__ import annotations

import json

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from engine.config.yamlsource import join_pointer
from engine.errors import ConfigError, MappingFailure
from engine.lang.fields.coercions import _COERCIONS, _converter, NULL_TO_MISSING
from engine.lang.fields.constraints import _elements, _enum, _FORMATS, _sequence, _test
from engine.lang.fields.problems import _BOUNDS, FieldProblem, _Invalid, _json, _ONLY_FOR, Step, TYPES
from engine.lang.fields.timeformats import DEFAULT, Window, time_format, window_of
from engine.lang.fields.types import _boolean, _datetime, _finite, _integral, _numeric, _sized
from engine.lang.missing import MISSING


_OPTION_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "bool": (lambda v: type(v) is bool, "true or false"),
    "count": (lambda v: type(v) is int and v >= 0, "a whole number >= 0"),
    "number": (lambda v: type(v) in (int, float) and math.isfinite(v), "a number"),
    "text": (lambda v: type(v) is str, "a string"),
    "list": (lambda v: type(v) is list, "a list"),
}


def _option(decl: Mapping[str, Any], key: str, pointer: str, kind: str) -> Any:
    """``decl[key]`` (None when absent), checked to be of ``kind`` (a key of _OPTION_KINDS).

    The schema checks this too; the compiler is also called directly, and compares
    these values, so it cannot trust them blindly.
    """
    if key not in decl:
        return None
    fits, wanted = _OPTION_KINDS[kind]
    if not fits(decl[key]):
        raise ConfigError(f"{key} must be {wanted}, not {_json(decl[key])}", join_pointer(pointer, key))
    return decl[key]


def _type_of(decl: Mapping[str, Any], pointer: str, what: str) -> str:
    type_name = decl.get("type")
    if type_name not in TYPES:
        where = join_pointer(pointer, "type") if "type" in decl else pointer
        got = f"not {_json(type_name)}" if "type" in decl else "it has none"
        raise ConfigError(f"{what} needs a type, one of {', '.join(TYPES)}; {got}", where)
    for key, types in _ONLY_FOR.items():
        if key in decl and type_name not in types:
            raise ConfigError(
                f"{key} does not apply to type {type_name}, only to {' and '.join(types)}", join_pointer(pointer, key)
            )
    return type_name


def _coercions(decl: Mapping[str, Any], type_name: str, pointer: str) -> tuple[dict[type, Step], dict[type, str], bool]:
    """The declared coercions as a table by source type, their names by the same key, and whether null_to_missing is declared.

    A coercion's source types are never its target's own (``number_to_string`` takes
    numbers to a string field), so a value of a source type that passes its field's
    check was converted by exactly the coercion named for its type.
    """
    listed = _option(decl, "coerce", pointer, "list") or []
    table: dict[type, Step] = {}
    names: dict[type, str] = {}
    drop_null = False
    for index, name in enumerate(listed):
        at = join_pointer(pointer, "coerce", index)
        if name == NULL_TO_MISSING:
            if drop_null:
                raise ConfigError("null_to_missing is listed twice", at)
            if decl.get("nullable") is True:
                raise ConfigError("null_to_missing contradicts nullable: true (null cannot be both sent and dropped)", at)
            drop_null = True
            continue
        coercion = _COERCIONS.get(name) if type(name) is str else None
        if coercion is None:
            known = ", ".join([*_COERCIONS, NULL_TO_MISSING])
            raise ConfigError(f"unknown coercion {_json(name)}; known coercions: {known}", at)
        if type_name not in coercion.targets:
            fits = " or ".join(coercion.targets)
            advice = "use @timestamp in the mapping to make a time" if type_name == "datetime" else "remove it"
            raise ConfigError(f"{name} gives a {fits}, which does not fit type {type_name}; {advice}", at)
        if coercion.sources[0] in table:
            raise ConfigError(f"{name} converts the same source type as an earlier coercion; keep one", at)
        table.update(dict.fromkeys(coercion.sources, coercion.convert))
        names.update(dict.fromkeys(coercion.sources, name))
    return table, names, drop_null


def _bounds(decl: Mapping[str, Any], pointer: str, type_name: str) -> tuple[Any, Any]:
    """The (low, high) bounds that apply to ``type_name``, checked to leave room for a value."""
    for low_key, high_key in _BOUNDS:
        if type_name not in _ONLY_FOR[low_key]:
            continue
        kind = "number" if low_key == "minimum" else "count"
        low, high = _option(decl, low_key, pointer, kind), _option(decl, high_key, pointer, kind)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{high_key} {high} is below {low_key} {low}: no value could pass", join_pointer(pointer, high_key))
        return (-math.inf if kind == "number" else 0) if low is None else low, math.inf if high is None else high
    return None, None


def _body(decl: Mapping[str, Any], pointer: str, type_name: str, convert: Step) -> list[Step]:
    """The steps checking a non-null value: type (with coercion and bounds), then pattern and format."""
    low, high = _bounds(decl, pointer, type_name)
    if type_name == "string":
        steps = [_sized(str, "character", ("minLength", "maxLength"), low, high, convert)]
        pattern = _option(decl, "pattern", pointer, "text")
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ConfigError(f"pattern is not a valid regular expression: {error.msg}", join_pointer(pointer, "pattern"), error.pos) from None
            steps.append(_test(compiled.search, "pattern", f"does not match pattern {pattern}"))
        name = _option(decl, "format", pointer, "text")
        if name is not None:
            if name not in _FORMATS:
                raise ConfigError(f"unknown format {_json(name)}; known formats: {', '.join(_FORMATS)}", join_pointer(pointer, "format"))
            regex, why = _FORMATS[name]
            steps.append(_test(regex.fullmatch, "format", why))
        return steps
    if type_name in ("number", "integer"):
        return [_numeric(_finite if type_name == "number" else _integral, low, high, convert)]
    if type_name == "object":
        steps = [_sized(dict, "key", ("minProperties", "maxProperties"), low, high, convert)]
        if "properties" in decl:
            steps.append(_members(decl["properties"], join_pointer(pointer, "properties")))
        return steps
    if type_name == "array":
        steps = [_sized(list, "item", ("minItems", "maxItems"), low, high, convert)]
        if "items" in decl:
            steps.append(_elements(_compile_shape(decl["items"], join_pointer(pointer, "items"), field=False).run))
        return steps
    if type_name == "boolean":
        return [_boolean(convert)]
    written = time_format(decl, pointer).write
    return [_datetime(convert)] if written is DEFAULT.write else [_datetime(convert), written]


def _members(decls: Any, pointer: str) -> Step:
    """An object's declared keys checked (and coerced) by their own declarations; undeclared keys pass as they are."""
    if not isinstance(decls, Mapping) or not decls:
        raise ConfigError(f"properties declares an object's keys, as {{value: {{type: string}}}}, not {_json(decls)}", pointer)
    members = tuple((key, _compile_shape(decl, join_pointer(pointer, key), field=False, member=True)) for key, decl in decls.items())

    def step(value: dict[str, Any]) -> dict[str, Any]:
        out = dict(value)
        for key, shape in members:
            try:
                checked = shape.run(value[key]) if key in value else MISSING
            except _Invalid as invalid:
                raise invalid.member(key) from None
            if checked is MISSING:
                out.pop(key, None)
                if shape.required:
                    raise _Invalid("required", "required, but the object has no value for it").member(key)
            else:
                out[key] = checked
        return out

    return step


def _enum_values(decl: Mapping[str, Any], pointer: str, strict: Step) -> list[Any]:
    """The enum values, each checked by the field's own rules (without coercion) and normalised."""
    listed = _option(decl, "enum", pointer, "list")
    if not listed:
        raise ConfigError("enum lists no values, so nothing could pass; list the allowed values", join_pointer(pointer, "enum"))
    values = []
    for index, value in enumerate(listed):
        at = join_pointer(pointer, "enum", index)
        if value is None:
            raise ConfigError("enum cannot list null; declare nullable: true to accept null", at)
        try:
            values.append(strict(value))
        except _Invalid as invalid:
            raise ConfigError(f"enum value {_json(value)} could never pass this field: {invalid.detail}", at) from None
    return values


@dataclass(frozen=True)
class _Shape:
    run: Step  # a value -> the value to send, MISSING to leave it out; raises _Invalid
    type_text: str
    required: bool
    drops_null: bool
    coercions: dict[type, str]  # the name of the coercion ``run`` applies to a value of each source type
    normalised: str  # what ``run`` did to a value it changed without a coercion ("normalised datetime")

    def changed_by(self, value: Any, checked: Any) -> str:
        """What ``run`` did to ``value`` to send ``checked`` instead: the coercion it applied, or its normalisation."""
        if checked is MISSING:
            return NULL_TO_MISSING
        return self.coercions.get(type(value), self.normalised)


def _compile_shape(decl: Any, pointer: str, field: bool, member: bool = False) -> _Shape:
    """A field (or ``items``) declaration compiled to one step; nulls handled as declared."""
    what = "a field declaration" if field else "an items declaration"
    if not isinstance(decl, Mapping):
        raise ConfigError(f"{what} must be a mapping of keys such as type and description, not {_json(decl)}", pointer)
    _option(decl, "description", pointer, "text")
    _option(decl, "label", pointer, "text")
    required = _option(decl, "required", pointer, "bool") is True
    type_name = _type_of(decl, pointer, what)
    if not field and "window" in decl:
        raise ConfigError("window applies to a datetime field, not to array items: it is checked on the field's value when it is sent",
                          join_pointer(pointer, "window"))
    table, names, drop_null = _coercions(decl, type_name, pointer)
    steps = _body(decl, pointer, type_name, _converter(type_name, table))
    if "enum" in decl:
        strict = _sequence(_body(decl, pointer, type_name, _converter(type_name, {})))
        steps.append(_enum(_enum_values(decl, pointer, strict)))
    body = _sequence(steps)
    nullable = _option(decl, "nullable", pointer, "bool")
    run = body
    if drop_null:
        run = _null_to(MISSING, body)
    elif ((field or member) and not required) if nullable is None else nullable:  # an optional field or key keeps null
        run = _null_to(None, body)
    # an integer field sends 3.0 as 3, a datetime in UTC milliseconds, an array its checked items
    normalised = f"normalised {'number' if type_name == 'integer' else type_name}"
    return _Shape(run, _type_text(decl), required, drop_null, names, normalised)


def _null_to(result: Any, body: Step) -> Step:
    """``body``, except that null gives ``result`` (None to send null, MISSING to drop the field)."""

    def run(value: Any) -> Any:
        return result if value is None else body(value)

    return run


def _type_text(decl: Mapping[str, Any]) -> str:
    """``string``, ``string (email)``, ``array of integer``: a type a reader understands."""
    text = decl["type"]
    if "format" in decl:
        text += f" ({decl['format']})"
    if "items" in decl:
        text += " of " + _type_text(decl["items"])
    if isinstance(decl.get("properties"), Mapping):
        keys = ", ".join(f"{key}: {_type_text(member)}{' (required)' if member.get('required') else ''}"
                         for key, member in decl["properties"].items())
        text += " {" + keys + "}"
    return text


def _absent_problems(name: str, source: str | None, known: bool, drops_null: bool) -> tuple[FieldProblem, FieldProblem | None]:
    """The problems for a required field with no value, and with a null its coercion dropped."""
    if source is not None:
        missing = f"{name}: required, but its mapping {source} gave no value for this event"
    elif known:
        missing = f"{name}: required, but nothing maps it; add it to the subscription's mapping"
    else:
        missing = f"{name}: required, but the payload has no value for it"
    dropped = None
    if drops_null:
        by = f"its mapping {source} gave" if source is not None else "the value is"
        dropped = FieldProblem(name, "required", f"{name}: required, but {by} null, which coerce: [null_to_missing] drops")
    return FieldProblem(name, "required", missing), dropped


@dataclass(frozen=True)
class _Field:
    name: str
    shape: _Shape
    window: Window | None
    doc: dict[str, Any]  # what ``describe`` gives


Evaluate = Callable[[Any], Any]


Build = Callable[[Any], "tuple[dict[str, Any], list[FieldProblem]]"]


Coerced = Callable[[str, Any, Any, str], None]
"""Told (field, value mapped, value to send, what changed it) when a field's check changes a value."""


def _unmapped(source: Any) -> Any:
    return MISSING


def _key(name: str) -> Evaluate:
    """Read one field of an already built payload."""
    return lambda payload: payload.get(name, MISSING)


def _text(value: Any) -> str:
    """A container as JSON text, types kept (0 and 0.0 differ), for telling whether a check changed an item."""
    return json.dumps(value, sort_keys=True, default=repr)


def _reporting(name: str, shape: _Shape, coerced: Coerced) -> Step:
    """``shape.run``, telling ``coerced`` when the value it sends is not the value it was given."""
    run = shape.run

    def check(value: Any) -> Any:
        checked = run(value)
        if checked is MISSING or checked != value or type(checked) is not type(value) or (
                type(value) in (list, dict) and _text(checked) != _text(value)):  # [0] == [0.0], yet an item changed
            coerced(name, value, checked, shape.changed_by(value, checked))
        return checked

    return check


class FieldSet:
    """An action's fields, compiled once: checks and coerces one payload per call.

    ``mapped_by`` gives the same compiled fields for one subscription, whose messages
    name its mappings; nothing is compiled again.
    """

    __slots__ = ("_fields", "_sources", "_plan", "_check", "names", "required", "windows")

    def __init__(self, fields: tuple[_Field, ...], sources: Mapping[str, str] | None) -> None:
        self._fields = fields
        self._sources: Mapping[str, str] = sources or {}
        self.names = tuple(field.name for field in fields)
        """Every field, in declaration order."""
        self.required = frozenset(field.name for field in fields if field.shape.required)
        self.windows = tuple(field.window for field in fields if field.window is not None)
        """The datetime windows, checked at the moment of sending."""
        plan = []
        for field in fields:
            missing, dropped = None, None
            if field.shape.required:
                missing, dropped = _absent_problems(field.name, self._sources.get(field.name), sources is not None, field.shape.drops_null)
            plan.append((field, missing, dropped))
        self._plan = tuple(plan)
        self._check = self.builder({name: _key(name) for name in self.names})

    def mapped_by(self, sources: Mapping[str, str]) -> FieldSet:
        """These fields for one subscription: ``sources`` are its mappings' texts, named when a required one gives nothing.

        A required field absent from ``sources`` is reported as unmapped.
        """
        return FieldSet(self._fields, sources)

    def check(self, payload: dict[str, Any]) -> tuple[dict[str, Any], list[FieldProblem]]:
        """The payload to send (a new dict, in declaration order) and its problems (empty when valid)."""
        return self._check(payload)

    def builder(self, evaluators: Mapping[str, Evaluate], coerced: Coerced | None = None) -> Build:
        """One pass per event that maps each field (``evaluators``) and checks it at once.

        The per-event path: no intermediate payload is built and read back. A mapping
        that fails for the event (MappingFailure) is that field's one problem. Given
        ``coerced``, each check also says what it changed (``preview --explain``).
        """
        plan = tuple(
            (
                field.name,
                evaluators.get(field.name, _unmapped),
                field.shape.run if coerced is None else _reporting(field.name, field.shape, coerced),
                missing,
                dropped,
                self._sources.get(field.name, ""),
            )
            for field, missing, dropped in self._plan
        )

        def build(source: Any) -> tuple[dict[str, Any], list[FieldProblem]]:
            out: dict[str, Any] = {}
            problems: list[FieldProblem] = []
            for name, evaluate, run, missing, dropped, mapping in plan:
                try:
                    value = evaluate(source)
                except MappingFailure as failure:
                    problems.append(FieldProblem(name, "mapping", f"{name}: {failure} (mapping {mapping})"))
                    continue
                if value is MISSING:
                    if missing is not None:
                        problems.append(missing)
                    continue
                try:
                    checked = run(value)
                except _Invalid as invalid:
                    problems.append(invalid.problem(name))
                    out[name] = value
                    continue
                if checked is not MISSING:
                    out[name] = checked
                elif dropped is not None:
                    problems.append(dropped)
            return out, problems

        return build

    def describe(self) -> list[dict[str, Any]]:
        """Per field, in order: name, label, type, required, description (for generated docs)."""
        return [dict(field.doc) for field in self._fields]


def compile_fields(
    decls: Mapping[str, Mapping[str, Any]],
    pointer: str = "",
    sources: Mapping[str, str] | None = None,
) -> FieldSet:
    """Compile an action's field declarations once; raise ConfigError at the bad node.

    ``sources`` gives each field's mapping text, named when a required field is missing;
    a required field absent from a given ``sources`` is reported as unmapped.
    """
    if not isinstance(decls, Mapping):
        raise ConfigError(f"fields must be a mapping of field names to declarations, not {_json(decls)}", pointer)
    fields = []
    for name, decl in decls.items():
        at = join_pointer(pointer, name)
        shape = _compile_shape(decl, at, field=True)
        doc = {
            "name": name,
            "label": decl.get("label", name),
            "type": shape.type_text,
            "required": shape.required,
            "description": decl.get("description", ""),
        }
        fields.append(_Field(name, shape, window_of(decl, name, at), doc))
    return FieldSet(tuple(fields), sources)
