"""Issue 12, point 4, "Health tells the truth": a full disk under ``--data-dir``.

Each test mounts a small tmpfs (it needs root; without it the tests are skipped
and say so), runs ``actionmap serve`` on it as a real process with the helpers of
``tests/test_serve.py``, and fills it with a filler file the way another program
on the machine would. While the queue cannot commit, the intake answers 503 and
``/health`` says why; once the filler is deleted (the volume is never remounted
larger) health turns ok by itself and every acknowledged event reaches the
Metronome emulator, once by transaction id, with the counters adding up.

No test measures speed: every wait is for a condition, with timeouts far beyond
what a loaded machine needs, so they pass beside a CPU-bound process.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from destinations.metronome.emulator import Faults, MetronomeEmulator
from engine.runtime.serve.queue import Queue
from engine.runtime.serve.storage import RESERVE_BYTES
from tests.conftest import expected_payload
from tests.test_serve import AUTH, CONNECTION, Service, assert_adds_up, track, wait_for, write_mapping
from tests.test_serve import emulator  # noqa: F401  (the fixture: a Metronome emulator that accepts TOKEN)

RECOVERY = 300.0  # seconds allowed to drain after the space is freed; a lease left behind would take 600


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: 2m, 1536k) at ``where``, unmounted on the way out."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("these tests mount a small tmpfs to fill a disk for real: they need root (or CAP_SYS_ADMIN) and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (mount said: {mounted.stderr.strip()})")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)  # something still had a file open: detach it


@contextmanager
def small_queue(where: Path) -> Iterator[tuple[Path, Queue]]:
    """A Queue on a 1 MB tmpfs at ``where``, closed and unmounted on the way out."""
    with tmpfs(where, "1m") as volume:
        queue = Queue(volume, [CONNECTION])
        try:
            yield volume, queue
        finally:
            queue.close()


def fill(volume: Path) -> Path:
    """Write a file until the volume has no byte left (ENOSPC), as another program would; the file."""
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    assert os.statvfs(volume).f_bavail == 0
    return filler


def health(running: Service) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(running.url + "/health", timeout=10.0)
    return answer.status_code, answer.json()


def healthy(running: Service) -> bool:
    """200, ok, and the connection delivering (its queued events and their age are whatever they are now)."""
    status, body = health(running)
    return (status, body["status"], body["connections"][CONNECTION]["state"]) == (200, "ok", "delivering")


def queue_problems(running: Service) -> list[dict[str, Any]]:
    """What the workers logged about the queue (claims and settles that could not commit)."""
    return [e for e in running.logs() if e["event"] in ("worker_error", "queue_error") and "worker" in e]


def test_a_full_disk_turns_health_503_and_the_queue_drains_once_space_is_freed(
    emulator: MetronomeEmulator, tmp_path: Path  # noqa: F811
) -> None:
    emulator.faults = Faults(rate=1.0, kinds=("503",))  # the destination fails everything: events accumulate
    with tmpfs(tmp_path / "data", "2m") as volume:
        running = Service(tmp_path, write_mapping(tmp_path / "mapping.yaml", emulator.base_url), "--rate", "0", "--timeout", "2")
        assert running.data_dir == volume
        try:
            running.start()
            batches = [[track(f"full-{b}-{i}", user=f"c{i % 5}") for i in range(100)] for b in range(5)]
            acked: set[str] = set()
            for batch in batches:
                assert running.post("/v1/batch", {"batch": batch}).status_code == 200
                acked.update(e["messageId"] for e in batch)
            wait_for(lambda: len(emulator.requests) >= 2, what="the workers to be sending (and failing)")

            filler = fill(volume)
            refused = running.post("/v1/batch", {"batch": [track("refused-while-full")]})
            assert refused.status_code == 503 and refused.json()["code"] == "queue_unavailable"
            status, body = health(running)
            assert status == 503 and body["status"] == "unhealthy", body
            assert body["queue"].startswith(f"cannot commit: the disk of {volume} is full"), body
            assert body["connections"][CONNECTION]["queued"] == len(acked), body  # the lanes can still be read
            metrics = running.metrics()  # reads still work: the counters are there and add up
            assert metrics["actionmap_events_received_total"] == len(acked)
            assert_adds_up(metrics)

            # the destination recovers while the disk is still full: what the workers send now cannot be
            # recorded (a delivery is a commit), so it must be kept and sent again, not lost or counted twice
            emulator.faults = Faults()
            wait_for(lambda: bool(queue_problems(running)), timeout=180, what="a worker to meet the full disk")
            assert health(running)[0] == 503

            filler.unlink()
            wait_for(lambda: healthy(running), timeout=120, what="health to turn ok by itself")
            metrics = running.drain(timeout=RECOVERY)
            stored = emulator.stored
            assert set(stored) == acked, f"{len(acked - set(stored))} acknowledged events never reached Metronome"
            by_id = {e["messageId"]: e for batch in batches for e in batch}
            assert all(payload == expected_payload(by_id[tid]) for tid, payload in stored.items())
            assert metrics["actionmap_events_received_total"] == len(acked)  # the refused event was never counted
            assert metrics["actionmap_events_delivered_total"] == len(acked)  # each counted once, resends included
            assert metrics["actionmap_queue_depth"] == 0
            assert_adds_up(metrics)
            assert running.terminate() == 0
        finally:
            running.stop()


def test_a_small_volume_takes_many_times_its_size_in_events(emulator: MetronomeEmulator, tmp_path: Path) -> None:  # noqa: F811
    """SQLite checkpoints its WAL only at 4 MB: on a 2 MB volume the WAL used to fill the disk after ~1,500
    events, and every commit failed from then on, with the queue empty. Now it takes over twice its size, and more."""
    size = 2 * 1024 * 1024
    with tmpfs(tmp_path / "data", "2m"):
        running = Service(tmp_path, write_mapping(tmp_path / "mapping.yaml", emulator.base_url), "--rate", "0")
        try:
            running.start()
            batches = [[track(f"small-{b}-{i}", user=f"s{i % 3}") for i in range(100)] for b in range(300)]
            bodies = [orjson.dumps({"batch": batch}) for batch in batches]
            assert sum(map(len, bodies)) > 2 * size
            refused = 0
            with httpx.Client(headers=AUTH, timeout=10.0) as http:
                for body in bodies:  # each until it is acknowledged, as Segment's libraries do with a 503
                    deadline = time.monotonic() + 120
                    while (status := http.post(running.url + "/v1/batch", content=body).status_code) != 200:
                        assert status == 503 and time.monotonic() < deadline, f"batch refused for 120 s ({status}): {health(running)}"
                        refused += 1
                        time.sleep(0.2)
            metrics = running.drain(timeout=RECOVERY)
            assert set(emulator.stored) == {e["messageId"] for batch in batches for e in batch}
            assert metrics["actionmap_events_delivered_total"] == metrics["actionmap_events_received_total"] == 30_000
            assert_adds_up(metrics)
            assert healthy(running) and health(running)[1]["connections"][CONNECTION]["queued"] == 0
            assert running.terminate() == 0
        finally:
            running.stop()


def test_the_queue_remembers_a_failed_commit_until_one_succeeds(tmp_path: Path) -> None:
    """In process, on the Queue: what /health reads, a failed commit rolled back whole, the reserve."""
    with small_queue(tmp_path / "q") as (volume, queue):
        queue.put([orjson.dumps(track(f"q-{i}")) for i in range(20)])
        claimed = queue.claim(CONNECTION, 20, 60)
        assert len(claimed) == 20 and queue.commit_problem() is None

        filler = fill(volume)
        with pytest.raises(sqlite3.Error, match="refused below"):  # below the reserve, nothing is taken
            queue.put([b'{"type": "track"}'])
        with pytest.raises(sqlite3.Error, match="full"):  # SQLite's own failure: the WAL cannot grow
            queue.settle(CONNECTION, finished={row.id: "delivered" for row in claimed})
        problem = queue.commit_problem()
        assert problem is not None and problem.startswith(f"the disk of {volume} is full"), problem
        lane = queue.stats().connections[CONNECTION]
        assert lane.counters["delivered"] == 0 and lane.depth == 20 and queue.stats().events == 20  # rolled back whole

        filler.unlink()
        assert queue.commit_problem() is None  # a one-row probe committed: no traffic needed
        queue.settle(CONNECTION, finished={row.id: "delivered" for row in claimed})  # no transaction was left open
        stats = queue.stats()
        lane = stats.connections[CONNECTION]
        assert (lane.counters["received"], lane.counters["delivered"], lane.depth, stats.events) == (20, 20, 0, 0)
        assert os.statvfs(volume).f_bavail * os.statvfs(volume).f_frsize > RESERVE_BYTES


def test_health_of_a_queue_that_commits_writes_nothing(tmp_path: Path) -> None:
    """Health is read often (load balancers, every few seconds): only a remembered failure makes it write."""
    with small_queue(tmp_path / "q") as (volume, queue):
        queue.put([b"{}"])
        before = {p.name: p.stat().st_size for p in volume.iterdir()}, os.statvfs(volume).f_bavail
        assert all(queue.commit_problem() is None for _ in range(1000))
        assert ({p.name: p.stat().st_size for p in volume.iterdir()}, os.statvfs(volume).f_bavail) == before
