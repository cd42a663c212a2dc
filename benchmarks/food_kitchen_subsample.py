"""Quick screens on a seeded subsample of Food x Kitchen: a few minutes a run instead of half an hour.

    python benchmarks/food_kitchen_subsample.py [--users 15000] [--epochs 25] [--patience 3] \
        [--variants preset,anchor1,anchor10,anchor30,anchor100,adamw0.1] [--threads 1] [--set KEY=VALUE]

Draws --users users of ../shared/data/food-kitchen with a seeded generator (their whole histories
and the items they touch), prepares and embeds them once in their own workspace (the preset's
embedding backend), then trains each variant (`llm4cdsr run -c food-kitchen` with the variant's
overrides, seed 42, early stopping with --patience on validation) and prints, per variant, the best
validation ndcg@10 and its epoch, the training loss at that epoch and the test ndcg@10 in both
protocols. A screen, not a verdict: what wins here is then run on the full set (food_kitchen_comparison.py).
Finished runs are skipped, so the command can be run again to add variants.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from llm4cdsr.io import read_json
from llm4cdsr.report import read_epochs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "food-kitchen"

# label -> overrides of the food-kitchen preset
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "anchor1": ["model.local_anchor=1"],
    "anchor10": ["model.local_anchor=10"],
    "anchor30": ["model.local_anchor=30"],
    "anchor100": ["model.local_anchor=100"],
    "adamw0.1": ["train.optimizer=adamw", "train.weight_decay=0.1"],
    "sasrec_mixed": ["model.name=sasrec_mixed"],
    "tri_cdr": ["model.name=tri_cdr", "model.dropout=0.2"],
    "tri_cdr-scale20": ["model.name=tri_cdr", "model.dropout=0.2", "model.tri_cdr_logit_scale=20"],
}


def subsample(out: Path, users: int, seed: int) -> tuple[Path, Path]:
    """Write the interactions of `users` seeded users and the items they touch; reuse them if there."""
    interactions, items = out / "interactions.csv", out / "items.csv"
    if not interactions.is_file():
        frame = pd.read_csv(DATA / "interactions.csv")
        kept = np.random.default_rng(seed).choice(frame["user_id"].unique(), users, replace=False)
        part = frame[frame["user_id"].isin(kept)]
        out.mkdir(parents=True, exist_ok=True)
        catalogue = pd.read_csv(DATA / "items.csv")
        catalogue[catalogue["item_id"].isin(part["item_id"])].to_csv(items, index=False)
        part.to_csv(interactions.with_suffix(".tmp"), index=False)
        interactions.with_suffix(".tmp").replace(interactions)  # last: its presence means both are whole
    return interactions, items


def summary(run_dir: Path) -> str:
    history = read_epochs(run_dir)
    results = read_json(run_dir / "results.json")
    best = max(history, key=lambda r: r["valid"]["ndcg@10"])
    test = results["test"]
    return (f"valid ndcg@10 {best['valid']['ndcg@10']:.4f} @{best['epoch']}/{len(history)} "
            f"(train loss {best['train_loss']:.3f}) | test ndcg@10 sampled {test['sampled']['overall']['ndcg@10']:.4f} "
            f"full {test['full']['overall']['ndcg@10']:.4f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=15000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the user draw")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="preset,anchor1,anchor10,anchor30,anchor100,adamw0.1")
    parser.add_argument("--workspace", default=str(ROOT / "workspace-food-kitchen-subsample"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run, before the variant's own (e.g. model.beta=0); repeatable")
    args = parser.parse_args()
    if not (DATA / "interactions.csv").is_file():
        print(f"SKIPPED: no Food x Kitchen data at {DATA}")
        return 0
    labels = [v for v in args.variants.split(",") if v]
    unknown = set(labels) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})")
    ws = Path(args.workspace)
    interactions, items = subsample(ws / "raw", args.users, args.seed)
    common = ["-c", "food-kitchen", "-w", str(ws), f"data.interactions={interactions}", f"data.items={items}",
              f"train.num_threads={args.threads}", "train.progress=false", f"train.epochs={args.epochs}",
              f"train.patience={args.patience}", "run.baselines=[]", "seed=42", *args.set]
    for label in labels:
        run_dir = ws / "runs" / label
        if not (run_dir / "results.json").is_file():
            log = ws / "logs" / f"{label}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                rc = subprocess.call([sys.executable, "-m", "llm4cdsr", "run", *common, "run.stages=[prepare,embed,profile,train]",
                                      f"run.name={label}", *VARIANTS[label]], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
            if rc:
                print(f"{label}: failed (rc {rc}); see {log}")
                continue
        print(f"{label:16s} {summary(run_dir)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
