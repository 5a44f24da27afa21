"""The Webhook destination against a real HTTP receiver on loopback: batching, signing, retries, dead letters.

The engine has no webhook-specific code: this plugin is YAML plus one Python hook
(signing), which is what shows that a second destination needs no engine change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.deadletters import DeadLetterFile
from engine.delivery import RetryPolicy, Sender
from engine.events import Event
from engine.config.mappingfile import load_mapping_file
from engine.pipeline import Pipeline
from engine.send import Delivery

SECRET = "whsec-test-8c1f"
API_KEY = "key-test-77aa"


@dataclass
class Receiver:
    """What the receiving side saw; ``fail_first`` answers 503 that many times; events with bad=true get 400."""

    fail_first: int = 0
    received: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _handle(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(self.headers.get("X-Signature-SHA256", ""), expected)
        with receiver.lock:
            record = {"method": self.command, "body": json.loads(body), "signed": signed,
                      "key": self.headers.get("X-Api-Key"), "content_type": self.headers.get("Content-Type")}
            if receiver.fail_first > 0:
                receiver.fail_first -= 1
                status = 503
            else:
                items = record["body"] if isinstance(record["body"], list) else [record["body"]]
                status = 400 if any(item.get("bad") for item in items) else 200
            record["status"] = status
            receiver.received.append(record)
        answer = b'{"message": "bad event in the batch"}' if status == 400 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = do_PATCH = _handle


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"  # type: ignore[attr-defined]
    yield server.receiver  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


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
    with DeadLetterFile(dead_path, mapping.settings) as dead:
        summary = Delivery(Pipeline(mapping), sender, dead).run(Event(i, i + 1, e) for i, e in enumerate(events))
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
