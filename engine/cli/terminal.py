"""``preview --explain`` for a person: one table per event and subscription (field, value, source, branch, coercion, notes).

The notes are read generically, so a key the engine adds to them later shows up here
unchanged: ``from`` is a field's source, ``coerced`` its coercion, a decision (``@if``'s
``taken`` and ``why``, ``@coalesce``'s ``branch`` among the options ``tried``) its branch;
a value that is itself a note, or a list or object of notes, is walked for the same;
every other key is shown as it is under ``notes`` (a nested one after its own source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from engine.pipeline import Outcome

MISSING_VALUE = "(missing)"
"""What the value column says of a field the payload does not have (not the same as null or "")."""
SHORT_SOURCE = 30
"""A nested node whose source is longer is named by its directive alone, before what it says."""
_DECISION = frozenset({"taken", "why", "condition", "branch", "tried"})
"""The keys a decision is written from; shown in the branch column, not again under notes."""
COLUMNS = ("field", "value", "source", "branch", "coercion", "notes")
"""The table's columns; the last three are shown when some field of the event has something in them."""
_STATUS_STYLE = {"ok": "green", "invalid": "bold red", "filtered": "dim"}


@dataclass
class _Account:
    """What one field's note says, sorted into the table's columns."""

    branches: list[str] = field(default_factory=list)
    coercions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ExplainTables:
    """Writes one table per outcome on a terminal (rich chooses colours and wraps long values to its width)."""

    def __init__(self, stream: IO[str], width: int | None = None) -> None:
        self.console = Console(file=stream, highlight=False, width=width)

    def outcome(self, index: int, connection: str, outcome: Outcome) -> None:
        heading = Text(f"event {index} · {connection} · {outcome.subscription} ({outcome.action}): ")
        heading.append(outcome.status, style=_STATUS_STYLE.get(outcome.status, ""))
        if outcome.status == "filtered":
            self.console.print(heading.append(f" ({outcome.reason})", style="dim"))
            return
        payload, explain = outcome.payload or {}, outcome.explain or {}
        rows = [_row(name, payload, explain.get(name)) for name in [*explain, *(name for name in payload if name not in explain)]]
        shown = [i for i, column in enumerate(COLUMNS) if i < 3 or any(row[i] for row in rows)]  # an empty branch... column is left out
        columns = (Column(COLUMNS[i], overflow="fold", no_wrap=i == 0) for i in shown)  # folded, never cut: a value is shown whole
        table = Table(*columns, title=heading, title_justify="left", title_style="bold")
        for row in rows:
            table.add_row(*(Text(row[i]) for i in shown))  # Text: a value's brackets are not rich markup
        self.console.print(table)
        for error in outcome.errors:
            self.console.print(Text(f"  ✗ {error}", style="red"))
        self.console.print()


def _row(name: str, payload: dict[str, Any], note: Any) -> tuple[str, ...]:
    value = _json(payload[name]) if name in payload else MISSING_VALUE
    if not isinstance(note, dict):  # a payload field no mapping value made (none today): its value alone
        return name, value, "", "", "", ""
    account = _Account()
    _walk(note, account, nested=False, absent=name not in payload)
    return (name, value, str(note.get("from", "")), "\n".join(account.branches), "\n".join(account.coercions),
            "\n".join(account.notes))


def _walk(note: dict[str, Any], account: _Account, nested: bool, absent: bool = False) -> None:
    """Sort ``note``'s keys into ``account``; nested notes are walked, and what they say is prefixed with their source.

    ``absent``: the field is not in the payload, so a coercion's ``to`` of null means it was dropped.
    """
    prefix = f"{_named(str(note.get('from', '')))}: " if nested else ""
    decision = _decision(note)
    shown_elsewhere = {"from", "found"} | (_DECISION if decision is not None else set())
    if decision is not None:
        account.branches.append(prefix + decision)
    for key, value in note.items():
        inner = _notes(value)
        if key == "coerced":
            account.coercions.append(prefix + _coercion(value, absent))
        elif inner is not None:
            for one in inner:
                _walk(one, account, nested=True)
        elif key not in shown_elsewhere and value not in ([], {}, None):
            account.notes.append(f"{prefix}{key}: {_shown(value)}")


def _named(source: str) -> str:
    """A nested node named briefly: its source when short, else its directive (``@coalesce(…)``)."""
    return source if len(source) <= SHORT_SOURCE or "(" not in source else source.split("(", 1)[0] + "(…)"


def _decision(note: dict[str, Any]) -> str | None:
    """Which way the node went: ``@if``'s branch and why, or which ``@coalesce`` option gave the value."""
    if "taken" in note:
        return f"{note['taken']}: {note['why']}" if note.get("why") else str(note["taken"])
    branch, tried = note.get("branch"), note.get("tried")
    if isinstance(tried, list) and (branch is None or type(branch) is int):
        if branch is None:
            return "no option gave a value"
        option = tried[branch].get("from") if 0 <= branch < len(tried) and isinstance(tried[branch], dict) else None
        return f"option {branch + 1}: {option}" if option else f"option {branch + 1}"
    return None


def _notes(value: Any) -> list[dict[str, Any]] | None:
    """``value`` as the notes it holds (a note, a list of them, an object of them), or None when it is not notes."""
    def is_note(one: Any) -> bool:
        return isinstance(one, dict) and "from" in one

    if is_note(value):
        return [value]
    if isinstance(value, list) and value and all(map(is_note, value)):
        return list(value)
    if isinstance(value, dict) and value and all(map(is_note, value.values())):
        return list(value.values())
    return None


def _coercion(coerced: Any, absent: bool) -> str:
    if not isinstance(coerced, dict) or "by" not in coerced:
        return _shown(coerced)
    to = MISSING_VALUE if absent and coerced.get("to") is None else _json(coerced.get("to"))
    said = f"{coerced['by']}: {_json(coerced.get('from'))} → {to}"
    rest = {key: value for key, value in coerced.items() if key not in ("by", "from", "to")}
    return said + "".join(f"; {key}: {_shown(value)}" for key, value in rest.items())


def _shown(value: Any) -> str:
    """A note's value for a person: text as it is, a list of texts joined, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(one, str) for one in value):
        return ", ".join(value)
    return _json(value)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
