"""The shared emulator core (engine.tools.emulator), through a tiny platform defined here, over real sockets."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import threading
import time
from typing import Any, Callable, ClassVar, Iterator

import httpx
import pytest

from engine.tools.emulator import (
    FAULT_KINDS,
    STATUS_FAULTS,
    Answer,
    Call,
    Emulator,
    Faults,
    Problem,
    Route,
    json_answer,
    main_for,
    parser_for,
)
from tests.conftest import started

TOKEN = "core-test-token-5b1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Tiny(Emulator):
    """A made-up platform: items keyed by "key" in ``{"items": [...]}``, its own error envelope, a form endpoint."""

    slug: ClassVar[str] = "tiny"
    name: ClassVar[str] = "Tiny"
    default_port: ClassVar[int] = 9931
    rate_burst: ClassVar[int] = 2
    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization", "x-api-key"})

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/items", self._items, ingest=True),
            Route("GET", "/v1/items/(?P<key>[^/]+)", self._item),
            Route("POST", "/v1/forms", self._form),
            Route("GET", "/v1/health", lambda call, fault, match: json_answer(200, {"ok": True}), authenticated=False),
            Route("POST", "/v1/crash", self._crash),
        ]

    def error(self, status: int, text: str, *headers: tuple[str, str]) -> Answer:
        return json_answer(status, {"error": {"status": status, "detail": text}}, *headers)

    def count(self, call: Call, body: Any) -> int | None:
        items = body.get("items") if isinstance(body, dict) else None
        return len(items) if isinstance(items, list) else None

    def _items(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer | None:
        body = call.json()
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("key"), str) for i in items):
            raise Problem('expected {"items": [{"key": "..."}, ...]}', 422)
        if not self.take(len(items)):
            return self.error(429, "slow down")
        keep = self.faults.part_of(len(items)) if fault == "store_part_then_500" else len(items)
        for item in items[:keep]:
            self.store(item["key"], item)
        if fault == "store_part_then_500":
            return self.error(500, f"stored {keep} of {len(items)}")
        return None if fault == "store_all_then_drop" else Answer(204, content_type=None)

    def _item(self, call: Call, fault: str | None, match: re.Match[str]) -> Answer:
        found = self.first(match["key"])
        if found is None:
            return self.error(404, f"no item {match['key']}")
        return json_answer(200, {"item": found.payload, "query": call.query})

    def _form(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer:
        return json_answer(200, call.form())

    def _crash(self, call: Call, fault: str | None, _: re.Match[str]) -> Answer:
        raise RuntimeError("boom")


@pytest.fixture
def tiny() -> Iterator[Callable[..., Tiny]]:
    yield from started(Tiny, {TOKEN})


def client(emulator: Emulator, headers: dict[str, str] | None = None, read: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=emulator.base_url, headers=AUTH if headers is None else headers,
                        timeout=httpx.Timeout(5.0, read=read), verify=False)


def items(*keys: str) -> dict[str, Any]:
    return {"items": [{"key": k, "n": i} for i, k in enumerate(keys)]}


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the emulator did not get there"
        time.sleep(0.01)


# -- the credential, before the body ------------------------------------------------------


@pytest.mark.parametrize(("headers", "status", "words"), [
    ({}, 401, "missing Authorization header"),
    ({"Authorization": f"Basic {TOKEN}"}, 401, "malformed Authorization header 'Basic ********5b1e'"),
    ({"Authorization": "Bearer not-the-token-0000"}, 403, "********0000 is not valid"),
])
def test_the_credential_is_checked_before_the_body_and_before_a_fault(
        tiny: Callable[..., Tiny], headers: dict[str, str], status: int, words: str) -> None:
    emulator = tiny(faults=["500"])
    with client(emulator, headers) as c:
        for body in (b"not json", b"{}", json.dumps(items("a")).encode()):
            response = c.post("/v1/items", content=body)
            assert response.status_code == status
            assert words in response.json()["error"]["detail"]
            assert status == 403 or "Bearer <your Tiny API token>'" in response.json()["error"]["detail"]
        assert c.get("/v1/health").json() == {"ok": True}, "an unauthenticated route needs no credential"
    assert emulator.stored == {}
    assert emulator.faults.pending == 1, "a refused request draws no fault"
    assert TOKEN not in json.dumps(emulator.state())


# -- every fault kind ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind(tiny: Callable[..., Tiny], kind: str) -> None:
    emulator = tiny(faults=Faults([kind], slow_delay=60, retry_after_ms=2500, seed=3))
    keys = [f"{kind}-{i}" for i in range(5)]
    with client(emulator, read=0.3) as c:
        if kind in STATUS_FAULTS:
            response = c.post("/v1/items", json=items(*keys))
            assert response.status_code == STATUS_FAULTS[kind]
            assert response.json()["error"]["detail"].endswith(f"(emulated fault {kind})")
            retry = (response.headers.get("Retry-After"), response.headers.get("retry-after-ms"))
            assert retry == (("3", "2500") if kind == "429_retry_after" else (None, None))
            assert emulator.stored == {}
        elif kind == "store_part_then_500":
            response = c.post("/v1/items", json=items(*keys))
            assert response.status_code == 500
            assert 1 <= len(emulator.stored) <= 4
            assert list(emulator.stored) == keys[: len(emulator.stored)]
        elif kind == "store_all_then_drop":
            with pytest.raises(httpx.RemoteProtocolError):
                c.post("/v1/items", json=items(*keys))
            assert list(emulator.stored) == keys
        elif kind == "slow":
            with pytest.raises(httpx.ReadTimeout):
                c.post("/v1/items", json=items(*keys))
            wait_for(lambda: len(emulator.requests) == 1)
            assert list(emulator.stored) == keys, "stored before the slow answer"
        else:
            assert kind == "reset_before_read"
            with pytest.raises((httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
                c.post("/v1/items", json=items(*keys))
            assert emulator.stored == {}
    (logged,) = emulator.requests
    expected_status = {"store_all_then_drop": None, "reset_before_read": None, "slow": 204,
                       "store_part_then_500": 500}.get(kind, STATUS_FAULTS.get(kind))
    assert (logged.fault, logged.status) == (kind, expected_status)
    assert logged.events == (None if kind == "reset_before_read" else 5)
    with client(emulator) as c:
        assert c.post("/v1/items", json=items("after")).status_code == 204, "the script is consumed: normal again"
    assert emulator.summary()["faults"] == {kind: 1}


def test_faults_apply_to_ingest_routes_only(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny(faults=["503"])
    with client(emulator) as c:
        assert c.post("/v1/forms", data={"a": "1"}).status_code == 200
        assert c.post("/v1/items", json=items("x")).status_code == 503
    assert [r.fault for r in emulator.requests] == [None, "503"]


# -- routing and the platform's envelope -----------------------------------------------------


def test_an_unknown_path_or_method_is_a_404_in_the_platforms_envelope_and_not_logged(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    with client(emulator) as c:
        for method, path in (("GET", "/nowhere"), ("DELETE", "/v1/items"), ("POST", "/v1/items/x/y")):
            response = c.request(method, path)
            assert response.status_code == 404
            detail = response.json()["error"]["detail"]
            assert detail.startswith(f"no such endpoint: {method} {path}; the emulator serves POST /v1/items, "
                                     "GET /v1/items/{key}, POST /v1/forms")
            assert detail.endswith(" and GET /_emulator/state")
    assert emulator.requests == []


def test_problems_and_crashes_answer_in_the_envelope(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    with client(emulator) as c:
        not_json = c.post("/v1/items", content=b"{oops")
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["detail"]
        empty = c.post("/v1/items", content=b"")
        assert empty.status_code == 400 and "empty" in empty.json()["error"]["detail"]
        wrong = c.post("/v1/items", json={"things": []})
        assert wrong.status_code == 422 and wrong.json()["error"]["detail"].startswith("expected")
        crash = c.post("/v1/crash", json={})
        assert crash.status_code == 500 and "RuntimeError: boom" in crash.json()["error"]["detail"]
        brotli = c.post("/v1/items", content=b"{}", headers={"Content-Encoding": "br"})
        assert brotli.status_code == 400 and "unsupported Content-Encoding 'br'" in brotli.text
        assert c.get("/v1/items/none").json() == {"error": {"status": 404, "detail": "no item none"}}


def test_a_body_over_the_limit_is_a_413(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny(max_body_bytes=100)
    with client(emulator) as c:
        response = c.post("/v1/items", json=items(*[f"k{i}" for i in range(20)]))
    assert response.status_code == 413 and "larger than 100 bytes" in response.json()["error"]["detail"]
    assert emulator.stored == {}


# -- bodies and query strings ---------------------------------------------------------------


def test_a_gzip_body_is_decoded(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    with client(emulator) as c:
        raw = gzip.compress(json.dumps(items("g1", "g2")).encode())
        assert c.post("/v1/items", content=raw, headers={"Content-Encoding": "gzip"}).status_code == 204
    assert list(emulator.stored) == ["g1", "g2"]
    assert emulator.requests[0].body == items("g1", "g2")


def test_a_form_body_keeps_its_keys_literal(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    form = {"event_name": "api call", "payload[value]": "12", "payload[stripe_customer_id]": "cus_1", "empty": ""}
    with client(emulator) as c:
        response = c.post("/v1/forms", data=form)
    assert response.status_code == 200 and response.json() == form
    assert emulator.requests[0].body == form
    assert emulator.requests[0].events is None


def test_the_query_string_is_parsed_and_kept_apart_from_the_path(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    with client(emulator) as c:
        c.post("/v1/items", json=items("q1"))
        response = c.get("/v1/items/q1", params=[("expand", "a"), ("expand", "b c"), ("empty", "")])
    assert response.json() == {"item": {"key": "q1", "n": 0}, "query": {"expand": ["a", "b c"], "empty": [""]}}
    logged = emulator.requests[1]
    assert (logged.method, logged.path, logged.query) == ("GET", "/v1/items/q1", {"expand": ["a", "b c"], "empty": [""]})


# -- the request log, the store, state and summary --------------------------------------------


def test_the_log_masks_secrets_and_the_state_endpoint_serves_the_read_back(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    with client(emulator, {**AUTH, "X-Api-Key": "another-secret-9999"}) as c:
        assert c.post("/v1/items", json=items("a", "b")).status_code == 204
        assert c.post("/v1/items", json=items("a", "c")).status_code == 204
        state = c.get("/_emulator/state").json()
    headers = emulator.requests[0].headers
    assert (headers["authorization"], headers["x-api-key"]) == ("Bearer ********5b1e", "********9999")
    assert TOKEN not in json.dumps(state) and "another-secret" not in json.dumps(state)
    assert state == json.loads(json.dumps(emulator.state()))
    assert list(emulator.stored) == ["a", "b", "c"] and emulator.stored["a"] == {"key": "a", "n": 0}
    assert emulator.duplicates == 1 and [r.key for r in emulator.repeats()] == ["a"]
    assert emulator.max_events_in_a_request == 2
    assert emulator.summary() == {"requests": 2, "statuses": {"204": 2}, "faults": {}, "stored": 3,
                                  "duplicates": 1, "max_events_in_a_request": 2}
    emulator.reset()
    assert (emulator.requests, emulator.stored, emulator.duplicates, emulator.max_events_in_a_request) == ([], {}, 0, 0)


def test_the_rate_limit_is_spent_by_take(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny(rate_limit=0.001)  # the bucket holds rate_burst (2) items and refills a thousandth per second
    with client(emulator) as c:
        assert c.post("/v1/items", json=items("r1", "r2")).status_code == 204
        limited = c.post("/v1/items", json=items("r3"))
    assert limited.status_code == 429 and limited.json()["error"]["detail"] == "slow down"
    assert list(emulator.stored) == ["r1", "r2"]


# -- lifecycle and the command line -----------------------------------------------------------


def test_stop_frees_the_port(tiny: Callable[..., Tiny]) -> None:
    emulator = tiny()
    port = int(emulator.base_url.rsplit(":", 1)[1])
    with client(emulator) as c:
        assert c.get("/v1/health").status_code == 200  # a keep-alive connection stays open across stop()
        emulator.stop()
        emulator.stop()  # twice is harmless
        with pytest.raises(httpx.TransportError):
            c.get("/v1/health")
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
    with pytest.raises(ValueError, match="token"):
        Tiny([])


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert parser_for(Tiny).parse_args(["--token", TOKEN]).port == 9931
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen: dict[str, Any] = {}

    def drive() -> None:
        """Once the emulator answers, use it, then SIGTERM this process (main_for's handler is installed by then)."""
        connected = False
        try:
            deadline = time.monotonic() + 10
            while not connected and time.monotonic() < deadline:
                try:
                    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=5) as c:
                        c.get("/v1/health")
                        connected = True
                        seen["statuses"] = [c.post("/v1/items", json=items("cli")).status_code for _ in range(2)]
                        seen["stored"] = list(c.get("/_emulator/state").json()["stored"])
                except httpx.ConnectError:
                    time.sleep(0.02)
        finally:
            if connected:
                os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    code = main_for(Tiny, ["--port", str(port), "--token", TOKEN, "--faults", "500", "--fault-rate", "1", "--seed", "1"])
    driver.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == f"http://127.0.0.1:{port}"
    assert seen == {"statuses": [500, 500], "stored": []}
    assert json.loads(out[-1]) == {"requests": 3, "statuses": {"200": 1, "500": 2}, "faults": {"500": 2}, "stored": 0,
                                   "duplicates": 0, "max_events_in_a_request": 1}


@pytest.mark.parametrize("args", [["--faults", "teapot"], ["--fault-rate", "2"], []])
def test_the_command_line_refuses_bad_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main_for(Tiny, ["--port", "0"] + (["--token", TOKEN] if args else []) + args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "teapot" in err or "rate" in err or "--token" in err


def test_the_command_line_adds_the_platforms_own_flags(tiny: Callable[..., Tiny], capsys: pytest.CaptureFixture[str]) -> None:
    port = tiny().base_url.rsplit(":", 1)[1]
    code = main_for(Tiny, ["--port", port, "--token", TOKEN, "--body-limit", "10"],
                    add_arguments=lambda p: p.add_argument("--body-limit", type=int),
                    options=lambda args: {"max_body_bytes": args.body_limit})
    assert code == 1, "the port is taken"
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
