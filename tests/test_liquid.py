"""`@liquid` (engine/lang/liquid/): Segment's cases, the sandbox refused at load with its column, every runaway
ending as one invalid event, and the directive through `validate`, `preview`, `send` and `actionmap test`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import liquid
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, MappingFailure
from engine.lang.liquid import DISABLED_FILTERS, DISABLED_TAGS, compile_liquid
from engine.limits import MAX_INT, MAX_LIQUID_CHARS, MAX_LIQUID_VALUE, MAX_LIQUID_WORK
from engine.lang.mapping import compile_mapping
from tests.conftest import USAGE_EVENTS, track_events

EVENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u-1",
    "properties": {"world": "Earth", "plan": "pro", "tags": ["a", "b"], "price": 10.0, "ratio": 0.5, "count": 3,
                   "flags": [True, None, 1.5], "nothing": None, "obj": {"k": 1}, "long": "x" * 50_000},
    "traits": {"name": "ada", "address": {"city": "Paris"}},
}


def render(template: str, event: Any = EVENT) -> Any:
    return compile_mapping({"@liquid": template}, "/m").evaluate(event)


def load_error(template: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        compile_mapping({"@liquid": template}, "/m")
    return caught.value


def failure(template: str, event: Any = EVENT) -> str:
    with pytest.raises(MappingFailure) as caught:
        render(template, event)
    return str(caught.value)


# --- Segment's own cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, event, expected",
    [
        ("{{ properties.world }}", {"properties": {"world": "World"}}, "World"),  # simple
        ("{{ properties.address.city }}", {"properties": {"address": {"city": "Paris"}}}, "Paris"),  # nested
        ("{{ properties.first }} {{ properties.last }}", {"properties": {"first": "Ada", "last": "L"}}, "Ada L"),  # multiple
        ('{% if properties.world == "Earth" %}Hello Earth{% else %}Hello stranger{% endif %}',
         {"properties": {"world": "Earth"}}, "Hello Earth"),  # a tag
        ('{% if properties.world == "Earth" %}Hello Earth{% else %}Hello stranger{% endif %}',
         {"properties": {"world": "Mars"}}, "Hello stranger"),
        ("{{ properties.world | upcase }}", {"properties": {"world": "Earth"}}, "EARTH"),  # a filter
        ('{% if properties.world == "Earth" %}{{ properties.world | upcase }}{% endif %}',
         {"properties": {"world": "Earth"}}, "EARTH"),  # a tag and a filter
        ('{% if event == "Order Completed" %}order{% endif %}', EVENT, "order"),  # the event's top-level keys
        ("{{ traits.name | capitalize }} from {{ traits.address.city }}", EVENT, "Ada from Paris"),
        ("", EVENT, ""),
        ("plain text", EVENT, "plain text"),
    ],
)
def test_segment_cases(template: str, event: dict[str, Any], expected: str) -> None:
    assert render(template, event) == expected


def test_missing_and_null_variables_render_empty() -> None:
    assert render("[{{ nope }}|{{ properties.nothing }}|{{ properties.nope.deeper }}|{{ traits.nope | upcase }}]") == "[|||]"
    assert render("{% if properties.nothing %}yes{% else %}no{% endif %}") == "no"


def test_values_are_written_as_javascript_writes_them() -> None:
    """liquidjs joins an array's items with nothing and writes numbers, booleans and null as JavaScript does."""
    assert render("{{ properties.tags }}") == "ab"
    assert render("{{ properties.price }}|{{ properties.ratio }}|{{ properties.count }}") == "10|0.5|3"
    assert render("{{ properties.flags }}") == "true1.5"
    assert render("{{ properties.obj }}") == "[object Object]"
    assert render("{{ properties.price | append: ' EUR' }}") == "10 EUR"
    assert render("{{ properties.flags | join: ',' }}") == "true,,1.5"
    assert render("{{ (1..4) }}") == "1234"
    assert render("{{ 0.0000001 }}|{{ 0.000001 }}") == "1e-7|0.000001"


def test_the_scope_is_the_event_only() -> None:
    """python-liquid's `now` and `today` are not variables here (as in liquidjs); an event key of that name is."""
    assert render("[{{ now }}{{ today }}]") == "[]"
    assert render("{{ now }}", {"now": "event's"}) == "event's"
    assert render("{{ x }}", []) == ""  # not an object: nothing in scope


