"""A destination's page, as a documentation site would publish it, and the plugin key reference.

The page says what the plugin declares and what the engine makes of it: each field's
constraints and coercions, its default mapping as YAML a mapping file could hold, an
example event run through the engine to the payload and request it becomes
(``engine.tools.pageexample``), and how payloads travel (``_batching``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from engine.config.definitions import Action, Destination
from engine.config.http import batched_template
from engine.config.schemas import load_schema
from engine.errors import ConfigError
from engine.lang.fields.timeformats import TIME_FORMATS
from engine.tools.markdown import cell as _cell, code as _code, span, table as _table, yaml_flow
from engine.tools.pageexample import action_example, example_markdown


def _trigger_text(trigger: object) -> str:
    return trigger if isinstance(trigger, str) else f"jmespath: {trigger['jmespath']}"  # type: ignore[index]


def _batching(action: Action) -> str:
    """How the action's payloads travel, as it really is: per request, in an array or a template, encoded how, stored when."""
    request = action.request
    many = f"up to {action.max_batch_size} payloads per request"
    if request.body == "template":
        shape = json.dumps(request.template).replace('"{{payloads}}"', "[payloads…]").replace('"{{payload}}"', "payload")
        carried = f"{many} as `{shape}`" if batched_template(request.template) else f"one payload per request as `{shape}`"
    elif request.body == "batch":
        carried = f"{many}, as a JSON array"
    elif request.body == "auto" and action.size_setting:
        carried = (f"one payload per request as a JSON object while the `{action.size_setting}` setting is 1 (the default), "
                   f"else JSON arrays of up to that many (at most {action.max_batch_size})")
    else:
        carried = "one payload per request"
    notes = [carried]
    if request.encoding == "form":
        notes.append("form-encoded (`a[b]=v`)")
    if request.content_type:
        notes.append(f"`Content-Type: {request.content_type}`")
    if request.success:
        notes.append("stored when answered " + ", ".join(str(s) for s in sorted(request.success)))
    if request.session:
        notes.append("authenticated by the destination's session token")
    return "; ".join(notes)


def _bound(key: str) -> Callable[[Any], str]:
    return lambda value: f"{key} {json.dumps(value)}"


def _window(window: Mapping[str, str]) -> str:
    return f"window {window['past']} back to {window['future']} ahead (checked when sent)"


def _member(name: str, decl: Mapping[str, Any]) -> str:
    """A declared key of an object (or an array's items): its type, whether required, its rules and coercions."""
    rules = [decl["type"], *(["required"] if decl.get("required") else []), *_rules(decl), *_coercions(decl)]
    return f"{name}: {', '.join(rules)}"


CONSTRAINTS: dict[str, Callable[[Any], str]] = {
    **{key: _bound(key) for key in ("minLength", "maxLength", "minimum", "maximum", "minProperties", "maxProperties",
                                    "minItems", "maxItems")},
    "pattern": lambda pattern: f"pattern {span(pattern)}",
    "format": lambda name: f"format {name}",
    "enum": lambda values: "one of " + ", ".join(span(json.dumps(v, ensure_ascii=False)) for v in values),
    "nullable": lambda nullable: "null is sent" if nullable else "null is invalid",
    "window": _window,
    "send_as": lambda name: f"sent as {name} ({span(TIME_FORMATS[name].example)})",
    "items": lambda items: "(" + _member("items", items) + ")",
    "properties": lambda members: "; ".join(_member(key, member) for key, member in members.items()),
}
"""How each constraint key of a field declaration is shown, in this order."""

OWN_COLUMNS = ("type", "label", "description", "required", "default", "coerce")
"""The declaration's other keys: each has a column of its own."""


def _rules(decl: Mapping[str, Any]) -> list[str]:
    return [show(decl[key]) for key, show in CONSTRAINTS.items() if key in decl]


def _coercions(decl: Mapping[str, Any]) -> list[str]:
    return [f"coerce {name}" for name in decl.get("coerce", [])]


def _default(decl: Mapping[str, Any]) -> str:
    return _code(yaml_flow(decl["default"])) if "default" in decl else ""


def _fields(action: Action) -> list[str]:
    declared: Mapping[str, Mapping[str, Any]] = action.document.data["fields"]
    return _table(
        ["Field", "Label", "Type", "Required", "Constraints", "Coercions", "Default mapping", "Description"],
        [
            [
                _code(f["name"]),
                _cell(f["label"]),
                _cell(f["type"]),
                "yes" if f["required"] else "no",
                _cell("; ".join(_rules(declared[f["name"]]))),
                _cell(", ".join(declared[f["name"]].get("coerce", []))),
                _default(declared[f["name"]]),
                _cell(f["description"]),
            ]
            for f in action.checks.describe()
        ],
    )


def _action(dest: Destination, action: Action) -> list[str]:
    out = [
        "",
        f"### {action.title} (`{action.slug}`)",
        "",
        action.description,
        "",
        f"- Default trigger: {span(_trigger_text(action.default_trigger.source))}",
        f"- Request: {span(f'{action.request.method} {action.request.url}')}, {_batching(action)}",
        "",
    ]
    out += _fields(action)
    out += ["", "A subscription's `mapping:` replaces the defaults it names; each default above is written as it would be there.", ""]
    return out + example_markdown(action_example(dest, action))


