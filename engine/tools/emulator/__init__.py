"""The shared emulator core: a platform's API on loopback for delivery tests, with scripted faults.

A platform's ``destinations/<slug>/emulator.py`` subclasses :class:`Emulator`, lists its
:class:`Route` s, and ends with ``Emulator = <its class>`` and
``def main(argv=None): return main_for(<its class>, argv)``. Nothing here names a platform.
"""

from engine.tools.emulator.base import Emulator, Stored, utc_now
from engine.tools.emulator.cli import main_for, parser_for
from engine.tools.emulator.faults import FAULT_KINDS, STATUS_FAULTS, Faults, checked_fault_names
from engine.tools.emulator.ratelimit import TokenBucket
from engine.tools.emulator.wire import (
    BEARER,
    Answer,
    Call,
    Headers,
    Problem,
    RecordedRequest,
    Route,
    decompress,
    json_answer,
    json_type,
    mask,
    matched_instant,
)

__all__ = [
    "BEARER",
    "FAULT_KINDS",
    "STATUS_FAULTS",
    "Answer",
    "Call",
    "Emulator",
    "Faults",
    "Headers",
    "Problem",
    "RecordedRequest",
    "Route",
    "Stored",
    "TokenBucket",
    "checked_fault_names",
    "decompress",
    "json_answer",
    "json_type",
    "main_for",
    "mask",
    "matched_instant",
    "parser_for",
    "utc_now",
]
