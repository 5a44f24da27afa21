"""Hostile files: whatever cannot be loaded is one located FILE:LINE:COL line, never a traceback.

Each case runs the real CLI in a subprocess (a RecursionError or MemoryError there
would be a traceback on stderr, which an in-process run could hide), and the
property tests throw arbitrary and deliberately deep, huge or self-referencing
input at the whole mapping-file loader.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import ConfigError
from engine.limits import MAX_EXPRESSION_DEPTH, MAX_FILE_BYTES, MAX_INT_DIGITS, MAX_MAPPING_DEPTH, MAX_YAML_DEPTH
from engine.config.mappingfile import load_mapping_document
from engine.tools.scaffold import new_destination
from engine.config.yamlsource import load_text
from tests.conftest import REPO
from tests.test_yamlsource import _CATALOG, _mapping_files, yamlish

SUBSCRIPTION = "    action: send_event\n"
BASE = f"""destination: metronome
settings:
  api_token: test-token-not-secret
subscriptions:
  - name: Usage events
{SUBSCRIPTION}"""
EVENT = {"type": "track", "messageId": "m-1", "userId": "u-1", "event": "api_call", "timestamp": "2026-11-26T10:00:00Z",
         "properties": {"items": [{"v": ""}, {"v": 2}]}}
BIG = "9" * 5000


def with_subscription(lines: str) -> str:
    """The base mapping file with ``lines`` (indented YAML) added to its subscription."""
    return BASE.replace(SUBSCRIPTION, SUBSCRIPTION + lines)


def with_mapping(value: str) -> str:
    """The base mapping file whose ``properties`` field is mapped by ``value`` (one line of YAML)."""
    return with_subscription(f"    mapping:\n      properties: {value}\n")


def actionmap(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METRONOME_API_TOKEN": "test-token-not-secret"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)


# Every hostile file is registered here and validated by one CLI run (a process start costs
# more than the checks): validate reports each file on its own and exits 1 if any fails.
CASES: dict[str, tuple[str | bytes, str]] = {}
# Plugin folders: a scaffold with one file edited (file, old text, new text), and the fragment.
PLUGINS: dict[str, tuple[str, str, str, str]] = {}


def case(name: str, text: str | bytes, fragment: str) -> str:
    """Register a hostile mapping file and the fragment its located error must hold."""
    CASES[name] = (text, fragment)
    return name


class Validated:
    """The one ``actionmap validate`` run over every registered file."""

    def __init__(self, folder: Path) -> None:
        self.paths: dict[str, Path] = {}
        for index, (name, (text, _)) in enumerate(CASES.items()):
            path = folder / f"hostile-{index}.yaml"
            path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
            self.paths[name] = path
        plugins = []
        for index, (name, (file, old, new, _)) in enumerate(PLUGINS.items()):
            plugin = new_destination(f"hostile_{index}", folder)
            edited = plugin / file
            text = edited.read_text(encoding="utf-8")
            assert old in text
            edited.write_text(text.replace(old, new, 1), encoding="utf-8")
            self.paths[name] = edited
            plugins.append(plugin)
        files = [path for name, path in self.paths.items() if name in CASES]
        self.run = actionmap("validate", *map(str, files + plugins))

    def check(self, name: str) -> str:
        """The file's error: exit 1, no traceback, no "ok", one ``FILE:LINE:COL: `` line holding the fragment."""
        run, path = self.run, self.paths[name]
        fragment = CASES[name][1] if name in CASES else PLUGINS[name][3]
        assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
        assert run.returncode == 1, run.stderr[-2000:]
        assert f"{path}: ok" not in run.stdout and f"{path.parent.parent}: ok" not in run.stdout, run.stdout
        lines = [line for line in run.stderr.splitlines() if re.match(rf"^{re.escape(str(path))}:\d+:\d+: ", line)]
        assert len(lines) == 1, (name, run.stderr[-2000:])
        assert fragment in lines[0], lines[0][:500]
        if name in CASES:  # and the file alone makes validate exit 1 (in process: the run above showed no traceback)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert main(["validate", str(path)]) == 1
        return lines[0]


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Validated:
    return Validated(tmp_path_factory.mktemp("hostile"))


