"""The queue of ``actionmap serve`` with one lane per connection (issue 14), on real SQLite files.

An event is stored once and delivered by each connection from its own lane; the
counters add up per connection across restarts; an event is deleted exactly
when no lane holds it any more. A queue file of schema 1 (one queue, before
connections) becomes the first connection's lane. ``/metrics`` and ``/health``
speak per connection.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.errors import ConfigError
from engine.runtime.observability import Health, Metrics
from engine.runtime.serve.intake import create_app
from engine.delivery import DeadLetter
from engine.runtime.serve.queue import CATEGORIES, COUNTERS, Later, Queue
from engine.runtime.serve.storage import DB_NAME, SCHEMA_VERSION
from tests.conftest import Run
from tests.test_serve import AUTH, WRITE_KEY, Service, TestClient, metrics_by_connection, track, write_mapping

CONNECTIONS = ("alpha", "beta")


def letter(event_id: int, body: bytes, subscription: str = "s1", reason: str = "rejected") -> tuple[bytes, DeadLetter]:
    """A dead letter of the queued event ``event_id``, with the event's body as it was received."""
    return body, DeadLetter(subscription, event_id, None, {"p": event_id}, reason, 400, 1, "2026-01-01T00:00:00.000Z")


def assert_adds_up(queue: Queue) -> None:
    for name, lane in queue.stats().connections.items():
        assert lane.counters["received"] == sum(lane.counters[c] for c in CATEGORIES) + lane.depth, (name, lane)


# -- the state machine -------------------------------------------------------------------


@dataclass
class _Row:
    due: float
    lease: float = 0.0
    attempts: int = 0
    settled: dict[str, str] = field(default_factory=dict)


DECISIONS = ("delivered", "filtered", "invalid", "dead_lettered", "later", "retry")