def test_liquid_outputs_a_string_always() -> None:
    assert render("{{ properties.count | plus: 1 }}") == "4"
    assert render("{{ properties.tags | size }}") == "2"


# --- refused at load ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, None, ["{{ x }}"], {"@path": "$.x"}, True])
def test_a_non_string_template_is_a_load_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="@liquid takes a Liquid template"):
        compile_mapping({"@liquid": bad}, "/m")


def test_templates_are_limited_to_1000_characters() -> None:
    assert render("x" * MAX_LIQUID_CHARS) == "x" * MAX_LIQUID_CHARS
    error = load_error("x" * (MAX_LIQUID_CHARS + 1))
    assert "liquid template values are limited to 1000 characters" in error.message
    assert "1001" in error.message and error.offset == MAX_LIQUID_CHARS


TAG_USES = {
    "case": "{% case x %}{% when 1 %}one{% endcase %}",
    "for": "{% for t in properties.tags %}{{ t }}{% endfor %}",
    "include": "{% include 'other' %}",
    "layout": "{% layout 'base' %}",
    "render": "{% render 'other' %}",
    "tablerow": "{% tablerow t in properties.tags %}{{ t }}{% endtablerow %}",
}


@pytest.mark.parametrize("tag", sorted(DISABLED_TAGS))
def test_each_disabled_tag_is_refused_at_load_with_its_column(tag: str) -> None:
    template = "Hi {{ traits.name }}, " + TAG_USES[tag]
    error = load_error(template)
    assert f'tag "{tag}" is disabled' in error.message
    assert error.offset == template.index(tag)
    assert f"at column {template.index(tag) + 1}:" in error.message


def test_a_disabled_tag_inside_a_liquid_tag_is_found_on_its_line() -> None:
    template = "{% liquid\nassign a = 1\nfor t in properties.tags\necho t\nendfor %}"
    error = load_error(template)
    assert 'tag "for" is disabled' in error.message and "line 3, column 1" in error.message
    assert error.offset == template.index("for t")


FILTER_USES = {name: f"{{{{ properties.tags | {name} }}}}" for name in DISABLED_FILTERS}


@pytest.mark.parametrize("name", sorted(DISABLED_FILTERS))
def test_each_disabled_filter_is_refused_at_load_with_its_column(name: str) -> None:
    template = "{{ traits.name }} " + FILTER_USES[name]
    error = load_error(template)
    assert f'filter "{name}" is disabled' in error.message
    assert error.offset == template.index(f"| {name}") + 2


def test_segment_lists_twenty_disabled_filters_and_six_tags() -> None:
    assert len(DISABLED_FILTERS) == 20 and len(DISABLED_TAGS) == 6


def test_a_disabled_filter_is_refused_even_on_a_branch_no_event_takes() -> None:
    """liquidjs would only fail when the branch renders; here the template never loads."""
    template = '{% if false %}{% assign s = properties.tags | sort %}{% endif %}ok'
    assert 'filter "sort" is disabled' in load_error(template).message


def test_an_unknown_filter_is_refused_at_load_with_a_suggestion() -> None:
    error = load_error("{{ traits.name | upcas }}")
    assert 'unknown filter "upcas"; did you mean "upcase"?' in error.message and error.offset == 17
    assert "@json" in load_error("{{ properties | json }}").message  # liquidjs's json: what to write instead


def test_python_liquid_extras_are_not_filters_here() -> None:
    for name in ("safe", "escapejs"):
        assert f'unknown filter "{name}"' in load_error(f"{{{{ x | {name} }}}}").message


def test_unknown_and_misplaced_tags_are_load_errors() -> None:
    assert 'unknown tag "ifchanged"' in load_error("{% ifchanged %}x{% endifchanged %}").message
    assert 'unknown tag "iff"; did you mean "if"?' in load_error("{% iff a %}x{% endif %}").message
    assert "has no open block" in load_error("x{% endif %}").message


