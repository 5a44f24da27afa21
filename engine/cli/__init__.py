"""The ``actionmap`` command line: one module per family of commands, each registering its own.

``common`` holds the exit statuses and shared options; ``authoring`` validate, destinations, paths,
test and new-destination; ``documenting`` docs; ``previewing`` preview; ``delivering`` send,
replay and check; ``running`` the service, the Kafka worker, the demo and the emulators;
``terminal`` draws the tables a person reads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from engine.cli import authoring, delivering, documenting, previewing, running
from engine.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, print_error
from engine.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actionmap",
        description="Declarative destination actions: triggers, YAML field mappings, validated delivery.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=run)
        return p

    for family in (authoring, documenting, previewing, delivering, running):
        family.register(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        print_error(error)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C outside a delivery (which stops cleanly and prints its summary): no traceback
        print("actionmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a missing input file, an unwritable dead-letter file: say which, no traceback
        print(f"actionmap: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED


