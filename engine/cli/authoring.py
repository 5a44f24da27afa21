"""The commands that check and scaffold: validate, destinations, test, new-destination, paths."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from engine.cli.common import Command, EXIT_FAILED, EXIT_OK, catalog_of, plugins_option, print_error
from engine.config import schemas
from engine.config.definitions import Catalog, plugin_folders
from engine.config.mappingfile import env_references, load_mapping_file
from engine.config.yamlsource import load_file
from engine.errors import ConfigError
from engine.resources import data_paths
from engine.tools.mappingtests import run_tests
from engine.tools.plugintests import run_plugin_tests
from engine.tools.scaffold import new_destination


def _is_plugin(path: Path) -> bool:
    return path.is_dir() or path.name == "destination.yaml"


def _validate_one(path: Path, catalog: Catalog, no_env: bool) -> list[str]:
    """Check one mapping file or plugin folder: a summary line of what it holds (with ``no_env``, its ``${VAR}`` too)."""
    if _is_plugin(path):
        folder = path if path.is_dir() else path.parent
        dest = catalog.add_folder(folder)
        for tests in sorted((folder / "tests").glob("*.yaml")):
            schemas.check(load_file(tests), "plugin-tests")
        return [f"{path}: ok (destination {dest.slug}, actions: {', '.join(dest.actions)})"]
    mapping = load_mapping_file(path, env={} if no_env else None, catalog=catalog, require_env=not no_env)
    lines = [f"{path}: ok ({len(mapping.subscriptions)} subscriptions to {mapping.destination.slug}, {len(mapping.tests)} tests)"]
    if no_env:  # what the file reads, so the operator can see every variable a deployment must set
        lines += [f"{ref.location}: ${{{ref.variable}}} for {ref.needed_by}: not read (--no-env)" for ref in env_references(mapping.document)]
    return lines


def cmd_validate(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    status = EXIT_OK
    for name in args.files:
        try:
            print("\n".join(_validate_one(Path(name), catalog, args.no_env)))
        except ConfigError as error:
            print_error(error)
            status = EXIT_FAILED
    return status


def cmd_destinations(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    rows = [("SLUG", "NAME", "ACTIONS", "FROM")]
    status = EXIT_OK
    for slug in catalog.slugs:
        try:
            dest = catalog.get(slug)
        except ConfigError as error:
            print_error(error)
            status = EXIT_FAILED
            continue
        rows.append((slug, dest.name, ", ".join(dest.actions), dest.origin))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return status


def cmd_test(args: argparse.Namespace) -> int:
    catalog = catalog_of(args)
    passed = failed = 0
    for name in args.files:
        path = Path(name)
        if _is_plugin(path):
            results = run_plugin_tests(path if path.is_dir() else path.parent, catalog)
        else:
            results = run_tests(load_mapping_file(path, require_env=False, catalog=catalog))
        for result in results:
            if result.passed:
                passed += 1
                print(f"PASS {result.where}: {result.name}")
            else:
                failed += 1
                print(f"FAIL {result.where}: {result.name}")
                for failure in result.failures:
                    print("    " + failure)
    print(f"{passed} passed, {failed} failed")
    return EXIT_OK if failed == 0 and passed > 0 else EXIT_FAILED


def cmd_new_destination(args: argparse.Namespace) -> int:
    folder = new_destination(args.name, Path(args.dir))
    print(f"created {folder}: check it with `actionmap validate {folder}`, test it with `actionmap test {folder}`")
    return EXIT_OK


def cmd_paths(args: argparse.Namespace) -> int:
    """Where the files that travel with actionmap are, installed or in a source tree: for a person, or ``--json`` for tools."""
    folders = {name: str(path) for name, path in data_paths().items()}
    plugins = {slug: str(folder) for slug, (folder, _) in sorted(plugin_folders().items())}
    if args.json:
        print(orjson.dumps({**folders, "plugins": plugins}, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, path in [*folders.items(), *((f"plugin {slug}", folder) for slug, folder in plugins.items())]:
            print(f"{name}: {path}")
    return EXIT_OK


def register(command: Command) -> None:
    p = command("validate", cmd_validate, "check mapping files and plugin folders; every error as FILE:LINE:COL: message")
    p.add_argument("files", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--no-env", action="store_true",
                   help="check without the environment (no secrets needed): list each ${VAR} the file reads, read none")
    plugins_option(p)
    p = command("destinations", cmd_destinations, "list the installed destination plugins and their actions")
    plugins_option(p)
    p = command("test", cmd_test, "run the tests: of mapping files and the tests/ of plugin folders; prints N passed, M failed")
    p.add_argument("files", nargs="+", metavar="MAPPING_OR_PLUGIN")
    plugins_option(p)
    p = command("new-destination", cmd_new_destination, "scaffold a plugin folder that validates and passes its test")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", help="where to create the folder (default: here)")
    p = command("paths", cmd_paths, "where the shipped mappings, examples, schemas, docs and plugin folders are")
    p.add_argument("--json", action="store_true", help="one JSON object, for tools")
