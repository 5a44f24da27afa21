"""``docs/language.md`` stays true (issue 16, must-show 2): every example runs, and nothing exists in one and not the other.

The page's examples are tables (a mapping, an event and the result; a trigger, an event and
whether it matches; a field declaration, a value and what is sent) and YAML blocks (a
mapping, an event, the result): each runs here through the real compilers. The page's
reference tables are compared with the code both ways: the directives and, by asking the
mapping compiler itself, each directive's arguments, whether each is required and what it
takes; the FQL operators and functions; the field types, constraint keys, formats,
``send_as`` forms and coercions; Liquid's tags and filters; the limits. A directive or an
argument added to the code without a line here, or a line here the code does not know,
fails a test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import limits
from engine.config.schemas import load_schema
from engine.errors import ConfigError, MappingFailure
from engine.lang.fields import compile_fields
from engine.lang.fields.coercions import _COERCIONS, NULL_TO_MISSING
from engine.lang.fields.constraints import _FORMATS
from engine.lang.fields.problems import _NOUNS, TYPES
from engine.lang.fields.timeformats import TIME_FORMATS
from engine.lang.liquid import DISABLED_FILTERS, DISABLED_TAGS, compile_liquid
from engine.lang.mapping import DIRECTIVES, compile_mapping, explain
from engine.lang.missing import MISSING
from engine.lang.trigger import FUNCTIONS, compile_trigger
from engine.lang.trigger.lexer import _KEYWORD_VALUES, _OPERATORS
from tests.conftest import REPO

PAGE = REPO / "docs" / "language.md"
TEXT = PAGE.read_text(encoding="utf-8")
PROBE = "__probe__"


@dataclass(frozen=True)
class Table:
    headings: tuple[str, ...]  # the ## and ### headings it is under
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (line number, cells)

    @property
    def section(self) -> str:
        return self.headings[-1] if self.headings else ""


def _cells(line: str) -> tuple[str, ...]:
    """A table row's cells; ``\\|`` is a pipe inside a cell, as GitHub and markdown-it read it."""
    return tuple(part.strip().replace("\\|", "|") for part in re.split(r"(?<!\\)\|", line.strip())[1:-1])


def _tables(text: str) -> list[Table]:
    tables: list[Table] = []
    headings: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            headings = headings[: max(level - 2, 0)] + [line.lstrip("#").strip()] if level >= 2 else []
        if line.startswith("|") and index + 1 < len(lines) and lines[index + 1].startswith("|---"):
            header = _cells(line)
            rows = []
            index += 2
            while index < len(lines) and lines[index].startswith("|"):
                rows.append((index + 1, _cells(lines[index])))
                index += 1
            tables.append(Table(tuple(headings), header, tuple(rows)))
            continue
        index += 1
    return tables


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """Every fenced block: (info string, body, line of its fence)."""
    return [(m.group(1), m.group(2), text[: m.start()].count("\n") + 1) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)]


TABLES = _tables(TEXT)
MAPPING, TRIGGER, FIELD = ("mapping", "event", "result"), ("trigger", "event", "matches"), ("declaration", "value", "sent")
REFERENCE_TABLES = {
    ("where", "language"), ("argument", "required", "takes", "meaning"), ("operator", "meaning"), ("function", "meaning"),
    ("type", "accepts", "sent as"), ("key", "applies to", "rule"), ("format", "accepts"), ("send_as", "sent as"),
    ("coercion", "converts", "for types"), ("limit", "value", "bounds"),
}


def _of(header: tuple[str, ...]) -> list[Table]:
    return [table for table in TABLES if table.header == header]


def _rows(header: tuple[str, ...]) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(table.section, line, cells) for table in _of(header) for line, cells in table.rows]


def _code(cell: str) -> str:
    """A cell that is one code span: its text (a span in double backticks may hold single ones)."""
    span = re.fullmatch(r"(`+)(.+?)\1", cell)
    assert span, f"expected a code span, got {cell!r}"
    text = span.group(2)
    return text[1:-1] if len(text) > 2 and text.startswith(" ") and text.endswith(" ") else text


