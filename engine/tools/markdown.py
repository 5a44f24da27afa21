"""Markdown pieces the generated pages share: table cells, code spans, tables, and values written as YAML flow."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml


def cell(value: object) -> str:
    """Text for a table cell: a pipe escaped (GitHub and markdown-it read ``\\|`` as one), on one line."""
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def span(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds (in a table, pass the whole cell to :func:`cell`)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def code(value: object) -> str:
    """A table cell holding ``value`` as a code span, or nothing for no value."""
    return cell(span(str(value))) if value not in (None, "") else ""


def fenced(info: str, text: str) -> list[str]:
    """A fenced block holding ``text`` exactly: its fence longer than any run of backticks inside."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return [fence + info, text, fence]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


_INDICATOR = "-?:,[]{}#&*!|>'\"%@`"


def _plain(text: str) -> bool:
    """Whether ``text`` can be a plain (unquoted) scalar inside YAML flow and read back as the same string."""
    if not text or text[0] in _INDICATOR or text != text.strip() or any(ch in text for ch in ",[]{}\n\t"):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    try:
        return yaml.safe_load(text) == text and type(yaml.safe_load(text)) is str
    except yaml.YAMLError:
        return False


def _flow(value: Any) -> str:
    if type(value) is dict:
        return "{" + ", ".join(f"{_flow(key)}: {_flow(item)}" for key, item in value.items()) + "}"
    if type(value) is list:
        return "[" + ", ".join(map(_flow, value)) + "]"
    if type(value) is str and _plain(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def yaml_flow(value: Any) -> str:
    """``value`` as YAML flow a mapping file could hold (``{"@coalesce": [$.userId, $.anonymousId]}``).

    Strings are left unquoted where YAML reads them back as the same strings, quoted as
    JSON elsewhere; the whole text is read back, and if it does not give ``value`` again
    (types included) it is written as JSON, which YAML reads as it is.
    """
    text = _flow(value)
    try:
        same = json.dumps(yaml.safe_load(text), sort_keys=True) == json.dumps(value, sort_keys=True)
    except yaml.YAMLError:
        same = False
    return text if same else json.dumps(value, ensure_ascii=False)
