"""``docs/segment-compat.md`` stays true: every row's example runs here (issue 13, must-show 1 and 2).

Each row of the page's two tables is a mapping (or trigger), an event, Segment's result and
actionmap's. The row's actionmap result is what the engine must give; a row whose two
results differ must say why, and one whose results agree must not claim a difference.
So a behaviour listed on the page cannot change without a test failing, and a divergence
cannot be added to the code's behaviour without the page saying so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from engine.errors import ConfigError, MappingFailure
from engine.lang.mapping import DIRECTIVES, compile_mapping, explain
from engine.lang.missing import MISSING
from engine.lang.trigger import compile_trigger
from tests.conftest import REPO

PAGE = REPO / "docs" / "segment-compat.md"
WORDS = ("missing", "fails", "load error")


@dataclass(frozen=True)
class Row:
    table: str  # "mapping" or "trigger"
    form: str
    source: str  # the mapping's JSON or the trigger's text
    event: dict[str, Any]
    segment: str
    actionmap: str
    why: str

    @property
    def differs(self) -> bool:
        return _word(self.segment) != _word(self.actionmap)


def _word(cell: str) -> str:
    """A result cell without the message fragment a load error may carry (``load error: `fragment` ``)."""
    return "load error" if cell.startswith("load error") else cell


def _cells(line: str) -> list[str]:
    """A table row's cells; ``\\|`` is a pipe inside a cell (as GitHub reads it)."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), f"expected a code span, got {cell!r}"
    return cell[1:-1]


def _rows() -> list[Row]:
    rows: list[Row] = []
    table = None
    for line in PAGE.read_text().splitlines():
        if line.startswith("## "):
            table = {"## Mapping directives": "mapping", "## Triggers (FQL)": "trigger"}.get(line.strip())
            continue
        if table is None or not line.startswith("| ") or line.startswith("| form ") or line.startswith("|---"):
            continue
        form, source, event, segment, actionmap, why = _cells(line)
        rows.append(Row(table, form, _code(source), json.loads(_code(event)), segment, actionmap, why))
    return rows


ROWS = _rows()


def _expected(cell: str) -> Any:
    if cell.startswith("load error: "):
        return LoadError(_code(cell[len("load error: "):]))
    return cell if cell in WORDS else json.loads(_code(cell))


@dataclass(frozen=True)
class LoadError:
    """A load error whose message holds ``fragment`` (so a typo in a row cannot pass for the error it documents)."""

    fragment: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigError) and self.fragment in other.message


def _mapping_result(row: Row) -> Any:
    try:
        node = compile_mapping(json.loads(row.source), "/m")
    except ConfigError as error:
        return error
    try:
        value = node.evaluate(row.event)
    except MappingFailure:
        return "fails"
    explained, _ = explain(node, row.event)  # the traced evaluation must give the value the plain one gives
    assert explained == value or (explained is MISSING and value is MISSING), row.form
    return "missing" if value is MISSING else value


def _trigger_result(row: Row) -> Any:
    try:
        trigger = compile_trigger(row.source)
    except ConfigError as error:
        return error
    return trigger.matches(row.event)


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.table}: {row.form}" for row in ROWS])
def test_the_row_holds(row: Row) -> None:
    assert row.actionmap != "load error", f"{row.form}: say which load error, as load error: `a fragment of its message`"
    got = _mapping_result(row) if row.table == "mapping" else _trigger_result(row)
    assert _expected(row.actionmap) == got, f"{row.form}: the page says {row.actionmap}, actionmap gives {got!r}"


@pytest.mark.parametrize("row", ROWS, ids=[f"{row.table}: {row.form}" for row in ROWS])
def test_a_difference_says_why(row: Row) -> None:
    if row.segment not in WORDS:
        json.loads(_code(row.segment))  # a well-formed result cell: a word, or JSON
    if row.differs:
        assert not row.why.startswith("—") and len(row.why) > 20, f"{row.form}: Segment and actionmap differ, and the row gives no reason"
    else:
        assert row.why.startswith("—"), f"{row.form}: both give {row.segment}, but the row gives a reason as if they differed"


def test_the_page_has_both_tables_and_every_directive() -> None:
    tables = {row.table for row in ROWS}
    assert tables == {"mapping", "trigger"}
    written = {name for row in ROWS if row.table == "mapping" for name in re.findall(r'"(@[A-Za-z]+)"', row.source)}
    assert set(DIRECTIVES) <= written, f"directives with no row: {sorted(set(DIRECTIVES) - written)}"


def test_every_fql_form_has_a_row() -> None:
    triggers = " ".join(row.source for row in ROWS if row.table == "trigger")
    for form in ("= \"", "!= \"", "= 5", "!= 456", " < ", "<= ", " > ", ">= ", "= true", "!= true", "= null", "!= null",
                 "contains(", "!contains(", "match(", "!match(", " and ", " or ", "not ", "!(", "((", "'", "\\ "):
        assert form in triggers, f"no row writes {form!r}"


# Issue 13's list, bullet by bullet: the rows that show it, and whether actionmap now gives Segment's result.
ISSUE_13 = {
    "!contains / !match are false when the field is missing or not a string": (
        ["`!contains`, missing", "`!contains`, not a string", "`!match`, missing"], True),
    "a number comparison is false unless the value is a number, != included": (
        ["`=` a number, on a string", "`!=` a number, missing", "`!=` a number, on a string", "`<=` a number, on a missing field"], True),
    "Segment dotted paths in @path": (
        ["`@path`, a name with a space", "`@path`, a name with a dash", "`@path`, `user-agent`", "`@path`, a name starting with a digit"], True),
    '@path of "" and "$." is the whole event': (["`@path` of `\"\"`", "`@path` of `$.`"], True),
    '@replace on null gives ""': (["`@replace`, null"], True),
    "@merge of no objects gives {}": (["`@merge` of no objects"], True),
    "@path and @template take a directive": (["`@path` of a directive", "`@template` of a directive"], True),
    "backslash escapes in FQL field paths and +5 literals": (["a backslash in a field path", "a `+5` literal"], True),
    "@liquid exists": (["`@liquid`", "`@liquid`, a tag and a filter", "`@liquid`, a missing variable"], True),
    "@template of an object (a documented divergence)": (["`@template`, an object"], False),
}


@pytest.mark.parametrize("bullet", sorted(ISSUE_13))
def test_issue_13_bullet(bullet: str) -> None:
    forms, same = ISSUE_13[bullet]
    by_form = {row.form: row for row in ROWS}
    for form in forms:
        assert form in by_form, f"the page has no row {form!r}"
        assert by_form[form].differs is not same, f"{form}: Segment gives {by_form[form].segment}, actionmap {by_form[form].actionmap}"
