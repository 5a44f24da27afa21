"""The per-event path split by stage, for the default mapping and a heavy one, against hand-written stages.

    .venv/bin/python benchmarks/mapping.py [--events N] [--repeat N] [--profile]

Stages, as Pipeline.run runs them: *filter* (the integrations object and the trigger),
*mapping* (every field's compiled mapping on the event) and *field checks* (types,
coercions, lengths, datetime normalisation). Each stage is timed on the inputs it
sees in production (mapping only on events that pass the filter, checks on what the
mapping built) and reported per generated event, so the stages add up; the last row
is the whole of Pipeline.run, and what it costs beyond the stages is its own
bookkeeping (outcome objects, the missing/failed bookkeeping of each field).

The heavy mapping (benchmarks/heavy.yaml) adds templates, @coalesce, @arrayPath over
10 products and a JMESPath projection. Before timing, every stage of the engine is
checked against its floor: same filter decisions, same payloads (or same invalidity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

from common import (DEFAULT_MAPPING, HEAVY_MAPPING, INVALID, Event, Result, Row, arguments, assert_same,
    average_size, best_of, default_build, default_triggered, engine_result, floor_allowed, floor_check,
    hand_written, heavy_build, heavy_triggered, load, machine, make_events, print_table, profile, run_all,
    verdict)
from engine.lang.missing import MISSING
from engine.pipeline import Pipeline
from engine.lang.trigger import integrations_filter

TARGET_HEAVY = 3.0
Stage = Callable[[Any], Any]


class Stages(NamedTuple):
    """One contender's per-event path, cut where Pipeline.run's stages meet."""

    passes: Stage  # event -> whether it feeds the subscription (integrations, trigger)
    build: Stage  # event -> the fields as mapped
    check: Stage  # built fields -> the payload to send (or the problems)
    run: Stage  # event -> the whole outcome


def engine_stages(path: Path) -> Stages:
    """The engine's stages for a one-subscription mapping file, through its public parts."""
    mapping_file = load(path)
    (sub,) = mapping_file.subscriptions
    allowed = integrations_filter(mapping_file.destination.name, mapping_file.destination.slug)
    matches = sub.trigger.matches
    fields = tuple((name, node.evaluator) for name, node in sub.mapping.items())  # what Pipeline.run calls

    def passes(event: Event) -> bool:
        return allowed(event) and matches(event)

    def build(event: Event) -> dict[str, Any]:
        return {name: value for name, evaluate in fields if (value := evaluate(event)) is not MISSING}

    return Stages(passes, build, sub.checks.check, Pipeline(mapping_file).run)


def floor_stages(triggered: Callable[[Event], bool], build: Stage) -> Stages:
    def passes(event: Event) -> bool:
        return floor_allowed(event) and triggered(event)

    return Stages(passes, build, floor_check, hand_written(triggered, build))


def checked(result: tuple[dict[str, Any], list[Any]]) -> Result:
    payload, problems = result
    return INVALID if problems else payload


def compare(name: str, events: list[Event], engine: Stages, floor: Stages, repeat: int) -> Row:
    """Check every stage against its floor, time them, print the table; the whole pipeline's row."""
    assert_same(f"{name} filter", [engine.passes(e) for e in events], [floor.passes(e) for e in events])
    mapped = [e for e in events if engine.passes(e)]
    built, floor_built = [engine.build(e) for e in mapped], [floor.build(e) for e in mapped]
    assert_same(f"{name} checks", [checked(engine.check(b)) for b in built], [floor.check(b) for b in floor_built])
    assert_same(f"{name} pipeline", [engine_result(engine.run(e)) for e in events], [floor.run(e) for e in events])

    share = len(mapped) / len(events)  # mapping and checks run on this share of the events
    times = best_of(
        [(engine.passes, events), (floor.passes, events), (engine.build, mapped), (floor.build, mapped),
         (engine.check, built), (floor.check, floor_built), (engine.run, events), (floor.run, events)],
        repeat,
    )
    rows = [
        Row("filter (integrations, trigger)", times[0], times[1]),
        Row("mapping", times[2] * share, times[3] * share),
        Row("field checks", times[4] * share, times[5] * share),
    ]
    stages = Row("sum of the stages", sum(r.engine for r in rows), sum(r.floor for r in rows))
    whole = Row("Pipeline.run (whole)", times[6], times[7])
    print_table(f"\n{name}: {len(events):,} events ({average_size(events):,.0f} bytes on average), "
                f"{share:.1%} pass the filter; µs per generated event, best of {repeat}", [*rows, stages, whole])
    print(f"  Pipeline.run beyond its stages: {(whole.engine - stages.engine) * 1e6:.2f} µs per event")
    return whole


def main() -> None:
    args = arguments(__doc__.splitlines()[0], events=10_000, repeat=7).parse_args()
    print(f"mapping: {machine()}")
    default = engine_stages(DEFAULT_MAPPING)
    compare("default mapping (mappings/metronome.yaml)", make_events(args.events), default,
            floor_stages(default_triggered, default_build), args.repeat)
    heavy = engine_stages(HEAVY_MAPPING)
    heavy_events = make_events(args.events, products=10)
    whole = compare("heavy mapping (benchmarks/heavy.yaml)", heavy_events, heavy,
                    floor_stages(heavy_triggered, heavy_build), args.repeat)
    print(f"\nheavy mapping: {verdict(whole.ratio, TARGET_HEAVY)}")
    if args.profile:
        profile(f"the heavy mapping's Pipeline.run over {len(heavy_events):,} events", run_all, heavy.run, heavy_events)


if __name__ == "__main__":
    main()