class LanesMachine(RuleBasedStateMachine):
    """put / claim / settle / requeue / reopen on two connections, against a model of every lane row."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="actionmap-lanes-"))
        self.now = 1_000_000.0
        self.queue = self._open()
        self.body: dict[int, bytes] = {}  # every event id ever stored -> its body
        self.received: dict[int, float] = {}
        self.lanes: dict[str, dict[int, _Row]] = {c: {} for c in CONNECTIONS}
        self.counts: dict[str, Counter[str]] = {c: Counter() for c in CONNECTIONS}
        self.claimed: dict[str, set[int]] = {c: set() for c in CONNECTIONS}  # ids ever claimed there, gone ones too
        self.letters: list[tuple[str, int, str]] = []  # (connection, event id, subscription), oldest first
        self.seen = 0  # the highest event id read back
        self.serial = 0

    def _open(self) -> Queue:
        return Queue(self.dir, CONNECTIONS, clock=lambda: self.now)

    def teardown(self) -> None:
        self.queue.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """A read through a connection of its own, as another process would (WAL lets it)."""
        with closing(sqlite3.connect(self.dir / DB_NAME)) as db:
            return db.execute(statement, params).fetchall()

    def _new_events(self) -> list[tuple[int, bytes]]:
        rows = self._sql("SELECT id, body FROM events WHERE id > ? ORDER BY id", self.seen)
        if rows:
            self.seen = rows[-1][0]
        return rows

    def _queued(self, event_id: int, connections: Any) -> None:
        for connection in connections:
            self.lanes[connection][event_id] = _Row(due=self.now)
            self.counts[connection]["received"] += 1

    @rule(n=st.integers(1, 4))
    def put(self, n: int) -> None:
        bodies = [orjson.dumps({"n": self.serial + i}) for i in range(n)]
        self.serial += n
        self.queue.put(bodies)
        new = self._new_events()
        assert [body for _, body in new] == bodies, "each event is stored once, whatever the connections"
        for event_id, body in new:
            self.body[event_id], self.received[event_id] = body, self.now
            self._queued(event_id, CONNECTIONS)

    @rule(connection=st.sampled_from(CONNECTIONS), limit=st.integers(1, 5), lease=st.sampled_from([0.0, 5.0, 50.0]))
    def claim(self, connection: str, limit: int, lease: float) -> None:
        lane = self.lanes[connection]
        due = sorted((row.due, i) for i, row in lane.items() if row.due <= self.now and row.lease <= self.now)
        expected = sorted(i for _, i in due[:limit])
        got = self.queue.claim(connection, limit, lease)
        assert [c.id for c in got] == expected
        for claimed in got:
            row = lane[claimed.id]
            row.lease, row.attempts = self.now + lease, row.attempts + 1
            assert (claimed.body, claimed.received, claimed.attempts, claimed.settled) == (
                self.body[claimed.id], self.received[claimed.id], row.attempts, row.settled)
            self.claimed[connection].add(claimed.id)

    @precondition(lambda self: any(self.claimed.values()))
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        connection = data.draw(st.sampled_from([c for c in CONNECTIONS if self.claimed[c]]))
        ids = data.draw(st.lists(st.sampled_from(sorted(self.claimed[connection])), min_size=1, max_size=4, unique=True))
        finished: dict[int, Any] = {}
        later: dict[int, Later] = {}
        letters: list[tuple[bytes, DeadLetter]] = []
        lane = self.lanes[connection]
        for event_id in ids:
            decision = data.draw(st.sampled_from(DECISIONS))
            if decision in ("later", "retry"):
                settled = data.draw(st.sampled_from([{}, {"s1": "invalid"}]))
                later[event_id] = Later(self.now + data.draw(st.sampled_from([0.0, 10.0])), settled, retried=decision == "retry")
                self.counts[connection]["retried"] += decision == "retry"  # counted as today, whether the row is there or not
                if event_id in lane:
                    row = lane[event_id]
                    row.due, row.lease, row.settled = later[event_id].due, 0.0, dict(settled)
                continue
            finished[event_id] = decision
            for number in range(data.draw(st.integers(0, 2)) if decision in ("invalid", "dead_lettered") else 0):
                letters.append(letter(event_id, self.body[event_id], f"s{number + 1}"))
                self.letters.append((connection, event_id, f"s{number + 1}"))
            if lane.pop(event_id, None) is not None:  # a row already gone is not counted twice
                self.counts[connection][decision] += 1
        self.queue.settle(connection, finished, letters, later)

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        stored = list(self.queue.dead_letters())
        chosen = data.draw(st.lists(st.sampled_from(range(len(stored))), unique=True, max_size=4)) if stored else []
        picked = [stored[i] for i in sorted(chosen)]
        by_event: dict[int, dict[str, None]] = {}
        for record in picked:
            by_event.setdefault(record["event_id"], {})[record["connection"]] = None
        queued = self.queue.requeue([record["id"] for record in picked])
        expected: Counter[str] = Counter(c for connections in by_event.values() for c in connections)
        assert queued == dict(expected)
        new = self._new_events()
        assert [body for _, body in new] == [self.body[event_id] for event_id in by_event], "each original event once"
        for (new_id, body), connections in zip(new, by_event.values()):
            self.body[new_id], self.received[new_id] = body, self.now
            self._queued(new_id, connections)
        self.letters = [entry for i, entry in enumerate(self.letters) if i not in set(chosen)]

    @rule(seconds=st.sampled_from([1.0, 10.0, 100.0]))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(release=st.booleans())
    def reopen(self, release: bool) -> None:
        self.queue.close()
        self.queue = self._open()
        if release:
            leased = sum(row.lease > 0 for lane in self.lanes.values() for row in lane.values())
            assert self.queue.release_all() == leased
            for lane in self.lanes.values():
                for row in lane.values():
                    row.lease = 0.0

    @invariant()
    def each_connection_adds_up_and_matches_the_model(self) -> None:
        stats = self.queue.stats()
        assert list(stats.connections) == list(CONNECTIONS)
        for connection, lane in stats.connections.items():
            counts = self.counts[connection]
            assert lane.counters == {name: counts[name] for name in COUNTERS}
            assert lane.depth == len(self.lanes[connection])
            assert lane.counters["received"] == sum(lane.counters[c] for c in CATEGORIES) + lane.depth
            assert lane.oldest == (self.received[min(self.lanes[connection])] if self.lanes[connection] else None)

    @invariant()
    def an_event_is_gone_exactly_when_both_lanes_are_done(self) -> None:
        held = set().union(*self.lanes.values())
        assert {row[0] for row in self._sql("SELECT id FROM events")} == held
        assert self.queue.stats().events == len(held)
        rows = {(c, i): (due, lease, attempts) for c, i, due, lease, attempts in
                self._sql("SELECT connection, event_id, due, lease, attempts FROM lanes")}
        assert rows == {(c, i): (r.due, r.lease, r.attempts) for c, lane in self.lanes.items() for i, r in lane.items()}

    @invariant()
    def dead_letters_name_their_connection(self) -> None:
        stored = [(l["connection"], l["event_id"], l["subscription"]) for l in self.queue.dead_letters()]
        assert stored == self.letters


LanesMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
test_lanes_state_machine = LanesMachine.TestCase


# -- lanes -------------------------------------------------------------------------------


@pytest.fixture
def lanes(tmp_path: Path) -> Iterator[Queue]:
    queue = Queue(tmp_path / "data", CONNECTIONS)
    yield queue
    queue.close()


def test_each_connection_claims_only_its_own_rows(lanes: Queue) -> None:
    queue = lanes
    queue.put([b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    alpha = queue.claim("alpha", 10, 60)
    assert [c.body for c in alpha] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert queue.claim("alpha", 10, 60) == []  # leased
    beta = queue.claim("beta", 2, 60)
    assert [c.id for c in beta] == [c.id for c in alpha][:2] and all(c.attempts == 1 for c in beta)

    queue.settle("alpha", finished={c.id: "delivered" for c in alpha})
    stats = queue.stats()
    assert stats.events == 3, "beta still holds them: stored once, deleted once no lane holds them"
    assert (stats.connections["alpha"].depth, stats.connections["beta"].depth) == (0, 3)
    assert queue.claim("alpha", 10, 60) == [], "alpha's rows are gone, beta's are not alpha's to claim"

    queue.settle("beta", later={beta[0].id: Later(0.0, {"s1": "invalid"}, retried=True)}, finished={beta[1].id: "filtered"})
    (third,) = [c for c in queue.claim("beta", 10, 60) if c.id == alpha[2].id]
    again = queue.claim("beta", 10, 60)
    assert again == []  # every beta row is leased now
    queue.settle("beta", finished={alpha[2].id: "delivered", beta[0].id: "invalid"})
    stats = queue.stats()
    assert stats.events == 0 and third.attempts == 1
    assert stats.connections["alpha"].counters == {"received": 3, "delivered": 3, "filtered": 0, "invalid": 0,
                                                    "dead_lettered": 0, "retried": 0}
    assert stats.connections["beta"].counters == {"received": 3, "delivered": 1, "filtered": 1, "invalid": 1,
                                                   "dead_lettered": 0, "retried": 1}
    assert_adds_up(queue)


def test_a_lane_row_retried_keeps_its_attempts_and_what_is_decided(lanes: Queue) -> None:
    lanes.put([b"{}"])
    (first,) = lanes.claim("beta", 1, 60)
    lanes.settle("beta", later={first.id: Later(0.0, {"a": "delivered"}, retried=True)})
    (second,) = lanes.claim("beta", 1, 60)
    assert (second.attempts, second.settled) == (2, {"a": "delivered"})
    (other,) = lanes.claim("alpha", 1, 60)
    assert (other.attempts, other.settled) == (1, {})


def test_put_needs_connections_and_claim_a_served_one(tmp_path: Path, lanes: Queue) -> None:
    with pytest.raises(ValueError, match="connection 'gamma' is not one of"):
        lanes.claim("gamma", 1, 60)
    with pytest.raises(ValueError, match="distinct"):
        Queue(tmp_path / "other", ["a", "a"])
    bare = Queue(tmp_path / "bare", exclusive=False)
    try:
        with pytest.raises(ValueError, match="needs the deployment's connections"):
            bare.put([b"{}"])
        assert bare.stats().connections == {} and bare.stats().events == 0
    finally:
        bare.close()


def test_requeue_puts_each_dead_letter_back_at_its_own_connection(lanes: Queue) -> None:
    queue = lanes
    queue.put([b'{"n": 1}', b'{"n": 2}'])
    one, two = queue.claim("alpha", 2, 60)
    queue.settle("alpha", finished={one.id: "dead_lettered", two.id: "invalid"},
                 letters=[letter(one.id, one.body, "s1"), letter(one.id, one.body, "s2"), letter(two.id, two.body)])
    (beta_one,) = [c for c in queue.claim("beta", 2, 60) if c.id == one.id]
    queue.settle("beta", finished={one.id: "dead_lettered", two.id: "delivered"}, letters=[letter(one.id, one.body)])
    assert queue.stats().events == 0
    stored = list(queue.dead_letters())
    assert [(l["connection"], l["event_id"], l["subscription"]) for l in stored] == [
        ("alpha", one.id, "s1"), ("alpha", one.id, "s2"), ("alpha", two.id, "s1"), ("beta", one.id, "s1")]
    assert stored[0]["event"] == {"n": 1} and stored[0]["payload"] == {"p": one.id}

    # event 1 at two subscriptions of alpha and at beta; event 2 at alpha only
    assert queue.requeue([l["id"] for l in stored]) == {"alpha": 2, "beta": 1}
    stats = queue.stats()
    assert stats.events == 2 and (stats.connections["alpha"].depth, stats.connections["beta"].depth) == (2, 1)
    assert [c.body for c in queue.claim("alpha", 10, 60)] == [b'{"n": 1}', b'{"n": 2}']
    assert [c.body for c in queue.claim("beta", 10, 60)] == [b'{"n": 1}']
    assert list(queue.dead_letters()) == []
    assert_adds_up(queue)
    assert beta_one.id == one.id


# -- orphans ------------------------------------------------------------------------------


def test_a_connection_left_out_of_the_deployment_keeps_its_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queue = Queue(data, CONNECTIONS)
    queue.put([b'{"n": 1}', b'{"n": 2}'])
    queue.close()

    queue = Queue(data, ["alpha"])
    try:
        assert queue.orphans() == {"beta": 2}
        with pytest.raises(ValueError):
            queue.claim("beta", 10, 60)
        rows = queue.claim("alpha", 10, 60)
        queue.settle("alpha", finished={row.id: "delivered" for row in rows})
        stats = queue.stats()
        assert list(stats.connections) == ["alpha", "beta"] and stats.connections["beta"].depth == 2
        assert stats.events == 2, "beta's events are kept for beta"
        assert_adds_up(queue)
    finally:
        queue.close()

    queue = Queue(data, ["beta", "alpha"])
    try:
        assert queue.orphans() == {}
        assert [row.body for row in queue.claim("beta", 10, 60)] == [b'{"n": 1}', b'{"n": 2}']
    finally:
        queue.close()


def test_the_service_logs_a_lane_it_does_not_serve(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "data", ["mapping", "retired"])
    queue.put([orjson.dumps(track(f"o-{i}")) for i in range(3)])
    queue.settle("mapping", finished={row.id: "filtered" for row in queue.claim("mapping", 10, 60)})
    queue.close()
    running = Service(tmp_path, write_mapping(tmp_path / "mapping.yaml", "http://127.0.0.1:9"))
    try:
        running.start()
        assert running.terminate() == 0
    finally:
        running.stop()
    (orphaned,) = [e for e in running.logs() if e["event"] == "lane_orphaned"]
    assert (orphaned["connection"], orphaned["events"]) == ("retired", 3)
    assert "Start the service with that mapping again" in orphaned["action"]


# -- schema 1 -----------------------------------------------------------------------------


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL, received REAL NOT NULL, due REAL NOT NULL,
    lease REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, settled BLOB);
CREATE INDEX events_due ON events (due, id);
CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL, subscription TEXT NOT NULL,
    event BLOB NOT NULL, payload BLOB, reason TEXT NOT NULL, status INTEGER, attempts INTEGER NOT NULL, time TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', 1);
"""  # the schema actionmap wrote before connections (engine/queue.py, SCHEMA_VERSION = 1), written out


