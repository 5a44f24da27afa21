"""Many destinations in one deployment (issue 14): connections, their names, and bulkheads in ``send`` and ``serve``
(``consume``'s are in tests/test_consume.py, beside its broker).

Each ``-m MAPPING`` is a connection. A connection that is down or refuses its
credential must not hold up another: the tests make the Metronome emulator fail
and show the webhook receiver has every event while Metronome still has none,
then let Metronome recover and show every event stored there exactly once. No
test measures time: "regardless" is shown by order (the webhook finished while
Metronome was still failing), not by a stopwatch.
"""

from __future__ import annotations

import importlib.metadata
import os
import pty
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from destinations.metronome.emulator import Faults, MetronomeEmulator
from engine.config.connections import Secrets, load_connections, parse_overrides
from engine.errors import ConfigError, ConfigErrors
from tests.conftest import REPO, WEBHOOK_SECRET, Receiver, expected_payload, track_events, write_ndjson
from tests.test_serve import Service, assert_adds_up, metrics_by_connection

TOKEN = "mtr-connections-token-5e1a"
OTHER_TOKEN = "mtr-second-account-token-77c0"
EVENTS = 2_000

Start = Callable[..., MetronomeEmulator]


def metronome_file(folder: Path, emulator: MetronomeEmulator, name: str | None = None, token_var: str = "METRONOME_API_TOKEN",
                   trigger: str = 'type = "track"') -> Path:
    path = folder / f"{name or 'metronome'}.yaml"
    path.write_text(
        (f"name: {name}\n" if name else "")
        + f"destination: metronome\nsettings:\n  api_token: ${{{token_var}}}\n  base_url: {emulator.base_url}\n"
        f"subscriptions:\n  - name: Usage events\n    action: send_event\n    trigger: '{trigger}'\n",
        encoding="utf-8",
    )
    return path


def webhook_file(folder: Path, receiver: Receiver, name: str = "hook") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"destination: webhook\nsettings:\n  url: {receiver.url}\n  batch_size: 100\n  signing_secret: ${{HOOK_SECRET}}\n"
        "subscriptions:\n  - name: Orders\n    action: send\n    trigger: type = \"track\"\n",
        encoding="utf-8",
    )
    return path


def events_file(folder: Path, events: list[dict[str, Any]]) -> Path:
    return write_ndjson(folder / "events.ndjson", events)


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "METRONOME_API_TOKEN": TOKEN, "HOOK_SECRET": WEBHOOK_SECRET, **extra}


def send_process(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "send", *map(str, args)], cwd=REPO,
                            env=env or environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any], str]:
    out, err = process.communicate(timeout=600)
    text = out.decode() + err.decode()
    assert TOKEN not in text and OTHER_TOKEN not in text and WEBHOOK_SECRET not in text, "a secret leaked into the output"
    return process.returncode, orjson.loads(out.decode().strip().splitlines()[-1]), err.decode()


