"""The command line every emulator shares (``actionmap emulator SLUG ...``): one set of flags, one way to stop.

Shared so that a sender's tests and the quick start drive each platform's emulator the
same way; a platform adds only its own flags and how they become constructor options.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from engine.tools.emulator.base import Emulator
from engine.tools.emulator.faults import FAULT_KINDS, Faults, checked_fault_names


def _fault_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        return checked_fault_names(names, allow_none=False)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser_for(cls: type[Emulator]) -> argparse.ArgumentParser:
    """The shared flags, with the platform's default port."""
    parser = argparse.ArgumentParser(
        prog=f"actionmap emulator {cls.slug}",
        description=f"Serve a local stand-in for {cls.name}'s API until SIGINT or SIGTERM, "
        "then print a JSON summary of what it stored.",
    )
    port = cls.default_port
    parser.add_argument("--port", type=int, default=port, help=f"port on 127.0.0.1 (0 picks a free one; default {port})")
    parser.add_argument("--token", action="append", required=True, help="a valid API token (repeatable)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of ingest requests that get a random fault (0..1)")
    parser.add_argument("--faults", type=_fault_names, default=list(FAULT_KINDS),
                        help=f"comma-separated fault kinds to draw from (default: all of {','.join(FAULT_KINDS)})")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults, to repeat a run")
    parser.add_argument("--slow-delay", type=float, default=10.0, help="seconds the 'slow' fault waits before answering")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="events per second before answering 429 (default: no limit)")
    return parser


def main_for(
    cls: type[Emulator],
    argv: Sequence[str] | None = None,
    *,
    add_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
    options: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
) -> int:
    """Print the base URL, serve until SIGINT/SIGTERM, print a JSON summary; 1 when the port is taken, 2 on bad flags."""
    parser = parser_for(cls)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        faults = Faults(rate=args.fault_rate, kinds=args.faults, seed=args.seed, slow_delay=args.slow_delay)
        emulator = cls(args.token, faults=faults, rate_limit=args.rate_limit, **(options(args) if options else {}))
    except ValueError as error:
        parser.error(str(error))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            print(emulator.start(port=args.port), flush=True)
        except OSError as error:
            print(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}; choose another --port", file=sys.stderr)
            return 1
        while not stop.wait(0.5):
            pass
        emulator.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps(emulator.summary(), sort_keys=True), flush=True)
    return 0
