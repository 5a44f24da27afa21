"""``{{…}}`` templates, compiled once: a mapping's ``@template``, and a plugin's URLs, methods and headers.

One lexer finds the placeholders (``{{ x }}``, or ``{{{ x }}}`` as in Segment; spaces
allowed inside the braces) and words every error the same way: what the template is, the
column of the placeholder, what is wrong, with the error's offset in the text so the
loader can say FILE:LINE:COL. What a placeholder may name belongs to each use (a
:class:`Use`): an event path in a mapping, a setting in a plugin file. Its ``resolve``
compiles the placeholder's text to a getter, once; rendering only calls the getters.

A value becomes text as Segment writes it: missing or null is "", a number as JSON
writes it (``42.0`` is ``"42"``), an array its items joined with commas, an object its
JSON text (Segment's ``[object Object]`` carries nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import Getter
from engine.lang.missing import MISSING

Resolve = Callable[[str], Getter]
"""A placeholder's text (stripped) -> the getter of its value; ConfigError (offset inside that text) if it names nothing valid."""


@dataclass(frozen=True)
class Use:
    """What a template is used for: how messages name it, what a placeholder holds, and how one is read."""

    what: str  # "@template", "the template": the start of every error
    wanted: str  # advice for an empty placeholder: "a path such as {{traits.name}}"
    resolve: Resolve


class Placeholder(NamedTuple):
    """One ``{{…}}`` of a template."""

    text: str  # what the braces hold, stripped
    column: int  # 1-based column of its opening braces
    offset: int  # 0-based offset of ``text`` in the template


def template_error(use: Use, column: int, detail: str, pointer: str, offset: int) -> ConfigError:
    """The one wording of a template's errors: ``@template at column 4: unclosed {{; close it with }}``."""
    return ConfigError(f"{use.what} at column {column}: {detail}", pointer, offset)


def lex(text: str, use: Use, pointer: str = "") -> Iterator[str | Placeholder]:
    """The template's literal pieces and placeholders, in order; an unclosed or empty placeholder is a ConfigError.

    A generator, so that the first error in the text is the one reported, whether the
    lexer finds it or the resolution of an earlier placeholder does.
    """
    at = 0
    while (start := text.find("{{", at)) >= 0:
        if start > at:
            yield text[at:start]
        close = "}}}" if text.startswith("{{{", start) else "}}"
        inner_start = start + len(close)
        end = text.find(close, inner_start)
        if end < 0:
            opening = "{" * len(close)
            raise template_error(use, start + 1, f"unclosed {opening}; close it with {close}", pointer, start)
        inner = text[inner_start:end]
        if not inner.strip():
            raise template_error(use, start + 1, f"empty placeholder; write {use.wanted}", pointer, start)
        yield Placeholder(inner.strip(), start + 1, inner_start + len(inner) - len(inner.lstrip()))
        at = end + len(close)
    if at < len(text):
        yield text[at:]


def compile_template(text: str, use: Use, pointer: str = "", limit: int | None = None) -> Callable[[Any], str]:
    """The template compiled once: the function renders one document (an event, or a plugin's settings).

    With a ``limit`` (a template an event gave) the rendered text is refused past
    ``limit`` characters, counted piece by piece, so the event cannot make it explode.
    """
    parts: list[str | Getter] = []
    for piece in lex(text, use, pointer):
        if isinstance(piece, str):
            parts.append(piece)
            continue
        try:
            parts.append(use.resolve(piece.text))
        except ConfigError as error:
            raise template_error(use, piece.column, error.message, pointer, piece.offset + (error.offset or 0)) from None
    frozen = tuple(parts)

    def render(doc: Any) -> str:
        out = []
        for part in frozen:
            if type(part) is str:
                out.append(part)
            else:
                value = part(doc)  # type: ignore[operator]
                out.append(value if type(value) is str else text_of(value))
        return "".join(out)

    if limit is None:
        return render
    most = limit

    def render_within_limit(doc: Any) -> str:
        """The same text, counted piece by piece so that an event cannot make it huge first."""
        out: list[str] = []
        size = 0
        for part in frozen:
            piece = part if type(part) is str else text_of(part(doc))  # type: ignore[operator]
            size += len(piece)
            if size > most:
                raise MappingFailure(f"{use.what} would render more than {most:,} characters (the limit for a template an event gives)")
            out.append(piece)
        return "".join(out)

    return render_within_limit


def text_of(value: Any) -> str:
    """A value as template text: missing/null as "", arrays joined with commas, objects as JSON."""
    kind = type(value)
    if kind is str:
        return value
    if value is MISSING or value is None:
        return ""
    if kind is list:
        return ",".join(text_of(item) for item in value)
    if kind is dict:
        return compact_json(value)
    return scalar_text(value)


def scalar_text(value: bool | int | float) -> str:
    """A boolean or number as JSON writes it, integral floats without ``.0`` (as JavaScript does)."""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float and value.is_integer():
        return str(int(value))
    return repr(value)


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
