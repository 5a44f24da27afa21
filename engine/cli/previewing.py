"""`actionmap preview`: events mapped without sending, one JSON line per match (with --explain, where each value came from).

With ``--explain`` on a terminal a person gets a table per event instead (:mod:`engine.cli.terminal`);
``--json``, or stdout not a terminal (a pipe, a file, a tool), keeps the JSON lines exactly.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from engine.cli.common import Command, EXIT_OK, EXIT_SOME_BAD, connections_option
from engine.config.connections import load_connections
from engine.events import BadInput, open_input, read_events
from engine.pipeline import Outcome, Pipeline


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
    """Map events without sending anything: one JSON line per (event, subscription), or with --explain on a terminal a table."""
    pipelines = [(m.name, Pipeline(m)) for m in load_connections(args.mapping, require_env=False)]
    write = sys.stdout.buffer.write
    tables = None
    if args.explain and not args.json and sys.stdout.isatty():
        from engine.cli.terminal import ExplainTables  # rich is imported only when a table is drawn

        tables = ExplainTables(sys.stdout)
    status = EXIT_OK
    with open_input(args.events) as stream:
        for item in read_events(stream):
            if isinstance(item, BadInput):
                line: dict[str, object] = {"event": item.position, "subscription": None, "status": "invalid",
                                           "errors": [f"line {item.line}: {item.message}"]}
                print(f"{args.events or '<stdin>'}:{item.line}: {item.message}", file=sys.stderr)
                if tables is None:  # a table has nothing to add to the message above
                    write(orjson.dumps(line) + b"\n")
                status = EXIT_SOME_BAD
                continue
            for name, pipeline in pipelines:
                for outcome in pipeline.run(item.value, include_filtered=args.all, explain=args.explain):
                    if outcome.status == "invalid":
                        status = EXIT_SOME_BAD
                    if tables is not None:
                        tables.outcome(item.position, name, outcome)
                    else:
                        write(orjson.dumps(_preview_line(item.position, name, outcome, args.explain), default=str) + b"\n")
    return status



def register(command: Command) -> None:
    p = command("preview", cmd_preview, "map events without sending: one JSON line per (event, connection, subscription) that matched")
    connections_option(p)
    p.add_argument("events", nargs="?", metavar="EVENTS", help="a JSON, JSON-array or NDJSON file (.gz too); stdin when absent or -")
    p.add_argument("--all", action="store_true", help='also print "filtered" lines for subscriptions an event does not feed')
    p.add_argument("--explain", action="store_true",
                   help="say where each field's value came from: a table per event on a terminal, JSON lines otherwise")
    p.add_argument("--json", action="store_true", help="JSON lines even on a terminal (what a pipe gets), for tools")
