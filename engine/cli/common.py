"""What the commands share: exit statuses, how errors are printed, the options of delivering commands, and how
plugin folders (``--plugins DIR``, a ``SLUG`` argument that is a folder) reach the catalog."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from engine.config.connections import MappingPaths
from engine.config.definitions import Catalog, Destination
from engine.delivery import RetryPolicy
from engine.errors import ConfigError, ConfigErrors


Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
"""Adds a subcommand (name, what runs it, its one-line help) and gives its parser, for each module's ``register``."""

EXIT_OK, EXIT_FAILED, EXIT_SOME_BAD = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def print_error(error: ConfigError) -> None:
    for one in error.errors if isinstance(error, ConfigErrors) else [error]:
        print(str(one), file=sys.stderr)


def mapping_options(p: argparse.ArgumentParser) -> None:
    connections_option(p)
    p.add_argument("--set", action="append", default=[], metavar="[CONNECTION:]NAME=VALUE",
                   help="override a setting: of every connection whose destination has it, or of one connection")


def connections_option(p: argparse.ArgumentParser) -> None:
    """``-m MAPPING`` (repeatable) and ``--plugins DIR``: ``args.mapping`` is a MappingPaths carrying the folders to the loader."""
    p.add_argument("-m", "--mapping", required=True, action=_Carried, metavar="MAPPING",
                   help="a mapping file: one connection (repeat for several destinations)")
    plugins_option(p, action=_Carried)


PLUGINS_HELP = ("a plugin folder, or a folder of plugin folders, to use as if installed (repeatable); "
                "mapping files name each by the slug its destination.yaml declares")


def plugins_option(p: argparse.ArgumentParser, action: type[argparse.Action] | str = "append") -> None:
    p.add_argument("--plugins", action=action, default=[], metavar="DIR", help=PLUGINS_HELP)


class _Carried(argparse.Action):
    """``-m`` and ``--plugins`` kept on one :class:`MappingPaths`, so the loader given ``args.mapping`` has the folders too."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: str | Sequence[Any] | None,
                 option_string: str | None = None) -> None:
        paths = getattr(namespace, "mapping", None)
        if not isinstance(paths, MappingPaths):
            paths = MappingPaths(paths or ())
            namespace.mapping = paths
        if self.dest == "plugins":
            paths.plugins.append(str(values))
            namespace.plugins = [*getattr(namespace, "plugins", []), str(values)]  # never the shared default list
        else:
            paths.append(str(values))


def catalog_of(args: argparse.Namespace) -> Catalog:
    """The installed plugins and the ``--plugins`` folders of this command line."""
    return Catalog(getattr(args, "plugins", []))


def destination_of(reference: str, catalog: Catalog) -> Destination:
    """A SLUG-or-DIR argument: a plugin folder when it holds destination.yaml or is written as a path, else a slug."""
    if (Path(reference) / "destination.yaml").is_file():
        return catalog.add_folder(Path(reference))
    return catalog.resolve(reference)


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def delivery_options(p: argparse.ArgumentParser) -> None:
    mapping_options(p)
    p.add_argument("--dead-letter", metavar="FILE", help="append dead letters (NDJSON) to FILE")
    p.add_argument("--dry-run", action="store_true", help="print the requests that would be sent (secrets masked); send nothing")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S", help="client-side pace per destination (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=positive, default=30.0, metavar="SECONDS",
                   help="give up on one request's answer after this long and retry it (default 30)")
    p.add_argument("--retry-for", type=positive, default=RetryPolicy.max_duration, metavar="SECONDS",
                   help="retry a batch for at most this long, then dead-letter it as 'retries exhausted' (default 900)")
    p.add_argument("--backoff", type=positive, default=RetryPolicy.base, metavar="SECONDS",
                   help="the first retry waits up to this long (full jitter), doubling per attempt up to 30 s (default 0.5)")


