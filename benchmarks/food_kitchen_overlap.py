"""The overlap dilemma on Food x Kitchen under the current preset: accuracy against the share of
users who keep both domains in training, for LLM4CDSR with the paper's alignment, with the cosine
alignment, with none, and the SASRec baselines.

    python benchmarks/food_kitchen_overlap.py [--users 15000] [--jobs 2] [--plan screen|full]

Each step is one `llm4cdsr experiment overlap -c food-kitchen` call on the workspace the comparison
script builds (its item vectors and template profiles; profiles guide only users whose training
history was not cut: see `llm4cdsr.experiments`), with a seeded sample of --users users, patience 3,
one thread per job. The user sample and who keeps both domains are drawn with seed 42 for every
model and training seed, so a ratio's rows differ by model and training seed only. Steps run --jobs
at a time; finished runs are skipped, so the command continues where it stopped. At the end one
call over every finished run rebuilds results.csv / results.md / overlap.png, which are copied with
each run's results.json, metrics.jsonl and per-user test ranks to --archive (committed).
`--table-only` trains nothing; where the workspace has no runs (another machine) it rebuilds the
tables, t-tests included, from the archive alone, in place.

Plans: `screen` trains the alignment candidates at share 1.0, seed 42; `full` the chosen models at
shares 0, 0.1, 0.25, 0.5, 1.0 (seeds 42-44 at 0 and 1.0, seed 42 between).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from llm4cdsr.benchmark import ARCHIVED_RANKS
from llm4cdsr.config import load_config
from llm4cdsr.experiments import write_overlap_outputs

ROOT = Path(__file__).resolve().parents[1]

# label:overrides, as `llm4cdsr experiment overlap --models` reads them.
MODELS = {
    "llm4cdsr": "llm4cdsr",  # the preset: the paper's alignment (alpha 0.1, tau_reg 1)
    "alpha0": "alpha0:model.alpha=0",
    "cosine-a0.1": "cosine-a0.1:model.align=cosine:model.alpha=0.1",
    "cosine-a1": "cosine-a1:model.align=cosine:model.alpha=1",
    "sasrec_mixed": "sasrec_mixed",
    "sasrec_single": "sasrec_single",
}
PLANS = {
    "screen": [([1.0], [42], ["llm4cdsr", "alpha0", "cosine-a0.1", "cosine-a1"])],
    "full": [([0.0, 1.0], [42, 43, 44], ["llm4cdsr", "alpha0", "cosine", "sasrec_mixed", "sasrec_single"]),
             ([0.1, 0.25, 0.5], [42], ["llm4cdsr", "alpha0", "cosine", "sasrec_mixed", "sasrec_single"])],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=15000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--plan", choices=sorted(PLANS), default="screen")
    parser.add_argument("--cosine", default="cosine-a1", help="the cosine candidate the full plan trains (chosen by the screen)")
    parser.add_argument("--workspace", default=str(ROOT / "workspace-food-kitchen"))
    parser.add_argument("--out", default="", help="default <workspace>/experiments/overlap-preset")
    parser.add_argument("--archive", default=str(ROOT / "benchmarks" / "results" / "food-kitchen-overlap"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: rebuild the tables from the finished runs (the workspace's, else --archive's) and archive")
    args = parser.parse_args()
    if args.table_only and not (Path(args.workspace) / "experiments" / "overlap-preset" / "runs").is_dir() and not args.out:
        # Another machine: the committed archive alone rebuilds its tables in place.
        write_overlap_outputs(Path(args.archive), load_config(["food-kitchen"])["data"]["domains"])
        return 0
    ws = Path(args.workspace)
    if not (ws / "profiles" / "meta.json").is_file():
        print(f"SKIPPED: {ws} has no profiles; build it first: python benchmarks/food_kitchen_comparison.py "
              "--stages prepare,embed,profile --variants llm4cdsr --seeds 42")
        return 0
    out = Path(args.out) if args.out else ws / "experiments" / "overlap-preset"

    def call(ratios, seeds, labels, threads=1) -> int:
        cmd = [sys.executable, "-m", "llm4cdsr", "experiment", "overlap", "-c", "food-kitchen", "-w", str(ws),
               "--users", str(args.users), "--out", str(out), "--ratios", ",".join(f"{r:g}" for r in ratios),
               "--seeds", ",".join(map(str, seeds)), "--models", ",".join(MODELS[m] for m in labels),
               "train.patience=3", "train.epochs=30", "train.progress=false", f"train.num_threads={threads}",
               # the archived runs' length-bucketed batches (the default until random order replaced it)
               "train.bucket_pool=128", *args.set]
        log = out / "logs" / f"{'-'.join(labels)}-r{'_'.join(f'{r:g}' for r in ratios)}-s{'_'.join(map(str, seeds))}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        print(f"{log.name}: rc {rc}", flush=True)
        return rc

    # One step per (ratio, seed, model): the finest grain, so that two jobs stay busy to the end.
    steps = [([r], [s], [args.cosine if m == "cosine" else m]) for ratios, seeds, labels in PLANS[args.plan]
             for s in seeds for r in ratios for m in labels]
    with ThreadPoolExecutor(args.jobs) as pool:
        failed = 0 if args.table_only else sum(rc != 0 for rc in pool.map(lambda step: call(*step), steps))
    # Every finished run of every plan so far, into one table (concurrent calls each wrote theirs).
    write_overlap_outputs(out, load_config(["food-kitchen"])["data"]["domains"])
    archive(out, Path(args.archive))
    return 1 if failed else 0


def archive(out: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "results.md", "tests.csv", "overlap.png", "experiment.json"):
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    for run in sorted((out / "runs").glob("*")):
        if (run / "results.json").is_file():
            archive_run(run, dest / "runs" / run.name)


def archive_run(run: Path, dest: Path) -> None:
    """One finished run of an overlap experiment into its archive folder `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "metrics.jsonl", "config.yaml", "overlap.json"):
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    # The per-user test ranks the t-tests read (the columns they need, compressed).
    if (run / "ranks.parquet").is_file():
        ranks = pd.read_parquet(run / "ranks.parquet", columns=ARCHIVED_RANKS)
        ranks.to_parquet(dest / "ranks.parquet", index=False, compression="zstd")


if __name__ == "__main__":
    sys.exit(main())
