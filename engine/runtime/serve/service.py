"""``actionmap serve``: the intake, the durable queue and the workers that deliver from it, in one process.

Every ``-m MAPPING`` is a connection with its own lane in the queue, its own
workers and its own credential gate: the intake commits an event once, and each
connection delivers it from its lane, so one destination that is down or
refuses its credential never delays another.

Each worker (:mod:`engine.runtime.serve.workers`) claims a batch of its lane's
events with a lease and settles their fates in one transaction. A crash at any
point leaves an event queued or settled, never lost; it may be sent again,
which the destination's idempotency key (the event's ``messageId``) makes harmless.

SIGTERM or SIGINT: the intake stops accepting and finishes the requests it has;
workers finish their batch or release it, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import httpx
import uvicorn

from engine.config.connections import Secrets
from engine.config.mappingfile import MappingFile
from engine.delivery import Sender, TokenBucket, check_credential
from engine.delivery.requests import sessions_for
from engine.errors import ConfigError
from engine.runtime.observability import Health, Metrics, log
from engine.runtime.serve.intake import IntakeProtocol, create_app
from engine.runtime.serve.queue import Queue
from engine.runtime.serve.workers import CREDENTIAL_RECHECK, IN_PROCESS_RETRY, CredentialGate, Worker

WRITE_KEYS_ENV = "ACTIONMAP_WRITE_KEYS"


def write_keys(given: Sequence[str], from_file: Sequence[str] = (), env: Mapping[str, str] = os.environ) -> list[str]:
    """Every accepted write key: ``--write-key``, the mapping file's ``write_keys``, ``ACTIONMAP_WRITE_KEYS``
    (comma-separated), all at once, so a key can be rotated in by adding it anywhere; none is an error."""
    env_keys = [k.strip() for k in env.get(WRITE_KEYS_ENV, "").split(",")]
    keys = [k for k in (*given, *from_file, *env_keys) if k]
    if not keys:
        raise ConfigError(
            f"no write key: give one with --write-key KEY (repeatable), {WRITE_KEYS_ENV}=KEY1,KEY2 or write_keys: "
            "in the mapping file (the environment and ${VAR} keep it out of the process list); "
            "clients send it as the user name of HTTP Basic auth"
        )
    return list(dict.fromkeys(keys))


class _JsonLogHandler(logging.Handler):
    """uvicorn's own warnings and errors as JSON lines, like everything else the service logs."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        log(f"server_{record.levelname.lower()}", **fields)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a taken port is a clear startup error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port") from None
    return sock


def _credential_check(mapping: MappingFile) -> Callable[[], tuple[str, str]]:
    return lambda: check_credential(mapping)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "actionmap-data"
    workers: int = 2  # per connection
    rate: float = 5000.0  # events per second to each destination, shared by its connection's workers; 0 = unpaced
    timeout: float = 10.0
    retry_for: float = 86400.0
    credential_recheck: float = CREDENTIAL_RECHECK


def serve(mappings: Sequence[MappingFile], keys: Sequence[str], options: ServeOptions) -> int:
    """Run the service for the deployment's connections (one mapping file each) until SIGTERM or SIGINT; 0 after a
    clean stop."""
    if options.workers < 1:
        raise ConfigError(f"--workers {options.workers}: at least one worker is needed to deliver")
    if not mappings:
        raise ConfigError("no mapping: give at least one -m MAPPING (one per connection)")
    names = [m.name for m in mappings]
    queue = Queue(options.data_dir, names)
    try:
        sock = _listen(options.host, options.port)
        if queue.upgraded_from is not None:
            log("queue_upgraded", data_dir=str(queue.data_dir), schema=queue.upgraded_from, connection=names[0],
                action=f"the queued events, counters and dead letters of the older queue are now connection {names[0]}'s")
        resumed = queue.release_all()
        for orphan, rows in queue.orphans().items():
            log("lane_orphaned", connection=orphan, events=rows,
                action=f"kept, not delivered: no -m mapping is the connection {orphan!r}. Start the service with that "
                       f"mapping again, beside the others, to deliver them (a mapping renamed since: give it back "
                       f"name: {orphan}); no other connection ever takes them")
        health = Health(names)
        metrics = Metrics(queue, health)
        stop = threading.Event()
        secrets = Secrets(mappings)

        workers = []
        for mapping in mappings:
            gate = CredentialGate(health, mapping.name, _credential_check(mapping), options.credential_recheck)
            pace = TokenBucket(options.rate) if options.rate > 0 else None  # the connection's workers together
            sessions = sessions_for(mapping)  # and one session token
            for number in range(options.workers):
                timeout = httpx.Timeout(options.timeout, connect=min(options.timeout, 5.0))
                sender = Sender(mapping, pace=pace, wait=stop.wait, timeout=timeout, policy=IN_PROCESS_RETRY, sessions=sessions)
                name = f"worker-{number + 1}" if len(mappings) == 1 else f"{mapping.name}-worker-{number + 1}"
                workers.append(Worker(name, mapping, queue, sender, metrics, gate, stop, options.retry_for, secrets))
        uvicorn_log = logging.getLogger("uvicorn")
        uvicorn_log.handlers[:] = [_JsonLogHandler(logging.WARNING)]
        uvicorn_log.propagate = False
        server = uvicorn.Server(uvicorn.Config(
            create_app(queue, keys, metrics, health), log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=10, http=IntakeProtocol,  # h11 with a deadline on request heads (slow clients)
        ))
        # uvicorn handles the signals while it serves and raises them again once it has stopped: this
        # handler takes that second delivery (and a signal during startup) instead of the default exit
        previous = {sig: signal.signal(sig, lambda *_: setattr(server, "should_exit", True)) for sig in (signal.SIGTERM, signal.SIGINT)}
        host, port = sock.getsockname()[:2]
        stats = queue.stats()
        log("serving", url=f"http://{host}:{port}", data_dir=str(queue.data_dir),
            connections={m.name: {"destination": m.destination.name, "subscriptions": [s.name for s in m.subscriptions]}
                         for m in mappings},
            workers=options.workers, queued={name: stats.connections[name].depth for name in names},
            resumed_leases=resumed)
        for worker in workers:
            worker.start()
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log("stopping", action="intake closed; workers finish or release their batch")
            stop.set()
            for worker in workers:
                worker.join()
                worker.sender.close()
        stats = queue.stats()
        log("stopped", queued={name: stats.connections[name].depth for name in names})
    finally:
        queue.close()
    return 0
