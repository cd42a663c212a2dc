"""Evaluation speed on the real Food x Kitchen workspace: LLM4CDSR (paper settings) ranking the test
target of all 53,061 users, sampled mode (targets: < 30 s) and full ranking (< 60 s).

    python benchmarks/bench_eval.py [--workspace workspace-food-kitchen] [--run RUN] [--threads 2]

With --run the run's trained weights are scored, otherwise a freshly initialised model (the cost
does not depend on the weights). The LLM vectors are the workspace's, or random stand-ins of the
same widths if `embed` has not run yet. The sampled candidates are the workspace's saved ones
(drawn now if absent; that time is shown apart). The authors' code: ~80 s per evaluation pass.
OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE unless set): see below.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

DEFAULT_WS = Path(__file__).resolve().parents[1] / "workspace-food-kitchen"
# OpenMP threads that spin while another process holds a core slow a shared 2-core machine down
# 4x (measured: sampled 49 s spinning, 12 s passive); set before torch loads. ACTIVE overrides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WS, help=f"prepared workspace (default {DEFAULT_WS})")
    parser.add_argument("--run", type=Path, help="score this run's best weights instead of an untrained model")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    if not (args.workspace / "dataset" / "meta.json").is_file():
        print(f"SKIPPED: no prepared dataset at {args.workspace}/dataset (run `llm4cdsr prepare` on Food x Kitchen first)")
        return 0

    import numpy as np
    import torch

    from llm4cdsr.config import load_config
    from llm4cdsr.data.dataset import PreparedDataset
    from llm4cdsr.models import build_model
    from llm4cdsr.training.candidates import load_or_draw
    from llm4cdsr.training.evaluate import eval_inputs, rank_targets
    from llm4cdsr.training.metrics import metrics_from_ranks
    from llm4cdsr.training.run import dataset_info, load_run
    from llm4cdsr.workspace import ArtifactError, Workspace, load_item_vectors

    torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)
    cfg = load_config([], [f"workspace={ws.root}"])
    dataset = PreparedDataset.load(ws.dataset_dir)
    split = dataset.split()
    if args.run:
        model, _, _ = load_run(args.run)
        label = f"run {args.run.name}"
    else:
        try:
            vectors = load_item_vectors(ws, dataset.domains)
        except ArtifactError:
            print("note: random item vectors (no embeddings yet)")
            rng = np.random.default_rng(0)
            vectors = SimpleNamespace(global_pca=rng.normal(size=(dataset.n_items_total + 1, 384)).astype(np.float32),
                                      local_pca=tuple(rng.normal(size=(n + 1, 128)).astype(np.float32) for n in dataset.n_items))
        cfg["model"]["beta"] = 0.0  # profiles are read in training only
        torch.manual_seed(0)
        model = build_model(cfg["model"], dataset_info(dataset, vectors), vectors)
        label = "untrained llm4cdsr"
    model.eval()

    started = time.perf_counter()
    cands = load_or_draw(ws.candidates_dir, dataset, split, cfg["eval"]["num_negatives"], cfg["eval"]["candidate_seed"])
    print(f"candidates ({cfg['eval']['num_negatives']} per user): {time.perf_counter() - started:.1f} s (drawn once, then read)")
    inputs = eval_inputs(split, "test")
    for mode, target in (("sampled", 30), ("full", 60)):
        started = time.perf_counter()
        ranks = rank_targets(model, inputs, dataset.n_items, cands["test"], (mode,), cfg["eval"]["batch_size"])[mode]
        seconds = time.perf_counter() - started
        m = metrics_from_ranks(ranks, (10,))
        print(f"{mode:8s} {int((~np.isnan(ranks)).sum())} users: {seconds:5.1f} s (target < {target} s; "
              f"{'met' if seconds < target else 'MISSED'}), {label} hit@10 {m['hit@10']:.4f} ndcg@10 {m['ndcg@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
