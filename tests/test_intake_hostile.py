"""The intake against hostile and odd clients (issue 12, points 3 and 5).

No client input gets a 5xx, and a 200 always means every event of the body is
in the queue: deep JSON, odd ``Authorization`` bytes, multi-member and trailing
gzip, arbitrary bodies (a hypothesis property). Customer.io's Data Pipelines
library (``Authorization: Bearer pk_us_…``) delivers. One request's memory is
bounded and given back, measured on a real ``actionmap serve`` process; a
client that sends half a request head, or a body too slowly, is disconnected.
No test asserts speed: waits have generous bounds, so they pass on a busy machine.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import event as count_case
from hypothesis import strategies as st

from destinations.metronome.emulator import MetronomeEmulator
from engine.runtime.serve.intake import MAX_BATCH_EVENTS, REQUEST_LIMIT, IntakeProtocol, create_app
from engine.limits import MAX_REQUEST_DEPTH
from engine.runtime.serve.queue import Queue
from tests.conftest import free_port
from tests.test_serve import (  # noqa: F401  (emulator, intake, service: fixtures)
    AUTH,
    CONNECTION,
    WRITE_KEY,
    Service,
    TestClient,
    assert_adds_up,
    emulator,
    intake,
    received,
    service,
    stored_events,
    track,
    wait_for,
)

CLOSE_BOUND = 120.0  # seconds a test waits for the server to close a slow client: generous, never a speed claim


def nested(depth: int) -> Any:
    """``nested_text`` as a value, read by the standard library (orjson writes at most 255 levels)."""
    return json.loads(nested_text(depth))


def nested_text(depth: int) -> bytes:
    """JSON text of ``depth`` levels of objects and arrays (1: an empty object), built without an encoder."""
    opening = "".join('{"k":' if level % 2 == 0 else "[" for level in range(depth - 1))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth - 1)))
    return (opening + "{}" + closing).encode()


def batch_text(*events: bytes, shared: bytes = b"") -> bytes:
    return b'{"batch":[' + b",".join(events) + b"]" + shared + b"}"


# -- 1. deep JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [251, 300, 510])
def test_an_event_nested_within_the_request_limit_is_stored_with_its_neighbours(
    intake: tuple[TestClient, Queue], depth: int
) -> None:
    """The worker dead-letters the deep event as invalid; the intake stores it, so the batch is not refused."""
    client, queue = intake
    deep = b'{"type":"track","messageId":"deep","properties":' + nested_text(depth - 1) + b"}"
    assert orjson.loads(deep) and depth + 2 <= MAX_REQUEST_DEPTH  # the body: {"batch": [event]}
    body = batch_text(orjson.dumps(track("before")), deep, orjson.dumps(track("after")))
    response = client.post("/v1/batch", content=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert received(queue) == 3
    stored = {e["messageId"]: e for e in (orjson.loads(row.body) for row in queue.claim(CONNECTION, 10, 60))}
    assert set(stored) == {"before", "deep", "after"}
    assert stored["deep"]["properties"] == nested(depth - 1) and "receivedAt" in stored["deep"]


def test_through_a_real_service_a_deep_event_is_invalid_and_its_neighbours_are_delivered(
    emulator: MetronomeEmulator, service: Callable[..., Service]
) -> None:
    running = service(emulator.base_url).start()
    deep = orjson.dumps(track("deep"))[:-1] + b',"x":' + nested_text(300) + b"}"
    body = batch_text(orjson.dumps(track("ok-1")), deep, orjson.dumps(track("ok-2")))
    assert httpx.post(running.url + "/v1/batch", content=body, headers=AUTH, timeout=10).status_code == 200
    metrics = running.drain()
    assert set(emulator.stored) == {"ok-1", "ok-2"}
    assert metrics["actionmap_events_invalid_total"] == 1 and metrics["actionmap_events_delivered_total"] == 2
    assert_adds_up(metrics)


def test_a_single_deep_event_is_stored(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    body = b'{"userId":"u1","event":"e","properties":' + nested_text(400) + b"}"
    assert client.post("/v1/track", content=body, headers=AUTH).status_code == 200
    assert received(queue) == 1


@pytest.mark.parametrize("depth", [511, 600, 1000])
def test_a_body_nested_past_the_request_limit_is_refused_whole(intake: tuple[TestClient, Queue], depth: int) -> None:
    client, queue = intake
    body = batch_text(orjson.dumps(track("good")), nested_text(depth))  # the body nests depth + 2 levels
    response = client.post("/v1/batch", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "too_deep" and f"{MAX_REQUEST_DEPTH} levels" in response.json()["message"]
    assert received(queue) == 0


def test_a_body_past_the_parsers_own_limit_is_invalid_json(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    response = client.post("/v1/batch", content=batch_text(nested_text(1100)), headers=AUTH)
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
    assert received(queue) == 0


def test_a_deep_shared_context_is_stored_in_every_event(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    body = batch_text(orjson.dumps(track("a")), orjson.dumps(track("b")), shared=b',"context":' + nested_text(300))
    assert client.post("/v1/batch", content=body, headers=AUTH).status_code == 200
    assert [e["context"] for e in stored_events(queue)] == [nested(300)] * 2


# -- 2. Authorization bytes ---------------------------------------------------------------


ODD_AUTHORIZATION = {
    "non-ASCII bytes": "Basic ¡¿é".encode("utf-8"),
    "latin-1 bytes": b"Basic \xe9\xff\xfe",
    "latin-1 bearer": b"Bearer \xe9t\xe9",
    "base64 of non-UTF-8": b"Basic " + base64.b64encode(b"\xff\xfe\xfd:"),
    "not base64": b"Basic !!!not*base64",
    "bad padding": b"Basic YWJj=",
    "scheme alone": b"Basic",
    "empty bearer": b"Bearer ",
    "empty": b"",
    "unknown scheme": b"Digest " + WRITE_KEY.encode(),
    "control bytes": b"Basic \x01\x02\x7f",
}


@pytest.mark.parametrize("case", ODD_AUTHORIZATION, ids=list(ODD_AUTHORIZATION))
def test_odd_authorization_bytes_are_a_401(intake: tuple[TestClient, Queue], case: str) -> None:
    client, queue = intake
    response = client.post("/v1/track", content=orjson.dumps(track("a")), headers={"Authorization": ODD_AUTHORIZATION[case]})
    assert response.status_code == 401, response.text
    assert response.json()["success"] is False and "write key is not valid" in response.json()["message"]
    assert received(queue) == 0


def test_a_bearer_write_key_is_accepted_and_a_wrong_one_refused(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    body = orjson.dumps({"batch": [track("b1"), track("b2")]})
    assert client.post("/v1/batch", content=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}).status_code == 200
    assert client.post("/v1/batch", content=body, headers={"Authorization": f"bearer  {WRITE_KEY} "}).status_code == 200
    wrong = client.post("/v1/batch", content=body, headers={"Authorization": f"Bearer {WRITE_KEY}x"})
    assert wrong.status_code == 401 and "Bearer" in wrong.json()["message"]
    with_body_key = orjson.dumps({"batch": [track("b3")], "writeKey": WRITE_KEY})  # a wrong header is not overridden
    assert client.post("/v1/batch", content=with_body_key, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert received(queue) == 4


# -- 3. gzip ------------------------------------------------------------------------------


def test_every_member_of_a_multi_member_gzip_body_is_kept(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    first = [track(f"m1-{i}") for i in range(5)]
    second = [track(f"m2-{i}") for i in range(7)]
    text = orjson.dumps({"batch": first + second})
    cut = text.index(b'"m2-0"')  # the second member starts in the middle of the batch
    body = gzip.compress(text[:cut]) + gzip.compress(b"") + gzip.compress(text[cut:])
    response = client.post("/v1/batch", content=body, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert received(queue) == 12
    assert [e["messageId"] for e in stored_events(queue)] == [e["messageId"] for e in first + second]


def test_gzip_members_are_bounded_in_all_together(intake: tuple[TestClient, Queue]) -> None:
    """Each member is under the request limit, together they are over it: still a bomb."""
    client, queue = intake
    half = b" " * (REQUEST_LIMIT // 2 + 10)
    body = gzip.compress(b'{"batch": [' + half) + gzip.compress(half + b"]}")
    response = client.post("/v1/batch", content=body, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 400 and response.json()["code"] == "request_too_large"
    assert received(queue) == 0


@pytest.mark.parametrize("tail", [b"x", b"\n", b"\x00" * 8, b"\x1f", b"\x1f\x8b", orjson.dumps({"batch": [track("t")]})],
                         ids=["a byte", "a newline", "zero padding", "half a magic", "a bare header start", "plain JSON"])
def test_bytes_after_the_gzip_stream_are_refused(intake: tuple[TestClient, Queue], tail: bytes) -> None:
    client, queue = intake
    body = gzip.compress(orjson.dumps({"batch": [track("g")]})) + tail
    response = client.post("/v1/batch", content=body, headers={**AUTH, "Content-Encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_gzip"
    assert received(queue) == 0


# -- 4. events per request ----------------------------------------------------------------


def test_events_per_request_are_capped_with_a_message_naming_the_limit(intake: tuple[TestClient, Queue]) -> None:
    client, queue = intake
    at_cap = b'{"batch":[' + b",".join([b"{}"] * MAX_BATCH_EVENTS) + b"]}"
    assert client.post("/v1/batch", content=at_cap, headers=AUTH).status_code == 200
    assert received(queue) == MAX_BATCH_EVENTS
    over = b'{"batch":[' + b",".join([b"{}"] * (MAX_BATCH_EVENTS + 1)) + b"]}"
    response = client.post("/v1/batch", content=over, headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"success": False, "code": "too_many_events", "message": response.json()["message"]}
    assert f"{MAX_BATCH_EVENTS} events per request" in response.json()["message"]
    assert received(queue) == MAX_BATCH_EVENTS


# -- 5. Customer.io's Data Pipelines library ---------------------------------------------


# -- 6. arbitrary bodies: never a 5xx, a 200 keeps every event --------------------------


_VALID_SCALARS = st.one_of(
    st.sampled_from([b"1e308", b"-1.7976931348623157e308", b"1e-400", b"5e-324", b"-0", b"0.0", b"1E+2", b"-0.0e-0",
                     b"123456789012345678901234567890", b"18446744073709551615", b"18446744073709551616",
                     b"-9223372036854775808", b"-9223372036854775809", b"null", b"true", b"false", b"[]", b"{}"]),
    st.integers().map(lambda n: str(n).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(orjson.dumps),
    st.text(max_size=12).map(orjson.dumps),
    st.text(max_size=12).map(lambda t: json.dumps(t).encode()),  # \u escapes
    st.sampled_from([b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\uffff"', b'"\xf0\x9f\x98\x80"', b'"\xe2\x80\xae"', b'"\xef\xbb\xbf"']),
)
_INVALID_SCALARS = st.sampled_from([b"1e400", b"-1e400", b"01", b"NaN", b"Infinity", b".5", b"+1", b"0x10", b'"\\ud800"',
                                    b'"\\udfff\\ud800"', b'"\xed\xa0\x80"', b'"\xff"', b'"\xc3"', b'"a\x00b"', b'"\\x41"', b"'s'"])
_SCALARS = st.one_of(_VALID_SCALARS, _VALID_SCALARS, _VALID_SCALARS, _INVALID_SCALARS)
_STRINGS = st.text(max_size=8).map(orjson.dumps) | st.sampled_from([b'"\\ud83d\\ude00"', b'""', b'"\\u0000"', b'"\\ud800"'])
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]")
    | st.lists(st.tuples(_STRINGS, inner), max_size=3).map(lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv) + b"}"),
    max_leaves=10,
)


def _deep(value: bytes, depth: int, arrays: bool) -> bytes:
    return (b"[" * depth + value + b"]" * depth) if arrays else (b'{"k":' * depth + value + b"}" * depth)


_DEEP = st.builds(_deep, _VALUES, st.integers(0, 1100), st.booleans())
_EVENTS = st.one_of(
    st.builds(lambda value, deep: b'{"type":"track","event":"e","userId":"u","properties":' + value + b',"x":' + deep + b"}",
              _VALUES, _DEEP),
    _VALUES,
    st.just(b'{"messageId":""}'),
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _VALUES,
    _DEEP,
    st.builds(lambda events, shared, key: b'{"batch":[' + b",".join(events) + b"]" + shared + key + b"}",
              st.lists(_EVENTS, max_size=6),
              st.sampled_from([b"", b',"context":{"ip":"1.2.3.4"}', b',"context":[]', b',"integrations":{"All":false}']),
              st.sampled_from([b"", b',"writeKey":"' + WRITE_KEY.encode() + b'"', b',"writeKey":7'])),
    _EVENTS,
)


@st.composite
def _gzipped(draw: st.DrawFn, body: bytes) -> bytes:
    """A gzip encoding of ``body``: whole, in several members, truncated, with bytes after it, or mangled."""
    how = draw(st.sampled_from(["whole", "members", "truncated", "trailing", "flipped"]))
    count_case(f"gzip {how}")
    if how == "members":
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        return b"".join(gzip.compress(piece) for piece in pieces)
    packed = gzip.compress(body)
    if how == "truncated":
        return packed[:draw(st.integers(0, len(packed) - 1))]
    if how == "trailing":
        return packed + draw(st.binary(min_size=1, max_size=8))
    if how == "flipped":
        at = draw(st.integers(0, len(packed) - 1))
        return packed[:at] + bytes([packed[at] ^ draw(st.integers(1, 255))]) + packed[at + 1:]
    return packed


_ODD_AUTHORIZATION = st.sampled_from([b"Bearer second-key", b"Basic \xe9\xff", b"Bearer \xff\xfe", b"Basic", b"Bearer"]) | \
    st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b)
_AUTHORIZATION = st.one_of(st.just(AUTH["Authorization"].encode()), st.just(AUTH["Authorization"].encode()),
                           st.just(f"Bearer {WRITE_KEY}".encode()), st.none(), _ODD_AUTHORIZATION)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(["/v1/batch", "/v1/batch", "/v1/track", "/v1/identify"]), body=_BODIES,
       compress=st.booleans(), authorization=_AUTHORIZATION, data=st.data())
def test_arbitrary_bodies_never_get_a_5xx_and_a_200_keeps_every_event(
    intake: tuple[TestClient, Queue], path: str, body: bytes, compress: bool, authorization: bytes | None, data: st.DataObject
) -> None:
    client, queue = intake
    headers: dict[str, bytes] = {} if authorization is None else {"Authorization": authorization}
    sent = body
    if compress:
        sent = data.draw(_gzipped(body))
        headers["Content-Encoding"] = b"gzip"
    before = received(queue)
    response = client.post(path, content=sent, headers=headers)
    count_case(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 401), response.text
    if response.status_code != 200:
        assert received(queue) == before
        assert response.json()["success"] is False and response.json()["message"]
        return
    value = orjson.loads(gzip.decompress(sent) if compress else sent)  # a 200 body is JSON, whole
    assert received(queue) - before == (len(value["batch"]) if path == "/v1/batch" else 1)


# -- 7. memory of a real service -----------------------------------------------------------


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak RSS) of a process, in bytes, from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


MiB = 1024 * 1024


def test_four_concurrent_requests_of_tiny_events_are_bounded_in_memory_and_give_it_back(
    emulator: MetronomeEmulator, service: Callable[..., Service]
) -> None:
    """480 KB of tiny events cost the service 700 MB each, kept (orjson's 4 KB buffers); now far less, and returned."""
    running = service(emulator.base_url).start()
    assert running.proc is not None
    pid = running.proc.pid
    start = _memory(pid)["VmRSS"]
    tiny = b'{"batch":[' + b",".join([b"{}"] * 160_000) + b"]}"  # past the cap: refused, after being parsed
    filler = b'{"p":"' + b"x" * 40 + b'"}'  # the cap's worth of events, 480 KB in all: accepted
    at_cap = b'{"batch":[' + b",".join([filler] * MAX_BATCH_EVENTS) + b"]}"
    assert 470_000 < len(tiny) <= 480_011 and 470_000 < len(at_cap) < REQUEST_LIMIT
    answers: list[int] = []

    def post(body: bytes) -> None:
        answers.append(httpx.post(running.url + "/v1/batch", content=body, headers=AUTH, timeout=600).status_code)

    for body, status in ((tiny, 400), (at_cap, 200), (at_cap, 200)):
        answers.clear()
        posters = [threading.Thread(target=post, args=(body,)) for _ in range(4)]
        for poster in posters:
            poster.start()
        for poster in posters:
            poster.join()
        assert answers == [status] * 4
    peak = _memory(pid)["VmHWM"]
    metrics = running.drain(timeout=600)
    assert metrics["actionmap_events_received_total"] == 8 * MAX_BATCH_EVENTS
    after = _memory(pid)["VmRSS"]
    assert peak - start < 300 * MiB, f"peak {peak / MiB:.0f} MiB from {start / MiB:.0f} MiB"
    assert after - start < 100 * MiB, f"{after / MiB:.0f} MiB kept after draining, from {start / MiB:.0f} MiB"


# -- 8. slow clients ---------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, bound: float = CLOSE_BOUND) -> bytes:
    """What the server sent before closing the connection (b"" or a reset ends it); fails past ``bound``."""
    sock.settimeout(bound)
    received_bytes = b""
    try:
        while chunk := sock.recv(65536):
            received_bytes += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept a slow client's connection open for {bound} s") from None
    return received_bytes


HALF_HEAD = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"


def test_a_real_service_closes_connections_that_send_half_a_request_head(
    emulator: MetronomeEmulator, service: Callable[..., Service]
) -> None:
    running = service(emulator.base_url).start()
    slow = []
    for number in range(60):
        sock = socket.create_connection(("127.0.0.1", running.port))
        if number:  # the first sends nothing at all
            sock.sendall(HALF_HEAD)
        slow.append(sock)
    try:
        answers = [_closed_by_server(sock) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert answers[0] == b""
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers[1:]), {a[:40] for a in answers}
    assert httpx.get(running.url + "/health", timeout=10).status_code == 200  # and it still serves
    assert running.post("/v1/batch", {"batch": [track("after-slow")]}).status_code == 200
    timeouts = [e for e in running.logs() if e["event"] == "request_head_timeout"]
    assert len(timeouts) == 59 and all(e["client"].startswith("127.0.0.1:") for e in timeouts)


class _QuickProtocol(IntakeProtocol):
    head_timeout = 0.5


@pytest.fixture
def quick_server(tmp_path: Path) -> Iterator[tuple[int, Queue]]:
    """A real uvicorn server in a thread with the intake's protocol and short head and body timeouts."""
    queue = Queue(tmp_path / "quick", [CONNECTION])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(queue, [WRITE_KEY], body_timeout=0.5), host="127.0.0.1", port=port,
                                           http=_QuickProtocol, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="the in-process server to start")
    try:
        yield port, queue
    finally:
        server.should_exit = True
        thread.join(30)
        queue.close()


