"""How every stage grows with the number of users: synthetic worlds of growing size, each stage
timed in a fresh process with its peak memory, and the growth exponent of each printed.

    python benchmarks/bench_scale.py                          # 20k, 80k, 320k users (hours on a small CPU)
    python benchmarks/bench_scale.py --users 2000,8000 --embedder stub

Per size N: a world of N users and N/2 items (N/5 of domain A, 3N/10 of B; the demo world's
ratio), then, each a separate `llm4cdsr` process (peak RSS from wait4): synth (the generator),
prepare (from the generated tables), embed (item texts -> vectors -> PCA), profile (template
profiles and their embeddings), train (one epoch with its validation and the final test
evaluation; `results.json` splits the epoch from the evaluation), evaluate (both protocols, valid
and test, the run's best weights), recommend (a batch for 1,000 users, or all of them with
--recommend-all), serve (start-up until /health answers; its peak RSS; then its single-user
latency idle and while the same batch recommend runs again beside it). Exponents are slopes of log
time (and log peak RSS) against log users between the first and last size; evaluation and
recommend also against users x items of the target domain, their expected cost.

`--embedder stub` embeds through tests/openai_stub.py (vectors from a hash, no model) in its own
process: what is measured is then our code around the model (batching, cache, PCA, files), not
the model's arithmetic, which is linear in texts anyway (and on a CPU the larger part: the
`profile` stage embeds one text per user). `--embedder onnx` (default) uses the packaged model.
Everything runs on `--threads` threads (default 1).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_port, wait_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "openai_stub.py"


def run_stage(cmd: list[str], env: dict, log: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds: user + system) of one command in its own process;
    raises when it fails. CPU time is what other jobs on the machine change least."""
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:5])} failed with exit code {proc.returncode}; see {log}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # ru_maxrss: KB on Linux


