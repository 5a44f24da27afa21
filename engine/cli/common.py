"""What the commands share: exit statuses, how errors are printed, and the options of delivering commands."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

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
    p.add_argument("-m", "--mapping", required=True, action="append", metavar="MAPPING",
                   help="a mapping file: one connection (repeat for several destinations)")


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


