"""A deployment: every ``-m MAPPING`` given, each one connection, their names unique.

One process may serve many destinations (and one plugin twice, with other
settings): each mapping file is a connection, named by its ``name:`` or its
file's stem. ``--set NAME=VALUE`` changes a setting of every connection whose
destination has it; ``--set CONNECTION:NAME=VALUE`` of one connection only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import orjson

from engine.config.definitions import Catalog
from engine.config.mappingfile import MappingFile, connection_name, load_mapping_document
from engine.config.yamlsource import Document, load_file
from engine.errors import ConfigError, raise_all, redact


def parse_overrides(pairs: Sequence[str]) -> dict[tuple[str | None, str], Any]:
    """``--set [CONNECTION:]NAME=VALUE`` pairs; a VALUE that reads as JSON (5, true) is taken as such."""
    out: dict[tuple[str | None, str], Any] = {}
    for pair in pairs:
        target, sep, value = pair.partition("=")
        connection, colon, name = target.rpartition(":")
        if not sep or not name:
            raise ConfigError(f"--set expects NAME=VALUE or CONNECTION:NAME=VALUE, got {pair!r}")
        try:
            out[(connection if colon else None, name)] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[(connection if colon else None, name)] = value
    return out


class MappingPaths(list[str]):
    """The ``-m`` files of a command line, carrying its ``--plugins`` folders: whatever loads the files gets both."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        super().__init__(paths)
        self.plugins: list[str] = []


def load_connections(
    paths: Sequence[str | Path],
    *,
    overrides: Mapping[tuple[str | None, str], Any] | None = None,
    require_env: bool = True,
    env: Mapping[str, str] | None = None,
    plugins: Sequence[str | Path] | None = None,
) -> list[MappingFile]:
    """Load every mapping file of a deployment; every error of every file is reported, then names are checked unique.

    ``plugins`` are plugin folders (or folders of them) added to the installed ones;
    by default those a :class:`MappingPaths` carries (``--plugins``).
    """
    overrides = overrides or {}
    catalog = Catalog(plugins if plugins is not None else getattr(paths, "plugins", ()))
    loaded: list[MappingFile] = []
    errors: list[ConfigError] = []
    used: set[tuple[str | None, str]] = set()
    for path in paths:
        try:
            doc = load_file(path)
            name = connection_name(doc)
            known = _settings_of(catalog, doc)
            mine = {}
            for (target, setting), value in overrides.items():
                if target == name or (target is None and (setting in known or len(paths) == 1)):
                    mine[setting] = value
                    used.add((target, setting))
            loaded.append(load_mapping_document(doc, env, catalog, require_env, mine))
        except ConfigError as error:
            errors.append(error)
    for target, setting in overrides:
        if (target, setting) not in used and not errors:
            where = f"connection {target!r}" if target is not None else "any connection's destination"
            names = ", ".join(m.name for m in loaded)
            errors.append(ConfigError(f"--set {target + ':' if target else ''}{setting}: no setting {setting!r} in {where} "
                                      f"(connections: {names})"))
    seen: dict[str, MappingFile] = {}
    for mapping in loaded:
        first = seen.setdefault(mapping.name, mapping)
        if first is not mapping:
            errors.append(mapping.document.place(ConfigError(
                f'two connections are named "{mapping.name}" (also {first.path}): give one a different top-level name: key',
                "/name" if "name" in mapping.document.data else "")))
    raise_all(errors)
    return loaded


def _settings_of(catalog: Catalog, doc: Document) -> frozenset[str]:
    """The setting names of the file's destination; none when it names no known one (its load reports that)."""
    try:
        return frozenset(catalog.resolve(doc.data["destination"], Path(doc.file).parent).settings)
    except (ConfigError, KeyError, TypeError, AttributeError):
        return frozenset()


class Secrets:
    """Every secret of a deployment (each connection's secret settings and write keys), masked wherever output leaves."""

    def __init__(self, mappings: Sequence[MappingFile]) -> None:
        self._values = [value for m in mappings for value in (*m.settings.secrets, *m.write_keys)]

    def redact(self, text: str) -> str:
        return redact(text, self._values)
