"""A deployment: every ``-m MAPPING`` given, each one connection, their names unique.

One process may serve many destinations (and one plugin twice, with other
settings): each mapping file is a connection, named by its ``name:`` or its
file's stem. ``--set NAME=VALUE`` changes a setting of every connection whose
destination has it; ``--set CONNECTION:NAME=VALUE`` of one connection only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from engine.config.definitions import Catalog
from engine.config.mappingfile import MASK, MappingFile, connection_name, load_mapping_document
from engine.config.yamlsource import load_file
from engine.errors import ConfigError, ConfigErrors


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


def load_connections(
    paths: Sequence[str | Path],
    *,
    overrides: Mapping[tuple[str | None, str], Any] | None = None,
    require_env: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[MappingFile]:
    """Load every mapping file of a deployment; every error of every file is reported, then names are checked unique."""
    overrides = overrides or {}
    catalog = Catalog()
    loaded: list[MappingFile] = []
    errors: list[ConfigError] = []
    used: set[tuple[str | None, str]] = set()
    for path in paths:
        try:
            doc = load_file(path)
            name = connection_name(doc)
            known = _settings_of(catalog, doc.data)
            mine = {}
            for (target, setting), value in overrides.items():
                if target == name or (target is None and (setting in known or len(paths) == 1)):
                    mine[setting] = value
                    used.add((target, setting))
            loaded.append(load_mapping_document(doc, env, catalog, require_env, mine))
        except ConfigErrors as many:
            errors.extend(many.errors)
        except ConfigError as one:
            errors.append(one)
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
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return loaded


def _settings_of(catalog: Catalog, data: Any) -> frozenset[str]:
    """The setting names of the file's destination; none when it names no known one (its load reports that)."""
    try:
        return frozenset(catalog.get(data["destination"]).settings)
    except (ConfigError, KeyError, TypeError):
        return frozenset()


class Secrets:
    """Every secret of a deployment (each connection's secret settings and write keys), masked wherever output leaves."""

    def __init__(self, mappings: Sequence[MappingFile]) -> None:
        found = {value for m in mappings for value in (*m.settings.secrets, *m.write_keys) if value}
        self._values = sorted(found, key=len, reverse=True)  # a longer secret first: it may contain a shorter one

    def redact(self, text: str) -> str:
        for secret in self._values:
            text = text.replace(secret, MASK)
        return text
