"""The one ``{{…}}`` template compiler (engine.lang.template) and its two uses: mapping ``@template`` and plugin templates over settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.definitions import settings_template
from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import compile_path
from engine.lang.mapping import compile_mapping, explain
from engine.lang.missing import MISSING
from engine.lang.template import Placeholder, Use, compile_parts, compile_template, join, lex, text_of

DECLARED = ("base_url", "api_token", "region", "headers")

OLD_SETTING_REF = re.compile(r"\{\{\{?\s*settings\.([A-Za-z0-9_]+)")
"""How plugin files found their setting references before the one compiler: the reference the property below holds it to."""


def _use(what: str = "@template") -> Use:
    return Use(what, "a path such as {{traits.name}}", lambda inner: lambda doc: doc.get(inner))


def test_lex_gives_pieces_and_placeholders_with_their_columns() -> None:
    assert list(lex("Hi {{ a }}!{{{b}}}}", _use())) == ["Hi ", Placeholder("a", 4, 6), "!", Placeholder("b", 12, 14), "}"]
    assert list(lex("", _use())) == []


@pytest.mark.parametrize(
    ("text", "column", "offset", "detail"),
    [
        ("Hi {{a", 4, 3, "unclosed {{; close it with }}"),
        ("{{{a}}", 1, 0, "unclosed {{{; close it with }}}"),
        ("x {{ }}", 3, 2, "empty placeholder; write a path such as {{traits.name}}"),
    ],
)
def test_lexing_errors_have_one_wording_with_the_column(text: str, column: int, offset: int, detail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_template(text, _use(), "/p")
    assert caught.value.message == f"@template at column {column}: {detail}"
    assert (caught.value.pointer, caught.value.offset) == ("/p", offset)


def test_a_resolution_error_is_worded_alike_and_points_inside_the_placeholder() -> None:
    def resolve(inner: str) -> Any:
        raise ConfigError("no such thing", offset=2)

    with pytest.raises(ConfigError) as caught:
        compile_template("ab{{  xyz }}", Use("the template", "x", resolve), "/p")
    assert caught.value.message == "the template at column 3: no such thing"
    assert caught.value.offset == 6 + 2  # the placeholder's text starts at 6


def test_the_first_error_in_the_text_is_the_one_reported() -> None:
    with pytest.raises(ConfigError, match="column 1: invalid"):
        compile_mapping({"@template": "{{.}}{{[0]a"})


def test_values_become_text_as_segment_writes_them() -> None:
    assert [text_of(v) for v in (None, "a", 42.0, 1.5, True, [1, [None, "b"]], {"k": [1]})] == ["", "a", "42", "1.5", "true", "1,,b", '{"k":[1]}']


def test_a_limited_template_counts_what_it_renders() -> None:
    layout, placeholders = compile_parts("{{s}}{{s}}", _use())
    assert join(layout, ["ab", "ab"], limit=5, what="@template") == "abab"
    with pytest.raises(MappingFailure, match="@template would render more than 5 characters"):
        join(layout, ["abc", "abc"], limit=5, what="@template")


# --- plugin templates over settings --------------------------------------------------------


def test_a_settings_template_renders_setting_values() -> None:
    render = settings_template("{{settings.base_url}}/v1?r={{{ settings.region }}}&t={{settings.api_token}}", DECLARED)
    assert render({"base_url": "https://x", "region": "eu"}) == "https://x/v1?r=eu&t="


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("Bearer {{settings.token}}", "the template at column 8: settings.token is not declared (settings: base_url, api_token, region, headers)", 18),
        ("{{ traits.name }}", "the template at column 1: traits.name is not a setting: a plugin's template names settings only, as {{settings.base_url}}", 3),
        ("{{settings.base_url}", "the template at column 1: unclosed {{; close it with }}", 0),
        ("x{{}}", "the template at column 2: empty placeholder; write a setting such as {{settings.base_url}}", 1),
    ],
)
def test_a_settings_template_that_names_no_declared_setting_is_refused(text: str, message: str, offset: int) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_template(text, DECLARED, "/request/url")
    assert (caught.value.message, caught.value.pointer, caught.value.offset) == (message, "/request/url", offset)


LITERAL = st.text(st.sampled_from(["a", "/", ":", " ", "}", "?", "=", "é"]), max_size=6)
SETTING_NAMES = st.sampled_from([*DECLARED, "undeclared", "Token_2"])
SETTING_VALUES = st.dictionaries(st.sampled_from(DECLARED), st.text(max_size=5) | st.integers() | st.dictionaries(st.sampled_from("ab"), st.text(max_size=2)), max_size=4)


@st.composite
def settings_templates(draw: st.DrawFn) -> str:
    """A template of literal text and ``{{ settings.NAME }}`` placeholders, double or triple braces, spaces inside or not."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(LITERAL))  # a "}" right after a placeholder stays text
        braces = draw(st.sampled_from([1, 2]))
        spaces = draw(st.sampled_from(["", " ", "  "]))
        name = draw(SETTING_NAMES)
        parts.append("{" * (braces + 1) + f"{spaces}settings.{name}{spaces}" + "}" * (braces + 1))
    parts.append(draw(LITERAL))
    return "".join(parts)


