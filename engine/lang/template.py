"""``{{…}}`` templates, compiled once: a mapping's ``@template``, and a plugin's URLs, methods and headers.

One lexer finds the placeholders (``{{ x }}``, or ``{{{ x }}}`` as in Segment; spaces
allowed inside the braces) and words every error the same way: what the template is, the
column of the placeholder, what is wrong, with the error's offset in the text so the
loader can say FILE:LINE:COL. What a placeholder may name belongs to each use (a
:class:`Use`): an event path in a mapping, a setting in a plugin file. Its ``resolve``
compiles the placeholder's text to a getter, once; rendering only calls the getters.

A value becomes text as Segment writes it: missing or null is "", a number as JSON
writes it (``42.0`` is ``"42"``), an array its items joined with commas, an object its
JSON text (Segment's ``[object Object]`` carries nothing). A mapping's ``@template`` may
declare ``missing: invalid`` instead (``engine.lang.mapping.templates``): there a missing
or null placeholder makes the event invalid rather than "".
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


Layout = tuple[str | int, ...]
"""A compiled template's pieces in order: literal text, or the position of a placeholder's value."""


class Compiled(NamedTuple):
    """A template compiled once: its layout, and each placeholder's text with the getter of its value."""

    layout: Layout
    placeholders: tuple[tuple[str, Getter], ...]


def compile_parts(text: str, use: Use, pointer: str = "") -> Compiled:
    """The template's pieces, each placeholder resolved by ``use`` once; ConfigError names the first bad one."""
    layout: list[str | int] = []
    placeholders: list[tuple[str, Getter]] = []
    for piece in lex(text, use, pointer):
        if isinstance(piece, str):
            layout.append(piece)
            continue
        try:
            placeholders.append((piece.text, use.resolve(piece.text)))
        except ConfigError as error:
            raise template_error(use, piece.column, error.message, pointer, piece.offset + (error.offset or 0)) from None
        layout.append(len(placeholders) - 1)
    return Compiled(tuple(layout), tuple(placeholders))


def join(layout: Layout, values: list[Any], limit: int | None = None, what: str = "the template") -> str:
    """The text of ``layout`` with its placeholders' ``values``, written as Segment writes them.

    With a ``limit`` (a template an event gave) the text is refused past ``limit``
    characters, counted piece by piece, so that an event cannot make it huge first.
    """
    out: list[str] = []
    size = 0
    for part in layout:
        piece = part if isinstance(part, str) else text_of(values[part])
        if limit is not None:
            size += len(piece)
            if size > limit:
                raise MappingFailure(f"{what} would render more than {limit:,} characters (the limit for a template an event gives)")
        out.append(piece)
    return "".join(out)


def renderer(layout: Layout, getters: tuple[Getter, ...]) -> Callable[[Any], str]:
    """The per-event render of a template with no limit: each getter called in place, nothing collected first."""
    parts = tuple(part if isinstance(part, str) else getters[part] for part in layout)

    def render(doc: Any) -> str:
        out = []
        for part in parts:
            if type(part) is str:
                out.append(part)
            else:
                value = part(doc)  # type: ignore[operator]
                out.append(value if type(value) is str else text_of(value))
        return "".join(out)

    return render


def compile_template(text: str, use: Use, pointer: str = "") -> Callable[[Any], str]:
    """The template compiled once: the function renders one document (an event, or a plugin's settings)."""
    layout, placeholders = compile_parts(text, use, pointer)
    return renderer(layout, tuple(get for _, get in placeholders))


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
