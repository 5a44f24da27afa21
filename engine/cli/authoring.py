"""The commands of mapping authors and plugin developers: validate, destinations, docs, preview, test, new-destination."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from engine.cli.common import Command, EXIT_FAILED, EXIT_OK, EXIT_SOME_BAD, connections_option, print_error
from engine.config import schemas
from engine.config.connections import load_connections
from engine.config.definitions import Catalog, load_destination
from engine.config.mappingfile import load_mapping_file
from engine.config.yamlsource import load_file
from engine.errors import ConfigError
from engine.events import BadInput, open_input, read_events
from engine.pipeline import Outcome, Pipeline
from engine.tools.docs import destination_markdown, key_reference_markdown, update_key_reference
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


def cmd_docs(args: argparse.Namespace) -> int:
    if args.update:
        changed = update_key_reference(Path(args.update))
        print(f"{args.update}: plugin key reference {'updated' if changed else 'already current'}")
    elif args.keys:
        print(key_reference_markdown(), end="")
    elif args.slug:
        print(destination_markdown(Catalog().get(args.slug)), end="")
    else:
        raise ConfigError("docs needs a SLUG (a destination's page), --keys or --update README.md")
    return EXIT_OK


def _preview_line(index: int, connection: str, outcome: Outcome, explain: bool) -> dict[str, object]:
    line: dict[str, object] = {
        "event": index,
        "connection": connection,
        "subscription": outcome.subscription,
        "action": outcome.action,
        "status": outcome.status,
    }
    if outcome.status != "filtered":
        line["payload"] = outcome.payload
        line["errors"] = list(outcome.errors)
    else:
        line["reason"] = outcome.reason
    if explain and outcome.explain is not None:
        line["explain"] = outcome.explain
    return line


def cmd_preview(args: argparse.Namespace) -> int:
    """Map events without sending anything: one JSON line per (event, subscription)."""
    pipelines = [(m.name, Pipeline(m)) for m in load_connections(args.mapping, require_env=False)]
    write = sys.stdout.buffer.write
    status = EXIT_OK
    with open_input(args.events) as stream:
        for item in read_events(stream):
            if isinstance(item, BadInput):
                line: dict[str, object] = {"event": item.position, "subscription": None, "status": "invalid",
                                           "errors": [f"line {item.line}: {item.message}"]}
                print(f"{args.events or '<stdin>'}:{item.line}: {item.message}", file=sys.stderr)
                write(orjson.dumps(line) + b"\n")
                status = EXIT_SOME_BAD
                continue
            for name, pipeline in pipelines:
                for outcome in pipeline.run(item.value, include_filtered=args.all, explain=args.explain):
                    if outcome.status == "invalid":
                        status = EXIT_SOME_BAD
                    write(orjson.dumps(_preview_line(item.position, name, outcome, args.explain), default=str) + b"\n")
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
    p = command("docs", cmd_docs, "print the Markdown documentation of one destination, or the plugin key reference")
    p.add_argument("slug", metavar="SLUG", nargs="?")
    p.add_argument("--keys", action="store_true", help="print every key of plugin and mapping files, generated from schemas/")
    p.add_argument("--update", metavar="README", help="rewrite the generated key reference inside README")
    p = command("preview", cmd_preview, "map events without sending: one JSON line per (event, connection, subscription) that matched")
    connections_option(p)
    p.add_argument("events", nargs="?", metavar="EVENTS", help="a JSON, JSON-array or NDJSON file (.gz too); stdin when absent or -")
    p.add_argument("--all", action="store_true", help='also print "filtered" lines for subscriptions an event does not feed')
    p.add_argument("--explain", action="store_true", help="say where each field's value came from")
    p = command("test", cmd_test, "run the tests: of mapping files and the tests/ of plugin folders; prints N passed, M failed")
    p.add_argument("files", nargs="+", metavar="MAPPING_OR_PLUGIN")
    p = command("new-destination", cmd_new_destination, "scaffold a plugin folder that validates and passes its test")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", help="where to create the folder (default: here)")
