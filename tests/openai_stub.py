"""A real local HTTP server that speaks the OpenAI embeddings and chat protocol, for tests and
benchmarks. Binds 127.0.0.1 on a free port; nothing leaves the machine.

- POST /v1/embeddings: deterministic fake vectors from the SHA-256 of each input text.
- POST /v1/chat/completions: a canned reply (by default built from a hash of the prompt; tests
  may set `reply_fn`).
- Counts requests per endpoint, remembers the texts and prompts it served and the Authorization
  headers it saw.
- Fault injection: `inject("429", n, retry_after="1")`, `inject("500", n)`, `inject("timeout", n)`
  (holds the request for `hang_s` seconds), `inject("malformed", n)` (a 200 with a broken body),
  `inject("400", n)`, `inject("401", n)` (echoes the Authorization header, as some servers do). Faults are used in order, one per request, then requests succeed again.
- `latency_s` delays every answer (to measure client concurrency).

Run alone (for benchmarks): `python tests/openai_stub.py --latency 0.05` prints `PORT <n>` and
serves until killed or `--max-seconds` pass.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np


def fake_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    v /= np.linalg.norm(v)
    return [float(x) for x in v]  # float32 -> float -> JSON -> float32 is exact


_OPENINGS = ["This user enjoys", "The user likes", "This shopper prefers", "The customer is drawn to"]
_TOPICS = ["practical everyday products", "quality ingredients and snacks", "well-made kitchen tools",
           "healthy and organic choices", "good value brands", "gourmet treats and variety"]


def default_reply(prompt: str) -> str:
    """A deterministic, plausible reply of about 15 words."""
    h = hashlib.sha256(prompt.encode("utf-8")).digest()
    return (f"{_OPENINGS[h[0] % len(_OPENINGS)]} {_TOPICS[h[1] % len(_TOPICS)]}, "
            f"with a taste for {_TOPICS[h[2] % len(_TOPICS)]} and reliable favourites.")


class StubState:
    def __init__(self, dim: int, latency_s: float, hang_s: float):
        self.dim = dim
        self.latency_s = latency_s
        self.hang_s = hang_s
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.embedded_texts: list[str] = []
        self.chat_prompts: list[str] = []
        self.auth_headers: set[str] = set()
        self.faults: deque = deque()
        self.in_flight = 0
        self.max_in_flight = 0  # most requests the server held at once: what the client's concurrency really was
        self.reply_fn: Callable[[str], str] = default_reply

    def next_fault(self) -> tuple[str, str] | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread, as real servers
    disable_nagle_algorithm = True  # headers and body are two writes: do not hold the second back
    state: StubState

    def log_message(self, fmt: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        st = self.state
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        path = self.path.rstrip("/")
        with st.lock:
            st.counts[path] += 1
            st.counts["total"] += 1
            auth = self.headers.get("Authorization")
            if auth:
                st.auth_headers.add(auth)
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            self._answer(st, raw, path)
        finally:
            with st.lock:
                st.in_flight -= 1

    def _answer(self, st: StubState, raw: bytes, path: str) -> None:
        if st.latency_s:
            time.sleep(st.latency_s)
        fault = st.next_fault()
        try:
            if fault is not None:
                kind, arg = fault
                if kind == "429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": arg or "1"})
                if kind == "500":
                    return self._send(500, b'{"error": {"message": "internal error"}}')
                if kind == "401":  # as some real servers do, echo the credential back in the error
                    body = json.dumps({"error": {"message": f"invalid key: {self.headers.get('Authorization')}"}})
                    return self._send(401, body.encode("utf-8"))
                if kind == "400":
                    return self._send(400, b'{"error": {"message": "bad request"}}')
                if kind == "malformed":
                    return self._send(200, b'{"data": [ {"embedding": [0.1, ')
                if kind == "timeout":
                    time.sleep(st.hang_s)
                    return self._send(500, b'{"error": {"message": "too late"}}')
            payload = json.loads(raw)
            if path.endswith("/embeddings"):
                texts = payload["input"]
                texts = [texts] if isinstance(texts, str) else texts
                with st.lock:
                    st.embedded_texts.extend(texts)
                data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, st.dim)} for i, t in enumerate(texts)]
                body = {"object": "list", "data": data, "model": payload.get("model"),
                        "usage": {"prompt_tokens": 0, "total_tokens": 0}}
            elif path.endswith("/chat/completions"):
                prompt = "\n".join(m["content"] for m in payload["messages"])
                with st.lock:
                    st.chat_prompts.append(prompt)
                text = st.reply_fn(prompt)
                body = {"id": "stub", "object": "chat.completion", "model": payload.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}]}
            else:
                return self._send(404, b'{"error": {"message": "no such endpoint"}}')
            self._send(200, json.dumps(body).encode("utf-8"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer


class OpenAIStub:
    """`with OpenAIStub() as stub: ... stub.url ...` -- a server in a background thread."""

    def __init__(self, dim: int = 32, latency_s: float = 0.0, hang_s: float = 2.0, port: int = 0):
        self.state = StubState(dim, latency_s, hang_s)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def counts(self) -> Counter:
        return self.state.counts

    def inject(self, kind: str, n: int = 1, retry_after: str = "") -> None:
        with self.state.lock:
            self.state.faults.extend([(kind, retry_after)] * n)

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.counts.clear()
            self.state.embedded_texts.clear()
            self.state.chat_prompts.clear()
            self.state.max_in_flight = 0

    def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Until no request is held (a 'timeout' fault holds one after its client gave up)."""
        deadline = time.monotonic() + timeout_s
        while self.state.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    def start(self) -> "OpenAIStub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stub_overrides(stub: OpenAIStub, key_env: str = "LLM4CDSR_STUB_KEY", chat: bool = True) -> list[str]:
    """Config overrides that point llm4cdsr's embed (and profile) stages at this stub, with fast retries."""
    out = [
        "embed.backend=openai", "embed.model=stub-embed", f"embed.base_url={stub.url}", f"embed.api_key_env={key_env}",
        "embed.batch_size=16", "embed.concurrency=4", "embed.timeout_s=1.0", "embed.backoff_s=0.01",
        "embed.backoff_max_s=0.05", "embed.max_retries=3", "embed.local_dim=8",
    ]
    if chat:
        out += [
            "profile.backend=openai", "profile.chat_model=stub-chat", f"profile.base_url={stub.url}",
            f"profile.api_key_env={key_env}", "profile.concurrency=4", "profile.timeout_s=1.0", "profile.backoff_s=0.01",
            "profile.backoff_max_s=0.05", "profile.max_retries=3",
        ]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop by itself after this long")
    args = p.parse_args()
    stub = OpenAIStub(args.dim, args.latency, port=args.port)
    stub.start()
    print(f"PORT {stub.port}", flush=True)
    try:
        time.sleep(args.max_seconds)
    except KeyboardInterrupt:
        pass
    stub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

