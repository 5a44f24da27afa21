"""The reference of the mapping and trigger language (``docs/language.md``), wherever the engine was installed.

The page is written by hand and held to the code by ``tests/test_language_reference.py``;
a wheel carries it as package data (``engine/_data/docs``), so ``actionmap docs
--language`` prints the same page from a checkout and from an install.
"""

from __future__ import annotations

from engine.errors import ConfigError
from engine.resources import data_path


def language_reference() -> str:
    """The page's Markdown; a ConfigError saying how to repair an installation that lost it."""
    path = data_path("docs") / "language.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"the language reference {path} cannot be read ({error.strerror}); reinstall actionmap") from None
