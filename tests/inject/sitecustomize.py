"""The poison tests' fault injector, loaded by any Python process started with this folder on PYTHONPATH.

With ``ACTIONMAP_INJECT_FAULT=<marker>`` set, mapping an event whose
``properties.inject`` equals the marker raises a RuntimeError from inside the
per-event path (where a bug would), so a test can show that a real ``send``,
``serve`` or ``consume`` process dead-letters that one event and delivers the rest.
"""

from __future__ import annotations

import os
from typing import Any, Callable

MARKER = os.environ.get("ACTIONMAP_INJECT_FAULT")

if MARKER:
    from engine import pipeline

    def _faulty(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(event: Any) -> Any:
            properties = event.get("properties")
            if isinstance(properties, dict) and properties.get("inject") == MARKER:
                raise RuntimeError(f"injected fault for {event.get('messageId')}")
            return build(event)
        return run

    _original = pipeline.Pipeline.__init__

    def _patched(self: pipeline.Pipeline, mapping_file: Any) -> None:
        _original(self, mapping_file)
        self._compiled = tuple((sub, matches, _faulty(build)) for sub, matches, build in self._compiled)

    pipeline.Pipeline.__init__ = _patched  # type: ignore[method-assign]