def _head(body_length: int, *extra: bytes) -> bytes:
    auth = AUTH["Authorization"].encode()
    return (b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + auth +
            b"\r\nContent-Length: " + str(body_length).encode() + b"\r\n" + b"".join(extra) + b"\r\n")


def test_a_body_that_does_not_all_arrive_is_answered_408_and_closed(quick_server: tuple[int, Queue]) -> None:
    port, queue = quick_server
    body = orjson.dumps({"batch": [track("slow-body")]})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(len(body)) + body[:10])
        answer = _closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "body_timeout"
    assert received(queue) == 0


def test_a_kept_alive_connection_that_sends_half_its_next_head_is_closed(quick_server: tuple[int, Queue]) -> None:
    port, queue = quick_server
    body = orjson.dumps({"batch": [track("kept")]})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(len(body)) + body)
        first = b""
        while b'{"success":true}' not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        sock.sendall(HALF_HEAD)
        answer = _closed_by_server(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert received(queue) == 1


def test_a_head_trickled_a_byte_at_a_time_does_not_keep_the_connection(quick_server: tuple[int, Queue]) -> None:
    """Every byte is activity, but the deadline runs from the start of the head: it is not pushed back."""
    port, queue = quick_server
    trickle = (HALF_HEAD + b"X-Pad: " + b"p" * 8000)  # never a whole head, and under h11's 16 KB head limit
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.05)
        deadline = time.monotonic() + CLOSE_BOUND
        answer = None
        for byte in trickle:
            assert time.monotonic() < deadline, "the server kept a trickling client's connection through its head"
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(65536)
            except TimeoutError:
                continue  # nothing from the server yet: the next byte
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            break
        assert answer is not None, "the server kept a trickling client's connection through its whole head"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert received(queue) == 0