def _spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- results -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """An expected refusal whose message holds ``fragment`` (a typo in a row cannot pass for the error it documents)."""

    kind: str  # "load error" or "invalid"
    fragment: str


def _expected(cell: str) -> Any:
    for kind in ("load error", "invalid"):
        if cell.startswith(f"{kind}: "):
            return Refused(kind, _code(cell[len(kind) + 2 :]))
    if cell in ("missing", "fails", "true", "false"):
        return {"true": True, "false": False}.get(cell, cell)
    return json.loads(_code(cell))


def _mapping_result(mapping: Any, event: Any) -> Any:
    try:
        node = compile_mapping(mapping, "/m")
    except ConfigError as error:
        return Refused("load error", error.message)
    try:
        value = node.evaluate(event)
    except MappingFailure:
        return "fails"
    traced, _ = explain(node, event)  # what --explain shows must be what is sent
    assert traced == value or (traced is MISSING and value is MISSING)
    return "missing" if value is MISSING else value


def _trigger_result(text: str, event: Any) -> Any:
    spec = json.loads(text) if text.startswith("{") else text
    try:
        return compile_trigger(spec, "/trigger").matches(event)
    except ConfigError as error:
        return Refused("load error", error.message)


def _field_result(declaration: Any, value: str) -> Any:
    fields = compile_fields({"f": declaration}, "/fields")
    payload, problems = fields.check({} if value == "missing" else {"f": json.loads(_code(value))})
    if problems:
        return Refused("invalid", "; ".join(problem.message for problem in problems))
    return payload.get("f", "missing")


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, Refused):
        return isinstance(got, Refused) and got.kind == expected.kind and expected.fragment in got.fragment
    return json.dumps(expected, sort_keys=True) == json.dumps(got, sort_keys=True)  # types kept: 1 is not 1.0, nor true


def _id(row: tuple[str, int, tuple[str, ...]]) -> str:
    return f"line {row[1]}: {row[2][0][:60]}"


@pytest.mark.parametrize("row", _rows(MAPPING), ids=_id)
def test_a_mapping_example_gives_its_result(row: tuple[str, int, tuple[str, ...]]) -> None:
    _, line, (mapping, event, result) = row
    got = _mapping_result(json.loads(_code(mapping)), json.loads(_code(event)))
    assert _same(_expected(result), got), f"docs/language.md:{line}: the page says {result}, the engine gives {got!r}"


@pytest.mark.parametrize("row", _rows(TRIGGER), ids=_id)
def test_a_trigger_example_matches_as_written(row: tuple[str, int, tuple[str, ...]]) -> None:
    _, line, (trigger, event, matches) = row
    got = _trigger_result(_code(trigger), json.loads(_code(event)))
    assert _same(_expected(matches), got), f"docs/language.md:{line}: the page says {matches}, the engine gives {got!r}"


@pytest.mark.parametrize("row", _rows(FIELD), ids=_id)
def test_a_field_example_sends_what_it_says(row: tuple[str, int, tuple[str, ...]]) -> None:
    _, line, (declaration, value, sent) = row
    got = _field_result(json.loads(_code(declaration)), value)
    assert _same(_expected(sent), got), f"docs/language.md:{line}: the page says {sent}, the engine gives {got!r}"


@pytest.mark.parametrize("block", _blocks(TEXT), ids=lambda block: f"line {block[2]}")
def test_a_yaml_example_builds_its_result(block: tuple[str, str, int]) -> None:
    info, body, line = block
    assert info == "yaml", f"docs/language.md:{line}: a fenced block must be a yaml example (mapping, event, result)"
    example = yaml.safe_load(body)
    assert set(example) == {"mapping", "event", "result"}, f"docs/language.md:{line}: an example has mapping, event and result"
    got = _mapping_result(example["mapping"], example["event"])
    assert _same(example["result"], got), f"docs/language.md:{line}: the page says {example['result']}, the engine gives {got!r}"


