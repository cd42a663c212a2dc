"""An LLM4CDSR training epoch on the real Food x Kitchen workspace under each objective, side by side:
the paper's bce (one negative per step), sampled_ce (softmax over train.num_negatives shared
negatives) and ce (softmax over every item of the target's domain). Targets on this machine:
sampled_ce at most 1.5x the bce epoch, ce at most 4x.

    python benchmarks/bench_objectives.py [--workspace workspace-food-kitchen] [--batches 60] [--threads 1]

The package defaults' model, which is the food-kitchen preset's (learned local tables, beta 0), the
same batches for every objective. Each variant runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is
its own; the variants alternate over --rounds slices of the batches, so that load from other
processes hits all alike (bench_train.py's machinery). The epoch time is extrapolated from the
timed batches.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import DEFAULT_WS, _accumulate, _epoch_batches, run_child  # noqa: E402

OBJECTIVES = ("bce", "sampled_ce", "ce")

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WS, help=f"prepared workspace with embeddings (default {DEFAULT_WS})")
    parser.add_argument("--batches", type=int, default=60, help="batches timed per objective (0 = the whole epoch)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the fastest here)")
    parser.add_argument("--rounds", type=int, default=3, help="slices the objectives alternate over (default 3)")
    args = parser.parse_args()
    if not (args.workspace / "embeddings").is_dir():
        print(f"SKIPPED: no embeddings at {args.workspace} (run `llm4cdsr run -c food-kitchen` first)")
        return 0
    started = time.perf_counter()
    total = min(args.batches or 10 ** 9, _epoch_batches(args.workspace))
    slice_size = -(-total // args.rounds)
    results: dict[str, dict] = {name: {} for name in OBJECTIVES}
    for first in range(0, total, slice_size):
        for name in OBJECTIVES:
            _accumulate(results[name], run_child(args.workspace, "dynamic", first, min(slice_size, total - first), args.threads,
                                                 overrides=[f"train.loss={name}"]))
    bce = results["bce"]
    scale = bce["plan_batches"] / bce["batches"]
    for name in OBJECTIVES:
        r = results[name]
        print(f"{name:11s} {r['batches']} batches {r['seconds']:7.1f} s -> {r['seconds'] * scale:7.1f} s/epoch "
              f"({r['seconds'] / bce['seconds']:.2f}x bce), mean loss {r['loss_sum'] / r['batches']:.4f}, "
              f"peak RSS {r['maxrss_mb']:.0f} MB")
    print(f"targets: sampled_ce <= 1.5x bce ({results['sampled_ce']['seconds'] / bce['seconds']:.2f}x), "
          f"ce <= 4x bce ({results['ce']['seconds'] / bce['seconds']:.2f}x); bench wall {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
