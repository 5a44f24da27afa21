"""The *missing* value: what a mapping gives when the event has no such node.

Missing is not null. A field that maps to missing is left out of the payload;
a field that maps to ``None`` is sent as JSON ``null``.
"""

from __future__ import annotations

from typing import Final


class _Missing:
    __slots__ = ()
    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""The one missing value; compare with ``is``."""