def test_every_table_is_an_example_the_tests_run_or_a_reference_they_check() -> None:
    unknown = [table.header for table in TABLES if table.header not in {MAPPING, TRIGGER, FIELD} | REFERENCE_TABLES]
    assert unknown == [], f"tables no test reads: {unknown}"
    assert len(_rows(MAPPING)) > 80 and len(_rows(TRIGGER)) > 20 and len(_rows(FIELD)) > 20


# --- directives and their arguments, asked of the compiler ---------------------------------------------------------


def _sections() -> dict[str, list[Table]]:
    """Each directive's section (``### `@name` `` under Directives) and its tables."""
    found: dict[str, list[Table]] = {}
    for heading in re.findall(r"^### `(@\w+)`$", TEXT.split("\n## Directives\n", 1)[1].split("\n## ", 1)[0], re.M):
        found[heading] = [table for table in TABLES if table.headings[:1] == ("Directives",) and table.section == f"`{heading}`"]
    return found


SECTIONS = _sections()


def _load_error(mapping: Any) -> str | None:
    try:
        compile_mapping(mapping, "/m")
    except ConfigError as error:
        return error.message
    return None


def _named_arguments(directive: str) -> set[str] | None:
    """The arguments the compiler says the directive takes, or None when it takes no object of named arguments."""
    message = _load_error({directive: {PROBE: 1}}) or ""
    said = re.search(rf"has no argument '{PROBE}'.*\(it takes ([^)]*)\)$", message)
    return set(said.group(1).split(", ")) if said else None


def test_every_directive_has_a_section_and_every_section_a_directive() -> None:
    assert set(SECTIONS) == set(DIRECTIVES), (
        f"in the code, not on the page: {sorted(set(DIRECTIVES) - set(SECTIONS))}; "
        f"on the page, not in the code: {sorted(set(SECTIONS) - set(DIRECTIVES))}")


@pytest.mark.parametrize("directive", sorted(DIRECTIVES))
def test_a_directive_section_shows_it_at_work(directive: str) -> None:
    examples = [cells for table in SECTIONS.get(directive, []) if table.header == MAPPING for _, cells in table.rows]
    working = [cells for cells in examples if f'"{directive}"' in cells[0] and not cells[2].startswith("load error")]
    assert working, f"the {directive} section has no example of it giving a result"


def _argument_table(directive: str) -> dict[str, tuple[str, str]]:
    tables = [table for table in SECTIONS.get(directive, []) if table.header == ("argument", "required", "takes", "meaning")]
    assert len(tables) <= 1
    return {_code(cells[0]): (cells[1], cells[2]) for table in tables for _, cells in table.rows}


@pytest.mark.parametrize("directive", sorted(DIRECTIVES))
def test_the_arguments_on_the_page_are_the_ones_the_compiler_takes(directive: str) -> None:
    documented = _argument_table(directive)
    taken = _named_arguments(directive)
    if taken is None:
        assert documented == {}, f"{directive} takes no object of named arguments, but the page lists {sorted(documented)}"
    else:
        assert set(documented) == taken, (
            f"{directive}: the compiler takes {sorted(taken)}, the page lists {sorted(documented)}")


def _base(directive: str) -> dict[str, Any]:
    """The fullest working example of the directive on the page: the arguments the probes vary."""
    candidates = []
    for table in SECTIONS[directive]:
        if table.header != MAPPING:
            continue
        for _, cells in table.rows:
            mapping = json.loads(_code(cells[0]))
            if isinstance(mapping, dict) and isinstance(mapping.get(directive), dict) and _load_error(mapping) is None:
                candidates.append(mapping[directive])
    assert candidates, f"{directive}: no working example with arguments to start the probes from"
    return max(candidates, key=len)


def _with(directive: str, arguments: dict[str, Any], name: str, value: Any = MISSING) -> str | None:
    changed = {key: item for key, item in arguments.items() if key != name}
    if value is not MISSING:
        changed[name] = value
    return _load_error({directive: changed})