def test_an_unclosed_block_points_at_its_opening_tag() -> None:
    template = "{% if a %}ok{% endif %} {% if b %}never closed"
    error = load_error(template)
    assert '"{% if %}" is never closed' in error.message and error.offset == template.rindex("if b")


def test_a_syntax_error_is_located() -> None:
    error = load_error("Hi {{ traits.name ")
    assert error.offset is not None and "expected '}}'" in error.message


def test_a_filter_given_the_wrong_arguments_is_a_load_error() -> None:
    assert 'filter "append" takes arg' in load_error("{{ x | append }}").message
    assert 'filter "upcase" takes no arguments' in load_error("{{ x | upcase: 1 }}").message
    assert "unexpected keyword argument 'nope'" in load_error("{{ x | default: 1, nope: true }}").message
    assert render("{{ x | default: 'd', allow_false: true }}") == "d"


def test_nesting_past_the_expression_limit_is_a_load_error_not_a_recursion() -> None:
    brackets = "{{ " + "a[" * 70 + "0" + "]" * 70 + " }}"
    assert "brackets nest deeper than 64 levels" in load_error(brackets).message
    chain = "{% if " + " or ".join(["a"] * 80) + " %}x{% endif %}"
    assert '"and"/"or"' in load_error(chain).message
    blocks = "{% if a %}" * 31 + "x" + "{% endif %}" * 31
    assert "nest deeper than 30 levels" in load_error(blocks).message


def test_the_librarys_own_environment_is_untouched() -> None:
    """actionmap's sandbox lives in its own environment: the library's default one still sorts."""
    assert liquid.Template("{{ x | sort | join: ',' }}").render(x=[3, 1, 2]) == "1,2,3"


# --- the runaways, each one invalid event ---------------------------------------------------------


def test_assign_doubling_ends_as_a_failure() -> None:
    template = '{% assign a = "ab" %}' + "{% assign a = a | append: a %}" * 25 + "{{ a | size }}"
    message = failure(template)
    assert 'filter "append" would make 131072 characters' in message
    assert re.search(r"column \d+", message)


def test_capture_doubling_ends_as_a_failure() -> None:
    template = '{% assign a = "abcd" %}' + "{% capture a %}{{ a }}{{ a }}{% endcapture %}" * 20 + "{{ a }}"
    assert "the rendered text would pass 100000 characters" in failure(template)


def test_a_huge_range_fails_before_anything_walks_it() -> None:
    assert "a range of more than 100000 numbers" in failure('{{ (1..1000000000) | join: "," }}')
    assert "a range of more than 100000 numbers" in failure("{{ (1..1000000000) }}")
    assert "a range of more than 100000 numbers" in failure('{% if (1..1000000000) contains "x" %}y{% endif %}')
    assert "a range of more than 100000 numbers" in failure("{% assign r = (0..properties.big) %}", {"properties": {"big": "9" * 4000}})


@pytest.mark.parametrize(
    "template",
    [
        "{% unless (1..999999999) contains 'x' %}{% endunless %}",
        "{% if false %}{% elsif (1..999999999) contains 'x' %}{% endif %}",
        "{% capture c %}{{ (1..999999999) | size }}{% endcapture %}",
        "{% liquid\nassign r = (1..999999999)\necho r %}",
        "{% echo 'x' | append: (1..999999999) %}",
        "{{ 'x' | default: (1..999999999) }}",
    ],
)
def test_every_place_a_range_can_be_written_is_bounded(template: str) -> None:
    assert "a range of more than 100000 numbers" in failure(template)


def test_a_range_at_the_limit_is_fine() -> None:
    assert render(f"{{{{ (1..{MAX_LIQUID_VALUE}) | size }}}}") == str(MAX_LIQUID_VALUE)


def test_an_empty_pattern_replace_is_sized_before_it_runs() -> None:
    """An empty pattern matches at len+1 places: 50,000 + 50,001 x 2 characters is over the limit, exactly computed."""
    assert 'filter "replace" would make 150002 characters' in failure('{{ properties.long | replace: "", "xx" }}')
    assert render('{{ "abc" | replace: "", "-" }}') == "-a-b-c-"
    template = '{{ properties.s | replace: "", "x" | size }}'
    assert render(template, {"properties": {"s": "a" * 49_999}}) == "99999"  # 49,999 + 50,000
    assert 'would make 100001 characters' in failure(template, {"properties": {"s": "a" * 50_000}})


