"""The ``@liquid`` directive's engine: a Liquid template, sandboxed as Segment sandboxes it, compiled once.

Segment renders ``@liquid`` with liquidjs (``parseAndRenderSync(template, event)``): the event's
top-level keys are the template's variables, an undefined variable or null renders "", and the
result is always a string. Here python-liquid 2 does the parsing and rendering, inside a dedicated
:class:`LiquidEnvironment` (never the library's shared one), under these rules:

- A template is at most ``MAX_LIQUID_CHARS`` (1000) characters, Segment's limit.
- Disabled tags, as in Segment: ``case``, ``for``, ``include``, ``layout``, ``render``, ``tablerow``
  (and ``break``/``continue``, which only work in loops). Tags liquidjs does not have either
  (python-liquid's ``ifchanged``, ``doc``) are unknown. Allowed: ``assign``, ``capture``,
  ``comment``, ``#``, ``raw``, ``cycle``, ``decrement``, ``increment``, ``echo``, ``if``,
  ``unless``, ``liquid``.
- Disabled filters, as in Segment: ``array_to_sentence_string``, ``concat``, ``find``,
  ``find_exp``, ``find_index``, ``find_index_exp``, ``group_by``, ``group_by_exp``, ``has``,
  ``has_exp``, ``map``, ``newline_to_br``, ``reject``, ``reject_exp``, ``reverse``, ``sort``,
  ``sort_natural``, ``uniq``, ``where_exp``, ``type``. python-liquid's own extras (``safe``,
  ``escapejs``) are unknown; the rest of its standard filters are available.
- Every value a filter takes or makes is at most ``MAX_LIQUID_VALUE`` characters (a text) or
  items (an array or a range), and so is the rendered text; an integer a filter makes must be in
  the 64-bit range. A range literal longer than that fails where it is written.

Where we differ from Segment, on purpose:

- Errors come at load, not per event. A disabled or unknown tag or filter, a filter given the
  wrong number of arguments and any syntax error is a :class:`ConfigError` with the offset of
  the tag or filter, so the loader reports FILE:LINE:COL. (liquidjs finds unknown filters and
  some disabled names only while rendering, so every event failed instead.)
- No clock. liquidjs stops a render after 500 ms; an outcome that depends on how busy the machine
  is would make the same event valid on one run and invalid on the next. The work is bounded
  structurally instead: no loop tags, at most 1000 characters of template (so a bounded number of
  filters and tags, each run once), and every filter wrapped so that its inputs are checked before
  it runs, filters that can make much more than they take (``replace``, ``split``, ``join``,
  ``append``, ``escape``, ``url_encode``, ``base64_encode``, ``date`` ...) have their result's size
  computed before they compute it, and every result is checked after. A render therefore costs at
  most (filters in the template) x (linear work over ``MAX_LIQUID_VALUE``). The library's own
  limits (output stream, local namespace, loop iterations, context depth, block nesting) are set
  too, so no rule rests on one guard. Nesting (brackets, ``and``/``or`` chains) is bounded at load
  so that neither parsing nor rendering can reach Python's recursion limit.
- Values become text as JavaScript writes them, where python-liquid would use Python's ``str``:
  ``10.0`` renders ``10``, ``true``/``false`` lowercase inside arrays too, null in an array is
  "", an array renders its items joined with nothing (``["a", "b"]`` -> ``ab``), an object renders
  ``[object Object]``, a range renders its numbers joined. The same conversion feeds the text
  filters (``append``, ``replace``, ``upcase`` ...) and ``join``.
- ``strip_html``, ``divided_by`` and ``round`` are liquidjs's, not the library's: ``strip_html``
  removes script, style and comment blocks and ``<...>`` tags as liquidjs's pattern does (in linear
  time); ``divided_by`` divides as JavaScript does (``5 | divided_by: 3`` is ``1.6666666666666667``;
  ``divided_by: 3, true`` floors) and ``round`` rounds halves up (``-2.5`` -> ``-2``). A number that
  is not finite (division by zero, overflow) fails the event instead of writing Infinity or NaN.
- liquidjs filters python-liquid does not have (``json``, ``push``, ``slugify``, ``date_to_string``
  ...) are load errors that say what to write instead.
- The variables ``now`` and ``today`` that python-liquid adds are not defined (liquidjs has no
  such variables; an event key of that name is read as usual). ``"now" | date: ...`` works.

The getter compiled from a template raises only :class:`MappingFailure`, whatever the event.

The package: ``compiler`` parses and checks a template in the ``environment``, whose
``filters`` are wrapped by the checks and render ``values`` as liquidjs does; ``sandbox``
holds the rules themselves.
"""

from __future__ import annotations

from engine.lang.liquid.compiler import compile_liquid
from engine.lang.liquid.environment import LiquidEnvironment
from engine.lang.liquid.sandbox import DISABLED_FILTERS, DISABLED_TAGS

__all__ = ["DISABLED_FILTERS", "DISABLED_TAGS", "LiquidEnvironment", "compile_liquid"]
