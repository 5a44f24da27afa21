"""A template parsed and checked once (nesting, tags, filters and their arguments, located); one function renders an event."""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any, Iterable, Iterator, Optional

from liquid import BoundTemplate, RenderContext
from liquid.ast import Node as LiquidNode
from liquid.builtin.expressions import Filter, FilteredExpression, KeywordArgument, TernaryFilteredExpression
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.exceptions import BlockNestingError, LiquidError, LocalNamespaceLimitError
from liquid.expression import Expression
from liquid.token import TOKEN_DOC, TOKEN_EXPRESSION, TOKEN_TAG, Token

from engine.errors import ConfigError, MappingFailure
from engine.lang.jsonpath import shorten
from engine.limits import MAX_EXPRESSION_DEPTH, MAX_LIQUID_CHARS
from engine.lang.liquid.environment import _BoundedRange, _Context, _ENV
from engine.lang.liquid.filters import _describe
from engine.lang.liquid.sandbox import DISABLED_FILTERS, DISABLED_TAGS, _FILTER_ADVICE, Getter, _NAMESPACE_BYTES, _TAG_ADVICE, _where


def _config_error(text: str, pointer: str, offset: int, why: str) -> ConfigError:
    return ConfigError(f"invalid @liquid template {shorten(text)} at {_where(text, offset)}: {why}", pointer, offset)


_WORD_OPERATOR = re.compile(r"\b(?:and|or)\b")


_STRING = re.compile(r"\"[^\"]*\"?|'[^']*'?")


_LIQUID_COMMENT = re.compile(r"^[ \t]*#[^\n]*", re.MULTILINE)  # a comment line of {% liquid %}


def _nesting_problem(text: str) -> tuple[int, str] | None:
    """An expression nested deeper than ``MAX_EXPRESSION_DEPTH`` (brackets plus ``and``/``or``), before parsing.

    python-liquid parses and evaluates brackets and boolean chains by recursion (about two frames a
    level), so a 1000-character template could reach Python's recursion limit, at load or, worse,
    only on a deep call stack at render. Counted per expression, strings skipped; over-counts
    rather than under-counts.
    """
    try:
        tokens = list(_ENV.tokenizer()(text))
    except LiquidError:
        return None  # a lexing error: the parser reports it, placed
    previous: Token | None = None
    for token in tokens:
        tag = previous.value if previous is not None and previous.kind == TOKEN_TAG else None
        previous = token
        if token.kind != TOKEN_EXPRESSION or tag == "#":
            continue  # an inline comment's text ({% # ... %}) is never parsed
        value = _LIQUID_COMMENT.sub(lambda m: " " * len(m.group()), token.value) if tag == "liquid" else token.value
        bare = _STRING.sub(lambda m: " " * len(m.group()), value)
        depth = deepest = 0
        for index, char in enumerate(bare):
            if char in "([":
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > MAX_EXPRESSION_DEPTH:
                        return token.start_index + index, f"brackets nest deeper than {MAX_EXPRESSION_DEPTH} levels (the limit)"
            elif char in ")]":
                depth = max(depth - 1, 0)
        operators = list(_WORD_OPERATOR.finditer(bare))
        if len(operators) + deepest > MAX_EXPRESSION_DEPTH:
            offset = token.start_index + operators[min(MAX_EXPRESSION_DEPTH, len(operators) - 1)].start()
            return offset, f"more than {MAX_EXPRESSION_DEPTH} \"and\"/\"or\" in one condition (the limit); split it into nested {{% if %}} tags or {{% assign %}} steps"
    return None


_END_EXPECTED = re.compile(r"expected tag (end\w+)")


def _unclosed_block(text: str, end: str) -> int:
    """Offset of the block tag that ``end`` (``endif``) would close and that is still open."""
    opener = end[3:]
    stack: list[int] = []
    try:
        tokens = list(_ENV.tokenizer()(text))
    except LiquidError:
        return len(text)
    for token in tokens:
        if token.kind == TOKEN_TAG:
            if token.value == opener:
                stack.append(token.start_index)
            elif token.value == end and stack:
                stack.pop()
    return stack[-1] if stack else len(text)


