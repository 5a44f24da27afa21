"""The example on a destination's page: an event, the payload it becomes and the request that carries it, made by the engine.

The event and settings are the plugin's own first plugin test of the action that expects
a request (``tests/<action>.yaml``), else the first sample track event shipped with the
engine under the default mapping. Either way they run as an operator's one-subscription
mapping file runs (the real pipeline, the real request builder, no network), so the page
shows what ``preview`` and ``send --dry-run`` would, secrets masked; it cannot show a
payload the engine would not make.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.config import schemas
from engine.config.definitions import Action, Catalog, Destination, Setting
from engine.config.mappingfile import MappingFile, load_mapping_document
from engine.config.yamlsource import load_file, load_text
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.requests import Requests
from engine.errors import ConfigError
from engine.pipeline import Pipeline
from engine.resources import data_path
from engine.tools.markdown import fenced, span, yaml_flow


@dataclass(frozen=True)
class Example:
    """One event through one action; ``problem`` says why no request came of it (then payload or request is None)."""

    source: str
    settings: dict[str, Any]  # as given, secrets masked
    mapping: dict[str, Any] | None  # the subscription's own mapping, beside the defaults
    event: Any
    payload: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    problem: str | None = None


class _Only(Catalog):
    """A catalog of one destination, already loaded: the example runs on the very plugin the page documents."""

    def __init__(self, dest: Destination) -> None:
        self._dest = dest

    def get(self, slug: str) -> Destination:
        if slug != self._dest.slug:
            raise ConfigError(f'the example of {self._dest.slug} names another destination, "{slug}"')
        return self._dest

    def resolve(self, name: str, base: Path | None = None) -> Destination:
        return self.get(name)

    @property
    def slugs(self) -> list[str]:
        return [self._dest.slug]


def _case(dest: Destination, action: Action) -> tuple[str, dict[str, Any]] | None:
    """The plugin's first test of ``action`` that expects a request: (where it is, the case)."""
    path = dest.folder / "tests" / f"{action.slug}.yaml"
    if not path.is_file():
        return None
    doc = load_file(path)
    schemas.check(doc, "plugin-tests")
    if doc.data["action"] != action.slug:
        return None
    for case in doc.data["cases"]:
        if "request" in case:
            return f'the plugin\'s test "{case["name"]}" (`tests/{action.slug}.yaml`)', case
    return None


def _placeholder(setting: Setting) -> Any:
    """A stand-in value for a required setting the sample needs (never a real credential)."""
    if setting.enum:
        return setting.enum[0]
    if setting.type == "string":
        return "https://example.com" if setting.format == "uri" else f"example-{setting.name}"
    return {"integer": 1, "number": 1, "boolean": False, "object": {}, "array": []}.get(setting.type, "example")


def _sample(dest: Destination, action: Action) -> tuple[str, dict[str, Any]]:
    with (data_path("examples") / "track.ndjson").open(encoding="utf-8") as lines:
        event = json.loads(lines.readline())
    settings = {name: _placeholder(s) for name, s in dest.settings.items() if s.required and s.default is None}
    return "a sample track event (`examples/track.ndjson`) and the default mapping", {"settings": settings, "event": event}


def _mapping(dest: Destination, action: Action, case: dict[str, Any]) -> MappingFile:
    subscription: dict[str, Any] = {"name": "example", "action": action.slug}
    subscription.update((key, case[key]) for key in ("mapping", "trigger") if key in case)
    text = yaml.safe_dump({"destination": dest.slug, "settings": case.get("settings", {}), "subscriptions": [subscription]}, sort_keys=False)
    return load_mapping_document(load_text(text, f"the example of {dest.slug} {action.slug}"), env={}, catalog=_Only(dest))


def action_example(dest: Destination, action: Action) -> Example:
    """The action's example, run through the engine; a problem (a broken test file, an invalid event) is said, not raised."""
    try:
        source, case = _case(dest, action) or _sample(dest, action)
    except ConfigError as error:
        return Example("the plugin's tests", {}, None, None, problem=f"its tests cannot be read: {error}")
    event = case["event"]
    try:
        mapping = _mapping(dest, action, case)
    except ConfigError as error:
        return Example(source, {}, case.get("mapping"), event, problem=f"its settings or mapping are refused: {error.message}")
    masked = mapping.settings.redacted()
    settings = {name: masked.get(name) for name in case.get("settings", {})}
    outcome = Pipeline(mapping).run(event, include_filtered=True)[0]
    if outcome.status != "ok":
        why = "; ".join(outcome.errors) or outcome.reason or outcome.status
        return Example(source, settings, case.get("mapping"), event, outcome.payload, problem=f"the event is {outcome.status}: {why}")
    refused: list[DeadLetter] = []
    requests = Requests(mapping).preview(mapping.subscriptions[0], [Outgoing(0, event, outcome.payload or {})], refused.append)
    if refused or not requests:
        why = refused[0].reason if refused else "no request was made"
        return Example(source, settings, case.get("mapping"), event, outcome.payload, problem=f"the payload is refused: {why}")
    return Example(source, settings, case.get("mapping"), event, outcome.payload, requests[0])


def _json_block(value: Any) -> list[str]:
    return fenced("json", json.dumps(value, indent=2, ensure_ascii=False))


def example_markdown(example: Example) -> list[str]:
    """The example's lines on the page: settings and mapping (as YAML), the event, the payload, the request."""
    out = ["#### Example", "", f"From {example.source}, run through the engine as `preview` and `send --dry-run` run it "
           "(secrets masked):", ""]
    if example.settings:
        out += [f"- Settings: {span(yaml_flow(example.settings))}"]
    if example.mapping:
        out += [f"- The subscription's mapping (beside the defaults): {span(yaml_flow(example.mapping))}"]
    if example.event is not None:
        out += ["", "The event:", ""] + _json_block(example.event)
    if example.payload is not None:
        out += ["", "The payload it becomes:", ""] + _json_block(example.payload)
    if example.request is not None:
        request = example.request
        body = request["body"] if isinstance(request["body"], str) else json.dumps(request["body"], indent=2, ensure_ascii=False)
        head = [f"{request['method']} {request['url']}"] + [f"{name}: {value}" for name, value in request["headers"].items()]
        out += ["", "The request:", ""] + fenced("http", "\n".join([*head, "", body]))
    if example.problem is not None:
        out += ["", f"No request: {example.problem}."]
    return out