def test_split_of_a_huge_text_is_counted_before_it_runs() -> None:
    event = {"properties": {"s": "a" * MAX_LIQUID_VALUE}}
    assert 'filter "split" would make 100001 items' in failure('{{ properties.s | split: "a" | size }}', event)
    assert render('{{ properties.s | split: "" | size }}', event) == str(MAX_LIQUID_VALUE)


def test_a_value_over_the_limit_is_refused_as_input() -> None:
    event = {"properties": {"s": "a" * (MAX_LIQUID_VALUE + 1)}}
    assert 'filter "upcase" takes a text of 100001 characters' in failure("{{ properties.s | upcase }}", event)
    assert "a text of 100001 characters is over the limit of 100000" in failure("{{ properties.s }}", event)


def test_times_squaring_leaves_the_64_bit_range_and_fails() -> None:
    template = "{% assign a = 3 %}" + "{% assign a = a | times: a %}" * 8 + "{{ a }}"
    assert 'filter "times" made an integer outside the 64-bit range' in failure(template)
    assert render("{{ 4294967295 | times: 4294967297 }}") == str(2**64 - 1) == str(MAX_INT)


@pytest.mark.parametrize(
    "template, fragment",
    [
        ('{{ properties.long | append: properties.long | append: "x" }}', 'filter "append" would make 100001'),
        ("{{ properties.long | escape }}", None),  # 50,000 plain characters: fine
        ('{{ properties.long | replace: "x", "&" | escape }}', 'filter "escape" would make 250000'),
        ('{{ properties.long | url_encode }}', None),
        ('{{ properties.long | replace: "x", "é" | url_encode }}', 'filter "url_encode" would make 300000'),
        ('{{ properties.long | append: properties.long | base64_encode }}', 'filter "base64_encode" would make 133336'),
        ('{{ "x" | date: "%99999Y%99999Y" }}', 'filter "date" would make'),
        ('{{ properties.tags | join: properties.long }}', None),
        ('{{ properties.long | split: "" | join: "--" }}', 'filter "join" would make 149998'),
    ],
)
def test_filters_that_multiply_are_sized_before_they_run(template: str, fragment: str | None) -> None:
    if fragment is None:
        assert isinstance(render(template), str)
    else:
        assert fragment in failure(template)


def test_the_work_budget_stops_a_template_that_churns_long_values() -> None:
    """Each value is within the limit, but thirty passes over 100,000 items pass the (counted, not timed) budget."""
    event = {"properties": {"s": "ab" * (MAX_LIQUID_VALUE // 2)}}
    template = '{{ properties.s | split: "" | compact | size }}' * 20
    assert "passes the work limit" in failure(template, event)
    assert str(MAX_LIQUID_WORK) in failure(template, event)
    assert render('{{ properties.s | split: "" | compact | size }}', event) == str(MAX_LIQUID_VALUE)


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("{{ 10 | divided_by: 0 }}", "divided_by: division by zero"),
        ("{{ 10 | modulo: 0 }}", "modulo: can't divide by 0"),
        ("{{ 1.5 | modulo: 0 }}", "divides by zero"),
        ('{{ "1e999" | ceil }}', "ceil: a number is out of range"),
        ('{{ "/w==" | base64_decode }}', "base64_decode:"),
        ('{{ "abc" | base64_decode }}', "invalid base64"),
        ('{{ properties.tags | split: "," | sum }}', "sum:"),
        ("{{ properties.count | slice: 'x' }}", "slice expected an integer"),
    ],
)
def test_library_errors_become_one_failure_with_the_column(template: str, fragment: str) -> None:
    message = failure(template)
    assert message.startswith("@liquid failed at column ") and fragment in message


def test_a_deep_event_fails_cleanly_not_with_a_recursion_error() -> None:
    deep: Any = "end"
    for _ in range(5000):
        deep = [deep]
    assert "could not render this event: the value nests too deep" in failure("{{ d }}", {"d": deep})


def test_the_same_event_always_gets_the_same_outcome() -> None:
    template = '{% assign a = properties.long %}' + "{% assign a = a | append: a %}" * 3
    first = failure(template)
    assert all(failure(template) == first for _ in range(5))


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30)
JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)
KEYS = ["properties", "traits", "event", "a", "b", "context"]
EVENTS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), JSON, max_size=6)
TEMPLATES = [
    "{{ properties.x }}{{ traits }}",
    "{{ properties | upcase | split: '' | join: '-' }}",
    "{{ a | plus: b | times: a | divided_by: b | round: 2 }}",
    "{% if a contains b %}{{ a | size }}{% elsif a > b %}{{ b | first }}{% else %}{{ a | last }}{% endif %}",
    "{% assign x = a | default: b | append: a %}{% assign x = x | append: x | append: x %}{{ x | truncate: 20 }}",
    "{{ a | replace: b, a | remove: b | strip_html | escape | url_encode | base64_encode }}",
    "{{ event | date: '%Y-%m-%d' }}{{ a | compact | where: 'k' | slice: 1, 2 }}{{ b | abs | ceil | floor | at_least: a }}",
    "{% capture c %}{{ a }}{{ b }}{% endcapture %}{{ c | split: b | sum }}{{ context | url_decode | base64_decode }}",
]


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.sampled_from(TEMPLATES))
def test_any_event_gives_a_string_or_a_mapping_failure(event: dict[str, Any], template: str) -> None:
    getter = compile_liquid(template, "/m")
    try:
        result = getter(event)
    except MappingFailure:
        return
    assert isinstance(result, str) and len(result) <= MAX_LIQUID_VALUE


