"""Where the files that travel with the engine are: schemas, default mappings, examples, docs.

In a source checkout (or an editable install) they are the top-level folders of
the repository; a built wheel carries them as package data under ``engine/_data``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The folder ``name`` (``schemas``, ``mappings``, ``examples``, ``docs``) wherever it was installed."""
    packaged = _HERE / "_data" / name
    return packaged if packaged.is_dir() else _HERE.parent / name


DATA_FOLDERS = ("mappings", "examples", "schemas", "docs")
"""The folders that travel with the engine, as ``actionmap paths`` names them."""


def data_paths() -> dict[str, Path]:
    """Each of :data:`DATA_FOLDERS` where this installation has it: the wheel's copy, or the source tree's folder."""
    return {name: data_path(name) for name in DATA_FOLDERS}
