"""The HTTP server against a hostile client, over real HTTP (uvicorn): the 64 KiB cap counts the
bytes that arrive (chunked too), every malformed body is a 4xx, types are strict, and no error
reply repeats what the client sent."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pandas as pd
import pytest

pytest.importorskip("fastapi")
import uvicorn  # noqa: E402

from llm4cdsr.serve import MAX_BODY_BYTES, create_app  # noqa: E402


class Rows(list):
    """The stub's answer: rows (dicts), which the server sends as they are, and which also answer
    `.drop(columns=...)` as the DataFrame that `TrainedRecommender.recommend` returns."""

    def drop(self, columns):
        return pd.DataFrame(list(self)).drop(columns=columns)


class StubRecommender:
    """What create_app reads of a trained run, without training one."""

    domains = ("books", "movies")
    run_name = "stub"
    synthetic = False
    users = {"u1"}

    def _frame(self, user_id: str, k: int) -> Rows:
        return Rows({"user_id": user_id, "rank": r, "item_id": f"b{r}", "domain": "books", "title": "t", "score": 1.0}
                    for r in range(1, k + 1))

    def recommend(self, user_id, k=10, domain=None, exclude_seen=True):
        if user_id not in self.users:
            raise KeyError(f"unknown user {user_id!r}: not in the dataset of run stub")
        return self._frame(user_id, k)

    def recommend_history(self, history, k=10, domain=None, exclude_seen=True):
        if not any(h.startswith("b") for h in history):
            raise ValueError(f"none of the history's item ids is known ({history[0]!r})")
        rows = self._frame("", k)
        rows.attrs = {"unknown_history_ids": [h for h in history if not h.startswith("b")]}
        return rows

    def profile_text(self, user_id):
        return "[template] profile"


@contextlib.contextmanager
def running(config: uvicorn.Config):
    """A uvicorn server on a loopback port of its own, in a thread; yields the port."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def client():
    with running(uvicorn.Config(create_app(StubRecommender()), host="127.0.0.1", port=0, log_level="warning")) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            yield c


def _post(client, body: bytes, **headers) -> httpx.Response:
    return client.post("/recommend", content=body, headers={"content-type": "application/json", **headers})


def test_a_good_request_is_answered(client):
    reply = client.post("/recommend", json={"user_id": "u1", "k": 3, "why": True})
    assert reply.status_code == 200 and len(reply.json()["items"]) == 3 and reply.json()["profile"]


def test_a_history_reply_names_the_ids_left_out(client):
    reply = client.post("/recommend", json={"history": ["b1", "x9", "b2", "y7"], "k": 2})
    assert reply.status_code == 200 and reply.json()["unknown_history_ids"] == ["x9", "y7"]
    assert "unknown_history_ids" not in client.post("/recommend", json={"user_id": "u1", "k": 2}).json()


def test_the_cap_counts_streamed_bytes_of_a_chunked_body(client):
    piece = b"x" * 65536

    def chunks():  # no Content-Length: transfer-encoding chunked, 1 MiB in all
        yield b'{"history": ["'
        for _ in range(16):
            yield piece
        yield b'"]}'

    reply = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413 and len(reply.content) < 200
    declared = _post(client, b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}")
    assert declared.status_code == 413 and len(declared.content) < 200
    assert client.post("/recommend", json={"user_id": "u1"}).status_code == 200  # the server is fine after


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", b'"u1"', b"42", b"\xff\xfe\x00{", b'{"user_id": "u1",}', b"[" * 30000 + b"]" * 30000,
    b'{"user_id": "\\ud800"}', b'{"history": ["b1", "\\udfff"]}', b'{"user_id": {"$gt": ""}}',
], ids=["empty", "unclosed", "list", "null", "string", "number", "not-utf8", "trailing-comma", "deep-nesting",
        "lone-surrogate", "lone-surrogate-in-history", "object-id"])
def test_every_malformed_body_is_a_4xx(client, body):
    reply = _post(client, body)
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])


@pytest.mark.parametrize("payload", [
    {"user_id": "u1", "k": "5"}, {"user_id": "u1", "k": True}, {"user_id": "u1", "k": 5.0}, {"user_id": "u1", "why": "yes"},
    {"user_id": "u1", "why": 1}, {"user_id": "u1", "exclude_seen": "false"}, {"user_id": 7}, {"history": ["b1", 2]},
], ids=["k-str", "k-bool", "k-float", "why-str", "why-int", "exclude-str", "user-int", "history-int"])
def test_types_are_strict(client, payload):
    assert client.post("/recommend", json=payload).status_code == 422


def test_error_replies_never_repeat_the_input(client):
    secret = "SECRET-" + "q" * 300
    cases = [
        ({"user_id": secret}, 422),  # too long
        ({"user_id": "u1", "k": secret}, 422),
        ({"user_id": "u1", secret: 1}, 422),  # an unknown field: its name is the client's text too
        ({"user_id": "SECRET-nobody"}, 404),
        ({"history": ["SECRET-item"]}, 422),
        ({"user_id": "u1", "domain": secret}, 422),
    ]
    for payload, status in cases:
        reply = client.post("/recommend", json=payload)
        assert reply.status_code == status, (payload, reply.text[:300])
        assert "SECRET" not in reply.text and "qqqq" not in reply.text, reply.text[:300]
    big = _post(client, b'{"user_id": "u1", "history": ["' + b"z" * 60000 + b'"]}')
    assert big.status_code == 422 and len(big.content) < 1000


# ----- slow and idle clients (loopback, bounded in count and time) --------------------------------


@pytest.fixture(scope="module")
def strict_server():
    """The server as `serve` configures it, with short deadlines and a small connection limit."""
    from llm4cdsr.serve import server_config

    app = create_app(StubRecommender(), body_timeout_s=0.5)
    with running(server_config(app, port=0, log_level="warning", header_timeout_s=0.5, max_connections=6)) as port:
        yield port


def _closed_within(sock, seconds: float) -> bool:
    """True when the server closes `sock` (recv gives b"" or a reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_idle_connections_are_closed_and_the_server_keeps_answering(strict_server):
    idle = [socket.create_connection(("127.0.0.1", strict_server)) for _ in range(4)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{strict_server}", timeout=5) as c:
            assert c.get("/health").status_code == 200  # beside 4 idle connections
        assert all(_closed_within(s, 3.0) for s in idle)
    finally:
        for s in idle:
            s.close()


def test_a_head_sent_a_byte_at_a_time_is_cut_off(strict_server):
    sock = socket.create_connection(("127.0.0.1", strict_server))
    try:
        started = time.monotonic()
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\n")
        closed = False
        while time.monotonic() - started < 3.0 and not closed:
            try:
                sock.sendall(b"X-a: b\r\n")  # each byte would reset uvicorn's keep-alive timer
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            closed = _closed_within(sock, 0.2)
        assert closed and time.monotonic() - started < 2.0
    finally:
        sock.close()


def test_a_body_that_stops_coming_gets_a_408(strict_server):
    sock = socket.create_connection(("127.0.0.1", strict_server))
    try:
        sock.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"user_id\":")
        sock.settimeout(3.0)
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408")
    finally:
        sock.close()


def test_past_the_connection_limit_a_request_gets_a_503(strict_server):
    held = [socket.create_connection(("127.0.0.1", strict_server)) for _ in range(6)]
    try:
        time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{strict_server}", timeout=5) as c:
            assert c.get("/health").status_code == 503
    finally:
        for s in held:
            s.close()
