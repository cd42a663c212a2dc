"""An LLM4CDSR training epoch on the real Food x Kitchen workspace under each objective, side by side:
the paper's bce (one negative per step), sampled_ce (softmax over train.num_negatives shared
negatives) and ce (softmax over every item of the target's domain). Targets on this machine:
sampled_ce at most 1.5x the bce epoch, ce at most 4x.

    python benchmarks/bench_objectives.py [--workspace workspace-food-kitchen] [--batches 60] [--threads 1]

The preset's model (configs/food-kitchen.yaml: learned local tables, beta 0), the same batches for
every objective. Each variant runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is
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

CHILD = """
import json, resource, sys, time
import torch
from llm4cdsr.config import load_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.models import LossConfig, build_model
from llm4cdsr.training.batching import TrainBatches
from llm4cdsr.training.run import dataset_info
from llm4cdsr.workspace import Workspace, load_item_vectors

ws, objective, first, count, threads = Workspace(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
cfg = load_config(["food-kitchen"], ["workspace=" + str(ws.root), "model.beta=0", "train.loss=" + objective])
ds = PreparedDataset.load(ws.dataset_dir)
split = ds.split()
vectors = load_item_vectors(ws, ds.domains)
loss = LossConfig.from_section(cfg["train"])
torch.manual_seed(0)
model = build_model(cfg["model"], dataset_info(ds, vectors), vectors, loss=loss)
optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
batches = TrainBatches(split.train_offsets, split.train_items, ds.n_items, model.max_len, cfg["train"]["batch_size"],
                       seed=0, bucket_pool=cfg["train"]["bucket_pool"], loss=loss)
plan = batches.plan(1)
model.train()
start = time.perf_counter()
cells, loss_sum = 0, 0.0
todo = list(enumerate(plan))[first:first + count]
for i, users in todo:
    batch = batches.build(users, 1, i)
    cells += batch["mixed_seq"].numel()
    out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    loss_sum += float(out["loss"].detach())
print(json.dumps({"seconds": time.perf_counter() - start, "batches": len(todo), "plan_batches": len(plan), "cells": cells,
                  "mean_loss": loss_sum / len(todo), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "notes": []}))
"""


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
            _accumulate(results[name], run_child(args.workspace, name, first, min(slice_size, total - first), args.threads, CHILD))
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