def serve_during_recommend(run: Path, env: dict, log: Path, user: str, recommend: list[str],
                           timeout_s: float = 600) -> dict:
    """`llm4cdsr serve` started (seconds until /health answers 200, peak RSS in MB then), its
    single-user latency idle, then the batch `recommend` command run beside it while one client
    keeps asking the server for one user's top 10: the server must keep answering."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"user_id": user, "k": 10}
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "llm4cdsr", "serve", str(run), "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, timeout_s)  # raises where the server exits or never answers (its log: `log`)
        startup = (time.perf_counter() - t0, _peak_rss_mb(proc.pid))
        with httpx.Client(base_url=url, timeout=60) as client:
            def ask() -> float | None:
                t = time.perf_counter()
                try:
                    ok = client.post("/recommend", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                return (time.perf_counter() - t) * 1000 if ok else None

            idle = [ask() for _ in range(50)]
            batch: dict = {}
            worker = threading.Thread(target=lambda: batch.update(result=run_stage(recommend, env, log)), daemon=True)
            worker.start()
            during = []
            while worker.is_alive():
                during.append(ask())
            worker.join()
        if "result" not in batch:
            raise RuntimeError(f"recommend failed while serving; see {log}")
        answered = [ms for ms in during if ms is not None]
        return {"serve": startup, "recommend_beside_serve": batch["result"], "serve_idle_p50_ms": _p(idle, 50),
                "serve_during_p50_ms": _p(answered, 50), "serve_during_p99_ms": _p(answered, 99),
                "serve_during_requests": len(during), "serve_during_failed": len(during) - len(answered),
                "serve_peak_mb": _peak_rss_mb(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _p(values: list, q: float) -> float:
    kept = sorted(v for v in values if v is not None)
    return kept[min(len(kept) - 1, int(len(kept) * q / 100))] if kept else float("nan")


def start_stub(dim: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(STUB), "--dim", str(dim), "--max-seconds", "86400"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"the stub did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/v1"


def one_size(n: int, base: Path, args, overrides: list[str], env: dict, save=lambda out: None) -> dict:
    """Every stage at n users; `save(out)` after each, so that a size stopped midway keeps its finished stages."""
    items_a, items_b = max(50, n // 5), max(50, 3 * n // 10)
    raw, ws = base / f"raw-{n}", base / f"ws-{n}"
    log = base / f"log-{n}.txt"
    cli = [sys.executable, "-m", "llm4cdsr"]
    common = [f"train.num_threads={args.threads}", "train.progress=false"] + overrides
    out: dict = {"users": n, "items": items_a + items_b, "target_items": items_b}
    out["synth"] = run_stage(cli + ["synth", "--out", str(raw), "--users", str(n), "--items-a", str(items_a),
                                    "--items-b", str(items_b)], env, log)
    save(out)
    out["prepare"] = run_stage(cli + ["prepare", "--interactions", str(raw), "--out", str(ws), "--no-progress"], env, log)
    save(out)
    out["embed"] = run_stage(cli + ["embed", "-w", str(ws)] + common, env, log)
    save(out)
    out["profile"] = run_stage(cli + ["profile", "-w", str(ws)] + common, env, log)
    save(out)
    out["train"] = run_stage(cli + ["train", "-w", str(ws), "train.epochs=1", "run.name=scale"] + common, env, log)
    run = ws / "runs" / "scale"
    timing = json.loads((run / "results.json").read_text())["time"]
    out["epoch"] = (timing["train_s_per_epoch"], out["train"][1])
    out["final_eval"] = (timing["final_eval_s"], out["train"][1])
    save(out)
    out["evaluate"] = run_stage(cli + ["evaluate", str(run)], env, log)
    save(out)
    users = [line.split(",")[0] for line in (raw / "interactions.csv").read_text().splitlines()[1:]]
    users = list(dict.fromkeys(users))
    if not args.recommend_all:
        users = users[:: max(1, len(users) // 1000)][:1000]
    (base / f"users-{n}.txt").write_text("\n".join(users) + "\n")
    out["recommend_users"] = len(users)
    recommend = cli + ["recommend", "--run", str(run), "--users-file", str(base / f"users-{n}.txt"),
                       "--out", str(base / f"recs-{n}.csv")]
    out["recommend"] = run_stage(recommend, env, log)  # alone, for its exponent; then again beside the server
    save(out)
    out.update(serve_during_recommend(run, env, log, users[0], recommend))
    if not args.keep:
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(ws, ignore_errors=True)
    return out


STAGES = ["synth", "prepare", "embed", "profile", "epoch", "final_eval", "evaluate", "recommend", "serve"]
PER_USER_ITEM = {"final_eval", "evaluate"}  # full ranking scores every user against every target item


def exponent(x0: float, x1: float, y0: float, y1: float) -> float:
    return math.log(max(y1, 1e-9) / max(y0, 1e-9)) / math.log(x1 / x0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="20000,80000,320000", help="comma-separated world sizes (default 20000,80000,320000)")
    ap.add_argument("--embedder", choices=["onnx", "stub"], default="onnx", help="item and profile embeddings (default onnx)")
    ap.add_argument("--threads", type=int, default=1, help="threads of every stage (default 1)")
    ap.add_argument("--recommend-all", action="store_true", help="recommend for every user, not a sample of 1,000")
    ap.add_argument("--dir", default="", help="working folder (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep each size's workspace")
    ap.add_argument("--json", default="", help="also write the figures here, size by size; sizes already there are not run again")
    ap.add_argument("overrides", nargs="*", help="config overrides for every stage, e.g. model.hidden=64")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.users.split(","))

    # The stub takes any key; a named variable keeps the client from warning that none is set.
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1",
               HF_HUB_OFFLINE="1", LLM4CDSR_BENCH_KEY="stub")
    overrides = list(args.overrides)
    stub = None
    if args.embedder == "stub":
        stub, url = start_stub(384)
        overrides = ["embed.backend=openai", "embed.model=stub-embed", f"embed.base_url={url}", "embed.api_key_env=LLM4CDSR_BENCH_KEY",
                     "embed.concurrency=2"] + overrides
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    # Each finished size is written to --json at once, and a size already there is not measured
    # again: a crash or Ctrl-C at 320k users keeps the hours spent on the smaller worlds.
    # A size stopped midway is kept as a partial record ("complete": false, its finished stages) and
    # measured again whole on the next call.
    done, partial = {}, {}
    if args.json and Path(args.json).exists():
        for r in json.loads(Path(args.json).read_text()):
            (done if r.get("complete", True) else partial)[r["users"]] = r
    results = []

    def write(current: dict | None = None) -> None:
        if not args.json:
            return
        rows = {**partial, **done, **{r["users"]: r for r in results}}
        if current is not None:
            rows[current["users"]] = {**current, "complete": False}
        Path(args.json).write_text(json.dumps([rows[k] for k in sorted(rows)], indent=2) + "\n")
    try:
        for n in sizes:
            if n in done:
                print(f"{n:,} users: read from {args.json}", file=sys.stderr, flush=True)
                results.append(done[n])
                continue
            t0 = time.perf_counter()
            results.append({**one_size(n, base, args, overrides, env, save=write), "complete": True})
            partial.pop(n, None)
            print(f"{n:,} users done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            write()
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait()
        if not args.dir and not args.keep:
            shutil.rmtree(base, ignore_errors=True)

    print(f"embedder {args.embedder}, {args.threads} thread(s); items = users / 2; recommend: "
          f"{'all users' if args.recommend_all else 'a batch of up to 1,000 users'}")
    head = f"{'stage':<11}" + "".join(f"{n:>10,} users   " for n in sizes) + "  time exp.  RSS exp.  CPU exp."
    print(head)
    first, last = results[0], results[-1]
    for stage in STAGES:
        cells = "".join(f"{r[stage][0]:>8.1f} s {r[stage][1]:>6.0f} MB" for r in results)
        if len(results) > 1:
            te = exponent(first["users"], last["users"], first[stage][0], last[stage][0])
            me = exponent(first["users"], last["users"], first[stage][1], last[stage][1])
            note = ""
            if stage in PER_USER_ITEM:
                work0 = first["users"] * first["target_items"]
                work1 = last["users"] * last["target_items"]
                note = f"  (against users x target items: {exponent(work0, work1, first[stage][0], last[stage][0]):.2f})"
            if stage == "recommend" and not args.recommend_all:
                note = "  (a fixed 1,000 users: grows with the items each one is ranked against)"
            # CPU seconds where every size has them (stages run as their own process)
            ce = (f"{exponent(first['users'], last['users'], first[stage][2], last[stage][2]):>8.2f}"
                  if all(len(r[stage]) > 2 for r in (first, last)) else f"{'-':>8}")
            cells += f"  {te:>8.2f}  {me:>8.2f}  {ce}{note}"
        print(f"{stage:<11}{cells}")
    for r in results:
        print(f"serve at {r['users']:,} users: single-user p50 {r['serve_idle_p50_ms']:.1f} ms idle; while the batch "
              f"recommend ran: {r['serve_during_requests']} requests, {r['serve_during_failed']} failed, p50 "
              f"{r['serve_during_p50_ms']:.1f} ms, p99 {r['serve_during_p99_ms']:.1f} ms; peak RSS {r['serve_peak_mb']:.0f} MB")
    for n, r in sorted(partial.items()):  # stopped midway: its finished stages, exponents from the smallest size
        cells = ", ".join(f"{stage} {r[stage][0]:.1f} s ({exponent(first['users'], n, first[stage][0], r[stage][0]):.2f})"
                          for stage in STAGES if stage in r)
        print(f"{n:,} users, stopped before the end (time exponent from {first['users']:,} users in brackets): {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