def preview(tmp_path: Path, mapping: str, events: list[dict[str, Any]], *options: str) -> tuple[int, list[dict[str, Any]]]:
    """Preview ``events`` through a mapping file: the exit code and the JSON lines, never a traceback."""
    path, events_path = tmp_path / "m.yaml", tmp_path / "events.ndjson"
    path.write_text(mapping, encoding="utf-8")
    events_path.write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    run = actionmap("preview", "-m", str(path), str(events_path), *options)
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-2000:]
    return run.returncode, [json.loads(line) for line in run.stdout.splitlines()]


# --- YAML itself ------------------------------------------------------------------------


def test_an_alias_inside_its_own_anchor_in_settings(validated: Validated) -> None:
    validated.check("alias in settings")


case("alias in settings", BASE.replace("settings:\n  api_token: test-token-not-secret\n", "settings: &r [*r]\n"),
     "refers to the anchored value (&name) it is inside of")


def test_an_alias_inside_its_own_anchor_in_a_mapping_value(validated: Validated) -> None:
    assert re.search(r":8:19: ", validated.check("alias in a mapping"))


case("alias in a mapping", with_mapping("&r {a: [*r]}"), "would repeat forever")


def test_flow_nesting_past_the_yaml_limit(validated: Validated) -> None:
    validated.check("flow nesting")


case("flow nesting", with_mapping("[" * 400 + "]" * 400), f"nests deeper than {MAX_YAML_DEPTH} levels")


def test_block_nesting_past_the_yaml_limit(validated: Validated) -> None:
    validated.check("block nesting")


case("block nesting", with_subscription("    mapping:\n      properties:\n" + "".join("  " * (depth + 3) + "a:\n" for depth in range(500))
                                         + "  " * 503 + "x: 1\n"), f"nests deeper than {MAX_YAML_DEPTH} levels")


def test_an_alias_bomb_is_refused(validated: Validated) -> None:
    validated.check("alias bomb")


case("alias bomb", "x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 8))
     + BASE, "expands to more than 1,000,000 nodes through YAML aliases (alias bomb?)")


def test_a_file_over_the_size_limit_is_refused_before_parsing(validated: Validated) -> None:
    assert re.search(r":1:1: the file is 4\.0 MiB \([0-9,]+ bytes\), over the limit of 4 MiB", validated.check("file size"))


case("file size", BASE.encode() + b"# " + b"x" * MAX_FILE_BYTES + b"\n", f"over the limit of {MAX_FILE_BYTES // 2**20} MiB")


@pytest.mark.parametrize("name", [
    case("huge batch_size", with_subscription(f"    batch_size: {BIG}\n"), f"over the limit of {MAX_INT_DIGITS} digits in a file"),
    case("huge hex", with_subscription(f"    batch_size: 0x{'f' * 200}\n"), f"over the limit of {MAX_INT_DIGITS} digits in a file"),
    case("huge literal", with_mapping(f"{{x: {BIG}}}"), f"over the limit of {MAX_INT_DIGITS} digits in a file"),
])
def test_a_huge_yaml_integer(validated: Validated, name: str) -> None:
    validated.check(name)


def test_a_literal_outside_the_64_bit_range_is_refused_at_load(validated: Validated) -> None:
    validated.check("literal past 64 bits")


case("literal past 64 bits", with_mapping("{x: 123456789012345678901234567890}"), "outside the 64-bit range")


# --- mapping values -----------------------------------------------------------------------

_DEEPER = MAX_MAPPING_DEPTH + 1


@pytest.mark.parametrize("name", [
    case("nested objects", with_mapping("{a: " * _DEEPER + "$.x" + "}" * _DEEPER), f"nests deeper than {MAX_MAPPING_DEPTH} levels of objects, lists and directives"),
    case("nested lists", with_mapping("[" * _DEEPER + "$.x" + "]" * _DEEPER), f"nests deeper than {MAX_MAPPING_DEPTH} levels of objects, lists and directives"),
    case("nested directives", with_mapping("{'@if': {exists: $.a, then: " * _DEEPER + "1" + "}}" * _DEEPER),
         f"nests deeper than {MAX_MAPPING_DEPTH} levels of objects, lists and directives"),
])
def test_mapping_values_nested_past_the_mapping_limit(validated: Validated, name: str) -> None:
    validated.check(name)


def test_mapping_values_at_the_mapping_limit_load(validated: Validated) -> None:
    assert f"{validated.paths['at the mapping limit']}: ok" in validated.run.stdout, validated.run.stderr[-2000:]


