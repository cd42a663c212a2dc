"""A small client for OpenAI-compatible servers (OpenAI, vLLM, Ollama, llama.cpp, ...).

Every request has a timeout and is retried a bounded number of times, with exponential backoff
and jitter, on 429, 5xx, timeouts, dropped connections and replies that are not the JSON we
asked for; a Retry-After header is honoured (capped at `backoff_max_s`). Other 4xx answers are
not retried: they will not get better. When retries run out the error names the stage.

The API key is read from the environment variable whose NAME the config gives, sent only in the
Authorization header, and scrubbed from every error message (some servers echo it back).
Requests run concurrently on a thread pool (httpx's sync client is thread-safe and releases the
GIL while waiting), never more than `concurrency` at once.
"""
from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import urlsplit

import httpx

from llm4cdsr.config import key_transport_problem

log = logging.getLogger(__name__)
# httpx logs every request at INFO; one line per call drowns the progress bar.
logging.getLogger("httpx").setLevel(logging.WARNING)

T = TypeVar("T")
R = TypeVar("R")


class LLMError(RuntimeError):
    """A model or server call failed for good; the message names the stage."""


class MalformedReply(ValueError):
    """A 200 reply whose body is not the JSON shape the protocol promises."""


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter (so concurrent clients do not retry in lockstep)."""
        base = min(self.backoff_max_s, self.backoff_s * (2**attempt))
        return base * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class StoppablePool(ThreadPoolExecutor):
    """A thread pool with a stop signal: once set (the first fatal error of `run_concurrently`),
    requests still in flight give up at their next retry instead of sleeping through their backoff,
    so the stage ends (and the process exits) right after its error is shown."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = threading.Event()


class OpenAIClient:
    """POSTs JSON to one OpenAI-compatible server with retries; shared by all worker threads."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        policy: RetryPolicy | None = None,
        concurrency: int = 4,
        stage: str = "llm",
    ):
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.concurrency = max(1, int(concurrency))
        self.stage = stage
        self.api_key_env = api_key_env
        self._key = os.environ.get(api_key_env, "") if api_key_env else ""
        headers = {"Content-Type": "application/json"}
        if self._key:
            problem = key_transport_problem(self.base_url, api_key_env, f"{stage} base_url")
            if problem:
                raise LLMError(f"{stage}: {problem}")
            # Loudly: a config file decides which variable goes where.
            log.warning("%s: sending $%s as the API key to %s", stage, api_key_env, urlsplit(self.base_url).netloc)
            headers["Authorization"] = f"Bearer {self._key}"
        elif api_key_env:
            log.warning("%s: environment variable %s is not set; sending requests without an API key", stage, api_key_env)
        self._headers = headers
        # Worker threads live as long as the client, so each keeps its connection across calls.
        self.pool = StoppablePool(max_workers=self.concurrency, thread_name_prefix=f"{stage}-http")
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()

    def _client(self) -> httpx.Client:
        """This thread's own keep-alive connection.

        One client per worker thread rather than one shared pool: httpcore's pool scans every
        connection on every request, which cost more CPU than the request itself at 32 in flight.
        The thread pool already bounds concurrency.
        """
        client = getattr(self._local, "client", None)
        if client is None:
            # TCP_NODELAY: a request goes out as headers then body; with Nagle's algorithm the body
            # waits for the server's delayed ACK (~40 ms on Linux), which halves throughput at
            # 50 ms latency.
            transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                                            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            client = httpx.Client(headers=self._headers, timeout=httpx.Timeout(self.policy.timeout_s),
                                  transport=transport)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def post(self, path: str, payload: dict, check: Callable[[Any], Any]) -> Any:
        """POST and return `check(json)`; `check` raises MalformedReply on a wrong shape."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempts = self.policy.max_retries + 1
        reason = ""
        for attempt in range(attempts):
            if self.pool.stop.is_set():
                raise LLMError(f"{self.stage}: stopped after another request's error")
            wait_s: float | None = None
            try:
                response = self._client().post(url, json=payload)
            except httpx.TimeoutException:
                reason = f"timed out after {self.policy.timeout_s:g} s"
            except httpx.TransportError as e:
                reason = f"connection error ({type(e).__name__}: {self.scrub(str(e))})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        # A reply that echoes the key is scrubbed before anything (the cache, a profile) keeps it.
                        if self._key and self._key.encode() in response.content:
                            return check(json.loads(self.scrub(response.text)))
                        return check(response.json())
                    except (ValueError, MalformedReply) as e:  # JSONDecodeError is a ValueError
                        reason = f"malformed reply ({self.scrub(str(e))[:200]})"
                elif status == 429 or status >= 500:
                    reason = f"HTTP {status}"
                    wait_s = parse_retry_after(response.headers.get("retry-after"))
                else:
                    hint = f"; check ${self.api_key_env}" if status in (401, 403) and self.api_key_env else ""
                    raise LLMError(
                        f"{self.stage}: {url} answered HTTP {status}{hint}: {self.scrub(response.text)[:300]}"
                    )
            if attempt + 1 == attempts:
                break
            delay = min(wait_s, self.policy.backoff_max_s) if wait_s is not None else self.policy.delay(attempt)
            log.debug("%s: %s: %s; retry %d/%d in %.2f s", self.stage, url, reason, attempt + 1, self.policy.max_retries, delay)
            self.pool.stop.wait(delay)  # a sleep that the stop signal cuts short
        raise LLMError(f"{self.stage}: {url} failed after {attempts} attempts; last error: {reason}")


def run_concurrently(
    fn: Callable[[T], R], items: Iterable[T], concurrency: int, pool: ThreadPoolExecutor | None = None
) -> Iterator[list[tuple[int, R]]]:
    """Apply `fn` to `items` on a thread pool (`pool`, or a new one); yield (index, result) lists as they finish.

    Each yield holds every result finished since the last one, so the caller can commit them in
    one transaction. At most `concurrency * 2` items are in flight, so a million items do not
    become a million futures. The first error stops the run (finished results were already
    yielded) and is raised.
    """
    concurrency = max(1, int(concurrency))
    iterator = iter(enumerate(items))
    pending: dict[Future, int] = {}
    own_pool = pool is None
    if isinstance(pool, StoppablePool):
        pool.stop.clear()
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm")
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < concurrency * 2:
                try:
                    index, item = next(iterator)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, item)] = index
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            finished: list[tuple[int, R]] = []
            error: BaseException | None = None
            for f in done:
                index = pending.pop(f)
                exc = f.exception()
                if exc is None:
                    finished.append((index, f.result()))
                elif error is None:
                    error = exc
            if finished:
                yield finished
            if error is not None:
                raise error
    finally:
        for f in pending:
            f.cancel()
        if pending and isinstance(pool, StoppablePool):  # stopped early: in-flight requests give up too
            pool.stop.set()
        if own_pool:
            pool.shutdown(wait=False, cancel_futures=True)
