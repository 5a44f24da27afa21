"""Running the ``tests:`` of a mapping file: an event and what each subscription should make of it.

Every subscription whose trigger matches must be listed in ``expect`` (a match the
author did not expect fails the test), so a test cannot pass by forgetting a line.
A failure says what differs, with a diff of the payloads.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from engine.config.mappingfile import MappingFile
from engine.pipeline import Outcome, Pipeline


@dataclass(frozen=True)
class CaseResult:
    name: str
    where: str
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def payload_diff(expected: Any, got: Any) -> str:
    lines = difflib.unified_diff(_pretty(expected), _pretty(got), "expected", "got", lineterm="", n=2)
    return "\n".join("      " + line for line in lines)


def _compare(expectation: dict[str, Any], outcome: Outcome | None) -> str | None:
    """Why ``outcome`` does not meet ``expectation``, or None."""
    name = expectation["subscription"]
    status = expectation.get("status", "ok")
    got = outcome.status if outcome else "filtered"
    if got != status:
        detail = "; ".join(outcome.errors) if outcome and outcome.errors else (outcome.reason if outcome else "") or ""
        return f'subscription "{name}": expected {status}, got {got}' + (f" ({detail})" if detail else "")
    if status == "invalid" and "error" in expectation and outcome is not None:
        if not any(expectation["error"] in e for e in outcome.errors):
            return f'subscription "{name}": no error mentions "{expectation["error"]}"; errors were: ' + "; ".join(outcome.errors)
    if status == "ok" and "payload" in expectation and outcome is not None and outcome.payload != expectation["payload"]:
        return f'subscription "{name}": payload differs\n' + payload_diff(expectation["payload"], outcome.payload)
    return None


def run_tests(mapping_file: MappingFile) -> list[CaseResult]:
    pipeline = Pipeline(mapping_file)
    results = []
    for index, test in enumerate(mapping_file.tests):
        outcomes = {o.subscription: o for o in pipeline.run(test["event"], include_filtered=True)}
        failures = []
        for expectation in test["expect"]:
            problem = _compare(expectation, outcomes.get(expectation["subscription"]))
            if problem:
                failures.append(problem)
        listed = {e["subscription"] for e in test["expect"]}
        for name, outcome in outcomes.items():
            if name not in listed and outcome.status != "filtered":
                failures.append(f'subscription "{name}" matched ({outcome.status}) but the test does not expect it')
        where = str(mapping_file.document.locate(f"/tests/{index}"))
        results.append(CaseResult(test["name"], where, tuple(failures)))
    return results
