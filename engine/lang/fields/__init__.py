"""Field types, declared coercions and per-event validation (SPEC section 7).

An action's field declarations are compiled once into one small closure per field,
so checking a payload costs a few type tests and comparisons per field: no schema
is walked and nothing is parsed per event (``jsonschema`` would cost ~40 µs).

Where the spec is silent:

- A value is checked against its field's rules in order (null, type or coercion,
  size, pattern, format, enum) and only the first broken rule is reported: later
  rules rarely make sense for a value that already broke one.
- ``integer`` accepts a float with an integral value and emits it as an int
  (``3.0`` is sent as ``3``): receivers that want integers may reject ``3.0``.
- ``number`` and ``integer`` reject NaN and infinities: JSON cannot carry them.
- ``number_to_string`` writes integral floats without ``.0`` (``42.0`` -> ``"42"``)
  because JSON does not tell 42 from 42.0 and an id must not depend on the producer;
  other floats use Python's shortest round-trip form (``1.5`` -> ``"1.5"``).
- ``string_to_number`` / ``string_to_integer`` accept exactly the JSON number
  grammar (no spaces, no ``+``, no leading zeros, no ``1_000``, no ``NaN``);
  ``string_to_number`` gives an int when the text has no fraction or exponent.
- ``datetime`` accepts ``YYYY-MM-DD``, ``T``/``t``/space, ``HH:MM`` with optional
  ``:SS`` and a fraction of any length (``.`` or ``,``), then ``Z``/``z``,
  ``±hh:mm``, ``±hhmm`` or ``±hh``. The fraction is truncated to milliseconds,
  never rounded. A leap second (``:60``) is sent as ``:59.999`` so the event stays
  in its minute. Years 0001-9999 only (before and after conversion to UTC).
- ``format: email`` is a cheap ASCII check (dot-atom local part, dotted domain);
  ``uri`` wants an absolute URI of RFC 3986 characters; ``uuid`` the 8-4-4-4-12 form.
- ``items`` are not nullable unless declared; ``null_to_missing`` in ``items``
  drops null elements from the array.
- ``window`` (datetime fields, not array items) is compiled here into the field set's
  ``windows`` but checked just before sending (``engine.presend``), since it depends on
  the time of sending.
- A field that breaks a rule keeps its input value in the returned payload, so a
  preview shows what was built; the event is invalid and is not sent anyway.
- Nested objects and arrays in the returned payload are the input's own objects,
  except arrays with ``items``, which are rebuilt.

The package: ``compiler`` turns a declaration into one closure per field from the
``coercions``, ``types`` and ``constraints``; ``problems`` is how each says what is wrong.
"""

from __future__ import annotations

from engine.lang.fields.compiler import Build, Coerced, FieldSet, compile_fields
from engine.lang.fields.problems import FieldProblem
from engine.lang.fields.timeformats import Window

__all__ = ["Build", "Coerced", "FieldProblem", "FieldSet", "Window", "compile_fields"]
