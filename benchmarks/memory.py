"""Peak memory (RSS) of ``actionmap send`` for N/10 and N events: flat means the larger run needs < 1.2x.

    .venv/bin/python benchmarks/memory.py [--events N]     (default N = 1,000,000: a few minutes)

Each size is generated into an NDJSON file in a temporary folder and sent by the real
command line (``actionmap send -m mappings/metronome.yaml FILE --rate 0``) in a child
process, to a fresh Metronome emulator in another process. The child's peak RSS comes
from ``os.wait4`` (the kernel's ru_maxrss of exactly that child). Every run must
deliver exactly the events the hand-written floor says are valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from common import (DEFAULT_MAPPING, TOKEN, Event, arguments, default_build, default_triggered, emulator,
    hand_written, iter_events, machine, write_ndjson)

FLAT = 1.2


def generate(path: Path, count: int) -> tuple[int, int]:
    """Write ``count`` events to ``path``; the bytes written and how many the floor would deliver."""
    floor = hand_written(default_triggered, default_build)
    valid = 0

    def counted(events: Iterator[Event]) -> Iterator[Event]:
        nonlocal valid
        for event in events:
            valid += type(floor(event)) is dict
            yield event

    return write_ndjson(path, counted(iter_events(count))), valid


def send(path: Path, url: str, log: Path) -> tuple[int, dict[str, Any], float]:
    """Run ``actionmap send`` on ``path``: its peak RSS in bytes, its JSON summary and the seconds it took."""
    command = [sys.executable, "-m", "engine.cli", "send", "-m", str(DEFAULT_MAPPING), str(path),
               "--rate", "0", "--set", f"base_url={url}"]
    started = time.monotonic()
    with log.open("wb") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env={**os.environ, "METRONOME_API_TOKEN": TOKEN})
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    lines = output.decode().splitlines()
    if child.returncode not in (0, 2) or not lines:
        sys.exit(f"actionmap send failed (exit {child.returncode}): {log.read_text()[-2000:]}")
    return usage.ru_maxrss * 1024, orjson.loads(lines[-1]), time.monotonic() - started


def main() -> None:
    args = arguments(__doc__.splitlines()[0], events=1_000_000).parse_args()
    print(f"memory: peak RSS of `actionmap send` (a child process; the emulator runs in another); {machine()}")
    peaks = []
    with tempfile.TemporaryDirectory() as folder:
        for count in (args.events // 10, args.events):
            path = Path(folder) / f"events-{count}.ndjson"
            size, valid = generate(path, count)
            with emulator() as url:
                peak, summary, seconds = send(path, url, Path(folder) / "send.log")
            path.unlink()
            if summary["delivered"] != valid or summary["dead_lettered"]:
                sys.exit(f"memory: expected {valid:,} events delivered and none dead-lettered, got {summary}")
            peaks.append(peak)
            print(f"  {count:>9,} events ({size / 2**20:,.0f} MiB of NDJSON): peak RSS {peak / 2**20:,.1f} MiB; "
                  f"{summary['delivered']:,} delivered in {summary['requests']:,} requests, {seconds:,.0f} s")
    ratio = peaks[1] / peaks[0]
    print(f"memory: {ratio:.2f}x from {args.events // 10:,} to {args.events:,} events "
          f"(flat means under {FLAT}x: {'met' if ratio < FLAT else 'NOT met'})")


if __name__ == "__main__":
    main()
