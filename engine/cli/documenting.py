"""`actionmap docs`: a destination's page, the language reference, the plugin key reference; Markdown or HTML."""

from __future__ import annotations

import argparse
from pathlib import Path


from engine.cli.common import Command, EXIT_OK, catalog_of, destination_of, plugins_option
from engine.errors import ConfigError
from engine.tools.docs import destination_markdown, key_reference_markdown, update_key_reference, without_markers
from engine.tools.html import html_page
from engine.tools.language import language_reference


def _page(args: argparse.Namespace) -> str:
    """The Markdown of the one page asked for."""
    if args.language:
        return language_reference()
    if args.keys:
        return key_reference_markdown() if args.format == "markdown" else without_markers(key_reference_markdown())
    dest = destination_of(args.slug, catalog_of(args))  # a slug, or a plugin folder (installed or not)
    return destination_markdown(dest)


def cmd_docs(args: argparse.Namespace) -> int:
    asked = [name for name, given in (("SLUG", args.slug), ("--language", args.language), ("--keys", args.keys),
                                      ("--update", args.update)) if given]
    if len(asked) != 1:
        raise ConfigError("docs prints one page: give a SLUG (a destination's page), --language (the mapping and trigger "
                          "language), --keys (the plugin key reference) or --update README.md"
                          + (f"; got {' and '.join(asked)}" if asked else ""))
    if args.update:
        if args.format != "markdown":
            raise ConfigError("--update rewrites the Markdown of a README; --format html does not apply to it")
        changed = update_key_reference(Path(args.update))
        print(f"{args.update}: plugin key reference {'updated' if changed else 'already current'}")
        return EXIT_OK
    page = _page(args)
    print(html_page(page) if args.format == "html" else page, end="")
    return EXIT_OK


def register(command: Command) -> None:
    p = command("docs", cmd_docs, "print a destination's documentation, the mapping language reference or the plugin key reference")
    p.add_argument("slug", metavar="SLUG", nargs="?", help="a destination (a slug, or a plugin folder): its settings, actions, fields, an example and its batching")
    plugins_option(p)
    p.add_argument("--language", action="store_true", help="print the reference of the mapping and trigger language")
    p.add_argument("--keys", action="store_true", help="print every key of plugin and mapping files, generated from schemas/")
    p.add_argument("--update", metavar="README", help="rewrite the generated key reference inside README")
    p.add_argument("--format", choices=("markdown", "html"), default="markdown",
                   help="markdown (the default) or a standalone HTML page for a documentation site")