CASES["at the mapping limit"] = (
    with_mapping("{'@if': {exists: $.a, then: " * (MAX_MAPPING_DEPTH - 1) + "{a: 1}" + "}}" * (MAX_MAPPING_DEPTH - 1)), "")


# --- expressions --------------------------------------------------------------------------

_HUGE = f"an integer of 5,000 digits is over the limit of {MAX_INT_DIGITS} digits in an expression"
_DEEP = f"nests deeper than {MAX_EXPRESSION_DEPTH} levels, the limit for one expression"


@pytest.mark.parametrize("name", [
    case("jsonpath index", with_mapping(f"$.a[{BIG}]"), _HUGE),
    case("jsonpath filter number", with_mapping(f"'$[?@.n == {BIG}]'"), _HUGE),
    case("dotted index", with_mapping(f"{{'@path': 'a[{BIG}]'}}"), _HUGE),
    case("jmespath index", with_mapping(f"{{'@jmespath': 'a[{BIG}]'}}"), _HUGE),
    case("fql number", with_subscription(f"    trigger: x = {BIG}\n"), _HUGE),
    case("fql index", with_subscription(f"    trigger: x[{BIG}] = 1\n"), _HUGE),
])
def test_a_huge_integer_in_an_expression(validated: Validated, name: str) -> None:
    validated.check(name)


@pytest.mark.parametrize("name", [
    case("jmespath parentheses", with_mapping("{'@jmespath': '" + "(" * 500 + "a" + ")" * 500 + "'}"), _DEEP),
    case("jmespath projections", with_mapping("{'@jmespath': 'a" + "[*]" * 500 + "'}"), _DEEP),
    case("jmespath literal", with_mapping("{'@jmespath': 'a == `" + "[" * 2000 + "]" * 2000 + "`'}"), _DEEP),
    case("jmespath trigger", with_subscription("    trigger: {jmespath: '" + "(" * 500 + "a" + ")" * 500 + "'}\n"), _DEEP),
    case("jmespath trigger negations", with_subscription("    trigger: {jmespath: '" + "!" * 500 + "a'}\n"), _DEEP),
    case("jsonpath filters", with_mapping("'$[?(" + "@[?(" * 299 + "@.a" + ")]" * 299 + ")]'"), _DEEP),
    case("jsonpath negations", with_mapping("'$[?" + "!" * 2000 + "@.a]'"), _DEEP),
    case("jsonpath and-chain", with_mapping("'$[?" + " && ".join(["@.a"] * 600) + "]'"), _DEEP),
    case("template placeholder", with_mapping("{'@template': 'x{{$[?" + "(" * 300 + "@.a" + ")" * 300 + "]}}'}"), _DEEP),
])
def test_a_deep_library_expression(validated: Validated, name: str) -> None:
    validated.check(name)


@pytest.mark.parametrize("name", [
    case("fql parentheses", with_subscription("    trigger: '" + "(" * 500 + "x = 1" + ")" * 500 + "'\n"), f"the trigger {_DEEP}"),
    case("fql negations", with_subscription("    trigger: '" + "not " * 500 + "x = 1'\n"), f"the trigger {_DEEP}"),
    case("fql both", with_subscription("    trigger: '" + "not (" * 300 + "x = 1" + ")" * 300 + "'\n"), f"the trigger {_DEEP}"),
])
def test_a_deep_fql_trigger(validated: Validated, name: str) -> None:
    validated.check(name)


@pytest.mark.parametrize("name", [
    case("fql double", with_subscription("    trigger: x = 1e99999\n"), "is out of range (a double holds up to about 1.8e308)"),
    case("jsonpath double", with_mapping("'$[?@.a == 1e400]'"), "is out of range (a double holds up to about 1.8e308)"),
])
def test_a_number_past_a_double(validated: Validated, name: str) -> None:
    validated.check(name)


@pytest.mark.parametrize("name", [
    case("zero step in a mapping", with_mapping("{'@jmespath': 'foo[8:2:0]'}"), "a slice step cannot be zero"),
    case("zero step in a trigger", with_subscription("    trigger: {jmespath: 'foo[::0]'}\n"), "a slice step cannot be zero"),
])
def test_a_zero_jmespath_slice_step_is_refused_at_load(validated: Validated, name: str) -> None:
    validated.check(name)


# --- plugin files -------------------------------------------------------------------------


