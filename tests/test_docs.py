"""``actionmap docs SLUG`` (issue 16, must-show 5): constraints, coercions, defaults as YAML, an example, the batching, in Markdown and HTML.

The defaults are read back from the page as a mapping file would hold them and loaded as
one; the example is held to the plugin's own test expectations; the HTML is parsed and
its structure checked, with hostile plugin text shown as text.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from engine.config.definitions import Catalog, Destination
from engine.config.mappingfile import load_mapping_document
from engine.config.schemas import load_schema
from engine.config.yamlsource import load_text
from engine.lang.mapping import compile_mapping
from engine.tools.docs import CONSTRAINTS, OWN_COLUMNS, destination_markdown
from engine.tools.html import html_page
from tests.conftest import REPO, Run

BUILT_IN = ("metronome", "webhook", "orb", "lago", "openmeter", "stripe")
TEST_SECRETS = ("tok-for-tests-only", "key-for-tests-only", "whsec-for-tests-only")


def _cells(line: str) -> list[str]:
    return [part.strip().replace("\\|", "|") for part in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _span(cell: str) -> str:
    """The text of a cell that is one code span (any fence; padding spaces removed)."""
    found = re.fullmatch(r"(`+)(.+?)\1", cell)
    assert found, f"not a code span: {cell!r}"
    text = found.group(2)
    return text[1:-1] if text.startswith(" ") and text.endswith(" ") and len(text) > 2 else text


def _field_rows(page: str, action: str) -> dict[str, dict[str, str]]:
    """The action's field table: field name -> column -> cell."""
    section = page.split(f"(`{action}`)\n", 1)[1]
    lines = [line for line in section.split("\n#### ", 1)[0].splitlines() if line.startswith("|")]
    header = _cells(lines[0])
    return {_span(cells[0]): dict(zip(header, cells)) for cells in map(_cells, lines[2:])}


def _fenced(page: str, after: str) -> str:
    """The first fenced block after the line ``after``."""
    rest = page.split(f"\n{after}\n", 1)[1]
    found = re.search(r"^(`{3,})\w*\n(.*?)\n\1$", rest, re.M | re.S)
    assert found, f"no fenced block after {after!r}"
    return found.group(2)


def _docs(cli: Callable[..., Run], *args: str) -> str:
    run = cli("docs", *args)
    assert run.code == 0, run.err
    for secret in TEST_SECRETS:
        assert secret not in run.out, "a secret setting of the plugin's test is on the page"
    return run.out


def test_the_metronome_page_shows_each_fields_constraints_and_coercions(cli: Callable[..., Run]) -> None:
    fields = _field_rows(_docs(cli, "metronome"), "send_event")
    assert fields["transaction_id"]["Constraints"] == "minLength 1; maxLength 128"
    assert fields["customer_id"]["Coercions"] == "number_to_string"
    assert fields["timestamp"]["Constraints"] == "window 34d back to 24h ahead (checked when sent)"
    assert (fields["properties"]["Constraints"], fields["properties"]["Coercions"]) == ("maxProperties 2000", "null_to_missing")
    assert [row["Required"] for row in fields.values()] == ["yes", "yes", "yes", "yes", "no"]


def test_declared_keys_and_send_as_are_shown(cli: Callable[..., Run]) -> None:
    fields = _field_rows(_docs(cli, "stripe"), "send_event")
    assert fields["timestamp"]["Constraints"].endswith("sent as unix_seconds (`1767225600`)")
    assert fields["payload"]["Constraints"] == ("stripe_customer_id: string, required, minLength 1, coerce number_to_string; "
                                                "value: string, required, minLength 1, coerce number_to_string")
    assert "one of `\"1.0\"`" in _field_rows(_docs(cli, "openmeter"), "send_event")["specversion"]["Constraints"]


def test_every_key_of_a_field_declaration_has_its_place_on_the_page() -> None:
    """A key added to the schema's field declaration must be shown (or have a column): the page cannot silently omit it."""
    defs = load_schema("action")["$defs"]
    assert set(defs["shape"]["properties"]) | set(defs["field"]["properties"]) == set(CONSTRAINTS) | set(OWN_COLUMNS)


