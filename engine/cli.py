"""The ``actionmap`` command line."""

from __future__ import annotations

import argparse
import sys
import threading
from contextlib import contextmanager, nullcontext

import httpx
import orjson
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from engine.config import schemas
from engine.config.definitions import Catalog, load_destination, load_emulator
from engine.config.connections import Secrets, load_connections, parse_overrides
from engine.config.mappingfile import MappingFile, load_mapping_file
from engine.config.yamlsource import load_file
from engine.delivery.deadletters import DeadLetterFile, read_dead_letters
from engine.delivery import CONNECT_TIMEOUT, RetryPolicy, Sender, TokenBucket, check_credential
from engine.delivery.batcher import Batcher
from engine.tools.docs import destination_markdown, key_reference_markdown, update_key_reference
from engine.errors import ConfigError, ConfigErrors
from engine.events import BadInput, Event, Item, decode, open_input, read_events
from engine.tools.mappingtests import run_tests
from engine.pipeline import Outcome, Pipeline
from engine.tools.plugintests import run_plugin_tests
from engine.tools.scaffold import new_destination
from engine.runtime.send import Feed, Progress, deliver

EXIT_OK, EXIT_FAILED, EXIT_SOME_BAD = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def _print_error(error: ConfigError) -> None:
    for one in error.errors if isinstance(error, ConfigErrors) else [error]:
        print(str(one), file=sys.stderr)


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
            _print_error(error)
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
            _print_error(error)
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


def _sender(args: argparse.Namespace, mapping: MappingFile, stop: threading.Event) -> Sender:
    """The sender for send and replay: pace, request timeout and retry budget from the command line; Ctrl-C stops its waits."""
    pace = TokenBucket(args.rate) if args.rate > 0 else None
    timeout = httpx.Timeout(args.timeout, connect=min(args.timeout, CONNECT_TIMEOUT))
    policy = RetryPolicy(base=args.backoff, max_duration=args.retry_for)
    return Sender(mapping, pace=pace, timeout=timeout, policy=policy, wait=stop.wait)


def _deliver(args: argparse.Namespace, feed: Feed | None = None, items: Iterable[Item] | None = None,
             linger: float | None = None) -> int:
    """The shared body of send and replay: every connection's lane maps, batches, delivers and dead-letters; one summary."""
    mappings = load_connections(args.mapping, overrides=parse_overrides(args.set))
    secrets = Secrets(mappings)
    stop = threading.Event()
    senders = [_sender(args, mapping, stop) for mapping in mappings]
    dry_run = sys.stdout.buffer if args.dry_run else None
    try:
        with DeadLetterFile(args.dead_letter, secrets) as dead:
            batchers = [Batcher(m, sender, dry_run=dry_run) for m, sender in zip(mappings, senders)]
            summary = deliver(batchers, dead, feed=feed, items=items, linger=linger, progress=Progress(), stop=stop)
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


STDIN_LINGER = 1.0
"""Seconds of quiet on stdin after which open batches are sent (a file is read to its end)."""


def cmd_send(args: argparse.Namespace) -> int:
    if args.events in (None, "-"):  # a pipe is read once, and handed to every connection
        if sys.stdin.isatty():
            print("actionmap send: reading events from this terminal (one JSON object per line; end with Ctrl-D). "
                  "To send a file: actionmap send -m MAPPING events.ndjson", file=sys.stderr)
        with open_input(args.events) as stream:
            return _deliver(args, items=read_events(stream), linger=STDIN_LINGER)

    @contextmanager
    def reading() -> Iterator[Iterable[Item]]:  # a file is read by every connection for itself
        with open_input(args.events) as stream:
            yield read_events(stream)

    return _deliver(args, feed=reading)


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


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.runtime.serve.service import ServeOptions, serve, write_keys

    mappings = load_connections(args.mapping, overrides=parse_overrides(args.set))
    keys = write_keys(args.write_key, [key for mapping in mappings for key in mapping.write_keys])
    options = ServeOptions(host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers, rate=args.rate,
                           timeout=args.timeout, retry_for=args.retry_for, credential_recheck=args.credential_recheck)
    return serve(mappings, keys, options)