# --- liquidjs's filters, where python-liquid differs ---------------------------------------------------


def _reference_strip_html(text: str) -> str:
    """liquidjs's strip_html as its pattern says it (non-greedy, any character, newlines too)."""
    return re.sub(r"<script.*?</script>|<!--.*?-->|<style.*?</style>|<.*?>", "", text, flags=re.DOTALL)


STRIP_HTML = compile_liquid("{{ s | strip_html }}", "/m")
HTML_PIECES = st.lists(st.sampled_from(["<script", "</script>", "<style", "</style>", "<!--", "-->", "<", ">", "/", "a", "\n", " "]),
                       max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="<>/!-ascriptyle a\n", max_size=40) | HTML_PIECES)
def test_strip_html_is_liquidjss_pattern(text: str) -> None:
    assert STRIP_HTML({"s": text}) == _reference_strip_html(text)


def test_strip_html_examples() -> None:
    assert STRIP_HTML({"s": "Have <em>you</em> read <strong>Ulysses</strong>?"}) == "Have you read Ulysses?"
    assert STRIP_HTML({"s": "a<script>if (x > 1) {}</script>b<style>p > a {}</style>c<!-- > -->d<!-->e"}) == "abcde"
    assert STRIP_HTML({"s": "<div\nclass='x'>text</div> 1 < 2"}) == "text 1 < 2"
    assert STRIP_HTML({"s": "<SCRIPT>x</SCRIPT>"}) == "x"  # case-sensitive, as liquidjs's pattern


