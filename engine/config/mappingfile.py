"""Loading an operator's mapping file into compiled subscriptions.

Everything an operator can get wrong is found here, once, with file, line and
column: unknown keys, unknown destinations, actions, fields and settings, unset
environment variables, plain-http URLs to remote hosts, broken triggers and
mapping expressions, batch sizes over the action's limit. Every error of a file is
reported, not the first: each part (the destination, each setting, each write key,
each subscription's trigger and fields, each test) is checked on its own.
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
from engine.errors import MASK, ConfigError, ConfigErrors, Location, redact
from engine.lang.fields import FieldSet
from engine.lang.mapping import Node, compile_mapping
from engine.lang.trigger import Trigger, compile_trigger
from engine.config.yamlsource import Document, Problems, join_pointer, load_file

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
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
        return redact(text, self.secrets)

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


def _resolve_settings(doc: Document, dest: Destination, env: Mapping[str, str], require_env: bool,
                      overrides: Mapping[str, Any], problems: Problems) -> Settings:
    """The settings' values, each checked on its own; a wrong one is recorded in ``problems`` and left out."""
    given: dict[str, Any] = {**doc.data.get("settings", {}), **overrides}
    values: dict[str, Any] = {}
    for name, raw in given.items():
        pointer = f"/settings/{name}"
        setting = dest.settings.get(name)
        if setting is None:
            known = ", ".join(dest.settings)
            problems.add(ConfigError(f'unknown setting "{name}" for {dest.slug} (settings: {known})', pointer), key=True)
            continue
        value, problem = _interpolate(raw, env, require_env)
        if problem:
            problems.add(ConfigError(f"{problem[0]} (needed by settings.{name})", pointer, problem[1]))
            continue
        problem_text = _check_setting(setting, value)
        if problem_text:
            problems.add(ConfigError(problem_text, pointer))
            continue
        values[name] = value
    for name, setting in dest.settings.items():
        if name not in given:
            if setting.required:
                problems.add(ConfigError(f'missing required setting "{name}" ({setting.label}) for {dest.slug}', "/settings"))
            elif setting.default is not None:
                values[name] = setting.default
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


def _resolve_write_keys(doc: Document, env: Mapping[str, str], require_env: bool, problems: Problems) -> tuple[str, ...]:
    """The intake's write keys, ``${VAR}`` read as for settings; messages name the variable, never a key."""
    keys: list[str] = []
    for index, raw in enumerate(doc.data.get("write_keys", [])):
        pointer = f"/write_keys/{index}"
        value, problem = _interpolate(raw, env, require_env)
        if problem:
            problems.add(ConfigError(f"{problem[0]} (needed by write_keys[{index}])", pointer, problem[1]))
        elif not value:  # an empty key would let any client in that sends none
            problems.add(ConfigError(
                f"write_keys[{index}] is empty once the environment is read: set the variable to the key clients send, "
                "or remove the entry", pointer))
        else:
            keys.append(value)
    return tuple(dict.fromkeys(keys))


@dataclass(frozen=True)
class EnvReference:
    """A ``${VAR}`` of a mapping file: where it is and what needs it (``settings.api_token``, ``write_keys[0]``)."""

    variable: str
    location: Location
    needed_by: str