def cmd_consume(args: argparse.Namespace) -> int:
    from engine.runtime.consume import ConsumeOptions, consume, kafka_properties

    if args.dead_letter and args.dead_letter_topic:
        raise ConfigError("give --dead-letter FILE or --dead-letter-topic TOPIC, not both: each dead letter is kept in one place")
    mappings = load_connections(args.mapping, overrides=parse_overrides(args.set))
    kafka = kafka_properties(args.kafka)
    options = ConsumeOptions(brokers=args.brokers, topic=args.topic, group=args.group, dead_letter_topic=args.dead_letter_topic,
                             dead_letter_file=args.dead_letter, rate=args.rate, timeout=args.timeout, retry_for=args.retry_for,
                             linger=args.linger, session_timeout=args.session_timeout, kafka=kafka)
    return consume(mappings, options)


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from engine.runtime.serve.queue import Queue

    queue = Queue(args.data_dir, exclusive=False)
    try:
        letters = list(queue.dead_letters())
        if args.action == "list":
            for letter in letters:
                sys.stdout.buffer.write(orjson.dumps(letter) + b"\n")
            return EXIT_OK
        if args.mapping:  # requeue only what the (corrected) mapping now maps without an error
            pipeline = Pipeline(load_mapping_file(args.mapping, require_env=False))
            letters = [l for l in letters if all(o.status == "ok" for o in pipeline.run(l["event"]))]
        queued = queue.requeue([letter["id"] for letter in letters])
        print(orjson.dumps({"dead_letters": len(letters), "events_queued": sum(queued.values()), "connections": queued}).decode())
        return EXIT_OK
    finally:
        queue.close()


def cmd_emulator(args: argparse.Namespace) -> int:
    status: int = load_emulator(args.slug).main(args.options)
    return status


def cmd_new_destination(args: argparse.Namespace) -> int:
    folder = new_destination(args.name, Path(args.dir))
    print(f"created {folder}: check it with `actionmap validate {folder}`, test it with `actionmap test {folder}`")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.tools.demo import run_demo

    return run_demo(args.events, args.mapping)


def _mapping_options(p: argparse.ArgumentParser) -> None:
    _connections_option(p)
    p.add_argument("--set", action="append", default=[], metavar="[CONNECTION:]NAME=VALUE",
                   help="override a setting: of every connection whose destination has it, or of one connection")


