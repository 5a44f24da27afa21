"""Loading destination plugins: discovery, schema checks, and compiling their defaults.

A plugin is a folder holding ``destination.yaml`` and ``actions/<slug>.yaml``. Every
installed plugin, the built-in ones included, is found the same way: a distribution
declares an entry point in the ``actionmap.destinations`` group, named by the plugin's
slug, that names the plugin's package, whose folder holds the YAML (this distribution's
own are "built-in"); the engine imports no plugin by name. A plugin folder that is not
installed is used by its path (``validate DIR``, ``destination: ./DIR``, ``--plugins DIR``);
its slug is what its ``destination.yaml`` says, whatever the folder is called. A plugin
that fails to load is an error naming file, line and column: never skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from engine.config import schemas
from engine.config.http import (Hook, RateLimitHeader, Request, Session, compile_rate_limit, compile_request, compile_session,
                                settings_template, template_texts)
from engine.config.yamlsource import Document, join_pointer, load_file
from engine.errors import ConfigError
from engine.lang.fields import FieldSet, compile_fields
from engine.lang.mapping import Node, compile_mapping
from engine.lang.trigger import Trigger, compile_trigger

ENTRY_POINT_GROUP = "actionmap.destinations"
_DISTRIBUTION = "actionmap"  # its own entry points are the built-in plugins


@dataclass(frozen=True)
class Setting:
    name: str
    type: str
    label: str
    description: str
    required: bool = False
    default: Any = None
    secret: bool = False
    format: str | None = None
    enum: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class CredentialCheck:
    request: Request
    valid: frozenset[int]
    invalid: frozenset[int]


@dataclass(frozen=True)
class Action:
    """One action: its fields, default mappings and trigger, compiled once when the plugin loads."""

    slug: str
    title: str
    description: str
    default_trigger: Trigger
    defaults: dict[str, Node]
    checks: FieldSet  # the fields: names, rules, windows; a subscription's are ``checks.mapped_by(...)``
    max_batch_size: int
    request: Request
    document: Document = field(repr=False)
    size_setting: str | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    action: str
    trigger: str | dict[str, str] | None


@dataclass(frozen=True)
class Destination:
    name: str
    slug: str
    description: str
    settings: dict[str, Setting]
    auth_headers: dict[str, str]
    credential_check: CredentialCheck | None
    actions: dict[str, Action]
    presets: list[Preset]
    folder: Path
    origin: str
    document: Document = field(repr=False)
    session: Session | None = None
    rate_limit: tuple[RateLimitHeader, ...] = ()


def _setting_of_type(doc: Document, settings: dict[str, Setting], name: str, kind: str, pointer: str) -> None:
    """An action key that names a setting must name a declared one of the right type."""
    setting = settings.get(name)
    if setting is None or setting.type != kind:
        found = f"a {setting.type} setting" if setting else "not declared"
        raise doc.place(ConfigError(f"{name} must be a declared {kind} setting of this destination ({found})", pointer))


def _hook(doc: Document, module: ModuleType | None, name: str | None, pointer: str) -> Hook | None:
    if name is None:
        return None
    if module is None:
        raise doc.place(ConfigError(f"hook {name} needs a hooks module: add hooks: <python module> to destination.yaml", pointer))
    hook = getattr(module, name, None)
    if not callable(hook):
        raise doc.place(ConfigError(f"the hooks module {module.__name__} has no function {name}", pointer))
    return hook


def _check_templates(doc: Document, settings: dict[str, Setting], pointer: str, texts: dict[str, str],
                     session: bool = False) -> None:
    """Every template in URLs, methods, headers and bodies must compile, each placeholder naming a declared setting."""
    for key, text in texts.items():
        at = join_pointer(pointer, *key.split("/"))
        _compile(doc, lambda value, where: settings_template(value, settings, where, session), text, at)


def _compile(doc: Document, make: Any, value: Any, pointer: str) -> Any:
    """Run a compiler on a node of ``doc`` and place its errors in the file."""
    try:
        return make(value, pointer)
    except ConfigError as error:
        raise doc.place(error) from None


def load_action(path: Path, slug: str, settings: dict[str, Setting], hooks: ModuleType | None = None,
                session: Session | None = None) -> Action:
    """Read, check and compile ``actions/<slug>.yaml``."""
    doc = load_file(path)
    schemas.check(doc, "action")
    data = doc.data
    hook = _hook(doc, hooks, data["request"].get("hook"), "/request/hook")
    request: Request = _compile(doc, lambda value, at: compile_request(value, at, hook), data["request"], "/request")
    _check_templates(doc, settings, "/request", template_texts(request))
    if request.session and session is None:
        raise doc.place(ConfigError("session: true needs the destination to declare authentication.session", "/request/session"))
    for index, rule in enumerate(request.responses):
        match = rule.items.match if rule.items else "index"
        if match != "index" and match not in data["fields"]:
            raise doc.place(ConfigError(f"items match {match!r}: name one of the action's fields, or index",
                                        f"/request/responses/{index}/items/match"))
    if request.headers_setting:
        _setting_of_type(doc, settings, request.headers_setting, "object", "/request/headers_setting")
    if request.body_field and request.body_field not in data["fields"]:
        raise doc.place(ConfigError(f"body_field {request.body_field} is not one of the action's fields", "/request/body_field"))
    size_setting = data.get("batching", {}).get("size_setting")
    if size_setting:
        _setting_of_type(doc, settings, size_setting, "integer", "/batching/size_setting")
    _check_templates(doc, settings, "/request/headers", request.headers)
    defaults = {
        name: _compile(doc, compile_mapping, decl["default"], f"/fields/{name}/default")
        for name, decl in data["fields"].items()
        if "default" in decl
    }
    sources = {name: node.source for name, node in defaults.items()}
    checks = _compile(doc, lambda v, p: compile_fields(v, p, sources), data["fields"], "/fields")
    return Action(
        slug=slug,
        title=data["title"],
        description=data["description"],
        default_trigger=_compile(doc, compile_trigger, data["default_trigger"], "/default_trigger"),
        defaults=defaults,
        checks=checks,
        max_batch_size=data.get("batching", {}).get("max_batch_size", 1),
        request=request,
        document=doc,
        size_setting=size_setting,
    )


def load_destination(folder: Path, expected_slug: str | None = None, origin: str | None = None) -> Destination:
    """Read, check and compile one plugin folder.

    ``expected_slug`` is the name the plugin is installed as (its entry point's): mapping
    files name it so, so its ``destination.yaml`` must say the same slug. A folder used by
    its path (``expected_slug`` None) has the slug it declares, whatever the folder is called.
    """
    origin = origin or ("built-in" if expected_slug else f"folder {folder}")
    doc = load_file(folder / "destination.yaml")
    schemas.check(doc, "destination")
    data = doc.data
    if expected_slug is not None and data["slug"] != expected_slug:
        raise doc.place(ConfigError(
            f'slug "{data["slug"]}" does not match the name "{expected_slug}" the plugin is installed as ({origin}): '
            f'name its entry point in {ENTRY_POINT_GROUP} by the slug, as mapping files name it '
            f'({data["slug"]} = "<package>"), or change the slug', "/slug"))
    settings = {
        name: Setting(
            name=name, type=decl["type"], label=decl["label"], description=decl["description"],
            required=decl.get("required", False), default=decl.get("default"), secret=decl.get("secret", False),
            format=decl.get("format"), enum=tuple(decl["enum"]) if "enum" in decl else None,
        )
        for name, decl in data["settings"].items()
    }
    for name, setting in settings.items():
        if setting.required and setting.default is not None:
            raise doc.place(ConfigError(f"setting {name} is required and has a default: choose one", f"/settings/{name}"))
    auth_headers = dict(data.get("authentication", {}).get("headers", {}))
    _check_templates(doc, settings, "/authentication/headers", auth_headers)
    authentication = data.get("authentication", {})
    session = None
    if "session" in authentication:
        session = _compile(doc, compile_session, authentication["session"], "/authentication/session")
        _check_templates(doc, settings, "/authentication/session/request", template_texts(session.request))
        _check_templates(doc, settings, "/authentication/session/request/headers", session.request.headers)
        _check_templates(doc, settings, "/authentication/session/headers", session.headers, session=True)
    check = data.get("credential_check")
    credential_check = None
    if check:
        request = _compile(doc, compile_request, check["request"], "/credential_check/request")
        credential_check = CredentialCheck(request, frozenset(check["valid"]), frozenset(check["invalid"]))
        _check_templates(doc, settings, "/credential_check/request", {"url": credential_check.request.url})
        _check_templates(doc, settings, "/credential_check/request/headers", credential_check.request.headers)
    hooks = None
    if "hooks" in data:
        try:
            hooks = _import_hooks(data["hooks"], folder)
        except Exception as exc:  # any import failure of plugin code is the plugin's error, reported with its place
            raise doc.place(ConfigError(f"cannot import the hooks module {data['hooks']}: {type(exc).__name__}: {exc}", "/hooks")) from None
    actions: dict[str, Action] = {}
    for index, slug in enumerate(data["actions"]):
        path = folder / "actions" / f"{slug}.yaml"
        if not path.is_file():
            raise doc.place(ConfigError(f"action {slug} is declared but {path} does not exist", f"/actions/{index}"))
        actions[slug] = load_action(path, slug, settings, hooks, session)
    undeclared = sorted(p.stem for p in (folder / "actions").glob("*.yaml") if p.stem not in actions)
    if undeclared:
        raise doc.place(
            ConfigError(f"actions/{undeclared[0]}.yaml exists but is not listed in actions; list it or remove it", "/actions")
        )
    presets = [Preset(p["name"], p["action"], p.get("trigger")) for p in data.get("presets", [])]
    for index, preset in enumerate(presets):
        if preset.action not in actions:
            raise doc.place(ConfigError(f'preset "{preset.name}" names unknown action {preset.action}', f"/presets/{index}/action"))
        if preset.trigger is not None:
            _compile(doc, compile_trigger, preset.trigger, f"/presets/{index}/trigger")
    return Destination(
        name=data["name"],
        slug=data["slug"],
        description=data["description"],
        settings=settings,
        auth_headers=auth_headers,
        credential_check=credential_check,
        session=session,
        rate_limit=compile_rate_limit(data.get("rate_limit", {})),
        actions=actions,
        presets=presets,
        folder=folder,
        origin=origin,
        document=doc,
    )


def _import_hooks(name: str, folder: Path) -> ModuleType:
    """The hooks module: as installed, or else from the plugin folder itself, so an uninstalled folder's hooks work.

    In a folder, ``hooks: <folder name>.hooks`` (``destinations.webhook.hooks`` for
    ``destinations/webhook``) is ``hooks.py`` beside ``destination.yaml``; the folders
    the name's packages stand for must be the folder and its parents.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as missing:
        root = _package_root(name, folder.resolve())
        if root is None or not missing.name or not name.startswith(missing.name):
            raise
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


def _package_root(name: str, folder: Path) -> Path | None:
    """The folder to import ``name`` from when its packages are ``folder`` and its parents; None when they are not."""
    packages = name.split(".")[:-1]
    names = [folder.name, *(parent.name for parent in folder.parents)][: len(packages)]
    if not packages or names[::-1] != packages:
        return None
    return folder.parents[len(packages) - 1]


def _folder_of(loaded: Any, name: str) -> Path:
    file = getattr(loaded, "__file__", None)
    if isinstance(loaded, ModuleType) and file:
        return Path(file).resolve().parent
    if isinstance(loaded, (str, Path)):
        return Path(loaded)
    raise ConfigError(f'entry point "{name}" in group {ENTRY_POINT_GROUP} must name a package (module), got {loaded!r}')


def plugin_folders() -> dict[str, tuple[Path, str]]:
    """Every plugin on this installation: slug -> (folder, where it came from)."""
    found: dict[str, tuple[Path, str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ours = ep.dist is not None and ep.dist.name == _DISTRIBUTION
        origin = "built-in" if ours else f"entry point {ep.name} = {ep.value}" + (f" of {ep.dist.name}" if ep.dist else "")
        try:
            folder = _folder_of(ep.load(), ep.name)
        except ConfigError:
            raise
        except Exception as exc:  # any import failure of a third-party plugin must be reported, not skipped
            raise ConfigError(f"cannot load the plugin from {origin}: {type(exc).__name__}: {exc}") from None
        if ep.name in found and found[ep.name][0] != folder:
            raise ConfigError(f'two plugins are named "{ep.name}": {found[ep.name][1]} and {origin}')
        if not (folder / "destination.yaml").is_file():
            raise ConfigError(f"{origin}: {folder} holds no destination.yaml")
        found[ep.name] = (folder, origin)
    return found


def is_folder_reference(name: str) -> bool:
    """Whether a mapping file's ``destination:`` is a plugin folder's path (``./hookbin``) rather than a slug."""
    return name.startswith((".", "~", "/")) or "/" in name or "\\" in name


def plugin_folders_in(path: Path) -> list[Path]:
    """The plugin folders of ``--plugins DIR``: DIR itself when it holds destination.yaml, else each folder in it that does."""
    if (path / "destination.yaml").is_file():
        return [path]
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise ConfigError(f"--plugins {path}: {what}; give a plugin folder (one holding destination.yaml) or a folder of them")
    found = sorted(child for child in path.iterdir() if (child / "destination.yaml").is_file())
    if not found:
        raise ConfigError(f"--plugins {path}: no plugin folder here (a plugin folder holds destination.yaml) nor in its folders")
    return found


class Catalog:
    """The plugins a command can use: the installed ones (each loaded on first use) and the plugin folders it is given.

    A folder given (``--plugins``, ``validate DIR``) is known by the slug it declares and
    shadows an installed plugin of that slug; a folder a mapping file names by its path
    serves that file only.
    """

    def __init__(self, plugins: Iterable[str | Path] = ()) -> None:
        self._folders = plugin_folders()
        self._loaded: dict[str, Destination] = {}
        self._paths: dict[Path, Destination] = {}
        given: dict[str, Path] = {}
        for path in plugins:
            for folder in plugin_folders_in(Path(path)):
                slug = self.add_folder(folder).slug
                if given.setdefault(slug, folder.resolve()) != folder.resolve():
                    raise ConfigError(f'two plugin folders declare the slug "{slug}": {given[slug]} and {folder.resolve()}')

    def folder(self, folder: Path) -> Destination:
        """The plugin in ``folder`` (installed or not), loaded once; its slug is the one it declares."""
        folder = folder.expanduser().resolve()
        if folder not in self._paths:
            if not (folder / "destination.yaml").is_file():
                what = "holds no destination.yaml" if folder.is_dir() else "does not exist"
                raise ConfigError(f"{folder} {what}: a plugin folder holds destination.yaml and actions/")
            self._paths[folder] = load_destination(folder, None, f"folder {folder}")
        return self._paths[folder]

    def add_folder(self, folder: Path) -> Destination:
        """Make a plugin folder that is not installed (one being developed, or a scaffold) known by its slug."""
        dest = self.folder(folder)
        self._folders[dest.slug] = (dest.folder, dest.origin)
        self._loaded[dest.slug] = dest
        return dest

    @property
    def slugs(self) -> list[str]:
        return sorted(self._folders)

    def get(self, slug: str) -> Destination:
        if slug not in self._loaded:
            if slug not in self._folders:
                raise ConfigError(
                    f'unknown destination "{slug}" (installed: {", ".join(self.slugs) or "none"}); a plugin folder that '
                    f"is not installed is named by its path (destination: ./{slug}) or added with --plugins DIR")
            folder, origin = self._folders[slug]
            self._loaded[slug] = load_destination(folder, slug, origin)
        return self._loaded[slug]

    def resolve(self, name: str, base: Path | None = None) -> Destination:
        """A mapping file's ``destination:``: a slug, or a plugin folder's path relative to ``base`` (the file's folder)."""
        if is_folder_reference(name):
            return self.folder((base or Path.cwd()) / Path(name).expanduser())
        return self.get(name)


def load_emulator(slug: str) -> ModuleType:
    """The plugin's ``emulator`` module (``emulator.py`` beside its ``destination.yaml``), found as the plugin is.

    An emulator module offers ``main(argv)`` (``actionmap emulator SLUG ...``) and
    ``Emulator``, a context manager serving on loopback (the demo's).
    """
    folders = plugin_folders()
    if slug not in folders or not (folders[slug][0] / "emulator.py").is_file():
        having = sorted(name for name, (folder, _) in folders.items() if (folder / "emulator.py").is_file())
        raise ConfigError(f"no emulator for {slug!r}; available: {', '.join(having) or 'none'}")
    folder = folders[slug][0] / "emulator.py"
    spec = importlib.util.spec_from_file_location(f"actionmap_emulator_{slug}", folder)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look a module up by name while it runs
    spec.loader.exec_module(module)
    return module
