"""The long-running and local-stand-in commands: serve, consume, dead-letters, demo, emulator."""

from __future__ import annotations

import argparse
import sys

import orjson

from engine.cli.common import Command, EXIT_OK, mapping_options, positive
from engine.config.connections import load_connections, parse_overrides
from engine.config.definitions import load_emulator
from engine.config.mappingfile import load_mapping_file
from engine.delivery import RetryPolicy
from engine.errors import ConfigError
from engine.pipeline import Pipeline


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


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.tools.demo import run_demo

    return run_demo(args.events, args.mapping)



def register(command: Command) -> None:
    p = command("serve", cmd_serve, "the durable service: a Segment-compatible HTTP intake, a local queue, delivery workers")
    mapping_options(p)  # -m repeatable: one process delivers every event to each connection, each from its own lane
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free one)")
    p.add_argument("--data-dir", default="actionmap-data", metavar="DIR", help="where the queue lives (default ./actionmap-data)")
    p.add_argument("--write-key", action="append", default=[], metavar="KEY",
                   help="a write key clients authenticate with (repeatable; also ACTIONMAP_WRITE_KEYS=K1,K2 "
                        "and the mapping file's write_keys)")
    p.add_argument("--workers", type=int, default=2, help="delivery threads per connection (default 2)")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S",
                   help="pace to each connection's destination, its workers together (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=positive, default=10.0, metavar="SECONDS", help="give up on one request's answer after this long and retry it (default 10)")
    p.add_argument("--retry-for", type=positive, default=86400.0, metavar="SECONDS",
                   help="keep retrying an event the destination fails on for this long after it arrived, then dead-letter it (default 86400)")
    p.add_argument("--credential-recheck", type=positive, default=30.0, metavar="SECONDS",
                   help="while a destination refuses its credential, check it again this often (default 30)")
    p = command("consume", cmd_consume, "a worker in a Kafka consumer group: reads events, delivers, commits offsets only once delivered or dead-lettered")
    mapping_options(p)
    p.add_argument("--brokers", required=True, metavar="HOST:PORT[,...]", help="the Kafka bootstrap servers")
    p.add_argument("--topic", required=True, help="the topic of events (JSON objects, keyed by customer id)")
    p.add_argument("--group", required=True, help="the consumer group: every worker of one deployment uses the same")
    p.add_argument("--dead-letter-topic", metavar="TOPIC", help="produce dead letters to TOPIC (it must exist)")
    p.add_argument("--dead-letter", metavar="FILE", help="append dead letters (NDJSON) to FILE instead (default ./actionmap-dead-letters.ndjson)")
    p.add_argument("--rate", type=float, default=5000.0, metavar="EVENTS_PER_S", help="pace to the destination for this worker (default 5000; 0 = unpaced)")
    p.add_argument("--timeout", type=positive, default=30.0, metavar="SECONDS", help="give up on one request's answer after this long and retry it (default 30)")
    p.add_argument("--retry-for", type=positive, default=RetryPolicy.max_duration, metavar="SECONDS",
                   help="retry a batch for at most this long, then dead-letter it as 'retries exhausted' (default 900)")
    p.add_argument("--linger", type=positive, default=0.5, metavar="SECONDS", help="send a batch that is not full after this long (default 0.5)")
    p.add_argument("--session-timeout", type=positive, metavar="SECONDS",
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
