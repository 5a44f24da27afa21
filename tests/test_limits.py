"""The README's table of limits (issue 12) states each limit the code enforces, with the code's own number."""

from __future__ import annotations

import re

import pytest

from engine import events, limits
from engine.runtime.serve import intake, storage
from tests.conftest import REPO


def _rows() -> dict[str, str]:
    section = REPO.joinpath("README.md").read_text().split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    return {cells[1].strip(): line for line in section.splitlines() if (cells := line.split("|")) and len(cells) > 3}


def _mib(n: int) -> str:
    assert n % (1 << 20) == 0
    return f"{n >> 20} MiB"


# row of the README's table -> the text of the code's limit that row must state
LIMITS = {
    "nesting of one event (objects and arrays)": f"{limits.MAX_DEPTH} levels",
    "integers": f"{limits.MIN_INT} to {limits.MAX_INT}",
    "one NDJSON line, array element or pretty-printed object": _mib(events._MAX_EVENT),
    "intake: one event": f"({limits.EVENT_LIMIT} bytes)",
    "intake: one request": f"({limits.REQUEST_LIMIT} bytes)",
    "intake: events per request": f"{limits.MAX_BATCH_EVENTS:,}",
    "intake: nesting of one request": f"{limits.MAX_REQUEST_DEPTH} levels",
    "intake: a request's head": f"{intake.HEAD_TIMEOUT:g} s",
    "intake: a request's body": f"{intake.BODY_TIMEOUT:g} s",
    "queue: free disk": f"{storage.RESERVE_BYTES // 1024} KB",
    "a mapping or plugin file": _mib(limits.MAX_FILE_BYTES),
    "nesting of a YAML file": f"{limits.MAX_YAML_DEPTH} levels",
    "nesting of one mapping value (objects, lists, directives)": f"{limits.MAX_MAPPING_DEPTH} levels",
    "nesting of one expression (JSONPath, JMESPath, FQL: brackets, parentheses, negations)": f"{limits.MAX_EXPRESSION_DEPTH} levels",
    "integers in a file or an expression": f"{limits.MAX_INT_DIGITS} digits",
    "a path or template an event computes (`{\"@path\": {\"@path\": …}}`)": f"{limits.MAX_COMPUTED_CHARS} characters",
    "what a template an event computes renders": f"{limits.MAX_COMPUTED_RENDER:,} characters",
    "one `@liquid` template": f"{limits.MAX_LIQUID_CHARS} characters",
    "what one Liquid filter or render makes": f"{limits.MAX_LIQUID_VALUE:,} characters",
    "the work of one Liquid render": f"{limits.MAX_LIQUID_WORK:,} characters and items",
}


@pytest.mark.parametrize("row", sorted(LIMITS))
def test_the_readme_states_the_limit(row: str) -> None:
    rows = _rows()
    assert row in rows, f"the README's Limits table has no row {row!r}"
    assert LIMITS[row] in rows[row], f"the README says {rows[row]!r}; the code's limit is {LIMITS[row]}"


def test_every_limit_of_engine_limits_has_a_row() -> None:
    declared = {name for name in vars(limits) if re.fullmatch(r"(MAX|MIN)_[A-Z_]+|[A-Z_]+_LIMIT", name)}
    stated = {"MAX_DEPTH", "MIN_INT", "MAX_INT", "EVENT_LIMIT", "REQUEST_LIMIT", "MAX_BATCH_EVENTS", "MAX_REQUEST_DEPTH",
              "MAX_FILE_BYTES", "MAX_YAML_DEPTH", "MAX_MAPPING_DEPTH", "MAX_EXPRESSION_DEPTH", "MAX_INT_DIGITS",
              "MAX_COMPUTED_CHARS", "MAX_COMPUTED_RENDER", "MAX_LIQUID_CHARS", "MAX_LIQUID_VALUE", "MAX_LIQUID_WORK"}
    assert declared == stated, "a limit was added to engine/limits.py: give it a row in the README and in LIMITS above"
