"""Loading an operator's mapping file into compiled subscriptions.

Everything an operator can get wrong is found here, once, with file, line and
column: unknown keys, unknown destinations, actions, fields and settings, unset
environment variables, plain-http URLs to remote hosts, broken triggers and
mapping expressions, batch sizes over the action's limit.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from engine.config import schemas
from engine.config.definitions import Action, Catalog, Destination, Setting
from engine.errors import ConfigError, ConfigErrors
from engine.lang.fields import FieldSet
from engine.lang.mapping import Node, compile_mapping
from engine.lang.trigger import Trigger, compile_trigger
from engine.config.yamlsource import Document, join_pointer, load_file

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "********"
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A connection's name: safe in a metric label, a Kafka group id and a file name."""


@dataclass(frozen=True)
class Settings:
    """Resolved setting values; secrets are known by name so every output can mask them."""

    values: dict[str, Any]
    secret_names: frozenset[str]

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"

    def redacted(self) -> dict[str, Any]:
        return {k: self._masked(v) if k in self.secret_names else v for k, v in self.values.items()}

    @staticmethod
    def _masked(value: Any) -> Any:
        return {k: MASK for k in value} if isinstance(value, dict) else MASK

    def redact(self, text: str) -> str:
        """``text`` with every secret value (each value of a secret object) replaced by a mask."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    @property
    def secrets(self) -> list[str]:
        found: list[str] = []
        for name in self.secret_names:
            value = self.values.get(name)
            for one in value.values() if isinstance(value, dict) else [value]:
                if isinstance(one, str) and one:
                    found.append(one)
        return sorted(found, key=len, reverse=True)  # a longer secret first: it may contain a shorter one


@dataclass(frozen=True)
class Subscription:
    """A compiled subscription: which events feed which action, and how fields are built."""

    name: str
    action: Action
    trigger: Trigger
    mapping: dict[str, Node]
    checks: FieldSet
    batch_size: int
    pointer: str


@dataclass(frozen=True)
class MappingFile:
    """One connection: a destination plugin with its settings and subscriptions, named in its deployment."""

    path: str
    destination: Destination
    settings: Settings
    subscriptions: list[Subscription]
    tests: list[dict[str, Any]]
    document: Document = field(repr=False)
    write_keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: kept out of every repr
    name: str = "default"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, value: str) -> str | None:
    """Why ``value`` is not an acceptable URL setting, or None."""
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        if _is_loopback(parts.hostname):
            return None
        return (
            f"{name}: plain http:// is only allowed to a loopback host (127.0.0.1, ::1, localhost), "
            f'not "{parts.hostname}"; use https://'
        )
    return f'{name}: expected an absolute https:// URL, got "{value}"'


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "object": (dict,),
}


def _resolve_settings(
    doc: Document, dest: Destination, env: Mapping[str, str], require_env: bool, overrides: Mapping[str, Any]
) -> Settings:
    given: dict[str, Any] = {**doc.data.get("settings", {}), **overrides}
    values: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, raw in given.items():
        pointer = f"/settings/{name}"
        setting = dest.settings.get(name)
        if setting is None:
            known = ", ".join(dest.settings)
            errors.append(ConfigError(f'unknown setting "{name}" for {dest.slug} (settings: {known})', pointer))
            continue
        value, problem = _interpolate(raw, env, require_env)
        if problem:
            errors.append(ConfigError(f"{problem[0]} (needed by settings.{name})", pointer, problem[1]))
            continue
        problem_text = _check_setting(setting, value)
        if problem_text:
            errors.append(ConfigError(problem_text, pointer))
            continue
        values[name] = value
    for name, setting in dest.settings.items():
        if name not in given:
            if setting.required:
                errors.append(ConfigError(f'missing required setting "{name}" ({setting.label}) for {dest.slug}', "/settings"))
            elif setting.default is not None:
                values[name] = setting.default
    if errors:
        raise _placed(doc, errors)
    return Settings(values, frozenset(n for n, s in dest.settings.items() if s.secret))


def _interpolate(raw: Any, env: Mapping[str, str], require_env: bool) -> tuple[Any, tuple[str, int] | None]:
    """``raw`` with ``${VAR}`` read from ``env`` (in each value of an object too); or the problem and its offset."""
    if isinstance(raw, dict):
        out = {}
        for key, value in raw.items():
            out[key], problem = _interpolate(value, env, require_env)
            if problem:
                return raw, problem
        return out, None
    if not isinstance(raw, str):
        return raw, None
    for match in _ENV_REF.finditer(raw):
        if match.group(1) not in env and require_env:
            return raw, (f"the environment variable {match.group(1)} is not set", match.start())
    return _ENV_REF.sub(lambda m: env.get(m.group(1), m.group(0)), raw), None


def _resolve_write_keys(doc: Document, env: Mapping[str, str], require_env: bool) -> tuple[str, ...]:
    """The intake's write keys, ``${VAR}`` read as for settings; messages name the variable, never a key."""
    keys: list[str] = []
    errors: list[ConfigError] = []
    for index, raw in enumerate(doc.data.get("write_keys", [])):
        pointer = f"/write_keys/{index}"
        value, problem = _interpolate(raw, env, require_env)
        if problem:
            errors.append(ConfigError(f"{problem[0]} (needed by write_keys[{index}])", pointer, problem[1]))
        elif not value:  # an empty key would let any client in that sends none
            errors.append(ConfigError(
                f"write_keys[{index}] is empty once the environment is read: set the variable to the key clients send, "
                "or remove the entry", pointer))
        else:
            keys.append(value)
    if errors:
        raise _placed(doc, errors)
    return tuple(dict.fromkeys(keys))


