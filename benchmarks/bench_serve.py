"""Latency and throughput of `llm4cdsr serve`, measured from a second process over loopback.

    python benchmarks/bench_serve.py RUN_DIR [--requests 500] [--concurrency 8] [--seconds 10]

Starts `llm4cdsr serve RUN_DIR` on a free 127.0.0.1 port in its own process, waits for /health,
then (1) sends single-user requests one at a time and prints p50 / p90 / p99 latency, and (2) runs
`--concurrency` client threads for `--seconds` and prints throughput and its latencies. The load is
bounded in count and time, and goes to loopback only.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become healthy in time")


def percentiles(latencies_ms: list[float]) -> str:
    a = np.asarray(latencies_ms)
    return f"p50 {np.percentile(a, 50):.1f} ms, p90 {np.percentile(a, 90):.1f} ms, p99 {np.percentile(a, 99):.1f} ms (n={len(a)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--requests", type=int, default=500, help="sequential single-user requests")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads in the load phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load phase")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    users = pd.read_parquet(args.run.resolve().parent.parent / "dataset" / "users.parquet")["raw_id"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "llm4cdsr", "serve", str(args.run), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.perf_counter()
        wait_healthy(base, proc)
        print(f"server ready in {time.perf_counter() - started:.1f} s; {len(users):,} users; {os.cpu_count()} CPU cores shared by server and client")
        with httpx.Client(base_url=base, timeout=30) as client:
            for u in rng.choice(users, 20):  # warm-up
                client.post("/recommend", json={"user_id": str(u), "k": args.k}).raise_for_status()
            latencies = []
            for u in rng.choice(users, args.requests):
                t = time.perf_counter()
                client.post("/recommend", json={"user_id": str(u), "k": args.k}).raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
        print(f"single user, one request at a time: {percentiles(latencies)}")

        deadline = time.monotonic() + args.seconds

        def worker(seed: int) -> list[float]:
            local_rng = np.random.default_rng(seed)
            out = []
            with httpx.Client(base_url=base, timeout=30) as c:
                while time.monotonic() < deadline:
                    t = time.perf_counter()
                    c.post("/recommend", json={"user_id": str(local_rng.choice(users)), "k": args.k}).raise_for_status()
                    out.append((time.perf_counter() - t) * 1000)
            return out

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(worker, range(args.concurrency)))
        elapsed = time.perf_counter() - t0
        loaded = [x for r in results for x in r]
        print(f"load, {args.concurrency} concurrent clients for {elapsed:.1f} s: {len(loaded) / elapsed:.1f} requests/s; {percentiles(loaded)}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