PLUGINS.update({
    "plugin default mapping alias": ("actions/send.yaml", "default: $.event", "default: &r [*r]", "would repeat forever"),
    "plugin default trigger": ("actions/send.yaml", 'default_trigger: type = "track"',
                               "default_trigger: {jmespath: '" + "(" * 500 + "a" + ")" * 500 + "'}", _DEEP),
    "plugin batch size": ("actions/send.yaml", "max_batch_size: 50", f"max_batch_size: {BIG}", f"over the limit of {MAX_INT_DIGITS} digits in a file"),
    "plugin tests file": ("tests/send.yaml", "userId: 42", "userId: " + "[" * 300 + "]" * 300, f"nests deeper than {MAX_YAML_DEPTH} levels"),
})


@pytest.mark.parametrize("name", list(PLUGINS))
def test_a_hostile_plugin_file(validated: Validated, name: str) -> None:
    validated.check(name)


# --- what only an event can reveal --------------------------------------------------------


def test_a_jmespath_error_on_one_event_makes_that_event_invalid(tmp_path: Path) -> None:
    # sort_by over values of mixed types raises inside jmespath, per event
    code, lines = preview(tmp_path, with_mapping("{'@jmespath': 'sort_by(properties.items, &v)'}"), [EVENT])
    assert code == 2
    assert lines[0]["status"] == "invalid"
    assert any("@jmespath" in error and "failed on this event" in error for error in lines[0]["errors"]), lines[0]


def test_a_jmespath_trigger_error_on_one_event_does_not_match(tmp_path: Path) -> None:
    mapping = with_subscription("    trigger: {jmespath: 'sort_by(properties.items, &v)'}\n")
    code, lines = preview(tmp_path, mapping, [EVENT, {**EVENT, "properties": {"items": [{"v": 1}]}}], "--all")
    assert code == 0
    assert [line["status"] for line in lines] == ["filtered", "ok"]
    assert "trigger is false" in lines[0]["reason"]


_DECODED = {
    "deep": ("[" * 500 + "]" * 500, "nests deeper than 64 levels"),
    "deeper than the stack": ("[" * 5000 + "]" * 5000, "nests deeper than 64 levels"),
    "huge integer": ('{"a": ' + BIG + "}", "outside the 64-bit range"),
    "past 64 bits": ('{"a": 123456789012345678901234567890}', "outside the 64-bit range"),
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, list[dict[str, Any]]]:
    """One preview of an event per hostile JSON text through ``@json`` decode (and a good one last)."""
    events = [{**EVENT, "properties": {"raw": raw}} for raw, _ in _DECODED.values()] + [{**EVENT, "properties": {"raw": '{"a": [1]}'}}]
    return preview(tmp_path_factory.mktemp("decode"), with_mapping("{'@json': {mode: decode, value: $.properties.raw}}"), events)


@pytest.mark.parametrize("name", list(_DECODED))
def test_json_decode_of_hostile_text_makes_the_event_invalid(decoded: tuple[int, list[dict[str, Any]]], name: str) -> None:
    code, lines = decoded
    assert code == 2
    assert lines[-1]["status"] == "ok" and lines[-1]["payload"]["properties"] == {"a": [1]}
    line = lines[list(_DECODED).index(name)]
    assert line["status"] == "invalid"
    assert any("@json decode" in error and _DECODED[name][1] in error for error in line["errors"]), line["errors"]


# --- properties: the whole loader never raises anything but a located ConfigError --------------

MARK = "HOSTILEVALUEMARK"


def _nested(open_: str, close: str) -> st.SearchStrategy[str]:
    return st.integers(1, 400).map(lambda n: open_ * n + "$.a" + close * n)


