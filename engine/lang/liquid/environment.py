"""actionmap's own Liquid environment: Segment's sandbox on python-liquid, every library limit set too."""

from __future__ import annotations

from io import StringIO
from typing import Any, Optional, TextIO

import liquid
from liquid import BoundTemplate, Environment, RenderContext
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import OutputStreamLimitError
from liquid.output import LimitedStringIO
from liquid.utils import ReadOnlyChainMap

from engine.limits import MAX_LIQUID_VALUE
from engine.lang.liquid.filters import _guarded, _LIQUIDJS_FILTERS
from engine.lang.liquid.sandbox import _NAMESPACE_BYTES, _Refused, _UNREGISTERED_FILTERS, _UNREGISTERED_TAGS
from engine.lang.liquid.values import _text


class _CountingIO(LimitedStringIO):
    """An output buffer held to a character limit (ours) and to the library's byte limit."""

    def __init__(self, byte_limit: int, char_limit: int) -> None:
        super().__init__(limit=byte_limit)
        self.char_limit = char_limit
        self.chars = 0

    def write(self, text: str) -> int:
        """Refuse the write that would pass the limit, before it is stored."""
        if text:
            self.chars += len(text)
            if self.chars > self.char_limit:
                raise OutputStreamLimitError(f"the rendered text would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)
        return super().write(text)


def _byte_limit(env: Environment) -> int:
    return env.output_stream_limit if env.output_stream_limit is not None else 4 * MAX_LIQUID_VALUE


class _Context(RenderContext):
    """The render context: the event's keys (and the template's own variables), no ``now``/``today``."""

    __slots__ = ("work",)

    def __init__(self, template: BoundTemplate, **options: Any) -> None:
        super().__init__(template, **options)
        self.work = 0  # units of filter work so far (MAX_LIQUID_WORK)
        self.scope = ReadOnlyChainMap(self.locals, self.globals, self.counters)

    def get_buffer(self, buf: Optional[TextIO] = None) -> StringIO:
        """A ``capture`` buffer: what is left of the limits after what the outer buffer holds."""
        chars = buf.chars if isinstance(buf, _CountingIO) else 0
        size = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _CountingIO(_byte_limit(self.env) - size, MAX_LIQUID_VALUE - chars)


class _Template(BoundTemplate):
    """A bound template that renders into a counting buffer with our context."""

    context_class = _Context

    def _get_buffer(self) -> StringIO:
        return _CountingIO(_byte_limit(self.env), MAX_LIQUID_VALUE)


def _write(value: Any, buffer: TextIO) -> int:
    """Write ``value``'s text to ``buffer``, refused as soon as it would pass what is left of the rendered text."""
    left = buffer.char_limit - buffer.chars if isinstance(buffer, _CountingIO) else MAX_LIQUID_VALUE
    return buffer.write(_text(value, max(left, 0), "output"))


class _OutputNode(OutputNode):
    """``{{ ... }}`` writing values as liquidjs does (see the module docstring)."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        """Write the value's text, refused past the limit before it is built."""
        return _write(self.expression.evaluate(context), buffer)


class _EchoNode(EchoNode):
    """``{% echo ... %}``, written as ``{{ ... }}`` is."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        """Write the value's text, refused past the limit before it is built."""
        return _write(self.expression.evaluate(context), buffer)


class _Output(Output):
    node_class = _OutputNode


class _Echo(EchoTag):
    node_class = _EchoNode


class _BoundedRange(RangeLiteral):
    """``(a..b)`` refused where it is written when it holds more than ``MAX_LIQUID_VALUE`` numbers.

    python-liquid makes a lazy ``range``, so a huge one costs nothing until something walks it:
    ``join``, an output, ``contains`` with a non-integer (Python scans the range). Refusing it at
    creation covers every one of those.
    """

    __slots__ = ()

    def _make_range(self, start: Any, stop: Any) -> range:
        made = super()._make_range(start, stop)
        if made.stop - made.start > MAX_LIQUID_VALUE:
            raise _Refused(f"a range of more than {MAX_LIQUID_VALUE} numbers (the limit)", token=self.token)
        return made


class LiquidEnvironment(Environment):
    """actionmap's own Liquid environment: Segment's sandbox, strict, with every library limit set."""

    block_nesting_limit = 30
    context_depth_limit = 10  # no include/render: a render extends the context once
    loop_iteration_limit = MAX_LIQUID_VALUE  # no loop tags are registered; a second guard all the same
    local_namespace_limit = _NAMESPACE_BYTES
    output_stream_limit = 4 * MAX_LIQUID_VALUE  # bytes; our buffer also counts characters
    template_class = _Template
    shorthand_indexes = False
    string_sequences = False
    logical_not_operator = False
    logical_parentheses = False
    ternary_expressions = False
    keyword_assignment = False

    def __init__(self) -> None:
        super().__init__(strict_filters=True, autoescape=False, tolerance=liquid.Mode.STRICT)

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        """The built-in tags and filters, less the sandbox's, each filter wrapped by the checks."""
        super().setup_tags_and_filters(extra=False)
        self.filters.update(_LIQUIDJS_FILTERS)
        for tag in _UNREGISTERED_TAGS:
            self.tags.pop(tag, None)
        self.add_tag(_Output)
        self.add_tag(_Echo)
        self.filters = {name: _guarded(name, func) for name, func in self.filters.items() if name not in _UNREGISTERED_FILTERS}


_ENV = LiquidEnvironment()
