"""Where the files that travel with the engine are: schemas, default mappings, examples.

In a source checkout (or an editable install) they are the top-level folders of
the repository; a built wheel carries them as package data under ``engine/_data``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The folder ``name`` (``schemas``, ``mappings``, ``examples``) wherever it was installed."""
    packaged = _HERE / "_data" / name
    return packaged if packaged.is_dir() else _HERE.parent / name
