"""The commands that check and scaffold: validate, destinations, test, new-destination."""

from __future__ import annotations

import argparse
from pathlib import Path


from engine.cli.common import Command, EXIT_FAILED, EXIT_OK, print_error
from engine.config import schemas
from engine.config.definitions import Catalog, load_destination
from engine.config.mappingfile import load_mapping_file
from engine.config.yamlsource import load_file
from engine.errors import ConfigError
from engine.tools.mappingtests import run_tests
from engine.tools.plugintests import run_plugin_tests
from engine.tools.scaffold import new_destination


def _validate_one(path: Path) -> str:
    """Check one mapping file or plugin folder; a one-line summary of what it holds."""
    if path.is_dir() or path.name == "destination.yaml":
        folder = path if path.is_dir() else path.parent
        dest = load_destination(folder, folder.name, f"folder {folder}")
        for tests in sorted((folder / "tests").glob("*.yaml")):
            schemas.check(load_file(tests), "plugin-tests")
        return f"{path}: ok (destination {dest.slug}, actions: {', '.join(dest.actions)})"
    mapping = load_mapping_file(path)
    return f"{path}: ok ({len(mapping.subscriptions)} subscriptions to {mapping.destination.slug}, {len(mapping.tests)} tests)"


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in args.files:
        try:
            print(_validate_one(Path(name)))
        except ConfigError as error:
            print_error(error)
            status = EXIT_FAILED
    return status


def cmd_destinations(args: argparse.Namespace) -> int:
    catalog = Catalog()
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
    passed = failed = 0
    for name in args.files:
        path = Path(name)
        results = run_plugin_tests(path) if path.is_dir() else run_tests(load_mapping_file(path, require_env=False))
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



def register(command: Command) -> None:
    p = command("validate", cmd_validate, "check mapping files and plugin folders; errors as FILE:LINE:COL: message")
    p.add_argument("files", nargs="+", metavar="FILE")
    command("destinations", cmd_destinations, "list the installed destination plugins and their actions")
    p = command("test", cmd_test, "run the tests: of mapping files and the tests/ of plugin folders; prints N passed, M failed")
    p.add_argument("files", nargs="+", metavar="MAPPING_OR_PLUGIN")
    p = command("new-destination", cmd_new_destination, "scaffold a plugin folder that validates and passes its test")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", help="where to create the folder (default: here)")