@settings(max_examples=300)
@given(text=settings_templates(), values=SETTING_VALUES)
def test_a_settings_template_names_what_plugin_files_named_before_and_renders_as_request_rendering_did(text: str, values: dict[str, Any]) -> None:
    referenced = set(OLD_SETTING_REF.findall(text))
    try:
        render = settings_template(text, DECLARED)
    except ConfigError as error:
        assert not referenced <= set(DECLARED), error.message
        assert "is not declared" in error.message
        return
    assert referenced <= set(DECLARED)
    # Requests rendered a plugin template as a mapping @template over {"settings": values}.
    assert render(values) == compile_mapping({"@template": text}).evaluate({"settings": values})


PATHS = st.sampled_from(["a", "b.c", "$.a", "$['b']['c']", "items[0]", "nope", "a.b"])
DOCUMENTS = st.fixed_dictionaries(
    {}, optional={"a": st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2),
                  "b": st.dictionaries(st.sampled_from(["c"]), st.integers() | st.text(max_size=2)),
                  "items": st.lists(st.text(max_size=2), max_size=2)},
)


@st.composite
def mapping_templates(draw: st.DrawFn) -> tuple[str, list[str | tuple[str]]]:
    """A template and its pieces: text as it is, and (path,) for each placeholder."""
    text, pieces = "", []
    for _ in range(draw(st.integers(0, 4))):
        literal = draw(LITERAL)
        path = draw(PATHS)
        braces = draw(st.sampled_from([2, 3]))
        spaces = draw(st.sampled_from(["", " "]))
        text += literal + "{" * braces + spaces + path + spaces + "}" * braces
        pieces += [literal, (path,)]
    tail = draw(LITERAL)
    return text + tail, [*pieces, tail]


@settings(max_examples=300)
@given(template=mapping_templates(), doc=DOCUMENTS)
def test_a_mapping_template_renders_its_pieces_in_order(template: tuple[str, list[Any]], doc: dict[str, Any]) -> None:
    text, pieces = template
    expected = "".join(text_of(compile_path(piece[0]).evaluate(doc)) if isinstance(piece, tuple) else piece for piece in pieces)
    assert compile_mapping({"@template": text}).evaluate(doc) == expected
    assert compile_mapping({"@template": {"@literal": text}}).evaluate(doc) == expected  # the same, given by the event


@settings(max_examples=300)
@given(template=mapping_templates(), doc=DOCUMENTS, given_by_event=st.booleans())
def test_missing_invalid_fails_exactly_when_a_placeholder_has_no_value(template: tuple[str, list[Any]], doc: dict[str, Any], given_by_event: bool) -> None:
    """Against a plain reference: each placeholder's value read on its own; missing or null -> failure naming them all, else the default text."""
    text, pieces = template
    values = [(piece[0], compile_path(piece[0]).evaluate(doc)) for piece in pieces if isinstance(piece, tuple)]
    missing = [path for path, value in values if value is MISSING]
    null = [path for path, value in values if value is None]
    source: Any = {"@literal": text} if given_by_event else text  # a template the event gives is held to the same rule
    default = compile_mapping({"@template": source})
    rendered, note = explain(default, doc)
    assert rendered == default.evaluate(doc)
    assert (note["found"], note["missing"], note.get("null", [])) == (not missing, missing, null)
    strict = compile_mapping({"@template": {"text": source, "missing": "invalid"}})
    try:
        got = strict.evaluate(doc)
    except MappingFailure as failure:
        named = ", ".join(f"{{{{{path}}}}} ({'missing' if value is MISSING else 'null'})" for path, value in values if value is MISSING or value is None)
        assert (missing or null) and f"@template has no value for {named} and declares missing: invalid" in str(failure)
        return
    assert not missing and not null
    assert got == rendered


@settings(max_examples=500)
@given(text=st.lists(st.sampled_from(["{", "}", " ", "a", ".", "settings.x", "$"]), max_size=12).map("".join))
def test_both_uses_lex_alike(text: str) -> None:
    """Whatever the text, a mapping template and a plugin template find the same pieces, or fail at the same place."""

    def lexed(use: Use) -> Any:
        try:
            return list(lex(text, use))
        except ConfigError as error:
            return error.offset, error.message.split(": ", 1)[1].split(";")[0]

    mapping, plugin = lexed(_use("@template")), lexed(_use("the template"))
    assert mapping == plugin
    if isinstance(mapping, tuple):
        offset, _ = mapping
        assert text[offset:].startswith("{{")
    else:
        assert not any(isinstance(piece, str) and "{{" in piece for piece in mapping)
