"""An LLM4CDSR training epoch on the real Food x Kitchen workspace: our length-bucketed, dynamically
padded batches (train.bucket_pool=128) against the same model and the same batches with all three
sequences (mixed, and each domain's) padded to max_len, as the authors' code does (target: >= 4x),
and batches in random order, dynamically padded (the package default since it trained better).

    python benchmarks/bench_train.py [--workspace workspace-food-kitchen] [--batches N] [--threads 2]
                                     [--models llm4cdsr,c2dsr,tri_cdr]

--models adds other models' epochs beside LLM4CDSR's (bucketed, dynamically padded batches, the same
batches, package defaults of each model): the cross-domain baselines C2DSR and Tri-CDR.

Paper settings (H 128, 2 blocks, 1 head, dropout 0.5, batch 128, max_len 50, alpha 0.1, beta 1,
frozen local tables, BCE with one negative: PAPER_SETTINGS over the package defaults). Each variant runs in a fresh subprocess, one after the other, so its
peak resident memory (ru_maxrss) is its own. The LLM vectors and profiles are the workspace's; where
one is missing, random stand-ins of the same widths (the cost does not depend on the values).
Both variants time the same batches; they alternate over --rounds slices of the epoch (each slice
a fresh subprocess per variant) so that load from other processes hits both alike. With --batches N
only the first N batches are timed and the epoch time is extrapolated. The authors' code: ~406 s per epoch on this kind of machine (METHOD.md).
OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE unless set): spinning threads collapse
throughput when other processes share the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_WS = Path(__file__).resolve().parents[1] / "workspace-food-kitchen"

CHILD = """
import json, resource, sys, time
import numpy as np, torch
from types import SimpleNamespace
from llm4cdsr.config import load_config
from llm4cdsr.data.dataset import PreparedDataset
from llm4cdsr.models import LossConfig, build_model
from llm4cdsr.training.batching import TrainBatches
from llm4cdsr.training.run import dataset_info
from llm4cdsr.workspace import Workspace, load_item_vectors, load_profile_embeddings, ArtifactError

ws, variant, first, count, threads = Workspace(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
BUCKETED = 128  # the length-bucketed batches timed against padding (the package default is random order, "random")
overrides = json.loads(sys.argv[6])  # config overrides of this variant
torch.set_num_threads(threads)
# "dynamic" and "padded" are LLM4CDSR's two variants; any other variant names a model (dynamic padding).
model_name = "llm4cdsr" if variant in ("dynamic", "padded", "random") else variant
cfg = load_config([], ["workspace=" + str(ws.root), "model.name=" + model_name, *overrides])
loss = LossConfig.from_section(cfg["train"])
ds = PreparedDataset.load(ws.dataset_dir)
split = ds.split()
rng = np.random.default_rng(0)
notes = []
try:
    vectors = load_item_vectors(ws, ds.domains)
except ArtifactError:
    notes.append("random item vectors (no embeddings yet)")
    vectors = SimpleNamespace(global_pca=rng.normal(scale=0.05, size=(ds.n_items_total + 1, 384)).astype(np.float32),
                              local_pca=tuple(rng.normal(scale=0.05, size=(n + 1, 128)).astype(np.float32) for n in ds.n_items))
try:
    profiles = load_profile_embeddings(ws)
except ArtifactError:
    notes.append("random profiles (no profiles yet)")
    profiles = rng.normal(scale=0.05, size=(ds.n_users, vectors.global_pca.shape[1])).astype(np.float32)
if variant == "padded":  # as the authors' code: the two domain subsequences are padded to max_len too
    import functools
    import llm4cdsr.models.base as base, llm4cdsr.models.llm4cdsr as llm4cdsr_module
    llm4cdsr_module.domain_subsequence = functools.partial(base.domain_subsequence, width=cfg["model"]["max_len"])
torch.manual_seed(0)
model = build_model(cfg["model"], dataset_info(ds, vectors, profiles), vectors, profiles, loss=loss)
model.fit_statistics(split.train_offsets, split.train_items)  # C2DSR's transition graphs; others: nothing
optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
batches = TrainBatches(split.train_offsets, split.train_items, ds.n_items, model.max_len, cfg["train"]["batch_size"],
                       seed=0, bucket_pool=1 if variant == "random" else BUCKETED, dynamic_padding=(variant != "padded"), loss=loss)
plan = batches.plan(1)
todo = list(enumerate(plan))[first:first + count]
model.train()
start = time.perf_counter()
cells = 0
loss_sum = 0.0
for i, users in todo:
    batch = batches.build(users, 1, i)
    cells += batch["mixed_seq"].numel()
    out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    loss_sum += float(out["loss"].detach())
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "batches": len(todo), "plan_batches": len(plan), "cells": cells,
                  "mean_loss": loss_sum / len(todo), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "notes": notes}))
