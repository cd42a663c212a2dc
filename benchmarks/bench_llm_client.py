"""OpenAI-compatible client throughput against the local stub server, and cached re-run speed.

1. Chat: the stub answers each request after 50 ms; with N requests in flight the ceiling is
   N * 20 requests/s. We send N * 60 distinct requests through the stage's path (CachedChat on
   an empty cache: concurrency limit, retries armed, a cache commit per finished batch) and report
   requests/s against the target 0.8 * N * 20.
2. Embeddings: 100,000 distinct texts through CachedEmbedder (batches of 64, concurrency 32), then
   the same 100,000 again: a fully cached re-run must make no request and take < 5 s.
3. Chat cache: 100,000 chat replies written in batches, then answered from the cache (< 5 s).

The stub runs in its own process (tests/openai_stub.py) so that server and client do not share
one interpreter lock. Only 127.0.0.1 is contacted.

    python benchmarks/bench_llm_client.py [--latency 0.05] [--concurrency 8 32] [--entries 100000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm4cdsr.llm.cache import Cache
from llm4cdsr.llm.chat import CachedChat, ChatRequest, OpenAIChat
from llm4cdsr.llm.embedders import CachedEmbedder, OpenAIEmbedder
from llm4cdsr.llm.http import RetryPolicy

STUB = Path(__file__).resolve().parents[1] / "tests" / "openai_stub.py"
POLICY = RetryPolicy(timeout_s=10.0, max_retries=3, backoff_s=0.1, backoff_max_s=2.0)


def start_stub(latency: float, dim: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(STUB), "--latency", str(latency), "--dim", str(dim),
                             "--max-seconds", "900"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if line[:1] != ["PORT"]:
        proc.kill()
        raise SystemExit(f"stub did not start: {line}")
    return proc, f"http://127.0.0.1:{line[1]}/v1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    args = p.parse_args()

    proc, url = start_stub(args.latency, args.dim)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"stub at {url}, {args.latency * 1000:.0f} ms per request")
            for n in args.concurrency:
                with Cache(Path(tmp) / f"chat-{n}.sqlite") as cache:
                    chat = CachedChat(OpenAIChat("stub", url, api_key_env="", concurrency=n, policy=POLICY), cache,
                                      progress=False)
                    requests = [ChatRequest((("user", f"request {n}-{i}"),), 32) for i in range(n * 60)]
                    chat.complete(requests[:n])  # open the connections first
                    t0 = time.perf_counter()
                    chat.complete(requests[n:])
                    rate = (len(requests) - n) / (time.perf_counter() - t0)
                    target = 0.8 * n * (1.0 / args.latency)
                    print(f"chat, concurrency {n:3d}: {rate:7.1f} requests/s (ceiling {n / args.latency:.0f}, "
                          f"target >= {target:.0f}: {'PASS' if rate >= target else 'FAIL'})")

            texts = [f"item text number {i}: a product with a name" for i in range(args.entries)]
            with Cache(Path(tmp) / "emb.sqlite") as cache:
                emb = OpenAIEmbedder("stub", url, api_key_env="", batch_size=64, concurrency=32, policy=POLICY)
                t0 = time.perf_counter()
                CachedEmbedder(emb, cache, progress=False).embed(texts)
                fill = time.perf_counter() - t0
            # Re-run against a server that does not exist: any request would fail the run.
            with Cache(Path(tmp) / "emb.sqlite") as cache:
                dead = OpenAIEmbedder("stub", "http://127.0.0.1:9/v1", api_key_env="", batch_size=64,
                                      policy=RetryPolicy(0.5, 0, 0.01, 0.01))
                rerun = CachedEmbedder(dead, cache, progress=False)
                t0 = time.perf_counter()
                vectors = rerun.embed(texts)
                cached = time.perf_counter() - t0
            assert rerun.calls == 0 and vectors.shape == (args.entries, args.dim)
            print(f"embeddings: {args.entries} texts x {args.dim}-d first run {fill:.1f} s "
                  f"({args.entries / fill:.0f} texts/s); fully cached re-run {cached:.2f} s, 0 requests "
                  f"(target < 5 s: {'PASS' if cached < 5 else 'FAIL'})")

            requests = [ChatRequest((("system", "You profile users."), ("user", f"titles of cluster {i}")), 96)
                        for i in range(args.entries)]
            with Cache(Path(tmp) / "chat-cache.sqlite") as cache:
                dead_chat = CachedChat(OpenAIChat("stub", "http://127.0.0.1:9/v1", api_key_env="",
                                                  policy=RetryPolicy(0.5, 0, 0.01, 0.01)), cache, progress=False)
                t0 = time.perf_counter()
                keys = dead_chat.keys(requests)
                for start in range(0, len(keys), 5000):  # batches, as the stage commits them
                    cache.put_texts([(k, f"This user enjoys item group {start + j}.")
                                     for j, k in enumerate(keys[start : start + 5000])])
                write = time.perf_counter() - t0
                t0 = time.perf_counter()
                replies = dead_chat.complete(requests)
                cached = time.perf_counter() - t0
            assert dead_chat.calls == 0 and len(replies) == args.entries
            print(f"chat cache: {args.entries} replies written in {write:.2f} s; fully cached re-run {cached:.2f} s, "
                  f"0 requests (target < 5 s: {'PASS' if cached < 5 else 'FAIL'})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