def destination_markdown(dest: Destination) -> str:
    """The page for one destination: settings, actions, and each action's fields."""
    out = [f"# {dest.name}", "", dest.description, "", f"Slug: `{dest.slug}` ({dest.origin})", "", "## Settings", ""]
    out += _table(
        ["Setting", "Label", "Type", "Required", "Default", "Description"],
        [
            [
                _code(s.name),
                _cell(s.label),
                s.type + (" (secret)" if s.secret else "") + (f", {s.format}" if s.format else ""),
                "yes" if s.required else "no",
                _code(s.default),
                _cell(s.description),
            ]
            for s in dest.settings.values()
        ],
    )
    out += ["", "## Actions", ""]
    out += _table(
        ["Action", "Title", "Default trigger", "Description"],
        [
            [_code(a.slug), _cell(a.title), _code(_trigger_text(a.default_trigger.source)), _cell(a.description)]
            for a in dest.actions.values()
        ],
    )
    for action in dest.actions.values():
        out += _action(dest, action)
    if dest.presets:
        out += ["", "## Presets", "", "Default subscriptions offered to a new mapping file:", ""]
        out += _table(
            ["Name", "Action", "Trigger"],
            [[_cell(p.name), _code(p.action), _code(_trigger_text(p.trigger) if p.trigger else None)] for p in dest.presets],
        )
    return "\n".join(out) + "\n"


REFERENCE_BEGIN = "<!-- BEGIN plugin key reference: generated by `actionmap docs --keys`; do not edit -->"
REFERENCE_END = "<!-- END plugin key reference -->"


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Follow ``$ref`` (local or to a sibling schema file), merging the keys beside it; also the ref followed."""
    ref = ""  # the first reference followed: the definition a key names (a chain ends in a shared base)
    while "$ref" in node:
        ref = ref or node["$ref"]
        target, _, fragment = node["$ref"].partition("#")
        base = load_schema(target.removesuffix(".schema.json")) if target else root
        resolved = base
        for part in fragment.strip("/").split("/") if fragment else []:
            resolved = resolved[part]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**resolved, **siblings}
        node["properties"] = {**resolved.get("properties", {}), **siblings.get("properties", {})}
        node["required"] = [*resolved.get("required", []), *siblings.get("required", [])]
        root = base
    return node, root, ref


def _type_of(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " | ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "oneOf" in node or "anyOf" in node:
        return " or ".join(_type_of(option) for option in node.get("oneOf", node.get("anyOf", [])))
    kind = node.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(node.get("items"), dict) and "type" in node["items"]:
        text += f" of {_type_of(node['items'])}"
    return text


def _keys(node: dict[str, Any], root: dict[str, Any], prefix: str, rows: list[list[str]], seen: frozenset[str]) -> None:
    """A row per key of an object schema, then the keys inside it; a recursive ``$ref`` is named, not followed."""
    node, root, _ = _resolve(node, root)
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        child_node, child_root, ref = _resolve(child, root)
        name = f"{prefix}{key}"
        description = child_node.get("description", "")
        rows.append([f"`{name}`", _cell(_type_of(child_node)), "yes" if key in required else "", _cell(description)])
        if ref and ref in seen:
            continue
        inner = seen | {ref} if ref else seen
        if child_node.get("type") == "object" and child_node.get("properties"):
            _keys(child_node, child_root, f"{name}.", rows, inner)
        elif child_node.get("type") == "object" and isinstance(child_node.get("additionalProperties"), dict):
            member, member_root, member_ref = _resolve(child_node["additionalProperties"], child_root)
            if not (member_ref and member_ref in seen):
                _keys(member, member_root, f"{name}.<name>.", rows, inner | {member_ref} if member_ref else inner)
        elif child_node.get("type") == "array" and isinstance(child_node.get("items"), dict):
            item, item_root, item_ref = _resolve(child_node["items"], child_root)
            if item.get("type") == "object" and not (item_ref and item_ref in seen):
                _keys(item, item_root, f"{name}[].", rows, inner | {item_ref} if item_ref else inner)


def key_reference_markdown() -> str:
    """Every key of every YAML file a person writes, generated from ``schemas/``."""
    out = [REFERENCE_BEGIN]
    for name, title in (("destination", "`destination.yaml`"), ("action", "`actions/<action>.yaml`"), ("mapping", "mapping files"), ("plugin-tests", "`tests/<action>.yaml` (plugin tests)")):
        schema = load_schema(name)
        rows: list[list[str]] = []
        _keys(schema, schema, "", rows, frozenset())
        out += ["", f"#### {title}", "", schema.get("description", ""), ""]
        out += _table(["Key", "Type", "Required", "Description"], rows)
    out += ["", REFERENCE_END]
    return "\n".join(out) + "\n"


def update_key_reference(path: Path) -> bool:
    """Rewrite the generated region of ``path`` (a README); True when it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(REFERENCE_BEGIN), text.find(REFERENCE_END)
    if start < 0 or end < start:
        raise ConfigError(f"{path} has no generated region: add the two marker lines {REFERENCE_BEGIN} and {REFERENCE_END}")
    updated = text[:start] + key_reference_markdown().rstrip("\n") + text[end + len(REFERENCE_END) :]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def without_markers(reference: str) -> str:
    """The key reference without the README's two marker lines (a docs site shows them as text)."""
    return "\n".join(line for line in reference.splitlines() if line not in (REFERENCE_BEGIN, REFERENCE_END)).strip("\n") + "\n"