"""


# The paper's settings, which this benchmark has always timed (the package defaults have moved on:
# sampled softmax, learned local tables, no profiles; bench_objectives.py times those).
PAPER_SETTINGS = ("train.loss=bce", "model.freeze_local=true", "model.beta=1")


def run_child(ws: Path, variant: str, first: int, count: int, threads: int, overrides=PAPER_SETTINGS) -> dict:
    """Time batches first..first+count of one variant in a fresh process, under config `overrides`."""
    # OpenMP threads that spin while another process holds a core slow a shared machine down
    # several times over; passive waiting unless the caller chose otherwise.
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    out = subprocess.run([sys.executable, "-c", CHILD, str(ws), variant, str(first), str(count), str(threads),
                          json.dumps(list(overrides))],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WS, help=f"prepared workspace (default {DEFAULT_WS})")
    parser.add_argument("--batches", type=int, default=0, help="time only the first N batches of the epoch (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--rounds", type=int, default=4, help="slices the variants alternate over (default 4)")
    parser.add_argument("--models", default="llm4cdsr",
                        help="comma-separated models to time (default llm4cdsr; e.g. llm4cdsr,c2dsr,tri_cdr)")
    args = parser.parse_args()
    others = [m for m in args.models.split(",") if m and m != "llm4cdsr"]
    with_llm4cdsr = "llm4cdsr" in args.models.split(",")
    if not (args.workspace / "dataset" / "meta.json").is_file():
        print(f"SKIPPED: no prepared dataset at {args.workspace}/dataset (run `llm4cdsr prepare` on Food x Kitchen first)")
        return 0
    started = time.perf_counter()
    # The variants alternate over slices of the epoch, so that a change in the machine's load
    # during the benchmark hits both alike; the figures add up over the slices.
    total = min(args.batches or 10 ** 9, _epoch_batches(args.workspace))
    slice_size = -(-total // args.rounds)
    acc: dict[str, dict] = {v: {} for v in (["dynamic", "random", "padded"] if with_llm4cdsr else []) + others}
    for first in range(0, total, slice_size):
        for variant in acc:
            _accumulate(acc[variant], run_child(args.workspace, variant, first, min(slice_size, total - first), args.threads))
    for note in next(iter(acc.values()))["notes"]:
        print(f"note: {note}")
    labels = {"dynamic": "bucketed + dynamic padding", "random": "random order (default) + dyn.", "padded": "padded to max_len"}
    for variant, r in acc.items():
        scale = r["plan_batches"] / r["batches"]
        name = labels.get(variant, f"{variant} (dynamic padding)")
        line = (f"{name:28s} {r['batches']} batches {r['seconds']:7.1f} s -> {r['seconds'] * scale:7.1f} s/epoch, "
                f"{r['cells'] / r['batches']:7.0f} cells/batch, mean loss {r['loss_sum'] / r['batches']:.4f}, "
                f"peak RSS {r['maxrss_mb']:.0f} MB")
        if variant in others and with_llm4cdsr:
            line += f", {r['seconds'] / acc['dynamic']['seconds']:.2f}x LLM4CDSR's epoch"
        print(line)
    if with_llm4cdsr:
        ours, padded = acc["dynamic"], acc["padded"]
        scale = ours["plan_batches"] / ours["batches"]
        print(f"speed-up: {padded['seconds'] / ours['seconds']:.1f}x (target >= 4x); "
              f"vs the authors' ~406 s/epoch: {406 / (ours['seconds'] * scale):.1f}x; random order (the default, "
              f"which trains better) {acc['random']['seconds'] / ours['seconds']:.1f}x the bucketed epoch")
    print(f"bench wall {time.perf_counter() - started:.0f} s")
    return 0


def _epoch_batches(workspace: Path) -> int:
    from llm4cdsr.config import load_config
    from llm4cdsr.data.dataset import PreparedDataset

    lengths = PreparedDataset.load(workspace / "dataset").split().train_lengths
    return -(-int((lengths >= 2).sum()) // load_config()["train"]["batch_size"])


def _accumulate(acc: dict, r: dict) -> None:
    for key in ("seconds", "batches", "cells"):
        acc[key] = acc.get(key, 0) + r[key]
    acc["loss_sum"] = acc.get("loss_sum", 0.0) + r["mean_loss"] * r["batches"]
    acc["maxrss_mb"] = max(acc.get("maxrss_mb", 0.0), r["maxrss_mb"])
    acc["plan_batches"], acc["notes"] = r["plan_batches"], r["notes"]


if __name__ == "__main__":
    sys.exit(main())
