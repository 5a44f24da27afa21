"""Values as liquidjs writes them (JavaScript's numbers, arrays joined, objects as [object Object]), held to the limits."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Mapping

from liquid import Undefined

from engine.limits import MAX_INT, MAX_LIQUID_VALUE, MIN_INT
from engine.lang.liquid.sandbox import _Refused


def _js_number(value: float) -> str:
    """A float as JavaScript's ``String(number)`` writes it (shortest digits, JS exponent rules)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign, digits_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    k = len(digits)
    n = exponent + k  # value = 0.digits x 10^n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return "-" + text if sign else text


def _over_budget(length: int, part: str) -> _Refused:
    """Why a text of ``length`` characters does not fit its budget, said for the whole it is part of."""
    if part in ("value", "output") and length > MAX_LIQUID_VALUE:  # over the limit on its own
        return _Refused(f"a text of {length} characters is over the limit of {MAX_LIQUID_VALUE}", token=None)
    if part.startswith("output"):  # the budget was what is left of the rendered text
        return _Refused(f"the rendered text would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)
    return _Refused(f"the text of an array would pass {MAX_LIQUID_VALUE} characters (the limit)", token=None)


def _text(value: Any, budget: int = MAX_LIQUID_VALUE, part: str = "value") -> str:
    """``value`` as liquidjs's ``stringify`` writes it; refused past ``budget`` characters.

    Arrays (and ranges) are walked with a running count, so a huge one stops at the limit
    instead of being written out first. ``part`` says what ``budget`` is left of, for the message:
    ``"value"`` (a filter's input), ``"output"`` (the rendered text: ``budget`` is what is left of
    it), ``"array"`` / ``"output array"`` (an item of an array written for one of those).
    """
    if type(value) is str:
        if len(value) > budget:
            raise _over_budget(len(value), part)
        return value
    if value is None or isinstance(value, Undefined):
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise _Refused(f"an integer outside the 64-bit range ({MIN_INT} to {MAX_INT})", token=None)
        return str(value)
    if isinstance(value, (list, tuple, range)):
        if len(value) > MAX_LIQUID_VALUE:
            raise _Refused(f"an array of {len(value)} items is over the limit of {MAX_LIQUID_VALUE}", token=None)
        parts: list[str] = []
        used = 0
        inner = "output array" if part.startswith("output") else "array"
        for item in value:
            text = _text(item, budget - used, inner)
            used += len(text)
            parts.append(text)
        return "".join(parts)
    if isinstance(value, Mapping):
        return "[object Object]"
    if isinstance(value, str):  # a str subclass (markupsafe.Markup)
        return _text(str(value), budget, part)
    if isinstance(value, Decimal):
        return _js_number(float(value))
    return _text(str(value), budget, part)