def env_references(doc: Document) -> list[EnvReference]:
    """Every ``${VAR}`` the file reads (in settings and write keys), in file order: what ``validate --no-env`` lists."""
    found: list[EnvReference] = []

    def scan(value: Any, pointer: str, needed_by: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                scan(inner, join_pointer(pointer, key), needed_by)
        elif isinstance(value, str):
            for match in _ENV_REF.finditer(value):
                found.append(EnvReference(match.group(1), doc.locate(pointer, match.start()), needed_by))

    data = doc.data if isinstance(doc.data, dict) else {}
    settings, keys = data.get("settings"), data.get("write_keys")
    for name, value in (settings.items() if isinstance(settings, dict) else []):
        scan(value, join_pointer("/settings", name), f"settings.{name}")
    for index, value in enumerate(keys if isinstance(keys, list) else []):
        scan(value, f"/write_keys/{index}", f"write_keys[{index}]")
    return sorted(found, key=lambda r: (r.location.line, r.location.column))


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


def _subscription(doc: Document, dest: Destination, settings: Settings, index: int, data: dict[str, Any],
                  problems: Problems) -> Subscription | None:
    """The compiled subscription; None when it has errors, each recorded in ``problems`` (its trigger, each field...)."""
    pointer = f"/subscriptions/{index}"
    action = dest.actions.get(data["action"])
    if action is None:
        known = ", ".join(dest.actions)
        problems.add(ConfigError(f'unknown action "{data["action"]}" for {dest.slug} (actions: {known})', pointer + "/action"))
        return None
    before = len(problems.errors)
    fields = action.checks
    trigger = action.default_trigger
    with problems.gathered():
        trigger = trigger if "trigger" not in data else compile_trigger(data["trigger"], pointer + "/trigger")
    mapping = dict(action.defaults)
    for name, value in data.get("mapping", {}).items():
        at = join_pointer(pointer + "/mapping", name)
        if name not in fields.names:
            problems.add(ConfigError(f'unknown field "{name}" for action {action.slug} (fields: {", ".join(fields.names)})', at),
                         key=True)
            continue
        with problems.gathered():
            mapping[name] = compile_mapping(value, at)
    mapping = {name: mapping[name] for name in fields.names if name in mapping}
    for name in fields.names:
        if name in fields.required and name not in mapping and name not in data.get("mapping", {}):
            problems.add(ConfigError(f"required field {name} of {action.slug} has no default mapping: map it under mapping:", pointer))
    default_size = settings.values.get(action.size_setting, action.max_batch_size) if action.size_setting else action.max_batch_size
    batch_size = data.get("batch_size", default_size)
    if batch_size > action.max_batch_size:
        problems.add(ConfigError(f"batch_size {batch_size} is over {action.slug}'s limit of {action.max_batch_size}",
                                 pointer + "/batch_size"))
    if len(problems.errors) > before:
        return None
    checks = fields.mapped_by({name: node.source for name, node in mapping.items()})
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
    """As :func:`load_mapping_file`, for a document already read (a plugin's test builds one).

    Every error is reported together: the structure's (schema) first, beside those of
    every part the structure left intact, so a wrong key hides nothing else.
    """
    problems = Problems(doc)
    structure, faults = schemas.structure(doc, "mapping")
    for error in structure:
        problems.add(error)

    def intact(pointer: str) -> bool:
        return schemas.intact(pointer, faults)

    catalog = catalog or Catalog()
    env = os.environ if env is None else env
    dest = None
    if intact("/destination"):
        try:
            dest = catalog.resolve(doc.data["destination"], Path(doc.file).parent)
        except ConfigError as error:  # one inside the plugin's own files keeps its place there
            located = error.location is not None or isinstance(error, ConfigErrors)
            problems.add(error if located else ConfigError(error.message, "/destination"))
    write_keys = _resolve_write_keys(doc, env, require_env, problems) if intact("/write_keys") else ()
    settings = Settings({}, frozenset())
    subscriptions: list[Subscription] = []
    listed = doc.data.get("subscriptions") if isinstance(doc.data, dict) else None
    listed = listed if isinstance(listed, list) else []  # each one intact is checked, beside the others' faults
    if dest is not None:
        if intact("/settings"):
            settings = _resolve_settings(doc, dest, env, require_env, overrides or {}, problems)
        for index, data in enumerate(listed):
            if intact(f"/subscriptions/{index}") and data.get("enabled", True):
                subscription = _subscription(doc, dest, settings, index, data, problems)
                subscriptions.extend([subscription] if subscription else [])
    names = _subscription_names(listed, faults, problems)
    tests = doc.data.get("tests", []) if intact("/tests") else []
    for index, test in enumerate(tests):
        for k, expectation in enumerate(test["expect"]):
            if names is not None and expectation["subscription"] not in names:
                problems.add(ConfigError(f'no subscription is named "{expectation["subscription"]}"',
                                         f"/tests/{index}/expect/{k}/subscription"))
    problems.raise_all()
    assert dest is not None  # an unresolved destination is an error, raised above
    return MappingFile(doc.file, dest, settings, subscriptions, tests, doc, write_keys, connection_name(doc))


def _subscription_names(listed: list[Any], faults: frozenset[str], problems: Problems) -> dict[str, int] | None:
    """Each subscription's name and index, a repeated name an error; None when a name is unreadable (tests go unchecked)."""
    if not schemas.reachable("/subscriptions", faults):  # the list itself is missing or wrong: its names are unknown
        return None
    names: dict[str, int] = {}
    for index, sub in enumerate(listed):
        if not schemas.intact(f"/subscriptions/{index}/name", faults):
            return None
        if sub["name"] in names:
            problems.add(ConfigError(f'two subscriptions are named "{sub["name"]}" (also #{names[sub["name"]]})',
                                     f"/subscriptions/{index}/name"))
        names.setdefault(sub["name"], index)
    return names


def connection_name(doc: Document) -> str:
    """``name:``, or else the file's stem made a valid name (``metronome prod.yaml`` is ``metronome-prod``)."""
    if isinstance(doc.data, dict) and isinstance(doc.data.get("name"), str):
        return doc.data["name"]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(doc.file).name.split(".")[0]).strip("-_.")[:64]
    return stem or "default"