@pytest.mark.parametrize("slug", BUILT_IN)
def test_the_defaults_are_yaml_a_mapping_file_can_hold(cli: Callable[..., Run], slug: str) -> None:
    """Each default, pasted from the page into a mapping file, loads and is the plugin's own default."""
    page = _docs(cli, slug)
    dest = Catalog().get(slug)
    for action in dest.actions.values():
        declared = action.document.data["fields"]
        cells = {name: _span(row["Default mapping"]) for name, row in _field_rows(page, action.slug).items() if row["Default mapping"]}
        assert set(cells) == {name for name, decl in declared.items() if "default" in decl}
        for name, text in cells.items():
            assert yaml.safe_load(text) == declared[name]["default"], f"{slug} {name}: {text} reads back otherwise"
            compile_mapping(yaml.safe_load(text), f"/{name}")
        mapping = "\n".join(f"      {name}: {text}" for name, text in cells.items())
        required = {name: "x" if s.type == "string" else 1 for name, s in dest.settings.items() if s.required}
        required.update({name: "https://example.com" for name, s in dest.settings.items() if s.required and s.format == "uri"})
        text = (f"destination: {slug}\nsettings: {json.dumps(required)}\nsubscriptions:\n  - name: pasted\n"
                f"    action: {action.slug}\n    mapping:\n{mapping}\n")
        loaded = load_mapping_document(load_text(text, "pasted.yaml"), env={})
        sources = {name: node.source for name, node in loaded.subscriptions[0].mapping.items()}
        assert sources == {name: node.source for name, node in action.defaults.items()}


@pytest.mark.parametrize("slug, action", [("metronome", "send_event"), ("webhook", "send")])
def test_the_example_is_the_plugins_first_test_run_through_the_engine(cli: Callable[..., Run], slug: str, action: str) -> None:
    page = _docs(cli, slug)
    case = next(c for c in yaml.safe_load((REPO / "destinations" / slug / "tests" / f"{action}.yaml").read_text())["cases"] if "request" in c)
    assert f'From the plugin\'s test "{case["name"]}" (`tests/{action}.yaml`)' in page
    assert json.loads(_fenced(page, "The event:")) == case["event"]
    head, _, body = _fenced(page, "The request:").partition("\n\n")
    first, *headers = head.splitlines()
    expected = case["request"]
    assert first == f"{expected['method']} {expected['url']}" and json.loads(body) == expected["body"]
    sent = {name.lower(): value for name, value in (line.split(": ", 1) for line in headers)}
    for name, value in expected.get("headers", {}).items():
        assert sent[name.lower()] == value
    payload = json.loads(_fenced(page, "The payload it becomes:"))
    assert payload == ({"data": expected["body"]} if slug == "webhook" else expected["body"][0])  # webhook sends its data field


def test_the_batching_is_told_as_it_is(cli: Callable[..., Run]) -> None:
    assert "up to 100 payloads per request, as a JSON array" in _docs(cli, "metronome")
    assert ("one payload per request as a JSON object while the `batch_size` setting is 1 (the default), "
            "else JSON arrays of up to that many (at most 1000)") in _docs(cli, "webhook")


