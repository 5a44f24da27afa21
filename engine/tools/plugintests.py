"""Plugin tests as data: per action, events and the exact HTTP requests they must become.

A plugin folder may hold ``tests/<action>.yaml`` (schema ``plugin-tests``). Each case
is run as an operator's one-subscription mapping file would run it, through the
real pipeline and the real request builder (no network), so a plugin developer
writes no test code for the common case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from engine.config import schemas
from engine.config.definitions import Catalog
from engine.config.mappingfile import load_mapping_document
from engine.config.yamlsource import load_file, load_text
from engine.delivery.records import DeadLetter, Outgoing
from engine.delivery.requests import Requests
from engine.errors import ConfigError
from engine.tools.mappingtests import CaseResult, payload_diff
from engine.pipeline import Pipeline


def _mapping_for(slug: str, action: str, case: dict[str, Any]) -> dict[str, Any]:
    subscription: dict[str, Any] = {"name": case["name"], "action": action}
    for key in ("mapping", "trigger"):
        if key in case:
            subscription[key] = case[key]
    return {"destination": slug, "settings": case.get("settings", {}), "subscriptions": [subscription]}


def _lowered(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _compare_request(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("method", "url"):
        if expected[key] != got[key]:
            problems.append(f"{key}: expected {expected[key]!r}, got {got[key]!r}")
    sent = _lowered(got["headers"])
    for name, value in _lowered(expected.get("headers", {})).items():
        if sent.get(name) != value:
            problems.append(f"header {name}: expected {value!r}, got {sent.get(name)!r}")
    if expected["body"] != got["body"]:
        problems.append("body differs\n" + payload_diff(expected["body"], got["body"]))
    return problems


def _run_case(catalog: Catalog, slug: str, action: str, case: dict[str, Any], where: str) -> tuple[str, ...]:
    text = yaml.safe_dump(_mapping_for(slug, action, case), sort_keys=False)
    try:
        mapping = load_mapping_document(load_text(text, where), env={}, catalog=catalog)
    except ConfigError as error:
        return (f"the case's settings, mapping or trigger are wrong: {error.message}",)
    outcomes = Pipeline(mapping).run(case["event"], include_filtered=True)
    outcome = outcomes[0]
    if "error" in case:
        if outcome.status == "invalid" and any(case["error"] in e for e in outcome.errors):
            return ()
        return (f'expected an invalid event with an error mentioning "{case["error"]}", got {outcome.status}: '
                + "; ".join(outcome.errors or [outcome.reason or ""]),)
    if outcome.status != "ok":
        return (f"expected a request, but the event is {outcome.status}: " + "; ".join(outcome.errors or [outcome.reason or ""]),)
    refused: list[DeadLetter] = []
    requests = Requests(mapping).preview(mapping.subscriptions[0], [Outgoing(0, case["event"], outcome.payload or {})], refused.append)
    if refused:
        return (f"expected a request, but the payload was refused: {refused[0].reason}",)
    return tuple(_compare_request(case["request"], requests[0]))


def run_plugin_tests(folder: Path, catalog: Catalog | None = None) -> list[CaseResult]:
    """Run every ``tests/*.yaml`` of the plugin in ``folder``."""
    catalog = catalog or Catalog()
    dest = catalog.add_folder(folder)
    results = []
    for path in sorted((folder / "tests").glob("*.yaml")):
        doc = load_file(path)
        schemas.check(doc, "plugin-tests")
        action = doc.data["action"]
        if action not in dest.actions:
            raise doc.place(ConfigError(f'unknown action "{action}" for {dest.slug} (actions: {", ".join(dest.actions)})', "/action"))
        for index, case in enumerate(doc.data["cases"]):
            where = str(doc.locate(f"/cases/{index}"))
            results.append(CaseResult(case["name"], where, _run_case(catalog, dest.slug, action, case, where)))
    return results
