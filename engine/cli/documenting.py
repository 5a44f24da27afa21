"""`actionmap docs`: a destination's page, the plugin key reference."""

from __future__ import annotations

import argparse
from pathlib import Path


from engine.cli.common import Command, EXIT_OK
from engine.config.definitions import Catalog
from engine.errors import ConfigError
from engine.tools.docs import destination_markdown, key_reference_markdown, update_key_reference


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



def register(command: Command) -> None:
    p = command("docs", cmd_docs, "print the Markdown documentation of one destination, or the plugin key reference")
    p.add_argument("slug", metavar="SLUG", nargs="?")
    p.add_argument("--keys", action="store_true", help="print every key of plugin and mapping files, generated from schemas/")
    p.add_argument("--update", metavar="README", help="rewrite the generated key reference inside README")