_hostile_yaml = st.one_of(
    _nested("[", "]"),
    _nested("{a: ", "}"),
    _nested("{'@if': {exists: $.b, then: ", "}}"),
    _nested("{'@coalesce': [", "]}"),
    st.integers(MAX_INT_DIGITS - 2, 5000).map(lambda n: "9" * n),
    st.integers(MAX_INT_DIGITS - 2, 5000).map(lambda n: "-0x" + "f" * n),
    st.sampled_from(["&r [*r]", "&r {a: *r}", "&r [1, [2, *r]]", "&r {'@coalesce': [*r]}", "&a [1] ", "*nowhere"]),
)
_hostile_expression = st.one_of(
    st.integers(1, 400).map(lambda n: "$[?" + "@[?" * n + "@.a" + "]" * n + "]"),
    st.integers(1, 600).map(lambda n: "$[?" + "!" * n + "@.a]"),
    st.integers(1, 400).map(lambda n: "$[?" + " || ".join(["@.a"] * n) + "]"),
    st.integers(1, 400).map(lambda n: "(" * n + "x = 1" + ")" * n),
    st.integers(1, 400).map(lambda n: "not " * n + "x = 1"),
    st.integers(MAX_INT_DIGITS - 2, 5000).map(lambda n: "$.a[" + "9" * n + "]"),
    st.integers(MAX_INT_DIGITS - 2, 5000).map(lambda n: "x = " + "9" * n),
    st.sampled_from(["x = 1e999", "$[?@.a == 1e400]", "$[?@.a == -9e999]"]),
)
_hostile_jmespath = st.one_of(
    st.integers(1, 400).map(lambda n: "(" * n + "a" + ")" * n),
    st.integers(1, 400).map(lambda n: "a" + "[*]" * n),
    st.integers(1, 400).map(lambda n: "a" + "[?b]" * n),
    st.integers(1, 400).map(lambda n: "`" + "[" * n + "]" * n + "`"),
    st.integers(1, 400).map(lambda n: "sort_by(a, " + "&b | " * n + "b)"),
    st.integers(MAX_INT_DIGITS - 2, 5000).map(lambda n: "a[" + "9" * n + "]"),
    st.sampled_from(["foo[8:2:0]", "foo[::0]", "foo[::-0]", "a == `1e400`"]),
)
# One line of YAML to put where a marker stands: a deep or huge value, an alias, an expression.
_hostile = st.one_of(
    _hostile_yaml,
    _hostile_expression.map(json.dumps),
    _hostile_jmespath.map(lambda text: "{'@jmespath': " + json.dumps(text) + "}"),
    _hostile_jmespath.map(lambda text: "{jmespath: " + json.dumps(text) + "}"),
)
# A file that passes the schema, so hostile values reach the trigger and mapping compilers.
_skeleton = st.fixed_dictionaries(
    {
        "destination": st.just("metronome"),
        "settings": st.just({"api_token": "t"}),
        "subscriptions": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["a", "b"]), "action": st.just("send_event")},
                optional={"trigger": st.just(MARK), "mapping": st.dictionaries(st.sampled_from(["customer_id", "properties"]), st.just(MARK), max_size=2),
                          "batch_size": st.just(MARK)},
            ),
            min_size=1,
            max_size=2,
        ),
    }
)


def _leaves(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of ``value`` that holds a scalar: places to plant a marker."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        for key, child in node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ():
            if isinstance(child, (dict, list)):
                stack.append(child)
            else:
                found.append((node, key))
    return found


def _assert_loader_fails_only_located(text: str) -> None:
    try:
        load_mapping_document(load_text(text, "fuzz.yaml"), env={"METRONOME_API_TOKEN": "t"}, catalog=_CATALOG)
    except ConfigError as error:
        located = getattr(error, "errors", [error])
        assert all(e.location is not None and e.location.file == "fuzz.yaml" for e in located), str(error)[:500]


@settings(max_examples=150, deadline=None)
@given(st.one_of(_mapping_files, _skeleton), st.data())
def test_hostile_values_anywhere_in_a_mapping_file_give_only_located_config_errors(document: dict[str, Any], data: st.DataObject) -> None:
    document = copy.deepcopy(document)  # strategies may share objects (st.just) between examples
    places = _leaves(document)
    chosen = data.draw(st.lists(st.sampled_from(places), max_size=3, unique_by=lambda place: (id(place[0]), place[1]))) if places else []
    for container, key in chosen:
        container[key] = MARK
    text = yaml.safe_dump(document, sort_keys=False, width=10**9)
    while MARK in text:
        text = text.replace(MARK, data.draw(_hostile), 1)
    _assert_loader_fails_only_located(text)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), yamlish, st.lists(st.one_of(yamlish, _hostile), max_size=4).map("\n".join)))
def test_arbitrary_text_gives_the_mapping_file_loader_only_located_config_errors(text: str) -> None:
    _assert_loader_fails_only_located(text)


def test_a_cyclic_structure_dumped_by_pyyaml_is_a_located_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    text = yaml.safe_dump({"destination": "metronome", "settings": {"api_token": "t"}, "subscriptions": loop})
    with pytest.raises(ConfigError, match="would repeat forever") as caught:
        load_text(text, "fuzz.yaml")
    assert caught.value.location is not None