def eventually(condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for ``condition``; fail only if the process under test ended first or after a generous 300 s (a hung test)."""
    deadline = time.monotonic() + 300
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended before: {what} ({process.stderr.read().decode() if process.stderr else ''})")
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def received_once(receiver: Receiver, events: list[dict[str, Any]]) -> bool:
    counts = Counter(item["messageId"] for item in receiver.items())
    return set(counts) == {e["messageId"] for e in events} and set(counts.values()) == {1}


# -- loading a deployment ---------------------------------------------------------------------------


def test_a_connection_is_named_by_its_file_or_its_name_key_and_names_are_unique(tmp_path: Path, emulators: Start) -> None:
    emulator = emulators(tokens={TOKEN})
    first = metronome_file(tmp_path, emulator)
    (tmp_path / "b").mkdir()
    second = metronome_file(tmp_path / "b", emulator)  # the same stem: metronome
    env = {"METRONOME_API_TOKEN": TOKEN}
    with pytest.raises(ConfigError) as clash:
        load_connections([first, second], env=env)
    assert f"{second}:" in str(clash.value) and 'two connections are named "metronome"' in str(clash.value)
    assert str(first) in str(clash.value), "the error names the other file"
    named = metronome_file(tmp_path / "b", emulator, name="second-account")
    mappings = load_connections([first, named], env=env)
    assert [m.name for m in mappings] == ["metronome", "second-account"]
    odd = tmp_path / "usage prod.v2.yaml"
    odd.write_text(first.read_text(), encoding="utf-8")
    assert load_connections([odd], env=env)[0].name == "usage-prod"


def test_every_error_of_every_file_is_reported_and_bad_names_are_refused(tmp_path: Path, emulators: Start) -> None:
    emulator = emulators(tokens={TOKEN})
    broken = metronome_file(tmp_path, emulator, name="ok-name")
    broken.write_text(broken.read_text().replace("send_event", "no_such_action"), encoding="utf-8")
    bad_name = metronome_file(tmp_path, emulator, name="x")
    bad_name.write_text(bad_name.read_text().replace("name: x", "name: 'has space'"), encoding="utf-8")
    with pytest.raises(ConfigErrors) as both:
        load_connections([broken, bad_name], env={"METRONOME_API_TOKEN": TOKEN})
    text = str(both.value)
    assert f"{broken}:" in text and 'unknown action "no_such_action"' in text
    assert f"{bad_name}:1:" in text


def test_set_reaches_every_connection_with_the_setting_or_the_one_named(tmp_path: Path, emulators: Start, receiver: Receiver) -> None:
    emulator, other = emulators(tokens={TOKEN}), emulators(tokens={TOKEN})
    paths = [metronome_file(tmp_path, emulator, name="a"), metronome_file(tmp_path, emulator, name="b"), webhook_file(tmp_path, receiver)]
    env = {"METRONOME_API_TOKEN": TOKEN, "HOOK_SECRET": WEBHOOK_SECRET}
    a, b, hook = load_connections(paths, env=env, overrides=parse_overrides([f"b:base_url={other.base_url}", "batch_size=7"]))
    assert (a.settings.values["base_url"], b.settings.values["base_url"]) == (emulator.base_url, other.base_url)
    assert hook.settings.values["batch_size"] == 7, "a plain NAME goes to every connection whose destination has it"
    with pytest.raises(ConfigError, match="--set nope: no setting 'nope'"):
        load_connections(paths, env=env, overrides=parse_overrides(["nope=1"]))
    with pytest.raises(ConfigError, match="--set c:base_url: no setting 'base_url' in connection 'c'"):
        load_connections(paths, env=env, overrides=parse_overrides(["c:base_url=https://x.example"]))
    secrets = Secrets([a, b, hook])
    assert secrets.redact(f"{TOKEN} and {WEBHOOK_SECRET}") == "******** and ********"


def test_preview_lines_name_their_connection(tmp_path: Path, emulators: Start, receiver: Receiver, cli: Any) -> None:
    emulator = emulators(tokens={TOKEN})
    events = track_events(2, seed=3)
    run = cli("preview", "-m", str(metronome_file(tmp_path, emulator)), "-m", str(webhook_file(tmp_path, receiver)),
              str(events_file(tmp_path, events)))
    assert run.code == 0, run.err
    lines = [orjson.loads(line) for line in run.out.splitlines()]
    assert [(line["event"], line["connection"]) for line in lines] == [(0, "metronome"), (0, "hook"), (1, "metronome"), (1, "hook")]
    assert lines[0]["payload"] == expected_payload(events[0]) and lines[1]["payload"] == {"data": events[0]}


# -- send: one event, every connection, counted once each ------------------------------------------


def test_one_event_feeding_two_connections_counts_once_per_connection(tmp_path: Path, emulators: Start, receiver: Receiver) -> None:
    emulator = emulators(tokens={TOKEN})
    events = track_events(300, seed=4, prefix="both")
    identify = {"type": "identify", "messageId": "who", "userId": "u"}
    code, summary, err = finished(send_process("-m", metronome_file(tmp_path, emulator), "-m", webhook_file(tmp_path, receiver),
                                               events_file(tmp_path, [*events, identify])))
    assert code == 0, err
    each = {"events": 301, "delivered": 300, "filtered": 1, "invalid": 0, "dead_lettered": 0, "kept": 0}
    for name in ("metronome", "hook"):
        assert {k: v for k, v in summary["connections"][name].items() if k != "requests"} == each
    assert {k: summary[k] for k in each} == {k: 2 * v for k, v in each.items()}, "the totals add the connections"
    assert summary["requests"] == sum(c["requests"] for c in summary["connections"].values())
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert received_once(receiver, events)


# -- send: bulkheads ----------------------------------------------------------------------------------


def test_send_a_destination_answering_503_does_not_hold_up_another(tmp_path: Path, emulators: Start, receiver: Receiver) -> None:
    emulator = emulators(tokens={TOKEN}, faults=Faults(rate=1.0, kinds=["503"]))
    events = track_events(EVENTS, seed=5, prefix="outage")
    process = send_process("-m", metronome_file(tmp_path, emulator), "-m", webhook_file(tmp_path, receiver),
                           events_file(tmp_path, events), "--retry-for", "600", "--dead-letter", tmp_path / "dead.ndjson")
    eventually(lambda: received_once(receiver, events), "every event reached the webhook", process)
    assert emulator.stored == {} and len(emulator.requests) >= 1, "Metronome was failing all along"
    emulator.faults = Faults()  # Metronome recovers
    code, summary, err = finished(process)
    assert code == 0, err
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}, "stored there exactly once"
    assert summary["connections"]["metronome"]["delivered"] == summary["connections"]["hook"]["delivered"] == EVENTS
    assert (tmp_path / "dead.ndjson").read_text() == "", "nothing was dead-lettered"


def test_send_a_refused_credential_stops_that_connection_only(tmp_path: Path, emulators: Start, receiver: Receiver) -> None:
    emulator = emulators(tokens={"a-rotated-token-0001"})
    events = track_events(EVENTS, seed=6, prefix="refused")
    source = events_file(tmp_path, events)
    metronome = metronome_file(tmp_path, emulator)
    code, summary, err = finished(send_process("-m", metronome, "-m", webhook_file(tmp_path, receiver), source))
    assert code == 1
    assert "metronome: Metronome (Actions) refused the credential (403" in err and "were kept, not dead-lettered" in err
    assert summary["connections"]["metronome"] | {"requests": 0} == {
        "events": EVENTS, "delivered": 0, "filtered": 0, "invalid": 0, "dead_lettered": 0, "kept": EVENTS, "requests": 0}
    assert summary["connections"]["hook"]["delivered"] == EVENTS and received_once(receiver, events)
    assert emulator.stored == {}

    emulator.tokens = frozenset({TOKEN})  # the credential is fixed: the same send, to the connection that kept its events
    code, summary, err = finished(send_process("-m", metronome, source))
    assert code == 0, err
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert received_once(receiver, events), "the webhook was not sent anything twice"


def test_the_same_plugin_twice_each_account_gets_exactly_its_events(tmp_path: Path, emulators: Start) -> None:
    first, second = emulators(tokens={TOKEN}), emulators(tokens={OTHER_TOKEN})
    events = track_events(500, seed=7, prefix="two")
    paths = [
        metronome_file(tmp_path, first, name="account-eu", token_var="EU_TOKEN", trigger='properties.region = "eu"'),
        metronome_file(tmp_path, second, name="account-us", token_var="US_TOKEN", trigger='properties.region = "us"'),
    ]
    code, summary, err = finished(send_process("-m", paths[0], "-m", paths[1], events_file(tmp_path, events),
                                               env=environment(EU_TOKEN=TOKEN, US_TOKEN=OTHER_TOKEN)))
    assert code == 0, err
    for emulator, region in ((first, "eu"), (second, "us")):
        assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events if e["properties"]["region"] == region}
    eu = sum(e["properties"]["region"] == "eu" for e in events)
    assert (summary["connections"]["account-eu"]["delivered"], summary["connections"]["account-eu"]["filtered"]) == (eu, 500 - eu)


# -- serve: one intake, a lane per connection -------------------------------------------------------


def serving(tmp_path: Path, *mappings: Path, env: dict[str, str] | None = None) -> Service:
    """``actionmap serve`` with every mapping as a connection, started."""
    extra = [arg for path in mappings[1:] for arg in ("-m", str(path))]
    running = Service(tmp_path, mappings[0], *extra, "--credential-recheck", "0.5", token=TOKEN)
    running.env.update(env or environment())
    return running.start()


def post_all(running: Service, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 100):
        assert running.post("/v1/batch", {"batch": events[start:start + 100]}).status_code == 200


def by_connection(running: Service) -> dict[str, dict[str, float]]:
    text = httpx.get(running.url + "/metrics", timeout=10.0).text
    found = metrics_by_connection(text)
    for samples in found.values():
        assert_adds_up(samples)  # received = delivered + filtered + invalid + dead-lettered + queued, per connection
    return found


def health(running: Service) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(running.url + "/health", timeout=10.0)
    return answer.status_code, answer.json()


def test_serve_a_destination_answering_503_does_not_hold_up_another(
    tmp_path: Path, emulators: Start, receiver: Receiver, services: list[Service]
) -> None:
    emulator = emulators(tokens={TOKEN}, faults=Faults(rate=1.0, kinds=["503"]))
    events = track_events(EVENTS, seed=8, prefix="serve-outage")
    running = serving(tmp_path, metronome_file(tmp_path, emulator), webhook_file(tmp_path, receiver))
    services.append(running)
    post_all(running, events)
    eventually(lambda: received_once(receiver, events), "every event reached the webhook")
    assert emulator.stored == {}, "Metronome was failing all along"
    metrics = by_connection(running)
    assert metrics["hook"]["actionmap_events_delivered_total"] == EVENTS and metrics["hook"]["actionmap_queue_depth"] == 0
    assert metrics["metronome"]["actionmap_queue_depth"] == EVENTS, "its events wait in its own lane"
    assert health(running)[0] == 200, "a destination that is down does not make the intake unhealthy"
    emulator.faults = Faults()  # Metronome recovers
    eventually(lambda: by_connection(running)["metronome"]["actionmap_queue_depth"] == 0, "Metronome's lane drained")
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    metrics = by_connection(running)
    for name in ("metronome", "hook"):  # one event feeding both connections counts once at each
        assert (metrics[name]["actionmap_events_received_total"], metrics[name]["actionmap_events_delivered_total"]) == (EVENTS, EVENTS)
    assert received_once(receiver, events), "nothing was sent twice to the webhook"
    assert running.terminate() == 0


def test_serve_a_refused_credential_pauses_that_connection_only(
    tmp_path: Path, emulators: Start, receiver: Receiver, services: list[Service]
) -> None:
    emulator = emulators(tokens={"a-rotated-token-0002"})
    events = track_events(EVENTS, seed=9, prefix="serve-refused")
    running = serving(tmp_path, metronome_file(tmp_path, emulator), webhook_file(tmp_path, receiver))
    services.append(running)
    post_all(running, events)
    eventually(lambda: received_once(receiver, events), "every event reached the webhook")
    eventually(lambda: health(running)[1]["connections"]["metronome"]["state"] == "credential refused", "the refusal shows")
    status, body = health(running)
    assert status == 200 and body["connections"]["hook"]["state"] == "delivering"
    assert body["connections"]["metronome"]["queued"] == EVENTS and TOKEN not in str(body)
    assert by_connection(running)["metronome"]["actionmap_credential_refused"] == 1
    emulator.tokens = frozenset({TOKEN})  # the credential is accepted again
    eventually(lambda: by_connection(running)["metronome"]["actionmap_queue_depth"] == 0, "Metronome's lane drained")
    assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events}
    assert by_connection(running)["metronome"]["actionmap_events_delivered_total"] == EVENTS
    assert received_once(receiver, events)
    assert running.terminate() == 0
    assert TOKEN not in running.log.read_text()


def test_serve_the_same_plugin_twice_each_account_gets_exactly_its_events(
    tmp_path: Path, emulators: Start, services: list[Service]
) -> None:
    first, second = emulators(tokens={TOKEN}), emulators(tokens={OTHER_TOKEN})
    events = track_events(600, seed=10, prefix="serve-two")
    running = serving(
        tmp_path,
        metronome_file(tmp_path, first, name="account-eu", token_var="EU_TOKEN", trigger='properties.region = "eu"'),
        metronome_file(tmp_path, second, name="account-us", token_var="US_TOKEN", trigger='properties.region = "us"'),
        env=environment(EU_TOKEN=TOKEN, US_TOKEN=OTHER_TOKEN),
    )
    services.append(running)
    post_all(running, events)
    eventually(lambda: all(m["actionmap_queue_depth"] == 0 for m in by_connection(running).values()), "both lanes drained")
    for emulator, region in ((first, "eu"), (second, "us")):
        assert emulator.stored == {e["messageId"]: expected_payload(e) for e in events if e["properties"]["region"] == region}
    metrics = by_connection(running)
    eu = sum(e["properties"]["region"] == "eu" for e in events)
    assert (metrics["account-eu"]["actionmap_events_delivered_total"], metrics["account-eu"]["actionmap_events_filtered_total"]) == (eu, 600 - eu)
    assert running.terminate() == 0
    log = running.log.read_text()
    assert TOKEN not in log and OTHER_TOKEN not in log


# -- send: Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_stops_send_cleanly_keeps_what_waits_and_prints_the_summary(
    tmp_path: Path, emulators: Start, receiver: Receiver
) -> None:
    """SIGINT while Metronome keeps failing: no traceback, exit 130, the summary counts what was kept."""
    emulator = emulators(tokens={TOKEN}, faults=Faults(rate=1.0, kinds=["503"]))
    events = track_events(300, seed=11, prefix="interrupted")
    process = send_process("-m", metronome_file(tmp_path, emulator), "-m", webhook_file(tmp_path, receiver),
                           events_file(tmp_path, events), "--retry-for", "600")
    eventually(lambda: received_once(receiver, events) and len(emulator.requests) >= 2, "retrying against the outage", process)
    process.send_signal(signal.SIGINT)
    code, summary, err = finished(process)
    assert code == 130 and "Traceback" not in err, err
    assert summary["connections"]["hook"]["delivered"] == 300
    metronome = summary["connections"]["metronome"]
    assert metronome["delivered"] == 0 and metronome["kept"] == metronome["events"] > 0, "nothing waiting was lost or dead-lettered"
    assert emulator.stored == {}


# -- what a person sees ---------------------------------------------------------------------------------


def test_send_says_its_summary_to_a_person_and_names_itself_to_the_destination(
    tmp_path: Path, emulators: Start, receiver: Receiver
) -> None:
    emulator = emulators(tokens={TOKEN})
    events = track_events(5, seed=12, prefix="said")
    code, summary, err = finished(send_process("-m", metronome_file(tmp_path, emulator), "-m", webhook_file(tmp_path, receiver),
                                               events_file(tmp_path, events)))
    assert code == 0, err
    assert ("actionmap: metronome: 5 events: 5 delivered, 0 filtered, 0 invalid, 0 dead-lettered, 0 kept, in 1 requests; "
            "hook: 5 events: 5 delivered") in err
    version = importlib.metadata.version("actionmap")
    assert {r["user_agent"] for r in receiver.received} == {f"actionmap/{version}"}, "not python-httpx"


def test_send_on_a_terminal_with_nothing_piped_says_how_to_use_it(tmp_path: Path, emulators: Start) -> None:
    """stdin a real pseudo-terminal: the hint comes at once, and Ctrl-D (end of input) ends the send."""
    emulator = emulators(tokens={TOKEN})
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "send", "-m", str(metronome_file(tmp_path, emulator))],
                               cwd=REPO, env=environment(), stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(follower)
    try:
        first = process.stderr.readline().decode() if process.stderr else ""
        assert first.startswith("actionmap send: reading events from this terminal") and "Ctrl-D" in first
        os.write(leader, orjson.dumps(track_events(1, seed=13, prefix="typed")[0]) + b"\n\x04")
        code, summary, err = finished(process)
    finally:
        os.close(leader)
    assert code == 0, err
    assert summary["delivered"] == 1 and len(emulator.stored) == 1