def _check_takes(directive: str, base: dict[str, Any], name: str, takes: str) -> None:
    """What the page says ``name`` takes, asked of the compiler: what it must accept, and what it must refuse."""
    where = f"{directive} {name} ({takes})"
    computed = {"@path": "$.probe"}
    accepts, refuses = {
        "a mapping value": ([computed, PROBE], []),
        "a list of mapping values": ([[computed]], [PROBE]),
        "a string": ([PROBE], [computed]),
        "a string, or a directive that gives one": ([PROBE, computed], [5]),
        "true or false": ([True, False], [PROBE]),
    }.get(takes, ([], []))
    choices = [json.loads(span) for span in _spans(takes) if span.startswith('"')]
    if not accepts and not choices:
        pytest.fail(f"{where}: takes must be one of the forms this test knows, or the choices")
    for value in accepts + choices:
        assert _with(directive, base, name, value) is None, f"{where}: {value!r} is refused: {_with(directive, base, name, value)}"
    for value in refuses:
        assert _with(directive, base, name, value) is not None, f"{where}: {value!r} is taken"
    if choices:
        refusal = _with(directive, base, name, PROBE)
        assert refusal is not None, f"{where}: any text is taken"
        named = set(re.findall(r'"([^"]*)"', refusal)) - {PROBE}
        assert named == set(choices), f"{where}: the compiler's choices are {sorted(named)}"
        as_list = _with(directive, base, name, choices[:2])
        if takes.endswith("or a list of them"):
            assert as_list is None, f"{where}: a list of them is refused: {as_list}"
        else:
            assert as_list is not None, f"{where}: the compiler takes a list of them, which the page does not say"


@pytest.mark.parametrize("directive", sorted(name for name in DIRECTIVES if _argument_table(name)))
def test_what_each_argument_takes_and_whether_it_is_required(directive: str) -> None:
    documented = _argument_table(directive)
    base = _base(directive)
    one_of = [name for name, (required, _) in documented.items() if required.startswith("one of")]
    alternatives = {key: value for key, value in base.items() if key not in one_of}
    chosen = next((base[name] for name in one_of if name in base), None)

    def start(name: str) -> dict[str, Any]:
        """The example's arguments, holding ``name`` as its one alternative when it is one (exists or blank)."""
        return {**alternatives, name: chosen} if name in one_of else base

    for name, (required, takes) in documented.items():
        assert required in ("yes", "no") or required == "one of " + ", ".join(one_of), f"{directive} {name}: required is {required!r}"
        if required != "no":
            refusal = _with(directive, start(name) if required == "yes" else alternatives, name)
            assert refusal is not None and name in refusal, f"{directive} {name} is written required, yet it can be left out"
        _check_takes(directive, start(name), name, takes)
    least = {name: base[name] for name, (required, _) in documented.items() if required == "yes"}
    if one_of:
        least[one_of[0]] = chosen
        both = {**least, **dict.fromkeys(one_of, chosen)}
        assert _load_error({directive: both}) is not None, f"{directive}: {' and '.join(one_of)} together are taken"
    assert _load_error({directive: least}) is None, f"{directive}: the arguments written optional are needed: {least}"


# --- triggers -----------------------------------------------------------------------------------------------------


def _column(header: tuple[str, ...], index: int = 0) -> list[str]:
    return [cells[index] for _, _, cells in _rows(header)]


def test_the_fql_operators_are_the_lexers() -> None:
    documented = {_code(cell) for cell in _column(("operator", "meaning"))}
    combinators = {word for word, value in _KEYWORD_VALUES.items() if value is None and word != "null"}
    assert documented == set(_OPERATORS) | combinators | {"!"}


def test_the_fql_functions_are_the_parsers() -> None:
    documented = {_code(cell).split("(")[0] for cell in _column(("function", "meaning"))}
    assert documented == set(FUNCTIONS)
    message = _trigger_result('nope(event, "x")', {})
    assert isinstance(message, Refused) and all(f"{name}(" in message.fragment for name in FUNCTIONS)


def test_the_fql_values_and_keywords_are_named() -> None:
    trigger = TEXT.split("\n## Triggers (FQL)\n", 1)[1].split("\n## ", 1)[0]
    for word in _KEYWORD_VALUES:
        assert f"`{word}`" in trigger, f"the FQL keyword {word} is not on the page"


