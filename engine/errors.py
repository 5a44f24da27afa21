"""Errors that are part of the interface: each names where the problem is.

A definition or mapping problem is found once, at load time, and raised as a
:class:`ConfigError`. Compilers (mapping, trigger, fields) do not know file
positions: they raise with a JSON Pointer (and, inside a string, a character
offset), and the loader that read the file fills in file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a node of a loaded file starts (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class ActionmapError(Exception):
    """Base of every error actionmap raises on purpose."""


class ConfigError(ActionmapError):
    """A definition, mapping file or expression is wrong.

    ``pointer`` is the JSON Pointer of the bad node (``/subscriptions/0/trigger``);
    ``offset`` is a 0-based character offset inside that node's string, for errors
    inside an expression. ``location`` is set once the loader has placed the error.
    """

    def __init__(
        self,
        message: str,
        pointer: str = "",
        offset: int | None = None,
        location: Location | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.pointer = pointer
        self.offset = offset
        self.location = location

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        at = f" (at {self.pointer})" if self.pointer else ""
        return f"{where}{self.message}{at}"

    def under(self, prefix: str) -> "ConfigError":
        """The same error with its pointer placed below ``prefix``."""
        return ConfigError(self.message, prefix + self.pointer, self.offset, self.location)


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class MappingFailure(ActionmapError):
    """A directive could not produce a value for this event (bad input data).

    Raised while mapping one event and caught per field by the pipeline, which
    reports the event as invalid; it never escapes the engine's public API.
    """