def v1_queue(data: Path) -> Path:
    """A schema-1 queue file: 12 events received, 3 still queued (one leased, one retried), 2 dead letters.

    Ids past the rows that are left were given and deleted, as a running queue does: they must never be given again.
    """
    data.mkdir(parents=True)
    path = data / DB_NAME
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(V1_SCHEMA)
        counters = {"received": 12, "delivered": 5, "filtered": 2, "invalid": 1, "dead_lettered": 1, "retried": 4}
        db.executemany("INSERT INTO counters VALUES (?, ?)", counters.items())
        for n in range(1, 15):
            db.execute("INSERT INTO events (id, body, received, due) VALUES (?, ?, ?, ?)",
                       (n, f'{{"n": {n}}}'.encode(), 100.0 + n, 100.0 + n))
        db.execute("DELETE FROM events WHERE id NOT IN (4, 9, 11)")  # 14 was the last id given
        db.execute("UPDATE events SET lease = 9e9, attempts = 1 WHERE id = 9")  # a dead worker's lease
        db.execute("UPDATE events SET due = 150.0, attempts = 2, settled = ? WHERE id = 11", (b'{"Usage events": "invalid"}',))
        for n, event_id in enumerate((3, 7, 8), start=1):
            db.execute("INSERT INTO dead_letters VALUES (?, ?, 'Usage events', ?, ?, 'rejected', 400, 1, '2026-01-01T00:00:00.000Z')",
                       (n, event_id, f'{{"n": {event_id}}}'.encode(), b'{"p": 1}'))
        db.execute("DELETE FROM dead_letters WHERE id = 3")  # replayed: id 3 was given
        db.commit()
    return path