# --- fields -------------------------------------------------------------------------------------------------------


def test_the_field_types_are_the_compilers() -> None:
    assert [_code(cell) for cell in _column(("type", "accepts", "sent as"))] == list(TYPES)


def test_the_constraint_keys_are_the_schemas() -> None:
    shape = load_schema("action")["$defs"]
    keys = (set(shape["shape"]["properties"]) | set(shape["field"]["properties"])) - {"type", "description", "label", "default"}
    documented = {span for cell in _column(("key", "applies to", "rule")) for span in _spans(cell)}
    assert documented == keys


def test_the_formats_and_send_as_forms_are_the_compilers() -> None:
    assert {_code(cell) for cell in _column(("format", "accepts"))} == set(_FORMATS)
    send_as = {_code(cells[0]): _spans(cells[1])[0] for _, _, cells in _rows(("send_as", "sent as"))}
    assert send_as == {name: form.example for name, form in TIME_FORMATS.items()}


def test_the_coercions_are_the_compilers() -> None:
    documented = {_code(cells[0]): (cells[1], cells[2]) for _, _, cells in _rows(("coercion", "converts", "for types"))}
    expected = {name: (_NOUNS[coercion.sources[0]], ", ".join(coercion.targets)) for name, coercion in _COERCIONS.items()}
    expected[NULL_TO_MISSING] = ("null", "every type")
    assert documented == expected


# --- liquid and limits --------------------------------------------------------------------------------------------


def _liquid_lists(label: str) -> tuple[set[str], set[str]]:
    """The names a paragraph (``Tags:`` or ``Filters:``) gives as available and as disabled."""
    paragraph = re.search(rf"^{label}: (.*?)(?:\n\n)", TEXT, re.M | re.S)
    assert paragraph, f"the @liquid section has no {label}: paragraph"
    available, _, disabled = paragraph.group(1).partition("Disabled")
    names = lambda text: {span for span in _spans(text) if "{%" not in span}  # noqa: E731
    return names(available), names(disabled)


@pytest.mark.parametrize("kind, probe, disabled", [("tag", "{% " + PROBE + " %}", DISABLED_TAGS),
                                                   ("filter", "{{ x | " + PROBE + " }}", DISABLED_FILTERS)])
def test_the_liquid_tags_and_filters_are_the_sandboxs(kind: str, probe: str, disabled: frozenset[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        compile_liquid(probe, "/m")
    available = set(re.search(rf"the {kind}s available are (.*)$", refused.value.message).group(1).split(", "))  # type: ignore[union-attr]
    documented, documented_disabled = _liquid_lists(kind.capitalize() + "s")
    assert documented == available and documented_disabled == set(disabled)


def test_every_limit_is_stated_with_the_codes_value() -> None:
    declared = {name: value for name, value in vars(limits).items() if re.fullmatch(r"(MAX|MIN)_[A-Z_]+|[A-Z_]+_LIMIT", name)}
    stated = {_code(cells[0]): cells[1] for _, _, cells in _rows(("limit", "value", "bounds"))}
    assert set(stated) == set(declared)
    for name, value in declared.items():
        assert stated[name] == f"{value:,}", f"{name}: the page says {stated[name]}, the code {value:,}"


# --- where the page is read -----------------------------------------------------------------------------------------


def test_docs_language_prints_the_page(cli) -> None:
    run = cli("docs", "--language")
    assert run.code == 0 and run.out == TEXT


def test_the_built_wheel_carries_the_page_and_prints_it(tmp_path: Path) -> None:
    """A non-editable install prints the very page of the repository: it travels as package data."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("actionmap-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("engine/_data/docs/language.md").decode() == TEXT
        archive.extractall(site)
    run = subprocess.run([sys.executable, "-m", "engine.cli", "docs", "--language"], env=dict(os.environ, PYTHONPATH=str(site)),
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0 and run.stdout == TEXT, run.stderr
