"""The mapping language (SPEC section 5): a mapping value compiled once into nodes.

``compile_mapping`` reads a mapping value (a path string, a directive object, a plain
object or list, a literal) and checks everything it can at load time; what it returns
evaluates one event with plain attribute lookups and calls, nothing re-parsed.

Where the spec is silent:

- In a list, an item that maps to missing becomes ``null``: positions in a list carry
  meaning, and Segment's payloads show ``null`` there too (JSON has no undefined).
  Wrap the list in ``@excludeWhenNull`` to drop them.
- Directive *options* (``operator``, ``mode``, ``pattern``, ``separator``, ``from``, ...)
  are literals checked at load time; ``value``, ``objects``, ``@coalesce`` items, the
  ``@if`` test and branches, ``@arrayPath`` and ``@transform`` parts are mapping values.
- ``@merge`` without ``direction`` merges ``right`` (later wins); merging no entries,
  or only missing/null ones, gives ``{}``. ``@merge`` and ``@flatten`` copy shallowly.
- ``@if`` ``blank`` is true (``then``) for a value that is present and not null, "",
  0 or false; empty arrays and objects are not blank.
- ``@replace`` makes null ``""`` (Segment's result); it and ``@case`` pass arrays and
  objects through unchanged (Segment's ``@replace`` would make them ``""``), ``@case``
  passes null too; the replacement is literal text (no ``$1`` / ``$&`` substitution).
- ``@path`` reads RFC 9535, and Segment's dotted paths where a ``$.`` text is not valid
  RFC 9535; ``""``, ``"."``, ``"$."`` and ``"$.."`` are the whole event, and a list of
  strings is the keys themselves (Segment's array form).
- ``@path`` and ``@template`` take a directive as their argument (Segment's form): the
  text it gives is compiled per event, cached (``Computed``), and may name single values
  only (an event must not make the walk explode). ``docs/segment-compat.md`` lists every
  form beside Segment's reading of it.
- ``@json`` decode passes non-strings (and text that is not JSON) through unchanged;
  NaN/Infinity do not parse; what it decodes is held to the event limits (64 levels,
  64-bit integers), past them the event is invalid.
- ``@flatten`` of a scalar gives the scalar; a top-level array is flattened to index
  keys unless ``omitArrays``.
- ``@arrayPath`` without an item shape is its path; a shape must be a non-empty object.
- Numbers become text as JSON writes them, with integral floats written without
  ``.0`` (``42.0`` -> ``"42"``, as JavaScript and the fields module do).
- ``@template`` placeholders may have spaces inside the braces (``{{ traits.name }}``);
  an unclosed ``{{`` or an empty placeholder is a load-time error, not literal text.
- ``@template`` writes a placeholder with no value (missing or null) as "", Segment's
  rule; ``{"@template": {"text": ..., "missing": "invalid"}}`` makes such an event
  invalid instead, naming the placeholders (null counts: "" stands in for both).
  ``explain`` lists a template's missing (and null) placeholders either way.
- ``@timestamp`` truncates to milliseconds (never rounds into the next second);
  ``iso`` reads what ``datetime.fromisoformat`` reads (ISO 8601, incl. ``Z``).
  ``from`` may list formats, tried in order, the first that reads the value wins;
  a list cannot hold both ``unix_s`` and ``unix_ms`` (a number does not say which it
  counts, and nothing here guesses) nor one format twice.
- ``@jmespath`` function names, argument counts and zero slice steps are checked at
  load time (the library would only fail per event); any other error it raises on an
  event makes that event invalid.
- A mapping value nests at most ``MAX_MAPPING_DEPTH`` levels (objects, lists and
  directives), and a literal integer must fit in 64 bits: a payload must encode.
- A key starting with ``@`` always marks a directive, so a plain output key cannot
  start with ``@``.

The package, in the order a mapping value goes through it: ``compiler`` walks the value
and dispatches each directive to its compiler (``structure``: paths and the directives
that arrange values; ``text``: the ones that make or change text, numbers and dates),
which build ``nodes`` (each evaluates one way, traced or not: ``explain`` is a traced
evaluation); ``arguments`` checks directive arguments, ``values`` holds the value helpers
and message phrasing every module shares. ``templates`` is ``@template``: the text is
compiled by ``engine.lang.template``, with event paths for placeholders, each a child node.
"""

from __future__ import annotations

from engine.lang.mapping.compiler import DIRECTIVES, compile_mapping
from engine.lang.mapping.nodes import Node, Note, Trace, explain

__all__ = ["DIRECTIVES", "Node", "Note", "Trace", "compile_mapping", "explain"]
