"""The Webhook destination against a real HTTP receiver on loopback: batching, signing, retries, dead letters.

The engine has no webhook-specific code: this plugin is YAML plus one Python hook
(signing), which is what shows that a second destination needs no engine change.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.config.mappingfile import load_mapping_file
from engine.delivery import RetryPolicy, Sender
from engine.runtime.send import send_events
from tests.conftest import WEBHOOK_KEY as API_KEY, WEBHOOK_SECRET as SECRET, Receiver

def _mapping(tmp_path: Path, receiver: Receiver, batch_size: int, method: str = "POST", data: str = "") -> Path:
    path = tmp_path / "webhook.yaml"
    path.write_text(
        f"""destination: webhook
settings:
  url: {receiver.url}
  method: {method}
  batch_size: {batch_size}
  signing_secret: ${{HOOK_SECRET}}
  headers: {{X-Api-Key: {API_KEY}}}
subscriptions:
  - name: Orders
    action: send
    trigger: type = "track"
{data}""",
        encoding="utf-8",
    )
    return path


def _run(path: Path, events: list[dict], tmp_path: Path):
    mapping = load_mapping_file(path, env={"HOOK_SECRET": SECRET})
    sender = Sender(mapping, policy=RetryPolicy(base=0.005, cap=0.02, max_duration=5))
    dead_path = tmp_path / "dead.ndjson"
    summary = send_events(mapping, events, dead_letters=dead_path, sender=sender)
    sender.close()
    return summary, dead_path.read_text() if dead_path.exists() else ""


EVENTS = [{"type": "track", "messageId": f"m-{i}", "event": "Order Completed", "properties": {"total": i}} for i in range(12)]


def test_batches_are_json_arrays_signed_over_the_exact_bytes(receiver: Receiver, tmp_path: Path) -> None:
    summary, dead = _run(_mapping(tmp_path, receiver, batch_size=5), EVENTS, tmp_path)
    assert (summary.delivered, summary.requests, dead) == (12, 3, "")
    assert [len(r["body"]) for r in receiver.received] == [5, 5, 2]
    assert all(r["signed"] and r["key"] == API_KEY and r["content_type"] == "application/json" for r in receiver.received)
    assert [item for r in receiver.received for item in r["body"]] == EVENTS  # default mapping: the whole event


def test_batch_size_one_sends_one_object_per_request_with_the_chosen_method(receiver: Receiver, tmp_path: Path) -> None:
    data = "    mapping:\n      data: {id: $.messageId, total: $.properties.total}\n"
    summary, _ = _run(_mapping(tmp_path, receiver, batch_size=1, method="PATCH", data=data), EVENTS[:3], tmp_path)
    assert summary.delivered == 3 and summary.requests == 3
    assert [(r["method"], r["body"]) for r in receiver.received] == [("PATCH", {"id": f"m-{i}", "total": i}) for i in range(3)]
    assert all(r["signed"] for r in receiver.received)


def test_retryable_answers_resend_the_same_signed_batch(receiver: Receiver, tmp_path: Path) -> None:
    receiver.fail_first = 3
    summary, dead = _run(_mapping(tmp_path, receiver, batch_size=12), EVENTS, tmp_path)
    assert (summary.delivered, summary.dead_lettered, summary.requests) == (12, 0, 4)
    assert [r["status"] for r in receiver.received] == [503, 503, 503, 200]
    assert all(r["body"] == EVENTS and r["signed"] for r in receiver.received)


def test_rejected_events_are_bisected_out_and_dead_lettered_without_secrets(receiver: Receiver, tmp_path: Path) -> None:
    events = [dict(e, bad=(i in (3, 9))) for i, e in enumerate(EVENTS)]
    summary, dead = _run(_mapping(tmp_path, receiver, batch_size=12), events, tmp_path)
    assert (summary.delivered, summary.dead_lettered) == (10, 2)
    letters = [json.loads(line) for line in dead.splitlines()]
    assert sorted(letter["event"]["messageId"] for letter in letters) == ["m-3", "m-9"]
    assert all(letter["status"] == 400 and "bad event in the batch" in letter["reason"] for letter in letters)
    assert sorted(item["messageId"] for r in receiver.received if r["status"] == 200 for item in r["body"]) == sorted(
        e["messageId"] for e in events if not e["bad"])
    assert SECRET not in dead and API_KEY not in dead
