"""The commands that deliver from files: send, replay, and check of a credential."""

from __future__ import annotations

import argparse
import sys
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterable, Iterator

import httpx

from engine.cli.common import Command, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_BAD, delivery_options, mapping_options
from engine.config.connections import Secrets, load_connections, parse_overrides
from engine.config.mappingfile import MappingFile
from engine.delivery import CONNECT_TIMEOUT, RetryPolicy, Sender, TokenBucket, check_credential
from engine.delivery.batcher import Batcher
from engine.delivery.deadletters import DeadLetterFile, read_dead_letters
from engine.errors import ConfigError
from engine.events import BadInput, Event, Item, decode, open_input, read_events
from engine.runtime.send import Feed, Progress, deliver


def _sender(args: argparse.Namespace, mapping: MappingFile, stop: threading.Event) -> Sender:
    """The sender for send and replay: pace, request timeout and retry budget from the command line; Ctrl-C stops its waits."""
    pace = TokenBucket(args.rate) if args.rate > 0 else None
    timeout = httpx.Timeout(args.timeout, connect=min(args.timeout, CONNECT_TIMEOUT))
    policy = RetryPolicy(base=args.backoff, max_duration=args.retry_for)
    return Sender(mapping, pace=pace, timeout=timeout, policy=policy, wait=stop.wait)


def _deliver(args: argparse.Namespace, feed: Feed | None = None, items: Iterable[Item] | None = None,
             linger: float | None = None, progress: Progress | None = None) -> int:
    """The shared body of send and replay: every connection's lane maps, batches, delivers and dead-letters; one summary."""
    mappings = load_connections(args.mapping, overrides=parse_overrides(args.set))
    secrets = Secrets(mappings)
    stop = threading.Event()
    senders = [_sender(args, mapping, stop) for mapping in mappings]
    dry_run = sys.stdout.buffer if args.dry_run else None
    try:
        with DeadLetterFile(args.dead_letter, secrets) as dead:
            batchers = [Batcher(m, sender, dry_run=dry_run) for m, sender in zip(mappings, senders)]
            summary = deliver(batchers, dead, feed=feed, items=items, linger=linger, progress=progress or _progress(args), stop=stop)
    finally:
        for sender in senders:
            sender.close()
    for name, refusal in summary.refused.items():
        kept = summary.connections[name].kept
        print(secrets.redact(
            f"actionmap: {name}: {refusal}; delivery to it stopped. Its {kept:,} undelivered events were kept, not "
            "dead-lettered: they keep their ids, so once the setting is fixed, run the same send again; nothing is billed twice."
        ), file=sys.stderr)
    print(summary.line())
    print(summary.said(), file=sys.stderr)
    if summary.interrupted:
        print("actionmap: interrupted; events not yet read were not counted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.refused:
        return EXIT_FAILED
    return EXIT_SOME_BAD if summary.invalid or summary.dead_lettered else EXIT_OK


def _progress(args: argparse.Namespace) -> Progress:
    """The progress display on stderr; none in a dry run whose requests are printed on the same terminal (they would tangle)."""
    return Progress(wanted=not (args.dry_run and sys.stdout.isatty()))


STDIN_LINGER = 1.0
"""Seconds of quiet on stdin after which open batches are sent (a file is read to its end)."""


def cmd_send(args: argparse.Namespace) -> int:
    if args.events in (None, "-"):  # a pipe is read once, and handed to every connection
        if sys.stdin.isatty():
            print("actionmap send: reading events from this terminal (one JSON object per line; end with Ctrl-D). "
                  "To send a file: actionmap send -m MAPPING events.ndjson", file=sys.stderr)
        with open_input(args.events) as stream:
            return _deliver(args, items=read_events(stream), linger=STDIN_LINGER)

    progress = _progress(args)

    @contextmanager
    def reading() -> Iterator[Iterable[Item]]:  # a file is read by every connection for itself; how far, the bar shows
        with open_input(args.events) as stream, progress.reading(stream):
            yield read_events(stream)

    return _deliver(args, feed=reading, progress=progress)


def _replayed(path: str) -> Iterator[Item]:
    """The events of a dead-letter file; one kept only as its text (``raw``) is read again, so a line fixed by hand replays."""
    for number, record, problem in read_dead_letters(path):
        if record is not None and record.get("event") is None and isinstance(record.get("raw"), str):
            yield decode(number - 1, number, record["raw"])
        elif record is None or record.get("event") is None:
            yield BadInput(number - 1, number, problem or "the dead letter holds no event (it was not valid JSON): nothing to replay")
        else:
            yield Event(number - 1, number, record["event"])


def cmd_replay(args: argparse.Namespace) -> int:
    source = Path(args.dead_letters)
    if args.dead_letter and Path(args.dead_letter).exists() and source.exists() and Path(args.dead_letter).samefile(source):
        # appending to the file being read would replay each new dead letter again, without end
        raise ConfigError(f"--dead-letter {args.dead_letter} is the file being replayed: write new dead letters to another file")
    return _deliver(args, feed=lambda: nullcontext(_replayed(args.dead_letters)))


def cmd_check(args: argparse.Namespace) -> int:
    """Every connection's credential check; the exit status is the worst verdict's."""
    status = EXIT_OK
    for mapping in load_connections(args.mapping, overrides=parse_overrides(args.set)):
        verdict, detail = check_credential(mapping)
        exit_status, concluded = _VERDICTS[verdict]
        print(f"{mapping.name} ({mapping.destination.name}): {concluded} ({detail})")
        status = max(status, exit_status, key=_severity)
    return status


_VERDICTS: dict[str, tuple[int, str]] = {
    "valid": (EXIT_OK, "the credential was accepted"), "refused": (EXIT_FAILED, "the credential was refused"),
    "unreachable": (EXIT_SOME_BAD, "the destination could not be reached, so the credential was not checked"),
    "unexpected": (EXIT_SOME_BAD, "the check got an answer that says neither accepted nor refused"),
}
"""What ``check`` concluded, said as a conclusion (the status it came from follows in brackets), and its exit status."""


def _severity(status: int) -> int:
    return [EXIT_OK, EXIT_SOME_BAD, EXIT_FAILED].index(status)



def register(command: Command) -> None:
    p = command("send", cmd_send, "deliver events; the last line of output is a JSON summary; exit 0, 2 (some invalid or dead-lettered) or 1")
    p.add_argument("events", nargs="?", metavar="EVENTS", help="a JSON, JSON-array or NDJSON file (.gz too); stdin when absent or -")
    delivery_options(p)
    p = command("replay", cmd_replay, "send dead letters again through a (possibly corrected) mapping")
    p.add_argument("dead_letters", metavar="DEAD_LETTERS")
    delivery_options(p)
    p = command("check", cmd_check, "run the destination's credential check: exit 0 valid, 1 refused, 2 unreachable")
    mapping_options(p)