def test_a_schema_1_queue_becomes_the_first_connections_lane(tmp_path: Path) -> None:
    v1_queue(tmp_path / "data")
    queue = Queue(tmp_path / "data", ["metronome", "webhook"], clock=lambda: 1000.0)
    try:
        assert queue.upgraded_from == 1
        stats = queue.stats()
        first, second = stats.connections["metronome"], stats.connections["webhook"]
        assert first.counters == {"received": 12, "delivered": 5, "filtered": 2, "invalid": 1, "dead_lettered": 1, "retried": 4}
        assert (first.depth, first.oldest, stats.events) == (3, 104.0, 3)
        assert second == type(second)({name: 0 for name in COUNTERS}, 0, None), "the other connection starts empty"
        assert_adds_up(queue)
        assert [(l["id"], l["connection"], l["event_id"], l["event"]) for l in queue.dead_letters()] == [
            (1, "metronome", 3, {"n": 3}), (2, "metronome", 7, {"n": 7})]

        assert queue.claim("webhook", 10, 60) == []
        claimed = {row.id: row for row in queue.claim("metronome", 10, 60)}
        assert sorted(claimed) == [4, 11], "9 is still leased by the dead worker, until the service frees it"
        assert (claimed[11].attempts, claimed[11].settled, claimed[11].body) == (3, {"Usage events": "invalid"}, b'{"n": 11}')
        assert queue.release_all() == 3
        assert [row.id for row in queue.claim("metronome", 10, 60)] == [4, 9, 11]

        queue.put([b'{"n": "new"}'])
        (new_id,) = {row[0] for row in _read(tmp_path, "SELECT id FROM events")} - {4, 9, 11}
        assert new_id == 15, "an id the old queue gave is never given again"
        queue.settle("metronome", finished={4: "dead_lettered"}, letters=[letter(4, b'{"n": 4}')])
        assert max(l["id"] for l in queue.dead_letters()) == 4
        assert queue.requeue([1]) == {"metronome": 1}
        assert_adds_up(queue)
    finally:
        queue.close()
    assert _read(tmp_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(SCHEMA_VERSION,)]
    assert {row[0] for row in _read(tmp_path, "SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "meta", "events", "lanes", "dead_letters", "counters", "sqlite_sequence"}
    reopened = Queue(tmp_path / "data", ["webhook", "metronome"])  # upgraded once: the order matters no more
    try:
        assert reopened.upgraded_from is None and reopened.stats().connections["metronome"].counters["received"] == 14
        assert_adds_up(reopened)
    finally:
        reopened.close()


def _read(tmp_path: Path, statement: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(tmp_path / "data" / DB_NAME)) as db:
        return db.execute(statement).fetchall()


def test_a_schema_1_queue_is_refused_without_connections_and_left_as_it_was(
    tmp_path: Path, cli: Callable[..., Run]
) -> None:
    path = v1_queue(tmp_path / "data")
    before = _read(tmp_path, "SELECT * FROM events ORDER BY id"), _read(tmp_path, "SELECT * FROM sqlite_master")
    with pytest.raises(ConfigError, match=r"schema 1, before connections.*start `actionmap serve` on this data dir once"):
        Queue(tmp_path / "data", exclusive=False)
    run = cli("dead-letters", "list", "--data-dir", str(tmp_path / "data"))
    assert run.code == 1 and str(path) in run.err and "start `actionmap serve`" in run.err and run.out == ""
    assert (_read(tmp_path, "SELECT * FROM events ORDER BY id"), _read(tmp_path, "SELECT * FROM sqlite_master")) == before


def test_a_queue_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Queue(tmp_path / "data", CONNECTIONS).close()
    with closing(sqlite3.connect(tmp_path / "data" / DB_NAME)) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
        db.commit()
    with pytest.raises(ConfigError, match=f"written by a newer actionmap \\(schema {SCHEMA_VERSION + 1}"):
        Queue(tmp_path / "data", CONNECTIONS)


# -- /metrics and /health per connection ------------------------------------------------


def _intake(queue: Queue, health: Health) -> tuple[TestClient, Metrics]:
    metrics = Metrics(queue, health)
    return TestClient(create_app(queue, [WRITE_KEY], metrics, health), raise_server_exceptions=False), metrics


def test_metrics_carry_the_connection_label_and_add_up_per_connection(lanes: Queue) -> None:
    queue = lanes
    client, metrics = _intake(queue, Health(CONNECTIONS))
    with client:
        assert client.post("/v1/batch", json={"batch": [track(f"m-{i}") for i in range(4)]}, headers=AUTH).status_code == 200
        a = queue.claim("alpha", 3, 60)
        queue.settle("alpha", finished={a[0].id: "delivered", a[1].id: "filtered"}, later={a[2].id: Later(0.0, retried=True)})
        metrics.observe_latency("alpha", 0.2)
        b = queue.claim("beta", 1, 60)
        queue.settle("beta", finished={b[0].id: "dead_lettered"}, letters=[letter(b[0].id, b[0].body)])
        text = client.get("/metrics").text
    by_connection = metrics_by_connection(text)  # every sample has a connection label (and buckets their le)
    assert set(by_connection) == set(CONNECTIONS)
    alpha, beta = by_connection["alpha"], by_connection["beta"]
    assert {k: alpha[f"actionmap_events_{k}_total"] for k in ("received", "delivered", "filtered", "retried")} == {
        "received": 4, "delivered": 1, "filtered": 1, "retried": 1}
    assert {k: beta[f"actionmap_events_{k}_total"] for k in ("received", "dead_lettered", "retried")} == {
        "received": 4, "dead_lettered": 1, "retried": 0}
    assert (alpha["actionmap_queue_depth"], beta["actionmap_queue_depth"]) == (2, 3)
    assert (alpha["actionmap_delivery_latency_seconds_count"], beta["actionmap_delivery_latency_seconds_count"]) == (1, 0)
    assert alpha["actionmap_credential_refused"] == beta["actionmap_credential_refused"] == 0
    for name, samples in by_connection.items():
        accounted = sum(samples[f"actionmap_events_{c}_total"] for c in CATEGORIES) + samples["actionmap_queue_depth"]
        assert samples["actionmap_events_received_total"] == accounted, name
    assert 'actionmap_queue_depth{connection="beta"} 3.0' in text


def test_health_is_200_with_a_refused_credential_and_says_so_per_connection(lanes: Queue) -> None:
    health = Health(CONNECTIONS)
    client, _ = _intake(lanes, health)
    with client:
        assert client.post("/v1/batch", json={"batch": [track("h-1"), track("h-2")]}, headers=AUTH).status_code == 200
        lanes.settle("beta", finished={row.id: "delivered" for row in lanes.claim("beta", 10, 60)})
        assert health.refuse("alpha", "Metronome refused the credential (401: invalid token)") is True
        assert health.refuse("alpha", "Metronome refused the credential (401: invalid token)") is False  # already
        answer = client.get("/health")
        assert answer.status_code == 200, "the intake still accepts: beta delivers, alpha's events are kept"
        body = answer.json()
        assert body["status"] == "ok" and set(body["connections"]) == set(CONNECTIONS)
        alpha, beta = body["connections"]["alpha"], body["connections"]["beta"]
        assert alpha["state"] == "credential refused" and alpha["refused"] == "Metronome refused the credential (401: invalid token)"
        assert alpha["queued"] == 2 and alpha["oldest_age_seconds"] >= 0
        assert beta == {"state": "delivering", "queued": 0, "oldest_age_seconds": 0.0}
        assert metrics_by_connection(client.get("/metrics").text)["alpha"]["actionmap_credential_refused"] == 1
        assert client.post("/v1/track", json=track("h-3"), headers=AUTH).status_code == 200

        health.accept("alpha")
        alpha = client.get("/health").json()["connections"]["alpha"]
        assert alpha["state"] == "delivering" and "refused" not in alpha and alpha["queued"] == 3
    with pytest.raises(KeyError):
        health.refuse("gamma", "no such connection")