def _check_setting(setting: Setting, value: Any) -> str | None:
    """Why a setting's value is wrong, without echoing it (it may be a secret)."""
    types = _PY_TYPES[setting.type]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"{setting.name}: expected a{'n' if setting.type[0] in 'aeiou' else ''} {setting.type}"
    if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
        return f"{setting.name}: expected a map of names to strings"
    if setting.enum is not None and value not in setting.enum:
        return f"{setting.name}: expected one of {', '.join(map(str, setting.enum))}"
    if setting.format == "uri" and isinstance(value, str) and not _ENV_REF.search(value):
        return _check_url(setting.name, value)
    return None


def _placed(doc: Document, errors: list[ConfigError]) -> ConfigError:
    placed = [doc.place(e, key=e.pointer.startswith("/settings/") and "unknown" in e.message) for e in errors]
    return placed[0] if len(placed) == 1 else ConfigErrors(placed)


def _subscription(doc: Document, dest: Destination, settings: Settings, index: int, data: dict[str, Any]) -> Subscription:
    pointer = f"/subscriptions/{index}"
    action = dest.actions.get(data["action"])
    if action is None:
        known = ", ".join(dest.actions)
        raise doc.place(ConfigError(f'unknown action "{data["action"]}" for {dest.slug} (actions: {known})', pointer + "/action"))
    fields = action.checks
    try:
        trigger = action.default_trigger if "trigger" not in data else compile_trigger(data["trigger"], pointer + "/trigger")
        mapping = dict(action.defaults)
        for name, value in data.get("mapping", {}).items():
            if name not in fields.names:
                raise doc.place(
                    ConfigError(f'unknown field "{name}" for action {action.slug} (fields: {", ".join(fields.names)})',
                                join_pointer(pointer + "/mapping", name)),
                    key=True,
                )
            mapping[name] = compile_mapping(value, join_pointer(pointer + "/mapping", name))
        mapping = {name: mapping[name] for name in fields.names if name in mapping}
        unmapped = [name for name in fields.names if name in fields.required and name not in mapping]
        if unmapped:
            raise ConfigError(
                f"required field {unmapped[0]} of {action.slug} has no default mapping: map it under mapping:", pointer
            )
    except ConfigError as error:
        raise doc.place(error) from None
    checks = fields.mapped_by({name: node.source for name, node in mapping.items()})
    default_size = settings.values.get(action.size_setting, action.max_batch_size) if action.size_setting else action.max_batch_size
    batch_size = data.get("batch_size", default_size)
    if batch_size > action.max_batch_size:
        raise doc.place(
            ConfigError(f"batch_size {batch_size} is over {action.slug}'s limit of {action.max_batch_size}", pointer + "/batch_size")
        )
    return Subscription(data["name"], action, trigger, mapping, checks, batch_size, pointer)


def load_mapping_file(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    require_env: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> MappingFile:
    """Load, check and compile a mapping file.

    ``require_env=False`` leaves unset ``${VAR}`` references unresolved instead of
    failing: for commands that never contact the destination (preview, test).
    ``overrides`` replace settings of the file (``--set base_url=...``), checked alike.
    """
    return load_mapping_document(load_file(path), env, catalog, require_env, overrides)


def load_mapping_document(
    doc: Document,
    env: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    require_env: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> MappingFile:
    """As :func:`load_mapping_file`, for a document already read (a plugin's test builds one)."""
    schemas.check(doc, "mapping")
    catalog = catalog or Catalog()
    try:
        dest = catalog.get(doc.data["destination"])
    except ConfigError as error:
        raise doc.place(ConfigError(error.message, "/destination")) from None
    env = os.environ if env is None else env
    settings = _resolve_settings(doc, dest, env, require_env, overrides or {})
    write_keys = _resolve_write_keys(doc, env, require_env)
    subscriptions = [
        _subscription(doc, dest, settings, i, s) for i, s in enumerate(doc.data["subscriptions"]) if s.get("enabled", True)
    ]
    names: dict[str, int] = {}
    for index, sub in enumerate(doc.data["subscriptions"]):
        if sub["name"] in names:
            raise doc.place(ConfigError(f'two subscriptions are named "{sub["name"]}" (also #{names[sub["name"]]})', f"/subscriptions/{index}/name"))
        names[sub["name"]] = index
    tests = doc.data.get("tests", [])
    for index, test in enumerate(tests):
        for k, expectation in enumerate(test["expect"]):
            if expectation["subscription"] not in names:
                raise doc.place(
                    ConfigError(f'no subscription is named "{expectation["subscription"]}"', f"/tests/{index}/expect/{k}/subscription")
                )
    return MappingFile(doc.file, dest, settings, subscriptions, tests, doc, write_keys, connection_name(doc))


def connection_name(doc: Document) -> str:
    """``name:``, or else the file's stem made a valid name (``metronome prod.yaml`` is ``metronome-prod``)."""
    if isinstance(doc.data, dict) and isinstance(doc.data.get("name"), str):
        return doc.data["name"]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(doc.file).name.split(".")[0]).strip("-_.")[:64]
    return stem or "default"