def _plugin_copy(tmp_path: Path, slug: str) -> Path:
    folder = tmp_path / slug  # the folder named after the slug: a plugin being developed, not installed
    shutil.copytree(REPO / "destinations" / slug, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _uninstalled(folder: Path) -> Destination:
    return Catalog().add_folder(folder)


def test_without_plugin_tests_the_example_is_a_sample_event_under_the_defaults(tmp_path: Path) -> None:
    folder = _plugin_copy(tmp_path, "webhook")
    shutil.rmtree(folder / "tests")
    page = destination_markdown(_uninstalled(folder))
    assert "From a sample track event (`examples/track.ndjson`) and the default mapping" in page
    sample = json.loads((REPO / "examples" / "track.ndjson").read_text().splitlines()[0])
    assert json.loads(_fenced(page, "The request:").partition("\n\n")[2]) == sample  # data: $, one per request
    assert _fenced(page, "The request:").startswith("POST https://example.com\n")


def test_an_example_that_makes_no_request_says_why(tmp_path: Path) -> None:
    folder = _plugin_copy(tmp_path, "metronome")
    tests = folder / "tests" / "send_event.yaml"
    tests.write_text(tests.read_text().replace("      event: api_call\n", "", 1))
    page = destination_markdown(_uninstalled(folder))
    assert "No request: the event is invalid: event_type: required, but its mapping $.event gave no value" in page
    assert "The request:" not in page


class _Tree(HTMLParser):
    """A small element tree of a page (tag, attributes, children, text), to check its structure."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, Any] = {"tag": "#root", "attrs": {}, "children": [], "text": ""}
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, "attrs": dict(attrs), "children": [], "text": ""}
        self.stack[-1]["children"].append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1]["tag"] == tag, f"</{tag}> closes <{self.stack[-1]['tag']}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node["text"] += data


def _parse(page: str) -> dict[str, Any]:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.stack == [tree.root], "an element is never closed"
    return tree.root


def _all(node: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    found = [node] if node["tag"] == tag else []
    for child in node["children"]:
        found += _all(child, tag)
    return found


def _tables(root: dict[str, Any]) -> list[tuple[list[str], list[list[dict[str, Any]]]]]:
    """Each table: its header texts and its rows of cells (elements)."""
    return [([th["text"] for th in _all(table, "th")], [_all(tr, "td") for tr in _all(table, "tr") if _all(tr, "td")])
            for table in _all(root, "table")]


@pytest.mark.parametrize("slug", ["metronome", "webhook"])
def test_the_html_page_has_the_same_structure(cli: Callable[..., Run], slug: str) -> None:
    root = _parse(_docs(cli, slug, "--format", "html"))
    dest = Catalog().get(slug)
    assert [t["text"] for t in _all(root, "title")] == [dest.name] and [h["text"] for h in _all(root, "h1")] == [dest.name]
    assert [h["text"] for h in _all(root, "h2")][:2] == ["Settings", "Actions"]
    fields = [(header, rows) for header, rows in _tables(root) if "Default mapping" in header]
    assert len(fields) == len(dest.actions)
    for (header, rows), action in zip(fields, dest.actions.values()):
        assert header == ["Field", "Label", "Type", "Required", "Constraints", "Coercions", "Default mapping", "Description"]
        column = header.index("Default mapping")
        for row in rows:
            name = row[0]["text"]
            codes = _all(row[column], "code")
            if name in action.defaults:
                assert len(codes) == 1, f"{name}: the default is one code element"
                assert compile_mapping(yaml.safe_load(codes[0]["text"]), "/d").source == action.defaults[name].source
    blocks = {pre["children"][0]["attrs"].get("class") for pre in _all(root, "pre")}
    assert {"language-json", "language-http"} <= blocks
    if slug == "metronome":
        (transaction,) = [row for _, rows in fields for row in rows if row[0]["text"] == "transaction_id"]
        assert transaction[4]["text"] == "minLength 1; maxLength 128"


def test_hostile_plugin_text_is_shown_as_text_in_html(tmp_path: Path) -> None:
    folder = _plugin_copy(tmp_path, "webhook")
    hostile = '<script>alert("x")</script> <img src=x onerror=alert(1)> [link](javascript:alert(1)) a | b'
    for name, where in (("destination.yaml", ()), ("actions/send.yaml", ()), ("actions/send.yaml", ("fields", "data"))):
        data = yaml.safe_load((folder / name).read_text())
        node = data
        for key in where:
            node = node[key]
        node["description"] = hostile
        (folder / name).write_text(yaml.safe_dump(data, sort_keys=False))
    page = html_page(destination_markdown(_uninstalled(folder)))
    root = _parse(page)
    assert not _all(root, "script") and not _all(root, "img") and not _all(root, "a")
    assert "<script>" not in page and '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;' in page
    assert hostile.replace(" | b", "") in root["text"]


def test_a_pipe_or_a_backtick_in_a_rule_or_a_default_survives_the_table(tmp_path: Path) -> None:
    folder = _plugin_copy(tmp_path, "webhook")
    action = yaml.safe_load((folder / "actions" / "send.yaml").read_text())
    action["fields"]["tag"] = {"type": "string", "pattern": "^(a|b`c)$", "description": "t", "default": {"@jmespath": "a || b"}}
    (folder / "actions" / "send.yaml").write_text(yaml.safe_dump(action, sort_keys=False))
    page = destination_markdown(_uninstalled(folder))
    tag = _field_rows(page, "send")["tag"]
    assert tag["Constraints"] == "pattern ``^(a|b`c)$``" and yaml.safe_load(_span(tag["Default mapping"])) == {"@jmespath": "a || b"}
    (row,) = [row for header, rows in _tables(_parse(html_page(page))) if "Default mapping" in header for row in rows
              if row[0]["text"] == "tag"]
    assert [code["text"] for code in _all(row[4], "code")] == ["^(a|b`c)$"]
    assert yaml.safe_load(_all(row[6], "code")[0]["text"]) == {"@jmespath": "a || b"}


def test_docs_takes_one_page_at_a_time(cli: Callable[..., Run]) -> None:
    for args in ((), ("metronome", "--keys"), ("--language", "--keys")):
        run = cli("docs", *args)
        assert run.code == 1 and "docs prints one page" in run.err
    run = cli("docs", "--update", "README.md", "--format", "html")
    assert run.code == 1 and "--format html does not apply" in run.err


def test_the_key_reference_renders_as_html_without_the_readme_markers(cli: Callable[..., Run]) -> None:
    page = _docs(cli, "--keys", "--format", "html")
    root = _parse(page)
    assert "BEGIN plugin key reference" not in page and any("fields.<name>.coerce" in t for h, rows in _tables(root)
                                                               for row in rows for t in [row[0]["text"]])


def test_the_language_reference_renders_as_html_with_heading_anchors(cli: Callable[..., Run]) -> None:
    root = _parse(_docs(cli, "--language", "--format", "html"))
    ids = {h["attrs"].get("id") for level in ("h2", "h3") for h in _all(root, level)}
    targets = set(re.findall(r"\]\(#([\w-]+)\)", (REPO / "docs" / "language.md").read_text()))
    assert targets and targets <= ids, f"links to no heading: {sorted(targets - ids)}"