def _syntax_error(text: str, pointer: str, err: LiquidError) -> ConfigError:
    """A parse error of the library, placed and said for an operator."""
    message = str(err.message)
    token = err.token
    offset = token.start_index if token is not None and token.start_index >= 0 and token.source == text else -1
    if isinstance(err, BlockNestingError):
        return _config_error(text, pointer, max(offset, 0), f"blocks ({{% if %}}, {{% capture %}} ...) nest deeper than {_ENV.block_nesting_limit} levels (the limit)")
    if token is not None and token.kind == TOKEN_DOC:
        return _config_error(text, pointer, max(offset, 0), 'unknown tag "doc"; write a note as {% comment %}...{% endcomment %}')
    unexpected = re.fullmatch(r"unexpected tag '(\w*)'", message)
    if unexpected and token is not None:
        name = unexpected.group(1)
        if name in _TAG_ADVICE:
            kind = "disabled" if name in DISABLED_TAGS else "not available"
            return _config_error(text, pointer, offset, f'tag "{name}" is {kind}: {_TAG_ADVICE[name]}')
        if name.startswith("end") or name in ("else", "elsif", "when"):
            return _config_error(text, pointer, offset, f'"{{% {name} %}}" has no open block before it to belong to; remove it or add the opening tag')
        allowed = sorted(t for t in _ENV.tags if t.isidentifier() and t not in ("output", "content", "illegal"))
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "the tags available are " + ", ".join(allowed)
        return _config_error(text, pointer, offset, f'unknown tag "{name}"; {hint}')
    ended = _END_EXPECTED.search(message)
    if ended and offset < 0:
        end = ended.group(1)
        start = _unclosed_block(text, end)
        return _config_error(text, pointer, start, f'"{{% {end[3:]} %}}" is never closed: add "{{% {end} %}}" after its content')
    if offset < 0:
        offset = len(text)
    return _config_error(text, pointer, offset, f"{message} (Liquid is written {{{{ value | filter: argument }}}} and {{% tag ... %}})")


def _expressions(node: LiquidNode, context: RenderContext) -> Iterator[Expression]:
    """Every expression in the tree under ``node``, nested ones included, iteratively."""
    nodes = [node]
    while nodes:
        current = nodes.pop()
        nodes.extend(current.children(context, include_partials=False))
        pending = list(current.expressions())
        while pending:
            expression = pending.pop()
            yield expression
            pending.extend(expression.children())


def _filters_of(expression: Expression) -> Iterable[Filter]:
    if isinstance(expression, FilteredExpression):
        return expression.filters or []
    if isinstance(expression, TernaryFilteredExpression):
        return [*(expression.filters or []), *(expression.tail_filters or [])]
    return []


def _parameter_name(name: str) -> str:
    """A Python parameter name as an operator reads it: without the underscore that avoids a keyword (``default_``)."""
    return name[:-1] if name.endswith("_") and len(name) > 1 else name


def _signature_problem(name: str, filter_: Filter) -> str | None:
    """Why the filter's arguments cannot fit the library function, or None (checked once, here)."""
    func = getattr(_ENV.filters[name], "__wrapped__", None)
    try:
        signature = inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    positional = [arg for arg in filter_.args if not isinstance(arg, KeywordArgument)]
    keywords = {arg.name: None for arg in filter_.args if isinstance(arg, KeywordArgument)}
    extra = {key: None for key in ("environment", "context") if getattr(func, f"with_{key}", False)}
    try:
        signature.bind(None, *[None] * len(positional), **keywords, **extra)
    except TypeError as err:
        params = [p for p in signature.parameters.values() if p.name not in ("environment", "context")][1:]
        names = [_parameter_name(p.name) for p in params]
        shape = ", ".join(n if p.default is inspect.Parameter.empty else f"{n} (optional)" for n, p in zip(names, params))
        takes = f"takes {shape}" if shape else "takes no arguments"
        why = re.sub(r"'(\w+?)_'", r"'\1'", str(err))
        return f'filter "{name}" {takes}: {why}; write it as {{{{ value | {name}{": " + ", ".join(names) if names else ""} }}}}'
    return None