def _connections_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--mapping", required=True, action="append", metavar="MAPPING",
                   help="a mapping file: one connection (repeat for several destinations)")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _delivery_options(p: argparse.ArgumentParser) -> None:
    _mapping_options(p)
    p.add_argument("--dead-letter", metavar="FILE", help="append dead letters (NDJSON) to FILE")
    p.add_argument("--dry-run", action="store_true", help="print the requests that would be sent (secrets masked); send nothing")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S", help="client-side pace per destination (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="SECONDS",
                   help="give up on one request's answer after this long and retry it (default 30)")
    p.add_argument("--retry-for", type=_positive, default=RetryPolicy.max_duration, metavar="SECONDS",
                   help="retry a batch for at most this long, then dead-letter it as 'retries exhausted' (default 900)")
    p.add_argument("--backoff", type=_positive, default=RetryPolicy.base, metavar="SECONDS",
                   help="the first retry waits up to this long (full jitter), doubling per attempt up to 30 s (default 0.5)")


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

    p = command("validate", cmd_validate, "check mapping files and plugin folders; errors as FILE:LINE:COL: message")
    p.add_argument("files", nargs="+", metavar="FILE")
    command("destinations", cmd_destinations, "list the installed destination plugins and their actions")
    p = command("docs", cmd_docs, "print the Markdown documentation of one destination, or the plugin key reference")
    p.add_argument("slug", metavar="SLUG", nargs="?")
    p.add_argument("--keys", action="store_true", help="print every key of plugin and mapping files, generated from schemas/")
    p.add_argument("--update", metavar="README", help="rewrite the generated key reference inside README")
    p = command("preview", cmd_preview, "map events without sending: one JSON line per (event, connection, subscription) that matched")
    _connections_option(p)
    p.add_argument("events", nargs="?", metavar="EVENTS", help="a JSON, JSON-array or NDJSON file (.gz too); stdin when absent or -")
    p.add_argument("--all", action="store_true", help='also print "filtered" lines for subscriptions an event does not feed')
    p.add_argument("--explain", action="store_true", help="say where each field's value came from")
    p = command("test", cmd_test, "run the tests: of mapping files and the tests/ of plugin folders; prints N passed, M failed")
    p.add_argument("files", nargs="+", metavar="MAPPING_OR_PLUGIN")
    p = command("send", cmd_send, "deliver events; the last line of output is a JSON summary; exit 0, 2 (some invalid or dead-lettered) or 1")
    p.add_argument("events", nargs="?", metavar="EVENTS", help="a JSON, JSON-array or NDJSON file (.gz too); stdin when absent or -")
    _delivery_options(p)
    p = command("replay", cmd_replay, "send dead letters again through a (possibly corrected) mapping")
    p.add_argument("dead_letters", metavar="DEAD_LETTERS")
    _delivery_options(p)
    p = command("check", cmd_check, "run the destination's credential check: exit 0 valid, 1 refused, 2 unreachable")
    _mapping_options(p)
    p = command("new-destination", cmd_new_destination, "scaffold a plugin folder that validates and passes its test")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", default=".", help="where to create the folder (default: here)")
    p = command("serve", cmd_serve, "the durable service: a Segment-compatible HTTP intake, a local queue, delivery workers")
    _mapping_options(p)  # -m repeatable: one process delivers every event to each connection, each from its own lane
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free one)")
    p.add_argument("--data-dir", default="actionmap-data", metavar="DIR", help="where the queue lives (default ./actionmap-data)")
    p.add_argument("--write-key", action="append", default=[], metavar="KEY",
                   help="a write key clients authenticate with (repeatable; also ACTIONMAP_WRITE_KEYS=K1,K2 "
                        "and the mapping file's write_keys)")
    p.add_argument("--workers", type=int, default=2, help="delivery threads per connection (default 2)")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S",
                   help="pace to each connection's destination, its workers together (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=_positive, default=10.0, metavar="SECONDS", help="give up on one request's answer after this long and retry it (default 10)")
    p.add_argument("--retry-for", type=_positive, default=86400.0, metavar="SECONDS",
                   help="keep retrying an event the destination fails on for this long after it arrived, then dead-letter it (default 86400)")
    p.add_argument("--credential-recheck", type=_positive, default=30.0, metavar="SECONDS",
                   help="while a destination refuses its credential, check it again this often (default 30)")
    p = command("consume", cmd_consume, "a worker in a Kafka consumer group: reads events, delivers, commits offsets only once delivered or dead-lettered")
    _mapping_options(p)
    p.add_argument("--brokers", required=True, metavar="HOST:PORT[,...]", help="the Kafka bootstrap servers")
    p.add_argument("--topic", required=True, help="the topic of events (JSON objects, keyed by customer id)")
    p.add_argument("--group", required=True, help="the consumer group: every worker of one deployment uses the same")
    p.add_argument("--dead-letter-topic", metavar="TOPIC", help="produce dead letters to TOPIC (it must exist)")
    p.add_argument("--dead-letter", metavar="FILE", help="append dead letters (NDJSON) to FILE instead (default ./actionmap-dead-letters.ndjson)")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S", help="pace to the destination for this worker (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=_positive, default=30.0, metavar="SECONDS", help="give up on one request's answer after this long and retry it (default 30)")
    p.add_argument("--retry-for", type=_positive, default=RetryPolicy.max_duration, metavar="SECONDS",
                   help="retry a batch for at most this long, then dead-letter it as 'retries exhausted' (default 900)")
    p.add_argument("--linger", type=_positive, default=0.5, metavar="SECONDS", help="send a batch that is not full after this long (default 0.5)")
    p.add_argument("--session-timeout", type=_positive, metavar="SECONDS",
                   help="how long the group waits for a silent worker before giving its partitions to another (Kafka's default 45)")
    p.add_argument("-X", dest="kafka", action="append", default=[], metavar="PROPERTY=VALUE",
                   help="a librdkafka property for both clients, e.g. -X security.protocol=SASL_SSL (repeatable)")
    p = command("dead-letters", cmd_dead_letters, "list the service's dead letters (NDJSON) or queue them again for delivery")
    p.add_argument("action", choices=["list", "replay"])
    p.add_argument("--data-dir", default="actionmap-data", metavar="DIR", help="the service's data dir (default ./actionmap-data)")
    p.add_argument("-m", "--mapping", metavar="MAPPING", help="replay: queue only the dead letters this mapping now maps without an error")
    p = command("demo", cmd_demo, "the main job end to end: emulator, example events, delivery, summary")
    p.add_argument("events", nargs="?", metavar="EVENTS", help="default: the packaged examples/track.ndjson")
    p.add_argument("-m", "--mapping", metavar="MAPPING", help="default: the packaged mappings/metronome.yaml")
    p = command("emulator", cmd_emulator, "run a local stand-in of a destination's API (metronome)")
    p.add_argument("slug", metavar="SLUG")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the emulator's options (--port, --token, --fault-rate, ...)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as error:
        _print_error(error)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C outside a delivery (which stops cleanly and prints its summary): no traceback
        print("actionmap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # a missing input file, an unwritable dead-letter file: say which, no traceback
        print(f"actionmap: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
