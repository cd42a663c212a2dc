"""The Python API against the CLI on a shared machine: seconds per training epoch, side by side.

    python benchmarks/bench_api_threads.py [--epochs 3] [--threads 2] [--rounds 2]

torch's OpenMP threads spin while they wait (OMP_WAIT_POLICY=ACTIVE, the default) and starve
everything else on a busy machine, themselves included. The CLI sets OMP_WAIT_POLICY=PASSIVE before
torch loads; `import llm4cdsr.api` now does the same. Each variant trains the same model on the same
demo workspace, in a fresh process, beside a busy-loop process that takes one core (the "other jobs"):
  cli     `llm4cdsr train`
  api     `import llm4cdsr.api` then `Estimator.fit()` (train stage only)
  api-spin the API with OMP_WAIT_POLICY=ACTIVE in the environment: what the API did before
and prints the mean training seconds per epoch (from each run's metrics.jsonl) and the ratios.
Variants alternate over --rounds so that load changes hit all alike.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = ["model.name=sasrec_mixed", "train.progress=false", "run.baselines=[]"]


def busy() -> None:  # the other job on the machine
    while True:
        pass


def epoch_seconds(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(r["train_s"] for r in rows)


def train(variant: str, ws: Path, name: str, epochs: int, threads: int) -> float:
    overrides = [*MODEL, f"train.epochs={epochs}", f"train.num_threads={threads}", f"run.name={name}"]
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if variant == "cli":
        cmd = [sys.executable, "-m", "llm4cdsr", "run", "-w", str(ws), "run.stages=[train]", *overrides]
    else:
        if variant == "api-spin":
            env["OMP_WAIT_POLICY"] = "ACTIVE"
        code = ("import sys, llm4cdsr.api as api; "
                f"api.Estimator(overrides={[f'workspace={ws}', 'run.stages=[train]', *overrides]!r}).fit()")
        cmd = [sys.executable, "-c", code]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return epoch_seconds(ws / "runs" / name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="bench-api-")) / "ws"
    subprocess.run([sys.executable, "-m", "llm4cdsr", "prepare", "--out", str(ws)], check=True, stdout=subprocess.DEVNULL)
    hog = multiprocessing.Process(target=busy, daemon=True)
    hog.start()
    times: dict[str, list[float]] = {"cli": [], "api": [], "api-spin": []}
    try:
        for r in range(args.rounds):
            for variant in times:
                times[variant].append(train(variant, ws, f"{variant}-{r}", args.epochs, args.threads))
                print(f"round {r + 1} {variant:8s} {times[variant][-1]:.2f} s/epoch", flush=True)
    finally:
        hog.terminate()
    mean = {k: statistics.mean(v) for k, v in times.items()}
    print(f"\nseconds per epoch ({args.threads} torch threads, one core taken by another process, {args.rounds} rounds):")
    for k, v in mean.items():
        print(f"  {k:8s} {v:.2f}")
    print(f"api / cli: {mean['api'] / mean['cli']:.2f}x   api-spin / cli: {mean['api-spin'] / mean['cli']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