def _check_tree(template: BoundTemplate, text: str, pointer: str) -> None:
    """Disabled, unknown and mis-called filters refused at load (first in the text first); ranges bounded."""
    context = _Context(template)
    problems: list[tuple[int, str]] = []
    for root in template.nodes:
        for expression in _expressions(root, context):
            if type(expression) is RangeLiteral:
                expression.__class__ = _BoundedRange
            for filter_ in _filters_of(expression):
                offset = filter_.token.start_index
                name = filter_.name
                if name in DISABLED_FILTERS:
                    problems.append((offset, f'filter "{name}" is disabled (as in Segment); remove it or shape the value with another mapping directive first'))
                elif name in _FILTER_ADVICE:
                    problems.append((offset, f'unknown filter "{name}": {_FILTER_ADVICE[name]}'))
                elif name not in _ENV.filters:
                    close = difflib.get_close_matches(name, [f for f in _ENV.filters if f not in DISABLED_FILTERS], n=1)
                    hint = f'did you mean "{close[0]}"?' if close else "the filters available are " + ", ".join(sorted(_ENV.filters))
                    problems.append((offset, f'unknown filter "{name}"; {hint}'))
                elif (problem := _signature_problem(name, filter_)) is not None:
                    problems.append((offset, problem))
    if problems:
        offset, why = min(problems)
        raise _config_error(text, pointer, offset, why)


def compile_liquid(text: str, pointer: str) -> Getter:
    """The template parsed and checked once; the function renders one event (a dict) to a string.

    Load-time problems are :class:`ConfigError` with the offset inside ``text``; the function
    raises only :class:`MappingFailure`.
    """
    if len(text) > MAX_LIQUID_CHARS:
        raise ConfigError(
            f"liquid template values are limited to {MAX_LIQUID_CHARS} characters; this one has {len(text)} "
            f"({shorten(text)}): shorten it, or split it over several fields",
            pointer,
            MAX_LIQUID_CHARS,
        )
    nesting = _nesting_problem(text)
    if nesting is not None:
        raise _config_error(text, pointer, *nesting)
    try:
        template = _ENV.from_string(text)
    except LiquidError as err:
        cause = err.__cause__
        if isinstance(cause, RecursionError):
            raise _config_error(text, pointer, 0, "the template nests too deep; flatten it") from None
        if cause is not None and not isinstance(cause, LiquidError):
            raise _config_error(text, pointer, 0, f"it cannot be parsed ({_describe(cause)})") from None
        raise _syntax_error(text, pointer, err) from None
    _check_tree(template, text, pointer)

    def render(event: Any) -> str:
        scope = event if isinstance(event, dict) else {}
        try:
            return template.render(scope)
        except MappingFailure:
            raise
        except LiquidError as err:
            raise MappingFailure(_render_message(text, err)) from None
        except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError, a library bug: this event fails, nothing escapes
            raise MappingFailure(f"@liquid could not render this event: {_describe(exc)}") from None

    return render


def _render_message(text: str, err: LiquidError) -> str:
    """One line for a failed render: what the library or a sandbox rule said, and where in the template."""
    if isinstance(err, LocalNamespaceLimitError):
        what = (f"the template's variables ({{% assign %}}, {{% capture %}}) would hold more than {_NAMESPACE_BYTES} bytes "
                "(the limit); a template that keeps doubling a variable never ends")
    else:
        what = str(err.message)
        what = what if len(what) <= 300 else what[:297] + "..."
    token: Optional[Token] = err.token
    if token is not None and token.start_index >= 0 and token.source == text:
        name = f' ("{token.value}")' if token.kind in ("word", TOKEN_TAG) and f'"{token.value}"' not in what and not what.startswith(f"{token.value}:") else ""
        return f"@liquid failed at {_where(text, token.start_index)}{name}: {what}"
    return f"@liquid failed: {what}"