def test_strip_html_is_linear_on_hostile_texts() -> None:
    """Every "<" without a closer after it: a rescanning implementation is quadratic here (a hang, not a slow test)."""
    from engine.lang.liquid.filters import _strip_html

    for text in ("<script" * 50_000, "<a" * 50_000, "<!--" * 50_000, "<style" * 50_000, ">" + "<a" * 50_000):
        assert _strip_html(text) == text  # no ">" anywhere after the first "<": all of it stays
    assert _strip_html("<style>" * 50_000) == ""  # no "</style>": each "<style>" is a plain tag
    assert _strip_html("<script>a" * 50_000) == "a" * 50_000
    assert _strip_html("<script>" * 50_000 + "</script>") == ""
    assert _strip_html("<script" * 50_000 + ">") == ""
    assert _strip_html("x<!--" * 50_000 + "-->") == "x"
    # the reported template: 96,003 characters stripped three times
    event = {"s": ">" + "<a" * 16_000}
    template = "{% assign t = s | append: s | append: s %}" + "{{ t | strip_html | size }}," * 3
    expected = len(_reference_strip_html(event["s"] * 3))
    assert render(template, event) == f"{expected}," * 3


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ 5 | divided_by: 3 }}", "1.6666666666666667"),  # liquidjs: a JavaScript division, never an integer one
        ("{{ 10 | divided_by: 4 }}", "2.5"),
        ("{{ 6 | divided_by: 3 }}", "2"),
        ("{{ 5 | divided_by: 3, true }}", "1"),  # integerArithmetic: Math.floor
        ("{{ -5 | divided_by: 3, true }}", "-2"),
        ("{{ 7 | divided_by: 2, false }}", "3.5"),
        ('{{ "10" | divided_by: "4" }}', "2.5"),  # texts of digits are numbers, as in the library's filters
        ("{{ properties.price | divided_by: properties.count }}", "3.3333333333333335"),
        ("{{ 5 | divided_by: 2 | times: 2 }}", "5"),
        ("{{ 2.5 | round }}", "3"),  # Math.round: halves toward +infinity
        ("{{ -2.5 | round }}", "-2"),
        ("{{ 0.5 | round }}", "1"),
        ("{{ -0.5 | round }}", "0"),
        ("{{ 3.7 | round }}", "4"),
        ("{{ 1.25 | round: 1 }}", "1.3"),
        ("{{ 1.005 | round: 2 }}", "1"),  # 1.005 * 100 is 100.49999999999999 in JavaScript too
        ("{{ 2.675 | round: 2 }}", "2.68"),  # 2.675 * 100 is 267.5 in doubles
        ("{{ 1234 | round: -2 }}", "1200"),
        ('{{ "3.14159" | round: "2" }}', "3.14"),
        ("{{ properties.count | round }}", "3"),
    ],
)
def test_divided_by_and_round_are_liquidjss(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(
    "template, event, fragment",
    [
        ("{{ 10 | divided_by: 0 }}", {}, "divided_by: division by zero"),
        ("{{ 0 | divided_by: 0.0 }}", {}, "divided_by: division by zero"),
        ('{{ 1 | divided_by: "x" }}', {}, "divided_by: division by zero"),
        ("{{ a | divided_by: 0.1 }}", {"a": 1e308}, "divided_by: a number is out of range"),
        ("{{ 1.5 | round: 400 }}", {}, "round: a number is out of range"),
    ],
)
def test_a_number_javascript_would_write_as_infinity_or_nan_fails(template: str, event: dict[str, Any], fragment: str) -> None:
    assert fragment in failure(template, event)


LIQUIDJS_FILTERS = """abs append array_to_sentence_string at_least at_most base64_decode base64_encode capitalize ceil cgi_escape
    compact concat date date_to_long_string date_to_rfc822 date_to_string date_to_xmlschema default divided_by downcase escape
    escape_once find find_exp find_index find_index_exp first floor group_by group_by_exp has has_exp hmac_sha256 inspect join
    json jsonify last lstrip map minus modulo newline_to_br normalize_whitespace number_of_words plus pop prepend push raw reject
    reject_exp remove remove_first remove_last replace replace_first replace_last reverse round rstrip sample sha256 shift size
    slice slugify sort sort_natural split strip strip_html strip_newlines sum times to_integer truncate truncatewords uniq
    unshift upcase uri_escape url_decode url_encode where where_exp xml_escape""".split()
"""liquidjs's built-in filters (liquidjs.com/filters, src/filters/*.ts)."""
LIQUIDJS_ONLY = sorted(set(LIQUIDJS_FILTERS) - set(liquid.Environment().filters) - DISABLED_FILTERS)


def test_the_liquidjs_only_filters_are_the_ones_python_liquid_lacks() -> None:
    assert {"json", "jsonify", "inspect", "push", "pop", "shift", "unshift", "slugify", "to_integer", "xml_escape", "cgi_escape",
            "uri_escape", "normalize_whitespace", "number_of_words", "date_to_xmlschema", "date_to_rfc822", "date_to_string",
            "date_to_long_string", "sample"} <= set(LIQUIDJS_ONLY)
    assert "where" not in LIQUIDJS_ONLY  # python-liquid has it


@pytest.mark.parametrize("name", LIQUIDJS_ONLY)
def test_a_liquidjs_filter_python_liquid_lacks_says_so(name: str) -> None:
    template = f"{{{{ properties.tags | {name} }}}}"
    error = load_error(template)
    assert f"unknown filter \"{name}\": it is a liquidjs filter that actionmap's Liquid (python-liquid) does not have; " in error.message
    assert "did you mean" not in error.message and error.offset == template.index(name)


@pytest.mark.parametrize(
    "name, instead",
    [("json", "@json"), ("to_integer", "plus: 0"), ("xml_escape", "escape"), ("cgi_escape", "url_encode"),
     ("normalize_whitespace", "squish"), ("date_to_string", 'date: "%d %b %Y"'), ("push", "append"), ("shift", "slice: 1")],
)
def test_a_liquidjs_filter_with_an_equivalent_names_it(name: str, instead: str) -> None:
    assert instead in load_error(f"{{{{ x | {name} }}}}").message


def test_what_the_advice_suggests_works() -> None:
    assert render('{{ "2024-03-05T10:20:30Z" | date: "%d %b %Y" }}') == "05 Mar 2024"
    assert render('{{ "a  b\tc" | split: " " | size }}') == "3"
    assert render('{% assign n = properties.tags | size %}{{ properties.tags | slice: 1, n }}') == "b"
    assert render('{{ properties.tags | join: "," | append: ",c" | split: "," | join: "-" }}') == "a-b-c"
    assert render('{{ "42" | plus: 0 | plus: 1 }}') == "43"


# --- messages ------------------------------------------------------------------------------------------


def test_an_output_past_the_limit_says_the_rendered_text_would_pass_it() -> None:
    message = failure("{{ s }}", {"s": ["x" * 60_000, "y" * 60_000]})
    assert "the rendered text would pass 100000 characters (the limit)" in message
    assert "60000" not in message
    message = failure("{{ a }}{{ a }}", {"a": "x" * 60_000})
    assert "the rendered text would pass 100000 characters (the limit)" in message
    assert "a text of 200000 characters is over the limit of 100000" in failure("{{ s }}", {"s": "x" * 200_000})
    assert "the text of an array would pass 100000" in failure("{{ s | append: 'x' }}", {"s": ["x" * 60_000, "y" * 60_000]})


def test_a_decimal_overflow_is_said_in_words() -> None:
    message = failure("{{ s | sum }}", {"s": ["1e9999999"] * 2})
    assert "sum: a number is out of range" in message and "class" not in message


def test_argument_names_are_written_without_pythons_trailing_underscore() -> None:
    message = load_error("{{ x | default: 1, 2 }}").message
    assert 'filter "default" takes default (optional), allow_false (optional)' in message
    assert "default_" not in message


def test_an_inline_comment_is_not_counted_for_nesting() -> None:
    assert render("{% # " + "(" * 70 + " %}ok") == "ok"
    assert render("{%- # " + "[" * 70 + " -%}ok") == "ok"
    assert render("{% liquid\n# " + "(" * 70 + "\necho 'ok' %}") == "ok"
    deep = "{% liquid\n# a note\necho " + "a[" * 70 + "0" + "]" * 70 + " %}"
    assert "brackets nest deeper than 64 levels" in load_error(deep).message


# --- mapping files and the command line -------------------------------------------------------------


MAPPING = USAGE_EVENTS + """\
    mapping:
      event_type:
        "@liquid": "{{ event | downcase | replace: ' ', '_' }}{% if properties.plan %}.{{ properties.plan | upcase }}{% endif %}"
"""


def _position(text: str, marker: str) -> tuple[int, int]:
    index = text.index(marker)
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


def test_a_template_error_in_a_file_is_located_at_the_filter(cli, tmp_path: Path) -> None:
    text = MAPPING.replace("downcase |", "downcase | sort |")
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    run = cli("validate", str(path))
    line, column = _position(text, "sort")
    assert run.code == 1
    (message,) = run.err.strip().splitlines()
    assert message.startswith(f"{path}:{line}:{column}: ") and 'filter "sort" is disabled' in message


def test_a_template_error_in_a_block_scalar_is_located(cli, tmp_path: Path) -> None:
    text = MAPPING.replace(
        "\"@liquid\": \"{{ event | downcase | replace: ' ', '_' }}{% if properties.plan %}.{{ properties.plan | upcase }}{% endif %}\"",
        "\"@liquid\": |\n          {{ event | downcase }}\n          {% for t in properties.tags %}{{ t }}{% endfor %}",
    )
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8")
    run = cli("validate", str(path))
    line, column = _position(text, "for t")
    assert run.code == 1
    assert run.err.startswith(f"{path}:{line}:{column}: "), run.err
    assert 'tag "for" is disabled' in run.err


def _events_file(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_preview_renders_liquid(cli, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    events = track_events(2)
    events[0]["event"], events[0]["properties"]["plan"] = "API Call", "pro"
    events[1]["event"] = "Page Render"
    run = cli("preview", "-m", str(mapping), str(_events_file(tmp_path, events)))
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert run.code == 0, run.err
    assert [line["payload"]["event_type"] for line in lines] == ["api_call.PRO", "page_render"]


RUNAWAY = MAPPING.replace(
    "\"@liquid\": \"{{ event | downcase | replace: ' ', '_' }}{% if properties.plan %}.{{ properties.plan | upcase }}{% endif %}\"",
    "\"@liquid\": \"{% assign a = properties.n %}" + "{% assign a = a | append: a %}" * 16 + "{{ event }}-{{ a | size }}\"",
)


def test_a_runaway_template_makes_only_its_event_invalid(cli, tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(RUNAWAY, encoding="utf-8")
    events = track_events(3)
    events[1]["properties"]["n"] = "x" * 100  # 100 x 2^16 characters: far past the limit
    run = cli("preview", "-m", str(mapping), str(_events_file(tmp_path, events)))
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [line["status"] for line in lines] == ["ok", "invalid", "ok"]
    assert lines[0]["payload"]["event_type"] == f"{events[0]['event']}-{len(events[0]['properties']['n']) * 2**16}"
    (error,) = lines[1]["errors"]
    assert error.startswith("event_type: @liquid failed at column ") and 'filter "append" would make' in error
    assert run.code == 2


def test_send_delivers_what_liquid_rendered(cli, emulators, tmp_path: Path) -> None:
    emulator = emulators(tokens={"test-token-not-secret-4242"})
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    events = track_events(3, prefix="lq")
    events[2]["properties"]["plan"] = "team"
    run = cli("send", "-m", str(mapping), str(_events_file(tmp_path, events)), "--set", f"base_url={emulator.base_url}",
              "--dead-letter", str(tmp_path / "dead.ndjson"))
    assert run.code == 0, run.err
    expected = {e["messageId"]: e["event"].lower() + (".TEAM" if i == 2 else "") for i, e in enumerate(events)}
    assert {mid: payload["event_type"] for mid, payload in emulator.stored.items()} == expected


def test_actionmap_test_runs_liquid_expectations(cli, tmp_path: Path) -> None:
    tests = """tests:
  - name: liquid names the event
    event: {type: track, messageId: m-1, userId: u-1, event: API Call, timestamp: "2026-11-26T10:00:00Z", properties: {plan: pro}}
    expect:
      - subscription: Usage events
        payload: {transaction_id: m-1, customer_id: u-1, event_type: api_call.PRO, timestamp: "2026-11-26T10:00:00.000Z", properties: {plan: pro}}
  - name: a runaway template makes the event invalid
    event: {type: track, messageId: m-2, userId: u-1, event: x, timestamp: "2026-11-26T10:00:00Z", properties: {n: "%s"}}
    expect:
      - subscription: Usage events
        status: invalid
        error: would make
"""
    mapping = tmp_path / "m.yaml"
    body = RUNAWAY.replace("{{ event }}-{{ a | size }}", "{{ event | downcase | replace: ' ', '_' }}{% if properties.plan %}.{{ properties.plan | upcase }}{% endif %}")
    mapping.write_text(body + tests % ("y" * 100), encoding="utf-8")
    run = cli("test", str(mapping))
    assert run.out.strip().splitlines()[-1] == "2 passed, 0 failed", run.out + run.err
    assert run.code == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(mapping.read_text().replace("event_type: api_call.PRO", "event_type: api_call.pro"), encoding="utf-8")
    assert cli("test", str(broken)).code == 1
