"""The per-event path of the default Metronome mapping against a hand-written function.

    .venv/bin/python benchmarks/pipeline.py [--events N] [--repeat N] [--profile]

Generates realistic Segment track events (1-2 KB, nested context and properties),
checks that ``Pipeline(load_mapping_file("mappings/metronome.yaml")).run(event)`` and
the hand-written floor (benchmarks/common.py) give identical payloads for every one
of them, then times both on the same events (best of N, interleaved).
"""

from __future__ import annotations

from common import (Row, arguments, assert_same, average_size, best_of, default_build, default_triggered,
    engine_result, hand_written, load, machine, make_events, print_table, profile, run_all, verdict)
from engine.pipeline import Pipeline

TARGET = 2.0


def main() -> None:
    args = arguments(__doc__.splitlines()[0], events=10_000, repeat=7).parse_args()
    events = make_events(args.events)
    run = Pipeline(load()).run
    floor = hand_written(default_triggered, default_build)
    assert_same("pipeline", [engine_result(run(event)) for event in events], [floor(event) for event in events])

    row = Row("Pipeline.run vs hand-written", *best_of([(run, events), (floor, events)], args.repeat))
    print_table(
        f"pipeline: mappings/metronome.yaml on {len(events):,} track events ({average_size(events):,.0f} bytes on average), "
        f"best of {args.repeat}; {machine()}",
        [row],
    )
    print(f"pipeline: {verdict(row.ratio, TARGET)}")
    if args.profile:
        profile(f"Pipeline.run over {len(events):,} events", run_all, run, events)


if __name__ == "__main__":
    main()
