"""The trigger language: which events feed a subscription, compiled once to a predicate.

A trigger is FQL (Segment / Customer.io), e.g. ``type = "track" and event != "test"``,
or ``{"jmespath": "<expr>"}``. FQL goes through three stages, like the ``jmespath``
package: a lexer (tokens that know their column), a recursive-descent parser (a small
immutable tree, see :func:`parse`) and a compiler that turns the tree into closures.
Only the closures run per event.

Where Segment's FQL is defective (see ``docs/segment-compat.md``) we differ:
``not`` > ``and`` > ``or`` precedence, ``not``/``!`` negate, nesting to ``MAX_EXPRESSION_DEPTH``, full globs,
``'x'`` equals ``"x"``, any field path, and whatever does not parse is a ConfigError
with the column of the bad token instead of a trigger that is silently false.

As Segment (its FQL compiles to ``not_contains``, ``number_not_equals`` and so on):

- ``contains(f, "s")`` and ``match(f, "glob")`` are false when ``f`` is missing, null or
  not a string, and so are their negations ``!contains(f, "s")``, ``not match(f, "x*")``:
  a negation written directly on a call is Segment's ``not_contains`` /
  ``not_starts_with`` / ``not_ends_with`` (a string that does not contain / match).
  Any other negation is plain boolean ``not``: ``!(contains(f, "s") or g = 1)``,
  ``not (f != 5)`` and the outer ``not`` of ``not not contains(f, "s")`` are true
  whenever what they negate is false, a missing ``f`` included. Segment has no such
  forms (it drops the ``not``). Parentheses around a lone call make no group:
  ``!(contains(f, "s"))`` is ``!contains(f, "s")``.
- A comparison with a number literal (``= != < <= > >=``) is false unless the field
  holds a number (int or float; a boolean is not one): a missing field, null, the
  string ``"456"`` or ``true`` never match, ``!=`` included. ``f != "s"`` stays true for
  a missing field (Segment's string rule), ``f != null`` means "exists".
- A backslash in a field path escapes the next character, as Segment's FQL generator
  writes them: ``properties.property\\ 1`` is the key ``"property 1"``,
  ``properties.a\\.b`` the key ``"a.b"`` (not ``a`` then ``b``).
- Number literals may carry a sign: ``-5``, ``+5``, ``+1.5``.

Choices where the contract is silent (``docs/segment-compat.md`` lists each beside Segment's):

- ``f = true`` needs the boolean; ``f != true`` is exactly its negation, true for a
  missing field, ``false`` and the string ``"true"`` (Segment compares the text there).

- ``<``, ``<=``, ``>``, ``>=`` compare numbers only, as Segment does; writing a string,
  boolean or null after them is an error at load time rather than a trigger that can
  never be true.
- Globs know ``*`` (any run, newlines included) and ``?`` (one character); everything
  else, ``[`` included, is literal. There is no escape for ``*`` or ``?``: use
  ``contains`` or ``=`` for text holding them.
- A field starts with a letter, ``_`` or a backslash escape; names continue with
  letters, digits, ``_``, ``-`` and backslash escapes (``\\`` and any character).
  After a dot a digit-only name is what Segment makes of it, the key ``"0"`` of an
  object or the first item of an array (``items.0``); ``items[0]`` is an index only
  (``[-1]`` counts from the end), ``items["0"]`` a key only; odd keys
  ``properties["a.b"]`` or ``properties.a\\.b``. The keywords (``and or not true false
  null``, lowercase) cannot be the first name of a field unless a character of it is
  escaped (``tru\\e`` is the field ``true``).
- A JMESPath trigger that raises on an event's data (jmespath is not total on JSON:
  ``"" > `1` ``, ``sort_by`` over mixed types) does not match that event.
- Strings take JSON's escapes (``\\" \\' \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``); any other
  backslash escape is an error.

The package follows the data: ``lexer`` -> ``parser`` (a ``tree``) -> ``compiler`` (closures);
``integrations`` is the event's own on/off switch per destination, applied before any trigger.
"""

from __future__ import annotations

from engine.lang.trigger.compiler import Trigger, compile_tree, compile_trigger, glob_regex
from engine.lang.trigger.integrations import integrations_filter
from engine.lang.trigger.parser import parse
from engine.lang.trigger.tree import FUNCTIONS, ORDERING, And, Call, Compare, Const, Node, Not, Or

__all__ = ["FUNCTIONS", "ORDERING", "And", "Call", "Compare", "Const", "Node", "Not", "Or", "Trigger",
           "compile_tree", "compile_trigger", "glob_regex", "integrations_filter", "parse"]
