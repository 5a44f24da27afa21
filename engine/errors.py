"""Errors that are part of the interface: each names where the problem is.

A definition or mapping problem is found once, at load time, and raised as a
:class:`ConfigError`. Compilers (mapping, trigger, fields) do not know file
positions: they raise with a JSON Pointer (and, inside a string, a character
offset), and the loader that read the file fills in file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NoReturn, Sequence

MASK = "********"
"""How a secret is shown wherever output leaves the process: always eight asterisks, whatever its length."""


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
    """Several configuration errors found in one pass, reported together (nested ones flattened)."""

    errors: list[ConfigError]

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        flat = [one for error in errors for one in (error.errors if isinstance(error, ConfigErrors) else [error])]
        super().__init__("\n".join(str(e) for e in flat))
        self.errors = flat


def raise_all(errors: Sequence[ConfigError]) -> None:
    """Raise nothing, the one error, or every error together: so no problem of a file hides another."""
    if errors:
        raise_any(errors)


def raise_any(errors: Sequence[ConfigError]) -> NoReturn:
    """Raise the one error, or all of them as :class:`ConfigErrors` (``errors`` must not be empty)."""
    flat = ConfigErrors(errors).errors
    raise flat[0] if len(flat) == 1 else ConfigErrors(flat)


def mask(secret: str, shown: int = 0) -> str:
    """A secret as output may show it: :data:`MASK`, then at most its last ``shown`` characters (to tell two apart).

    The tail is shown only of a secret at least twice as long, so most of it stays hidden.
    """
    return MASK + (secret[-shown:] if shown and len(secret) >= 2 * shown else "")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`MASK`; the longer first (one may hold another)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class MappingFailure(ActionmapError):
    """A directive could not produce a value for this event (bad input data).

    Raised while mapping one event and caught per field by the pipeline, which
    reports the event as invalid; it never escapes the engine's public API.
    """
